/**
 * `@typevisor/pc`: the emulated PC platform of typevisor. Legacy devices
 * (8259 PIC pair, 8254 PIT, MC146818 RTC/CMOS, 16550A UART, i8042), the I/O
 * APIC, the PCI host bridge, ACPI tables and the e820 map, QEMU's debug-exit
 * and debugcon ports, the Linux and multiboot loaders, and an initramfs
 * builder.
 *
 * @packageDocumentation
 */
export { Pic8259Pair } from "./pic-8259.js";
export { Pit8254, PIT_HZ, pitTicks, pitNs } from "./pit-8254.js";
export { RtcCmos, CMOS, type CmosMemoryInfo } from "./rtc-cmos.js";
export { Uart16550, COM_PORTS, UART_HOST_QUEUE_LIMIT, type ComPort } from "./uart-16550.js";
export { MemorySerial, streamSerial, type SerialBackend, type ByteSink, type ByteSource } from "./serial-backend.js";
export { fileSerial, type FileSerial } from "./serial-file.js";
export { I8042, type I8042Wiring } from "./i8042.js";
export { debugExitHandler, debugExitStatus, debugconHandler, Port92, DEBUG_EXIT_PORT, DEBUGCON_PORT } from "./debug-devices.js";
export { AcpiPm, PM_TIMER_HZ, SLP_TYP_S5, PM1_TMR, PM1_PWRBTN, PM1_WAK, DEFAULT_PM_PORTS, type AcpiPmPorts, type AcpiPmWiring } from "./acpi-pm.js";
export { IoApic, IOAPIC_BASE, IOAPIC_PINS } from "./ioapic.js";
export { PcInterruptRouter, isaIrqToGsi, pciIntxGsi, PCI_INTX_GSI_BASE } from "./interrupt-router.js";
export { PciHost, ECAM_BASE, ECAM_SIZE, DEFAULT_PCI_WINDOWS, type PciResourceWindows, type PciHostWiring } from "./pci-host.js";
export { pcMemoryLayout, E820, MIN_PC_RAM, LAPIC_BASE, BIOS_AREA, EBDA_BASE, type E820Entry, type PcMemoryLayout } from "./memory-map.js";
export { buildAcpiTables, buildDsdtAml, acpiChecksum, ACPI_RESET_PORT, ACPI_RESET_VALUE, type AcpiTableOptions, type AcpiTables, type AcpiTableLocation } from "./acpi-tables.js";
export {
  BootImageError,
  PC_PLATFORM,
  BOOT_CS,
  BOOT_DS,
  BOOT_GDT,
  BOOT_ZERO_PAGE,
  BOOT_CMDLINE,
  MULTIBOOT_INFO,
  type PcPlatformInfo,
} from "./boot-common.js";
export { linuxBoot, loadLinux, parseBzImage, type BzImageInfo, type LinuxBootOptions, type LinuxBootPlan } from "./linux-loader.js";
export {
  multibootBoot,
  loadMultiboot,
  parseMultiboot,
  MULTIBOOT_HEADER_MAGIC,
  MULTIBOOT_BOOTLOADER_MAGIC,
  type MultibootImage,
  type MultibootSegment,
  type MultibootModule,
  type MultibootOptions,
  type MultibootPlan,
} from "./multiboot-loader.js";
export {
  InitramfsBuilder,
  InitramfsError,
  addSpec,
  parseCpio,
  cpioType,
  gzip,
  type InitramfsEntry,
  type InitramfsEntryBase,
  type InitramfsFile,
  type InitramfsDir,
  type InitramfsSymlink,
  type InitramfsNode,
  type InitramfsSpecial,
  type CpioMember,
} from "./initramfs.js";
export {
  fetchDebianGuest,
  cacheDir,
  busyboxInitramfs,
  addDirectory,
  initramfsFromPath,
  GuestFetchError,
  GUEST_INIT_SCRIPT,
  type DebianGuest,
  type FetchDebianGuestOptions,
  type BusyboxInitramfsOptions,
} from "./guest-debian.js";
export { moduleClosure, moduleInfo, indexModules, aliasIndex, KernelModuleError, type KernelModule } from "./kernel-modules.js";
export { pcPlatform, type PcPlatformOptions, type PcDevices, type PcPlatformPlugin } from "./pc-platform.js";
