import { Emitter, GuestMemoryError, TypevisorError, type GuestMemory, type StateValue } from "@typevisor/hv-core";
import { VirtioFeature, VirtioStatus } from "./constants.js";
import { DescriptorChain } from "./descriptor-chain.js";
import { VirtioConfigError, VirtqueueError } from "./errors.js";
import { Virtqueue, type VirtqueueFeatures, type VirtqueueState } from "./virtqueue.js";

/** What a device needs from its transport: the two kinds of notification to the driver. */
export interface VirtioInterrupts {
  /** Sends a used-buffer notification for queue `queue` (§2.3.2). */
  signalQueue(queue: number): void;
  /** Sends a configuration change notification (§2.3.1). */
  signalConfig(): void;
}

/** What a device needs from the machine it lives in. */
export interface VirtioHost {
  /** Guest memory for DMA (descriptor rings and buffers). */
  readonly memory: GuestMemory;
  /**
   * Tracks asynchronous work (a disk read) so a deterministic machine waits
   * for it before advancing time; `Machine.trackIo` fits.
   */
  trackIo?<T>(work: Promise<T>): Promise<T>;
}

/** Events a device emits, for the embedding program (logs, tests, statistics). */
export interface VirtioDeviceEvents {
  /**
   * The device set DEVICE_NEEDS_RESET because the driver misused it (a
   * corrupted queue) or the device failed; the guest must reset it.
   */
  needsReset: {
    /** Device name. */
    device: string;
    /** What went wrong, naming the queue and field. */
    reason: string;
    /** The underlying error. */
    error?: unknown;
  };
  /** A request failed without breaking the device (bad buffer, I/O error). */
  requestError: {
    /** Device name. */
    device: string;
    /** Queue index (-1 for feature negotiation). */
    queue: number;
    /** What went wrong. */
    reason: string;
    /** The underlying error (e.g. from the backend). */
    error?: unknown;
  };
}

/** Ring features a device offers; all on by default except `accessPlatform`. */
export interface VirtioRingOptions {
  /** Offer VIRTIO_F_RING_PACKED (default true). */
  packed?: boolean;
  /** Offer VIRTIO_F_EVENT_IDX (default true). */
  eventIdx?: boolean;
  /** Offer VIRTIO_F_INDIRECT_DESC (default true). */
  indirect?: boolean;
  /**
   * Offer VIRTIO_F_ACCESS_PLATFORM (default false): the device's DMA goes
   * through the platform IOMMU. Until an IOMMU is attached with
   * {@link VirtioDevice.setDmaMemory}, addresses are guest-physical.
   */
  accessPlatform?: boolean;
}

/** What a device subclass declares to the framework. */
export interface VirtioDeviceSpec {
  /** Device ID (§5), e.g. 2 for block. */
  deviceId: number;
  /** Name for messages and state ids, e.g. `"virtio-blk"`. */
  name: string;
  /** Maximum size of each queue, in queue order. */
  queueSizes: readonly number[];
  /** Device-specific feature bits offered (bit numbers, 0..63). */
  features: readonly number[];
  /** Size of the device-specific configuration space in bytes. */
  configSize: number;
  /** Most buffers in one descriptor chain (default: the largest queue size, at most 1024). */
  chainCapacity?: number;
  /** Ring feature choices. */
  ring?: VirtioRingOptions;
}

/** The device-independent part of a device's saved state. */
export interface VirtioDeviceState {
  [key: string]: StateValue;
  /** Device status register. */
  status: number;
  /** Features the driver wrote, low and high word. */
  driverFeatures: number[];
  /** Configuration generation. */
  generation: number;
  /** Per queue state. */
  queues: VirtqueueState[];
  /** Device-specific state. */
  device: StateValue;
}

function bitsToWords(bits: readonly number[]): [number, number] {
  let lo = 0;
  let hi = 0;
  for (const b of bits) {
    if (!Number.isInteger(b) || b < 0 || b > 63) throw new VirtioConfigError("VIRTIO_FEATURE", `feature bit ${b} is outside 0..63`);
    if (b < 32) lo |= 1 << b;
    else hi |= 1 << (b - 32);
  }
  return [lo >>> 0, hi >>> 0];
}

