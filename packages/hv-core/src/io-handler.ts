/** Width in bytes of a port-I/O or MMIO access that handlers receive. */
export type AccessSize = 1 | 2 | 4;

/**
 * A device's register block. `offset` is relative to the start of the
 * region the handler was registered for; values are zero-extended and,
 * for 4-byte accesses, unsigned (`0 .. 2^32-1`).
 *
 * Handlers run synchronously on the vCPU's thread (trap-and-emulate): keep
 * them short and start any slow work asynchronously.
 */
export interface IoHandler {
  /** Reads `size` bytes at `offset`. */
  read(offset: number, size: AccessSize): number;
  /** Writes the low `size` bytes of `value` at `offset`. */
  write(offset: number, size: AccessSize, value: number): void;
}

/**
 * An MMIO handler; it may also take 8-byte accesses whole. Without
 * `read64`/`write64`, the bus splits an 8-byte access into two 4-byte ones,
 * low half first.
 */
export interface MmioHandler extends IoHandler {
  /** Reads 8 bytes at `offset` into `out[0]` (low half) and `out[1]` (high half). */
  read64?(offset: number, out: Uint32Array): void;
  /** Writes 8 bytes at `offset`, low half `lo` and high half `hi`. */
  write64?(offset: number, lo: number, hi: number): void;
}

/** A claimed address range on a bus; `unregister` releases it. */
export interface IoRegion {
  /** Name of the device that claimed the range (appears in overlap errors). */
  readonly name: string;
  /** First address of the range. */
  readonly base: number;
  /** Length of the range in bytes. */
  readonly length: number;
  /** Releases the range; accesses to it become unclaimed. Idempotent. */
  unregister(): void;
}

/** Called for an access no device claims, for tracing; reads still return all-ones. */
export type UnclaimedAccessHook = (address: number, size: number, isWrite: boolean, value: number) => void;

/** Value an unclaimed read of `size` bytes returns: all bits set, as on a PC bus. */
export function allOnes(size: number): number {
  return size >= 4 ? 0xffffffff : (1 << (size * 8)) - 1;
}

/** Masks `value` to `size` bytes, unsigned. */
export function maskToSize(value: number, size: number): number {
  return size >= 4 ? value >>> 0 : value & ((1 << (size * 8)) - 1);
}
