import { StateError, type AccessSize, type IoHandler, type LegacyInterruptController, type Snapshottable, type StateValue } from "@typevisor/hv-core";

/** State of one 8259A chip (Intel 8259A datasheet, order no. 231468). */
class Chip {
  irr = 0; // interrupt request register
  isr = 0; // in-service register
  imr = 0; // interrupt mask register
  input = 0; // current input levels (edge detection)
  elcr = 0; // edge/level control (PIIX ELCR at 0x4d0/0x4d1): 1 = level
  base = 0; // ICW2 vector base
  lowest = 7; // IR with the lowest priority (rotation)
  initStep = 0; // 0 = ready; 2/3/4 = waiting for that ICW
  needIcw4 = false;
  single = false;
  ltim = false;
  autoEoi = false;
  rotateInAutoEoi = false;
  sfnm = false;
  specialMask = false;
  readIsr = false;
  poll = false;
  icw4 = 0;
  icw3 = 0;

  constructor(
    readonly master: boolean,
    readonly elcrMask: number,
  ) {}

  reset(): void {
    this.irr = this.isr = this.imr = 0;
    this.base = 0;
    this.lowest = 7;
    this.initStep = 0;
    this.needIcw4 = this.single = this.ltim = this.autoEoi = this.rotateInAutoEoi = this.sfnm = false;
    this.specialMask = this.readIsr = this.poll = false;
    this.icw3 = this.icw4 = 0;
    // Input levels and ELCR are not part of the 8259's reset: they are wires and chipset registers.
  }

  private isLevel(bit: number): boolean {
    return this.ltim || (this.elcr & bit) !== 0;
  }

  setInput(irq: number, level: boolean): void {
    const bit = 1 << irq;
    if (this.isLevel(bit)) {
      if (level) this.irr |= bit;
      else this.irr &= ~bit;
    } else if (level && !(this.input & bit)) this.irr |= bit; // rising edge latches the request
    if (level) this.input |= bit;
    else this.input &= ~bit;
  }

  // Priority of `irq`: 0 is the highest.
  private priority(irq: number): number {
    return (irq - this.lowest - 1) & 7;
  }

  private highest(bits: number): number {
    let best = -1;
    let bestPri = 8;
    for (let irq = 0; irq < 8; irq++) {
      if (bits & (1 << irq)) {
        const p = this.priority(irq);
        if (p < bestPri) {
          bestPri = p;
          best = irq;
        }
      }
    }
    return best;
  }

  /** The IR the chip would present on INTR now, or -1. */
  pending(): number {
    const req = this.irr & ~this.imr;
    const irq = this.highest(req);
    if (irq < 0) return -1;
    let inService = this.isr;
    if (this.specialMask) inService &= ~this.imr; // special mask mode: masked levels do not block (§ OCW3 ESMM/SMM)
    if (this.sfnm && this.master) inService &= ~(1 << 2); // special fully nested: the slave may nest
    const cur = this.highest(inService);
    if (cur >= 0 && this.priority(cur) <= this.priority(irq)) return -1;
    return irq;
  }

  /** INTA for `irq`: moves it in service (or not, in AEOI) and clears an edge request. */
  ack(irq: number): void {
    const bit = 1 << irq;
    if (this.autoEoi) {
      if (this.rotateInAutoEoi) this.lowest = irq;
    } else this.isr |= bit;
    if (!this.isLevel(bit)) this.irr &= ~bit;
  }

