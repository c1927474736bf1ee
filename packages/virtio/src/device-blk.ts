import type { GuestMemory, StateValue } from "@typevisor/hv-core";
import type { BlockBackend } from "./block-backend.js";
import { VirtioDeviceId } from "./constants.js";
import { CHAIN_BAD_ORDER, CHAIN_OK, DescriptorChain } from "./descriptor-chain.js";
import { VirtioConfigError } from "./errors.js";
import { VirtioDevice, type VirtioRingOptions } from "./virtio-device.js";
import type { Virtqueue } from "./virtqueue.js";

/** virtio-blk feature bits (§5.2.3). */
export const VirtioBlkFeature = {
  /** `size_max` is valid. */
  SIZE_MAX: 1,
  /** `seg_max` is valid. */
  SEG_MAX: 2,
  /** `geometry` is valid. */
  GEOMETRY: 4,
  /** The device is read-only. */
  RO: 5,
  /** `blk_size` is valid. */
  BLK_SIZE: 6,
  /** Cache flush command support. */
  FLUSH: 9,
  /** `topology` is valid. */
  TOPOLOGY: 10,
  /** `writeback` is valid and writable. */
  CONFIG_WCE: 11,
  /** Several request queues (`num_queues`). */
  MQ: 12,
  /** Discard command support. */
  DISCARD: 13,
  /** Write-zeroes command support. */
  WRITE_ZEROES: 14,
} as const;

/** Request types (§5.2.6). */
export const VirtioBlkRequest = {
  /** Read. */
  IN: 0,
  /** Write. */
  OUT: 1,
  /** Flush the write cache. */
  FLUSH: 4,
  /** Get the device ID string (20 bytes). */
  GET_ID: 8,
  /** Discard sector ranges. */
  DISCARD: 11,
  /** Write zeroes to sector ranges. */
  WRITE_ZEROES: 13,
} as const;

/** Request status values (§5.2.6). */
export const VirtioBlkStatus = {
  /** Success. */
  OK: 0,
  /** Device or driver error. */
  IOERR: 1,
  /** Request unsupported by the device. */
  UNSUPP: 2,
} as const;

/** Request counters of a {@link VirtioBlkDevice}. */
export interface VirtioBlkStats {
  /** Requests completed with VIRTIO_BLK_S_OK. */
  ok: number;
  /** Requests completed with VIRTIO_BLK_S_IOERR. */
  ioerr: number;
  /** Requests completed with VIRTIO_BLK_S_UNSUPP. */
  unsupp: number;
  /** Bytes read from the disk into the guest. */
  bytesRead: number;
  /** Bytes written from the guest to the disk. */
  bytesWritten: number;
}

/** Options of {@link VirtioBlkDevice}. */
export interface VirtioBlkOptions {
  /** The storage (a qcow2 or raw image, or a {@link MemoryBlockBackend}). */
  disk: BlockBackend;
  /** Present the disk read-only even if the backend allows writes. */
  readOnly?: boolean;
  /** Device ID string for GET_ID (at most 20 bytes of ASCII); default "typevisor-blk". */
  serial?: string;
  /** Size of each request queue (default 256). */
  queueSize?: number;
  /** Number of request queues (default 1; more offers VIRTIO_BLK_F_MQ). */
  queues?: number;
  /** Most data segments per request, advertised as `seg_max` (default min(queueSize - 2, 126)). */
  segMax?: number;
  /** Offer discard (default true unless read-only). */
  discard?: boolean;
  /** Offer write-zeroes (default true unless read-only). */
  writeZeroes?: boolean;
  /** Ring features. */
  ring?: VirtioRingOptions;
  /** Name used in messages and state (default "virtio-blk"). */
  name?: string;
}

const SECTOR = 512;
const HEADER = 16;
/** Most ranges in one discard / write-zeroes request (`max_discard_seg`, `max_write_zeroes_seg`). */
const MAX_RANGES = 32;
/** Most sectors in one discard / write-zeroes range (about 2 GiB). */
const MAX_RANGE_SECTORS = 0x3fffff;
/** Bounce-buffer chunk when guest memory offers no zero-copy view. */
const BOUNCE = 64 * 1024;
const ID_BYTES = 20;
const TWO_32 = 0x1_0000_0000;

