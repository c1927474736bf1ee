import { GUEST_MEMORY, type BootLoader, type GuestMemory, type Machine } from "@typevisor/hv-core";
import {
  BOOT_GDT,
  BootImageError,
  MULTIBOOT_INFO,
  MULTIBOOT_INFO_END,
  encodeE820,
  flatProtectedModeState,
  prepareFirmware,
  startBsp,
  writeRam,
  zeroRam,
} from "./boot-common.js";
import type { PcMemoryLayout } from "./memory-map.js";

/** Multiboot 1 header magic (Multiboot Specification 0.6.96 §3.1.1). */
export const MULTIBOOT_HEADER_MAGIC = 0x1badb002;
/** Value of `eax` when a multiboot kernel starts. */
export const MULTIBOOT_BOOTLOADER_MAGIC = 0x2badb002;

const MAX_SEGMENTS = 64;
const MAX_MODULES = 64;

/** One piece of the kernel to copy into memory. */
export interface MultibootSegment {
  /** Physical destination. */
  address: number;
  /** File offset of the bytes. */
  fileOffset: number;
  /** Bytes copied from the file. */
  fileSize: number;
  /** Bytes occupied in memory (the rest is zeroed: BSS). */
  memSize: number;
}

/** A parsed multiboot kernel: its header and what to load where. */
export interface MultibootImage {
  /** File offset of the multiboot header. */
  headerOffset: number;
  /** Header flags. */
  flags: number;
  /** Whether the a.out kludge (header address fields) was used instead of ELF program headers. */
  aoutKludge: boolean;
  /** Physical entry point. */
  entry: number;
  /** The pieces to load. */
  segments: MultibootSegment[];
}