/**
 * The transport-independent core of a virtio device (§2, §3): feature
 * negotiation, the device status state machine and reset, the virtqueues,
 * the device-specific configuration space with its generation counter,
 * notifications, and saved state.
 *
 * A device (blk, net, ...) extends this class, fills {@link VirtioDevice.config}
 * and implements {@link VirtioDevice.onQueueNotify}. A transport
 * (virtio-mmio, virtio-pci) maps its registers onto the public methods here.
 *
 * Hostile drivers: a corrupted queue, a bad status sequence or an exception in
 * device code sets DEVICE_NEEDS_RESET (§2.1.2) and stops the device until the
 * driver resets it; nothing propagates to the host.
 */
export abstract class VirtioDevice {
  /** Device ID (§5). */
  readonly deviceId: number;
  /** Device name (for messages). */
  readonly name: string;
  /** The virtqueues. */
  readonly queues: readonly Virtqueue[];
  /** Device-specific configuration space (little-endian fields), read by the driver. */
  readonly config: Uint8Array;
  /** Events for the embedding program. */
  readonly events = new Emitter<VirtioDeviceEvents>();
  /** Most buffers in one descriptor chain. */
  readonly chainCapacity: number;
  /** Generation counter of the configuration space (§2.5.1, §4.2.2 ConfigGeneration). */
  configGeneration = 0;
  /** Requests that failed without breaking the device, since creation. */
  requestErrors = 0;
  /** Why the device set DEVICE_NEEDS_RESET, while it is set. */
  needsResetReason: string | undefined;

  private readonly offered: [number, number];
  private readonly accepted = new Uint32Array(2);
  private statusValue = 0;
  private interrupts: VirtioInterrupts | undefined;
  private hostValue: VirtioHost | undefined;
  private dma: GuestMemory | undefined;
  private readonly configView: DataView;
  /** Incremented on every reset; async completions from an older epoch are dropped. */
  protected epoch = 0;
  private oldEpochIo = 0;

  /** @param spec - what the device offers */
  constructor(spec: VirtioDeviceSpec) {
    this.deviceId = spec.deviceId;
    this.name = spec.name;
    this.queues = spec.queueSizes.map((size, i) => new Virtqueue(i, size));
    this.config = new Uint8Array(spec.configSize);
    this.configView = new DataView(this.config.buffer);
    const ring = spec.ring ?? {};
    const generic: number[] = [VirtioFeature.VERSION_1];
    if (ring.packed ?? true) generic.push(VirtioFeature.RING_PACKED);
    if (ring.eventIdx ?? true) generic.push(VirtioFeature.EVENT_IDX);
    if (ring.indirect ?? true) generic.push(VirtioFeature.INDIRECT_DESC);
    if (ring.accessPlatform ?? false) generic.push(VirtioFeature.ACCESS_PLATFORM);
    this.offered = bitsToWords([...spec.features, ...generic]);
    const largest = Math.max(1, ...spec.queueSizes);
    this.chainCapacity = spec.chainCapacity ?? Math.min(1024, largest);
  }

  // ---- wiring ---------------------------------------------------------------

  /** Connects the device to its machine and transport. Called by the transport. */
  attach(host: VirtioHost, interrupts: VirtioInterrupts): void {
    this.hostValue = host;
    this.interrupts = interrupts;
  }

  /** The machine side; throws when the device is not attached yet. */
  protected get host(): VirtioHost {
    if (!this.hostValue) throw new VirtioConfigError("VIRTIO_DETACHED", `${this.name} is not attached to a transport`);
    return this.hostValue;
  }

  /** Memory for DMA: guest-physical, or the IOMMU's view once one is set. */
  get memory(): GuestMemory {
    return this.dma ?? this.host.memory;
  }

  /**
   * Routes the device's DMA through `memory` (an IOMMU address space) when
   * VIRTIO_F_ACCESS_PLATFORM is negotiated; `undefined` restores guest-physical DMA.
   */
  setDmaMemory(memory: GuestMemory | undefined): void {
    this.dma = memory;
  }

  /** Tracks asynchronous device work (see {@link VirtioHost.trackIo}) and counts it for reset. */
  protected trackIo<T>(work: Promise<T>): Promise<T> {
    const epoch = this.epoch;
    const done = (): void => {
      if (epoch !== this.epoch) this.oldEpochIo--;
    };
    this.pendingIo++;
    const tracked = this.hostValue?.trackIo ? this.hostValue.trackIo(work) : work;
    tracked.then(
      () => {
        this.pendingIo--;
        done();
      },
      () => {
        this.pendingIo--;
        done();
      },
    );
    return tracked;
  }

