import { StateError, type IoHandler, type IrqLine, type Snapshottable, type StateValue, type Timer, type VirtualClock } from "@typevisor/hv-core";

/** CMOS register indexes (MC146818A datasheet; IBM PC/AT CMOS map). */
export const CMOS = {
  /** Seconds. */
  SECONDS: 0x00,
  /** Seconds alarm. */
  SECONDS_ALARM: 0x01,
  /** Minutes. */
  MINUTES: 0x02,
  /** Minutes alarm. */
  MINUTES_ALARM: 0x03,
  /** Hours. */
  HOURS: 0x04,
  /** Hours alarm. */
  HOURS_ALARM: 0x05,
  /** Day of the week (1 = Sunday). */
  DAY_OF_WEEK: 0x06,
  /** Day of the month. */
  DAY_OF_MONTH: 0x07,
  /** Month. */
  MONTH: 0x08,
  /** Year within the century. */
  YEAR: 0x09,
  /** Register A: UIP, divider, periodic rate. */
  REG_A: 0x0a,
  /** Register B: SET, interrupt enables, data mode, 24/12. */
  REG_B: 0x0b,
  /** Register C: interrupt flags (read clears). */
  REG_C: 0x0c,
  /** Register D: valid RAM and time. */
  REG_D: 0x0d,
  /** Century (BCD), where the ACPI FADT's CENTURY field points. */
  CENTURY: 0x32,
} as const;

const B_SET = 0x80;
const B_PIE = 0x40;
const B_AIE = 0x20;
const B_UIE = 0x10;
const B_BINARY = 0x04;
const B_24H = 0x02;
const C_IRQF = 0x80;
const C_PF = 0x40;
const C_AF = 0x20;
const C_UF = 0x10;

/** Nanoseconds before a second boundary that UIP rises (244 µs) and how long the update lasts (1984 µs). */
const UIP_BEFORE = 244_000;
const UIP_AFTER = 1_984_000;

/** Memory layout the BIOS would report in CMOS, for guests and tools that read it. */
export interface CmosMemoryInfo {
  /** Bytes of RAM below 4 GiB (including the first MiB). */
  lowMemory: number;
  /** Bytes of RAM above 4 GiB. */
  highMemory: number;
  /** Number of CPUs. */
  cpus: number;
}

interface Fields {
  sec: number;
  min: number;
  hour: number;
  dow: number; // 1 = Sunday
  day: number;
  month: number;
  year: number; // full year
}

/**
 * The MC146818A real-time clock and CMOS RAM at ports 0x70/0x71 (bank 0,
 * bit 7 of the index is the NMI mask) and 0x72/0x73 (bank 1). Time is the
 * guest's wall clock, derived from the virtual clock (its start time plus
 * elapsed virtual time), so deterministic runs replay exactly; the guest can
 * set it (SET bit, or writes while running) as on the chip. Registers A..D,
 * BCD and binary, 12- and 24-hour modes, the century byte, UIP timing, and
 * the periodic, alarm and update-ended interrupts on ISA IRQ 8.
 *
 * Flags are computed lazily when no interrupt is enabled, so an idle RTC
 * arms no timers. The divider bits of register A are stored but only the
 * 32.768 kHz time base is modelled.
 */
export class RtcCmos implements Snapshottable {
  /** Snapshot id. */
  readonly stateId = "rtc";
  /** Snapshot format version. */
  readonly stateVersion = 1;
  private readonly cmos = new Uint8Array(256);
  private index0 = 0;
  private index1 = 0;
  private nmiDisabled = false;
  private offsetSec = 0; // guest time minus host-derived time, whole seconds
  private lastPeriodic = 0; // periodic tick index when PF was last evaluated
  private lastSecond = 0; // guest second when UF/AF were last evaluated
  private readonly startSec: number;
  private readonly startFracNs: number;
  private readonly periodicTimer: Timer;
  private readonly secondTimer: Timer;
  private memory: CmosMemoryInfo;

