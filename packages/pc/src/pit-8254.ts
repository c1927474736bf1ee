import { StateError, type AccessSize, type IoHandler, type IrqLine, type Snapshottable, type StateValue, type Timer, type VirtualClock } from "@typevisor/hv-core";

/** Input clock of the PC's 8254: 14.31818 MHz / 12 (Intel 8254 datasheet, order no. 231164; IBM PC wiring). */
export const PIT_HZ = 1193182;

/** Whole PIT ticks in `ns` nanoseconds, exact for any realistic run length (no 2^53 overflow). */
export function pitTicks(ns: number): number {
  if (ns <= 0) return 0;
  const q = Math.floor(ns / 1e9);
  return q * PIT_HZ + Math.floor(((ns - q * 1e9) * PIT_HZ) / 1e9);
}

/** Nanoseconds until tick `k` has elapsed (the smallest ns with `pitTicks(ns) >= k`). */
export function pitNs(k: number): number {
  const q = Math.floor(k / PIT_HZ);
  return q * 1e9 + Math.ceil(((k - q * PIT_HZ) * 1e9) / PIT_HZ);
}

const toBcd = (v: number): number => ((((v / 1000) | 0) % 10) << 12) | ((((v / 100) | 0) % 10) << 8) | ((((v / 10) | 0) % 10) << 4) | (v % 10);
const fromBcd = (v: number): number => ((v >> 12) & 0xf) * 1000 + ((v >> 8) & 0xf) * 100 + ((v >> 4) & 0xf) * 10 + (v & 0xf);

class Channel {
  mode = 0;
  rw = 3; // 1 LSB, 2 MSB, 3 LSB then MSB
  bcd = false;
  reload = 0x10000; // count in CLK pulses (0 written = 65536, or 10000 in BCD)
  written = false; // a count has been written since the control word
  start = 0; // virtual ns at which counting (re)started
  running = false; // counting (modes 1/5 wait for a gate trigger)
  gate = true;
  frozenTicks = -1; // modes 0/4 with the gate low: ticks counted so far
  writeLsb = 0;
  writeHigh = false; // next write is the MSB of an LSB/MSB pair
  readHigh = false; // next read is the MSB of an LSB/MSB pair
  latched = -1; // latched count, -1 none
  latchHigh = false;
  status = -1; // latched status, -1 none
  level = false; // what we drive on the IRQ line (channel 0 only)
  lastTicks = 0; // ticks when the line was last updated

  constructor(readonly index: number) {}
}

/**
 * The 8254 programmable interval timer at ports 0x40..0x43 (plus port 0x61's
 * gate and OUT2 bits): three channels, modes 0..5, binary and BCD counting,
 * LSB/MSB access, counter latch and read-back commands. Channel 0's OUT
 * drives ISA IRQ 0; channel 2's gate and output are wired to port 0x61 as on
 * the PC.
 *
 * Counting is computed from the virtual clock (no per-tick work); channel 0
 * arms a timer for each OUT transition so interrupts arrive at exact virtual
 * times and replay in deterministic mode. If the host falls behind, missed
 * periods collapse into one edge, as a real PIC would see them.
 *
 * Deviation from the datasheet: a new count written to a running mode 2/3
 * channel takes effect at once instead of at the end of the current period.
 */
export class Pit8254 implements Snapshottable {
  /** Snapshot id. */
  readonly stateId = "pit";
  /** Snapshot format version. */
  readonly stateVersion = 1;
  private readonly ch = [new Channel(0), new Channel(1), new Channel(2)];
  private readonly timer: Timer;
  private speakerData = false;

  /**
   * @param clock - the machine's virtual clock
   * @param irq0 - the line channel 0's OUT drives (ISA IRQ 0)
   */
  constructor(
    private readonly clock: VirtualClock,
    private readonly irq0: IrqLine | undefined,
  ) {
    this.timer = clock.createTimer(() => this.onTimer(), "pit");
  }

