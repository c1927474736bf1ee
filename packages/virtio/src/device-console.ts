import type { StateValue } from "@typevisor/hv-core";
import type { CharBackend } from "./char-backend.js";
import { VirtioDeviceId } from "./constants.js";
import { CHAIN_OK, type DescriptorChain } from "./descriptor-chain.js";
import { VirtioConfigError } from "./errors.js";
import { VirtioDevice, type VirtioRingOptions } from "./virtio-device.js";
import type { Virtqueue } from "./virtqueue.js";

/** virtio-console feature bits (§5.3.3). */
export const VirtioConsoleFeature = {
  /** `cols` and `rows` are valid. */
  SIZE: 0,
  /** Several ports and a control queue (not offered). */
  MULTIPORT: 1,
  /** `emerg_wr` accepts emergency output. */
  EMERG_WRITE: 2,
} as const;

/** Options of {@link VirtioConsoleDevice}. */
export interface VirtioConsoleOptions {
  /** Where output goes and input comes from. */
  backend: CharBackend;
  /** Console size to report (offers VIRTIO_CONSOLE_F_SIZE). */
  size?: {
    /** Columns. */
    cols: number;
    /** Rows. */
    rows: number;
  };
  /** Most input bytes held while the guest is not reading (default 64 KiB); more pauses the backend, then drops. */
  inputBuffer?: number;
  /** Queue size (default 64). */
  queueSize?: number;
  /** Ring features. */
  ring?: VirtioRingOptions;
  /** Name used in messages and state (default "virtio-console"). */
  name?: string;
}

const RX = 0;
const TX = 1;
const CHUNK = 4096;
const CFG_COLS = 0;
const CFG_ROWS = 2;
const CFG_EMERG_WR = 8;

/**
 * virtio-console (§5.3) with a single port: Linux's `hvc0`. Queue 0 carries
 * input to the guest, queue 1 output from it; output also arrives through
 * the emergency-write register. Input is buffered (bounded) while the guest
 * has no receive buffers, and the backend is paused when the buffer fills.
 */
export class VirtioConsoleDevice extends VirtioDevice {
  /** The host side. */
  readonly backend: CharBackend;
  /** Input bytes dropped because the guest did not read them in time. */
  droppedInput = 0;
  private readonly limit: number;
  private pending: Uint8Array;
  private pendingLen = 0;
  private paused = false;
  private readonly rxChain: DescriptorChain;
  private readonly txChain: DescriptorChain;
  private readonly scratch = new Uint8Array(CHUNK);

  /** @param options - backend, size and limits */
  constructor(options: VirtioConsoleOptions) {
    const features: number[] = [VirtioConsoleFeature.EMERG_WRITE];
    if (options.size) features.push(VirtioConsoleFeature.SIZE);
    const queueSize = options.queueSize ?? 64;
    super({ deviceId: VirtioDeviceId.CONSOLE, name: options.name ?? "virtio-console", queueSizes: [queueSize, queueSize], features, configSize: 12, ring: options.ring });
    this.backend = options.backend;
    this.limit = options.inputBuffer ?? 64 * 1024;
    if (!Number.isInteger(this.limit) || this.limit < 1) throw new VirtioConfigError("VIRTIO_CONSOLE_OPTIONS", `input buffer size ${this.limit} must be a positive integer`);
    this.pending = new Uint8Array(Math.min(this.limit, 4096));
    this.rxChain = this.newChain();
    this.txChain = this.newChain();
    if (options.size) {
      this.configData.setUint16(CFG_COLS, options.size.cols, true);
      this.configData.setUint16(CFG_ROWS, options.size.rows, true);
    }
    this.configData.setUint32(4, 1, true); // max_nr_ports (only meaningful with MULTIPORT)
    this.backend.attach?.((data) => this.input(data));
  }

