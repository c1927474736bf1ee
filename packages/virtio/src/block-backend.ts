import { TypevisorError } from "@typevisor/hv-core";

/**
 * The storage behind a virtio-blk device. `@typevisor/qcow2`'s
 * `BlockDevice` (qcow2 and raw images) has exactly this shape, so either
 * plugs in without this package importing it.
 *
 * Offsets and lengths are bytes. Implementations reject accesses beyond
 * `size` by rejecting the promise; the device never issues them.
 */
export interface BlockBackend {
  /** Size in bytes. */
  readonly size: number;
  /** Whether writes are refused. */
  readonly readOnly: boolean;
  /** Reads `dest.length` bytes at `offset` into `dest`. */
  read(offset: number, dest: Uint8Array): Promise<void>;
  /** Writes `src` at `offset`. */
  write(offset: number, src: Uint8Array): Promise<void>;
  /** Makes completed writes durable. */
  flush(): Promise<void>;
  /** Tells the storage `offset .. offset+length-1` is unused; contents become unspecified. */
  discard(offset: number, length: number): Promise<void>;
  /** Zeroes `offset .. offset+length-1`; with `unmap`, the storage may deallocate it. */
  writeZeroes(offset: number, length: number, options?: { unmap?: boolean }): Promise<void>;
  /** Releases the storage. */
  close(): Promise<void>;
}

/** An access outside a {@link MemoryBlockBackend} or a write to a read-only one. */
export class BlockBackendError extends TypevisorError {}

/**
 * A disk held in memory (a RAM disk), for tests and for guests that need
 * scratch storage. Discarded ranges read back as zeroes.
 */
export class MemoryBlockBackend implements BlockBackend {
  /** The disk contents. */
  readonly data: Uint8Array;
  /** Whether writes are refused. */
  readonly readOnly: boolean;
  /** Completed flushes, for tests. */
  flushes = 0;

  /**
   * @param contents - size in bytes (zero-filled) or the initial contents (used in place)
   * @param options - `readOnly` refuses writes
   */
  constructor(contents: number | Uint8Array, options: { readOnly?: boolean } = {}) {
    this.data = typeof contents === "number" ? new Uint8Array(contents) : contents;
    this.readOnly = options.readOnly ?? false;
  }

  /** Size in bytes. */
  get size(): number {
    return this.data.length;
  }

  private check(offset: number, length: number, write: boolean): void {
    if (!(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 && offset + length <= this.data.length)) {
      throw new BlockBackendError("BLOCK_RANGE", `access at offset ${offset} (+${length} bytes) is outside the ${this.data.length}-byte disk`);
    }
    if (write && this.readOnly) throw new BlockBackendError("BLOCK_READ_ONLY", "the disk is read-only");
  }

  /** Reads into `dest`. */
  async read(offset: number, dest: Uint8Array): Promise<void> {
    this.check(offset, dest.length, false);
    dest.set(this.data.subarray(offset, offset + dest.length));
  }

  /** Writes `src`. */
  async write(offset: number, src: Uint8Array): Promise<void> {
    this.check(offset, src.length, true);
    this.data.set(src, offset);
  }

  /** Nothing to make durable; counts the call. */
  async flush(): Promise<void> {
    this.flushes++;
  }

  /** Zeroes the range. */
  async discard(offset: number, length: number): Promise<void> {
    this.check(offset, length, true);
    this.data.fill(0, offset, offset + length);
  }

  /** Zeroes the range. */
  async writeZeroes(offset: number, length: number): Promise<void> {
    this.check(offset, length, true);
    this.data.fill(0, offset, offset + length);
  }

  /** Nothing to release. */
  async close(): Promise<void> {}
}
