import { BusError, type PortIoBus } from "./port-io-bus.js";
import type { MmioBus } from "./mmio-bus.js";
import { MAX_PHYSICAL_ADDRESS } from "./mmio-bus.js";
import type { AccessSize, IoHandler, IoRegion, MmioHandler } from "./io-handler.js";
import type { InterruptLines, IrqLine } from "./irq.js";
import { PciError, type PciFunction, type PciSlot } from "./pci.js";
import type { StateValue } from "./snapshottable.js";
import { StateError } from "./snapshottable.js";

/** Kind of a base address register (PCI Local Bus Spec 3.0 §6.2.5.1). */
export type PciBarKind = "io" | "mem32" | "mem64";

/** One BAR of a function. */
export interface PciBarDefinition {
  /** BAR number 0..5; a 64-bit BAR also takes `index + 1`. */
  index: number;
  /** I/O space, 32-bit or 64-bit memory space. */
  kind: PciBarKind;
  /** Size in bytes: a power of two, at least 4 for I/O (at most 256) and 16 for memory. */
  size: number;
  /** Prefetchable memory (sets bit 3); memory BARs only. */
  prefetchable?: boolean;
  /** The device's registers behind the BAR (offsets relative to the BAR). May be left out when the BAR only holds an MSI-X table. */
  handler?: MmioHandler | IoHandler;
}

/** Options of {@link PciConfigSpace}. */
export interface PciConfigSpaceOptions {
  /** Function name (messages, BAR region names). */
  name: string;
  /** Vendor ID (offset 0x00). */
  vendorId: number;
  /** Device ID (offset 0x02). */
  deviceId: number;
  /** Class code, 24 bits: base class << 16 | subclass << 8 | programming interface. */
  classCode: number;
  /** Revision ID (offset 0x08); default 0. */
  revision?: number;
  /** Subsystem vendor ID (offset 0x2C); default 0. */
  subsystemVendorId?: number;
  /** Subsystem ID (offset 0x2E); default 0. */
  subsystemId?: number;
  /** Interrupt pin (offset 0x3D): 0 none, 1 INTA# .. 4 INTD#; default 0. */
  interruptPin?: number;
  /** Header type byte (offset 0x0E) without the multi-function bit; default 0 (type 0). */
  headerType?: number;
  /** A PCIe function with 4 KiB of configuration space; default false (256 bytes). */
  extended?: boolean;
  /** The BARs. */
  bars?: readonly PciBarDefinition[];
}

/** What the helper needs from the machine: the buses BARs map onto and MSI delivery. */
export interface PciConfigHost {
  /** Port I/O space (I/O BARs). */
  readonly ports: PortIoBus;
  /** MMIO space (memory BARs). */
  readonly mmio: MmioBus;
  /** MSI delivery. */
  readonly irqs: InterruptLines;
}

/** Options of {@link PciConfigSpace.addMsi}. */
export interface PciMsiOptions {
  /** Number of vectors: 1, 2, 4, 8, 16 or 32. */
  vectors: number;
  /** 64-bit message address (default true). */
  address64?: boolean;
  /** Per-vector masking (default false). */
  perVectorMask?: boolean;
}

/** Options of {@link PciConfigSpace.addMsix}. */
export interface PciMsixOptions {
  /** Table size, 1..2048 vectors. */
  vectors: number;
  /** Memory BAR holding the table. */
  tableBar: number;
  /** Offset of the table in that BAR (8-byte aligned). */
  tableOffset: number;
  /** Memory BAR holding the pending-bit array. */
  pbaBar: number;
  /** Offset of the PBA in that BAR (8-byte aligned). */
  pbaOffset: number;
}

/** Command register bits (PCI 3.0 §6.2.2). */
export const PCI_COMMAND_IO = 0x1;
/** Memory space enable. */
export const PCI_COMMAND_MEMORY = 0x2;
/** Bus master enable (the function may do DMA). */
export const PCI_COMMAND_MASTER = 0x4;
/** INTx emulation disable. */
export const PCI_COMMAND_INTX_DISABLE = 0x400;