  /**
   * @param clock - virtual clock (its start time is the host's wall time at boot)
   * @param irq - the line for ISA IRQ 8
   * @param memory - RAM and CPU counts to record in CMOS
   */
  constructor(
    private readonly clock: VirtualClock,
    private readonly irq: IrqLine | undefined,
    memory: Partial<CmosMemoryInfo> = {},
  ) {
    this.startSec = Math.floor(clock.startTime / 1000);
    this.startFracNs = (clock.startTime - this.startSec * 1000) * 1e6;
    this.periodicTimer = clock.createTimer(() => this.onPeriodic(), "rtc-periodic");
    this.secondTimer = clock.createTimer(() => this.onSecond(), "rtc-second");
    this.memory = { lowMemory: memory.lowMemory ?? 0, highMemory: memory.highMemory ?? 0, cpus: memory.cpus ?? 1 };
    this.reset();
  }

  /** Records RAM and CPU counts in CMOS (firmware does this at boot). */
  setMemoryInfo(info: Partial<CmosMemoryInfo>): void {
    this.memory = { ...this.memory, ...info };
    this.writeMemoryInfo();
  }

  /** Whether the guest masked NMIs through bit 7 of port 0x70. */
  get nmiMasked(): boolean {
    return this.nmiDisabled;
  }

  /** Port handler for 0x70..0x73. */
  readonly handler: IoHandler = {
    read: (offset) => {
      if (offset === 1) return this.readReg(this.index0);
      if (offset === 3) return this.cmos[0x80 | this.index1];
      return 0xff; // index ports are write-only
    },
    write: (offset, _size, value) => {
      switch (offset) {
        case 0:
          this.index0 = value & 0x7f;
          this.nmiDisabled = (value & 0x80) !== 0;
          break;
        case 1:
          this.writeReg(this.index0, value & 0xff);
          break;
        case 2:
          this.index1 = value & 0x7f;
          break;
        default:
          this.cmos[0x80 | this.index1] = value & 0xff;
      }
    },
  };

  /** Power-on: registers A/B/D defaults, flags clear; the time and CMOS RAM persist (battery-backed). */
  reset(): void {
    this.cmos[CMOS.REG_A] = 0x26; // 32.768 kHz time base, 1024 Hz periodic rate
    this.cmos[CMOS.REG_B] = B_24H;
    this.cmos[CMOS.REG_C] = 0;
    this.cmos[CMOS.REG_D] = 0x80; // valid RAM and time
    this.writeMemoryInfo();
    this.lastPeriodic = this.periodicIndex(this.clock.now());
    this.lastSecond = this.guestSecond(this.clock.now());
    this.updateTimers();
    this.irq?.lower();
  }

  private writeMemoryInfo(): void {
    const c = this.cmos;
    const { lowMemory, highMemory, cpus } = this.memory;
    const kbAbove1M = Math.min(0xffff, Math.max(0, Math.floor((lowMemory - 0x100000) / 1024)));
    const chunksAbove16M = Math.min(0xffff, Math.max(0, Math.floor((lowMemory - 0x1000000) / 65536)));
    const chunksAbove4G = Math.min(0xffffff, Math.floor(highMemory / 65536));
    c[0x10] = 0; // no floppy
    c[0x12] = 0; // no legacy hard disk
    c[0x14] = 0x06; // equipment: x87 present, VGA/EGA (80 columns)
    c[0x15] = 640 & 0xff;
    c[0x16] = 640 >> 8;
    c[0x17] = c[0x30] = kbAbove1M & 0xff;
    c[0x18] = c[0x31] = kbAbove1M >> 8;
    c[0x34] = chunksAbove16M & 0xff;
    c[0x35] = chunksAbove16M >> 8;
    c[0x5b] = chunksAbove4G & 0xff;
    c[0x5c] = (chunksAbove4G >> 8) & 0xff;
    c[0x5d] = chunksAbove4G >> 16;
    c[0x5f] = Math.max(0, cpus - 1) & 0xff;
    let sum = 0;
    for (let i = 0x10; i <= 0x2d; i++) sum += c[i];
    c[0x2e] = (sum >> 8) & 0xff;
    c[0x2f] = sum & 0xff;
  }

