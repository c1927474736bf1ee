import { GUEST_MEMORY, Machine, X86_CPU_CONTROL, type Vcpu, type X86BootState } from "@typevisor/hv-core";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { seeded } from "@typevisor/test-support";
import { describe, expect, it } from "vitest";
import { BOOT_CMDLINE, BOOT_GDT, BOOT_ZERO_PAGE, BootImageError } from "./boot-common.js";
import { linuxBoot, loadLinux, parseBzImage } from "./linux-loader.js";
import { pcMemoryLayout } from "./memory-map.js";
import { cacheDir } from "./guest-debian.js";
import { fakeMemory } from "./test-util.js";

/**
 * A bzImage laid out per Documentation/arch/x86/boot.rst (protocol 2.15):
 * 4 setup sectors, then `pm` bytes of protected-mode code with a gzip-magic payload.
 */
function bzImage(opts: { version?: number; pm?: number; relocatable?: boolean; prefAddress?: number; initSize?: number; cmdlineSize?: number; initrdMax?: number } = {}): Uint8Array {
  const pm = opts.pm ?? 0x4000;
  const img = new Uint8Array(5 * 512 + pm);
  const dv = new DataView(img.buffer);
  dv.setUint8(0x1f1, 4); // setup_sects
  dv.setUint32(0x1f4, Math.ceil(pm / 16), true); // syssize
  dv.setUint16(0x1fe, 0xaa55, true);
  dv.setUint8(0x200, 0xeb);
  dv.setUint8(0x201, 0x6a); // header ends at 0x26c
  dv.setUint32(0x202, 0x53726448, true);
  dv.setUint16(0x206, opts.version ?? 0x020f, true);
  dv.setUint16(0x20e, 0x400, true); // kernel_version string at 0x600
  img.set(new TextEncoder().encode("6.1.0-test (builder@host) #1 SMP\0"), 0x600);
  dv.setUint8(0x211, 0x01); // LOADED_HIGH
  dv.setUint32(0x214, 0x100000, true);
  dv.setUint32(0x22c, opts.initrdMax ?? 0x7fffffff, true);
  dv.setUint32(0x230, 0x200000, true); // kernel_alignment
  dv.setUint8(0x234, opts.relocatable === false ? 0 : 1);
  dv.setUint32(0x238, opts.cmdlineSize ?? 2047, true);
  dv.setUint32(0x248, 0x100, true); // payload_offset
  dv.setUint32(0x24c, 0x200, true); // payload_length
  dv.setUint32(0x258, opts.prefAddress ?? 0x1000000, true);
  dv.setUint32(0x260, opts.initSize ?? 0x800000, true);
  img.fill(0x5a, 0xa00);
  img.set([0x1f, 0x8b, 0x08], 0xa00 + 0x100);
  return img;
}

