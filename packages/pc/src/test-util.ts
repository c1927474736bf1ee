// Shared by this package's tests only (not exported).
import { InterruptLines, VirtualClock } from "@typevisor/hv-core";

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
