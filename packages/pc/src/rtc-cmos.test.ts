import { describe, expect, it } from "vitest";
import { CMOS, RtcCmos } from "./rtc-cmos.js";
import { rig } from "./test-util.js";

function make(start = Date.UTC(2024, 1, 29, 23, 59, 58, 0)) {
  const r = rig(start);
  const rtc = new RtcCmos(r.clock, r.irqs.line(8), { lowMemory: 256 << 20, highMemory: 0, cpus: 2 });
  const read = (i: number): number => {
    rtc.handler.write(0, 1, i);
    return rtc.handler.read(1, 1);
  };
  const write = (i: number, v: number): void => {
    rtc.handler.write(0, 1, i);
    rtc.handler.write(1, 1, v);
  };
  return { ...r, rtc, read, write };
}

describe("MC146818 RTC", () => {
  it("reads the virtual clock's wall time in BCD, 24-hour, with the century byte", () => {
    const { read, clock } = make();
    expect([read(CMOS.SECONDS), read(CMOS.MINUTES), read(CMOS.HOURS)]).toEqual([0x58, 0x59, 0x23]);
    expect([read(CMOS.DAY_OF_WEEK), read(CMOS.DAY_OF_MONTH), read(CMOS.MONTH), read(CMOS.YEAR), read(CMOS.CENTURY)]).toEqual([5, 0x29, 0x02, 0x24, 0x20]);
    expect(read(CMOS.REG_B)).toBe(0x02);
    expect(read(CMOS.REG_D)).toBe(0x80);
    clock.advanceTo(2e9); // leap day rolls over into March
    expect([read(CMOS.SECONDS), read(CMOS.MINUTES), read(CMOS.HOURS), read(CMOS.DAY_OF_MONTH), read(CMOS.MONTH)]).toEqual([0, 0, 0, 1, 3]);
  });

  it("encodes binary and 12-hour modes (register B DM and 24/12)", () => {
    const { read, write } = make(Date.UTC(2023, 6, 4, 23, 5, 9));
    write(CMOS.REG_B, 0x04); // binary, 12-hour
    expect(read(CMOS.HOURS)).toBe(0x80 | 11);
    expect(read(CMOS.MINUTES)).toBe(5);
    expect(read(CMOS.YEAR)).toBe(23);
    write(CMOS.REG_B, 0x00); // BCD, 12-hour
    expect(read(CMOS.HOURS)).toBe(0x91);
  });

  it("sets the time through the SET bit and keeps running from it", () => {
    const { read, write, rtc, clock } = make();
    write(CMOS.REG_B, 0x82); // SET
    write(CMOS.YEAR, 0x99);
    write(CMOS.CENTURY, 0x19);
    write(CMOS.MONTH, 0x12);
    write(CMOS.DAY_OF_MONTH, 0x31);
    write(CMOS.HOURS, 0x23);
    write(CMOS.MINUTES, 0x59);
    write(CMOS.SECONDS, 0x59);
    clock.advanceTo(5e9); // frozen while SET
    expect(read(CMOS.SECONDS)).toBe(0x59);
    expect(read(CMOS.REG_A) & 0x80).toBe(0); // no update cycles while SET
    write(CMOS.REG_B, 0x02);
    expect(rtc.guestTime()).toBe(Date.UTC(1999, 11, 31, 23, 59, 59));
    clock.advanceTo(6e9);
    expect([read(CMOS.YEAR), read(CMOS.CENTURY), read(CMOS.MONTH), read(CMOS.SECONDS)]).toEqual([0x00, 0x20, 0x01, 0x00]);
  });

  it("writing one field while running changes only that field", () => {
    const { read, write, rtc } = make(Date.UTC(2020, 0, 1, 10, 20, 30));
    write(CMOS.MINUTES, 0x45);
    expect(rtc.guestTime()).toBe(Date.UTC(2020, 0, 1, 10, 45, 30));
    expect(read(CMOS.HOURS)).toBe(0x10);
  });

  it("raises UIP in the 244 µs before an update and for the update itself", () => {
    const { read, clock } = make(Date.UTC(2020, 0, 1));
    clock.advanceTo(0.5e9);
    expect(read(CMOS.REG_A)).toBe(0x26);
    clock.advanceTo(1e9 - 100_000);
    expect(read(CMOS.REG_A)).toBe(0xa6);
    clock.advanceTo(1e9 + 1_000_000);
    expect(read(CMOS.REG_A) & 0x80).toBe(0x80);
    clock.advanceTo(1e9 + 2_000_000);
    expect(read(CMOS.REG_A) & 0x80).toBe(0);
  });

  it("periodic interrupt at the register A rate; reading C acknowledges", () => {
    const { write, read, advanceTo, rises, clock } = make(Date.UTC(2020, 0, 1));
    write(CMOS.REG_A, 0x26); // 1024 Hz
    write(CMOS.REG_B, 0x42); // PIE
    let acks = 0;
    for (let t = 0; t < 1e9; t += 250_000) {
      advanceTo(t);
      const c = read(CMOS.REG_C);
      if (c & 0x80) {
        expect(c & 0x40).toBe(0x40);
        acks++;
      }
    }
    expect(acks).toBe(1023); // ticks at k * 976.5625 µs for k = 1..1023 inside [0, 1 s)
    expect(rises(8).length).toBe(1023);
    expect(clock.pendingTimers).toBe(1);
    write(CMOS.REG_B, 0x02);
    expect(clock.pendingTimers).toBe(0);
  });

  it("sets PF lazily without PIE, raising no interrupt", () => {
    const { read, clock, events } = make(Date.UTC(2020, 0, 1));
    clock.advanceTo(2e6);
    expect(read(CMOS.REG_C)).toBe(0x40);
    expect(read(CMOS.REG_C)).toBe(0x00);
    expect(events).toEqual([]);
    expect(clock.pendingTimers).toBe(0);
  });

  it("update-ended interrupt once per second, alarm at the programmed time", () => {
    const { write, read, advanceTo, rises } = make(Date.UTC(2020, 0, 1, 12, 0, 0));
    write(CMOS.REG_A, 0x20); // no periodic rate
    write(CMOS.SECONDS_ALARM, 0x03);
    write(CMOS.MINUTES_ALARM, 0xc0); // don't care
    write(CMOS.HOURS_ALARM, 0xff);
    write(CMOS.REG_B, 0x12); // UIE
    const flags: number[] = [];
    for (let s = 1; s <= 4; s++) {
      advanceTo(s * 1e9 + 1000);
      flags.push(read(CMOS.REG_C));
    }
    expect(flags).toEqual([0x90, 0x90, 0xb0, 0x90]); // AF at 12:00:03, IRQF only from UF (AIE off)
    expect(rises(8)).toEqual([1e9, 2e9, 3e9, 4e9]);
    write(CMOS.REG_B, 0x22); // AIE only
    advanceTo(63e9 + 1000);
    expect(read(CMOS.REG_C)).toBe(0xb0);
    expect(rises(8).at(-1)).toBe(63e9);
  });

  it("records memory sizes in CMOS, keeps bank 1, and the NMI mask bit", () => {
    const { read, rtc } = make();
    expect(read(0x15) | (read(0x16) << 8)).toBe(640);
    expect(read(0x34) | (read(0x35) << 8)).toBe((256 - 16) * 16);
    expect(read(0x5f)).toBe(1);
    rtc.handler.write(0, 1, 0x80 | CMOS.SECONDS);
    expect(rtc.nmiMasked).toBe(true);
    rtc.handler.write(2, 1, 0x10);
    rtc.handler.write(3, 1, 0xab);
    rtc.handler.write(2, 1, 0x10);
    expect(rtc.handler.read(3, 1)).toBe(0xab);
  });

  it("survives a snapshot with the guest's clock offset", () => {
    const a = make();
    a.write(CMOS.MINUTES, 0x10);
    const saved = a.rtc.saveState();
    const b = make();
    b.rtc.loadState(saved);
    expect(b.rtc.guestTime()).toBe(a.rtc.guestTime());
    expect(() => b.rtc.loadState({ cmos: new Uint8Array(3) })).toThrow(/malformed/);
  });
});
