// Shared by this package's tests only (not exported).
import { GuestMemoryError, InterruptLines, VirtualClock, type GuestMemory } from "@typevisor/hv-core";

/** A deterministic clock and interrupt lines that record every level change. */
export function rig(startTime = Date.UTC(2000, 0, 1)) {
  const clock = new VirtualClock({ mode: "deterministic", startTime });
  const events: { gsi: number; level: boolean; t: number }[] = [];
  const irqs = new InterruptLines();
  irqs.router = { setIrqLevel: (gsi, level) => void events.push({ gsi, level, t: clock.now() }) };
  /** Moves virtual time to `t` ns, firing due timers on the way (as the run loop would). */
  const advanceTo = (t: number): void => {
    for (;;) {
      const next = clock.nextDeadline();
      if (next > t) break;
      clock.advanceTo(next);
      clock.runDue();
    }
    clock.advanceTo(t);
    clock.runDue();
  };
  const rises = (gsi: number): number[] => {
    const out: number[] = [];
    let level = false;
    for (const e of events) {
      if (e.gsi !== gsi) continue;
      if (e.level && !level) out.push(e.t);
      level = e.level;
    }
    return out;
  };
  return { clock, irqs, events, advanceTo, rises };
}

/** A Uint8Array-backed GuestMemory with RAM at [0, lowEnd) (the memory plugin provides the real one). */
export function fakeMemory(ramSize: number, lowEnd = Math.min(ramSize, 0xb0000000)): GuestMemory & { bytes: Uint8Array; writes: [number, number][] } {
  const bytes = new Uint8Array(lowEnd);
  const writes: [number, number][] = [];
  const check = (gpa: number, len: number): void => {
    if (gpa < 0 || gpa + len > lowEnd) throw new GuestMemoryError(gpa, len);
  };
  const dv = new DataView(bytes.buffer);
  return {
    bytes,
    writes,
    ramSize,
    read: (gpa, dest) => (check(gpa, dest.length), dest.set(bytes.subarray(gpa, gpa + dest.length))),
    write: (gpa, src) => (check(gpa, src.length), writes.push([gpa, src.length]), bytes.set(src, gpa)),
    readU8: (gpa) => (check(gpa, 1), bytes[gpa]),
    readU16: (gpa) => (check(gpa, 2), dv.getUint16(gpa, true)),
    readU32: (gpa) => (check(gpa, 4), dv.getUint32(gpa, true)),
    writeU8: (gpa, v) => (check(gpa, 1), (bytes[gpa] = v)),
    writeU16: (gpa, v) => (check(gpa, 2), dv.setUint16(gpa, v, true)),
    writeU32: (gpa, v) => (check(gpa, 4), dv.setUint32(gpa, v, true)),
    isRam: (gpa, len) => gpa >= 0 && gpa + len <= lowEnd,
  };
}
