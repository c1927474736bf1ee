import { StateError, type InterruptLines, type MmioHandler, type Snapshottable, type StateValue } from "@typevisor/hv-core";

/** Default physical address of the I/O APIC (Intel 82093AA datasheet §3.0). */
export const IOAPIC_BASE = 0xfec00000;
/** Pins (redirection entries) of this I/O APIC: 16 ISA IRQs and 8 PCI INTx GSIs. */
export const IOAPIC_PINS = 24;

const RTE_MASKED = 1 << 16;
const RTE_LEVEL = 1 << 15;
const RTE_REMOTE_IRR = 1 << 14;
const RTE_WRITABLE_LOW = 0x1afff; // vector, delivery mode, destination mode, polarity, trigger, mask

/**
 * An Intel 82093AA-style I/O APIC (version 0x20, as in ICH chipsets and
 * QEMU, with the EOI register at offset 0x40) with 24 redirection entries.
 * Each entry turns its pin into an x86 MSI message sent through
 * `irqs.sendMsi` (Intel SDM Vol. 3 §11.11 format), which is how the local
 * APICs receive I/O APIC interrupts here.
 *
 * Edge-triggered pins deliver on a rising edge while unmasked; edges on a
 * masked pin are lost (datasheet §3.2.4, mask bit). Level-triggered pins
 * deliver while asserted and Remote IRR is clear, set Remote IRR, and are
 * re-examined when the local APIC broadcasts an EOI for their vector (or the
 * guest writes the EOI register), and when they are unmasked.
 *
 * Line levels are logical (asserted or not); the polarity bit is stored and
 * reported but the wiring already hands the I/O APIC asserted levels.
 */
export class IoApic implements Snapshottable {
  /** Snapshot id. */
  readonly stateId = "ioapic";
  /** Snapshot format version. */
  readonly stateVersion = 1;
  private readonly low = new Uint32Array(IOAPIC_PINS);
  private readonly high = new Uint32Array(IOAPIC_PINS);
  private levels = 0; // asserted pins
  private select = 0;
  private id = 0;

  /**
   * @param irqs - where MSI messages go, and where EOIs are broadcast
   * @param apicId - the I/O APIC's ID (the MADT says the same)
   */
  constructor(
    private readonly irqs: InterruptLines,
    apicId = 0,
  ) {
    this.id = apicId & 0xf;
    this.reset();
    irqs.onEoi((vector) => this.eoi(vector));
  }

  /** The MMIO handler for the 4 KiB register window (IOREGSEL at 0x00, IOWIN at 0x10, EOI at 0x40). */
  readonly handler: MmioHandler = {
    read: (offset, size) => {
      let v = 0;
      if (offset >= 0x10 && offset < 0x14) v = this.readRegister(this.select) >>> ((offset - 0x10) * 8);
      else if (offset < 4) v = this.select >>> (offset * 8);
      return size === 4 ? v >>> 0 : v & ((1 << (size * 8)) - 1);
    },
    write: (offset, size, value) => {
      if (offset === 0) this.select = value & 0xff;
      else if (offset === 0x10 && size === 4) this.writeRegister(this.select, value >>> 0);
      else if (offset >= 0x10 && offset < 0x14) {
        // Partial IOWIN writes merge into the selected register.
        const shift = (offset - 0x10) * 8;
        const mask = ((1 << (size * 8)) - 1) << shift;
        this.writeRegister(this.select, ((this.readRegister(this.select) & ~mask) | ((value << shift) & mask)) >>> 0);
      } else if (offset === 0x40) this.eoi(value & 0xff);
    },
  };

  private readRegister(r: number): number {
    if (r === 0x00) return this.id << 24;
    if (r === 0x01) return ((IOAPIC_PINS - 1) << 16) | 0x20;
    if (r === 0x02) return this.id << 24;
    if (r >= 0x10 && r < 0x10 + 2 * IOAPIC_PINS) {
      const pin = (r - 0x10) >> 1;
      return r & 1 ? this.high[pin] : this.low[pin];
    }
    return 0;
  }

