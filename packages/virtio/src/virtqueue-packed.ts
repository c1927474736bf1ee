import type { GuestMemory } from "@typevisor/hv-core";
import {
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
} from "./constants.js";
import type { DescriptorChain } from "./descriptor-chain.js";
import { VirtqueueError } from "./errors.js";
import { checkIndirectTable } from "./virtqueue-split.js";
import type { RingState } from "./virtqueue-ring.js";

const AVAIL_SHIFT = 7;
const USED_SHIFT = 15;
const USED_FLAGS_WRAP1 = (1 << AVAIL_SHIFT) | (1 << USED_SHIFT);

/**
 * The packed virtqueue layout (§2.8), device side: one descriptor ring that
 * both sides write, plus two event suppression structures.
 *
 *     descriptor: addr u64 | len u32 | id u16 | flags u16   (16 bytes)
 *     driver event suppression (driver area):  off_wrap u16 | flags u16
 *     device event suppression (device area):  off_wrap u16 | flags u16
 *
 * A descriptor is available when its AVAIL bit equals the device's avail
 * wrap counter and its USED bit does not. The device writes used
 * descriptors in order at its own used position, each advancing that
 * position by the number of ring slots the chain took (§2.8.6).
 *
 * Positions are tracked as a counter modulo 2 x size: counter `c` is ring
 * slot `c mod size` with wrap counter 1 in the first lap and 0 in the second,
 * which makes the event-index test (§2.8.10) a single modular comparison.
 * @internal
 */
export class PackedRing {
  /** Next ring slot to look at for an available descriptor. */
  availPos = 0;
  /** Device avail wrap counter (starts at 1). */
  availWrap = 1;
  /** Next ring slot to write a used descriptor to. */
  usedPos = 0;
  /** Device used wrap counter (starts at 1). */
  usedWrap = 1;
  /** Used position as a counter mod 2 x size when the interrupt decision was last made. */
  signalled = 0;

  constructor(
    private readonly memory: GuestMemory,
    private readonly queue: number,
    private readonly size: number,
    private readonly desc: number,
    private readonly driverArea: number,
    private readonly deviceArea: number,
    private readonly eventIdx: boolean,
    private readonly indirect: boolean,
  ) {}

  private isAvailable(pos: number, wrap: number): boolean {
    const flags = this.memory.readU16(this.desc + 16 * pos + 14);
    return ((flags >>> AVAIL_SHIFT) & 1) === wrap && ((flags >>> USED_SHIFT) & 1) !== wrap;
  }

  hasAvailable(): boolean {
    return this.isAvailable(this.availPos, this.availWrap);
  }