/** Configuration space offsets (§5.2.4). */
const CFG = {
  capacity: 0,
  sizeMax: 8,
  segMax: 12,
  blkSize: 20,
  numQueues: 34,
  maxDiscardSectors: 36,
  maxDiscardSeg: 40,
  discardSectorAlignment: 44,
  maxWriteZeroesSectors: 48,
  maxWriteZeroesSeg: 52,
  writeZeroesMayUnmap: 56,
  size: 60,
};

/** One request, reused from a pool. */
class BlkRequest {
  readonly chain: DescriptorChain;
  queue!: Virtqueue;
  epoch = 0;
  usedLen = 0;
  /** Header, then discard / write-zeroes ranges. */
  readonly buf = new Uint8Array(HEADER + 16 * MAX_RANGES);
  readonly view = new DataView(this.buf.buffer);
  bounce: Uint8Array | undefined;

  constructor(capacity: number) {
    this.chain = new DescriptorChain(capacity);
  }
}

/**
 * virtio-blk (§5.2) over a {@link BlockBackend}: read, write, flush, discard,
 * write-zeroes and get-id, read-only disks, one or several queues, many
 * requests in flight at once.
 *
 * Reads and writes go straight between the backend and guest RAM when guest
 * memory offers zero-copy views, through a 64 KiB bounce buffer otherwise.
 * A request the backend fails, or one the driver malformed, completes with
 * VIRTIO_BLK_S_IOERR (or UNSUPP) and the device carries on.
 */
export class VirtioBlkDevice extends VirtioDevice {
  /** The storage. */
  readonly disk: BlockBackend;
  /** Whether the guest sees a read-only disk. */
  readonly readOnly: boolean;
  /** Completed requests, by outcome (statistics). */
  readonly stats: VirtioBlkStats = { ok: 0, ioerr: 0, unsupp: 0, bytesRead: 0, bytesWritten: 0 };
  private readonly serial: Uint8Array;
  private readonly free: BlkRequest[] = [];
  private readonly inflight = new Set<BlkRequest>();
  private readonly discardOn: boolean;
  private readonly writeZeroesOn: boolean;

  /** @param options - disk and features */
  constructor(options: VirtioBlkOptions) {
    const queueSize = options.queueSize ?? 256;
    const queues = options.queues ?? 1;
    if (!Number.isInteger(queues) || queues < 1 || queues > 64) throw new VirtioConfigError("VIRTIO_BLK_OPTIONS", `virtio-blk queue count ${queues} is outside 1..64`);
    const segMax = options.segMax ?? Math.max(1, Math.min(queueSize - 2, 126));
    const readOnly = (options.readOnly ?? false) || options.disk.readOnly;
    const discard = !readOnly && (options.discard ?? true);
    const writeZeroes = !readOnly && (options.writeZeroes ?? true);
    const F = VirtioBlkFeature;
    const features: number[] = [F.SEG_MAX, F.BLK_SIZE, F.FLUSH];
    if (readOnly) features.push(F.RO);
    if (queues > 1) features.push(F.MQ);
    if (discard) features.push(F.DISCARD);
    if (writeZeroes) features.push(F.WRITE_ZEROES);
    super({
      deviceId: VirtioDeviceId.BLOCK,
      name: options.name ?? "virtio-blk",
      queueSizes: new Array<number>(queues).fill(queueSize),
      features,
      configSize: CFG.size,
      chainCapacity: segMax + 2,
      ring: options.ring,
    });
    this.disk = options.disk;
    this.readOnly = readOnly;
    this.discardOn = discard;
    this.writeZeroesOn = writeZeroes;
    const serial = new TextEncoder().encode(options.serial ?? "typevisor-blk");
    if (serial.length > ID_BYTES) throw new VirtioConfigError("VIRTIO_BLK_OPTIONS", `virtio-blk serial "${options.serial}" is longer than ${ID_BYTES} bytes`);
    this.serial = serial;
    const c = this.configData;
    this.writeCapacity();
    c.setUint32(CFG.segMax, segMax, true);
    c.setUint32(CFG.blkSize, SECTOR, true);
    c.setUint16(CFG.numQueues, queues, true);
    c.setUint32(CFG.maxDiscardSectors, MAX_RANGE_SECTORS, true);
    c.setUint32(CFG.maxDiscardSeg, MAX_RANGES, true);
    c.setUint32(CFG.discardSectorAlignment, 8, true);
    c.setUint32(CFG.maxWriteZeroesSectors, MAX_RANGE_SECTORS, true);
    c.setUint32(CFG.maxWriteZeroesSeg, MAX_RANGES, true);
    c.setUint8(CFG.writeZeroesMayUnmap, 1);
  }