  writeCommand(v: number): void {
    if (v & 0x10) {
      // ICW1
      this.reset();
      this.needIcw4 = (v & 1) !== 0;
      this.single = (v & 2) !== 0;
      this.ltim = (v & 8) !== 0;
      this.initStep = 2;
      return;
    }
    if (v & 0x08) {
      // OCW3
      if (v & 0x04) this.poll = true;
      if (v & 0x02) this.readIsr = (v & 1) !== 0;
      if (v & 0x40) this.specialMask = (v & 0x20) !== 0;
      return;
    }
    // OCW2
    const level = v & 7;
    switch (v >> 5) {
      case 0: // rotate in automatic EOI mode (clear)
      case 4: // rotate in automatic EOI mode (set)
        this.rotateInAutoEoi = v >> 7 !== 0;
        break;
      case 1: // non-specific EOI
      case 5: {
        // rotate on non-specific EOI
        const irq = this.highest(this.isr);
        if (irq >= 0) {
          this.isr &= ~(1 << irq);
          if (v >> 5 === 5) this.lowest = irq;
        }
        break;
      }
      case 3: // specific EOI
        this.isr &= ~(1 << level);
        break;
      case 7: // rotate on specific EOI
        this.isr &= ~(1 << level);
        this.lowest = level;
        break;
      case 6: // set priority
        this.lowest = level;
        break;
      default: // 2: no operation
        break;
    }
  }

  writeData(v: number): void {
    switch (this.initStep) {
      case 2:
        this.base = v & 0xf8;
        this.initStep = this.single ? (this.needIcw4 ? 4 : 0) : 3;
        break;
      case 3:
        this.icw3 = v;
        this.initStep = this.needIcw4 ? 4 : 0;
        break;
      case 4:
        this.icw4 = v;
        this.autoEoi = (v & 2) !== 0;
        this.sfnm = (v & 0x10) !== 0;
        this.initStep = 0;
        break;
      default:
        this.imr = v; // OCW1
    }
  }

  save(): StateValue {
    return [this.irr, this.isr, this.imr, this.input, this.elcr, this.base, this.lowest, this.initStep, this.icw3, this.icw4,
      +this.needIcw4, +this.single, +this.ltim, +this.autoEoi, +this.rotateInAutoEoi, +this.sfnm, +this.specialMask, +this.readIsr, +this.poll];
  }

  load(d: StateValue, name: string): void {
    if (!Array.isArray(d) || d.length !== 19 || !d.every((x) => typeof x === "number" && Number.isInteger(x) && x >= 0 && x <= 0xff)) {
      throw new StateError("STATE_MALFORMED", `8259 ${name}: saved registers are malformed`);
    }
    const n = d as number[];
    [this.irr, this.isr, this.imr, this.input] = n;
    this.elcr = n[4] & this.elcrMask;
    this.base = n[5] & 0xf8;
    this.lowest = n[6] & 7;
    this.initStep = [0, 2, 3, 4].includes(n[7]) ? n[7] : 0;
    this.icw3 = n[8];
    this.icw4 = n[9];
    [this.needIcw4, this.single, this.ltim, this.autoEoi, this.rotateInAutoEoi, this.sfnm, this.specialMask, this.readIsr, this.poll] = n.slice(10).map((x) => x !== 0);
  }
}

/**
 * The PC's cascaded 8259A pair: master at ports 0x20/0x21 with the slave on
 * its IR2, slave at 0xA0/0xA1, plus the PIIX edge/level control registers
 * (ELCR) at 0x4D0/0x4D1. Implements every ICW/OCW of the datasheet: vector
 * base, single/cascade, automatic and specific/non-specific EOI, priority
 * rotation, special mask mode, special fully nested mode, poll mode, IRR/ISR
 * reads, and spurious IRQ 7/15 on an INTA with nothing pending.
 *
 * The CPU uses it through {@link LegacyInterruptController} at instruction
 * boundaries; devices reach it through the platform's interrupt router
 * ({@link Pic8259Pair.setIrq}, ISA IRQs 0..15).
 */
export class Pic8259Pair implements LegacyInterruptController, Snapshottable {
  /** Snapshot id. */
  readonly stateId = "pic";
  /** Snapshot format version. */
  readonly stateVersion = 1;
  private readonly master = new Chip(true, 0xf8);
  private readonly slave = new Chip(false, 0xde);
  /** Called when the INTR output may have risen (to wake a halted CPU). */
  onIntr: (() => void) | undefined;

  /** Sets the level of ISA IRQ `irq` (0..15). IRQ 2 is the cascade and ignored. */
  setIrq(irq: number, level: boolean): void {
    if (irq < 0 || irq > 15 || irq === 2) return;
    if (irq < 8) this.master.setInput(irq, level);
    else {
      this.slave.setInput(irq - 8, level);
      this.updateCascade();
    }
    if (level && this.onIntr && this.hasInterrupt()) this.onIntr();
  }