  // --- time base -----------------------------------------------------------

  /** Guest seconds since the epoch at virtual time `now`. */
  private guestSecond(now: number): number {
    return this.startSec + this.offsetSec + Math.floor((this.startFracNs + now) / 1e9);
  }

  /** Nanoseconds into the current guest second. */
  private fraction(now: number): number {
    const t = this.startFracNs + now;
    return t - Math.floor(t / 1e9) * 1e9;
  }

  /** Virtual time of the start of guest second `s`. */
  private secondStart(s: number): number {
    return (s - this.startSec - this.offsetSec) * 1e9 - this.startFracNs;
  }

  private get rate(): number {
    const rs = this.cmos[CMOS.REG_A] & 0x0f;
    return rs === 0 ? 0 : rs <= 2 ? rs + 7 : rs;
  }

  /** Index of the last periodic tick at or before `now` (ticks every 2^(rate-1) / 32768 s). */
  private periodicIndex(now: number): number {
    const r = this.rate;
    if (r === 0) return 0;
    const perSec = 2 ** (16 - r);
    const q = Math.floor(now / 1e9);
    return q * perSec + Math.floor(((now - q * 1e9) * perSec) / 1e9);
  }

  private periodicTime(index: number): number {
    const perSec = 2 ** (16 - this.rate);
    const q = Math.floor(index / perSec);
    return q * 1e9 + Math.ceil(((index - q * perSec) * 1e9) / perSec);
  }

  // --- flags and interrupts --------------------------------------------------

  /** Brings PF, UF and AF up to date with the time elapsed since they were last evaluated. */
  private catchUp(now: number): void {
    const c = this.cmos;
    if (this.rate !== 0) {
      const p = this.periodicIndex(now);
      if (p > this.lastPeriodic) c[CMOS.REG_C] |= C_PF;
      this.lastPeriodic = p;
    }
    if (!(c[CMOS.REG_B] & B_SET)) {
      const s = this.guestSecond(now);
      if (s > this.lastSecond) {
        c[CMOS.REG_C] |= C_UF;
        // The alarm is compared at every update; look at each second passed (at most a day's worth).
        for (let t = Math.max(this.lastSecond + 1, s - 86399); t <= s; t++) {
          if (this.alarmMatches(t)) {
            c[CMOS.REG_C] |= C_AF;
            break;
          }
        }
      }
      this.lastSecond = s;
    }
    this.updateIrq();
  }

  private updateIrq(): void {
    const c = this.cmos;
    const b = c[CMOS.REG_B];
    const flags = c[CMOS.REG_C];
    const on = ((flags & C_PF) !== 0 && (b & B_PIE) !== 0) || ((flags & C_AF) !== 0 && (b & B_AIE) !== 0) || ((flags & C_UF) !== 0 && (b & B_UIE) !== 0);
    if (on) c[CMOS.REG_C] |= C_IRQF;
    else c[CMOS.REG_C] &= ~C_IRQF;
    this.irq?.set(on);
  }

  private updateTimers(): void {
    const now = this.clock.now();
    const b = this.cmos[CMOS.REG_B];
    if (b & B_PIE && this.rate !== 0) this.periodicTimer.arm(this.periodicTime(this.periodicIndex(now) + 1));
    else this.periodicTimer.cancel();
    if (b & (B_UIE | B_AIE) && !(b & B_SET)) this.secondTimer.arm(this.secondStart(this.guestSecond(now) + 1));
    else this.secondTimer.cancel();
  }

  private onPeriodic(): void {
    this.catchUp(this.clock.now());
    this.updateTimers();
  }

  private onSecond(): void {
    this.catchUp(this.clock.now());
    this.updateTimers();
  }

  // --- register encoding ---------------------------------------------------