  private writeCapacity(): void {
    const sectors = Math.floor(this.disk.size / SECTOR);
    this.configData.setUint32(CFG.capacity, sectors % TWO_32, true);
    this.configData.setUint32(CFG.capacity + 4, Math.floor(sectors / TWO_32), true);
  }

  /** Capacity in 512-byte sectors, as the guest sees it. */
  get capacity(): number {
    return Math.floor(this.disk.size / SECTOR);
  }

  /** Re-reads the backend size (after a resize) and tells the driver (configuration change). */
  refreshCapacity(): void {
    this.updateConfig(() => this.writeCapacity());
  }

  /** Requests currently running against the backend. */
  get requestsInFlight(): number {
    return this.inflight.size;
  }

  private take(): BlkRequest {
    return this.free.pop() ?? new BlkRequest(this.chainCapacity);
  }

  protected override onQueueNotify(q: Virtqueue): void {
    for (;;) {
      const req = this.take();
      let got = false;
      try {
        got = q.pop(req.chain);
      } finally {
        if (!got) this.free.push(req);
      }
      if (!got) break;
      this.start(q, req);
    }
  }

  private start(q: Virtqueue, req: BlkRequest): void {
    req.queue = q;
    req.epoch = this.epoch;
    req.usedLen = 0;
    this.inflight.add(req);
    this.trackIo(this.execute(req)).then(
      (status) => this.finish(req, status),
      (error: unknown) => {
        this.requestFailed(q.index, `backend failed: ${error instanceof Error ? error.message : String(error)}`, error);
        this.finish(req, VirtioBlkStatus.IOERR);
      },
    );
  }

  /** Runs one request against the backend; resolves with the status byte. */
  private async execute(req: BlkRequest): Promise<number> {
    const c = req.chain;
    const q = req.queue.index;
    if (c.problem !== CHAIN_OK) {
      this.requestFailed(q, `malformed descriptor chain (problem ${c.problem} at descriptor ${c.problemAt})`);
      return VirtioBlkStatus.IOERR;
    }
    if (c.writableBytes < 1 || c.readableBytes < HEADER) {
      this.requestFailed(q, `request without a ${c.writableBytes < 1 ? "status byte" : "16-byte header"}`);
      return VirtioBlkStatus.IOERR;
    }
    const mem = this.memory;
    c.readFrom(mem, 0, req.buf.subarray(0, HEADER));
    const type = req.view.getUint32(0, true);
    const sectorLo = req.view.getUint32(8, true);
    const sectorHi = req.view.getUint32(12, true);
    switch (type) {
      case VirtioBlkRequest.IN:
      case VirtioBlkRequest.OUT: {
        const write = type === VirtioBlkRequest.OUT;
        const len = write ? c.readableBytes - HEADER : c.writableBytes - 1;
        if (write && this.readOnly) return this.fail(q, "write to a read-only disk");
        if (len % SECTOR !== 0) return this.fail(q, `${write ? "write" : "read"} length ${len} is not a multiple of ${SECTOR}`);
        const sectors = len / SECTOR;
        if (!this.inRange(sectorLo, sectorHi, sectors)) return this.fail(q, `${write ? "write" : "read"} of ${sectors} sectors at sector ${sectorHi * TWO_32 + sectorLo} is beyond the ${this.capacity}-sector disk`);
        const offset = (sectorHi * TWO_32 + sectorLo) * SECTOR;
        if (write) await this.transferOut(req, mem, offset, len);
        else await this.transferIn(req, mem, offset, len);
        if (write) this.stats.bytesWritten += len;
        else this.stats.bytesRead += len;
        req.usedLen = write ? 1 : len + 1;
        return VirtioBlkStatus.OK;
      }
      case VirtioBlkRequest.FLUSH:
        await this.disk.flush();
        req.usedLen = 1;
        return VirtioBlkStatus.OK;
      case VirtioBlkRequest.GET_ID: {
        const n = Math.min(ID_BYTES, c.writableBytes - 1);
        const id = new Uint8Array(n);
        id.set(this.serial.subarray(0, n));
        c.writeTo(mem, 0, id);
        req.usedLen = n + 1;
        return VirtioBlkStatus.OK;
      }
      case VirtioBlkRequest.DISCARD:
      case VirtioBlkRequest.WRITE_ZEROES:
        return this.ranges(req, type === VirtioBlkRequest.DISCARD);
      default:
        req.usedLen = 1;
        this.stats.unsupp++;
        return VirtioBlkStatus.UNSUPP;
    }
  }

