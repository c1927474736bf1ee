import { describe, expect, it } from "vitest";
import { PIT_HZ, Pit8254, pitNs, pitTicks } from "./pit-8254.js";
import { rig } from "./test-util.js";

function make() {
  const r = rig();
  const pit = new Pit8254(r.clock, r.irqs.line(2));
  const h = pit.handler;
  const program = (ch: number, control: number, count?: number): void => {
    h.write(3, 1, control);
    if (count !== undefined) {
      h.write(ch, 1, count & 0xff);
      if (((control >> 4) & 3) === 3) h.write(ch, 1, count >> 8);
    }
  };
  const readCount = (ch: number): number => h.read(ch, 1) | (h.read(ch, 1) << 8);
  return { ...r, pit, h, program, readCount };
}

describe("8254 PIT", () => {
  it("converts between ns and ticks exactly", () => {
    expect(pitTicks(1e9)).toBe(PIT_HZ);
    expect(pitTicks(86400e9 * 365)).toBe(86400 * 365 * PIT_HZ);
    for (const k of [1, 2, 1193, 65536, 123456789]) {
      expect(pitTicks(pitNs(k))).toBe(k);
      expect(pitTicks(pitNs(k) - 1)).toBe(k - 1);
    }
  });

  it("mode 2 on channel 0 raises IRQ 0 once per period (Linux's periodic tick)", () => {
    const { program, advanceTo, rises } = make();
    const latch = Math.round(PIT_HZ / 1000); // 1193: HZ=1000
    program(0, 0x34, latch);
    advanceTo(1e9);
    const r = rises(2);
    // One edge at load (OUT goes high), then one per period.
    expect(r.length).toBe(1 + Math.floor(PIT_HZ / latch));
    expect(r[1]).toBe(pitNs(latch));
    expect(r[2]).toBe(pitNs(2 * latch));
  });

  it("counts down and latches the count (counter latch command)", () => {
    const { program, h, clock, readCount } = make();
    program(0, 0x34, 1000);
    clock.advanceTo(pitNs(250));
    h.write(3, 1, 0x00); // latch channel 0
    clock.advanceTo(pitNs(400));
    expect(readCount(0)).toBe(750); // the latched value, not the live one
    expect(readCount(0)).toBe(600);
    clock.advanceTo(pitNs(1000));
    expect(readCount(0)).toBe(1000); // reloaded
  });

  it("mode 3 produces a square wave: OUT high for the first half", () => {
    const { program, h, clock } = make();
    program(2, 0xb6, 100);
    h.write(3, 1, 0xe8); // read-back status of channel 2
    const status = () => {
      h.write(3, 1, 0xe8);
      return h.read(2, 1);
    };
    expect(status() & 0x3f).toBe(0x36); // rw 3, mode 3, binary
    clock.advanceTo(pitNs(10));
    expect(status() & 0x80).toBe(0x80);
    clock.advanceTo(pitNs(60));
    expect(status() & 0x80).toBe(0);
    clock.advanceTo(pitNs(100));
    expect(status() & 0x80).toBe(0x80);
  });

  it("mode 0 on channel 2 is gated by port 0x61 and shows OUT2 in bit 5 (Linux's TSC calibration)", () => {
    const { program, pit, clock } = make();
    const p61 = pit.port61;
    p61.write(0, 1, 0x00); // gate low
    program(2, 0xb0, 500);
    expect(p61.read(0, 1) & 0x20).toBe(0);
    clock.advanceTo(pitNs(1000));
    expect(p61.read(0, 1) & 0x20).toBe(0); // gate low: not counting
    p61.write(0, 1, 0x01);
    clock.advanceTo(pitNs(1000) + pitNs(499));
    expect(p61.read(0, 1) & 0x21).toBe(0x01);
    clock.advanceTo(pitNs(1000) + pitNs(501));
    expect(p61.read(0, 1) & 0x20).toBe(0x20);
  });

  it("read-back reports null count until the count is loaded, and latches count and status together", () => {
    const { h, clock } = make();
    h.write(3, 1, 0x30); // channel 0, lohi, mode 0
    h.write(3, 1, 0xe2);
    expect(h.read(0, 1)).toBe(0x70); // OUT low, null count, rw 3, mode 0
    h.write(0, 1, 0x10);
    h.write(0, 1, 0x00);
    clock.advanceTo(pitNs(0x10));
    h.write(3, 1, 0xc2); // latch count and status
    expect(h.read(0, 1)).toBe(0xb0); // OUT high (terminal count), count loaded
    expect(h.read(0, 1) | (h.read(0, 1) << 8)).toBe(0);
  });

  it("counts in BCD", () => {
    const { program, clock, readCount } = make();
    program(1, 0x75, 0x1000); // channel 1, lohi, mode 2, BCD: 1000 decimal
    clock.advanceTo(pitNs(1));
    expect(readCount(1)).toBe(0x0999);
    clock.advanceTo(pitNs(999));
    expect(readCount(1)).toBe(0x0001);
  });

  it("mode 4 strobes OUT low for one clock at terminal count", () => {
    const { program, advanceTo, rises, events } = make();
    program(0, 0x38, 100);
    advanceTo(1e9);
    const falls = events.filter((e) => !e.level).map((e) => e.t);
    expect(falls).toEqual([pitNs(100)]);
    expect(rises(2)).toEqual([0, pitNs(101)]);
  });

  it("collapses missed periods into one edge when the host falls behind", () => {
    const { program, clock, rises, events } = make();
    program(0, 0x34, 100);
    clock.advanceTo(pitNs(1000) + 5);
    clock.runDue(); // one late callback covering ten periods
    expect(rises(2).length).toBe(2);
    expect(events.length).toBeLessThan(6);
  });

  it("replays identically and survives a snapshot", () => {
    const run = () => {
      const m = make();
      m.program(0, 0x34, 777);
      m.advanceTo(5e7);
      return m;
    };
    const a = run();
    const b = run();
    expect(a.rises(2)).toEqual(b.rises(2));
    const saved = a.pit.saveState();
    const c = make();
    c.clock.advanceTo(a.clock.now());
    c.pit.loadState(saved);
    c.advanceTo(1e8);
    a.advanceTo(1e8);
    expect(c.rises(2).filter((t) => t > 5e7)).toEqual(a.rises(2).filter((t) => t > 5e7));
    expect(() => c.pit.loadState({ speaker: false, channels: [] })).toThrow(/malformed/);
  });
});
