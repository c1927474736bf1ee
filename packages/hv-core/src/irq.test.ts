import { describe, expect, it } from "vitest";
import { InterruptLines } from "./irq.js";

describe("InterruptLines", () => {
  it("ORs sources sharing a GSI and reports level changes only", () => {
    const changes: string[] = [];
    let activity = 0;
    const lines = new InterruptLines(() => activity++);
    lines.router = { setIrqLevel: (g, l) => void changes.push(`${g}:${l ? 1 : 0}`) };
    const a = lines.line(11);
    const b = lines.line(11);
    a.raise();
    b.raise();
    a.lower();
    expect(lines.level(11)).toBe(true);
    b.lower();
    a.lower();
    expect(changes).toEqual(["11:1", "11:0"]);
    expect(activity).toBe(1);
  });

  it("pulses produce an edge and replay high lines to a late router", () => {
    const lines = new InterruptLines();
    const held = lines.line(4);
    held.raise();
    const changes: string[] = [];
    lines.router = { setIrqLevel: (g, l) => void changes.push(`${g}:${l ? 1 : 0}`) };
    expect(changes).toEqual(["4:1"]);
    lines.line(0).pulse();
    expect(changes).toEqual(["4:1", "0:1", "0:0"]);
  });

  it("forwards MSI messages and rejects out-of-range GSIs", () => {
    const lines = new InterruptLines();
    const msis: number[][] = [];
    lines.msiSink = { deliverMsi: (a, d) => void msis.push([a, d]) };
    lines.sendMsi(0xfee00000, 0x4031);
    expect(msis).toEqual([[0xfee00000, 0x4031]]);
    expect(() => lines.line(256)).toThrowError(/GSI 256/);
    expect(() => lines.line(-1)).toThrowError(/IRQ|GSI/);
  });

  it("broadcasts EOIs to every listener", () => {
    const lines = new InterruptLines();
    const seen: number[] = [];
    lines.onEoi((v) => seen.push(v));
    lines.onEoi((v) => seen.push(v + 0x1000));
    lines.eoi(0x31);
    expect(seen).toEqual([0x31, 0x1031]);
  });
});
