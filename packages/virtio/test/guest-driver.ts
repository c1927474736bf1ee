// A minimal virtio driver, as a guest would write it, for tests: it programs
// a device through its virtio-mmio registers on the machine's MMIO bus and
// builds split or packed rings in guest memory. Deliberately independent of
// the device-side code it tests (own constants, own ring logic).
import type { Machine } from "@typevisor/hv-core";
import type { FlatGuestMemory } from "../src/flat-guest-memory.js";

const NEXT = 1;
const WRITE = 2;
const INDIRECT = 4;
const AVAIL = 1 << 7;
const USED = 1 << 15;

/** Bump allocator over guest memory. */
export class GuestAllocator {
  constructor(
    private next: number,
    private readonly end: number,
  ) {}
  alloc(size: number, align = 16): number {
    const a = Math.ceil(this.next / align) * align;
    if (a + size > this.end) throw new Error("test guest memory exhausted");
    this.next = a + size;
    return a;
  }
}

export interface UsedElem {
  id: number;
  len: number;
}

/** One buffer: readable parts (data the device reads) then writable parts (lengths). */
export interface BufferSpec {
  out?: Uint8Array[];
  in?: number[];
  indirect?: boolean;
}

export interface DriverQueue {
  readonly index: number;
  readonly size: number;
  /** Adds a buffer; returns its id (split head / packed buffer id). */
  add(spec: BufferSpec): number;
  /** Makes everything added since the last publish visible to the device (split: bumps avail.idx). */
  publish(): void;
  /** Reads new used elements. */
  takeUsed(): UsedElem[];
  /** The device-writable bytes of buffer `id`, for the first `len` bytes. */
  written(id: number, len: number): Uint8Array;
  /** Ask for (or suppress) interrupts. */
  setInterrupts(enabled: boolean): void;
  /** Event index: interrupt when the used entry `index` is written. */
  setUsedEvent(index: number): void;
  /** Free descriptors. */
  free(): number;
  /** Whether the device currently asks for notifications. */
  deviceWantsNotify(): boolean;
}

interface Pending {
  inParts: { addr: number; len: number }[];
  descs: number[];
}

export class SplitDriverQueue implements DriverQueue {
  readonly desc: number;
  readonly avail: number;
  readonly used: number;
  private freeList: number[] = [];
  private availIdx = 0;
  private published = 0;
  private lastUsed = 0;
  private readonly pending = new Map<number, Pending>();

  constructor(
    private readonly mem: FlatGuestMemory,
    private readonly alloc: GuestAllocator,
    readonly index: number,
    readonly size: number,
    private readonly eventIdx: boolean,
  ) {
    this.desc = alloc.alloc(16 * size, 16);
    this.avail = alloc.alloc(6 + 2 * size, 2);
    this.used = alloc.alloc(6 + 8 * size, 4);
    for (let i = 0; i < size; i++) this.freeList.push(i);
  }

  free(): number {
    return this.freeList.length;
  }

  writeDesc(table: number, i: number, addr: number, len: number, flags: number, next: number): void {
    const b = table + 16 * i;
    this.mem.writeU32(b, addr % 0x1_0000_0000);
    this.mem.writeU32(b + 4, Math.floor(addr / 0x1_0000_0000));
    this.mem.writeU32(b + 8, len);
    this.mem.writeU16(b + 12, flags);
    this.mem.writeU16(b + 14, next);
  }

