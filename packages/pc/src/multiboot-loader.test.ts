import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describeWithTools, seeded, tempDir } from "@typevisor/test-support";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BootImageError, MULTIBOOT_INFO } from "./boot-common.js";
import { pcMemoryLayout } from "./memory-map.js";
import { MULTIBOOT_HEADER_MAGIC, loadMultiboot, parseMultiboot } from "./multiboot-loader.js";
import { fakeMemory } from "./test-util.js";

const fixtures = join(__dirname, "..", "test", "fixtures");

/** A minimal flat multiboot image with address fields, built in code (for hostile-input tests). */
function flatImage(flags = 0x10000, patch?: (dv: DataView) => void): Uint8Array {
  const img = new Uint8Array(64);
  const dv = new DataView(img.buffer);
  dv.setUint32(0, MULTIBOOT_HEADER_MAGIC, true);
  dv.setUint32(4, flags, true);
  dv.setUint32(8, (-(MULTIBOOT_HEADER_MAGIC + flags)) >>> 0, true);
  dv.setUint32(12, 0x200000, true); // header_addr
  dv.setUint32(16, 0x200000, true); // load_addr
  dv.setUint32(20, 0x200040, true); // load_end_addr
  dv.setUint32(24, 0x201000, true); // bss_end_addr
  dv.setUint32(28, 0x200020, true); // entry
  img.fill(0x90, 32);
  patch?.(dv);
  return img;
}

describe("multiboot header parsing", () => {
  it("uses the header's address fields (flag bit 16)", () => {
    const mb = parseMultiboot(flatImage());
    expect(mb.aoutKludge).toBe(true);
    expect(mb.entry).toBe(0x200020);
    expect(mb.segments).toEqual([{ address: 0x200000, fileOffset: 0, fileSize: 0x40, memSize: 0x1000 }]);
  });

  it("refuses what it cannot honour, naming the field and offset", () => {
    const cases: [Uint8Array, RegExp][] = [
      [new Uint8Array(100), /no multiboot header/],
      [flatImage(0x10004), /video mode.*flags at offset 0x4/],
      [flatImage(0x10100), /unknown features/],
      [flatImage(0x10000, (dv) => dv.setUint32(20, 0x300000, true)), /load_end_addr.*offset 0x14/],
      [flatImage(0x10000, (dv) => dv.setUint32(16, 0x200100, true)), /load_addr.*above header_addr/],
      [flatImage(0x10000, (dv) => dv.setUint32(24, 0x200010, true)), /bss_end_addr/],
      [flatImage(0x10000, (dv) => dv.setUint32(12, 0x300000, true)), /before the file start/],
      [flatImage(0), /not an ELF file/],
    ];
    for (const [img, msg] of cases) expect(() => parseMultiboot(img)).toThrow(msg);
  });

  it("never fails with anything but BootImageError on mutated images (seeded)", () => {
    const rnd = seeded(0x5eed);
    for (let i = 0; i < 2000; i++) {
      const img = flatImage();
      const n = 1 + (rnd() % 4);
      for (let k = 0; k < n; k++) img[rnd() % img.length] = rnd() & 0xff;
      // Keep a valid checksum half of the time so the field checks run.
      if (i % 2 === 0) new DataView(img.buffer).setUint32(8, (-(MULTIBOOT_HEADER_MAGIC + new DataView(img.buffer).getUint32(4, true))) >>> 0, true);
      try {
        const mb = parseMultiboot(img);
        for (const s of mb.segments) expect(s.fileOffset + s.fileSize).toBeLessThanOrEqual(img.length);
      } catch (e) {
        expect(e).toBeInstanceOf(BootImageError);
      }
    }
  });
});

