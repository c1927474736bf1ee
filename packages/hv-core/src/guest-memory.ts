import { TypevisorError } from "./errors.js";
import { ServiceKey } from "./services.js";

/**
 * Guest-physical memory as devices see it for DMA: little-endian accessors
 * and bulk copies. Implemented by `@typevisor/mmu-ept`; writes through this
 * interface are dirty-logged like vCPU writes.
 *
 * Addresses are plain numbers (exact up to 2^53). An access that touches
 * anything but RAM throws {@link GuestMemoryError}: a device must treat that
 * as a failed request, never as a host crash.
 */
export interface GuestMemory {
  /** Bytes of guest RAM. */
  readonly ramSize: number;
  /** Copies `dest.length` bytes from guest-physical `gpa` into `dest`. */
  read(gpa: number, dest: Uint8Array): void;
  /** Copies `src` to guest-physical `gpa`. */
  write(gpa: number, src: Uint8Array): void;
  /** Reads one byte. */
  readU8(gpa: number): number;
  /** Reads a little-endian 16-bit value. */
  readU16(gpa: number): number;
  /** Reads a little-endian 32-bit value (unsigned). */
  readU32(gpa: number): number;
  /** Writes one byte. */
  writeU8(gpa: number, value: number): void;
  /** Writes a little-endian 16-bit value. */
  writeU16(gpa: number, value: number): void;
  /** Writes a little-endian 32-bit value. */
  writeU32(gpa: number, value: number): void;
  /** Whether `gpa .. gpa+length-1` is entirely RAM (valid for DMA). */
  isRam(gpa: number, length: number): boolean;
  /**
   * Optional zero-copy access: a `Uint8Array` aliasing guest RAM
   * `gpa .. gpa+length-1`, or `undefined` when that range is not RAM or not
   * contiguous in host memory (the caller then falls back to
   * {@link GuestMemory.read} / {@link GuestMemory.write}). The view is valid
   * until the memory layout changes (balloon, restore); use it for one request
   * and drop it. Writes through a view bypass dirty logging: report them with
   * {@link GuestMemory.markDirty} after writing.
   */
  view?(gpa: number, length: number): Uint8Array | undefined;
  /**
   * Records that `gpa .. gpa+length-1` was written through a
   * {@link GuestMemory.view}, for dirty logging. Implemented whenever `view` is.
   */
  markDirty?(gpa: number, length: number): void;
}

/** Raised for a DMA access outside guest RAM; names the address and length. */
export class GuestMemoryError extends TypevisorError {
  /** First guest-physical address of the failed access. */
  readonly address: number;
  /** Length of the failed access in bytes. */
  readonly length: number;

  /**
   * @param address - guest-physical address of the access
   * @param length - length of the access
   * @param what - what the access was for (e.g. "virtqueue 0 descriptor 5")
   */
  constructor(address: number, length: number, what = "guest memory access") {
    super("GUEST_MEMORY_RANGE", `${what} at 0x${address.toString(16)} (+${length} bytes) is outside guest RAM`);
    this.address = address;
    this.length = length;
  }
}

/** The machine's guest memory, provided by the memory plugin. */
export const GUEST_MEMORY = new ServiceKey<GuestMemory>("memory");
