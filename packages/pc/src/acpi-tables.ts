import { TypevisorError } from "@typevisor/hv-core";
import { DEFAULT_PM_PORTS, SLP_TYP_S5, type AcpiPmPorts } from "./acpi-pm.js";
import * as aml from "./aml.js";
import { IOAPIC_BASE } from "./ioapic.js";
import { pciIntxGsi } from "./interrupt-router.js";
import { CMOS } from "./rtc-cmos.js";
import { LAPIC_BASE } from "./memory-map.js";
import { DEFAULT_PCI_WINDOWS, ECAM_BASE, ECAM_SIZE, type PciResourceWindows } from "./pci-host.js";

/** What the ACPI tables describe. */
export interface AcpiTableOptions {
  /** Number of CPUs; local APIC IDs and processor UIDs are 0..cpus-1. */
  cpus: number;
  /** I/O APIC ID; default `cpus`, the first ID after the local APICs' (32-bit Linux renumbers a colliding I/O APIC). */
  ioapicId?: number;
  /** PM1a event/control and PM timer ports. */
  pmPorts?: AcpiPmPorts;
  /** ISA IRQ of the SCI (default 9). */
  sciIrq?: number;
  /** ECAM window (MCFG); `null` leaves MCFG out. */
  ecam?: {
    /** Physical base of the window. */
    base: number;
    /** Size in bytes (1 MiB per bus). */
    size: number;
  } | null;
  /** PCI resource windows, reported in the root bridge's `_CRS`. */
  pciWindows?: PciResourceWindows;
  /** Six-character OEM ID (default `"TYPEVS"`). */
  oemId?: string;
}

/** The tables as one blob, ready to copy to guest memory at `base`. */
export interface AcpiTables {
  /** Guest-physical address the blob is built for. */
  base: number;
  /** The bytes. */
  bytes: Uint8Array;
  /** Address of the RSDP (`base`). */
  rsdp: number;
  /** Address and length of each table by signature (`"DSDT"`, `"FACP"`, ...). */
  tables: Record<string, AcpiTableLocation>;
}

/** Where one table sits. */
export interface AcpiTableLocation {
  /** Guest-physical address. */
  address: number;
  /** Length in bytes. */
  length: number;
}

/** Port and value of the FADT reset register: the reset control register at 0xCF9, "hard reset" (Intel ICH). */
export const ACPI_RESET_PORT = 0xcf9;
/** Value written to the reset register. */
export const ACPI_RESET_VALUE = 0x06;

const CREATOR_ID = "TVPC";

/** Sum of `bytes` modulo 256; a valid ACPI table sums to 0 (ACPI 6.5 §5.2.6). */
export function acpiChecksum(bytes: Uint8Array): number {
  let s = 0;
  for (const b of bytes) s = (s + b) & 0xff;
  return s;
}

class Writer {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  constructor(length: number) {
    this.bytes = new Uint8Array(length);
    this.view = new DataView(this.bytes.buffer);
  }
  ascii(off: number, s: string, len: number): void {
    for (let i = 0; i < len; i++) this.bytes[off + i] = i < s.length ? s.charCodeAt(i) : 0x20;
  }
  u8(off: number, v: number): void {
    this.view.setUint8(off, v);
  }
  u16(off: number, v: number): void {
    this.view.setUint16(off, v, true);
  }
  u32(off: number, v: number): void {
    this.view.setUint32(off, v >>> 0, true);
  }
  u64(off: number, v: number): void {
    this.view.setUint32(off, v % 2 ** 32, true);
    this.view.setUint32(off + 4, Math.floor(v / 2 ** 32), true);
  }
  /** Generic Address Structure (ACPI 6.5 §5.2.3.2). */
  gas(off: number, space: number, bitWidth: number, accessSize: number, address: number): void {
    this.u8(off, space);
    this.u8(off + 1, bitWidth);
    this.u8(off + 2, 0);
    this.u8(off + 3, accessSize);
    this.u64(off + 4, address);
  }
}

/** A table with the standard 36-byte header (ACPI 6.5 §5.2.6), checksummed. */
function table(signature: string, revision: number, body: Uint8Array | number[], oemId: string): Uint8Array {
  const len = 36 + body.length;
  const w = new Writer(len);
  w.ascii(0, signature, 4);
  w.u32(4, len);
  w.u8(8, revision);
  w.ascii(10, oemId, 6);
  w.ascii(16, `TV${signature}`, 8);
  w.u32(24, 1);
  w.ascii(28, CREATOR_ID, 4);
  w.u32(32, 1);
  w.bytes.set(body, 36);
  w.u8(9, (256 - acpiChecksum(w.bytes)) & 0xff);
  return w.bytes;
}

