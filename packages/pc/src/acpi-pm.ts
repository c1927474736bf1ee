import { StateError, type IoHandler, type IrqLine, type Snapshottable, type StateValue, type Timer, type VirtualClock } from "@typevisor/hv-core";

/** Frequency of the ACPI power management timer (ACPI 6.5 §4.8.3.3). */
export const PM_TIMER_HZ = 3_579_545;

/** The SLP_TYP value this platform assigns to S5 (soft off); the DSDT's `\_S5` package says the same. */
export const SLP_TYP_S5 = 5;

/** PM1 status/enable bits (ACPI 6.5 §4.8.3.1). */
export const PM1_TMR = 0x0001;
/** Power button status/enable. */
export const PM1_PWRBTN = 0x0100;
/** Wake status. */
export const PM1_WAK = 0x8000;

const STS_BITS = 0x8731; // TMR, BM, GBL, PWRBTN, SLPBTN, RTC, WAK
const EN_BITS = 0x0721; // TMR_EN, GBL_EN, PWRBTN_EN, SLPBTN_EN, RTC_EN
const CNT_SCI_EN = 0x0001;
const CNT_SLP_EN = 0x2000;

/** Port layout of the PM1a event block, control block and PM timer. */
export interface AcpiPmPorts {
  /** PM1a_EVT_BLK: status (2 bytes) then enable (2 bytes). */
  pm1aEvt: number;
  /** PM1a_CNT_BLK (2 bytes). */
  pm1aCnt: number;
  /** PM_TMR_BLK (4 bytes). */
  pmTmr: number;
}

/** Default ports, as QEMU's ICH9 LPC bridge places them. */
export const DEFAULT_PM_PORTS: AcpiPmPorts = { pm1aEvt: 0x600, pm1aCnt: 0x604, pmTmr: 0x608 };

/** What a sleep request asks the machine to do. */
export interface AcpiPmWiring {
  /** The guest entered S5 (wrote SLP_EN with SLP_TYP = {@link SLP_TYP_S5}). */
  powerOff(): void;
  /** The SCI line (ISA IRQ 9, level-triggered). */
  sci?: IrqLine;
}

/**
 * The ACPI fixed hardware the FADT points at (ACPI 6.5 §4.8): the PM1a event
 * block (status with write-one-to-clear bits, enable), the PM1a control block
 * (SCI_EN always set: this is a hardware-only ACPI platform with no SMI
 * command port; SLP_TYP/SLP_EN enter S5, which powers the machine off), a
 * fixed power button, and the 24-bit PM timer at 3.579545 MHz whose bit-23
 * carry sets TMR_STS and raises an SCI when enabled.
 */
export class AcpiPm implements Snapshottable {
  /** Snapshot id. */
  readonly stateId = "acpi-pm";
  /** Snapshot format version. */
  readonly stateVersion = 1;
  private sts = 0;
  private en = 0;
  private cnt = CNT_SCI_EN;
  private lastCarry = 0; // number of bit-23 toggles seen
  private readonly timer: Timer;

  /**
   * @param clock - the virtual clock (PM timer)
   * @param wiring - power-off action and SCI line
   */
  constructor(
    private readonly clock: VirtualClock,
    private readonly wiring: AcpiPmWiring,
  ) {
    this.timer = clock.createTimer(() => this.catchUp(), "acpi-pm-timer");
  }

  /** Current PM timer count (ticks since virtual time 0). */
  private ticks(): number {
    const now = this.clock.now();
    const q = Math.floor(now / 1e9);
    return q * PM_TIMER_HZ + Math.floor(((now - q * 1e9) * PM_TIMER_HZ) / 1e9);
  }

  /** The 24-bit timer value the guest reads. */
  get timerValue(): number {
    return this.ticks() % 0x1000000;
  }

  private catchUp(): void {
    const carry = Math.floor(this.ticks() / 0x800000);
    if (carry > this.lastCarry) this.sts |= PM1_TMR;
    this.lastCarry = carry;
    this.update();
  }

