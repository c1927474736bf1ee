import { GuestMemoryError, type GuestMemory } from "@typevisor/hv-core";

/**
 * Guest memory backed by one `Uint8Array`: RAM from guest-physical 0 up to
 * its length, nothing above. It implements the optional zero-copy
 * {@link GuestMemory.view} too. Meant for tests and for embedding the virtio
 * devices into another emulator that keeps guest RAM in one buffer.
 */
export class FlatGuestMemory implements GuestMemory {
  /** The RAM bytes (guest-physical address = index). */
  readonly bytes: Uint8Array;
  /** Guest-physical ranges written since the last {@link FlatGuestMemory.takeDirty}, as `[start, end)` pairs (for tests of dirty reporting). */
  private dirty: number[] = [];
  /** Whether to record dirty ranges (off by default: it allocates). */
  trackDirty = false;

  /** @param ram - size in bytes, or the buffer to use as RAM */
  constructor(ram: number | Uint8Array) {
    this.bytes = typeof ram === "number" ? new Uint8Array(ram) : ram;
  }

  /** Bytes of guest RAM. */
  get ramSize(): number {
    return this.bytes.length;
  }

  /** Whether `gpa .. gpa+length-1` is RAM. */
  isRam(gpa: number, length: number): boolean {
    return gpa >= 0 && length >= 0 && gpa + length <= this.bytes.length;
  }

  private check(gpa: number, length: number): void {
    if (!(gpa >= 0 && gpa + length <= this.bytes.length)) throw new GuestMemoryError(gpa, length);
  }

  private mark(gpa: number, length: number): void {
    if (this.trackDirty && length > 0) this.dirty.push(gpa, gpa + length);
  }

  /** Copies guest memory at `gpa` into `dest`. */
  read(gpa: number, dest: Uint8Array): void {
    this.check(gpa, dest.length);
    dest.set(this.bytes.subarray(gpa, gpa + dest.length));
  }

  /** Copies `src` into guest memory at `gpa`. */
  write(gpa: number, src: Uint8Array): void {
    this.check(gpa, src.length);
    this.bytes.set(src, gpa);
    this.mark(gpa, src.length);
  }

  /** Reads one byte. */
  readU8(gpa: number): number {
    this.check(gpa, 1);
    return this.bytes[gpa];
  }

  /** Reads a little-endian 16-bit value. */
  readU16(gpa: number): number {
    this.check(gpa, 2);
    const b = this.bytes;
    return b[gpa] | (b[gpa + 1] << 8);
  }

  /** Reads a little-endian 32-bit value. */
  readU32(gpa: number): number {
    this.check(gpa, 4);
    const b = this.bytes;
    return (b[gpa] | (b[gpa + 1] << 8) | (b[gpa + 2] << 16) | (b[gpa + 3] << 24)) >>> 0;
  }

  /** Writes one byte. */
  writeU8(gpa: number, value: number): void {
    this.check(gpa, 1);
    this.bytes[gpa] = value;
    this.mark(gpa, 1);
  }

  /** Writes a little-endian 16-bit value. */
  writeU16(gpa: number, value: number): void {
    this.check(gpa, 2);
    const b = this.bytes;
    b[gpa] = value;
    b[gpa + 1] = value >>> 8;
    this.mark(gpa, 2);
  }

  /** Writes a little-endian 32-bit value. */
  writeU32(gpa: number, value: number): void {
    this.check(gpa, 4);
    const b = this.bytes;
    b[gpa] = value;
    b[gpa + 1] = value >>> 8;
    b[gpa + 2] = value >>> 16;
    b[gpa + 3] = value >>> 24;
    this.mark(gpa, 4);
  }

  /** A live view of `gpa .. gpa+length-1`, or `undefined` when that is not RAM. */
  view(gpa: number, length: number): Uint8Array | undefined {
    if (!(gpa >= 0 && length >= 0 && gpa + length <= this.bytes.length)) return undefined;
    return this.bytes.subarray(gpa, gpa + length);
  }

  /** Records a write made through a {@link FlatGuestMemory.view}. */
  markDirty(gpa: number, length: number): void {
    this.mark(gpa, length);
  }

  /** Returns and clears the recorded dirty ranges (`[start, end)` pairs). */
  takeDirty(): number[] {
    const d = this.dirty;
    this.dirty = [];
    return d;
  }
}
