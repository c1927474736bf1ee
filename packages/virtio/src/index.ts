/**
 * `@typevisor/virtio`: virtio 1.2 devices for typevisor. Split and packed
 * virtqueues, the virtio-mmio and virtio-pci transports, a device framework
 * (features, status, reset, configuration space, saved state), and the blk,
 * console, rng and net devices.
 *
 * @packageDocumentation
 */
export {
  VirtioStatus,
  VirtioDeviceId,
  VirtioFeature,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_USED,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_USED_F_NO_NOTIFY,
  RING_EVENT_FLAGS_ENABLE,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_DESC,
  MAX_QUEUE_SIZE,
} from "./constants.js";
export { VirtqueueError, VirtioConfigError } from "./errors.js";
export { FlatGuestMemory } from "./flat-guest-memory.js";
export { DescriptorChain, CHAIN_OK, CHAIN_BAD_ADDRESS, CHAIN_BAD_ORDER, CHAIN_TOO_LONG } from "./descriptor-chain.js";
export { Virtqueue, type VirtqueueFeatures, type VirtqueueState } from "./virtqueue.js";
export type { RingState } from "./virtqueue-ring.js";
export {
  VirtioDevice,
  type VirtioInterrupts,
  type VirtioHost,
  type VirtioDeviceEvents,
  type VirtioRingOptions,
  type VirtioDeviceSpec,
  type VirtioDeviceState,
} from "./virtio-device.js";
export {
  VirtioMmioTransport,
  VirtioMmioReg,
  VIRTIO_MMIO_MAGIC,
  VIRTIO_MMIO_VENDOR_ID,
  VIRTIO_MMIO_DEFAULT_SIZE,
  VIRTIO_MMIO_INT_VRING,
  VIRTIO_MMIO_INT_CONFIG,
  virtioMmioKernelParam,
  attachVirtioMmio,
  type VirtioMmioOptions,
  type VirtioMmioPlacement,
  type VirtioMmioState,
} from "./transport-mmio.js";
export { type BlockBackend, MemoryBlockBackend, BlockBackendError } from "./block-backend.js";
export {
  VirtioBlkDevice,
  VirtioBlkFeature,
  VirtioBlkRequest,
  VirtioBlkStatus,
  type VirtioBlkOptions,
  type VirtioBlkStats,
} from "./device-blk.js";
export { VirtioRngDevice, type VirtioRngOptions } from "./device-rng.js";
export { type CharBackend, type ReadableLike, type WritableLike, streamCharBackend, MemoryCharBackend } from "./char-backend.js";
export { VirtioConsoleDevice, VirtioConsoleFeature, type VirtioConsoleOptions } from "./device-console.js";
export { virtioPlugin, virtioMmioKernelParams, VIRTIO_MMIO_DEFAULT_SLOTS, type VirtioPlacementOptions, type VirtioPlugin } from "./plugins.js";
export { virtioBlk, virtioConsole, virtioRng } from "./plugin-devices.js";
export { parseDiskOption, splitOptionString, type DiskOption } from "./options.js";
export {
  type NetBackend,
  type NetPort,
  type NetEndpointInfo,
  type FrameRecorder,
  recordingBackend,
  formatMac,
  parseMac,
} from "./net-backend.js";
export { VirtualSwitch, type VirtualSwitchOptions, type SwitchPortStats, type SwitchPortInfo } from "./net-switch.js";
export { PcapWriter, type PcapWriterOptions, type ByteSink } from "./net-pcap.js";
export { VirtioNetDevice, VirtioNetFeature, VIRTIO_NET_S_LINK_UP, type VirtioNetOptions, type VirtioNetStats } from "./device-net.js";
export { virtioNet, type VirtioNetPluginOptions } from "./plugin-devices.js";
export { parseNetOption, type NetOption } from "./options.js";
export {
  VirtioPciTransport,
  VirtioPciCap,
  VirtioPciCommon,
  VIRTIO_PCI_VENDOR_ID,
  VIRTIO_PCI_DEVICE_ID_BASE,
  VIRTIO_MSI_NO_VECTOR,
  VIRTIO_PCI_MSIX_BAR,
  VIRTIO_PCI_REGS_BAR,
  type VirtioPciHost,
  type VirtioPciOptions,
  type VirtioPciState,
} from "./transport-pci.js";
