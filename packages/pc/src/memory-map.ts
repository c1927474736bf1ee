import { TypevisorError } from "@typevisor/hv-core";
import { ECAM_BASE, ECAM_SIZE } from "./pci-host.js";
import { IOAPIC_BASE } from "./ioapic.js";

/** e820 address range types (ACPI 6.5 §15, Table 15.1). */
export const E820 = {
  /** Usable RAM. */
  RAM: 1,
  /** Reserved: not usable by the OS. */
  RESERVED: 2,
  /** ACPI tables, reclaimable after they are read. */
  ACPI: 3,
  /** ACPI non-volatile storage. */
  NVS: 4,
} as const;

/** One e820 entry. */
export interface E820Entry {
  /** First physical address. */
  addr: number;
  /** Length in bytes. */
  size: number;
  /** Range type ({@link E820}). */
  type: number;
}

/** Where things live in the PC's physical address space. */
export interface PcMemoryLayout {
  /** The e820 map given to the guest, sorted by address. */
  e820: E820Entry[];
  /** End of RAM below 4 GiB (RAM is [0, lowEnd) minus the legacy holes). */
  lowEnd: number;
  /** Bytes of RAM placed at 4 GiB and up. */
  highSize: number;
  /** Start of the extended BIOS data area (the kilobyte below 640 KiB). */
  ebda: number;
}

/** Lowest RAM size the PC layout supports: the first MiB plus room for a kernel. */
export const MIN_PC_RAM = 2 * 1024 * 1024;
/** The local APIC's default physical address. */
export const LAPIC_BASE = 0xfee00000;
/** Start of the BIOS area where the RSDP must be found (ACPI 6.5 §5.2.5.1). */
export const BIOS_AREA = 0xe0000;
/** Extended BIOS data area: the last KiB of conventional memory. */
export const EBDA_BASE = 0x9fc00;

/**
 * The PC memory map for `ramSize` bytes of RAM: conventional memory up to
 * 639 KiB, the EBDA, the VGA hole and BIOS area (0xA0000-0xFFFFF, with the
 * ACPI tables in 0xE0000-0xFFFFF reserved), RAM from 1 MiB up to the ECAM
 * window at 0xB0000000, then the PCI hole, the I/O APIC and local APIC
 * pages, and the rest of RAM from 4 GiB.
 *
 * The memory plugin must back [0, lowEnd) and [4 GiB, 4 GiB + highSize) with
 * RAM, including 0xE0000-0xFFFFF, where the ACPI tables are written.
 * @throws TypevisorError `PC_RAM_SIZE` below {@link MIN_PC_RAM}
 */
export function pcMemoryLayout(ramSize: number): PcMemoryLayout {
  if (!Number.isSafeInteger(ramSize) || ramSize < MIN_PC_RAM) {
    throw new TypevisorError("PC_RAM_SIZE", `a PC needs at least ${MIN_PC_RAM / 1048576} MiB of RAM, got ${ramSize} bytes`);
  }
  const lowEnd = Math.min(ramSize, ECAM_BASE);
  const highSize = ramSize - lowEnd;
  const e820: E820Entry[] = [
    { addr: 0, size: EBDA_BASE, type: E820.RAM },
    { addr: EBDA_BASE, size: 0xa0000 - EBDA_BASE, type: E820.RESERVED },
    { addr: BIOS_AREA, size: 0x100000 - BIOS_AREA, type: E820.RESERVED },
    { addr: 0x100000, size: lowEnd - 0x100000, type: E820.RAM },
    { addr: ECAM_BASE, size: ECAM_SIZE, type: E820.RESERVED },
    { addr: IOAPIC_BASE, size: 0x1000, type: E820.RESERVED },
    { addr: LAPIC_BASE, size: 0x1000, type: E820.RESERVED },
  ];
  if (highSize > 0) e820.push({ addr: 2 ** 32, size: highSize, type: E820.RAM });
  return { e820, lowEnd, highSize, ebda: EBDA_BASE };
}