/** Capability IDs (PCI Code and ID Assignment Spec §2). */
export const PCI_CAP_ID_MSI = 0x05;
/** Vendor-specific capability (virtio-pci uses it). */
export const PCI_CAP_ID_VENDOR = 0x09;
/** MSI-X capability. */
export const PCI_CAP_ID_MSIX = 0x11;

interface BarState {
  readonly def: PciBarDefinition;
  readonly handler: MmioHandler;
  region: IoRegion | undefined;
  mappedAt: number; // -1 when unmapped
}

interface MsiState {
  readonly cap: number;
  readonly vectors: number;
  readonly address64: boolean;
  readonly perVectorMask: boolean;
}

interface MsixState {
  readonly cap: number;
  readonly vectors: number;
  readonly tableBar: number;
  readonly tableOffset: number;
  readonly pbaBar: number;
  readonly pbaOffset: number;
  readonly table: Uint32Array; // 4 dwords per vector
  readonly pba: Uint32Array;
}

const isPow2 = (n: number): boolean => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0 && n <= 2 ** 31;

/**
 * A reusable type-0 configuration space for PCI functions (PCI Local Bus
 * Spec 3.0 §6): read-only identity registers, per-byte writable and
 * write-one-to-clear masks, BAR sizing (writing all-ones reads back the size
 * mask), BAR mapping onto the machine's port and MMIO buses whenever the
 * command register enables decoding or a BAR moves, a capability list, MSI
 * (§6.8.1) and MSI-X (§6.8.2) with the table and PBA inside a memory BAR,
 * delivered through `irqs.sendMsi`, and INTx through the line the bus gives
 * the function.
 *
 * A device builds one, adds capabilities, and plugs it (it is itself a
 * {@link PciFunction}) or wraps it in its own function object. Its state is
 * part of the device's snapshot via {@link PciConfigSpace.saveState}.
 *
 * Guest-controlled BAR addresses that would overlap another device are left
 * unmapped (the guest misprogrammed them; the host never fails).
 */
export class PciConfigSpace implements PciFunction {
  /** Function name. */
  readonly name: string;
  /** Configuration space size: 256 or 4096 bytes. */
  readonly size: number;
  /** Called after every configuration write (device-specific registers). */
  onConfigWrite: ((offset: number, size: AccessSize, value: number) => void) | undefined;
  /** Called on every configuration read; may replace the value (device-specific registers). */
  onConfigRead: ((offset: number, size: AccessSize, value: number) => number) | undefined;

  private readonly bytes: Uint8Array;
  private readonly defaults: Uint8Array;
  private readonly wmask: Uint8Array;
  private readonly w1cmask: Uint8Array;
  private readonly bars: (BarState | undefined)[] = [undefined, undefined, undefined, undefined, undefined, undefined];
  private capTail = 0x34; // offset of the pointer to patch when the next capability is added
  private capNext = 0x40;
  private msi: MsiState | undefined;
  private msix: MsixState | undefined;
  private slotValue: PciSlot | undefined;
  private intxLine: IrqLine | undefined;
  private intxLevel = false;

  /**
   * @param host - the buses and interrupt lines (usually the `Machine`)
   * @param options - identity and BARs
   * @throws PciError `PCI_BAR` for an invalid BAR definition
   */
  constructor(
    private readonly host: PciConfigHost,
    options: PciConfigSpaceOptions,
  ) {
    this.name = options.name;
    this.size = options.extended ? 4096 : 256;
    this.bytes = new Uint8Array(this.size);
    this.defaults = new Uint8Array(this.size);
    this.wmask = new Uint8Array(this.size);
    this.w1cmask = new Uint8Array(this.size);
    this.define(0x00, 2, options.vendorId & 0xffff);
    this.define(0x02, 2, options.deviceId & 0xffff);
    this.define(0x04, 2, 0, 0x0547); // I/O, memory, bus master, parity, SERR, INTx disable
    this.w1cmask[0x07] = 0xf9; // status bits 15..11 and 8 are write-one-to-clear
    this.define(0x08, 1, options.revision ?? 0);
    this.define(0x09, 3, options.classCode & 0xffffff);
    this.define(0x0c, 1, 0, 0xff); // cache line size
    this.define(0x0d, 1, 0, 0xff); // latency timer
    this.define(0x0e, 1, (options.headerType ?? 0) & 0x7f);
    this.define(0x2c, 2, options.subsystemVendorId ?? 0);
    this.define(0x2e, 2, options.subsystemId ?? 0);
    this.define(0x3c, 1, 0, 0xff); // interrupt line: scratch for the OS
    const pin = options.interruptPin ?? 0;
    if (!Number.isInteger(pin) || pin < 0 || pin > 4) throw new PciError("PCI_PIN", `${this.name}: interrupt pin ${pin} is not 0..4`);
    this.define(0x3d, 1, pin);
    for (const bar of options.bars ?? []) this.addBar(bar);
  }