  /** Port handler for 0x40..0x43. */
  readonly handler: IoHandler = {
    read: (offset: number, _size: AccessSize) => (offset < 3 ? this.readCounter(this.ch[offset]) : 0xff),
    write: (offset: number, _size: AccessSize, value: number) => {
      if (offset < 3) this.writeCounter(this.ch[offset], value & 0xff);
      else this.writeControl(value & 0xff);
    },
  };

  /** Port handler for port 0x61 (system control port B): bit 0 gate 2, bit 1 speaker data, bit 4 refresh toggle, bit 5 OUT2. */
  readonly port61: IoHandler = {
    read: () => {
      const refresh = Math.floor(this.clock.now() / 15085) & 1; // DRAM refresh request toggles every ~15 µs
      return (this.ch[2].gate ? 1 : 0) | (this.speakerData ? 2 : 0) | (refresh << 4) | (this.out(this.ch[2]) ? 0x20 : 0);
    },
    write: (_offset, _size, value) => {
      this.speakerData = (value & 2) !== 0;
      this.setGate(2, (value & 1) !== 0);
    },
  };

  private ticks(c: Channel): number {
    if (c.frozenTicks >= 0) return c.frozenTicks;
    return pitTicks(this.clock.now() - c.start);
  }

  /** OUT of a channel at tick `d` since its start. */
  private outAt(c: Channel, d: number): boolean {
    const n = c.reload;
    switch (c.mode) {
      case 0:
        return c.running && d >= n;
      case 1:
        return !c.running || d >= n;
      case 2:
        if (!c.running || !c.gate) return true;
        return d % n !== n - 1;
      case 3:
        if (!c.running || !c.gate) return true;
        return d % n < (n + 1) >> 1;
      default: // 4, 5
        return !c.running || d !== n;
    }
  }

  private out(c: Channel): boolean {
    return this.outAt(c, this.ticks(c));
  }

  /** Current value of the counting element. */
  private count(c: Channel): number {
    const n = c.reload;
    const mod = c.bcd ? 10000 : 0x10000;
    if (!c.running) return n % mod;
    const d = this.ticks(c);
    let v: number;
    switch (c.mode) {
      case 2:
        v = n - (d % n);
        break;
      case 3:
        v = n - ((2 * d) % n);
        break;
      default:
        v = n - (d % mod);
        break;
    }
    v = ((v % mod) + mod) % mod;
    return c.bcd ? toBcd(v) : v;
  }

  /** Tick of the next OUT transition after tick `d`, or -1 (channel 0 timer). */
  private nextTransition(c: Channel, d: number): number {
    if (!c.running || c.frozenTicks >= 0) return -1;
    const n = c.reload;
    switch (c.mode) {
      case 0:
      case 1:
        return d < n ? n : -1;
      case 2: {
        const base = d - (d % n);
        return d % n < n - 1 ? base + n - 1 : base + n;
      }
      case 3: {
        const base = d - (d % n);
        const half = (n + 1) >> 1;
        return d % n < half ? base + half : base + n;
      }
      default:
        return d < n ? n : d === n ? n + 1 : -1;
    }
  }

  /** Whether OUT had a rising edge in ticks (a, b]. */
  private roseBetween(c: Channel, a: number, b: number): boolean {
    if (b <= a || !c.running) return false;
    const n = c.reload;
    switch (c.mode) {
      case 0:
      case 1:
        return a < n && n <= b;
      case 2:
      case 3:
        return Math.floor(b / n) > Math.floor(a / n);
      default:
        return a < n + 1 && n + 1 <= b;
    }
  }

  private onTimer(): void {
    this.updateIrq();
  }