/** The DSDT's AML: `\_S5`, and the PCI root bridge with its resources and INTx routing. */
export function buildDsdtAml(windows: PciResourceWindows = DEFAULT_PCI_WINDOWS): number[] {
  const crs = [
    ...aml.wordAddressSpace(2, 0x00, 0xff),
    ...aml.ioPort(0xcf8, 0xcf8, 1, 8),
    ...aml.wordAddressSpace(1, 0x0000, 0x0cf7),
    ...aml.wordAddressSpace(1, 0x0d00, 0xffff),
    ...aml.dwordMemory(0x000a0000, 0x000bffff, true),
    ...aml.dwordMemory(windows.mem[0], windows.mem[1] - 1, false),
    ...aml.endTag(),
  ];
  const prt: aml.Aml[] = [];
  for (let dev = 0; dev < 32; dev++) {
    for (let pin = 0; pin < 4; pin++) {
      // Package { address (device << 16 | 0xFFFF: any function), pin (0 = INTA), source (none: GSI), GSI }
      prt.push(aml.pkg([aml.integer(dev * 0x10000 + 0xffff), aml.integer(pin), aml.integer(0), aml.integer(pciIntxGsi(dev, pin + 1))]));
    }
  }
  return [
    ...aml.name("\\_S5", aml.pkg([aml.integer(SLP_TYP_S5), aml.integer(SLP_TYP_S5), aml.integer(0), aml.integer(0)])),
    ...aml.scope(
      "\\_SB",
      aml.device("PCI0", [
        ...aml.name("_HID", aml.eisaId("PNP0A03")),
        ...aml.name("_UID", aml.integer(0)),
        ...aml.name("_BBN", aml.integer(0)),
        ...aml.name("_CRS", aml.buffer(crs)),
        ...aml.name("_PRT", aml.pkg(prt)),
      ]),
    ),
  ];
}

/**
 * Builds RSDP, RSDT, XSDT, FADT (with FACS and DSDT), MADT and MCFG for the
 * PC platform, laid out from `base` (which must be 16-byte aligned, and in
 * 0xE0000-0xFFFFF for the RSDP to be found by scanning; ACPI 6.5 §5.2.5.1).
 *
 * - FADT (revision 6): SCI on IRQ 9, no SMI command port (the platform is
 *   always in ACPI mode), PM1a event/control blocks and the PM timer in port
 *   I/O, the century CMOS byte, IAPC_BOOT_ARCH "legacy devices, no 8042, no
 *   VGA", the reset register (0xCF9 ← 0x06), a fixed power button.
 * - MADT: one local APIC per CPU, the I/O APIC with GSI base 0, overrides
 *   IRQ 0 → GSI 2 (edge) and IRQ 9 → GSI 9 (level, active high) as QEMU
 *   reports them, and LINT1 as NMI on every CPU.
 * - DSDT: `\_S5` and the PCI root bridge (PNP0A03) with `_CRS` and `_PRT`.
 * - MCFG: the ECAM window for buses 0..255.
 */