  /** Where the function is plugged, once attached. */
  get slot(): PciSlot | undefined {
    return this.slotValue;
  }

  /** The command register. */
  get command(): number {
    return this.bytes[4] | (this.bytes[5] << 8);
  }

  /** Whether the function may master the bus (do DMA); devices must not touch guest memory otherwise. */
  get busMasterEnabled(): boolean {
    return (this.bytes[4] & PCI_COMMAND_MASTER) !== 0;
  }

  /** Whether MSI is enabled by the guest. */
  get msiEnabled(): boolean {
    return this.msi !== undefined && (this.bytes[this.msi.cap + 2] & 1) !== 0;
  }

  /** Whether MSI-X is enabled by the guest. */
  get msixEnabled(): boolean {
    return this.msix !== undefined && (this.bytes[this.msix.cap + 3] & 0x80) !== 0;
  }

  /** Guest-physical (or port) address where BAR `index` is currently mapped, or -1. */
  barAddress(index: number): number {
    return this.bars[index]?.mappedAt ?? -1;
  }

  /**
   * Sets `size` bytes at `offset` in both the current and the power-on
   * contents, and which bits the guest may write (`writable`, default none).
   * For device-specific registers such as vendor capabilities.
   */
  define(offset: number, size: number, value: number, writable = 0): void {
    this.checkRange(offset, size);
    for (let i = 0; i < size; i++) {
      const b = i < 4 ? (value >>> (i * 8)) & 0xff : 0;
      this.bytes[offset + i] = b;
      this.defaults[offset + i] = b;
      this.wmask[offset + i] = i < 4 ? (writable >>> (i * 8)) & 0xff : 0;
    }
  }

  /**
   * Appends a capability of `length` bytes (including its 2-byte header) to
   * the capability list and sets the status register's list bit.
   * @returns the capability's offset in configuration space
   * @throws PciError `PCI_CAP_SPACE` when it does not fit below offset 0x100
   */
  addCapability(id: number, length: number): number {
    const off = this.capNext;
    const len = (Math.max(2, length) + 3) & ~3;
    if (off + len > 0x100) throw new PciError("PCI_CAP_SPACE", `${this.name}: capability 0x${id.toString(16)} (${length} bytes) does not fit in configuration space`);
    this.capNext = off + len;
    this.define(off, 1, id & 0xff);
    this.define(off + 1, 1, 0);
    this.define(this.capTail, 1, off);
    this.capTail = off + 1;
    this.define(0x06, 1, this.defaults[0x06] | 0x10); // status: capabilities list
    return off;
  }