  // Brings channel 0's line up to date and arms the timer for its next transition.
  private updateIrq(): void {
    const c = this.ch[0];
    const d = this.ticks(c);
    const want = this.outAt(c, d);
    if (this.irq0) {
      if (this.roseBetween(c, c.lastTicks, d) && (c.level || !want)) {
        // A rising edge happened since the last update that setting the line to `want` alone would not show.
        if (c.level) this.irq0.lower();
        this.irq0.raise();
        c.level = true;
      }
      if (c.level !== want) this.irq0.set(want);
    }
    c.level = want;
    c.lastTicks = d;
    const next = this.irq0 ? this.nextTransition(c, d) : -1;
    if (next < 0) this.timer.cancel();
    else this.timer.arm(c.start + pitNs(next));
  }

  private writeControl(v: number): void {
    const sel = v >> 6;
    if (sel === 3) {
      // Read-back command (8254 only): bit 5 = 0 latch count, bit 4 = 0 latch status.
      for (let i = 0; i < 3; i++) {
        if (!(v & (2 << i))) continue;
        const c = this.ch[i];
        if (!(v & 0x10) && c.status < 0) c.status = this.statusByte(c);
        if (!(v & 0x20) && c.latched < 0) this.latch(c);
      }
      return;
    }
    const c = this.ch[sel];
    const rw = (v >> 4) & 3;
    if (rw === 0) {
      if (c.latched < 0) this.latch(c); // counter latch command
      return;
    }
    c.rw = rw;
    c.mode = (v >> 1) & 7;
    if (c.mode > 5) c.mode -= 4; // 6 and 7 alias modes 2 and 3
    c.bcd = (v & 1) !== 0;
    c.running = false;
    c.written = false;
    c.frozenTicks = -1;
    c.writeHigh = false;
    c.readHigh = false;
    c.latched = -1;
    c.status = -1;
    // OUT changes with the mode word, but the line follows only once a count is loaded (as QEMU does), so programming never fakes a tick.
    if (c.index === 0) this.timer.cancel();
  }

  private statusByte(c: Channel): number {
    const nullCount = c.written && (!c.running || this.ticks(c) < 1);
    return (this.out(c) ? 0x80 : 0) | (nullCount || !c.written ? 0x40 : 0) | (c.rw << 4) | (c.mode << 1) | (c.bcd ? 1 : 0);
  }

  private latch(c: Channel): void {
    c.latched = this.count(c);
    c.latchHigh = false;
  }

  private readCounter(c: Channel): number {
    if (c.status >= 0) {
      const s = c.status;
      c.status = -1;
      return s;
    }
    if (c.latched >= 0) {
      const v = c.latched;
      if (c.rw === 3 && !c.latchHigh) {
        c.latchHigh = true;
        return v & 0xff;
      }
      c.latched = -1;
      c.latchHigh = false;
      return c.rw === 2 || c.rw === 3 ? (v >> 8) & 0xff : v & 0xff;
    }
    const v = this.count(c);
    if (c.rw === 1) return v & 0xff;
    if (c.rw === 2) return (v >> 8) & 0xff;
    const high = c.readHigh;
    c.readHigh = !high;
    return high ? (v >> 8) & 0xff : v & 0xff;
  }

  private writeCounter(c: Channel, v: number): void {
    let value: number;
    if (c.rw === 1) value = v;
    else if (c.rw === 2) value = v << 8;
    else if (!c.writeHigh) {
      c.writeLsb = v;
      c.writeHigh = true;
      return;
    } else {
      c.writeHigh = false;
      value = c.writeLsb | (v << 8);
    }
    this.load(c, value);
  }

  private load(c: Channel, value: number): void {
    let n = c.bcd ? fromBcd(value) : value;
    if (n === 0) n = c.bcd ? 10000 : 0x10000;
    // Modes 2 and 3 need at least 2 (a count of 1 is illegal); treat it as 2 rather than dividing by one tick.
    if ((c.mode === 2 || c.mode === 3) && n < 2) n = 2;
    c.reload = n;
    c.written = true;
    c.frozenTicks = -1;
    if (c.mode === 1 || c.mode === 5) {
      // Hardware-triggered: wait for a gate rising edge (channel 0/1 gates are tied high: no trigger).
      if (!c.running) {
        if (c.index === 0) this.updateIrq();
        return;
      }
    }
    c.start = this.clock.now();
    c.running = true;
    if ((c.mode === 0 || c.mode === 4) && !c.gate) c.frozenTicks = 0;
    if (c.index === 0) {
      c.lastTicks = 0;
      this.updateIrq();
    }
  }