  private encode(v: number): number {
    return this.cmos[CMOS.REG_B] & B_BINARY ? v & 0xff : (((v / 10) | 0) % 10 << 4) | v % 10;
  }

  private decode(v: number): number {
    return this.cmos[CMOS.REG_B] & B_BINARY ? v : ((v >> 4) & 0xf) * 10 + (v & 0xf);
  }

  private encodeHour(h: number): number {
    if (this.cmos[CMOS.REG_B] & B_24H) return this.encode(h);
    const pm = h >= 12;
    const h12 = h % 12 === 0 ? 12 : h % 12;
    return this.encode(h12) | (pm ? 0x80 : 0);
  }

  private decodeHour(v: number): number {
    if (this.cmos[CMOS.REG_B] & B_24H) return this.decode(v & 0x7f);
    const h12 = this.decode(v & 0x7f) % 12;
    return v & 0x80 ? h12 + 12 : h12;
  }

  private fieldsOf(second: number): Fields {
    const d = new Date(second * 1000);
    return { sec: d.getUTCSeconds(), min: d.getUTCMinutes(), hour: d.getUTCHours(), dow: d.getUTCDay() + 1, day: d.getUTCDate(), month: d.getUTCMonth() + 1, year: d.getUTCFullYear() };
  }

  private storeFields(f: Fields): void {
    const c = this.cmos;
    c[CMOS.SECONDS] = this.encode(f.sec);
    c[CMOS.MINUTES] = this.encode(f.min);
    c[CMOS.HOURS] = this.encodeHour(f.hour);
    c[CMOS.DAY_OF_WEEK] = this.encode(f.dow);
    c[CMOS.DAY_OF_MONTH] = this.encode(f.day);
    c[CMOS.MONTH] = this.encode(f.month);
    c[CMOS.YEAR] = this.encode(((f.year % 100) + 100) % 100);
    c[CMOS.CENTURY] = this.encode(Math.floor(f.year / 100) % 100);
  }

  /** Seconds since the epoch that the time registers in CMOS RAM spell (garbage in, some time out). */
  private registersToSecond(): number {
    const c = this.cmos;
    const year = this.decode(c[CMOS.CENTURY]) * 100 + this.decode(c[CMOS.YEAR]);
    const t = Date.UTC(year, this.decode(c[CMOS.MONTH]) - 1, this.decode(c[CMOS.DAY_OF_MONTH]), this.decodeHour(c[CMOS.HOURS]), this.decode(c[CMOS.MINUTES]), this.decode(c[CMOS.SECONDS]));
    return Number.isFinite(t) ? Math.floor(t / 1000) : 0;
  }

  private alarmMatches(second: number): boolean {
    const c = this.cmos;
    const f = this.fieldsOf(second);
    const dontCare = (v: number): boolean => (v & 0xc0) === 0xc0; // "don't care" codes (datasheet: 11xxxxxx)
    return (
      (dontCare(c[CMOS.SECONDS_ALARM]) || c[CMOS.SECONDS_ALARM] === this.encode(f.sec)) &&
      (dontCare(c[CMOS.MINUTES_ALARM]) || c[CMOS.MINUTES_ALARM] === this.encode(f.min)) &&
      (dontCare(c[CMOS.HOURS_ALARM]) || c[CMOS.HOURS_ALARM] === this.encodeHour(f.hour))
    );
  }

  private isTimeReg(i: number): boolean {
    return i === CMOS.SECONDS || i === CMOS.MINUTES || i === CMOS.HOURS || (i >= CMOS.DAY_OF_WEEK && i <= CMOS.YEAR) || i === CMOS.CENTURY;
  }