  /**
   * Adds an MSI capability (PCI 3.0 §6.8.1).
   * @returns the capability offset
   */
  addMsi(options: PciMsiOptions): number {
    const { vectors } = options;
    if (!isPow2(vectors) || vectors > 32) throw new PciError("PCI_MSI", `${this.name}: MSI vector count ${vectors} is not a power of two up to 32`);
    if (this.msi) throw new PciError("PCI_MSI", `${this.name}: MSI capability added twice`);
    const address64 = options.address64 ?? true;
    const pvm = options.perVectorMask ?? false;
    const len = (address64 ? 0x0e : 0x0a) + (pvm ? 0x0a : 0);
    const cap = this.addCapability(PCI_CAP_ID_MSI, len);
    const mmc = Math.log2(vectors);
    this.define(cap + 2, 2, (mmc << 1) | (address64 ? 0x80 : 0) | (pvm ? 0x100 : 0), 0x71);
    this.define(cap + 4, 4, 0, 0xfffffffc);
    if (address64) this.define(cap + 8, 4, 0, 0xffffffff);
    const dataOff = cap + (address64 ? 0x0c : 0x08);
    this.define(dataOff, 2, 0, 0xffff);
    if (pvm) {
      const m = vectors === 32 ? 0xffffffff : (1 << vectors) - 1;
      this.define(dataOff + 4, 4, 0, m);
      this.define(dataOff + 8, 4, 0);
    }
    this.msi = { cap, vectors, address64, perVectorMask: pvm };
    return cap;
  }

  /**
   * Adds an MSI-X capability (PCI 3.0 §6.8.2) whose table and PBA live in
   * memory BARs of this function; accesses there are served by the helper.
   * All vectors start masked.
   * @returns the capability offset
   */
  addMsix(options: PciMsixOptions): number {
    const { vectors, tableBar, tableOffset, pbaBar, pbaOffset } = options;
    if (!Number.isInteger(vectors) || vectors < 1 || vectors > 2048) throw new PciError("PCI_MSIX", `${this.name}: MSI-X table size ${vectors} is not 1..2048`);
    if (this.msix) throw new PciError("PCI_MSIX", `${this.name}: MSI-X capability added twice`);
    const tableLen = vectors * 16;
    const pbaLen = Math.ceil(vectors / 64) * 8;
    for (const [bar, off, len, what] of [
      [tableBar, tableOffset, tableLen, "table"],
      [pbaBar, pbaOffset, pbaLen, "PBA"],
    ] as const) {
      const b = this.bars[bar];
      if (!b || b.def.kind === "io") throw new PciError("PCI_MSIX", `${this.name}: MSI-X ${what} BAR ${bar} is not a memory BAR`);
      if ((off & 7) !== 0 || off < 0 || off + len > b.def.size) throw new PciError("PCI_MSIX", `${this.name}: MSI-X ${what} at 0x${off.toString(16)} (+${len}) does not fit 8-byte aligned in BAR ${bar} (${b.def.size} bytes)`);
    }
    if (tableBar === pbaBar && tableOffset < pbaOffset + pbaLen && pbaOffset < tableOffset + tableLen) {
      throw new PciError("PCI_MSIX", `${this.name}: MSI-X table and PBA overlap`);
    }
    const cap = this.addCapability(PCI_CAP_ID_MSIX, 12);
    this.define(cap + 2, 2, vectors - 1, 0xc000);
    this.define(cap + 4, 4, (tableOffset | tableBar) >>> 0);
    this.define(cap + 8, 4, (pbaOffset | pbaBar) >>> 0);
    const table = new Uint32Array(vectors * 4);
    for (let v = 0; v < vectors; v++) table[v * 4 + 3] = 1;
    this.msix = { cap, vectors, tableBar, tableOffset, pbaBar, pbaOffset, table, pba: new Uint32Array(Math.ceil(vectors / 32)) };
    return cap;
  }

  /**
   * Signals interrupt `vector` by message: through MSI-X when enabled
   * (pending while masked), else MSI when enabled.
   * @returns false when neither is enabled, so the device should use INTx
   */
  notify(vector: number): boolean {
    if (this.msixEnabled) {
      const x = this.msix!;
      if (vector < 0 || vector >= x.vectors) return true; // no such vector: the message is lost, as on hardware
      if ((this.bytes[x.cap + 3] & 0x40) !== 0 || (x.table[vector * 4 + 3] & 1) !== 0) x.pba[vector >>> 5] |= 1 << (vector & 31);
      else this.sendMsixVector(vector);
      return true;
    }
    if (this.msiEnabled) {
      const m = this.msi!;
      const ctrl = this.bytes[m.cap + 2];
      const enabled = Math.min(1 << ((ctrl >> 4) & 7), m.vectors);
      if (vector < 0 || vector >= enabled) return true;
      if (m.perVectorMask) {
        const maskOff = m.cap + (m.address64 ? 0x10 : 0x0c);
        if ((this.readRaw(maskOff, 4) >>> vector) & 1) {
          this.writeRaw(maskOff + 4, 4, this.readRaw(maskOff + 4, 4) | (1 << vector));
          return true;
        }
      }
      this.sendMsiVector(vector);
      return true;
    }
    return false;
  }