  private fail(queue: number, reason: string): number {
    this.requestFailed(queue, reason);
    return VirtioBlkStatus.IOERR;
  }

  private inRange(lo: number, hi: number, sectors: number): boolean {
    const cap = this.capacity;
    const start = hi * TWO_32 + lo;
    return hi < 0x200000 && start <= cap && sectors <= cap - start;
  }

  /** Disk to guest: the writable part up to (not including) the status byte. */
  private async transferIn(req: BlkRequest, mem: GuestMemory, offset: number, len: number): Promise<void> {
    const c = req.chain;
    let left = len;
    for (let i = c.readableCount; i < c.count && left > 0; i++) {
      const n = Math.min(c.len[i], left);
      const gpa = c.addr[i];
      const view = mem.view?.(gpa, n);
      if (view !== undefined) {
        await this.disk.read(offset, view);
        mem.markDirty?.(gpa, n);
      } else {
        const bounce = (req.bounce ??= new Uint8Array(BOUNCE));
        for (let done = 0; done < n; done += BOUNCE) {
          const part = bounce.subarray(0, Math.min(BOUNCE, n - done));
          await this.disk.read(offset + done, part);
          mem.write(gpa + done, part);
        }
      }
      offset += n;
      left -= n;
    }
  }

  /** Guest to disk: the readable part after the header. */
  private async transferOut(req: BlkRequest, mem: GuestMemory, offset: number, len: number): Promise<void> {
    const c = req.chain;
    let skip = HEADER;
    let left = len;
    for (let i = 0; i < c.readableCount && left > 0; i++) {
      let segLen = c.len[i];
      let gpa = c.addr[i];
      if (skip >= segLen) {
        skip -= segLen;
        continue;
      }
      gpa += skip;
      segLen -= skip;
      skip = 0;
      const n = Math.min(segLen, left);
      const view = mem.view?.(gpa, n);
      if (view !== undefined) {
        await this.disk.write(offset, view);
      } else {
        const bounce = (req.bounce ??= new Uint8Array(BOUNCE));
        for (let done = 0; done < n; done += BOUNCE) {
          const part = bounce.subarray(0, Math.min(BOUNCE, n - done));
          mem.read(gpa + done, part);
          await this.disk.write(offset + done, part);
        }
      }
      offset += n;
      left -= n;
    }
  }

