import { GUEST_MEMORY, TypevisorError, type BootLoader, type GuestMemory, type Machine } from "@typevisor/hv-core";
import {
  BOOT_CMDLINE,
  BOOT_CMDLINE_MAX,
  BOOT_ZERO_PAGE,
  BootImageError,
  encodeE820,
  flatProtectedModeState,
  prepareFirmware,
  startBsp,
  writeRam,
} from "./boot-common.js";
import type { PcMemoryLayout } from "./memory-map.js";

/** `loadflags` bits (Documentation/arch/x86/boot.rst, "Details of header fields"). */
const LOADED_HIGH = 0x01;
/** `xloadflags` bits. */
const XLF_KERNEL_64 = 0x01;

/** Header fields of a bzImage, as parsed and validated by {@link parseBzImage}. */
export interface BzImageInfo {
  /** Boot protocol version, e.g. 0x020f for 2.15. */
  version: number;
  /** Setup sectors (0 in the file means 4). */
  setupSects: number;
  /** Bytes of real-mode setup code (including the boot sector) that precede the protected-mode kernel. */
  setupSize: number;
  /** Offset of the protected-mode kernel in the file (= `setupSize`). */
  kernelOffset: number;
  /** Length of the protected-mode kernel in the file. */
  kernelSize: number;
  /** `loadflags`. */
  loadflags: number;
  /** `code32_start` as found in the file. */
  code32Start: number;
  /** Highest address an initrd may end at (inclusive), from `initrd_addr_max`. */
  initrdAddrMax: number;
  /** Alignment the kernel must be loaded at (relocatable kernels). */
  kernelAlignment: number;
  /** Whether the kernel can run from any aligned address. */
  relocatable: boolean;
  /** Longest command line, in bytes, without the NUL. */
  cmdlineSize: number;
  /** Preferred load address (protocol 2.10+), 0 when absent. */
  prefAddress: number;
  /** Bytes of memory the kernel needs from its load address while it decompresses (protocol 2.10+). */
  initSize: number;
  /** `xloadflags` (protocol 2.12+). */
  xloadflags: number;
  /** Whether a 64-bit entry point exists at load address + 0x200. */
  has64BitEntry: boolean;
  /** Offset and length of the compressed payload inside the protected-mode kernel (protocol 2.08+). */
  payload:
    | {
        /** Offset inside the protected-mode kernel. */
        offset: number;
        /** Length in bytes. */
        length: number;
        /** Compression recognised from its magic bytes (`gzip`, `xz`, `zstd`, ...). */
        format: string;
      }
    | undefined;
  /** Kernel version string, when the header points at one. */
  kernelVersion: string | undefined;
}

const u8 = (b: Uint8Array, o: number): number => b[o];
const u16 = (b: Uint8Array, o: number): number => b[o] | (b[o + 1] << 8);
const u32 = (b: Uint8Array, o: number): number => (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16) | (b[o + 3] << 24)) >>> 0;
const u64 = (b: Uint8Array, o: number): number => u32(b, o) + u32(b, o + 4) * 2 ** 32;

function payloadFormat(b: Uint8Array): string {
  if (b[0] === 0x1f && (b[1] === 0x8b || b[1] === 0x9e)) return "gzip";
  if (b[0] === 0x42 && b[1] === 0x5a && b[2] === 0x68) return "bzip2";
  if (b[0] === 0x5d && b[1] === 0x00) return "lzma";
  if (b[0] === 0xfd && b[1] === 0x37 && b[2] === 0x7a && b[3] === 0x58 && b[4] === 0x5a) return "xz";
  if (b[0] === 0x89 && b[1] === 0x4c && b[2] === 0x5a && b[3] === 0x4f) return "lzo";
  if (b[0] === 0x02 && b[1] === 0x21 && b[2] === 0x4c && b[3] === 0x18) return "lz4";
  if (b[0] === 0x28 && b[1] === 0xb5 && b[2] === 0x2f && b[3] === 0xfd) return "zstd";
  if (b[0] === 0x7f && b[1] === 0x45 && b[2] === 0x4c && b[3] === 0x46) return "elf";
  return "unknown";
}