export function buildAcpiTables(base: number, options: AcpiTableOptions): AcpiTables {
  const cpus = options.cpus;
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > 255) throw new TypevisorError("ACPI_CONFIG", `ACPI tables: ${cpus} CPUs is not 1..255`);
  if (base % 16 !== 0) throw new TypevisorError("ACPI_CONFIG", `ACPI tables: base 0x${base.toString(16)} is not 16-byte aligned`);
  const oem = options.oemId ?? "TYPEVS";
  const pm = options.pmPorts ?? DEFAULT_PM_PORTS;
  const sci = options.sciIrq ?? 9;
  const ecam = options.ecam === undefined ? { base: ECAM_BASE, size: ECAM_SIZE } : options.ecam;
  const ioapicId = options.ioapicId ?? cpus;

  const placed: { sig: string; bytes: Uint8Array; address: number }[] = [];
  let cursor = base + 36;
  const place = (sig: string, bytes: Uint8Array, align = 16): number => {
    cursor = Math.ceil(cursor / align) * align;
    const address = cursor;
    placed.push({ sig, bytes, address });
    cursor += bytes.length;
    return address;
  };

  // FACS (ACPI 6.5 §5.2.10): no checksum, 64-byte aligned.
  const facs = new Writer(64);
  facs.ascii(0, "FACS", 4);
  facs.u32(4, 64);
  facs.u8(32, 2); // version
  const facsAddr = place("FACS", facs.bytes, 64);

  const dsdtAddr = place("DSDT", table("DSDT", 2, buildDsdtAml(options.pciWindows), oem));

  const fadt = new Writer(276 - 36);
  const F = (off: number): number => off - 36; // offsets below are the spec's, from the table start
  fadt.u32(F(36), facsAddr);
  fadt.u32(F(40), dsdtAddr);
  fadt.u8(F(45), 0); // preferred PM profile: unspecified
  fadt.u16(F(46), sci);
  fadt.u32(F(48), 0); // SMI_CMD: none, hardware is always in ACPI mode
  fadt.u32(F(56), pm.pm1aEvt);
  fadt.u32(F(64), pm.pm1aCnt);
  fadt.u32(F(76), pm.pmTmr);
  fadt.u8(F(88), 4); // PM1_EVT_LEN
  fadt.u8(F(89), 2); // PM1_CNT_LEN
  fadt.u8(F(91), 4); // PM_TMR_LEN
  fadt.u16(F(96), 0x0fff); // P_LVL2_LAT > 100: C2 not supported
  fadt.u16(F(98), 0x0fff); // P_LVL3_LAT > 1000: C3 not supported
  fadt.u8(F(108), CMOS.CENTURY);
  fadt.u16(F(109), 0x0001 | 0x0004); // IAPC_BOOT_ARCH: LEGACY_DEVICES, VGA not present (no 8042 bit)
  // Flags: WBINVD, PROC_C1, SLP_BUTTON (no sleep button), RESET_REG_SUP. PWR_BUTTON clear: fixed power button.
  fadt.u32(F(112), 0x0001 | 0x0004 | 0x0020 | 0x0400);
  fadt.gas(F(116), 1, 8, 1, ACPI_RESET_PORT);
  fadt.u8(F(128), ACPI_RESET_VALUE);
  fadt.u8(F(131), 3); // FADT minor version (6.3)
  fadt.u64(F(132), facsAddr);
  fadt.u64(F(140), dsdtAddr);
  fadt.gas(F(148), 1, 32, 2, pm.pm1aEvt);
  fadt.gas(F(172), 1, 16, 2, pm.pm1aCnt);
  fadt.gas(F(208), 1, 32, 3, pm.pmTmr);
  const fadtAddr = place("FACP", table("FACP", 6, fadt.bytes, oem));

  const madtBody: number[] = [];
  const le = (v: number, n: number): number[] => Array.from({ length: n }, (_, i) => Math.floor(v / 2 ** (8 * i)) & 0xff);
  madtBody.push(...le(LAPIC_BASE, 4), ...le(1, 4)); // local APIC address; PCAT_COMPAT (8259s present)
  for (let i = 0; i < cpus; i++) madtBody.push(0, 8, i, i, ...le(1, 4)); // processor local APIC, enabled
  madtBody.push(1, 12, ioapicId, 0, ...le(IOAPIC_BASE, 4), ...le(0, 4)); // I/O APIC, GSI base 0
  madtBody.push(2, 10, 0, 0, ...le(2, 4), ...le(0x0000, 2)); // ISA IRQ 0 -> GSI 2, conforming
  madtBody.push(2, 10, 0, sci, ...le(sci, 4), ...le(0x000d, 2)); // SCI: active high, level
  madtBody.push(4, 6, 0xff, ...le(0, 2), 1); // LINT1 = NMI on all processors
  const madtAddr = place("APIC", table("APIC", 3, madtBody, oem));

  const sdtEntries = [fadtAddr, madtAddr];
  if (ecam) {
    const buses = Math.min(256, Math.floor(ecam.size / 0x100000));
    const mcfg = [...le(0, 8), ...le(ecam.base, 8), ...le(0, 2), 0, buses - 1, ...le(0, 4)];
    sdtEntries.push(place("MCFG", table("MCFG", 1, mcfg, oem)));
  }
  const rsdtAddr = place("RSDT", table("RSDT", 1, sdtEntries.flatMap((a) => le(a, 4)), oem));
  const xsdtAddr = place("XSDT", table("XSDT", 1, sdtEntries.flatMap((a) => le(a, 8)), oem));

  // RSDP (ACPI 6.5 §5.2.5.3): checksum over the first 20 bytes, extended checksum over all 36.
  const rsdp = new Writer(36);
  rsdp.ascii(0, "RSD PTR ", 8);
  rsdp.ascii(9, oem, 6);
  rsdp.u8(15, 2);
  rsdp.u32(16, rsdtAddr);
  rsdp.u32(20, 36);
  rsdp.u64(24, xsdtAddr);
  rsdp.u8(8, (256 - acpiChecksum(rsdp.bytes.subarray(0, 20))) & 0xff);
  rsdp.u8(32, (256 - acpiChecksum(rsdp.bytes)) & 0xff);

  const out = new Uint8Array(cursor - base);
  out.set(rsdp.bytes, 0);
  const tables: Record<string, AcpiTableLocation> = { RSDP: { address: base, length: 36 } };
  for (const p of placed) {
    out.set(p.bytes, p.address - base);
    tables[p.sig] = { address: p.address, length: p.bytes.length };
  }
  return { base, bytes: out, rsdp: base, tables };
}