  /** Sets the gate input of channel `index` (only channel 2's is wired, through port 0x61). */
  setGate(index: number, level: boolean): void {
    const c = this.ch[index];
    if (c.gate === level) return;
    const now = this.clock.now();
    if (!level) {
      if (c.running && (c.mode === 0 || c.mode === 4)) c.frozenTicks = this.ticks(c);
      c.gate = false;
      return;
    }
    c.gate = true;
    if (!c.written) return;
    switch (c.mode) {
      case 0:
      case 4:
        if (c.frozenTicks >= 0) {
          c.start = now - pitNs(c.frozenTicks);
          c.frozenTicks = -1;
        }
        break;
      default: // 1, 2, 3, 5: a rising gate edge (re)starts counting from the initial count
        c.start = now;
        c.running = true;
        break;
    }
    if (c.index === 0) {
      c.lastTicks = 0;
      this.updateIrq();
    }
  }

  /** Machine reset: every channel unprogrammed, IRQ 0 low. */
  reset(): void {
    for (let i = 0; i < 3; i++) this.ch[i] = new Channel(i);
    this.speakerData = false;
    this.timer.cancel();
    this.irq0?.lower();
  }

  /** Saves the three channels. */
  saveState(): StateValue {
    return {
      speaker: this.speakerData,
      channels: this.ch.map((c) => [c.mode, c.rw, +c.bcd, c.reload, +c.written, c.start, +c.running, +c.gate, c.frozenTicks, c.writeLsb, +c.writeHigh, +c.readHigh, c.latched, +c.latchHigh, c.status, +c.level, c.lastTicks]),
    };
  }

  /** Restores the channels and re-arms channel 0's timer. */
  loadState(data: StateValue): void {
    const d = data as { speaker?: unknown; channels?: unknown };
    const ok =
      typeof d === "object" && d !== null && typeof d.speaker === "boolean" && Array.isArray(d.channels) && d.channels.length === 3 &&
      d.channels.every((c) => Array.isArray(c) && c.length === 17 && c.every((x) => typeof x === "number" && Number.isFinite(x)));
    if (!ok) throw new StateError("STATE_MALFORMED", "8254 PIT: saved state is malformed");
    this.speakerData = d.speaker as boolean;
    (d.channels as number[][]).forEach((s, i) => {
      const c = new Channel(i);
      const b = (x: number): boolean => x !== 0;
      c.mode = s[0] >= 0 && s[0] <= 5 ? s[0] : 0;
      c.rw = s[1] >= 1 && s[1] <= 3 ? s[1] : 3;
      c.bcd = b(s[2]);
      c.reload = s[3] >= 1 && s[3] <= 0x10000 ? Math.floor(s[3]) : 0x10000;
      c.written = b(s[4]);
      c.start = s[5];
      c.running = b(s[6]);
      c.gate = b(s[7]);
      c.frozenTicks = s[8] >= 0 ? Math.floor(s[8]) : -1;
      c.writeLsb = s[9] & 0xff;
      c.writeHigh = b(s[10]);
      c.readHigh = b(s[11]);
      c.latched = s[12] >= 0 ? s[12] & 0xffff : -1;
      c.latchHigh = b(s[13]);
      c.status = s[14] >= 0 ? s[14] & 0xff : -1;
      c.level = b(s[15]);
      c.lastTicks = Math.max(0, s[16]);
      this.ch[i] = c;
    });
    this.irq0?.set(this.ch[0].level);
    this.updateIrq();
  }
}