/**
 * Parses and validates the setup header of a Linux bzImage (boot protocol
 * 2.02 or newer; Documentation/arch/x86/boot.rst). Every field the loader
 * relies on is range-checked against the file, so a truncated or hostile
 * image fails here with a {@link BootImageError} naming the field and offset.
 */
export function parseBzImage(image: Uint8Array): BzImageInfo {
  const need = (n: number, field: string, offset: number): void => {
    if (image.length < n) throw new BootImageError("BZIMAGE_TRUNCATED", field, offset, `kernel image is ${image.length} bytes, too short to hold its setup header`);
  };
  need(0x268, "setup header", 0x1f1);
  if (u16(image, 0x1fe) !== 0xaa55) throw new BootImageError("BZIMAGE_MAGIC", "boot_flag", 0x1fe, `not a Linux kernel image: boot_flag is 0x${u16(image, 0x1fe).toString(16)}, expected 0xaa55`);
  if (u32(image, 0x202) !== 0x53726448) throw new BootImageError("BZIMAGE_MAGIC", "header", 0x202, `not a Linux boot protocol 2.x image: header magic is not "HdrS"`);
  const version = u16(image, 0x206);
  if (version < 0x0202) throw new BootImageError("BZIMAGE_VERSION", "version", 0x206, `boot protocol ${version >> 8}.${String(version & 0xff).padStart(2, "0")} is too old (2.02 or newer needed for a command line pointer)`);
  const headerEnd = 0x202 + u8(image, 0x201);
  const setupSectsRaw = u8(image, 0x1f1);
  const setupSects = setupSectsRaw === 0 ? 4 : setupSectsRaw;
  const setupSize = (setupSects + 1) * 512;
  // struct setup_header ends before boot_params.edd_mbr_sig_buffer at 0x290 (zero-page.rst).
  if (headerEnd > 0x290) throw new BootImageError("BZIMAGE_FIELD", "jump", 0x201, `setup header would end at 0x${headerEnd.toString(16)}, past the end of struct setup_header (0x290)`);
  if (setupSize >= image.length) throw new BootImageError("BZIMAGE_TRUNCATED", "setup_sects", 0x1f1, `setup_sects says ${setupSize} bytes of setup code, but the image is only ${image.length} bytes`);
  const loadflags = u8(image, 0x211);
  if (!(loadflags & LOADED_HIGH)) throw new BootImageError("BZIMAGE_ZIMAGE", "loadflags", 0x211, "this is a zImage (loaded at 0x10000); only bzImage kernels (LOADED_HIGH) are supported");
  const kernelSize = image.length - setupSize;
  const syssize = version >= 0x0204 ? u32(image, 0x1f4) : u16(image, 0x1f4);
  if (syssize * 16 > kernelSize + 15) {
    throw new BootImageError("BZIMAGE_TRUNCATED", "syssize", 0x1f4, `syssize says ${syssize * 16} bytes of protected-mode code, but only ${kernelSize} follow the setup code (truncated image?)`);
  }
  const code32Start = u32(image, 0x214);
  const initrdAddrMax = version >= 0x0203 ? u32(image, 0x22c) : 0x37ffffff;
  const relocatable = version >= 0x0205 && u8(image, 0x234) !== 0;
  let kernelAlignment = version >= 0x0205 ? u32(image, 0x230) : 0x100000;
  if (relocatable && (kernelAlignment === 0 || (kernelAlignment & (kernelAlignment - 1)) !== 0 || kernelAlignment > 0x40000000)) {
    throw new BootImageError("BZIMAGE_FIELD", "kernel_alignment", 0x230, `kernel_alignment 0x${kernelAlignment.toString(16)} is not a power of two up to 1 GiB`);
  }
  if (!relocatable) kernelAlignment = 0x100000;
  const cmdlineSize = version >= 0x0206 ? u32(image, 0x238) : 255;
  const prefAddress = version >= 0x020a ? u64(image, 0x258) : 0;
  const initSize = version >= 0x020a ? u32(image, 0x260) : 0;
  const xloadflags = version >= 0x020c ? u16(image, 0x236) : 0;
  let payload: BzImageInfo["payload"];
  if (version >= 0x0208) {
    const offset = u32(image, 0x248);
    const length = u32(image, 0x24c);
    if (length !== 0) {
      if (offset + length > kernelSize) throw new BootImageError("BZIMAGE_FIELD", "payload_offset", 0x248, `payload (offset 0x${offset.toString(16)}, ${length} bytes) lies outside the ${kernelSize}-byte protected-mode kernel`);
      payload = { offset, length, format: payloadFormat(image.subarray(setupSize + offset, setupSize + offset + Math.min(8, length))) };
    }
  }
  let kernelVersion: string | undefined;
  const kvOff = u16(image, 0x20e);
  if (kvOff !== 0 && kvOff + 0x200 < setupSize) {
    const start = kvOff + 0x200;
    let end = start;
    while (end < setupSize && end - start < 256 && image[end] !== 0) end++;
    kernelVersion = new TextDecoder("latin1").decode(image.subarray(start, end));
  }
  return {
    version,
    setupSects,
    setupSize,
    kernelOffset: setupSize,
    kernelSize,
    loadflags,
    code32Start,
    initrdAddrMax,
    kernelAlignment,
    relocatable,
    cmdlineSize,
    prefAddress,
    initSize,
    xloadflags,
    has64BitEntry: (xloadflags & XLF_KERNEL_64) !== 0,
    payload,
    kernelVersion,
  };
}