  /**
   * Sets the function's INTx level. The line the bus gave it is asserted
   * while the level is high, INTx is not disabled in the command register,
   * and neither MSI nor MSI-X is enabled; the status register's interrupt
   * bit always shows the level (PCI 3.0 §6.2.3).
   */
  setIntx(level: boolean): void {
    this.intxLevel = level;
    this.updateIntx();
  }

  /** Reads `size` bytes of configuration space (PciFunction). */
  configRead(offset: number, size: AccessSize): number {
    if (offset < 0 || offset + size > this.bytes.length) return 0;
    const v = this.readRaw(offset, size);
    return this.onConfigRead ? this.onConfigRead(offset, size, v) >>> 0 : v;
  }

  /** Writes configuration space through the writable and write-one-to-clear masks (PciFunction). */
  configWrite(offset: number, size: AccessSize, value: number): void {
    if (offset < 0 || offset + size > this.bytes.length) return;
    const msixCtrlBefore = this.msix ? this.bytes[this.msix.cap + 3] : 0;
    const msiMaskBefore = this.msi?.perVectorMask ? this.readRaw(this.msi.cap + (this.msi.address64 ? 0x10 : 0x0c), 4) : 0;
    for (let i = 0; i < size; i++) {
      const o = offset + i;
      const b = (value >>> (i * 8)) & 0xff;
      let nb = (this.bytes[o] & ~this.wmask[o]) | (b & this.wmask[o]);
      nb &= ~(b & this.w1cmask[o]);
      this.bytes[o] = nb;
    }
    const end = offset + size;
    if (offset < 0x06 && end > 0x04) {
      this.updateBars();
      this.updateIntx();
    } else if (offset < 0x28 && end > 0x10) this.updateBars();
    const x = this.msix;
    if (x && offset <= x.cap + 3 && end > x.cap + 2) {
      const after = this.bytes[x.cap + 3];
      if ((msixCtrlBefore ^ after) & 0xc0) {
        this.updateIntx();
        if ((after & 0xc0) === 0x80) this.flushMsixPending();
      }
    }
    const m = this.msi;
    if (m && offset < m.cap + 0x18 && end > m.cap) {
      this.updateIntx();
      if (m.perVectorMask) {
        const maskOff = m.cap + (m.address64 ? 0x10 : 0x0c);
        const maskAfter = this.readRaw(maskOff, 4);
        const unmasked = msiMaskBefore & ~maskAfter;
        if (unmasked !== 0 && this.msiEnabled) {
          const pending = this.readRaw(maskOff + 4, 4);
          for (let v = 0; v < m.vectors; v++) {
            if ((unmasked >>> v) & (pending >>> v) & 1) {
              this.writeRaw(maskOff + 4, 4, this.readRaw(maskOff + 4, 4) & ~(1 << v));
              this.sendMsiVector(v);
            }
          }
        }
      }
    }
    this.onConfigWrite?.(offset, size, value);
  }

  /** Power-on state: default contents, BARs unmapped, MSI-X vectors masked, INTx low (PciFunction). */
  reset(): void {
    this.bytes.set(this.defaults);
    if (this.msix) {
      this.msix.table.fill(0);
      for (let v = 0; v < this.msix.vectors; v++) this.msix.table[v * 4 + 3] = 1;
      this.msix.pba.fill(0);
    }
    this.intxLevel = false;
    this.updateBars();
    this.updateIntx();
  }

  /** Remembers the slot and takes the INTx line of the function's pin (PciFunction). */
  attach(slot: PciSlot): void {
    this.slotValue = slot;
    const pin = this.bytes[0x3d];
    this.intxLine = pin >= 1 && pin <= 4 ? slot.intx(pin) : undefined;
    this.updateBars();
    this.updateIntx();
  }