const u16 = (b: Uint8Array, o: number): number => b[o] | (b[o + 1] << 8);
const u32 = (b: Uint8Array, o: number): number => (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;

/**
 * Finds and validates the multiboot header (first 8192 bytes, 4-byte
 * aligned, checksum) and works out the load plan, either from the ELF32
 * program headers or from the header's address fields (flag bit 16).
 * Unsupported required features (flag bit 2, video mode; unknown bits
 * 3..15) are refused, as the specification demands.
 * @throws BootImageError naming the field and file offset
 */
export function parseMultiboot(image: Uint8Array): MultibootImage {
  let h = -1;
  for (let o = 0; o + 12 <= Math.min(image.length, 8192); o += 4) {
    if (u32(image, o) === MULTIBOOT_HEADER_MAGIC && ((u32(image, o) + u32(image, o + 4) + u32(image, o + 8)) >>> 0) === 0) {
      h = o;
      break;
    }
  }
  if (h < 0) throw new BootImageError("MULTIBOOT_HEADER", "multiboot header", -1, "no multiboot header (magic 0x1BADB002 with a valid checksum) in the first 8192 bytes");
  const flags = u32(image, h + 4);
  if (flags & 0x0004) throw new BootImageError("MULTIBOOT_UNSUPPORTED", "flags", h + 4, "the kernel requires a video mode (flag bit 2), which this loader does not provide");
  if (flags & 0xfff8) throw new BootImageError("MULTIBOOT_UNSUPPORTED", "flags", h + 4, `the kernel requires unknown features (flags 0x${(flags & 0xffff).toString(16)})`);
  if (flags & 0x10000) return { headerOffset: h, flags, aoutKludge: true, ...aoutPlan(image, h) };
  return { headerOffset: h, flags, aoutKludge: false, ...elfPlan(image) };
}

function aoutPlan(image: Uint8Array, h: number): { entry: number; segments: MultibootSegment[] } {
  if (h + 32 > image.length) throw new BootImageError("MULTIBOOT_TRUNCATED", "header_addr", h + 12, "the header's address fields are cut off");
  const headerAddr = u32(image, h + 12);
  const loadAddr = u32(image, h + 16);
  let loadEnd = u32(image, h + 20);
  const bssEnd = u32(image, h + 24);
  const entry = u32(image, h + 28);
  if (loadAddr > headerAddr) throw new BootImageError("MULTIBOOT_FIELD", "load_addr", h + 16, `load_addr 0x${loadAddr.toString(16)} is above header_addr 0x${headerAddr.toString(16)}`);
  const fileOffset = h - (headerAddr - loadAddr);
  if (fileOffset < 0) throw new BootImageError("MULTIBOOT_FIELD", "header_addr", h + 12, "header_addr - load_addr puts the load start before the file start");
  if (loadEnd === 0) loadEnd = loadAddr + (image.length - fileOffset);
  if (loadEnd < loadAddr || loadEnd - loadAddr > image.length - fileOffset) {
    throw new BootImageError("MULTIBOOT_FIELD", "load_end_addr", h + 20, `load_end_addr 0x${loadEnd.toString(16)} asks for more than the file holds`);
  }
  if (bssEnd !== 0 && bssEnd < loadEnd) throw new BootImageError("MULTIBOOT_FIELD", "bss_end_addr", h + 24, `bss_end_addr 0x${bssEnd.toString(16)} is below load_end_addr`);
  const memEnd = bssEnd === 0 ? loadEnd : bssEnd;
  return { entry, segments: [{ address: loadAddr, fileOffset, fileSize: loadEnd - loadAddr, memSize: memEnd - loadAddr }] };
}

function elfPlan(image: Uint8Array): { entry: number; segments: MultibootSegment[] } {
  if (image.length < 52 || u32(image, 0) !== 0x464c457f) throw new BootImageError("MULTIBOOT_FORMAT", "e_ident", 0, "not an ELF file and no address fields (flag bit 16) in the multiboot header");
  if (image[4] !== 1 || image[5] !== 1) throw new BootImageError("MULTIBOOT_FORMAT", "e_ident", 4, "only little-endian ELF32 kernels are supported");
  if (u16(image, 18) !== 3) throw new BootImageError("MULTIBOOT_FORMAT", "e_machine", 18, `ELF machine ${u16(image, 18)} is not i386 (3)`);
  if (u16(image, 16) !== 2) throw new BootImageError("MULTIBOOT_FORMAT", "e_type", 16, "the ELF file is not an executable (ET_EXEC)");
  let entry = u32(image, 24);
  const phoff = u32(image, 28);
  const phentsize = u16(image, 42);
  const phnum = u16(image, 44);
  if (phentsize < 32) throw new BootImageError("MULTIBOOT_FORMAT", "e_phentsize", 42, `program header size ${phentsize} is below 32`);
  if (phnum === 0 || phnum > MAX_SEGMENTS) throw new BootImageError("MULTIBOOT_FORMAT", "e_phnum", 44, `${phnum} program headers (1..${MAX_SEGMENTS} supported)`);
  if (phoff + phnum * phentsize > image.length) throw new BootImageError("MULTIBOOT_TRUNCATED", "e_phoff", 28, "the program headers lie past the end of the file");
  const segments: MultibootSegment[] = [];
  let entryFixed = false;
  for (let i = 0; i < phnum; i++) {
    const p = phoff + i * phentsize;
    if (u32(image, p) !== 1) continue; // PT_LOAD only
    const offset = u32(image, p + 4);
    const vaddr = u32(image, p + 8);
    const paddr = u32(image, p + 12);
    const filesz = u32(image, p + 16);
    const memsz = u32(image, p + 20);
    if (filesz > memsz) throw new BootImageError("MULTIBOOT_FORMAT", `program header ${i} p_filesz`, p + 16, `p_filesz ${filesz} exceeds p_memsz ${memsz}`);
    if (offset + filesz > image.length) throw new BootImageError("MULTIBOOT_TRUNCATED", `program header ${i} p_offset`, p + 4, `segment bytes (0x${offset.toString(16)} + ${filesz}) lie past the end of the file`);
    if (paddr + memsz > 2 ** 32) throw new BootImageError("MULTIBOOT_FORMAT", `program header ${i} p_paddr`, p + 12, "segment extends past 4 GiB");
    if (memsz === 0) continue;
    segments.push({ address: paddr, fileOffset: offset, fileSize: filesz, memSize: memsz });
    // An entry given as a virtual address inside a segment linked elsewhere is translated to physical (as GRUB does).
    if (!entryFixed && vaddr !== paddr && entry >= vaddr && entry < vaddr + memsz) {
      entry = entry - vaddr + paddr;
      entryFixed = true;
    }
  }
  if (segments.length === 0) throw new BootImageError("MULTIBOOT_FORMAT", "program headers", phoff, "the ELF file has no loadable segment");
  return { entry, segments };
}

/** A boot module: a file loaded next to the kernel, with its own command line. */
export interface MultibootModule {
  /** The module's bytes. */
  data: Uint8Array;
  /** Its command line (string) for the info block. */
  cmdline?: string;
}

/** Options of {@link multibootBoot}. */
export interface MultibootOptions {
  /** The kernel (ELF32, or any file with address fields in its multiboot header). */
  kernel: Uint8Array;
  /** The kernel command line. */
  cmdline?: string;
  /** Modules to load after the kernel. */
  modules?: readonly MultibootModule[];
  /** Boot loader name reported to the kernel (default `"typevisor"`). */
  loaderName?: string;
}

/** Where a multiboot boot put things, returned by {@link loadMultiboot}. */
export interface MultibootPlan {
  /** The parsed image. */
  image: MultibootImage;
  /** Address of the multiboot information structure (`ebx`). */
  info: number;
  /** Where each module was loaded. */
  modules: {
    /** First byte's physical address (`mod_start`). */
    start: number;
    /** Address after the last byte (`mod_end`). */
    end: number;
  }[];
}

/**
 * Loads a multiboot kernel and its modules and writes the information
 * structure (§3.3): memory sizes, the memory map (from the e820 map),
 * command line, modules, and boot loader name. The structure and its
 * strings sit in low memory below 0x20000; modules follow the kernel,
 * page-aligned.
 */
export function loadMultiboot(memory: GuestMemory, layout: PcMemoryLayout, options: MultibootOptions): MultibootPlan {
  const image = parseMultiboot(options.kernel);
  const mods = options.modules ?? [];
  if (mods.length > MAX_MODULES) throw new BootImageError("MULTIBOOT_MODULES", "modules", -1, `${mods.length} modules given; at most ${MAX_MODULES} are supported`);
  let kernelEnd = 0;
  for (const s of image.segments) {
    if (s.address < MULTIBOOT_INFO_END && s.address + s.memSize > BOOT_GDT) {
      throw new BootImageError("MULTIBOOT_OVERLAP", "segment address", -1, `kernel segment 0x${s.address.toString(16)}-0x${(s.address + s.memSize - 1).toString(16)} overlaps the loader's area 0x${BOOT_GDT.toString(16)}-0x${(MULTIBOOT_INFO_END - 1).toString(16)}`);
    }
    writeRam(memory, s.address, options.kernel.subarray(s.fileOffset, s.fileOffset + s.fileSize), "the kernel");
    zeroRam(memory, s.address + s.fileSize, s.memSize - s.fileSize, "the kernel's BSS");
    kernelEnd = Math.max(kernelEnd, s.address + s.memSize);
  }

  // Information area: fixed part, memory map, module list, then strings.
  const enc = new TextEncoder();
  const info = new Uint8Array(MULTIBOOT_INFO_END - MULTIBOOT_INFO);
  const dv = new DataView(info.buffer);
  let cursor = 0x80; // after the 116-byte fixed part
  const put = (bytes: Uint8Array, alignTo = 4): number => {
    cursor = Math.ceil(cursor / alignTo) * alignTo;
    if (cursor + bytes.length > info.length) throw new BootImageError("MULTIBOOT_INFO", "command lines", -1, `command lines and module names need more than the ${info.length}-byte information area`);
    info.set(bytes, cursor);
    const at = MULTIBOOT_INFO + cursor;
    cursor += bytes.length;
    return at;
  };
  const str = (s: string): number => {
    const b = enc.encode(s);
    if (b.includes(0)) throw new BootImageError("MULTIBOOT_INFO", "command line", -1, "a command line contains a NUL byte");
    const z = new Uint8Array(b.length + 1);
    z.set(b);
    return put(z, 1);
  };
  let flags = 0x001 | 0x040 | 0x200; // mem_lower/upper, mmap, boot loader name
  dv.setUint32(4, layout.ebda >> 10, true); // mem_lower: KiB below 640 KiB
  dv.setUint32(8, Math.floor((layout.lowEnd - 0x100000) / 1024), true); // mem_upper: KiB from 1 MiB to the first hole
  if (options.cmdline !== undefined) {
    flags |= 0x004;
    dv.setUint32(16, str(options.cmdline), true);
  }
  const mmap = encodeE820(layout.e820, true);
  dv.setUint32(44, mmap.length, true);
  dv.setUint32(48, put(mmap), true);
  dv.setUint32(64, str(options.loaderName ?? "typevisor"), true);

  const placed: { start: number; end: number }[] = [];
  let next = Math.ceil(kernelEnd / 4096) * 4096;
  const modList = new Uint8Array(mods.length * 16);
  const ml = new DataView(modList.buffer);
  mods.forEach((m, i) => {
    const start = next;
    writeRam(memory, start, m.data, `module ${i}`);
    placed.push({ start, end: start + m.data.length });
    ml.setUint32(i * 16, start, true);
    ml.setUint32(i * 16 + 4, start + m.data.length, true);
    ml.setUint32(i * 16 + 8, str(m.cmdline ?? ""), true);
    next = Math.ceil((start + m.data.length) / 4096) * 4096;
  });
  if (mods.length > 0) {
    flags |= 0x008;
    dv.setUint32(20, mods.length, true);
    dv.setUint32(24, put(modList), true);
  }
  dv.setUint32(0, flags, true);
  writeRam(memory, MULTIBOOT_INFO, info.subarray(0, cursor), "the multiboot information");
  return { image, info: MULTIBOOT_INFO, modules: placed };
}

/**
 * A {@link BootLoader} for multiboot (version 1) kernels, such as bare-metal
 * test programs: vCPU 0 starts at the entry point in flat 32-bit protected
 * mode with `eax` = 0x2BADB002 and `ebx` = the information structure, A20
 * enabled, paging and interrupts off (§3.2). The kernel is reloaded on reset.
 */
export function multibootBoot(options: MultibootOptions): BootLoader {
  parseMultiboot(options.kernel); // fail before the machine is touched
  const load = (machine: Machine): void => {
    const memory = machine.services.get(GUEST_MEMORY);
    const { layout } = prepareFirmware(machine);
    const plan = loadMultiboot(memory, layout, options);
    startBsp(machine, flatProtectedModeState(memory, plan.image.entry, { eax: MULTIBOOT_BOOTLOADER_MAGIC, ebx: plan.info }));
  };
  return {
    name: "multiboot",
    load(machine: Machine) {
      load(machine);
      machine.onReset(() => load(machine));
    },
  };
}