/** Options of {@link linuxBoot}. */
export interface LinuxBootOptions {
  /** The bzImage. */
  kernel: Uint8Array;
  /** The initial RAM disk (cpio archive, possibly compressed), if any. */
  initrd?: Uint8Array;
  /** The kernel command line, e.g. `"console=ttyS0"`. */
  cmdline?: string;
}

/** Where a Linux boot put things; returned by {@link loadLinux} for tests and tools. */
export interface LinuxBootPlan {
  /** The parsed header. */
  info: BzImageInfo;
  /** Physical address of the protected-mode kernel (and the 32-bit entry point). */
  kernelAddress: number;
  /** Physical address and size of the initrd, or undefined. */
  initrd:
    | {
        /** Physical address. */
        address: number;
        /** Size in bytes. */
        size: number;
      }
    | undefined;
  /** Address of the zero page (boot_params). */
  bootParams: number;
  /** Address of the command line. */
  cmdline: number;
}

const align = (v: number, a: number): number => Math.ceil(v / a) * a;

/**
 * Places a bzImage, its initrd and command line in guest memory and builds
 * `boot_params` (the zero page; Documentation/arch/x86/zero-page.rst): the
 * setup header copied from the image and completed by the loader, the e820
 * map, and the RSDP address. Returns the plan; does not touch the CPU.
 * @throws BootImageError for an unusable image; TypevisorError `BOOT_MEMORY` when RAM is too small
 */