  /** Unmaps every BAR and lowers INTx (PciFunction). */
  detach(): void {
    for (const b of this.bars) if (b) this.unmapBar(b);
    this.intxLine?.lower();
    this.intxLine = undefined;
    this.slotValue = undefined;
  }

  /** The configuration, MSI-X table and PBA, and INTx level, for the device's snapshot. */
  saveState(): StateValue {
    return {
      config: this.bytes.slice(),
      msixTable: this.msix ? new Uint8Array(this.msix.table.slice().buffer) : null,
      msixPba: this.msix ? new Uint8Array(this.msix.pba.slice().buffer) : null,
      intx: this.intxLevel,
    };
  }

  /**
   * Restores what {@link PciConfigSpace.saveState} produced and remaps the BARs.
   * @throws StateError `STATE_MALFORMED` naming the field that does not fit this function
   */
  loadState(data: StateValue): void {
    const d = data as { config?: unknown; msixTable?: unknown; msixPba?: unknown; intx?: unknown };
    const bad = (what: string): never => {
      throw new StateError("STATE_MALFORMED", `PCI function "${this.name}": saved ${what} does not match this function`);
    };
    if (typeof d !== "object" || d === null) bad("state");
    if (!(d.config instanceof Uint8Array) || d.config.length !== this.size) bad("configuration space");
    if (this.msix) {
      if (!(d.msixTable instanceof Uint8Array) || d.msixTable.length !== this.msix.table.byteLength) bad("MSI-X table");
      if (!(d.msixPba instanceof Uint8Array) || d.msixPba.length !== this.msix.pba.byteLength) bad("MSI-X PBA");
    }
    if (typeof d.intx !== "boolean") bad("INTx level");
    const config = d.config as Uint8Array;
    // Read-only identity must match: the state belongs to this kind of device.
    for (let i = 0; i < this.size; i++) {
      if (this.wmask[i] === 0 && this.w1cmask[i] === 0 && !this.isVolatile(i) && config[i] !== this.defaults[i]) bad(`read-only byte at configuration offset 0x${i.toString(16)}`);
    }
    this.bytes.set(config);
    if (this.msix) {
      new Uint8Array(this.msix.table.buffer).set(d.msixTable as Uint8Array);
      new Uint8Array(this.msix.pba.buffer).set(d.msixPba as Uint8Array);
    }
    this.intxLevel = d.intx as boolean;
    this.updateBars();
    this.updateIntx();
  }

  // Bytes the helper itself changes at run time (status interrupt bit, MSI pending bits).
  private isVolatile(i: number): boolean {
    if (i === 0x06) return true;
    const m = this.msi;
    if (m?.perVectorMask) {
      const p = m.cap + (m.address64 ? 0x14 : 0x10);
      if (i >= p && i < p + 4) return true;
    }
    return false;
  }

  private checkRange(offset: number, size: number): void {
    if (!Number.isInteger(offset) || offset < 0 || offset + size > this.size) {
      throw new PciError("PCI_CONFIG_RANGE", `${this.name}: configuration offset 0x${offset.toString(16)} (+${size}) is outside its ${this.size}-byte space`);
    }
  }

  private readRaw(offset: number, size: number): number {
    const b = this.bytes;
    if (size === 1) return b[offset];
    if (size === 2) return b[offset] | (b[offset + 1] << 8);
    return (b[offset] | (b[offset + 1] << 8) | (b[offset + 2] << 16) | (b[offset + 3] << 24)) >>> 0;
  }

  private writeRaw(offset: number, size: number, value: number): void {
    for (let i = 0; i < size; i++) this.bytes[offset + i] = (value >>> (i * 8)) & 0xff;
  }

