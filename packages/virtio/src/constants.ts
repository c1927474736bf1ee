// Numbers from the virtio 1.2 specification (OASIS, "Virtual I/O Device
// (VIRTIO) Version 1.2"). Section numbers in comments refer to it.

/** Device status bits (§2.1). */
export const VirtioStatus = {
  /** The guest OS has noticed the device. */
  ACKNOWLEDGE: 1,
  /** The guest OS knows how to drive the device. */
  DRIVER: 2,
  /** The driver is set up and ready to drive the device. */
  DRIVER_OK: 4,
  /** The driver has acknowledged the features it understands; negotiation is complete. */
  FEATURES_OK: 8,
  /** The device hit an error it cannot recover from without a reset. */
  DEVICE_NEEDS_RESET: 64,
  /** The driver gave up on the device. */
  FAILED: 128,
} as const;

/** Device IDs (§5). */
export const VirtioDeviceId = {
  /** Network card (§5.1). */
  NET: 1,
  /** Block device (§5.2). */
  BLOCK: 2,
  /** Console (§5.3). */
  CONSOLE: 3,
  /** Entropy source (§5.4). */
  ENTROPY: 4,
  /** Traditional memory balloon (§5.5). */
  BALLOON: 5,
} as const;

/** Device-independent feature bits (§6). */
export const VirtioFeature = {
  /** Descriptors may point at indirect descriptor tables (§2.7.5.3, §2.8.7). */
  INDIRECT_DESC: 28,
  /** `used_event` / `avail_event` notification suppression (§2.7.7, §2.7.10). */
  EVENT_IDX: 29,
  /** Compliance with virtio 1.x rather than the legacy interface. */
  VERSION_1: 32,
  /** DMA goes through the platform's IOMMU (addresses are I/O virtual addresses). */
  ACCESS_PLATFORM: 33,
  /** The packed virtqueue layout (§2.8). */
  RING_PACKED: 34,
  /** Buffers are used in the order they were made available. */
  IN_ORDER: 35,
  /** Platform-specific memory ordering is needed. */
  ORDER_PLATFORM: 36,
  /** Single Root I/O Virtualization. */
  SR_IOV: 37,
  /** The driver passes extra data with notifications. */
  NOTIFICATION_DATA: 38,
  /** Individual queues can be reset (§2.6.1). */
  RING_RESET: 40,
} as const;

/** Descriptor flags shared by split and packed descriptors (§2.7.5, §2.8.1). */
export const VIRTQ_DESC_F_NEXT = 1;
/** The buffer is device-writable (otherwise device-readable). */
export const VIRTQ_DESC_F_WRITE = 2;
/** The buffer holds a table of indirect descriptors. */
export const VIRTQ_DESC_F_INDIRECT = 4;
/** Packed ring: the descriptor's avail bit (§2.8.1). */
export const VIRTQ_DESC_F_AVAIL = 1 << 7;
/** Packed ring: the descriptor's used bit (§2.8.1). */
export const VIRTQ_DESC_F_USED = 1 << 15;

/** Split ring: `avail.flags` bit asking the device not to interrupt (§2.7.7). */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** Split ring: `used.flags` bit asking the driver not to notify (§2.7.10). */
export const VIRTQ_USED_F_NO_NOTIFY = 1;

/** Packed ring event suppression: notifications enabled (§2.8.10). */
export const RING_EVENT_FLAGS_ENABLE = 0;
/** Packed ring event suppression: notifications disabled. */
export const RING_EVENT_FLAGS_DISABLE = 1;
/** Packed ring event suppression: notify at one specific descriptor (needs EVENT_IDX). */
export const RING_EVENT_FLAGS_DESC = 2;

/** Largest queue size the specification allows (§2.6, §2.7, §2.8). */
export const MAX_QUEUE_SIZE = 32768;
