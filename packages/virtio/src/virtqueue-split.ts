import type { GuestMemory } from "@typevisor/hv-core";
import { VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_USED_F_NO_NOTIFY } from "./constants.js";
import type { DescriptorChain } from "./descriptor-chain.js";
import { VirtqueueError } from "./errors.js";
import type { RingState } from "./virtqueue-ring.js";

/**
 * The split virtqueue layout (§2.7), device side: a descriptor table, the
 * driver's available ring and the device's used ring.
 *
 *     descriptor: addr u64 | len u32 | flags u16 | next u16        (16 bytes)
 *     avail:      flags u16 | idx u16 | ring[size] u16 | used_event u16
 *     used:       flags u16 | idx u16 | ring[size] {id u32, len u32} | avail_event u16
 *
 * Every index the driver writes is checked before use: the available index
 * may run at most `size` entries ahead, heads and `next` fields must be
 * below the table size, and a chain may visit at most `size` descriptors
 * (which also catches loops).
 * @internal
 */
export class SplitRing {
  /** Next available-ring entry to consume (free-running, mod 2^16). */
  lastAvail = 0;
  /** Used index published to the driver (free-running, mod 2^16). */
  usedIdx = 0;
  /** `usedIdx` when the interrupt decision was last made. */
  signalled = 0;
  private readonly mask: number;

  constructor(
    private readonly memory: GuestMemory,
    private readonly queue: number,
    private readonly size: number,
    private readonly desc: number,
    private readonly avail: number,
    private readonly used: number,
    private readonly eventIdx: boolean,
    private readonly indirect: boolean,
  ) {
    this.mask = size - 1;
  }

  hasAvailable(): boolean {
    return this.memory.readU16(this.avail + 2) !== this.lastAvail;
  }

  pop(chain: DescriptorChain): boolean {
    const mem = this.memory;
    const availIdx = mem.readU16(this.avail + 2);
    const pending = (availIdx - this.lastAvail) & 0xffff;
    if (pending === 0) {
      if (this.eventIdx) mem.writeU16(this.used + 4 + 8 * this.size, this.lastAvail);
      return false;
    }
    if (pending > this.size) {
      throw new VirtqueueError("VIRTQUEUE_INDEX", this.queue, `avail.idx moved from ${this.lastAvail} to ${availIdx}, more than the queue size ${this.size} ahead`);
    }
    const head = mem.readU16(this.avail + 4 + 2 * (this.lastAvail & this.mask));
    if (head >= this.size) {
      throw new VirtqueueError("VIRTQUEUE_INDEX", this.queue, `avail.ring[${this.lastAvail & this.mask}] names head descriptor ${head}, outside the table of ${this.size}`);
    }
    this.walk(chain, head);
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    // Ask to be notified of the next buffer after this one (§2.7.10).
    if (this.eventIdx) mem.writeU16(this.used + 4 + 8 * this.size, this.lastAvail);
    return true;
  }