  private addBar(def: PciBarDefinition): void {
    const { index, kind, size } = def;
    const where = `${this.name}: BAR ${index}`;
    if (!Number.isInteger(index) || index < 0 || index > 5 || (kind === "mem64" && index > 4)) throw new PciError("PCI_BAR", `${where} index is out of range`);
    if (this.bars[index] || (index > 0 && this.bars[index - 1]?.def.kind === "mem64") || (kind === "mem64" && this.bars[index + 1])) {
      throw new PciError("PCI_BAR", `${where} overlaps another BAR`);
    }
    if (!isPow2(size) || (kind === "io" ? size < 4 || size > 256 : size < 16)) {
      throw new PciError("PCI_BAR", `${where} size ${size} is not a power of two in range (I/O 4..256, memory >= 16)`);
    }
    if (kind !== "mem64" && size > 2 ** 31) throw new PciError("PCI_BAR", `${where} is too large for a 32-bit BAR`);
    const off = 0x10 + index * 4;
    if (kind === "io") this.define(off, 4, 0x1, ~(size - 1) & 0xfffffffc);
    else {
      const low = (kind === "mem64" ? 0x4 : 0) | (def.prefetchable ? 0x8 : 0);
      this.define(off, 4, low, ~(size - 1) & 0xfffffff0);
      if (kind === "mem64") this.define(off + 4, 4, 0, size > 2 ** 32 ? ~(size / 2 ** 32 - 1) : 0xffffffff);
    }
    const state: BarState = { def, handler: this.barHandler(index, def), region: undefined, mappedAt: -1 };
    this.bars[index] = state;
  }

  // The handler mapped for a BAR: MSI-X table/PBA ranges first, then the device.
  private barHandler(index: number, def: PciBarDefinition): MmioHandler {
    const dev = def.handler;
    const inMsix = (offset: number): "table" | "pba" | undefined => {
      const x = this.msix;
      if (!x) return undefined;
      if (x.tableBar === index && offset >= x.tableOffset && offset < x.tableOffset + x.vectors * 16) return "table";
      if (x.pbaBar === index && offset >= x.pbaOffset && offset < x.pbaOffset + Math.ceil(x.vectors / 64) * 8) return "pba";
      return undefined;
    };
    const h: MmioHandler = {
      read: (offset, size) => {
        const where = inMsix(offset);
        if (where) return this.msixRead(where, offset, size);
        return dev ? dev.read(offset, size) : 0;
      },
      write: (offset, size, value) => {
        const where = inMsix(offset);
        if (where) this.msixWrite(where, offset, size, value);
        else dev?.write(offset, size, value);
      },
    };
    const d = dev as MmioHandler | undefined;
    if (d?.read64 || d?.write64) {
      h.read64 = (offset, out) => {
        if (inMsix(offset) || !d.read64) {
          out[0] = h.read(offset, 4);
          out[1] = h.read(offset + 4, 4);
        } else d.read64(offset, out);
      };
      h.write64 = (offset, lo, hi) => {
        if (inMsix(offset) || !d.write64) {
          h.write(offset, 4, lo);
          h.write(offset + 4, 4, hi);
        } else d.write64(offset, lo, hi);
      };
    }
    return h;
  }

  private msixRead(where: "table" | "pba", offset: number, size: AccessSize): number {
    const x = this.msix!;
    const arr = where === "table" ? x.table : x.pba;
    const rel = offset - (where === "table" ? x.tableOffset : x.pbaOffset);
    const dw = arr[rel >>> 2] ?? 0;
    const shifted = dw >>> ((rel & 3) * 8);
    return size === 4 ? shifted >>> 0 : shifted & ((1 << (size * 8)) - 1);
  }

  private msixWrite(where: "table" | "pba", offset: number, size: AccessSize, value: number): void {
    if (where === "pba") return; // read-only (PCI 3.0 §6.8.2.10)
    const x = this.msix!;
    const rel = offset - x.tableOffset;
    const i = rel >>> 2;
    const shift = (rel & 3) * 8;
    const mask = size === 4 ? 0xffffffff : ((1 << (size * 8)) - 1) << shift;
    let dw = ((x.table[i] & ~mask) | ((value << shift) & mask)) >>> 0;
    const field = i & 3;
    if (field === 0) dw &= 0xfffffffc;
    if (field === 3) dw &= 1; // vector control: only the mask bit exists
    const before = x.table[i];
    x.table[i] = dw;
    if (field === 3 && before & 1 && !(dw & 1)) {
      const v = i >>> 2;
      if ((x.pba[v >>> 5] >>> (v & 31)) & 1 && this.msixEnabled && !(this.bytes[x.cap + 3] & 0x40)) {
        x.pba[v >>> 5] &= ~(1 << (v & 31));
        this.sendMsixVector(v);
      }
    }
  }