  private writeRegister(r: number, v: number): void {
    if (r === 0x00) {
      this.id = (v >>> 24) & 0xf;
      return;
    }
    if (r < 0x10 || r >= 0x10 + 2 * IOAPIC_PINS) return;
    const pin = (r - 0x10) >> 1;
    if (r & 1) {
      this.high[pin] = v & 0xff000000;
      return;
    }
    const old = this.low[pin];
    let nv = (old & ~RTE_WRITABLE_LOW) | (v & RTE_WRITABLE_LOW);
    if (!(nv & RTE_LEVEL)) nv &= ~RTE_REMOTE_IRR; // Remote IRR is undefined for edge entries: keep it clear
    this.low[pin] = nv >>> 0;
    // A level-triggered pin that is asserted delivers once it is unmasked (or reprogrammed unmasked).
    if (nv & RTE_LEVEL && this.levels & (1 << pin)) this.service(pin);
  }

  /** Sets the (logical) level of input `pin`. */
  setIrq(pin: number, level: boolean): void {
    if (pin < 0 || pin >= IOAPIC_PINS) return;
    const bit = 1 << pin;
    const was = (this.levels & bit) !== 0;
    if (level) this.levels |= bit;
    else this.levels &= ~bit;
    if (!level) return;
    if (this.low[pin] & RTE_LEVEL) this.service(pin);
    else if (!was) this.deliver(pin); // rising edge
  }

  private service(pin: number): void {
    const rte = this.low[pin];
    if (rte & RTE_MASKED || rte & RTE_REMOTE_IRR || !(this.levels & (1 << pin))) return;
    this.low[pin] = (rte | RTE_REMOTE_IRR) >>> 0;
    this.send(pin);
  }

  private deliver(pin: number): void {
    if (this.low[pin] & RTE_MASKED) return;
    this.send(pin);
  }

  /** The MSI message of a redirection entry (82093AA §3.2.4 fields into the SDM §11.11 layout). */
  message(pin: number): {
    /** MSI address (destination, destination mode). */
    address: number;
    /** MSI data (trigger, delivery mode, vector). */
    data: number;
  } {
    const lo = this.low[pin];
    const dest = this.high[pin] >>> 24;
    const address = (0xfee00000 | (dest << 12) | (((lo >> 11) & 1) << 2)) >>> 0;
    const data = (lo & RTE_LEVEL) | (1 << 14) | (lo & 0x7ff);
    return { address, data };
  }

  private send(pin: number): void {
    const { address, data } = this.message(pin);
    this.irqs.sendMsi(address, data);
  }

  /** End of interrupt for `vector`: clears Remote IRR of matching level entries and re-delivers those still asserted. */
  eoi(vector: number): void {
    for (let pin = 0; pin < IOAPIC_PINS; pin++) {
      const rte = this.low[pin];
      if ((rte & 0xff) === vector && rte & RTE_LEVEL && rte & RTE_REMOTE_IRR) {
        this.low[pin] = (rte & ~RTE_REMOTE_IRR) >>> 0;
        this.service(pin);
      }
    }
  }

  /** Power-on: every entry masked, edge, vector 0. */
  reset(): void {
    this.low.fill(RTE_MASKED);
    this.high.fill(0);
    this.select = 0;
  }

  /** Sets the I/O APIC ID (firmware does this so it matches the MADT). */
  setId(id: number): void {
    this.id = id & 0xf;
  }

  /** Inspection: the 64-bit redirection entry of `pin` as [low, high]. */
  entry(pin: number): [number, number] {
    return [this.low[pin], this.high[pin]];
  }

  /** Saves the redirection table and input levels. */
  saveState(): StateValue {
    return { low: Array.from(this.low), high: Array.from(this.high), levels: this.levels >>> 0, select: this.select, id: this.id };
  }

  /** Restores the I/O APIC (no messages are sent). */
  loadState(data: StateValue): void {
    const d = data as Record<string, unknown>;
    const table = (x: unknown): x is number[] => Array.isArray(x) && x.length === IOAPIC_PINS && x.every((v) => typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 0xffffffff);
    if (typeof d !== "object" || d === null || !table(d.low) || !table(d.high) || typeof d.levels !== "number" || typeof d.select !== "number" || typeof d.id !== "number") {
      throw new StateError("STATE_MALFORMED", "I/O APIC: saved state is malformed");
    }
    this.low.set(d.low);
    this.high.set(d.high);
    this.levels = d.levels & 0xffffff;
    this.select = d.select & 0xff;
    this.id = d.id & 0xf;
  }
}