describe("bzImage header", () => {
  it("parses the fields a loader needs", () => {
    const info = parseBzImage(bzImage());
    expect(info).toMatchObject({
      version: 0x020f,
      setupSects: 4,
      setupSize: 2560,
      kernelSize: 0x4000,
      relocatable: true,
      kernelAlignment: 0x200000,
      prefAddress: 0x1000000,
      initSize: 0x800000,
      cmdlineSize: 2047,
      initrdAddrMax: 0x7fffffff,
      payload: { offset: 0x100, length: 0x200, format: "gzip" },
      kernelVersion: "6.1.0-test (builder@host) #1 SMP",
    });
  });

  it("names the field and offset of what is wrong", () => {
    const bad = (patch: (dv: DataView, img: Uint8Array) => void, msg: RegExp): void => {
      const img = bzImage();
      patch(new DataView(img.buffer), img);
      let err: unknown;
      try {
        parseBzImage(img);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(BootImageError);
      expect((err as Error).message).toMatch(msg);
    };
    bad((dv) => dv.setUint16(0x1fe, 0x1234, true), /boot_flag at offset 0x1fe/);
    bad((dv) => dv.setUint32(0x202, 0, true), /HdrS/);
    bad((dv) => dv.setUint16(0x206, 0x0201, true), /2\.01 is too old/);
    bad((dv) => dv.setUint8(0x211, 0), /zImage/);
    bad((dv) => dv.setUint8(0x1f1, 200), /setup_sects at offset 0x1f1/);
    bad((dv) => dv.setUint32(0x1f4, 0x100000, true), /syssize.*truncated/);
    bad((dv) => dv.setUint32(0x230, 0x3000, true), /kernel_alignment/);
    bad((dv) => dv.setUint32(0x24c, 0x100000, true), /payload_offset/);
    bad((dv) => dv.setUint8(0x201, 0xff), /jump/);
    expect(() => parseBzImage(bzImage().subarray(0, 0x200))).toThrow(/too short/);
    expect(() => parseBzImage(bzImage().subarray(0, 0x300))).toThrow(/setup_sects says 2560 bytes/);
  });

  it("never fails with anything but BootImageError on mutated headers (seeded)", () => {
    const rnd = seeded(1234);
    const base = bzImage();
    for (let i = 0; i < 3000; i++) {
      const img = base.slice(0, i % 7 === 0 ? 0x200 + (rnd() % 0x1000) : base.length);
      for (let k = 0; k < 3; k++) img[0x1f1 + (rnd() % 0x80)] = rnd() & 0xff;
      try {
        const info = parseBzImage(img);
        expect(info.kernelOffset + info.kernelSize).toBe(img.length);
      } catch (e) {
        expect(e).toBeInstanceOf(BootImageError);
      }
    }
  });
});

describe("Linux boot protocol loading", () => {
  const layout = pcMemoryLayout(64 << 20);

  it("places kernel at pref_address, initrd high, and fills boot_params (zero-page.rst)", () => {
    const mem = fakeMemory(64 << 20);
    const kernel = bzImage();
    const initrd = new Uint8Array(100_000).fill(7);
    const plan = loadLinux(mem, layout, { kernel, initrd, cmdline: "console=ttyS0 tv.exec=\"uname -a\"" }, 0xe0000);
    expect(plan.kernelAddress).toBe(0x1000000);
    expect(mem.bytes.subarray(0x1000000, 0x1000000 + 0x4000)).toEqual(kernel.subarray(2560));
    expect(plan.initrd).toEqual({ address: Math.floor(((64 << 20) - 100_000) / 4096) * 4096, size: 100_000 });
    expect(mem.bytes[plan.initrd!.address]).toBe(7);
    const zp = BOOT_ZERO_PAGE;
    const u8 = (o: number): number => mem.readU8(zp + o);
    const u32 = (o: number): number => mem.readU32(zp + o);
    expect(mem.readU16(zp + 0x1fe)).toBe(0xaa55);
    expect(u32(0x202)).toBe(0x53726448);
    expect(u8(0x210)).toBe(0xff); // type_of_loader
    expect(u8(0x211) & 1).toBe(1);
    expect(u32(0x214)).toBe(0x1000000); // code32_start
    expect(u32(0x218)).toBe(plan.initrd!.address);
    expect(u32(0x21c)).toBe(100_000);
    expect(u32(0x228)).toBe(BOOT_CMDLINE);
    expect(u32(0x070)).toBe(0xe0000); // acpi_rsdp_addr
    expect(u8(0x1ef)).toBe(0); // sentinel
    expect(u32(0x1e0)).toBe(63 * 1024); // alt_mem_k
    expect(u8(0x1e8)).toBe(layout.e820.length);
    for (let i = 0; i < layout.e820.length; i++) {
      const e = zp + 0x2d0 + i * 20;
      expect([mem.readU32(e), mem.readU32(e + 8), mem.readU32(e + 16)]).toEqual([layout.e820[i].addr, layout.e820[i].size, layout.e820[i].type]);
    }
    const cmd = new TextDecoder().decode(mem.bytes.subarray(BOOT_CMDLINE, BOOT_CMDLINE + 40));
    expect(cmd.startsWith('console=ttyS0 tv.exec="uname -a"\0')).toBe(true);
  });

  it("falls back to 1 MiB for non-relocatable kernels and when pref_address does not fit", () => {
    expect(loadLinux(fakeMemory(64 << 20), layout, { kernel: bzImage({ relocatable: false }) }).kernelAddress).toBe(0x100000);
    const small = pcMemoryLayout(20 << 20);
    expect(loadLinux(fakeMemory(20 << 20), small, { kernel: bzImage() }).kernelAddress).toBe(0x100000);
  });

  it("keeps the initrd under initrd_addr_max and reports what does not fit", () => {
    const plan = loadLinux(fakeMemory(64 << 20), layout, { kernel: bzImage({ initrdMax: 0x2ffffff }), initrd: new Uint8Array(4096) });
    expect(plan.initrd!.address + 4096).toBeLessThanOrEqual(0x3000000);
    expect(() => loadLinux(fakeMemory(64 << 20), layout, { kernel: bzImage(), initrd: new Uint8Array(50 << 20) })).toThrow(/initrd does not fit/);
    expect(() => loadLinux(fakeMemory(8 << 20), pcMemoryLayout(8 << 20), { kernel: bzImage({ initSize: 0x1000000 }) })).toThrow(/needs 16 MiB/);
    expect(() => loadLinux(fakeMemory(64 << 20), layout, { kernel: bzImage({ cmdlineSize: 10 }), cmdline: "console=ttyS0" })).toThrow(/at most 10/);
  });

  it("starts vCPU 0 in flat protected mode per the 32-bit boot protocol, and again after a reset", async () => {
    const machine = new Machine({ memory: "64M", clock: { mode: "deterministic" } });
    const mem = fakeMemory(64 << 20);
    machine.services.provide(GUEST_MEMORY, mem);
    const states: X86BootState[] = [];
    machine.services.provide(X86_CPU_CONTROL, { vcpuCount: 1, applyBootState: (i, s) => void (expect(i).toBe(0), states.push(s)) });
    let slices = 0;
    const cpu: Vcpu = {
      index: 0,
      halted: false,
      runSlice: (budget) => {
        slices++;
        if (slices === 1) machine.requestReset();
        else machine.requestStop({ reason: "user" });
        return budget;
      },
      requestExit: () => {},
      reset: () => {},
    };
    machine.addVcpu(cpu);
    await machine.boot(linuxBoot({ kernel: bzImage(), cmdline: "console=ttyS0" }));
    await machine.stopped;
    expect(states.length).toBe(2);
    const s = states[0];
    expect(s.eip).toBe(0x1000000);
    expect(s.regs).toEqual({ esi: BOOT_ZERO_PAGE, ebx: 0, ebp: 0, edi: 0 });
    expect(s.segments?.cs).toEqual({ selector: 0x10, base: 0, limit: 0xffffffff, access: 0x9b, flags: 0xc });
    expect(s.segments?.ds?.selector).toBe(0x18);
    expect(s.segments?.ss?.selector).toBe(0x18);
    expect((s.eflags ?? 2) & 0x200).toBe(0);
    expect((s.cr0 ?? 0) & 1).toBe(1);
    expect(s.gdtr).toEqual({ base: BOOT_GDT, limit: 31 });
    // The GDT in memory has the flat descriptors at 0x10 and 0x18.
    expect([mem.readU32(BOOT_GDT + 16), mem.readU32(BOOT_GDT + 20), mem.readU32(BOOT_GDT + 24), mem.readU32(BOOT_GDT + 28)]).toEqual([0xffff, 0x00cf9b00, 0xffff, 0x00cf9300]);
  });

  it("fails before touching the machine when the image is bad", () => {
    expect(() => linuxBoot({ kernel: new Uint8Array(10) })).toThrow(BootImageError);
  });
});

describe("a real Debian kernel from the guest cache", () => {
  const manifest = join(cacheDir(), "debian-i386", "manifest.json");
  const have = existsSync(manifest);
  if (!have) console.warn(`SKIP "a real Debian kernel": no fetched guest at ${manifest} (run 'typevisor guest fetch', or the slow tests)`);
  it.skipIf(!have)("parses and loads the cached linux-image-686 kernel", () => {
    const { kernel, kernelRelease } = JSON.parse(readFileSync(manifest, "utf8")) as { kernel: string; kernelRelease: string };
    const image = new Uint8Array(readFileSync(kernel));
    const info = parseBzImage(image);
    expect(info.kernelVersion?.startsWith(kernelRelease)).toBe(true);
    expect(info.loadflags & 1).toBe(1);
    const plan = loadLinux(fakeMemory(128 << 20), pcMemoryLayout(128 << 20), { kernel: image, cmdline: "console=ttyS0" });
    expect(plan.kernelAddress).toBe(info.prefAddress);
  });
});