  private walk(chain: DescriptorChain, head: number): void {
    const mem = this.memory;
    chain.clear();
    chain.id = head;
    let i = head;
    for (let steps = 0; ; steps++) {
      if (steps === this.size) {
        throw new VirtqueueError("VIRTQUEUE_LOOP", this.queue, `descriptor chain from head ${head} visits more than ${this.size} descriptors (a loop)`);
      }
      const base = this.desc + 16 * i;
      const lo = mem.readU32(base);
      const hi = mem.readU32(base + 4);
      const len = mem.readU32(base + 8);
      const flags = mem.readU16(base + 12);
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.indirect) throw new VirtqueueError("VIRTQUEUE_INDIRECT", this.queue, `descriptor ${i} is indirect but INDIRECT_DESC was not negotiated`);
        if (flags & VIRTQ_DESC_F_NEXT) throw new VirtqueueError("VIRTQUEUE_INDIRECT", this.queue, `descriptor ${i} sets both INDIRECT and NEXT`);
        this.walkIndirect(chain, i, lo, hi, len);
        return;
      }
      if (!chain.add(mem, lo, hi, len, (flags & VIRTQ_DESC_F_WRITE) !== 0, i)) {
        throw new VirtqueueError("VIRTQUEUE_CHAIN", this.queue, `descriptor chain from head ${head} has more than ${chain.capacity} buffers`);
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) return;
      const next = mem.readU16(base + 14);
      if (next >= this.size) throw new VirtqueueError("VIRTQUEUE_INDEX", this.queue, `descriptor ${i} has next ${next}, outside the table of ${this.size}`);
      i = next;
    }
  }

  /** An indirect table (§2.7.5.3): `len / 16` descriptors chained by `next` from entry 0. */
  private walkIndirect(chain: DescriptorChain, at: number, lo: number, hi: number, len: number): void {
    const table = checkIndirectTable(this.memory, this.queue, at, lo, hi, len, chain.capacity);
    const n = len >>> 4;
    const mem = this.memory;
    let i = 0;
    for (let steps = 0; ; steps++) {
      if (steps === n) throw new VirtqueueError("VIRTQUEUE_LOOP", this.queue, `indirect table of descriptor ${at} loops (more than ${n} steps)`);
      const base = table + 16 * i;
      const flags = mem.readU16(base + 12);
      if (flags & VIRTQ_DESC_F_INDIRECT) throw new VirtqueueError("VIRTQUEUE_INDIRECT", this.queue, `indirect table of descriptor ${at} nests another indirect table at entry ${i}`);
      if (!chain.add(mem, mem.readU32(base), mem.readU32(base + 4), mem.readU32(base + 8), (flags & VIRTQ_DESC_F_WRITE) !== 0, i)) {
        throw new VirtqueueError("VIRTQUEUE_CHAIN", this.queue, `descriptor chain through indirect table of descriptor ${at} has more than ${chain.capacity} buffers`);
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) return;
      const next = mem.readU16(base + 14);
      if (next >= n) throw new VirtqueueError("VIRTQUEUE_INDEX", this.queue, `indirect entry ${i} of descriptor ${at} has next ${next}, outside the table of ${n}`);
      i = next;
    }
  }

  push(id: number, len: number): void {
    const mem = this.memory;
    const base = this.used + 4 + 8 * (this.usedIdx & this.mask);
    mem.writeU32(base, id);
    mem.writeU32(base + 4, len);
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    mem.writeU16(this.used + 2, this.usedIdx);
  }

  needsInterrupt(): boolean {
    const newIdx = this.usedIdx;
    const old = this.signalled;
    this.signalled = newIdx;
    if (newIdx === old) return false;
    if (this.eventIdx) {
      // vring_need_event: interrupt when used_event lies in [old, new) (§2.7.7.2).
      const usedEvent = this.memory.readU16(this.avail + 4 + 2 * this.size);
      return ((newIdx - usedEvent - 1) & 0xffff) < ((newIdx - old) & 0xffff);
    }
    return (this.memory.readU16(this.avail) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  setNotification(enabled: boolean): void {
    if (this.eventIdx) {
      if (enabled) this.memory.writeU16(this.used + 4 + 8 * this.size, this.lastAvail);
    } else {
      this.memory.writeU16(this.used, enabled ? 0 : VIRTQ_USED_F_NO_NOTIFY);
    }
  }

  save(): RingState {
    return { avail: this.lastAvail, availWrap: 0, used: this.usedIdx, usedWrap: 0, signalled: this.signalled };
  }

  load(s: RingState): void {
    this.lastAvail = s.avail & 0xffff;
    this.usedIdx = s.used & 0xffff;
    this.signalled = s.signalled & 0xffff;
  }
}

/**
 * Checks an indirect descriptor (§2.7.5.3.1, §2.8.7): its length is a
 * non-zero multiple of 16, holds at most `capacity` entries, and the table is RAM.
 * @returns the table's guest-physical address
 * @internal
 */
export function checkIndirectTable(memory: GuestMemory, queue: number, at: number, lo: number, hi: number, len: number, capacity: number): number {
  if (len === 0 || (len & 15) !== 0) throw new VirtqueueError("VIRTQUEUE_INDIRECT", queue, `indirect descriptor ${at} has length ${len}, not a non-zero multiple of 16`);
  if (len >>> 4 > capacity) throw new VirtqueueError("VIRTQUEUE_CHAIN", queue, `indirect descriptor ${at} has ${len >>> 4} entries, more than the ${capacity} this device accepts`);
  const table = hi * 0x1_0000_0000 + lo;
  if (hi >= 0x100000 || !memory.isRam(table, len)) {
    throw new VirtqueueError("VIRTQUEUE_MEMORY", queue, `indirect table of descriptor ${at} at 0x${table.toString(16)} (+${len}) is outside guest RAM`);
  }
  return table;
}