describe("multiboot loading", () => {
  it("copies the kernel, zeroes BSS, writes the information structure (§3.3)", () => {
    const mem = fakeMemory(32 << 20);
    mem.bytes.fill(0xcc, 0x200000, 0x202000);
    const layout = pcMemoryLayout(32 << 20);
    const plan = loadMultiboot(mem, layout, { kernel: flatImage(), cmdline: "root=none quiet", modules: [{ data: new Uint8Array([1, 2, 3]), cmdline: "mod-a" }, { data: new Uint8Array(5000), cmdline: "mod-b" }] });
    expect(mem.bytes[0x200020]).toBe(0x90);
    expect(mem.bytes.subarray(0x200040, 0x201000).every((b) => b === 0)).toBe(true);
    expect(mem.bytes[0x201003]).toBe(0xcc); // past the first module
    const u32 = (a: number): number => mem.readU32(a);
    const cstr = (a: number): string => {
      let e = a;
      while (mem.bytes[e] !== 0) e++;
      return new TextDecoder().decode(mem.bytes.subarray(a, e));
    };
    const info = plan.info;
    expect(info).toBe(MULTIBOOT_INFO);
    expect(u32(info) & 0x24f).toBe(0x24d); // mem, cmdline, mods, mmap, loader name
    expect(u32(info + 4)).toBe(639);
    expect(u32(info + 8)).toBe(31 * 1024);
    expect(cstr(u32(info + 16))).toBe("root=none quiet");
    expect(u32(info + 20)).toBe(2);
    const mods = u32(info + 24);
    expect([u32(mods), u32(mods + 4), cstr(u32(mods + 8))]).toEqual([0x201000, 0x201003, "mod-a"]);
    expect([u32(mods + 16), u32(mods + 20), cstr(u32(mods + 24))]).toEqual([0x202000, 0x202000 + 5000, "mod-b"]);
    expect(mem.bytes[0x201000]).toBe(1);
    // The memory map is the e820 map with 24-byte records (size field first).
    const mmapLen = u32(info + 44);
    const mmap = u32(info + 48);
    expect(mmapLen).toBe(layout.e820.length * 24);
    const entries = [];
    for (let p = mmap; p < mmap + mmapLen; p += u32(p) + 4) entries.push({ addr: u32(p + 4), size: u32(p + 12), type: u32(p + 20) });
    expect(entries).toEqual(layout.e820.map((e) => ({ addr: e.addr, size: e.size, type: e.type })));
    expect(cstr(u32(info + 64))).toBe("typevisor");
  });

  it("rejects kernels overlapping the loader's area and modules past RAM", () => {
    const layout = pcMemoryLayout(4 << 20);
    const low = flatImage(0x10000, (dv) => {
      dv.setUint32(12, 0x7000, true);
      dv.setUint32(16, 0x7000, true);
      dv.setUint32(20, 0x7040, true);
      dv.setUint32(24, 0, true);
    });
    expect(() => loadMultiboot(fakeMemory(4 << 20), layout, { kernel: low })).toThrow(/overlaps the loader's area/);
    expect(() => loadMultiboot(fakeMemory(4 << 20), layout, { kernel: flatImage(), modules: [{ data: new Uint8Array(3 << 20) }] })).toThrow(/module 0 needs RAM/);
  });
});

describeWithTools(["nasm", "ld"], "multiboot test programs built with nasm + ld", () => {
  const dir = tempDir("tv-mb-");
  let elf: Uint8Array;
  let flat: Uint8Array;
  beforeAll(() => {
    execFileSync("nasm", ["-f", "elf32", "-o", join(dir.path, "report.o"), join(fixtures, "multiboot-report.asm")]);
    execFileSync("ld", ["-m", "elf_i386", "-N", "--no-warn-rwx-segments", "-Ttext", "0x100000", "-e", "_start", "-o", join(dir.path, "report.elf"), join(dir.path, "report.o")]);
    execFileSync("nasm", ["-f", "bin", "-o", join(dir.path, "aout.bin"), join(fixtures, "multiboot-aout.asm")]);
    elf = new Uint8Array(readFileSync(join(dir.path, "report.elf")));
    flat = new Uint8Array(readFileSync(join(dir.path, "aout.bin")));
  });
  afterAll(() => dir.remove());

  it("parses the ELF program headers and loads them, BSS zeroed", () => {
    const mb = parseMultiboot(elf);
    expect(mb.aoutKludge).toBe(false);
    expect(mb.entry).toBe(0x10000c);
    expect(mb.segments.length).toBe(1);
    const [s] = mb.segments;
    expect(s.address).toBe(0x100000);
    expect(s.memSize - s.fileSize).toBeGreaterThanOrEqual(4096);
    const mem = fakeMemory(16 << 20);
    mem.bytes.fill(0xaa, 0x100000, 0x110000);
    loadMultiboot(mem, pcMemoryLayout(16 << 20), { kernel: elf });
    expect(mem.bytes.subarray(0x100000, 0x100000 + s.fileSize)).toEqual(elf.subarray(s.fileOffset, s.fileOffset + s.fileSize));
    expect(mem.bytes.subarray(0x100000 + s.fileSize, 0x100000 + s.memSize).every((b) => b === 0)).toBe(true);
    expect(mem.readU32(0x100000)).toBe(MULTIBOOT_HEADER_MAGIC);
  });

  it("parses the flat image's address fields", () => {
    const mb = parseMultiboot(flat);
    expect(mb.aoutKludge).toBe(true);
    expect(mb.segments[0].address).toBe(0x100000);
    expect(mb.segments[0].memSize - mb.segments[0].fileSize).toBe(0x10000);
  });

  describeWithTools(["qemu-system-i386"], "the same programs under QEMU's multiboot loader (peer)", () => {
    const run = (kernel: string, extra: string[]): { status: number | null; out: string } => {
      const log = join(dir.path, `debugcon-${kernel}.txt`);
      writeFileSync(log, "");
      const r = spawnSync("qemu-system-i386", ["-kernel", join(dir.path, kernel), "-nodefaults", "-display", "none", "-m", "64", "-no-reboot", "-debugcon", `file:${log}`, "-device", "isa-debug-exit,iobase=0xf4,iosize=4", ...extra], { timeout: 60_000 });
      return { status: r.status, out: readFileSync(log, "utf8") };
    };

    it("QEMU accepts the ELF, the program passes its checks and reports the info structure", () => {
      writeFileSync(join(dir.path, "mod.bin"), "MODULEDATA");
      const r = run("report.elf", ["-append", "hello world", "-initrd", `${join(dir.path, "mod.bin")} arg1 arg2`]);
      expect(r.out).toMatch(/cmdline=.*hello world/);
      expect(r.out).toMatch(/module .*mod\.bin arg1 arg2 length=0000000a first=55444f4d/);
      expect(r.out).toMatch(/mem_lower=0000027f/);
      expect(r.status).toBe(33);
    });

    it("QEMU accepts the flat image", () => {
      const r = run("aout.bin", []);
      expect(r.out).toBe("aout ok\n");
      expect(r.status).toBe(33);
    });
  });
});