export function loadLinux(memory: GuestMemory, layout: PcMemoryLayout, options: LinuxBootOptions, rsdp?: number): LinuxBootPlan {
  const image = options.kernel;
  const info = parseBzImage(image);
  const cmdline = new TextEncoder().encode(options.cmdline ?? "");
  if (cmdline.includes(0)) throw new BootImageError("BOOT_CMDLINE", "command line", -1, "the command line contains a NUL byte");
  if (cmdline.length > info.cmdlineSize || cmdline.length >= BOOT_CMDLINE_MAX) {
    throw new BootImageError("BOOT_CMDLINE", "cmdline_size", 0x238, `the command line is ${cmdline.length} bytes; this kernel accepts at most ${info.cmdlineSize}`);
  }
  const lowEnd = layout.lowEnd;
  // Relocatable kernels go where they prefer to run (no self-move); others at 1 MiB (boot.rst, pref_address).
  const needed = Math.max(info.initSize, info.kernelSize);
  let kernelAddress = 0x100000;
  if (info.relocatable && info.prefAddress >= 0x100000 && info.prefAddress % info.kernelAlignment === 0 && info.prefAddress + needed <= lowEnd) kernelAddress = info.prefAddress;
  if (kernelAddress + needed > lowEnd) {
    throw new TypevisorError("BOOT_MEMORY", `the kernel needs ${Math.ceil(needed / 1048576)} MiB from 0x${kernelAddress.toString(16)} (init_size) but RAM below 4 GiB ends at 0x${lowEnd.toString(16)}`);
  }
  writeRam(memory, kernelAddress, image.subarray(info.kernelOffset), "the kernel");

  let initrd: LinuxBootPlan["initrd"];
  if (options.initrd && options.initrd.length > 0) {
    const size = options.initrd.length;
    const top = Math.min(info.initrdAddrMax + 1, lowEnd);
    const address = Math.floor((top - size) / 4096) * 4096;
    const kernelEnd = align(kernelAddress + needed, 4096);
    if (address < kernelEnd) {
      throw new TypevisorError("BOOT_MEMORY", `the ${Math.ceil(size / 1048576)} MiB initrd does not fit between the kernel (ends 0x${kernelEnd.toString(16)}) and 0x${top.toString(16)} (initrd_addr_max or end of RAM); give the machine more memory`);
    }
    writeRam(memory, address, options.initrd, "the initrd");
    initrd = { address, size };
  }

  const cmdlineBytes = new Uint8Array(cmdline.length + 1);
  cmdlineBytes.set(cmdline);
  writeRam(memory, BOOT_CMDLINE, cmdlineBytes, "the command line");

  const zp = new Uint8Array(4096);
  const dv = new DataView(zp.buffer);
  // The setup header as the image has it, then the loader's fields (boot.rst, "The real-mode kernel header").
  const headerEnd = 0x202 + image[0x201];
  zp.set(image.subarray(0x1f1, headerEnd), 0x1f1);
  dv.setUint8(0x210, 0xff); // type_of_loader: undefined loader
  dv.setUint8(0x211, info.loadflags & ~0x20); // keep LOADED_HIGH; not QUIET
  dv.setUint32(0x214, kernelAddress, true); // code32_start
  dv.setUint32(0x218, initrd?.address ?? 0, true); // ramdisk_image
  dv.setUint32(0x21c, initrd?.size ?? 0, true); // ramdisk_size
  dv.setUint32(0x228, BOOT_CMDLINE, true); // cmd_line_ptr
  if (info.version >= 0x0209) zp.fill(0, 0x250, 0x258); // setup_data: none
  if (info.version >= 0x020a) dv.setUint32(0x23c, 0, true); // hardware_subarch: default PC
  if (info.version >= 0x020e && rsdp !== undefined) dv.setUint32(0x070, rsdp, true); // acpi_rsdp_addr
  dv.setUint32(0x1e0, Math.floor((lowEnd - 0x100000) / 1024), true); // alt_mem_k
  const e820 = layout.e820.slice(0, 128);
  dv.setUint8(0x1e8, e820.length);
  zp.set(encodeE820(e820), 0x2d0);
  writeRam(memory, BOOT_ZERO_PAGE, zp, "boot_params");
  return { info, kernelAddress, initrd, bootParams: BOOT_ZERO_PAGE, cmdline: BOOT_CMDLINE };
}

/**
 * A {@link BootLoader} for Linux bzImage kernels with the 32-bit boot
 * protocol and no BIOS (boot.rst, "32-bit boot protocol"): the kernel,
 * initrd and command line go into memory, `boot_params` carries the e820
 * map and the RSDP address, and vCPU 0 starts at the protected-mode entry
 * in flat protected mode (CS 0x10, DS/ES/SS 0x18, `esi` = boot_params,
 * `ebx`/`ebp`/`edi` = 0, interrupts off). On every machine reset the loader
 * reloads the kernel, since there is no firmware to do it.
 *
 * @example
 * ```ts
 * await vm.boot(linuxBoot({ kernel, initrd, cmdline: "console=ttyS0" }));
 * ```
 */
export function linuxBoot(options: LinuxBootOptions): BootLoader {
  const info = parseBzImage(options.kernel); // fail before the machine is touched
  const load = (machine: Machine): void => {
    const memory = machine.services.get(GUEST_MEMORY);
    const { layout, rsdp } = prepareFirmware(machine);
    const plan = loadLinux(memory, layout, options, rsdp);
    startBsp(machine, flatProtectedModeState(memory, plan.kernelAddress, { esi: plan.bootParams, ebx: 0, ebp: 0, edi: 0 }));
  };
  return {
    name: `linux${info.kernelVersion ? ` ${info.kernelVersion.split(" ")[0]}` : ""}`,
    load(machine: Machine) {
      load(machine);
      machine.onReset(() => load(machine));
    },
  };
}