  add(spec: BufferSpec): number {
    const parts: { addr: number; len: number; write: boolean }[] = [];
    for (const o of spec.out ?? []) {
      const a = this.alloc.alloc(Math.max(1, o.length), 8);
      this.mem.write(a, o);
      parts.push({ addr: a, len: o.length, write: false });
    }
    const inParts: { addr: number; len: number }[] = [];
    for (const l of spec.in ?? []) {
      const a = this.alloc.alloc(Math.max(1, l), 8);
      this.mem.bytes.fill(0xcc, a, a + l);
      parts.push({ addr: a, len: l, write: true });
      inParts.push({ addr: a, len: l });
    }
    let head: number;
    const descs: number[] = [];
    if (spec.indirect) {
      const table = this.alloc.alloc(16 * parts.length, 16);
      parts.forEach((p, i) => this.writeDesc(table, i, p.addr, p.len, (p.write ? WRITE : 0) | (i < parts.length - 1 ? NEXT : 0), i + 1));
      head = this.freeList.shift()!;
      descs.push(head);
      this.writeDesc(this.desc, head, table, 16 * parts.length, INDIRECT, 0);
    } else {
      if (parts.length > this.freeList.length) throw new Error("no free descriptors");
      const ids = this.freeList.splice(0, parts.length);
      parts.forEach((p, i) => this.writeDesc(this.desc, ids[i], p.addr, p.len, (p.write ? WRITE : 0) | (i < parts.length - 1 ? NEXT : 0), ids[i + 1] ?? 0));
      head = ids[0];
      descs.push(...ids);
    }
    this.pending.set(head, { inParts, descs });
    this.mem.writeU16(this.avail + 4 + 2 * (this.availIdx % this.size), head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    return head;
  }

  /** Adds a raw head index to the available ring (for malformed-chain tests). */
  addRawHead(head: number): void {
    this.mem.writeU16(this.avail + 4 + 2 * (this.availIdx % this.size), head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
  }

  private prevPublished = 0;

  publish(): void {
    this.mem.writeU16(this.avail + 2, this.availIdx);
    this.prevPublished = this.published;
    this.published = this.availIdx;
  }

  /** Sets avail.idx to an arbitrary value (hostile tests). */
  setAvailIdx(v: number): void {
    this.mem.writeU16(this.avail + 2, v);
  }

  takeUsed(): UsedElem[] {
    const out: UsedElem[] = [];
    const idx = this.mem.readU16(this.used + 2);
    while (this.lastUsed !== idx) {
      const b = this.used + 4 + 8 * (this.lastUsed % this.size);
      const e = { id: this.mem.readU32(b), len: this.mem.readU32(b + 4) };
      out.push(e);
      const p = this.pending.get(e.id);
      if (p) this.freeList.push(...p.descs);
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
    }
    return out;
  }

  written(id: number, len: number): Uint8Array {
    const p = this.pending.get(id)!;
    const out = new Uint8Array(len);
    let o = 0;
    for (const part of p.inParts) {
      const n = Math.min(part.len, len - o);
      out.set(this.mem.bytes.subarray(part.addr, part.addr + n), o);
      o += n;
      if (o >= len) break;
    }
    return out;
  }

  setInterrupts(enabled: boolean): void {
    this.mem.writeU16(this.avail, enabled ? 0 : 1);
  }

  setUsedEvent(index: number): void {
    this.mem.writeU16(this.avail + 4 + 2 * this.size, index);
  }

  deviceWantsNotify(): boolean {
    if (this.eventIdx) {
      // vring_need_event(avail_event, new, old) for the last publish.
      const ev = this.mem.readU16(this.used + 4 + 8 * this.size);
      const n = this.published;
      const old = this.prevPublished;
      return ((n - ev - 1) & 0xffff) < ((n - old) & 0xffff);
    }
    return (this.mem.readU16(this.used) & 1) === 0;
  }

  availEvent(): number {
    return this.mem.readU16(this.used + 4 + 8 * this.size);
  }
}

export class PackedDriverQueue implements DriverQueue {
  readonly desc: number;
  readonly driverArea: number;
  readonly deviceArea: number;
  private nextAvail = 0;
  private availWrap = 1;
  private nextUsed = 0;
  private usedWrap = 1;
  private freeCount: number;
  private freeIds: number[] = [];
  private readonly pending = new Map<number, Pending & { slots: number }>();
  private heads: { pos: number; flags: number }[] = [];

  constructor(
    private readonly mem: FlatGuestMemory,
    private readonly alloc: GuestAllocator,
    readonly index: number,
    readonly size: number,
  ) {
    this.desc = alloc.alloc(16 * size, 16);
    this.driverArea = alloc.alloc(4, 4);
    this.deviceArea = alloc.alloc(4, 4);
    this.freeCount = size;
    for (let i = 0; i < size; i++) this.freeIds.push(i);
  }

  free(): number {
    return this.freeCount;
  }

  private writeDesc(at: number, addr: number, len: number, id: number, flags: number): void {
    this.mem.writeU32(at, addr % 0x1_0000_0000);
    this.mem.writeU32(at + 4, Math.floor(addr / 0x1_0000_0000));
    this.mem.writeU32(at + 8, len);
    this.mem.writeU16(at + 12, id);
    this.mem.writeU16(at + 14, flags);
  }

  add(spec: BufferSpec): number {
    const parts: { addr: number; len: number; write: boolean }[] = [];
    for (const o of spec.out ?? []) {
      const a = this.alloc.alloc(Math.max(1, o.length), 8);
      this.mem.write(a, o);
      parts.push({ addr: a, len: o.length, write: false });
    }
    const inParts: { addr: number; len: number }[] = [];
    for (const l of spec.in ?? []) {
      const a = this.alloc.alloc(Math.max(1, l), 8);
      this.mem.bytes.fill(0xcc, a, a + l);
      parts.push({ addr: a, len: l, write: true });
      inParts.push({ addr: a, len: l });
    }
    const id = this.freeIds.shift()!;
    const availBits = (w: number): number => (w ? AVAIL : USED);
    let slots: number;
    if (spec.indirect) {
      const table = this.alloc.alloc(16 * parts.length, 16);
      parts.forEach((p, i) => this.writeDesc(table + 16 * i, p.addr, p.len, 0, p.write ? WRITE : 0));
      slots = 1;
      const flags = INDIRECT | availBits(this.availWrap);
      this.heads.push({ pos: this.nextAvail, flags });
      this.writeDesc(this.desc + 16 * this.nextAvail, table, 16 * parts.length, id, flags ^ (AVAIL | USED));
      this.advance();
    } else {
      slots = parts.length;
      if (slots > this.freeCount) throw new Error("no free descriptors");
      parts.forEach((p, i) => {
        const flags = (p.write ? WRITE : 0) | (i < parts.length - 1 ? NEXT : 0) | availBits(this.availWrap);
        if (i === 0) {
          // The head's flags are written last (at publish) so the device never sees half a chain.
          this.heads.push({ pos: this.nextAvail, flags });
          this.writeDesc(this.desc + 16 * this.nextAvail, p.addr, p.len, id, flags ^ (AVAIL | USED));
        } else this.writeDesc(this.desc + 16 * this.nextAvail, p.addr, p.len, id, flags);
        this.advance();
      });
    }
    this.freeCount -= slots;
    this.pending.set(id, { inParts, descs: [], slots });
    return id;
  }

  private advance(): void {
    if (++this.nextAvail === this.size) {
      this.nextAvail = 0;
      this.availWrap ^= 1;
    }
  }

  publish(): void {
    for (const h of this.heads) this.mem.writeU16(this.desc + 16 * h.pos + 14, h.flags);
    this.heads = [];
  }

  takeUsed(): UsedElem[] {
    const out: UsedElem[] = [];
    for (;;) {
      const b = this.desc + 16 * this.nextUsed;
      const flags = this.mem.readU16(b + 14);
      const a = (flags & AVAIL) !== 0 ? 1 : 0;
      const u = (flags & USED) !== 0 ? 1 : 0;
      if (a !== u || u !== this.usedWrap) break;
      const e = { id: this.mem.readU16(b + 12), len: this.mem.readU32(b + 8) };
      out.push(e);
      const p = this.pending.get(e.id)!;
      this.freeCount += p.slots;
      this.freeIds.push(e.id);
      this.nextUsed += p.slots;
      if (this.nextUsed >= this.size) {
        this.nextUsed -= this.size;
        this.usedWrap ^= 1;
      }
    }
    return out;
  }

  written(id: number, len: number): Uint8Array {
    const p = this.pending.get(id)!;
    const out = new Uint8Array(len);
    let o = 0;
    for (const part of p.inParts) {
      const n = Math.min(part.len, len - o);
      out.set(this.mem.bytes.subarray(part.addr, part.addr + n), o);
      o += n;
      if (o >= len) break;
    }
    return out;
  }

  setInterrupts(enabled: boolean): void {
    this.mem.writeU16(this.driverArea + 2, enabled ? 0 : 1);
  }

  /** Packed: event at used slot `index` (ring position) with the current used wrap counter. */
  setUsedEvent(index: number, wrap = this.usedWrap): void {
    this.mem.writeU16(this.driverArea, (index & 0x7fff) | (wrap << 15));
    this.mem.writeU16(this.driverArea + 2, 2);
  }

  deviceWantsNotify(): boolean {
    return (this.mem.readU16(this.deviceArea + 2) & 3) !== 1;
  }
}

export const MMIO = {
  MAGIC: 0x000,
  VERSION: 0x004,
  DEVICE_ID: 0x008,
  DEVICE_FEATURES: 0x010,
  DEVICE_FEATURES_SEL: 0x014,
  DRIVER_FEATURES: 0x020,
  DRIVER_FEATURES_SEL: 0x024,
  QUEUE_SEL: 0x030,
  QUEUE_NUM_MAX: 0x034,
  QUEUE_NUM: 0x038,
  QUEUE_READY: 0x044,
  QUEUE_NOTIFY: 0x050,
  INTERRUPT_STATUS: 0x060,
  INTERRUPT_ACK: 0x064,
  STATUS: 0x070,
  QUEUE_DESC_LOW: 0x080,
  QUEUE_DESC_HIGH: 0x084,
  QUEUE_DRIVER_LOW: 0x090,
  QUEUE_DRIVER_HIGH: 0x094,
  QUEUE_DEVICE_LOW: 0x0a0,
  QUEUE_DEVICE_HIGH: 0x0a4,
  CONFIG_GENERATION: 0x0fc,
  CONFIG: 0x100,
};

export interface NegotiateOptions {
  packed?: boolean;
  eventIdx?: boolean;
  indirect?: boolean;
  /** Extra device-specific feature bits to accept if offered. */
  accept?: number[];
}

/** Drives one virtio-mmio device. */
export class MmioGuestDriver {
  features: [number, number] = [0, 0];
  queues: DriverQueue[] = [];

  constructor(
    readonly machine: Machine,
    readonly base: number,
    readonly mem: FlatGuestMemory,
    readonly alloc: GuestAllocator,
  ) {}

  read(off: number, size: 1 | 2 | 4 = 4): number {
    return this.machine.mmio.read(this.base + off, size);
  }
  write(off: number, value: number, size: 1 | 2 | 4 = 4): void {
    this.machine.mmio.write(this.base + off, size, value);
  }

  get packed(): boolean {
    return (this.features[1] & (1 << 2)) !== 0;
  }
  get eventIdx(): boolean {
    return (this.features[0] & (1 << 29)) !== 0;
  }

  deviceFeatures(): [number, number] {
    this.write(MMIO.DEVICE_FEATURES_SEL, 0);
    const lo = this.read(MMIO.DEVICE_FEATURES);
    this.write(MMIO.DEVICE_FEATURES_SEL, 1);
    const hi = this.read(MMIO.DEVICE_FEATURES);
    return [lo, hi];
  }

  /** Reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK; returns the negotiated words. */
  negotiate(opts: NegotiateOptions = {}): [number, number] {
    this.write(MMIO.STATUS, 0);
    this.write(MMIO.STATUS, 1);
    this.write(MMIO.STATUS, 1 | 2);
    const [lo, hi] = this.deviceFeatures();
    let wantLo = 0;
    let wantHi = 1; // VERSION_1
    if (opts.indirect ?? true) wantLo |= 1 << 28;
    if (opts.eventIdx ?? false) wantLo |= 1 << 29;
    if (opts.packed ?? false) wantHi |= 1 << 2;
    for (const b of opts.accept ?? []) {
      if (b < 32) wantLo |= 1 << b;
      else wantHi |= 1 << (b - 32);
    }
    this.features = [(lo & wantLo) >>> 0, (hi & wantHi) >>> 0];
    this.write(MMIO.DRIVER_FEATURES_SEL, 0);
    this.write(MMIO.DRIVER_FEATURES, this.features[0]);
    this.write(MMIO.DRIVER_FEATURES_SEL, 1);
    this.write(MMIO.DRIVER_FEATURES, this.features[1]);
    this.write(MMIO.STATUS, 1 | 2 | 8);
    if (!(this.read(MMIO.STATUS) & 8)) throw new Error("device refused FEATURES_OK");
    return this.features;
  }

  setupQueue(index: number, size?: number): DriverQueue {
    this.write(MMIO.QUEUE_SEL, index);
    const max = this.read(MMIO.QUEUE_NUM_MAX);
    if (max === 0) throw new Error(`queue ${index} does not exist`);
    const n = size ?? max;
    this.write(MMIO.QUEUE_NUM, n);
    const q: DriverQueue & { desc: number } = this.packed
      ? new PackedDriverQueue(this.mem, this.alloc, index, n)
      : new SplitDriverQueue(this.mem, this.alloc, index, n, this.eventIdx);
    const areas: [number, number][] =
      q instanceof PackedDriverQueue
        ? [
            [MMIO.QUEUE_DESC_LOW, q.desc],
            [MMIO.QUEUE_DRIVER_LOW, q.driverArea],
            [MMIO.QUEUE_DEVICE_LOW, q.deviceArea],
          ]
        : [
            [MMIO.QUEUE_DESC_LOW, (q as SplitDriverQueue).desc],
            [MMIO.QUEUE_DRIVER_LOW, (q as SplitDriverQueue).avail],
            [MMIO.QUEUE_DEVICE_LOW, (q as SplitDriverQueue).used],
          ];
    for (const [reg, addr] of areas) {
      this.write(reg, addr >>> 0);
      this.write(reg + 4, Math.floor(addr / 0x1_0000_0000));
    }
    this.write(MMIO.QUEUE_READY, 1);
    this.queues[index] = q;
    return q;
  }

  driverOk(): void {
    this.write(MMIO.STATUS, this.read(MMIO.STATUS) | 4);
  }

  status(): number {
    return this.read(MMIO.STATUS);
  }

  kick(queue: number): void {
    this.write(MMIO.QUEUE_NOTIFY, queue);
  }

  /** Reads and acknowledges InterruptStatus. */
  ackInterrupt(): number {
    const s = this.read(MMIO.INTERRUPT_STATUS);
    if (s) this.write(MMIO.INTERRUPT_ACK, s);
    return s;
  }

  config(offset: number, size: 1 | 2 | 4): number {
    return this.read(MMIO.CONFIG + offset, size);
  }
}
