import { GuestMemoryError, type GuestMemory, type StateValue } from "@typevisor/hv-core";
import { MAX_QUEUE_SIZE } from "./constants.js";
import type { DescriptorChain } from "./descriptor-chain.js";
import { VirtqueueError } from "./errors.js";
import { PackedRing } from "./virtqueue-packed.js";
import type { RingState } from "./virtqueue-ring.js";
import { SplitRing } from "./virtqueue-split.js";

/** Negotiated features that change how a queue is walked. */
export interface VirtqueueFeatures {
  /** VIRTIO_F_RING_PACKED: the packed layout (§2.8) instead of split (§2.7). */
  packed: boolean;
  /** VIRTIO_F_EVENT_IDX. */
  eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC. */
  indirect: boolean;
}

/** A queue's saved state (plain data for snapshots). */
export interface VirtqueueState {
  [key: string]: StateValue;
  /** Configured size. */
  size: number;
  /** Descriptor area. */
  desc: number;
  /** Driver area. */
  driver: number;
  /** Device area. */
  device: number;
  /** MSI-X vector (virtio-pci), 0xffff for none. */
  vector: number;
  /** Ring positions while enabled, `null` while disabled. */
  ring: RingState | null;
  /** Ids of buffers the device holds (popped, not yet used). */
  inflight: number[];
}

const NO_VECTOR = 0xffff;

/**
 * One virtqueue, device side: the configuration the driver writes through
 * the transport (size, the three area addresses, enable) and, once enabled,
 * the ring (split or packed, fixed at enable time by the negotiated
 * features).
 *
 * Devices pull buffers with {@link Virtqueue.pop}, return them with
 * {@link Virtqueue.push}, and ask {@link Virtqueue.needsInterrupt} whether
 * the driver wants a used-buffer notification. A queue the driver corrupts
 * throws {@link VirtqueueError} and stays broken until reset; the device
 * framework turns that into DEVICE_NEEDS_RESET.
 */
export class Virtqueue {
  /** Index within the device. */
  readonly index: number;
  /** Largest size the device supports (QueueNumMax / queue_size on reset). */
  readonly maxSize: number;
  /** Size the driver chose (defaults to `maxSize`). */
  size: number;
  /** Guest-physical address of the descriptor area. */
  descAddr = 0;
  /** Guest-physical address of the driver area (split: available ring). */
  driverAddr = 0;
  /** Guest-physical address of the device area (split: used ring). */
  deviceAddr = 0;
  /** MSI-X vector for used-buffer notifications (virtio-pci); 0xffff = none. */
  msixVector = NO_VECTOR;
  /** Set once the driver corrupted the queue; cleared by reset. */
  broken = false;
  /** Incremented by every reset, so buffers popped before it are never pushed after it. */
  generation = 0;
  private ring: SplitRing | PackedRing | undefined;
  private readonly inflightBits = new Uint32Array(65536 / 32);
  private inflightCount = 0;

  /**
   * @param index - queue index within the device
   * @param maxSize - largest queue size offered (1..32768)
   */
  constructor(index: number, maxSize: number) {
    if (!Number.isInteger(maxSize) || maxSize < 1 || maxSize > MAX_QUEUE_SIZE) {
      throw new VirtqueueError("VIRTQUEUE_CONFIG", index, `maximum size ${maxSize} is outside 1..${MAX_QUEUE_SIZE}`);
    }
    this.index = index;
    this.maxSize = maxSize;
    this.size = maxSize;
  }

  /** Whether the driver enabled the queue. */
  get ready(): boolean {
    return this.ring !== undefined;
  }

  /** Whether the enabled queue uses the packed layout. */
  get packed(): boolean {
    return this.ring instanceof PackedRing;
  }

  /** Buffers the device holds (popped and not yet pushed back). */
  get inflight(): number {
    return this.inflightCount;
  }

  /** Returns the queue to its reset state (disabled, size = max, addresses 0). */
  reset(): void {
    this.generation = (this.generation + 1) | 0;
    this.ring = undefined;
    this.size = this.maxSize;
    this.descAddr = 0;
    this.driverAddr = 0;
    this.deviceAddr = 0;
    this.msixVector = NO_VECTOR;
    this.broken = false;
    this.inflightBits.fill(0);
    this.inflightCount = 0;
  }