  /** Asynchronous operations still running (all epochs). */
  pendingIo = 0;

  /**
   * True after a reset while I/O started before it is still running. The
   * virtio-pci transport keeps device_status non-zero until then (§4.1.4.3.2),
   * so a driver that waits for 0 never sees a stale DMA.
   */
  get resetInProgress(): boolean {
    return this.oldEpochIo > 0;
  }

  // ---- features ---------------------------------------------------------------

  /** Offered feature bits, word `index` (0: bits 0..31, 1: bits 32..63, others 0). */
  deviceFeatures(index: number): number {
    return index === 0 || index === 1 ? this.offered[index] : 0;
  }

  /** The driver's feature word `index`, as written. */
  driverFeatures(index: number): number {
    return index === 0 || index === 1 ? this.accepted[index] : 0;
  }

  /**
   * The driver writes feature word `index`. Ignored once FEATURES_OK is set
   * (§3.1.1: features are fixed from then on); bits above 63 must be zero.
   */
  setDriverFeatures(index: number, value: number): void {
    if (this.statusValue & VirtioStatus.FEATURES_OK) return;
    if (index === 0 || index === 1) this.accepted[index] = value >>> 0;
    else if (value !== 0) this.unknownFeatureWritten = true; // bits above 63 are never offered: refused at FEATURES_OK
  }

  private unknownFeatureWritten = false;

  /** Whether feature `bit` was offered. */
  offers(bit: number): boolean {
    return ((bit < 32 ? this.offered[0] >>> bit : this.offered[1] >>> (bit - 32)) & 1) === 1;
  }

  /** Whether feature `bit` is negotiated (accepted by the driver; final once FEATURES_OK). */
  hasFeature(bit: number): boolean {
    return ((bit < 32 ? this.accepted[0] >>> bit : this.accepted[1] >>> (bit - 32)) & 1) === 1;
  }

  /**
   * Device-specific check of the accepted features at FEATURES_OK; return a
   * reason to refuse, or `undefined` to accept.
   */
  protected validateFeatures(): string | undefined {
    return undefined;
  }

  private ringFeatures(): VirtqueueFeatures {
    return {
      packed: this.hasFeature(VirtioFeature.RING_PACKED),
      eventIdx: this.hasFeature(VirtioFeature.EVENT_IDX),
      indirect: this.hasFeature(VirtioFeature.INDIRECT_DESC),
    };
  }

  // ---- status -----------------------------------------------------------------

  /** The device status register (§2.1). */
  get status(): number {
    return this.statusValue;
  }

  /**
   * The driver writes the status register: 0 resets the device; FEATURES_OK
   * is kept only if the accepted features are acceptable (§3.1.1 step 5);
   * DRIVER_OK activates the device.
   */
  writeStatus(value: number): void {
    value &= 0xff;
    if (value === 0) {
      this.reset();
      return;
    }
    const old = this.statusValue;
    let next = (value & ~VirtioStatus.DEVICE_NEEDS_RESET) | (old & VirtioStatus.DEVICE_NEEDS_RESET);
    if (next & VirtioStatus.FEATURES_OK && !(old & VirtioStatus.FEATURES_OK)) {
      const refusal = this.checkFeatures();
      if (refusal !== undefined) {
        next &= ~VirtioStatus.FEATURES_OK;
        this.events.emit("requestError", { device: this.name, queue: -1, reason: `features refused: ${refusal}` });
      }
    }
    this.statusValue = next;
    if (next & VirtioStatus.DRIVER_OK && !(old & VirtioStatus.DRIVER_OK)) {
      if (!(next & VirtioStatus.FEATURES_OK)) {
        this.deviceError("the driver set DRIVER_OK without FEATURES_OK");
        return;
      }
      if (this.needsResetReason === undefined) this.guard(-1, () => this.onActivate());
    }
  }

  private checkFeatures(): string | undefined {
    const extra0 = this.accepted[0] & ~this.offered[0];
    const extra1 = this.accepted[1] & ~this.offered[1];
    if (extra0 || extra1 || this.unknownFeatureWritten) {
      return `the driver accepted features the device does not offer (0x${(extra1 >>> 0).toString(16)}_${(extra0 >>> 0).toString(16).padStart(8, "0")})`;
    }
    if (!this.hasFeature(VirtioFeature.VERSION_1)) return "VIRTIO_F_VERSION_1 not accepted (this device has no legacy interface)";
    return this.validateFeatures();
  }

