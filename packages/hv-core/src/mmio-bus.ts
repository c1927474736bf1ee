import { allOnes, maskToSize, type AccessSize, type IoRegion, type MmioHandler, type UnclaimedAccessHook } from "./io-handler.js";
import { BusError } from "./port-io-bus.js";

interface MmioSlot {
  readonly name: string;
  readonly base: number;
  readonly end: number; // exclusive
  readonly handler: MmioHandler;
}

/** One claimed MMIO range, as listed by {@link MmioBus.describe}. */
export interface MmioRegionInfo {
  /** Device name. */
  name: string;
  /** First guest-physical address. */
  base: number;
  /** Length in bytes. */
  length: number;
}

/** Highest guest-physical address + 1 the bus accepts (52-bit physical addresses). */
export const MAX_PHYSICAL_ADDRESS = 2 ** 52;

/**
 * Memory-mapped I/O in the guest-physical address space. Regions are kept
 * sorted and found by binary search, with a one-entry cache in front because
 * guests hammer one device at a time. Addresses are plain numbers (exact up
 * to 2^53), so 52-bit physical addresses need no BigInt.
 */
export class MmioBus {
  private regions: MmioSlot[] = [];
  private last: MmioSlot | undefined;
  private readonly pair = new Uint32Array(2);
  /** Optional tracer for accesses no device claims. */
  onUnclaimed: UnclaimedAccessHook | undefined;

  /**
   * Claims guest-physical `base .. base+length-1` for `handler`.
   * @throws BusError `BUS_OVERLAP` naming both devices, or `BUS_RANGE`
   */
  register(name: string, base: number, length: number, handler: MmioHandler): IoRegion {
    const end = base + length;
    if (!Number.isSafeInteger(base) || !Number.isSafeInteger(length) || base < 0 || length <= 0 || end > MAX_PHYSICAL_ADDRESS) {
      throw new BusError("BUS_RANGE", `MMIO range for "${name}" (base 0x${base.toString(16)}, length ${length}) is outside the 52-bit physical address space`);
    }
    for (const r of this.regions) {
      if (base < r.end && r.base < end) {
        throw new BusError("BUS_OVERLAP", `MMIO range of "${name}" (0x${base.toString(16)}-0x${(end - 1).toString(16)}) overlaps "${r.name}" (0x${r.base.toString(16)}-0x${(r.end - 1).toString(16)})`);
      }
    }
    const slot: MmioSlot = { name, base, end, handler };
    this.regions = [...this.regions, slot].sort((a, b) => a.base - b.base);
    let live = true;
    return {
      name,
      base,
      length,
      unregister: () => {
        if (!live) return;
        live = false;
        this.regions = this.regions.filter((r) => r !== slot);
        if (this.last === slot) this.last = undefined;
      },
    };
  }

  /** The region containing `address`, or `undefined`. */
  private find(address: number): MmioSlot | undefined {
    const last = this.last;
    if (last !== undefined && address >= last.base && address < last.end) return last;
    const rs = this.regions;
    let lo = 0;
    let hi = rs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const r = rs[mid];
      if (address < r.base) hi = mid - 1;
      else if (address >= r.end) lo = mid + 1;
      else return (this.last = r);
    }
    return undefined;
  }

  /** True when some device claims `address`. */
  isClaimed(address: number): boolean {
    return this.find(address) !== undefined;
  }

  /** Name of the device claiming `address`, or `undefined`. */
  ownerOf(address: number): string | undefined {
    return this.find(address)?.name;
  }

  /** Reads `size` bytes at `address`; unclaimed bytes read as all-ones. */
  read(address: number, size: AccessSize): number {
    const r = this.find(address);
    if (r !== undefined && address + size <= r.end) return maskToSize(r.handler.read(address - r.base, size), size);
    if (r === undefined && size === 1) {
      this.onUnclaimed?.(address, 1, false, 0xff);
      return 0xff;
    }
    if (r === undefined && this.find(address + size - 1) === undefined && !this.anyWithin(address, size)) {
      this.onUnclaimed?.(address, size, false, allOnes(size));
      return allOnes(size);
    }
    let v = 0;
    for (let i = 0; i < size; i++) v |= this.read(address + i, 1) << (i * 8);
    return maskToSize(v, size);
  }

  /** Writes the low `size` bytes of `value` at `address`; unclaimed bytes are dropped. */
  write(address: number, size: AccessSize, value: number): void {
    const r = this.find(address);
    if (r !== undefined && address + size <= r.end) {
      r.handler.write(address - r.base, size, maskToSize(value, size));
      return;
    }
    if (r === undefined && size === 1) {
      this.onUnclaimed?.(address, 1, true, value & 0xff);
      return;
    }
    if (r === undefined && this.find(address + size - 1) === undefined && !this.anyWithin(address, size)) {
      this.onUnclaimed?.(address, size, true, maskToSize(value, size));
      return;
    }
    for (let i = 0; i < size; i++) this.write(address + i, 1, (value >>> (i * 8)) & 0xff);
  }

  /**
   * Reads 8 bytes at `address` into `out` (low half first). A handler with
   * `read64` gets the access whole; otherwise it is split low half first.
   */
  read64(address: number, out: Uint32Array): void {
    const r = this.find(address);
    if (r !== undefined && address + 8 <= r.end && r.handler.read64) {
      r.handler.read64(address - r.base, out);
      return;
    }
    out[0] = this.read(address, 4);
    out[1] = this.read(address + 4, 4);
  }

  /** Writes 8 bytes at `address`, low half `lo` and high half `hi`. */
  write64(address: number, lo: number, hi: number): void {
    const r = this.find(address);
    if (r !== undefined && address + 8 <= r.end && r.handler.write64) {
      r.handler.write64(address - r.base, lo >>> 0, hi >>> 0);
      return;
    }
    this.write(address, 4, lo);
    this.write(address + 4, 4, hi);
  }

  /** Reads 8 bytes as a JS number (exact when below 2^53); for tests and tools, not hot paths. */
  read64AsNumber(address: number): number {
    this.read64(address, this.pair);
    return this.pair[1] * 2 ** 32 + this.pair[0];
  }

  private anyWithin(address: number, size: number): boolean {
    const end = address + size;
    for (const r of this.regions) if (r.base < end && address < r.end) return true;
    return false;
  }

  /** A listing of the claimed ranges, sorted by address (for `info mtree`-style output). */
  describe(): MmioRegionInfo[] {
    return this.regions.map((r) => ({ name: r.name, base: r.base, length: r.end - r.base }));
  }
}
