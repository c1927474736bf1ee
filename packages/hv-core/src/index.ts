/**
 * `@typevisor/hv-core`: the composition core of typevisor. Plugin registry,
 * machine (buses, interrupt lines, vCPU list, virtual clock, lifecycle, run
 * loop), the snapshot contract, and the interfaces through which independent
 * packages meet.
 *
 * @packageDocumentation
 */
export { TypevisorError } from "./errors.js";
export { parseSize } from "./size.js";
export { Emitter, type Listener } from "./emitter.js";
export type { Plugin } from "./plugin.js";
export { PluginRegistry, PluginError, type PluginErrorKind } from "./plugin-registry.js";
export { ServiceKey, ServiceRegistry, ServiceError } from "./services.js";
export { allOnes, maskToSize, type AccessSize, type IoHandler, type MmioHandler, type IoRegion, type UnclaimedAccessHook } from "./io-handler.js";
export { PortIoBus, BusError } from "./port-io-bus.js";
export { MmioBus, MAX_PHYSICAL_ADDRESS, type MmioRegionInfo } from "./mmio-bus.js";
export { InterruptLines, IrqLine, MAX_GSI, type InterruptRouter, type MsiSink } from "./irq.js";
export { VirtualClock, Timer, MAX_TIMERS_PER_RUN, type ClockMode, type ClockOptions, type TimerCallback } from "./clock.js";
export {
  StateRegistry,
  StateError,
  saveComponent,
  restoreComponent,
  findNonPlainState,
  type Snapshottable,
  type SavedState,
  type StateValue,
} from "./snapshottable.js";
export { GUEST_MEMORY, GuestMemoryError, type GuestMemory } from "./guest-memory.js";
export type { Vcpu } from "./vcpu.js";
export {
  Machine,
  createMachine,
  LifecycleError,
  type MachineState,
  type MachineOptions,
  type MachineEvents,
  type StateChange,
  type ResetInfo,
  type StopInfo,
  type BootLoader,
} from "./machine.js";
export {
  LEGACY_PIC,
  X86_CPU_CONTROL,
  type LegacyInterruptController,
  type X86BootState,
  type X86CpuControl,
  type X86SegmentInit,
  type X86TableRegister,
  type X86Register32,
  type X86SegmentName,
} from "./x86-platform.js";
export {
  PCI_BUS,
  PciError,
  PCI_DEVICES_PER_BUS,
  PCI_FUNCTIONS_PER_DEVICE,
  formatPciAddress,
  type PciBus,
  type PciFunction,
  type PciSlot,
  type PciPlugOptions,
  type PciPluggedFunction,
} from "./pci.js";
export {
  PciConfigSpace,
  PCI_COMMAND_IO,
  PCI_COMMAND_MEMORY,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_INTX_DISABLE,
  PCI_CAP_ID_MSI,
  PCI_CAP_ID_VENDOR,
  PCI_CAP_ID_MSIX,
  type PciBarKind,
  type PciBarDefinition,
  type PciConfigSpaceOptions,
  type PciConfigHost,
  type PciMsiOptions,
  type PciMsixOptions,
} from "./pci-config-space.js";
