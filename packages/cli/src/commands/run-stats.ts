// `typevisor run --stats FILE`: what the machine did, as JSON for scripts
// and benchmarks: wall time, guest instructions and exits per vCPU, and per
// disk the requests the guest made and how long the storage backend was
// busy. Backend time next to wall time tells whether a workload waited on
// the device or on CPU emulation.
import type { BlockDevice } from "@typevisor/qcow2";

/** Time a {@link BlockDevice} spent with at least one request in flight. */
export class TimedBlockDevice implements BlockDevice {
  /** Milliseconds with one or more requests in flight (overlaps counted once). */
  busyMs = 0;
  /** Requests by kind. */
  readonly requests = { read: 0, write: 0, flush: 0, discard: 0, writeZeroes: 0 };
  private inFlight = 0;
  private busySince = 0;

  constructor(private readonly inner: BlockDevice) {}

  get size(): number {
    return this.inner.size;
  }

  get readOnly(): boolean {
    return this.inner.readOnly;
  }

  read(offset: number, dest: Uint8Array): Promise<void> {
    this.requests.read++;
    return this.timed(this.inner.read(offset, dest));
  }

  write(offset: number, src: Uint8Array): Promise<void> {
    this.requests.write++;
    return this.timed(this.inner.write(offset, src));
  }

  flush(): Promise<void> {
    this.requests.flush++;
    return this.timed(this.inner.flush());
  }

  discard(offset: number, length: number): Promise<void> {
    this.requests.discard++;
    return this.timed(this.inner.discard(offset, length));
  }

  writeZeroes(offset: number, length: number, options?: { unmap?: boolean }): Promise<void> {
    this.requests.writeZeroes++;
    return this.timed(this.inner.writeZeroes(offset, length, options));
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private async timed(p: Promise<void>): Promise<void> {
    if (this.inFlight++ === 0) this.busySince = performance.now();
    try {
      await p;
    } finally {
      if (--this.inFlight === 0) this.busyMs += performance.now() - this.busySince;
    }
  }
}

/** The JSON `--stats` writes. */
export interface RunStats {
  /** Seconds from boot to stop. */
  wallSeconds: number;
  /** CPU time of this process (user + system) over the same span, in seconds. */
  cpuSeconds: number;
  /** Guest instructions retired, all vCPUs. */
  instructions: number;
  /** Per disk, in --disk order. */
  disks: { path: string; busySeconds: number; requests: TimedBlockDevice["requests"] }[];
  /** How the machine stopped. */
  stop: { reason: string; exitCode?: number; message?: string };
}
