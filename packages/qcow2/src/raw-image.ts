import type { BlockDevice } from "./block-device.js";
import { Qcow2UsageError } from "./errors.js";
import type { ByteStore } from "./store.js";

/** Checks that [offset, offset+length) lies inside a disk of `size` bytes. */
export function checkRange(offset: number, length: number, size: number, what: string): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > size) {
    throw new Qcow2UsageError("QCOW2_OUT_OF_RANGE", `${what} of ${length} bytes at ${offset} is outside the ${size}-byte disk`);
  }
}

/**
 * A raw image: the disk's bytes are the file's bytes. Discard and
 * write-zeroes write zeros (a portable file API cannot punch holes).
 */
export class RawImage implements BlockDevice {
  /** The store holding the bytes. */
  readonly store: ByteStore;
  /** @inheritdoc */
  readonly readOnly: boolean;
  private closed = false;

  /** @param store - the file or buffer holding the disk */
  constructor(store: ByteStore) {
    this.store = store;
    this.readOnly = store.readOnly;
  }

  /** The size of the underlying store. */
  get size(): number {
    return this.store.size;
  }

  private live(): void {
    if (this.closed) throw new Qcow2UsageError("QCOW2_CLOSED", `${this.store.name} is closed`);
  }

  private writable(): void {
    this.live();
    if (this.readOnly) throw new Qcow2UsageError("QCOW2_READ_ONLY", `${this.store.name} is open read-only`);
  }

  /** @inheritdoc */
  async read(offset: number, dest: Uint8Array): Promise<void> {
    this.live();
    checkRange(offset, dest.length, this.size, "read");
    await this.store.read(offset, dest);
  }

  /** @inheritdoc */
  async write(offset: number, src: Uint8Array): Promise<void> {
    this.writable();
    checkRange(offset, src.length, this.size, "write");
    await this.store.write(offset, src);
  }

  /** @inheritdoc */
  async flush(): Promise<void> {
    this.live();
    await this.store.flush();
  }

  /** @inheritdoc */
  async discard(offset: number, length: number): Promise<void> {
    await this.writeZeroes(offset, length);
  }

  /** @inheritdoc */
  async writeZeroes(offset: number, length: number): Promise<void> {
    this.writable();
    checkRange(offset, length, this.size, "write-zeroes");
    const chunk = new Uint8Array(Math.min(length, 1 << 20));
    for (let done = 0; done < length; done += chunk.length) {
      await this.store.write(offset + done, chunk.subarray(0, Math.min(chunk.length, length - done)));
    }
  }

  /** Grows or shrinks the disk. */
  async resize(size: number): Promise<void> {
    this.writable();
    await this.store.truncate(size);
  }

  /** @inheritdoc */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.store.close();
  }
}