  /** Reports a new console size (configuration change, §5.3.4). */
  resize(cols: number, rows: number): void {
    this.updateConfig((v) => {
      v.setUint16(CFG_COLS, cols, true);
      v.setUint16(CFG_ROWS, rows, true);
    });
  }

  /** Input bytes waiting for guest receive buffers. */
  get pendingInput(): number {
    return this.pendingLen;
  }

  /** Bytes from the host for the guest. */
  input(data: Uint8Array): void {
    let n = data.length;
    const room = this.limit - this.pendingLen;
    if (n > room) {
      this.droppedInput += n - room;
      n = room;
    }
    if (n > 0) {
      if (this.pendingLen + n > this.pending.length) {
        const grown = new Uint8Array(Math.min(this.limit, Math.max(this.pending.length * 2, this.pendingLen + n)));
        grown.set(this.pending.subarray(0, this.pendingLen));
        this.pending = grown;
      }
      this.pending.set(data.subarray(0, n), this.pendingLen);
      this.pendingLen += n;
    }
    this.deliver();
    if (this.pendingLen >= this.limit && !this.paused) {
      this.paused = true;
      this.backend.pause?.();
    }
  }

  /** Moves pending input into the guest's receive buffers. */
  private deliver(): void {
    if (!this.active || this.pendingLen === 0) return;
    const q = this.queues[RX];
    if (!q.ready) return;
    this.guard(RX, () => {
      const c = this.rxChain;
      let moved = false;
      while (this.pendingLen > 0 && q.pop(c)) {
        let n = 0;
        if (c.problem === CHAIN_OK) n = c.writeTo(this.memory, 0, this.pending.subarray(0, Math.min(this.pendingLen, c.writableBytes)));
        else this.requestFailed(RX, `malformed receive buffer (problem ${c.problem})`);
        this.pending.copyWithin(0, n, this.pendingLen);
        this.pendingLen -= n;
        q.push(c, n);
        moved = true;
      }
      if (moved) this.signalUsed(q);
    });
    if (this.paused && this.pendingLen < this.limit / 2) {
      this.paused = false;
      this.backend.resume?.();
    }
  }

  protected override onQueueNotify(q: Virtqueue): void {
    if (q.index === RX) {
      this.deliver();
      return;
    }
    const c = this.txChain;
    const mem = this.memory;
    while (q.pop(c)) {
      if (c.problem === CHAIN_OK) {
        for (let off = 0; off < c.readableBytes; off += CHUNK) {
          const n = c.readFrom(mem, off, this.scratch.subarray(0, Math.min(CHUNK, c.readableBytes - off)));
          if (n === 0) break;
          this.backend.write(this.scratch.slice(0, n));
        }
      } else {
        this.requestFailed(TX, `malformed transmit buffer (problem ${c.problem})`);
      }
      q.push(c, 0);
    }
    this.signalUsed(q);
  }

  protected override onActivate(): void {
    this.deliver();
  }

  /** Emergency write (§5.3.4): one character through the configuration space. */
  protected override onConfigWrite(offset: number, size: number, value: number): void {
    if (offset === CFG_EMERG_WR && size === 4 && this.hasFeature(VirtioConsoleFeature.EMERG_WRITE)) {
      this.backend.write(Uint8Array.of(value & 0xff));
    }
  }

  /** Pending input survives snapshots. */
  protected override saveDeviceState(): StateValue {
    return { pending: this.pending.slice(0, this.pendingLen) };
  }

  /** Restores pending input (bounded by the input buffer size). */
  protected override loadDeviceState(data: StateValue): void {
    const p = (data as { pending?: unknown } | null)?.pending;
    if (!(p instanceof Uint8Array) || p.length > this.limit) throw new VirtioConfigError("VIRTIO_STATE", `${this.name}: saved pending input is malformed`);
    this.pending = new Uint8Array(Math.max(p.length, Math.min(this.limit, 4096)));
    this.pending.set(p);
    this.pendingLen = p.length;
  }
}
