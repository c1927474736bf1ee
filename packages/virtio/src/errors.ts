import { TypevisorError } from "@typevisor/hv-core";

/**
 * A virtqueue the driver has corrupted beyond recovery: an available index
 * that jumped past the queue size, a head or `next` index out of range, a
 * descriptor loop, a nested indirect table, ring memory outside RAM. The
 * device stops using the queue and sets DEVICE_NEEDS_RESET (§2.1.2).
 *
 * Codes: `VIRTQUEUE_INDEX`, `VIRTQUEUE_LOOP`, `VIRTQUEUE_INDIRECT`,
 * `VIRTQUEUE_MEMORY`, `VIRTQUEUE_CONFIG`, `VIRTQUEUE_INFLIGHT`.
 */
export class VirtqueueError extends TypevisorError {
  /** Index of the queue within its device. */
  readonly queue: number;

  /**
   * @param code - stable error code
   * @param queue - queue index
   * @param message - what is wrong, naming the field and value
   */
  constructor(code: string, queue: number, message: string) {
    super(code, `virtqueue ${queue}: ${message}`);
    this.queue = queue;
  }
}

/** A configuration or option error of a virtio device or transport (host side). */
export class VirtioConfigError extends TypevisorError {}
