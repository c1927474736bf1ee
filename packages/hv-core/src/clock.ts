import { TypevisorError } from "./errors.js";

/**
 * How virtual time moves.
 * - `realtime`: follows the host's monotonic clock while the machine runs.
 * - `deterministic`: advances only by instructions executed (and jumps to the
 *   next timer when every vCPU is idle), so runs replay exactly.
 */
export type ClockMode = "realtime" | "deterministic";

/** Options for {@link VirtualClock}. */
export interface ClockOptions {
  /** Time mode; default `realtime`. */
  mode?: ClockMode;
  /** Virtual nanoseconds per executed instruction in deterministic mode; default 1. */
  nsPerInstruction?: number;
  /** Wall-clock time (ms since the epoch) at virtual time zero; default the host's time now, or 2000-01-01 in deterministic mode. */
  startTime?: number;
  /** Host monotonic clock in nanoseconds; injectable for tests. */
  hostNow?: () => number;
}

/** Callback of a {@link Timer}; receives the virtual time at which it fires. */
export type TimerCallback = (now: number) => void;

/** Upper bound on timers fired by one {@link VirtualClock.runDue} call, so a timer that re-arms itself in the past cannot hang the host. */
export const MAX_TIMERS_PER_RUN = 10_000;

/**
 * A one-shot timer on the virtual clock. Devices create their timers once and
 * re-arm them, so arming allocates nothing.
 */
export class Timer {
  /** Virtual time (ns) the timer was last armed for (kept after it fires, so periodic timers can add their period); `Infinity` before the first arm. */
  deadline = Infinity;
  /** @internal position in the clock's heap, -1 when not armed */
  heapIndex = -1;

  /** @internal */
  constructor(
    private readonly clock: VirtualClock,
    /** Called when the timer fires. */
    readonly callback: TimerCallback,
    /** Name for debugging. */
    readonly name: string,
  ) {}

  /** Whether the timer is armed. */
  get armed(): boolean {
    return this.heapIndex >= 0;
  }

  /** Arms (or re-arms) the timer to fire at virtual time `deadline` ns. */
  arm(deadline: number): void {
    this.clock.schedule(this, deadline);
  }

  /** Arms the timer `delay` ns from now. */
  armAfter(delay: number): void {
    this.clock.schedule(this, this.clock.now() + delay);
  }

  /** Disarms the timer (no effect when not armed). */
  cancel(): void {
    this.clock.unschedule(this);
  }
}

const defaultHostNow = (): number => performance.now() * 1e6;

/**
 * The machine's virtual clock: `now()` in nanoseconds since the machine was
 * created, and a min-heap of timers.
 */
export class VirtualClock {
  /** The time mode. */
  readonly mode: ClockMode;
  /** Virtual ns per instruction (deterministic mode). */
  readonly nsPerInstruction: number;
  /** Wall-clock ms since the epoch at virtual time zero. */
  readonly startTime: number;
  private readonly hostNow: () => number;
  private readonly heap: Timer[] = [];
  private offset = 0; // realtime: host time at virtual zero
  private frozen = true; // realtime: time stands still while not running
  private frozenAt = 0;
  private virtual = 0; // deterministic: current time

  /** @param options - see {@link ClockOptions} */
  constructor(options: ClockOptions = {}) {
    this.mode = options.mode ?? "realtime";
    this.nsPerInstruction = options.nsPerInstruction ?? 1;
    if (!(this.nsPerInstruction > 0)) throw new TypevisorError("CLOCK_CONFIG", "nsPerInstruction must be positive");
    this.hostNow = options.hostNow ?? defaultHostNow;
    this.startTime = options.startTime ?? (this.mode === "deterministic" ? Date.UTC(2000, 0, 1) : Date.now());
  }

  /** Current virtual time in nanoseconds. */
  now(): number {
    if (this.mode === "deterministic") return this.virtual;
    return this.frozen ? this.frozenAt : this.hostNow() - this.offset;
  }

