// A minimal virtio-pci driver for tests, following the steps a guest OS and
// Linux's virtio_pci_modern take: size and program the BARs, enable memory
// decoding and bus mastering, walk the capability list for the virtio
// structures and MSI-X, negotiate, set up queues with MSI-X vectors, kick
// through the notify area. It touches the function only through
// configuration cycles (a ConfigAccess) and the machine's MMIO bus, as a
// guest would; its constants are its own, not the transport's.
import type { AccessSize, MmioBus, PortIoBus } from "@typevisor/hv-core";
import type { FlatGuestMemory } from "../src/flat-guest-memory.js";
import { PackedDriverQueue, SplitDriverQueue, type DriverQueue, type GuestAllocator, type NegotiateOptions } from "./guest-driver.js";

/** Configuration-space access to one function. */
export interface ConfigAccess {
  read(offset: number, size: AccessSize): number;
  write(offset: number, size: AccessSize, value: number): void;
}

/**
 * Configuration mechanism #1 (PCI Local Bus Spec 3.0 §3.2.2.3.2): the dword
 * address goes to port 0xCF8, the data moves through 0xCFC + (offset & 3).
 */
export function cf8Config(ports: PortIoBus, bus: number, device: number, fn: number): ConfigAccess {
  const select = (offset: number): void => ports.write(0xcf8, 4, (0x80000000 | (bus << 16) | (device << 11) | (fn << 8) | (offset & 0xfc)) >>> 0);
  return {
    read(offset, size) {
      select(offset);
      return ports.read(0xcfc + (offset & 3), size);
    },
    write(offset, size, value) {
      select(offset);
      ports.write(0xcfc + (offset & 3), size, value);
    },
  };
}

/** One function found on bus 0. */
export interface EnumeratedFunction {
  device: number;
  fn: number;
  vendorId: number;
  deviceId: number;
  classCode: number;
}

/** Scans bus 0 the way an OS does: vendor 0xFFFF means nothing there; the multi-function bit says whether to look past function 0. */
export function enumerateBus0(ports: PortIoBus): EnumeratedFunction[] {
  const found: EnumeratedFunction[] = [];
  for (let device = 0; device < 32; device++) {
    for (let fn = 0; fn < 8; fn++) {
      const cfg = cf8Config(ports, 0, device, fn);
      const id = cfg.read(0, 4);
      if ((id & 0xffff) === 0xffff) {
        if (fn === 0) break;
        continue;
      }
      found.push({ device, fn, vendorId: id & 0xffff, deviceId: id >>> 16, classCode: cfg.read(8, 4) >>> 8 });
      if (fn === 0 && !(cfg.read(0x0e, 1) & 0x80)) break;
    }
  }
  return found;
}

export interface VirtioCap {
  at: number;
  type: number;
  bar: number;
  offset: number;
  length: number;
  capLen: number;
}

export interface BarInfo {
  index: number;
  kind: "io" | "mem32" | "mem64";
  prefetchable: boolean;
  size: number;
  address: number;
}

export interface MsixInfo {
  cap: number;
  vectors: number;
  tableBar: number;
  tableOffset: number;
  pbaBar: number;
  pbaOffset: number;
}

export class PciGuestDriver {
  bars: BarInfo[] = [];
  caps: VirtioCap[] = [];
  msix: MsixInfo | undefined;
  multiplier = 0;
  features: [number, number] = [0, 0];

  constructor(
    readonly cfg: ConfigAccess,
    readonly mmio: MmioBus,
    readonly mem: FlatGuestMemory,
    readonly alloc: GuestAllocator,
  ) {}

  /**
   * What firmware and the OS do before the driver binds: size every BAR
   * (write all-ones with decoding off, read the mask back), place memory
   * BARs naturally aligned from `memBase`, enable memory decoding, then walk
   * the capability list.
   */
  probe(memBase: number): this {
    const cmd = this.cfg.read(4, 2);
    this.cfg.write(4, 2, cmd & ~3);
    let next = memBase;
    this.bars = [];
    for (let i = 0; i < 6; i++) {
      const reg = 0x10 + 4 * i;
      const orig = this.cfg.read(reg, 4);
      this.cfg.write(reg, 4, 0xffffffff);
      const mask = this.cfg.read(reg, 4);
      this.cfg.write(reg, 4, orig);
      if (mask === 0) continue;
      if (mask & 1) throw new Error(`unexpected I/O BAR ${i}`);
      const is64 = ((mask >>> 1) & 3) === 2;
      let size = (~(mask & 0xfffffff0) >>> 0) + 1;
      if (is64) {
        this.cfg.write(reg + 4, 4, 0xffffffff);
        const hi = this.cfg.read(reg + 4, 4);
        this.cfg.write(reg + 4, 4, 0);
        if (hi !== 0xffffffff) size = 2 ** 32 * ((~hi >>> 0) + 1);
      }
      const address = Math.ceil(next / size) * size;
      next = address + size;
      this.cfg.write(reg, 4, address >>> 0);
      this.bars.push({ index: i, kind: is64 ? "mem64" : "mem32", prefetchable: (mask & 8) !== 0, size, address });
      if (is64) i++;
    }
    this.cfg.write(4, 2, (cmd & ~3) | 2);
    this.walkCapabilities();
    return this;
  }

