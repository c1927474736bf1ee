import { describe, expect, it } from "vitest";
import { VirtualSwitch } from "./net-switch.js";
import { ethernet, macBytes } from "../test/frames.js";

const A = "52:54:00:00:00:0a";
const B = "52:54:00:00:00:0b";
const C = "52:54:00:00:00:0c";

function host(sw: VirtualSwitch, mac: string) {
  const got: Uint8Array[] = [];
  const port = sw.connect((f) => got.push(f), { mac: Uint8Array.from(macBytes(mac)), name: mac });
  return { got, port, send: (dst: string, tag = 0) => port.send(ethernet(dst, mac, 0x88b5, Uint8Array.of(tag))) };
}

describe("VirtualSwitch", () => {
  it("floods unknown destinations, then forwards to the learned port only", () => {
    const sw = new VirtualSwitch();
    const a = host(sw, A);
    const b = host(sw, B);
    const c = host(sw, C);
    a.send(B, 1); // B unknown: flooded to B and C
    expect(b.got.length).toBe(1);
    expect(c.got.length).toBe(1);
    expect(a.got.length).toBe(0);
    b.send(A, 2); // A was learned from the first frame
    expect(a.got.length).toBe(1);
    expect(c.got.length).toBe(1);
    a.send(B, 3); // B learned now
    expect(b.got.length).toBe(2);
    expect(c.got.length).toBe(1);
    expect(sw.learnedMacs).toBe(2);
    expect(sw.flooded).toBe(1);
  });

  it("floods broadcast and multicast; never learns group source addresses", () => {
    const sw = new VirtualSwitch();
    const a = host(sw, A);
    const b = host(sw, B);
    const c = host(sw, C);
    a.send("ff:ff:ff:ff:ff:ff");
    a.send("01:00:5e:00:00:01");
    expect(b.got.length).toBe(2);
    expect(c.got.length).toBe(2);
    expect(a.got.length).toBe(0);
    b.port.send(ethernet(C, "01:00:5e:00:00:02", 0x88b5, Uint8Array.of(0)));
    expect(sw.learnedMacs).toBe(1); // only A
  });

  it("drops runts and frames addressed back to their own port", () => {
    const sw = new VirtualSwitch();
    const a = host(sw, A);
    const b = host(sw, B);
    a.port.send(new Uint8Array(13));
    a.send(A); // learns A on a's port, then the destination is a itself
    expect(b.got.length).toBe(0);
    expect(sw.portStats()[0].stats.dropped).toBe(2);
  });

  it("moves an address that shows up on another port", () => {
    const sw = new VirtualSwitch();
    const a = host(sw, A);
    const b = host(sw, B);
    const c = host(sw, C);
    a.send(C);
    c.port.send(ethernet(B, A, 0x88b5, Uint8Array.of(0))); // A now behind c's port (VM migrated); B unknown: flooded
    const [atA, atC] = [a.got.length, c.got.length];
    b.send(A);
    expect(c.got.length).toBe(atC + 1);
    expect(a.got.length).toBe(atA);
  });

  it("bounds its table and forgets the least recently learned address", () => {
    const sw = new VirtualSwitch({ maxMacs: 2 });
    const a = host(sw, A);
    const b = host(sw, B);
    const c = host(sw, C);
    a.send(B);
    b.send(A);
    c.send(A); // table full: A (oldest) is forgotten
    expect(sw.learnedMacs).toBe(2);
    const before = b.got.length;
    c.send(A); // A unknown again: flooded
    expect(b.got.length).toBe(before + 1);
  });

  it("ages out addresses", () => {
    let now = 0;
    const sw = new VirtualSwitch({ agingMs: 1000, now: () => now });
    const a = host(sw, A);
    const b = host(sw, B);
    const c = host(sw, C);
    b.send(A);
    now = 500;
    a.send(B);
    expect(c.got.length).toBe(1); // only the first (flooded) frame
    now = 2000;
    a.send(B); // B's entry is stale: flooded
    expect(c.got.length).toBe(2);
  });

  it("forgets a closed port's addresses and stops sending to it", () => {
    const sw = new VirtualSwitch();
    const a = host(sw, A);
    const b = host(sw, B);
    b.send(A); // flooded to a
    b.port.close();
    expect(sw.portCount).toBe(1);
    expect(sw.learnedMacs).toBe(0);
    a.send(B);
    expect(b.got.length).toBe(0);
    b.port.send(ethernet(A, B, 0x88b5, Uint8Array.of(0)));
    expect(a.got.length).toBe(1); // only the frame from before the close
  });

  it("shares switches by name within the process and mirrors frames to taps", () => {
    const one = VirtualSwitch.named("lan-test");
    expect(VirtualSwitch.named("lan-test")).toBe(one);
    const seen: string[] = [];
    const untap = one.tap((f, from) => seen.push(`${from}:${f.length}`));
    const a = host(one, A);
    a.send(B);
    untap();
    a.send(B);
    expect(seen).toEqual([`${A}:15`]);
    VirtualSwitch.forget("lan-test");
    expect(VirtualSwitch.named("lan-test")).not.toBe(one);
    VirtualSwitch.forget("lan-test");
  });
});
