/**
 * A virtual disk as a device model sees it: positional async reads and
 * writes of any length, flush, discard and write-zeroes. Several requests
 * may be in flight at once; each completes as if it ran alone, in some
 * order. Device packages (virtio-blk) consume this shape structurally
 * without importing this package.
 */
export interface BlockDevice {
  /** Virtual disk size in bytes. */
  readonly size: number;
  /** True when write, discard and writeZeroes are refused. */
  readonly readOnly: boolean;
  /** Fills `dest` with the disk's bytes starting at `offset`. */
  read(offset: number, dest: Uint8Array): Promise<void>;
  /** Writes `src` to the disk at `offset`. */
  write(offset: number, src: Uint8Array): Promise<void>;
  /** Makes every completed write durable. */
  flush(): Promise<void>;
  /**
   * Tells the disk that a range is no longer needed. Whole clusters are
   * released and read back as zeros; partial clusters are left as they are
   * (discard is advisory).
   */
  discard(offset: number, length: number): Promise<void>;
  /** Makes a range read as zeros; with `unmap` the space may also be released. */
  writeZeroes(offset: number, length: number, options?: { unmap?: boolean }): Promise<void>;
  /** Flushes and releases the disk. */
  close(): Promise<void>;
}