  private walkCapabilities(): void {
    this.caps = [];
    this.msix = undefined;
    if (!(this.cfg.read(6, 2) & 0x10)) return;
    // Bounded: at most 48 capabilities fit in 256 bytes.
    let p = this.cfg.read(0x34, 1) & 0xfc;
    for (let n = 0; p !== 0 && n < 48; n++) {
      const id = this.cfg.read(p, 1);
      if (id === 0x09) {
        const cap = { at: p, type: this.cfg.read(p + 3, 1), bar: this.cfg.read(p + 4, 1), offset: this.cfg.read(p + 8, 4), length: this.cfg.read(p + 12, 4), capLen: this.cfg.read(p + 2, 1) };
        this.caps.push(cap);
        if (cap.type === 2) this.multiplier = this.cfg.read(p + 16, 4);
      } else if (id === 0x11) {
        const table = this.cfg.read(p + 4, 4);
        const pba = this.cfg.read(p + 8, 4);
        this.msix = { cap: p, vectors: (this.cfg.read(p + 2, 2) & 0x7ff) + 1, tableBar: table & 7, tableOffset: table & ~7, pbaBar: pba & 7, pbaOffset: pba & ~7 };
      }
      p = this.cfg.read(p + 1, 1) & 0xfc;
    }
  }

  bar(index: number): BarInfo {
    const b = this.bars.find((x) => x.index === index);
    if (!b) throw new Error(`BAR ${index} is not implemented`);
    return b;
  }

  cap(type: number): VirtioCap {
    const c = this.caps.find((x) => x.type === type);
    if (!c) throw new Error(`no virtio capability of type ${type}`);
    return c;
  }

  enableBusMaster(): void {
    this.cfg.write(4, 2, this.cfg.read(4, 2) | 0x6);
  }

  /** Reads the structure of capability type `type` at `off`. */
  at(type: number, off: number, size: AccessSize): number {
    const c = this.cap(type);
    return this.mmio.read(this.bar(c.bar).address + c.offset + off, size);
  }
  atWrite(type: number, off: number, size: AccessSize, v: number): void {
    const c = this.cap(type);
    this.mmio.write(this.bar(c.bar).address + c.offset + off, size, v);
  }

  /** Common configuration. */
  r(off: number, size: AccessSize): number {
    return this.at(1, off, size);
  }
  w(off: number, size: AccessSize, v: number): void {
    this.atWrite(1, off, size, v);
  }

  tableAddress(vector: number): number {
    const m = this.msix!;
    return this.bar(m.tableBar).address + m.tableOffset + 16 * vector;
  }

  pending(vector: number): boolean {
    const m = this.msix!;
    return ((this.mmio.read(this.bar(m.pbaBar).address + m.pbaOffset + 4 * (vector >>> 5), 4) >>> (vector & 31)) & 1) === 1;
  }

  /**
   * Enables MSI-X as Linux does: enable with the function masked, program
   * vector v with address 0xfee00000 and data 0x40 + v and unmask it, then
   * clear the function mask.
   */
  enableMsix(vectors: number): void {
    const m = this.msix!;
    this.cfg.write(m.cap + 2, 2, 0xc000);
    for (let v = 0; v < vectors; v++) {
      const a = this.tableAddress(v);
      this.mmio.write(a, 4, 0xfee00000);
      this.mmio.write(a + 4, 4, 0);
      this.mmio.write(a + 8, 4, 0x40 + v);
      this.mmio.write(a + 12, 4, 0);
    }
    this.cfg.write(m.cap + 2, 2, 0x8000);
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
    this.atWrite(2, off * this.multiplier, 2, queue);
  }

  isr(): number {
    return this.at(3, 0, 1);
  }

  config(offset: number, size: AccessSize): number {
    return this.at(4, offset, size);
  }
}