  /**
   * Enables the queue with the configured size and addresses (the driver
   * wrote QueueReady = 1 / queue_enable = 1).
   * @throws VirtqueueError `VIRTQUEUE_CONFIG` for a bad size or alignment, or
   *   `VIRTQUEUE_MEMORY` when an area is not RAM
   */
  enable(memory: GuestMemory, features: VirtqueueFeatures): void {
    const size = this.size;
    const q = this.index;
    if (!Number.isInteger(size) || size < 1 || size > this.maxSize) throw new VirtqueueError("VIRTQUEUE_CONFIG", q, `size ${size} is outside 1..${this.maxSize}`);
    // Split queue sizes are powers of two (§2.7); packed ones need not be (§2.8).
    if (!features.packed && (size & (size - 1)) !== 0) throw new VirtqueueError("VIRTQUEUE_CONFIG", q, `split queue size ${size} is not a power of two`);
    const areas: [string, number, number, number][] = features.packed
      ? [["descriptor ring", this.descAddr, 16 * size, 16], ["driver event suppression", this.driverAddr, 4, 4], ["device event suppression", this.deviceAddr, 4, 4]]
      : [["descriptor table", this.descAddr, 16 * size, 16], ["available ring", this.driverAddr, 6 + 2 * size, 2], ["used ring", this.deviceAddr, 6 + 8 * size, 4]];
    for (const [name, addr, len, align] of areas) {
      if (addr % align !== 0) throw new VirtqueueError("VIRTQUEUE_CONFIG", q, `${name} at 0x${addr.toString(16)} is not ${align}-byte aligned`);
      if (!memory.isRam(addr, len)) throw new VirtqueueError("VIRTQUEUE_MEMORY", q, `${name} at 0x${addr.toString(16)} (+${len} bytes) is outside guest RAM`);
    }
    this.ring = features.packed
      ? new PackedRing(memory, q, size, this.descAddr, this.driverAddr, this.deviceAddr, features.eventIdx, features.indirect)
      : new SplitRing(memory, q, size, this.descAddr, this.driverAddr, this.deviceAddr, features.eventIdx, features.indirect);
    this.broken = false;
  }

  /** Whether the driver has made a buffer available that the device has not taken. */
  hasAvailable(): boolean {
    const ring = this.ring;
    if (ring === undefined || this.broken) return false;
    try {
      return ring.hasAvailable();
    } catch (e) {
      throw this.fail(e);
    }
  }

  /**
   * Takes the next available buffer into `chain`.
   * @returns false when none is available (or the queue is disabled or broken)
   * @throws VirtqueueError (or GuestMemoryError) when the driver corrupted the
   *   queue; the queue is broken from then on
   */
  pop(chain: DescriptorChain): boolean {
    const ring = this.ring;
    if (ring === undefined || this.broken) return false;
    try {
      if (!ring.pop(chain)) return false;
    } catch (e) {
      throw this.fail(e);
    }
    const id = chain.id;
    const bit = 1 << (id & 31);
    const word = id >>> 5;
    if (this.inflightBits[word] & bit) {
      throw this.fail(new VirtqueueError("VIRTQUEUE_INFLIGHT", this.index, `buffer ${id} was made available again while the device still holds it`));
    }
    if (this.inflightCount >= this.size) {
      throw this.fail(new VirtqueueError("VIRTQUEUE_INFLIGHT", this.index, `more than ${this.size} buffers in flight`));
    }
    this.inflightBits[word] |= bit;
    this.inflightCount++;
    chain.generation = this.generation;
    return true;
  }

  /**
   * Returns a buffer to the driver with `len` bytes written to its
   * device-writable part. Does not interrupt; call
   * {@link Virtqueue.needsInterrupt} after a batch.
   */
  push(chain: DescriptorChain, len: number): void {
    this.pushId(chain.generation, chain.id, chain.slots, len);
  }

