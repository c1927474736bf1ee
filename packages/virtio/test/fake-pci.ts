// A small PCI configuration space for testing the virtio-pci transport
// without a platform: identity registers, a capability list, a command
// register with bus mastering, MSI-X (table, mask bits, enable) and INTx.
// Deliberately minimal; the platform provides the real one.
import type { AccessSize, MmioHandler, StateValue } from "@typevisor/hv-core";
import type { VirtioPciConfigSpace, VirtioPciConfigSpaceOptions, VirtioPciMsixOptions } from "../src/transport-pci.js";

export class FakePciConfigSpace implements VirtioPciConfigSpace {
  onConfigWrite: ((offset: number, size: AccessSize, value: number) => void) | undefined;
  onConfigRead: ((offset: number, size: AccessSize, value: number) => number) | undefined;
  readonly bytes = new Uint8Array(256);
  readonly defaults = new Uint8Array(256);
  readonly wmask = new Uint8Array(256);
  readonly bars = new Map<number, { kind: string; size: number; handler?: MmioHandler; prefetchable?: boolean }>();
  msix: VirtioPciMsixOptions & { cap: number; table: Uint32Array } = undefined as never;
  /** MSI messages sent: [address, data]. */
  readonly messages: [number, number][] = [];
  intx = false;
  private intxLevel = false;
  private capTail = 0x34;
  private capNext = 0x40;
  resets = 0;

  constructor(readonly options: VirtioPciConfigSpaceOptions) {
    this.define(0, 2, options.vendorId);
    this.define(2, 2, options.deviceId);
    this.define(4, 2, 0, 0x0407);
    this.define(8, 1, options.revision ?? 0);
    this.define(9, 3, options.classCode);
    this.define(0x2c, 2, options.subsystemVendorId ?? 0);
    this.define(0x2e, 2, options.subsystemId ?? 0);
    this.define(0x3d, 1, options.interruptPin ?? 0);
    for (const b of options.bars ?? []) this.bars.set(b.index, b);
  }

  get busMasterEnabled(): boolean {
    return (this.bytes[4] & 4) !== 0;
  }
  get msixEnabled(): boolean {
    return this.msix !== undefined && (this.bytes[this.msix.cap + 3] & 0x80) !== 0;
  }

  define(offset: number, size: number, value: number, writable = 0): void {
    for (let i = 0; i < size; i++) {
      const b = (value >>> (8 * i)) & 0xff;
      this.bytes[offset + i] = b;
      this.defaults[offset + i] = b;
      this.wmask[offset + i] = (writable >>> (8 * i)) & 0xff;
    }
  }

  addCapability(id: number, length: number): number {
    const off = this.capNext;
    this.capNext += (length + 3) & ~3;
    if (this.capNext > 0x100) throw new Error("capability space full");
    this.define(off, 1, id);
    this.define(this.capTail, 1, off);
    this.capTail = off + 1;
    this.define(6, 1, this.defaults[6] | 0x10);
    return off;
  }

  addMsix(o: VirtioPciMsixOptions): number {
    const cap = this.addCapability(0x11, 12);
    this.define(cap + 2, 2, o.vectors - 1, 0xc000);
    this.define(cap + 4, 4, o.tableOffset | o.tableBar);
    this.define(cap + 8, 4, o.pbaOffset | o.pbaBar);
    const table = new Uint32Array(o.vectors * 4);
    for (let v = 0; v < o.vectors; v++) table[4 * v + 3] = 1;
    this.msix = { ...o, cap, table };
    return cap;
  }

  notify(vector: number): boolean {
    if (!this.msixEnabled) return false;
    const t = this.msix.table;
    if (vector < this.msix.vectors && !(t[4 * vector + 3] & 1)) this.messages.push([t[4 * vector], t[4 * vector + 2]]);
    return true;
  }

  setIntx(level: boolean): void {
    this.intxLevel = level;
    this.intx = level && !this.msixEnabled;
  }

  private raw(offset: number, size: number): number {
    let v = 0;
    for (let i = 0; i < size; i++) v |= this.bytes[offset + i] << (8 * i);
    return v >>> 0;
  }

  configRead(offset: number, size: AccessSize): number {
    const v = this.raw(offset, size);
    return this.onConfigRead ? this.onConfigRead(offset, size, v) >>> 0 : v;
  }

  configWrite(offset: number, size: AccessSize, value: number): void {
    for (let i = 0; i < size; i++) {
      const o = offset + i;
      this.bytes[o] = (this.bytes[o] & ~this.wmask[o]) | (((value >>> (8 * i)) & 0xff) & this.wmask[o]);
    }
    this.setIntx(this.intxLevel);
    this.onConfigWrite?.(offset, size, value);
  }

  reset(): void {
    this.resets++;
    this.bytes.set(this.defaults);
    if (this.msix) {
      this.msix.table.fill(0);
      for (let v = 0; v < this.msix.vectors; v++) this.msix.table[4 * v + 3] = 1;
    }
    this.setIntx(false);
  }

  saveState(): StateValue {
    return { bytes: this.bytes.slice(), table: new Uint8Array(this.msix.table.slice().buffer), intx: this.intxLevel };
  }

  loadState(data: StateValue): void {
    const d = data as { bytes: Uint8Array; table: Uint8Array; intx: boolean };
    this.bytes.set(d.bytes);
    new Uint8Array(this.msix.table.buffer).set(d.table);
    this.setIntx(d.intx);
  }

  // ---- test helpers: BAR access as the guest would do it ----
  barRead(index: number, offset: number, size: AccessSize): number {
    const b = this.bars.get(index)!;
    if (this.msix && index === this.msix.tableBar && offset >= this.msix.tableOffset && offset < this.msix.tableOffset + 16 * this.msix.vectors) {
      return this.msix.table[(offset - this.msix.tableOffset) >>> 2];
    }
    return b.handler ? b.handler.read(offset, size) : 0;
  }

  barWrite(index: number, offset: number, size: AccessSize, value: number): void {
    const b = this.bars.get(index)!;
    if (this.msix && index === this.msix.tableBar && offset >= this.msix.tableOffset && offset < this.msix.tableOffset + 16 * this.msix.vectors) {
      this.msix.table[(offset - this.msix.tableOffset) >>> 2] = value >>> 0;
      return;
    }
    b.handler?.write(offset, size, value);
  }
}
