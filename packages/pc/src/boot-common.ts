import { ServiceKey, TypevisorError, X86_CPU_CONTROL, type GuestMemory, type Machine, type X86BootState, type X86SegmentInit } from "@typevisor/hv-core";
import { pcMemoryLayout, type E820Entry, type PcMemoryLayout } from "./memory-map.js";

/**
 * A kernel image or boot parameter the loader cannot use: names the field
 * and the file offset (when there is one), so a broken or hostile image is
 * reported precisely.
 */
export class BootImageError extends TypevisorError {
  /** The header field (or structure) at fault. */
  readonly field: string;
  /** File offset of that field, or -1 when it is not in the file. */
  readonly offset: number;

  /**
   * @param code - stable code, e.g. `BZIMAGE_MAGIC`
   * @param field - the field at fault
   * @param offset - its file offset, or -1
   * @param message - what is wrong
   */
  constructor(code: string, field: string, offset: number, message: string) {
    super(code, offset >= 0 ? `${message} (field ${field} at offset 0x${offset.toString(16)})` : `${message} (${field})`);
    this.field = field;
    this.offset = offset;
  }
}

/** What the PC platform offers loaders: its memory map and firmware tables. */
export interface PcPlatformInfo {
  /** The physical memory layout (e820 map, end of low RAM). */
  readonly layout: PcMemoryLayout;
  /**
   * Writes the firmware tables the guest expects to find (ACPI tables in the
   * BIOS area, BIOS data area) and assigns PCI resources as firmware would.
   * Loaders call it before loading, and again on every reset.
   * @returns where the RSDP is, for `boot_params.acpi_rsdp_addr`
   */
  prepareBoot(): {
    /** Physical address of the RSDP, if the platform has ACPI tables. */
    rsdp: number | undefined;
  };
}

/** Service key of the PC platform's loader interface. */
export const PC_PLATFORM = new ServiceKey<PcPlatformInfo>("pc-platform");

/** Where the loaders put their low-memory structures (all below 640 KiB). */
export const BOOT_GDT = 0x6000;
/** Linux zero page (struct boot_params). */
export const BOOT_ZERO_PAGE = 0x7000;
/** Multiboot information area start. */
export const MULTIBOOT_INFO = 0x8000;
/** Multiboot information area end (exclusive). */
export const MULTIBOOT_INFO_END = 0x20000;
/** Linux command line. */
export const BOOT_CMDLINE = 0x20000;
/** Room for the command line. */
export const BOOT_CMDLINE_MAX = 0x10000;

/** Selectors of the flat boot GDT: Linux's __BOOT_CS and __BOOT_DS (Documentation/arch/x86/boot.rst, 32-bit protocol). */
export const BOOT_CS = 0x10;
/** Flat data selector. */
export const BOOT_DS = 0x18;

/** Memory layout and firmware prepared for a boot: from the PC platform when present, else the standard layout without ACPI. */
export function prepareFirmware(machine: Machine): { layout: PcMemoryLayout; rsdp: number | undefined } {
  const platform = machine.services.find(PC_PLATFORM);
  if (platform) return { layout: platform.layout, rsdp: platform.prepareBoot().rsdp };
  return { layout: pcMemoryLayout(machine.ramSize), rsdp: undefined };
}

/** Copies `data` to `gpa`, failing with a clear error when the range is not RAM. */
export function writeRam(memory: GuestMemory, gpa: number, data: Uint8Array, what: string): void {
  if (!memory.isRam(gpa, Math.max(1, data.length))) {
    throw new TypevisorError("BOOT_MEMORY", `${what} needs RAM at 0x${gpa.toString(16)}-0x${(gpa + data.length - 1).toString(16)}, which this machine does not have (${Math.floor(memory.ramSize / 1048576)} MiB of RAM)`);
  }
  memory.write(gpa, data);
}

