// A minimal virtio-pci driver for tests, following the steps Linux's
// virtio_pci_modern takes: find the vendor capabilities, map the structures,
// negotiate, set up queues with MSI-X vectors, kick through the notify area.
import type { AccessSize } from "@typevisor/hv-core";
import type { FlatGuestMemory } from "../src/flat-guest-memory.js";
import type { FakePciConfigSpace } from "./fake-pci.js";
import { PackedDriverQueue, SplitDriverQueue, type DriverQueue, type GuestAllocator, type NegotiateOptions } from "./guest-driver.js";

export interface VirtioCap {
  at: number;
  type: number;
  bar: number;
  offset: number;
  length: number;
  capLen: number;
}

export class PciGuestDriver {
  caps: VirtioCap[] = [];
  multiplier = 0;
  features: [number, number] = [0, 0];

  constructor(
    readonly pci: FakePciConfigSpace,
    readonly mem: FlatGuestMemory,
    readonly alloc: GuestAllocator,
  ) {
    // Walk the capability list (bounded: at most 48 entries fit in 256 bytes).
    let p = pci.configRead(0x34, 1);
    for (let n = 0; p !== 0 && n < 48; n++) {
      const id = pci.configRead(p, 1);
      if (id === 0x09) {
        const cap = { at: p, type: pci.configRead(p + 3, 1), bar: pci.configRead(p + 4, 1), offset: pci.configRead(p + 8, 4), length: pci.configRead(p + 12, 4), capLen: pci.configRead(p + 2, 1) };
        this.caps.push(cap);
        if (cap.type === 2) this.multiplier = pci.configRead(p + 16, 4);
      }
      p = pci.configRead(p + 1, 1);
    }
  }

  cap(type: number): VirtioCap {
    const c = this.caps.find((x) => x.type === type);
    if (!c) throw new Error(`no virtio capability of type ${type}`);
    return c;
  }

  enableBusMaster(): void {
    this.pci.configWrite(4, 2, this.pci.configRead(4, 2) | 0x6);
  }

  r(off: number, size: AccessSize): number {
    const c = this.cap(1);
    return this.pci.barRead(c.bar, c.offset + off, size);
  }
  w(off: number, size: AccessSize, v: number): void {
    const c = this.cap(1);
    this.pci.barWrite(c.bar, c.offset + off, size, v);
  }

  /** Programs MSI-X vector v with address 0xfee00000 and data 0x40 + v, unmasked, and enables MSI-X. */
  enableMsix(vectors: number): void {
    const m = this.pci.msix;
    for (let v = 0; v < vectors; v++) {
      this.pci.barWrite(m.tableBar, m.tableOffset + 16 * v, 4, 0xfee00000);
      this.pci.barWrite(m.tableBar, m.tableOffset + 16 * v + 8, 4, 0x40 + v);
      this.pci.barWrite(m.tableBar, m.tableOffset + 16 * v + 12, 4, 0);
    }
    this.pci.configWrite(m.cap + 3, 1, 0x80);
  }

  status(): number {
    return this.r(0x14, 1);
  }

  negotiate(opts: NegotiateOptions = {}): [number, number] {
    this.enableBusMaster();
    this.w(0x14, 1, 0);
    for (let i = 0; i < 100 && this.status() !== 0; i++);
    this.w(0x14, 1, 1);
    this.w(0x14, 1, 3);
    this.w(0x00, 4, 0);
    const lo = this.r(0x04, 4);
    this.w(0x00, 4, 1);
    const hi = this.r(0x04, 4);
    let wantLo = opts.indirect ?? true ? 1 << 28 : 0;
    let wantHi = 1;
    if (opts.eventIdx) wantLo |= 1 << 29;
    if (opts.packed) wantHi |= 1 << 2;
    for (const b of opts.accept ?? []) {
      if (b < 32) wantLo |= 1 << b;
      else wantHi |= 1 << (b - 32);
    }
    this.features = [(lo & wantLo) >>> 0, (hi & wantHi) >>> 0];
    this.w(0x08, 4, 0);
    this.w(0x0c, 4, this.features[0]);
    this.w(0x08, 4, 1);
    this.w(0x0c, 4, this.features[1]);
    this.w(0x14, 1, 11);
    if (!(this.status() & 8)) throw new Error("FEATURES_OK refused");
    return this.features;
  }

  setupQueue(index: number, opts: { size?: number; vector?: number } = {}): DriverQueue {
    this.w(0x16, 2, index);
    const max = this.r(0x18, 2);
    if (max === 0) throw new Error(`no queue ${index}`);
    const n = opts.size ?? max;
    this.w(0x18, 2, n);
    const packed = (this.features[1] & 4) !== 0;
    const q = packed ? new PackedDriverQueue(this.mem, this.alloc, index, n) : new SplitDriverQueue(this.mem, this.alloc, index, n, (this.features[0] & (1 << 29)) !== 0);
    const areas = q instanceof PackedDriverQueue ? [q.desc, q.driverArea, q.deviceArea] : [(q as SplitDriverQueue).desc, (q as SplitDriverQueue).avail, (q as SplitDriverQueue).used];
    areas.forEach((a, i) => {
      this.w(0x20 + 8 * i, 4, a % 2 ** 32);
      this.w(0x24 + 8 * i, 4, Math.floor(a / 2 ** 32));
    });
    if (opts.vector !== undefined) this.w(0x1a, 2, opts.vector);
    this.w(0x1c, 2, 1);
    return q;
  }

  driverOk(): void {
    this.w(0x14, 1, this.status() | 4);
  }

  kick(queue: number): void {
    this.w(0x16, 2, queue);
    const off = this.r(0x1e, 2);
    const c = this.cap(2);
    this.pci.barWrite(c.bar, c.offset + off * this.multiplier, 2, queue);
  }

  isr(): number {
    const c = this.cap(3);
    return this.pci.barRead(c.bar, c.offset, 1);
  }

  config(offset: number, size: AccessSize): number {
    const c = this.cap(4);
    return this.pci.barRead(c.bar, c.offset + offset, size);
  }
}