  /** Discard and write-zeroes: 16-byte ranges {sector u64, num_sectors u32, flags u32} (§5.2.6). */
  private async ranges(req: BlkRequest, discard: boolean): Promise<number> {
    const c = req.chain;
    const q = req.queue.index;
    req.usedLen = 1;
    const what = discard ? "discard" : "write-zeroes";
    if (discard ? !this.discardOn : !this.writeZeroesOn) {
      if (this.readOnly) return this.fail(q, `${what} on a read-only disk`);
      this.stats.unsupp++;
      return VirtioBlkStatus.UNSUPP;
    }
    const payload = c.readableBytes - HEADER;
    if (payload === 0 || payload % 16 !== 0 || payload / 16 > MAX_RANGES) return this.fail(q, `${what} payload of ${payload} bytes is not 1..${MAX_RANGES} ranges of 16 bytes`);
    const n = payload / 16;
    c.readFrom(this.memory, HEADER, req.buf.subarray(HEADER, HEADER + payload));
    const v = req.view;
    // Validate every range before touching the disk.
    for (let i = 0; i < n; i++) {
      const at = HEADER + 16 * i;
      const lo = v.getUint32(at, true);
      const hi = v.getUint32(at + 4, true);
      const count = v.getUint32(at + 8, true);
      const flags = v.getUint32(at + 12, true);
      if (flags & ~1 || (discard && flags & 1)) {
        this.stats.unsupp++;
        this.requestFailed(q, `${what} range ${i} has unsupported flags 0x${flags.toString(16)}`);
        return VirtioBlkStatus.UNSUPP;
      }
      if (count > MAX_RANGE_SECTORS || !this.inRange(lo, hi, count)) return this.fail(q, `${what} range ${i} (${count} sectors at ${hi * TWO_32 + lo}) is beyond the disk or the ${MAX_RANGE_SECTORS}-sector limit`);
    }
    for (let i = 0; i < n; i++) {
      const at = HEADER + 16 * i;
      const offset = (v.getUint32(at + 4, true) * TWO_32 + v.getUint32(at, true)) * SECTOR;
      const length = v.getUint32(at + 8, true) * SECTOR;
      if (length === 0) continue;
      if (discard) await this.disk.discard(offset, length);
      else await this.disk.writeZeroes(offset, length, { unmap: (v.getUint32(at + 12, true) & 1) === 1 });
    }
    return VirtioBlkStatus.OK;
  }

  private finish(req: BlkRequest, status: number): void {
    this.inflight.delete(req);
    const q = req.queue;
    const c = req.chain;
    // Completions of requests from before a device or queue reset are dropped.
    if (req.epoch === this.epoch && c.generation === q.generation && this.needsResetReason === undefined) {
      this.guard(q.index, () => {
        let used = 0;
        if (c.problem !== CHAIN_BAD_ORDER && c.count > c.readableCount) {
          const last = c.count - 1;
          const statusAddr = c.addr[last] + c.len[last] - 1;
          const mem = this.memory;
          if (mem.isRam(statusAddr, 1)) {
            mem.writeU8(statusAddr, status);
            used = status === VirtioBlkStatus.OK ? req.usedLen : 1;
          }
        }
        if (status === VirtioBlkStatus.OK) this.stats.ok++;
        else if (status === VirtioBlkStatus.IOERR) this.stats.ioerr++;
        q.push(c, used);
        this.signalUsedSoon(q);
      });
    }
    this.free.push(req);
  }

  /** In-flight requests, so a restored machine re-issues them. */
  protected override saveDeviceState(): StateValue {
    const list: StateValue[] = [];
    for (const r of this.inflight) if (r.epoch === this.epoch) list.push({ queue: r.queue.index, chain: r.chain.save() });
    return { inflight: list };
  }

  /** Re-issues the requests that were in flight when the state was saved. */
  protected override loadDeviceState(data: StateValue): void {
    const list = (data as { inflight?: unknown } | null)?.inflight;
    if (!Array.isArray(list)) throw new VirtioConfigError("VIRTIO_STATE", `${this.name}: saved in-flight request list is malformed`);
    const restored: [Virtqueue, BlkRequest][] = [];
    for (const item of list) {
      const { queue, chain } = (item ?? {}) as { queue?: unknown; chain?: unknown };
      const q = typeof queue === "number" ? this.queues[queue] : undefined;
      const req = this.take();
      if (!q || !Array.isArray(chain) || !req.chain.load(chain)) throw new VirtioConfigError("VIRTIO_STATE", `${this.name}: saved in-flight request is malformed`);
      req.chain.generation = q.generation;
      restored.push([q, req]);
    }
    for (const [q, req] of restored) this.start(q, req);
  }
}
