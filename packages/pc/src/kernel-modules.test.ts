import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { tempDir } from "@typevisor/test-support";
import { aliasIndex, KernelModuleError, moduleClosure, moduleInfo } from "./kernel-modules.js";

/** A minimal ELF32 relocatable object with a .modinfo section holding `info`. */
function fakeModule(info: string[]): Uint8Array {
  const modinfo = new TextEncoder().encode(info.join("\0") + "\0");
  const shstr = new TextEncoder().encode("\0.modinfo\0.shstrtab\0");
  const shoff = 52 + modinfo.length + shstr.length;
  const out = new Uint8Array(shoff + 3 * 40);
  const v = new DataView(out.buffer);
  out.set([0x7f, 0x45, 0x4c, 0x46, 1, 1, 1]);
  v.setUint16(16, 1, true); // ET_REL
  v.setUint16(18, 3, true); // EM_386
  v.setUint32(0x20, shoff, true);
  v.setUint16(0x2e, 40, true);
  v.setUint16(0x30, 3, true);
  v.setUint16(0x32, 2, true);
  out.set(modinfo, 52);
  out.set(shstr, 52 + modinfo.length);
  const sh = (i: number, name: number, off: number, size: number): void => {
    v.setUint32(shoff + i * 40, name, true);
    v.setUint32(shoff + i * 40 + 0x10, off, true);
    v.setUint32(shoff + i * 40 + 0x14, size, true);
  };
  sh(1, 1, 52, modinfo.length);
  sh(2, 10, 52 + modinfo.length, shstr.length);
  return out;
}

describe("kernel modules", () => {
  it("reads depends= from .modinfo", () => {
    expect(moduleInfo(fakeModule(["license=GPL", "depends=virtio,virtio_ring", "name=virtio_blk"]), "depends")).toEqual(["virtio,virtio_ring"]);
  });

  it("refuses damaged files with a typed error", () => {
    expect(() => moduleInfo(new Uint8Array(100), "depends")).toThrowError(KernelModuleError);
    const ko = fakeModule(["depends="]);
    new DataView(ko.buffer).setUint32(0x20, 0x7fffffff, true);
    expect(() => moduleInfo(ko, "depends", "x.ko")).toThrowError(/x.ko: header field at offset/);
  });

  it("orders the closure dependencies first, skipping built-ins, naming what is missing", () => {
    const dir = tempDir();
    try {
      const k = join(dir.path, "kernel", "drivers");
      mkdirSync(k, { recursive: true });
      writeFileSync(join(k, "virtio.ko"), fakeModule(["depends="]));
      writeFileSync(join(k, "virtio_ring.ko"), fakeModule(["depends=virtio"]));
      writeFileSync(join(k, "virtio_blk.ko"), fakeModule(["depends=virtio,virtio_ring,crc32"]));
      writeFileSync(join(k, "virtio-rng.ko"), fakeModule(["depends=virtio_ring,virtio,rng-core"]));
      writeFileSync(join(dir.path, "modules.builtin"), "kernel/lib/crc32.ko\nkernel/drivers/char/hw_random/rng-core.ko\n");
      const c = moduleClosure(dir.path, ["virtio_blk", "virtio-rng"]);
      expect(c.map((m) => m.name)).toEqual(["virtio", "virtio_ring", "virtio_blk", "virtio_rng"]);
      expect(c[3].path).toBe("kernel/drivers/virtio-rng.ko");
      expect(() => moduleClosure(dir.path, ["virtio_net"])).toThrowError(/"virtio_net" is not in/);
    } finally {
      dir.remove();
    }
  });

  it("loads soft dependencies first, resolved through aliases, preferring the generic implementation", () => {
    const dir = tempDir();
    try {
      const k = join(dir.path, "kernel");
      mkdirSync(join(k, "fs"), { recursive: true });
      mkdirSync(join(k, "crypto"), { recursive: true });
      writeFileSync(join(k, "fs", "ext4.ko"), fakeModule(["softdep=pre: crypto-crc32c post: nothing-needed", "depends=jbd2", "alias=fs-ext4"]));
      writeFileSync(join(k, "fs", "jbd2.ko"), fakeModule(["depends="]));
      writeFileSync(join(k, "crypto", "crc32c-intel.ko"), fakeModule(["alias=crypto-crc32c", "alias=cpu:type:x86,ven*", "depends="]));
      writeFileSync(join(k, "crypto", "crc32c_generic.ko"), fakeModule(["alias=crypto-crc32c", "alias=crc32c", "depends="]));
      writeFileSync(join(k, "fs", "orphan.ko"), fakeModule(["softdep=pre: nobody-provides-this", "depends="]));
      const c = moduleClosure(dir.path, ["ext4", "orphan"]);
      expect(c.map((m) => m.name)).toEqual(["crc32c_generic", "jbd2", "ext4", "orphan"]);
      expect(c[2].softdeps).toEqual(["crc32c_generic"]);
      // The alias index is cached in the folder and gives the same answer.
      expect(existsSync(join(dir.path, "typevisor.aliases.json"))).toBe(true);
      expect(aliasIndex(dir.path).get("crypto-crc32c")?.sort()).toEqual(["crc32c_generic", "crc32c_intel"]);
      expect(moduleClosure(dir.path, ["ext4"]).map((m) => m.name)).toEqual(["crc32c_generic", "jbd2", "ext4"]);
      // A damaged cache is rebuilt rather than believed.
      writeFileSync(join(dir.path, "typevisor.aliases.json"), JSON.stringify({ "crypto-crc32c": "crc32c_generic" }));
      expect(moduleClosure(dir.path, ["ext4"]).map((m) => m.name)).toEqual(["crc32c_generic", "jbd2", "ext4"]);
    } finally {
      dir.remove();
    }
  });

  const debian = join(process.env.HOME ?? "/root", ".cache/typevisor/debian-i386/root/lib/modules");
  if (!existsSync(debian)) console.warn("SKIP \"resolves the virtio drivers of the cached Debian kernel\": no guest cached (typevisor guest fetch)");
  it.skipIf(!existsSync(debian))("resolves the virtio drivers of the cached Debian kernel", async () => {
    const { readdirSync } = await import("node:fs");
    const release = readdirSync(debian)[0];
    const c = moduleClosure(join(debian, release), ["virtio_pci", "virtio_blk"]);
    const names = c.map((m) => m.name);
    expect(names.indexOf("virtio")).toBeLessThan(names.indexOf("virtio_pci"));
    expect(names).toContain("virtio_ring");
    expect(names[names.length - 1]).toBe("virtio_blk");
    // ext4 links against jbd2 and asks for crc32c softly (its checksums).
    const fs = moduleClosure(join(debian, release), ["ext4"]).map((m) => m.name);
    expect(fs.indexOf("crc32c_generic")).toBeLessThan(fs.indexOf("ext4"));
    expect(fs).toContain("jbd2");
  });
});