  private updateCascade(): void {
    this.master.setInput(2, this.slave.pending() >= 0);
  }

  /** INTR: true while the master presents an unmasked request of sufficient priority. */
  hasInterrupt(): boolean {
    return this.master.pending() >= 0;
  }

  /**
   * The INTA cycle: the vector of the highest-priority request, which moves
   * in service. With nothing pending (the request went away), the spurious
   * IRQ 7 (or 15 through the cascade) vector, with no ISR bit set.
   */
  acknowledge(): number {
    const irq = this.master.pending();
    if (irq < 0) return this.master.base + 7;
    this.master.ack(irq);
    if (irq !== 2) {
      this.updateCascade();
      return this.master.base + irq;
    }
    const s = this.slave.pending();
    let vector: number;
    if (s < 0) vector = this.slave.base + 7;
    else {
      this.slave.ack(s);
      vector = this.slave.base + s;
    }
    this.updateCascade();
    return vector;
  }

  /** Port handler for 0x20/0x21 (master) or 0xA0/0xA1 (slave). */
  portHandler(which: "master" | "slave"): IoHandler {
    const chip = which === "master" ? this.master : this.slave;
    return {
      read: (offset: number, _size: AccessSize): number => this.readPort(chip, offset & 1),
      write: (offset: number, _size: AccessSize, value: number): void => this.writePort(chip, offset & 1, value & 0xff),
    };
  }

  /** Port handler for the ELCR pair at 0x4D0/0x4D1. */
  readonly elcrHandler: IoHandler = {
    read: (offset) => (offset & 1 ? this.slave.elcr : this.master.elcr),
    write: (offset, _size, value) => {
      const c = offset & 1 ? this.slave : this.master;
      c.elcr = value & c.elcrMask;
      this.updateCascade();
    },
  };

  private readPort(chip: Chip, a0: number): number {
    if (chip.poll) {
      // Poll command: the next read is an INTA without a vector (datasheet "The poll command").
      chip.poll = false;
      const irq = chip.pending();
      if (irq < 0) return 0;
      chip.ack(irq);
      if (chip === this.slave) this.updateCascade();
      return 0x80 | irq;
    }
    if (a0) return chip.imr;
    return chip.readIsr ? chip.isr : chip.irr;
  }

  private writePort(chip: Chip, a0: number, value: number): void {
    if (a0) chip.writeData(value);
    else chip.writeCommand(value);
    if (chip === this.slave) this.updateCascade();
    if (this.onIntr && this.hasInterrupt()) this.onIntr();
  }

  /** Machine reset: both chips to their uninitialized state. */
  reset(): void {
    this.master.reset();
    this.slave.reset();
    this.master.elcr = 0;
    this.slave.elcr = 0;
    this.updateCascade();
  }

  /** Saves both chips. */
  saveState(): StateValue {
    return { master: this.master.save(), slave: this.slave.save() };
  }

  /** Restores both chips. */
  loadState(data: StateValue): void {
    const d = data as { master?: StateValue; slave?: StateValue };
    if (typeof d !== "object" || d === null || d.master === undefined || d.slave === undefined) throw new StateError("STATE_MALFORMED", "8259: saved state is malformed");
    this.master.load(d.master, "master");
    this.slave.load(d.slave, "slave");
  }

  /** Inspection for tests and monitors: IRR, ISR and IMR of both chips, slave in bits 8..15. */
  registers(): {
    /** Interrupt request registers. */
    irr: number;
    /** In-service registers. */
    isr: number;
    /** Interrupt mask registers. */
    imr: number;
    /** Edge/level control registers. */
    elcr: number;
  } {
    return {
      irr: this.master.irr | (this.slave.irr << 8),
      isr: this.master.isr | (this.slave.isr << 8),
      imr: this.master.imr | (this.slave.imr << 8),
      elcr: this.master.elcr | (this.slave.elcr << 8),
    };
  }
}