  private readReg(i: number): number {
    const c = this.cmos;
    const now = this.clock.now();
    const setMode = (c[CMOS.REG_B] & B_SET) !== 0;
    if (this.isTimeReg(i) && !setMode) {
      this.storeFields(this.fieldsOf(this.guestSecond(now)));
      return c[i];
    }
    switch (i) {
      case CMOS.REG_A: {
        const f = this.fraction(now);
        const uip = !setMode && (f >= 1e9 - UIP_BEFORE || f < UIP_AFTER);
        return (c[CMOS.REG_A] & 0x7f) | (uip ? 0x80 : 0);
      }
      case CMOS.REG_C: {
        this.catchUp(now);
        const v = c[CMOS.REG_C];
        c[CMOS.REG_C] = 0; // reading C clears every flag and releases IRQ 8
        this.updateIrq();
        return v;
      }
      case CMOS.REG_D:
        return 0x80;
      default:
        return c[i];
    }
  }

  private writeReg(i: number, v: number): void {
    const c = this.cmos;
    const now = this.clock.now();
    const b = c[CMOS.REG_B];
    if (this.isTimeReg(i)) {
      if (b & B_SET) {
        c[i] = v;
        return;
      }
      // Running clock: change that one field, keep the sub-second phase.
      const cur = this.guestSecond(now);
      this.storeFields(this.fieldsOf(cur));
      c[i] = v;
      this.offsetSec += this.registersToSecond() - cur;
      this.lastSecond = this.guestSecond(now);
      this.updateTimers();
      return;
    }
    switch (i) {
      case CMOS.REG_A:
        this.catchUp(now);
        c[i] = v & 0x7f;
        this.lastPeriodic = this.periodicIndex(now);
        this.updateTimers();
        return;
      case CMOS.REG_B: {
        this.catchUp(now);
        if (v & B_SET && !(b & B_SET)) {
          // Entering SET mode freezes the registers at the current time; UIE is cleared (datasheet, register B bit 7).
          this.storeFields(this.fieldsOf(this.guestSecond(now)));
          v &= ~B_UIE;
        }
        // A format change while frozen re-encodes the frozen time.
        const frozen = b & B_SET ? this.registersToSecond() : -1;
        c[CMOS.REG_B] = v;
        if (frozen >= 0 && (v ^ b) & (B_BINARY | B_24H)) this.storeFields(this.fieldsOf(frozen));
        if (!(v & B_SET) && b & B_SET) {
          this.offsetSec += this.registersToSecond() - this.guestSecond(now);
          this.lastSecond = this.guestSecond(now);
        }
        this.updateIrq();
        this.updateTimers();
        return;
      }
      case CMOS.REG_C:
      case CMOS.REG_D:
        return; // read-only
      default:
        c[i] = v;
    }
  }

  /** The guest's current wall time in ms since the epoch (seconds resolution), for tests and monitors. */
  guestTime(): number {
    return this.guestSecond(this.clock.now()) * 1000;
  }

  /** Saves CMOS RAM, indexes and the guest's clock offset. */
  saveState(): StateValue {
    return { cmos: this.cmos.slice(), index0: this.index0, index1: this.index1, nmi: this.nmiDisabled, offset: this.offsetSec, lastPeriodic: this.lastPeriodic, lastSecond: this.lastSecond };
  }

  /** Restores what {@link RtcCmos.saveState} produced. */
  loadState(data: StateValue): void {
    const d = data as Record<string, unknown>;
    const num = (k: string): number => {
      const v = d[k];
      if (typeof v !== "number" || !Number.isFinite(v)) throw new StateError("STATE_MALFORMED", `RTC: saved field "${k}" is malformed`);
      return v;
    };
    if (typeof d !== "object" || d === null || !(d.cmos instanceof Uint8Array) || d.cmos.length !== 256 || typeof d.nmi !== "boolean") {
      throw new StateError("STATE_MALFORMED", "RTC: saved CMOS contents are malformed");
    }
    this.cmos.set(d.cmos);
    this.index0 = num("index0") & 0x7f;
    this.index1 = num("index1") & 0x7f;
    this.nmiDisabled = d.nmi;
    this.offsetSec = Math.trunc(num("offset"));
    this.lastPeriodic = num("lastPeriodic");
    this.lastSecond = num("lastSecond");
    this.updateIrq();
    this.updateTimers();
  }
}
