// The peer is the oracle: images qemu wrote must read back through our code
// exactly as qemu-img converts them to raw; images we wrote must pass
// qemu-img check with no errors and no leaks, and compare equal to the raw
// data we expect.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describeWithTools, tempDir } from "@typevisor/test-support";
import { afterAll, expect, it } from "vitest";
import { createQcow2, FileStore, openImage, Qcow2Image, type Qcow2CreateOptions } from "../src/index.js";
import { firstDiff, qemuCheck, qemuImg, qemuIo, qemuRaw } from "./helpers.js";
import { applyToDevice, applyToMirror, makeWorkload, qemuIoCommand } from "./workload.js";

const dir = tempDir("qcow2-interop-");
afterAll(() => dir.remove());

interface Combo {
  name: string;
  opts: string; // qemu-img -o
  ours: Omit<Qcow2CreateOptions, "size">;
  size: number;
}

const MB = 1 << 20;
const combos: Combo[] = [
  { name: "v3 64k 16-bit", opts: "compat=1.1", ours: {}, size: 8 * MB },
  { name: "v2 64k", opts: "compat=0.10", ours: { compat: "0.10" }, size: 8 * MB },
  { name: "512-byte clusters", opts: "cluster_size=512", ours: { clusterSize: 512 }, size: 2 * MB },
  { name: "4k clusters 1-bit refcounts", opts: "cluster_size=4096,refcount_bits=1", ours: { clusterSize: 4096, refcountBits: 1 }, size: 4 * MB },
  { name: "2-bit refcounts", opts: "refcount_bits=2", ours: { refcountBits: 2 }, size: 8 * MB },
  { name: "4-bit refcounts", opts: "refcount_bits=4,cluster_size=8192", ours: { refcountBits: 4, clusterSize: 8192 }, size: 4 * MB },
  { name: "8-bit refcounts", opts: "refcount_bits=8", ours: { refcountBits: 8 }, size: 8 * MB },
  { name: "32-bit refcounts", opts: "refcount_bits=32", ours: { refcountBits: 32 }, size: 8 * MB },
  { name: "64-bit refcounts 1k clusters", opts: "refcount_bits=64,cluster_size=1024", ours: { refcountBits: 64, clusterSize: 1024 }, size: 2 * MB },
  { name: "2M clusters", opts: "cluster_size=2M", ours: { clusterSize: 2 * MB }, size: 16 * MB },
  { name: "lazy refcounts", opts: "lazy_refcounts=on", ours: { lazyRefcounts: true }, size: 8 * MB },
  { name: "extended L2 64k", opts: "extended_l2=on", ours: { extendedL2: true }, size: 8 * MB },
  { name: "extended L2 32k", opts: "extended_l2=on,cluster_size=32k", ours: { extendedL2: true, clusterSize: 32768 }, size: 4 * MB },
  { name: "zstd", opts: "compression_type=zstd", ours: { compressionType: "zstd" }, size: 8 * MB },
  { name: "preallocation=metadata", opts: "preallocation=metadata", ours: { preallocation: "metadata" }, size: 8 * MB },
  { name: "preallocation=falloc", opts: "preallocation=falloc", ours: { preallocation: "falloc" }, size: 4 * MB },
  { name: "preallocation=full", opts: "preallocation=full", ours: { preallocation: "full" }, size: 4 * MB },
  { name: "unaligned size", opts: "cluster_size=4096", ours: { clusterSize: 4096 }, size: 3 * MB + 512 * 3 },
  { name: "v2 512-byte clusters", opts: "compat=0.10,cluster_size=512", ours: { compat: "0.10", clusterSize: 512 }, size: 1 * MB },
  { name: "extended L2 zstd", opts: "extended_l2=on,compression_type=zstd,cluster_size=16k", ours: { extendedL2: true, compressionType: "zstd", clusterSize: 16384 }, size: 4 * MB },
  { name: "extended L2 lazy 2M", opts: "extended_l2=on,lazy_refcounts=on,cluster_size=2M", ours: { extendedL2: true, lazyRefcounts: true, clusterSize: 2 * MB }, size: 12 * MB },
  { name: "extended L2 preallocation=metadata", opts: "extended_l2=on,preallocation=metadata", ours: { extendedL2: true, preallocation: "metadata" }, size: 4 * MB },
  { name: "extended L2 unaligned size", opts: "extended_l2=on,cluster_size=64k", ours: { extendedL2: true }, size: 5 * MB + 512 * 7 },
  { name: "1-bit refcounts 64k", opts: "refcount_bits=1", ours: { refcountBits: 1 }, size: 8 * MB },
];

function clusterOf(c: Combo): number {
  return c.ours.clusterSize ?? 65536;
}

describeWithTools(["qemu-img", "qemu-io"], "qcow2 interop with qemu-img", () => {
  for (const [n, c] of combos.entries()) {
    it(`reads what qemu wrote: ${c.name}`, async () => {
      const p = join(dir.path, `q${n}.qcow2`);
      qemuImg("create", "-q", "-f", "qcow2", "-o", c.opts, p, String(c.size));
      const cs = clusterOf(c);
      const ops = makeWorkload(100 + n, c.size, cs, 40);
      // Compressed clusters first (qemu compresses only into unallocated clusters), then the rest.
      const cmds = c.opts.includes("preallocation") ? [] : [`write -c -P 0x5a 0 ${cs}`, `write -c -P 0x33 ${cs * 2} ${cs}`];
      cmds.push(...ops.map(qemuIoCommand));
      for (let i = 0; i < cmds.length; i += 20) qemuIo(p, cmds.slice(i, i + 20));
      const raw = qemuRaw(p, join(dir.path, `q${n}.raw`));
      const img = await openImage(p, { readOnly: true });
      const got = new Uint8Array(c.size);
      await img.read(0, got);
      await img.close();
      expect(firstDiff(got, raw)).toBe(-1);
    });

    it(`writes what qemu reads: ${c.name}`, async () => {
      const p = join(dir.path, `o${n}.qcow2`);
      const store = await FileStore.open(p, { create: true });
      await createQcow2(store, { size: c.size, ...c.ours });
      await store.close();
      const cs = clusterOf(c);
      const img = await Qcow2Image.open(await FileStore.open(p));
      const mirror = new Uint8Array(c.size);
      for (const op of makeWorkload(200 + n, c.size, cs, 60)) {
        await applyToDevice(img, op);
        applyToMirror(mirror, op, cs);
      }
      if (!c.ours.preallocation) {
        const block = new Uint8Array(cs).fill(0x77);
        await img.writeCompressed(cs * 3, block);
        mirror.set(block, cs * 3);
      }
      const back = new Uint8Array(c.size);
      await img.read(0, back);
      expect(firstDiff(back, mirror)).toBe(-1);
      await img.close();
      const chk = qemuCheck(p);
      expect(chk.stderr).toBe("");
      expect(chk.status).toBe(0);
      const rawPath = join(dir.path, `o${n}.raw`);
      writeFileSync(rawPath, mirror);
      expect(qemuImg("compare", "-f", "qcow2", "-F", "raw", p, rawPath)).toContain("Images are identical");
    });
  }
});