  /** Whether the driver has set DRIVER_OK and the device is not broken. */
  get active(): boolean {
    return (this.statusValue & VirtioStatus.DRIVER_OK) !== 0 && this.needsResetReason === undefined;
  }

  /**
   * Resets the device (status 0, §2.4): queues disabled, features cleared,
   * device state back to power-on. Completions of requests started before are dropped.
   */
  reset(): void {
    this.oldEpochIo = this.pendingIo;
    this.epoch++;
    this.statusValue = 0;
    this.accepted.fill(0);
    this.unknownFeatureWritten = false;
    this.needsResetReason = undefined;
    this.dma = undefined;
    for (const q of this.queues) q.reset();
    this.onReset();
  }

  /**
   * Sets DEVICE_NEEDS_RESET (§2.1.2) and tells the driver with a configuration
   * change notification. The device ignores its queues until reset.
   */
  deviceError(reason: string, error?: unknown): void {
    if (this.needsResetReason !== undefined) return;
    this.needsResetReason = reason;
    this.statusValue |= VirtioStatus.DEVICE_NEEDS_RESET;
    this.events.emit("needsReset", { device: this.name, reason, error });
    if (this.statusValue & VirtioStatus.DRIVER_OK) this.interrupts?.signalConfig();
  }

  /**
   * Runs device code, turning a thrown error into DEVICE_NEEDS_RESET. Use it
   * around async completions too: nothing a guest causes may reach the host.
   */
  protected guard(queue: number, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      const what = queue >= 0 ? `queue ${queue}: ` : "";
      if (e instanceof VirtqueueError) this.deviceError(e.message, e);
      else if (e instanceof GuestMemoryError) this.deviceError(`${what}${e.message}`, e);
      else if (e instanceof TypevisorError) this.deviceError(`${what}${e.message}`, e);
      else this.deviceError(`${what}internal error: ${e instanceof Error ? e.message : String(e)}`, e);
    }
  }

  /** Reports a request that failed without breaking the device. */
  protected requestFailed(queue: number, reason: string, error?: unknown): void {
    this.requestErrors++;
    this.events.emit("requestError", { device: this.name, queue, reason, error });
  }

  // ---- queues -----------------------------------------------------------------

  /**
   * The driver enabled queue `index` (QueueReady / queue_enable). A bad
   * configuration sets DEVICE_NEEDS_RESET.
   */
  enableQueue(index: number): void {
    const q = this.queues[index];
    if (!q || q.ready) return;
    if (!(this.statusValue & VirtioStatus.FEATURES_OK)) {
      this.deviceError(`queue ${index} enabled before FEATURES_OK`);
      return;
    }
    this.guard(index, () => q.enable(this.memory, this.ringFeatures()));
  }

  /** The driver notified queue `index` (QueueNotify / the notify capability). */
  notifyQueue(index: number): void {
    const q = this.queues[index];
    if (!q || !q.ready || !this.active) return;
    this.guard(index, () => this.onQueueNotify(q));
  }

  /**
   * Sends a used-buffer notification for `queue` if the driver wants one
   * for the buffers pushed since the last call (§2.7.7, §2.8.10).
   */
  protected signalUsed(queue: Virtqueue): void {
    if (queue.needsInterrupt()) this.interrupts?.signalQueue(queue.index);
  }

  private signalPending = 0;
  private signalScheduled = false;

  /**
   * Like {@link VirtioDevice.signalUsed}, but coalesces every request for
   * the same queue within one tick into one decision (asynchronous
   * completions and frames from other VMs arrive one at a time).
   */
  protected signalUsedSoon(queue: Virtqueue): void {
    this.signalPending |= 1 << (queue.index & 31);
    if (this.signalScheduled) return;
    this.signalScheduled = true;
    queueMicrotask(() => {
      this.signalScheduled = false;
      const pending = this.signalPending;
      this.signalPending = 0;
      for (let i = 0; i < this.queues.length; i++) {
        if (pending & (1 << (i & 31))) this.guard(i, () => this.signalUsed(this.queues[i]));
      }
    });
  }

  /** A new chain sized for this device, to reuse across pops. */
  protected newChain(): DescriptorChain {
    return new DescriptorChain(this.chainCapacity);
  }

  // ---- configuration space -------------------------------------------------------

  /** Reads `size` (1, 2, 4) bytes of configuration space at `offset`; outside it reads 0. */
  readConfig(offset: number, size: number): number {
    if (offset < 0 || offset + size > this.config.length) return 0;
    this.beforeConfigRead(offset, size);
    const v = this.configView;
    if (size === 1) return v.getUint8(offset);
    if (size === 2) return v.getUint16(offset, true);
    return v.getUint32(offset, true);
  }

  /** Writes configuration space; devices decide what is writable in {@link VirtioDevice.onConfigWrite}. */
  writeConfig(offset: number, size: number, value: number): void {
    if (offset < 0 || offset + size > this.config.length) return;
    this.guard(-1, () => this.onConfigWrite(offset, size, value));
  }

  /**
   * Changes the configuration space: runs `change`, increments the
   * generation and sends a configuration change notification once the
   * driver is active (§2.5.1).
   */
  protected updateConfig(change: (view: DataView) => void): void {
    change(this.configView);
    this.configGeneration = (this.configGeneration + 1) >>> 0;
    if (this.statusValue & VirtioStatus.DRIVER_OK) this.interrupts?.signalConfig();
  }

  /** Little-endian view of {@link VirtioDevice.config} for subclasses filling it. */
  protected get configData(): DataView {
    return this.configView;
  }

  // ---- device hooks ---------------------------------------------------------------

  /** The driver notified `queue`; pop, process, push, {@link VirtioDevice.signalUsed}. */
  protected abstract onQueueNotify(queue: Virtqueue): void;

  /** The driver set DRIVER_OK: start delivering (e.g. pending receive data). */
  protected onActivate(): void {}

  /** The device was reset: drop device-specific runtime state. */
  protected onReset(): void {}

  /** A configuration space write (default: read-only space, ignored). */
  protected onConfigWrite(_offset: number, _size: number, _value: number): void {}

  /** Called before a configuration read, to refresh fields computed on demand. */
  protected beforeConfigRead(_offset: number, _size: number): void {}

  /** Device-specific saved state (default none). */
  protected saveDeviceState(): StateValue {
    return null;
  }

  /** Restores device-specific state; called after the common state and queues are restored. */
  protected loadDeviceState(_data: StateValue): void {}

  // ---- snapshots ------------------------------------------------------------------

  /** Saves the device (common and device-specific state). */
  save(): VirtioDeviceState {
    return {
      status: this.statusValue,
      driverFeatures: [this.accepted[0], this.accepted[1]],
      generation: this.configGeneration,
      queues: this.queues.map((q) => q.save()),
      device: this.saveDeviceState(),
    };
  }

  /**
   * Restores {@link VirtioDevice.save} output (from an untrusted file: every
   * field is validated).
   * @throws VirtioConfigError or VirtqueueError for malformed data
   */
  load(state: VirtioDeviceState): void {
    const bad = (what: string): never => {
      throw new VirtioConfigError("VIRTIO_STATE", `${this.name}: saved ${what} is malformed`);
    };
    if (typeof state !== "object" || state === null) bad("state");
    const u32 = (v: unknown, what: string): number => (typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 0xffffffff ? v : bad(what));
    const status = u32(state.status, "status");
    if (status > 0xff) bad("status");
    if (!Array.isArray(state.driverFeatures) || state.driverFeatures.length !== 2) bad("driver features");
    if (!Array.isArray(state.queues) || state.queues.length !== this.queues.length) bad(`queue list (expected ${this.queues.length} queues)`);
    this.reset();
    this.accepted[0] = u32(state.driverFeatures[0], "driver features");
    this.accepted[1] = u32(state.driverFeatures[1], "driver features");
    this.configGeneration = u32(state.generation, "configuration generation");
    this.statusValue = status & ~VirtioStatus.DEVICE_NEEDS_RESET;
    const features = this.ringFeatures();
    for (let i = 0; i < this.queues.length; i++) {
      const qs = state.queues[i];
      if (typeof qs !== "object" || qs === null || Array.isArray(qs)) bad(`queue ${i}`);
      this.queues[i].load(qs, this.memory, features);
    }
    if (status & VirtioStatus.DEVICE_NEEDS_RESET) this.deviceError("restored in DEVICE_NEEDS_RESET state");
    this.loadDeviceState(state.device);
  }
}