  /**
   * {@link Virtqueue.push} by id (and packed slot count), for devices that
   * keep only those; `generation` is the queue's generation at pop time.
   */
  pushId(generation: number, id: number, slots: number, len: number): void {
    const ring = this.ring;
    const bit = 1 << (id & 31);
    const word = id >>> 5;
    // Reset, disabled or broken since the pop: the buffer is no longer ours to return.
    if (generation !== this.generation || ring === undefined || this.broken || !(this.inflightBits[word] & bit)) return;
    this.inflightBits[word] &= ~bit;
    this.inflightCount--;
    try {
      if (ring instanceof PackedRing) ring.push(id, slots, len >>> 0);
      else ring.push(id, len >>> 0);
    } catch (e) {
      throw this.fail(e);
    }
  }

  /**
   * Whether the driver wants a used-buffer notification for what was pushed
   * since the last call (honouring NO_INTERRUPT, used_event or the packed
   * driver event suppression). Resets the "pushed since" mark.
   */
  needsInterrupt(): boolean {
    const ring = this.ring;
    if (ring === undefined || this.broken) return false;
    try {
      return ring.needsInterrupt();
    } catch (e) {
      throw this.fail(e);
    }
  }

  /** Asks the driver to notify (or not) when it makes buffers available (§2.7.10, §2.8.10). */
  setNotification(enabled: boolean): void {
    const ring = this.ring;
    if (ring === undefined || this.broken) return;
    try {
      ring.setNotification(enabled);
    } catch (e) {
      throw this.fail(e);
    }
  }

  private fail(e: unknown): unknown {
    this.broken = true;
    if (e instanceof GuestMemoryError) return new VirtqueueError("VIRTQUEUE_MEMORY", this.index, e.message);
    return e;
  }

  /** Saves configuration, ring positions and in-flight ids. */
  save(): VirtqueueState {
    const inflight: number[] = [];
    if (this.inflightCount > 0) {
      for (let id = 0; id < 65536; id++) if (this.inflightBits[id >>> 5] & (1 << (id & 31))) inflight.push(id);
    }
    return {
      size: this.size,
      desc: this.descAddr,
      driver: this.driverAddr,
      device: this.deviceAddr,
      vector: this.msixVector,
      ring: this.ring ? this.ring.save() : null,
      inflight,
    };
  }

  /**
   * Restores {@link Virtqueue.save} output, re-enabling the ring with the
   * given memory and features.
   * @throws VirtqueueError `VIRTQUEUE_STATE` (or the enable errors) for malformed data
   */
  load(state: VirtqueueState, memory: GuestMemory, features: VirtqueueFeatures): void {
    const num = (v: unknown, what: string, max: number): number => {
      if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0 || v > max) throw new VirtqueueError("VIRTQUEUE_STATE", this.index, `saved ${what} ${String(v)} is invalid`);
      return v;
    };
    this.reset();
    this.size = num(state.size, "size", this.maxSize);
    this.descAddr = num(state.desc, "descriptor area", 2 ** 53);
    this.driverAddr = num(state.driver, "driver area", 2 ** 53);
    this.deviceAddr = num(state.device, "device area", 2 ** 53);
    this.msixVector = num(state.vector, "MSI-X vector", 0xffff);
    if (state.ring !== null && state.ring !== undefined) {
      const r = state.ring;
      for (const k of ["avail", "availWrap", "used", "usedWrap", "signalled"]) num(r[k], k, 0xffff);
      this.enable(memory, features);
      this.ring!.load(r);
      if (!Array.isArray(state.inflight) || state.inflight.length > this.size) throw new VirtqueueError("VIRTQUEUE_STATE", this.index, "saved in-flight list is malformed");
      for (const v of state.inflight) {
        const id = num(v, "in-flight id", 0xffff);
        if (this.inflightBits[id >>> 5] & (1 << (id & 31))) throw new VirtqueueError("VIRTQUEUE_STATE", this.index, `saved in-flight id ${id} is listed twice`);
        this.inflightBits[id >>> 5] |= 1 << (id & 31);
      }
      this.inflightCount = state.inflight.length;
    }
  }
}