/** Fills `length` bytes at `gpa` with zeros (BSS), in bounded chunks. */
export function zeroRam(memory: GuestMemory, gpa: number, length: number, what: string): void {
  if (length <= 0) return;
  if (!memory.isRam(gpa, length)) throw new TypevisorError("BOOT_MEMORY", `${what} needs RAM at 0x${gpa.toString(16)} (+${length} bytes), which this machine does not have`);
  const chunk = new Uint8Array(Math.min(length, 1 << 20));
  for (let off = 0; off < length; off += chunk.length) memory.write(gpa + off, chunk.subarray(0, Math.min(chunk.length, length - off)));
}

const flat = (selector: number, access: number): X86SegmentInit => ({ selector, base: 0, limit: 0xffffffff, access, flags: 0xc });

/**
 * Writes the flat GDT (null, null, 4 GiB code at 0x10, 4 GiB data at 0x18)
 * and returns a protected-mode entry state with those segments loaded,
 * interrupts off, paging off.
 */
export function flatProtectedModeState(memory: GuestMemory, eip: number, regs: X86BootState["regs"]): X86BootState {
  const gdt = new Uint8Array(32);
  const dv = new DataView(gdt.buffer);
  // Descriptor: limit 0xFFFFF with G=1 and D=1 (flags 0xC), base 0; access 0x9B (code, r/x, accessed) / 0x93 (data, r/w, accessed).
  dv.setUint32(16, 0x0000ffff, true);
  dv.setUint32(20, 0x00cf9b00, true);
  dv.setUint32(24, 0x0000ffff, true);
  dv.setUint32(28, 0x00cf9300, true);
  writeRam(memory, BOOT_GDT, gdt, "boot GDT");
  const data = flat(BOOT_DS, 0x93);
  return {
    eip,
    eflags: 0x2,
    regs,
    segments: { cs: flat(BOOT_CS, 0x9b), ds: data, es: data, ss: data, fs: data, gs: data },
    gdtr: { base: BOOT_GDT, limit: 31 },
    idtr: { base: 0, limit: 0 },
    cr0: 0x11, // PE | ET
    cr3: 0,
    cr4: 0,
  };
}

/** Hands `state` to vCPU 0 through the CPU plugin. */
export function startBsp(machine: Machine, state: X86BootState): void {
  const cpu = machine.services.find(X86_CPU_CONTROL);
  if (!cpu) throw new TypevisorError("BOOT_NO_CPU", "no x86 CPU plugin provides the boot interface (add an x86 CPU plugin before booting)");
  cpu.applyBootState(0, state);
}

/** Writes the BIOS data area fields guests read without a BIOS: base memory size and the EBDA segment. */
export function writeBiosDataArea(memory: GuestMemory, layout: PcMemoryLayout): void {
  const bda = new Uint8Array(4);
  const dv = new DataView(bda.buffer);
  dv.setUint16(0, layout.ebda >> 4, true); // 0x40E: EBDA segment
  writeRam(memory, 0x40e, bda.subarray(0, 2), "BIOS data area");
  dv.setUint16(0, layout.ebda >> 10, true); // 0x413: conventional memory in KiB
  writeRam(memory, 0x413, bda.subarray(0, 2), "BIOS data area");
  writeRam(memory, layout.ebda, new Uint8Array([1]), "EBDA"); // EBDA size in KiB
}

/** Encodes e820 entries as 20-byte records (base u64, length u64, type u32). */
export function encodeE820(entries: readonly E820Entry[], withSize = false): Uint8Array {
  const rec = withSize ? 24 : 20;
  const out = new Uint8Array(entries.length * rec);
  const dv = new DataView(out.buffer);
  entries.forEach((e, i) => {
    let o = i * rec;
    if (withSize) {
      dv.setUint32(o, 20, true);
      o += 4;
    }
    dv.setUint32(o, e.addr % 2 ** 32, true);
    dv.setUint32(o + 4, Math.floor(e.addr / 2 ** 32), true);
    dv.setUint32(o + 8, e.size % 2 ** 32, true);
    dv.setUint32(o + 12, Math.floor(e.size / 2 ** 32), true);
    dv.setUint32(o + 16, e.type, true);
  });
  return out;
}
