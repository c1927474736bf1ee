import { describe, expect, it } from "vitest";
import { ConsoleEscape } from "./run-escape.js";

function harness() {
  const sent: number[] = [];
  const events: string[] = [];
  const esc = new ConsoleEscape({
    send: (b) => sent.push(...b),
    quit: () => events.push("quit"),
    help: () => events.push("help"),
  });
  return { esc, sent, events };
}

describe("ConsoleEscape (Ctrl-A commands)", () => {
  it("passes ordinary input through unchanged", () => {
    const h = harness();
    h.esc.input(Buffer.from("ls -l\r"));
    expect(Buffer.from(h.sent).toString()).toBe("ls -l\r");
    expect(h.events).toEqual([]);
  });

  it("quits on C-a x and drops what follows", () => {
    const h = harness();
    h.esc.input(Buffer.from("ab\x01xcd"));
    expect(Buffer.from(h.sent).toString()).toBe("ab");
    expect(h.events).toEqual(["quit"]);
  });

  it("keeps the escape state across chunks", () => {
    const h = harness();
    h.esc.input(Buffer.from("a\x01"));
    h.esc.input(Buffer.from("h"));
    h.esc.input(Buffer.from("\x01"));
    h.esc.input(Buffer.from("x"));
    expect(Buffer.from(h.sent).toString()).toBe("a");
    expect(h.events).toEqual(["help", "quit"]);
  });

  it("sends a literal C-a for C-a C-a and swallows unknown commands", () => {
    const h = harness();
    h.esc.input(Buffer.from("\x01\x01z\x01qy"));
    expect([...h.sent]).toEqual([1, 0x7a, 0x79]);
    expect(h.events).toEqual([]);
  });
});
