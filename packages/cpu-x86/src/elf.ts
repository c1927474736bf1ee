import { TypevisorError } from "@typevisor/hv-core";
import type { PhysicalMemory } from "@typevisor/mmu-ept";

/** Raised for a file that is not a loadable 32-bit little-endian x86 ELF executable; names the field and offset. */
export class ElfError extends TypevisorError {}

/** One PT_LOAD segment of an ELF file. */
export interface ElfSegment {
  /** Virtual address (p_vaddr). */
  vaddr: number;
  /** Physical address (p_paddr), where the loader puts it. */
  paddr: number;
  /** The bytes from the file (p_filesz of them). */
  data: Uint8Array;
  /** Size in memory (p_memsz); the part beyond the file bytes is zero-filled (bss). */
  memsz: number;
}

/** A parsed 32-bit ELF executable. */
export interface ElfImage {
  /** Entry point (e_entry). */
  entry: number;
  /** The PT_LOAD segments. */
  segments: ElfSegment[];
}

/** Upper bound on program headers we accept (the file is untrusted). */
const MAX_PHDRS = 256;

/**
 * Parses a static i386 ELF executable (ELFCLASS32, little-endian, EM_386)
 * and, when `memory` is given, loads its PT_LOAD segments at their physical
 * addresses (zero-filling the bss part).
 * @throws ElfError naming the bad field and its file offset
 */
export function loadElf32(bytes: Uint8Array, memory?: PhysicalMemory): ElfImage {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const need = (off: number, len: number, what: string): void => {
    if (off < 0 || off + len > bytes.length) throw new ElfError("ELF_TRUNCATED", `ELF ${what} at offset ${off} (+${len}) is past the end of the ${bytes.length}-byte file`);
  };
  need(0, 52, "header");
  if (dv.getUint32(0) !== 0x7f454c46) throw new ElfError("ELF_MAGIC", "not an ELF file (bad magic at offset 0)");
  if (bytes[4] !== 1) throw new ElfError("ELF_CLASS", `EI_CLASS at offset 4 is ${bytes[4]}, not ELFCLASS32`);
  if (bytes[5] !== 1) throw new ElfError("ELF_DATA", `EI_DATA at offset 5 is ${bytes[5]}, not little-endian`);
  const machine = dv.getUint16(18, true);
  if (machine !== 3) throw new ElfError("ELF_MACHINE", `e_machine at offset 18 is ${machine}, not EM_386`);
  const entry = dv.getUint32(24, true);
  const phoff = dv.getUint32(28, true);
  const phentsize = dv.getUint16(42, true);
  const phnum = dv.getUint16(44, true);
  if (phnum > MAX_PHDRS) throw new ElfError("ELF_PHNUM", `e_phnum at offset 44 is ${phnum}, more than ${MAX_PHDRS}`);
  if (phentsize < 32) throw new ElfError("ELF_PHENTSIZE", `e_phentsize at offset 42 is ${phentsize}, less than 32`);
  const segments: ElfImage["segments"] = [];
  for (let i = 0; i < phnum; i++) {
    const o = phoff + i * phentsize;
    need(o, 32, `program header ${i}`);
    if (dv.getUint32(o, true) !== 1) continue; // PT_LOAD only
    const offset = dv.getUint32(o + 4, true);
    const vaddr = dv.getUint32(o + 8, true);
    const paddr = dv.getUint32(o + 12, true);
    const filesz = dv.getUint32(o + 16, true);
    const memsz = dv.getUint32(o + 20, true);
    if (filesz > memsz) throw new ElfError("ELF_SEGMENT", `program header ${i} (offset ${o}) has p_filesz ${filesz} > p_memsz ${memsz}`);
    need(offset, filesz, `segment ${i} data`);
    segments.push({ vaddr, paddr, data: bytes.subarray(offset, offset + filesz), memsz });
  }
  if (memory) {
    for (const s of segments) {
      if (!memory.isRam(s.paddr, Math.max(1, s.memsz))) throw new ElfError("ELF_ADDRESS", `segment at 0x${s.paddr.toString(16)} (+${s.memsz}) is outside guest RAM`);
      memory.write(s.paddr, s.data);
      if (s.memsz > s.data.length) memory.write(s.paddr + s.data.length, new Uint8Array(s.memsz - s.data.length));
    }
  }
  return { entry, segments };
}