  private flushMsixPending(): void {
    const x = this.msix!;
    for (let v = 0; v < x.vectors; v++) {
      if ((x.pba[v >>> 5] >>> (v & 31)) & 1 && !(x.table[v * 4 + 3] & 1)) {
        x.pba[v >>> 5] &= ~(1 << (v & 31));
        this.sendMsixVector(v);
      }
    }
  }

  private sendMsixVector(v: number): void {
    const t = this.msix!.table;
    this.host.irqs.sendMsi(t[v * 4 + 1] * 2 ** 32 + t[v * 4], t[v * 4 + 2]);
  }

  private sendMsiVector(v: number): void {
    const m = this.msi!;
    const lo = this.readRaw(m.cap + 4, 4);
    const hi = m.address64 ? this.readRaw(m.cap + 8, 4) : 0;
    const data = this.readRaw(m.cap + (m.address64 ? 0x0c : 0x08), 2);
    const enabled = Math.min(1 << ((this.bytes[m.cap + 2] >> 4) & 7), m.vectors);
    this.host.irqs.sendMsi(hi * 2 ** 32 + lo, (data & ~(enabled - 1)) | v);
  }

  private updateIntx(): void {
    if (this.intxLevel) this.bytes[0x06] |= 0x08;
    else this.bytes[0x06] &= ~0x08;
    const assert = this.intxLevel && (this.command & PCI_COMMAND_INTX_DISABLE) === 0 && !this.msiEnabled && !this.msixEnabled;
    this.intxLine?.set(assert);
  }

  // Where a BAR should be decoded now, or -1 (decoding off, unassigned, or out of range).
  private barTarget(b: BarState): number {
    const off = 0x10 + b.def.index * 4;
    const lo = this.readRaw(off, 4);
    const size = b.def.size;
    if (b.def.kind === "io") {
      if (!(this.command & PCI_COMMAND_IO)) return -1;
      const addr = lo & 0xfffffffc;
      return addr === 0 || addr + size > 0x10000 ? -1 : addr;
    }
    if (!(this.command & PCI_COMMAND_MEMORY)) return -1;
    const addr = (lo & 0xfffffff0) >>> 0;
    if (b.def.kind === "mem32") return addr === 0 || addr + size > 0xffffffff ? -1 : addr;
    const full = this.readRaw(off + 4, 4) * 2 ** 32 + addr;
    return full === 0 || full + size > MAX_PHYSICAL_ADDRESS ? -1 : full;
  }

  private unmapBar(b: BarState): void {
    b.region?.unregister();
    b.region = undefined;
    b.mappedAt = -1;
  }

  private updateBars(): void {
    if (!this.slotValue) {
      for (const b of this.bars) if (b?.region) this.unmapBar(b);
      return;
    }
    const targets = this.bars.map((b) => (b ? this.barTarget(b) : -1));
    // Unmap everything that moves before mapping anything, so two BARs can swap places.
    this.bars.forEach((b, i) => {
      if (b && b.mappedAt !== targets[i]) this.unmapBar(b);
    });
    this.bars.forEach((b, i) => {
      if (!b || targets[i] < 0 || b.region) return;
      const name = `${this.name} BAR${i}`;
      try {
        b.region = b.def.kind === "io" ? this.host.ports.register(name, targets[i], b.def.size, b.handler) : this.host.mmio.register(name, targets[i], b.def.size, b.handler);
        b.mappedAt = targets[i];
      } catch (e) {
        if (!(e instanceof BusError)) throw e;
        // The guest placed the BAR over another device: it stays unmapped.
      }
    });
  }
}