  pop(chain: DescriptorChain): boolean {
    if (!this.isAvailable(this.availPos, this.availWrap)) return false;
    const mem = this.memory;
    const size = this.size;
    chain.clear();
    let pos = this.availPos;
    let wrap = this.availWrap;
    let id = 0;
    let slots = 0;
    const first = pos;
    for (;;) {
      if (slots === size) {
        throw new VirtqueueError("VIRTQUEUE_LOOP", this.queue, `descriptor chain starting at slot ${first} runs around the whole ring of ${size}`);
      }
      const base = this.desc + 16 * pos;
      const lo = mem.readU32(base);
      const hi = mem.readU32(base + 4);
      const len = mem.readU32(base + 8);
      id = mem.readU16(base + 12);
      const flags = mem.readU16(base + 14);
      slots++;
      if (++pos === size) {
        pos = 0;
        wrap ^= 1;
      }
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        const at = (pos + size - 1) % size;
        if (!this.indirect) throw new VirtqueueError("VIRTQUEUE_INDIRECT", this.queue, `descriptor at slot ${at} is indirect but INDIRECT_DESC was not negotiated`);
        if (flags & VIRTQ_DESC_F_NEXT) throw new VirtqueueError("VIRTQUEUE_INDIRECT", this.queue, `descriptor at slot ${at} sets both INDIRECT and NEXT`);
        this.walkIndirect(chain, at, lo, hi, len);
        break;
      }
      if (!chain.add(mem, lo, hi, len, (flags & VIRTQ_DESC_F_WRITE) !== 0, (pos + size - 1) % size)) {
        throw new VirtqueueError("VIRTQUEUE_CHAIN", this.queue, `descriptor chain starting at slot ${first} has more than ${chain.capacity} buffers`);
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) break;
    }
    chain.id = id;
    chain.slots = slots;
    this.availPos = pos;
    this.availWrap = wrap;
    return true;
  }

  /** A packed indirect table (§2.8.7): `len / 16` descriptors used in order; only WRITE counts. */
  private walkIndirect(chain: DescriptorChain, at: number, lo: number, hi: number, len: number): void {
    const table = checkIndirectTable(this.memory, this.queue, at, lo, hi, len, chain.capacity);
    const mem = this.memory;
    const n = len >>> 4;
    for (let i = 0; i < n; i++) {
      const base = table + 16 * i;
      const flags = mem.readU16(base + 14);
      if (flags & VIRTQ_DESC_F_INDIRECT) throw new VirtqueueError("VIRTQUEUE_INDIRECT", this.queue, `indirect table of slot ${at} nests another indirect table at entry ${i}`);
      if (!chain.add(mem, mem.readU32(base), mem.readU32(base + 4), mem.readU32(base + 8), (flags & VIRTQ_DESC_F_WRITE) !== 0, i)) {
        throw new VirtqueueError("VIRTQUEUE_CHAIN", this.queue, `descriptor chain through the indirect table of slot ${at} has more than ${chain.capacity} buffers`);
      }
    }
  }

  push(id: number, slots: number, len: number): void {
    const mem = this.memory;
    const base = this.desc + 16 * this.usedPos;
    mem.writeU32(base + 8, len);
    mem.writeU16(base + 12, id);
    // The flags go last: they hand the descriptor back to the driver.
    mem.writeU16(base + 14, this.usedWrap ? USED_FLAGS_WRAP1 : 0);
    let p = this.usedPos + slots;
    if (p >= this.size) {
      p -= this.size;
      this.usedWrap ^= 1;
    }
    this.usedPos = p;
  }

  /** The used position as a counter mod 2 x size. */
  private usedCounter(): number {
    return this.usedPos + (this.usedWrap ? 0 : this.size);
  }

  needsInterrupt(): boolean {
    const now = this.usedCounter();
    const old = this.signalled;
    this.signalled = now;
    if (now === old) return false;
    const flags = this.memory.readU16(this.driverArea + 2) & 3;
    if (flags === RING_EVENT_FLAGS_DISABLE) return false;
    if (flags !== RING_EVENT_FLAGS_DESC || !this.eventIdx) return true;
    const offWrap = this.memory.readU16(this.driverArea);
    const span = 2 * this.size;
    const event = (offWrap & 0x7fff) + (offWrap >>> 15 ? 0 : this.size);
    // Interrupt when the event slot lies in [old, now) (§2.8.10).
    const sinceEvent = (((now - event - 1) % span) + span) % span;
    const added = (now - old + span) % span;
    return sinceEvent < added;
  }

  setNotification(enabled: boolean): void {
    this.memory.writeU16(this.deviceArea + 2, enabled ? RING_EVENT_FLAGS_ENABLE : RING_EVENT_FLAGS_DISABLE);
  }

  save(): RingState {
    return { avail: this.availPos, availWrap: this.availWrap, used: this.usedPos, usedWrap: this.usedWrap, signalled: this.signalled };
  }

  load(s: RingState): void {
    const inRange = (v: number): boolean => Number.isInteger(v) && v >= 0 && v < this.size;
    if (!inRange(s.avail) || !inRange(s.used) || !(s.signalled >= 0 && s.signalled < 2 * this.size)) {
      throw new VirtqueueError("VIRTQUEUE_STATE", this.queue, `saved packed ring positions (${s.avail}, ${s.used}, ${s.signalled}) are outside a ring of ${this.size}`);
    }
    this.availPos = s.avail;
    this.availWrap = s.availWrap ? 1 : 0;
    this.usedPos = s.used;
    this.usedWrap = s.usedWrap ? 1 : 0;
    this.signalled = s.signalled;
  }
}
