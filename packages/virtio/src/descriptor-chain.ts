import type { GuestMemory } from "@typevisor/hv-core";

/** The chain is well formed. */
export const CHAIN_OK = 0;
/** A buffer lies (partly) outside guest RAM. */
export const CHAIN_BAD_ADDRESS = 1;
/** A device-readable buffer follows a device-writable one (§2.7.4.2). */
export const CHAIN_BAD_ORDER = 2;
/** The readable or the writable part is longer than 2^32 - 1 bytes (§2.7.5.2). */
export const CHAIN_TOO_LONG = 3;

const MAX_U32 = 0xffffffff;
const TWO_32 = 0x1_0000_0000;
/** Guest-physical addresses at or above 2^52 never reach RAM (52-bit physical address space). */
const ADDRESS_LIMIT = 2 ** 52;

/**
 * One buffer the driver made available: its descriptor chain flattened into
 * segments, device-readable segments first, then device-writable ones.
 *
 * Chains are reused: a device keeps a few (or one per in-flight request) and
 * the queue refills them on every pop, so walking a queue allocates nothing.
 * Empty (zero-length) descriptors are skipped.
 *
 * A chain whose `problem` is not {@link CHAIN_OK} is still delimited (the
 * queue stays usable) but its contents must not be trusted: the device fails
 * that request (blk reports IOERR) and returns it to the driver.
 */
export class DescriptorChain {
  /** Split ring: the head descriptor index. Packed ring: the buffer ID. Used-ring element id. */
  id = 0;
  /** Packed ring: descriptors the chain occupies in the ring (used index advances by this). */
  slots = 1;
  /** The queue generation when the chain was popped; a push after a queue reset is dropped. */
  generation = 0;
  /** Number of segments (readable then writable). */
  count = 0;
  /** Number of device-readable segments (indices `0 .. readableCount-1`). */
  readableCount = 0;
  /** Total bytes of the device-readable part. */
  readableBytes = 0;
  /** Total bytes of the device-writable part. */
  writableBytes = 0;
  /** {@link CHAIN_OK} or the request-level problem found while walking. */
  problem = CHAIN_OK;
  /** Descriptor index where the problem was found, for messages. */
  problemAt = 0;
  /** Guest-physical address of each segment. */
  readonly addr: Float64Array;
  /** Length of each segment in bytes. */
  readonly len: Uint32Array;
  /** Most segments this chain can hold; longer chains are malformed. */
  readonly capacity: number;

  /** @param capacity - most segments (descriptors) a chain may have */
  constructor(capacity: number) {
    this.capacity = capacity;
    this.addr = new Float64Array(capacity);
    this.len = new Uint32Array(capacity);
  }

  /** Number of device-writable segments. */
  get writableCount(): number {
    return this.count - this.readableCount;
  }

  /** Empties the chain before a walk. */
  clear(): void {
    this.count = 0;
    this.readableCount = 0;
    this.readableBytes = 0;
    this.writableBytes = 0;
    this.problem = CHAIN_OK;
    this.problemAt = 0;
    this.slots = 1;
  }

  /**
   * Appends one descriptor's buffer. `lo`/`hi` are the two halves of the
   * 64-bit address. Returns false when the chain is full (the caller treats
   * that as a malformed queue).
   * @internal
   */
  add(memory: GuestMemory, lo: number, hi: number, length: number, writable: boolean, descIndex: number): boolean {
    if (length === 0) return true;
    const n = this.count;
    if (n === this.capacity) return false;
    const addr = hi * TWO_32 + lo;
    if (this.problem === CHAIN_OK) {
      if (addr >= ADDRESS_LIMIT || !memory.isRam(addr, length)) this.setProblem(CHAIN_BAD_ADDRESS, descIndex);
      else if (!writable && n !== this.readableCount) this.setProblem(CHAIN_BAD_ORDER, descIndex);
    }
    this.addr[n] = addr;
    this.len[n] = length;
    this.count = n + 1;
    if (writable) {
      this.writableBytes += length;
      if (this.writableBytes > MAX_U32) this.setProblem(CHAIN_TOO_LONG, descIndex);
    } else if (n === this.readableCount) {
      this.readableCount = n + 1;
      this.readableBytes += length;
      if (this.readableBytes > MAX_U32) this.setProblem(CHAIN_TOO_LONG, descIndex);
    }
    return true;
  }

  private setProblem(problem: number, at: number): void {
    if (this.problem === CHAIN_OK) {
      this.problem = problem;
      this.problemAt = at;
    }
  }

  /**
   * Copies device-readable bytes starting `offset` bytes into the readable
   * part into `dest`. Returns how many bytes were copied (fewer when the
   * readable part ends first).
   * @throws GuestMemoryError when a segment is not RAM (only if `problem` was ignored)
   */
  readFrom(memory: GuestMemory, offset: number, dest: Uint8Array): number {
    return this.copy(memory, 0, this.readableCount, offset, dest, false);
  }

  /**
   * Copies `src` into the device-writable part, starting `offset` bytes into
   * it. Returns how many bytes were copied (fewer when the writable part ends first).
   */
  writeTo(memory: GuestMemory, offset: number, src: Uint8Array): number {
    return this.copy(memory, this.readableCount, this.count, offset, src, true);
  }

  private copy(memory: GuestMemory, first: number, end: number, offset: number, buf: Uint8Array, toGuest: boolean): number {
    let done = 0;
    const want = buf.length;
    for (let i = first; i < end && done < want; i++) {
      const l = this.len[i];
      if (offset >= l) {
        offset -= l;
        continue;
      }
      const n = Math.min(l - offset, want - done);
      const gpa = this.addr[i] + offset;
      // Whole-buffer copies into one segment (the common case) need no subarray.
      const part = done === 0 && n === want ? buf : buf.subarray(done, done + n);
      if (toGuest) memory.write(gpa, part);
      else memory.read(gpa, part);
      done += n;
      offset = 0;
    }
    return done;
  }

  /** Saves the chain as plain numbers (for snapshots of in-flight requests). */
  save(): number[] {
    const out = [this.id, this.slots, this.readableCount, this.problem, this.count];
    for (let i = 0; i < this.count; i++) out.push(this.addr[i], this.len[i]);
    return out;
  }

  /**
   * Restores a chain saved by {@link DescriptorChain.save}, validating it.
   * @returns false when the data is malformed or does not fit
   */
  load(data: readonly unknown[]): boolean {
    if (!Array.isArray(data) || data.length < 5 || !data.every((v) => typeof v === "number" && Number.isSafeInteger(v) && v >= 0)) return false;
    const [id, slots, readable, problem, count] = data as number[];
    if (count > this.capacity || readable > count || data.length !== 5 + 2 * count || id > 0xffff || slots > 0xffff || problem > CHAIN_TOO_LONG) return false;
    this.clear();
    this.id = id;
    this.slots = slots;
    this.problem = problem;
    for (let i = 0; i < count; i++) {
      const a = data[5 + 2 * i] as number;
      const l = data[6 + 2 * i] as number;
      if (l > MAX_U32) return false;
      this.addr[i] = a;
      this.len[i] = l;
      if (i < readable) this.readableBytes += l;
      else this.writableBytes += l;
    }
    this.count = count;
    this.readableCount = readable;
    return true;
  }
}
