import { VirtioDeviceId } from "./constants.js";
import { CHAIN_OK, type DescriptorChain } from "./descriptor-chain.js";
import { VirtioDevice, type VirtioRingOptions } from "./virtio-device.js";
import type { Virtqueue } from "./virtqueue.js";

/** Options of {@link VirtioRngDevice}. */
export interface VirtioRngOptions {
  /**
   * Fills `dest` with random bytes (at most 4096 at a time). Default: the
   * host's cryptographic generator (`crypto.getRandomValues`). Tests pass a
   * seeded one.
   */
  source?: (dest: Uint8Array) => void;
  /** Most bytes returned per request (default 64 KiB); the driver's buffer may be larger. */
  maxBytesPerRequest?: number;
  /** Queue size (default 64). */
  queueSize?: number;
  /** Ring features. */
  ring?: VirtioRingOptions;
  /** Name used in messages and state (default "virtio-rng"). */
  name?: string;
}

const CHUNK = 4096;

function cryptoSource(dest: Uint8Array): void {
  globalThis.crypto.getRandomValues(dest);
}

/**
 * virtio-rng, the entropy device (§5.4): one request queue; each device-
 * writable buffer comes back filled with bytes from the host's cryptographic
 * random source. Bytes are produced into a private 4 KiB buffer first (the
 * Web Crypto API refuses shared memory), then copied to the guest.
 */
export class VirtioRngDevice extends VirtioDevice {
  /** Random bytes handed to the guest so far. */
  bytesProvided = 0;
  private readonly source: (dest: Uint8Array) => void;
  private readonly limit: number;
  private readonly chain: DescriptorChain;
  private readonly buffer = new Uint8Array(CHUNK);

  /** @param options - entropy source and limits */
  constructor(options: VirtioRngOptions = {}) {
    super({ deviceId: VirtioDeviceId.ENTROPY, name: options.name ?? "virtio-rng", queueSizes: [options.queueSize ?? 64], features: [], configSize: 0, ring: options.ring });
    this.source = options.source ?? cryptoSource;
    this.limit = Math.max(1, options.maxBytesPerRequest ?? 64 * 1024);
    this.chain = this.newChain();
  }

  protected override onQueueNotify(q: Virtqueue): void {
    const c = this.chain;
    const mem = this.memory;
    while (q.pop(c)) {
      let done = 0;
      if (c.problem === CHAIN_OK) {
        const want = Math.min(c.writableBytes, this.limit);
        while (done < want) {
          const part = want - done >= CHUNK ? this.buffer : this.buffer.subarray(0, want - done);
          this.source(part);
          done += c.writeTo(mem, done, part);
        }
      } else {
        this.requestFailed(q.index, `malformed descriptor chain (problem ${c.problem} at descriptor ${c.problemAt})`);
      }
      this.bytesProvided += done;
      q.push(c, done);
    }
    this.signalUsed(q);
  }
}