  /** Wall-clock time of the guest, in ms since the epoch (for the RTC). */
  wallTime(): number {
    return this.startTime + this.now() / 1e6;
  }

  /** Whether time is currently moving (realtime mode while running). */
  get running(): boolean {
    return !this.frozen;
  }

  /** Lets realtime time move (machine starts or resumes). */
  start(): void {
    if (!this.frozen) return;
    this.offset = this.hostNow() - this.frozenAt;
    this.frozen = false;
  }

  /** Stops realtime time (machine pauses); deterministic time is unaffected. */
  freeze(): void {
    if (this.frozen) return;
    this.frozenAt = this.hostNow() - this.offset;
    this.frozen = true;
  }

  /** Deterministic mode: advances time by `instructions` executed. No effect in realtime mode. */
  advanceInstructions(instructions: number): void {
    if (this.mode === "deterministic") this.virtual += instructions * this.nsPerInstruction;
  }

  /** Deterministic mode: moves time forward to `t` ns (never backwards). */
  advanceTo(t: number): void {
    if (this.mode === "deterministic" && t > this.virtual) this.virtual = t;
  }

  /** Sets the current time (snapshot restore). */
  setNow(t: number): void {
    if (this.mode === "deterministic") this.virtual = t;
    else if (this.frozen) this.frozenAt = t;
    else this.offset = this.hostNow() - t;
  }

  /** Creates a disarmed timer. */
  createTimer(callback: TimerCallback, name = "timer"): Timer {
    return new Timer(this, callback, name);
  }

  /** Deadline of the earliest armed timer, or `Infinity`. */
  nextDeadline(): number {
    return this.heap.length > 0 ? this.heap[0].deadline : Infinity;
  }

  /** Number of armed timers. */
  get pendingTimers(): number {
    return this.heap.length;
  }

  /**
   * Fires every timer whose deadline has passed, earliest first. Callbacks
   * may re-arm their timer; at most {@link MAX_TIMERS_PER_RUN} fire per call.
   * @returns how many timers fired
   */
  runDue(): number {
    const now = this.now();
    let fired = 0;
    while (this.heap.length > 0 && this.heap[0].deadline <= now && fired < MAX_TIMERS_PER_RUN) {
      const t = this.heap[0];
      this.unschedule(t);
      fired++;
      t.callback(now);
    }
    return fired;
  }

  /** @internal */
  schedule(t: Timer, deadline: number): void {
    if (Number.isNaN(deadline)) throw new TypevisorError("CLOCK_DEADLINE", `timer "${t.name}" armed with NaN deadline`);
    if (t.heapIndex >= 0) {
      const old = t.deadline;
      t.deadline = deadline;
      if (deadline < old) this.up(t.heapIndex);
      else this.down(t.heapIndex);
      return;
    }
    t.deadline = deadline;
    t.heapIndex = this.heap.length;
    this.heap.push(t);
    this.up(t.heapIndex);
  }

  /** @internal */
  unschedule(t: Timer): void {
    const i = t.heapIndex;
    if (i < 0) return;
    const last = this.heap.pop()!;
    t.heapIndex = -1;
    if (last !== t) {
      this.heap[i] = last;
      last.heapIndex = i;
      this.up(i);
      this.down(last.heapIndex);
    }
  }

  private up(i: number): void {
    const h = this.heap;
    const t = h[i];
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (h[p].deadline <= t.deadline) break;
      h[i] = h[p];
      h[i].heapIndex = i;
      i = p;
    }
    h[i] = t;
    t.heapIndex = i;
  }

  private down(i: number): void {
    const h = this.heap;
    const n = h.length;
    const t = h[i];
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && h[r].deadline < h[l].deadline ? r : l;
      if (h[c].deadline >= t.deadline) break;
      h[i] = h[c];
      h[i].heapIndex = i;
      i = c;
    }
    h[i] = t;
    t.heapIndex = i;
  }
}
