// Snapshots under a random workload: writes, discards and zeroes interleaved
// with snapshot create, apply and delete, on our image and on a mirror per
// snapshot; qemu-img must agree with every view and find no errors.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { describeWithTools, seeded, tempDir } from "@typevisor/test-support";
import { afterAll, expect, it } from "vitest";
import { applySnapshot, createQcow2, createSnapshot, deleteSnapshot, FileStore, listSnapshots, Qcow2Image } from "../src/index.js";
import { firstDiff, qemuCheck, qemuImg, qemuRaw } from "./helpers.js";
import { applyToDevice, applyToMirror, makeWorkload } from "./workload.js";

const dir = tempDir("qcow2-snapwork-");
afterAll(() => dir.remove());

for (const [name, opts] of [
  ["64k clusters", { clusterSize: 65536 }],
  ["4k clusters, 8-bit refcounts", { clusterSize: 4096, refcountBits: 8 }],
  ["extended L2", { clusterSize: 32768, extendedL2: true }],
  ["version 2", { compat: "0.10" as const }],
] as const) {
  describeWithTools(["qemu-img"], `snapshot workload: ${name}`, () => {
    it("every snapshot reads back as it was taken, through our code and qemu-img", async () => {
      const size = 4 << 20;
      const cs = opts.clusterSize ?? 65536;
      const f = join(dir.path, `${name.replace(/\W+/g, "_")}.qcow2`);
      const store = await FileStore.open(f, { create: true });
      await createQcow2(store, { size, ...opts });
      await store.close();
      let img = await Qcow2Image.open(await FileStore.open(f));
      const next = seeded(77 + cs);
      let mirror = new Uint8Array(size);
      const saved = new Map<string, Uint8Array>();
      let counter = 0;
      for (let round = 0; round < 12; round++) {
        for (const op of makeWorkload(next(), size, cs, 12)) {
          await applyToDevice(img, op);
          applyToMirror(mirror, op, cs);
        }
        if (next() % 3 === 0) {
          const c = (next() % (size / cs)) * cs;
          const block = new Uint8Array(cs).fill(next() & 0xff);
          await img.writeCompressed(c, block);
          mirror.set(block, c);
        }
        const r = next() % 4;
        if (r === 0 || saved.size === 0) {
          const name = `snap${counter++}`;
          await createSnapshot(img, { name });
          saved.set(name, mirror.slice());
        } else if (r === 1) {
          const names = [...saved.keys()];
          const pick = names[next() % names.length];
          await applySnapshot(img, pick);
          mirror = saved.get(pick)!.slice();
        } else if (r === 2 && saved.size > 1) {
          const names = [...saved.keys()];
          const pick = names[next() % names.length];
          await deleteSnapshot(img, pick);
          saved.delete(pick);
        }
        const now = new Uint8Array(size);
        await img.read(0, now);
        expect(firstDiff(now, mirror), `round ${round}`).toBe(-1);
        if (round % 4 === 3) {
          await img.close();
          const chk = qemuCheck(f);
          expect(chk.stderr).toBe("");
          expect(chk.status).toBe(0);
          img = await Qcow2Image.open(await FileStore.open(f));
        }
      }
      expect((await listSnapshots(img)).map((s) => s.name).sort()).toEqual([...saved.keys()].sort());
      await img.close();
      expect(qemuCheck(f).status).toBe(0);
      expect(firstDiff(qemuRaw(f, join(dir.path, "cur.raw")), mirror)).toBe(-1);
      // qemu-img reads every snapshot as we saved it.
      for (const [snap, data] of saved) {
        const out = join(dir.path, `${snap}.raw`);
        qemuImg("convert", "-l", `snapshot.name=${snap}`, "-O", "raw", f, out);
        const want = join(dir.path, `${snap}.want`);
        writeFileSync(want, data);
        expect(qemuImg("compare", "-f", "raw", "-F", "raw", out, want)).toContain("identical");
      }
    }, 120_000);
  });
}