  private update(): void {
    const level = (this.cnt & CNT_SCI_EN) !== 0 && (this.sts & this.en & EN_BITS) !== 0;
    this.wiring.sci?.set(level);
    if (this.en & PM1_TMR) {
      const next = (this.lastCarry + 1) * 0x800000;
      const q = Math.floor(next / PM_TIMER_HZ);
      this.timer.arm(q * 1e9 + Math.ceil(((next - q * PM_TIMER_HZ) * 1e9) / PM_TIMER_HZ));
    } else this.timer.cancel();
  }

  /** Presses the fixed power button: the guest's ACPI driver sees a power button event. */
  pressPowerButton(): void {
    this.sts |= PM1_PWRBTN;
    this.update();
  }

  /** Handler for the 4-byte PM1a event block (status at 0, enable at 2). */
  readonly evtHandler: IoHandler = {
    read: (offset, size) => {
      this.catchUp();
      const both = this.sts | (this.en << 16);
      return (both >>> (offset * 8)) & (size === 4 ? 0xffffffff : (1 << (size * 8)) - 1);
    },
    write: (offset, size, value) => {
      const both = value << (offset * 8);
      const mask = (size === 4 ? 0xffffffff : ((1 << (size * 8)) - 1) << (offset * 8)) >>> 0;
      const stsW = (both & mask & 0xffff) >>> 0;
      const enW = ((both & mask) >>> 16) & 0xffff;
      this.catchUp();
      this.sts &= ~(stsW & STS_BITS); // write one to clear
      if (mask & 0xffff0000) {
        const enMask = (mask >>> 16) & 0xffff;
        this.en = (this.en & ~enMask) | (enW & enMask & EN_BITS);
      }
      this.update();
    },
  };

  /** Handler for the 2-byte PM1a control block. */
  readonly cntHandler: IoHandler = {
    read: (offset, size) => (this.cnt >>> (offset * 8)) & (size >= 2 ? 0xffff : 0xff),
    write: (offset, size, value) => {
      const mask = size >= 2 ? 0xffff : 0xff << (offset * 8);
      const v = ((value << (offset * 8)) & mask) | (this.cnt & ~mask);
      // SCI_EN stays set (no SMI_CMD: ACPI mode only); SLP_EN and GBL_RLS are write-only.
      this.cnt = (v & 0x1c02) | CNT_SCI_EN;
      if (v & CNT_SLP_EN && ((v >> 10) & 7) === SLP_TYP_S5) this.wiring.powerOff();
      this.update();
    },
  };

  /** Handler for the 4-byte PM timer. */
  readonly timerHandler: IoHandler = {
    read: (offset, size) => {
      const v = this.timerValue >>> (offset * 8);
      return size === 4 ? v : v & ((1 << (size * 8)) - 1);
    },
    write: () => {},
  };

  /** Power-on state. */
  reset(): void {
    this.sts = 0;
    this.en = 0;
    this.cnt = CNT_SCI_EN;
    this.lastCarry = Math.floor(this.ticks() / 0x800000);
    this.update();
  }

  /** Saves the status, enable and control registers. */
  saveState(): StateValue {
    return [this.sts, this.en, this.cnt, this.lastCarry];
  }

  /** Restores the registers. */
  loadState(data: StateValue): void {
    if (!Array.isArray(data) || data.length !== 4 || !data.every((x) => typeof x === "number" && Number.isFinite(x) && x >= 0)) {
      throw new StateError("STATE_MALFORMED", "ACPI PM: saved state is malformed");
    }
    const d = data as number[];
    this.sts = d[0] & STS_BITS;
    this.en = d[1] & EN_BITS;
    this.cnt = (d[2] & 0x1c02) | CNT_SCI_EN;
    this.lastCarry = Math.floor(d[3]);
    this.update();
  }
}
