import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { describeWithTools, tempDir } from "@typevisor/test-support";
import { afterAll, expect, it } from "vitest";
import { createQcow2, FileStore, Qcow2Image, openImage } from "../src/index.js";
import { firstDiff, pattern, qemuCheck, qemuImg, qemuIo, qemuRaw } from "./helpers.js";

const dir = tempDir("qcow2-smoke-");
afterAll(() => dir.remove());

describeWithTools(["qemu-img", "qemu-io"], "smoke", () => {
  it("our writes pass qemu-img check and compare", async () => {
    const p = join(dir.path, "a.qcow2");
    const store = await FileStore.open(p, { create: true });
    await createQcow2(store, { size: 8 << 20 });
    await store.close();
    const img = await Qcow2Image.open(await FileStore.open(p));
    const mirror = new Uint8Array(8 << 20);
    const d = pattern(200000, 1);
    await img.write(12345, d);
    mirror.set(d, 12345);
    const e = pattern(65536, 2);
    await img.write(3 << 20, e);
    mirror.set(e, 3 << 20);
    await img.close();
    const c = qemuCheck(p);
    expect(c.stderr).toBe("");
    expect(c.status).toBe(0);
    const raw = qemuRaw(p, join(dir.path, "a.raw"));
    expect(firstDiff(raw, mirror)).toBe(-1);
  });

  it("reads what qemu-io wrote", async () => {
    const p = join(dir.path, "b.qcow2");
    qemuImg("create", "-f", "qcow2", p, "16M");
    qemuIo(p, ["write -P 0xab 1000 300000", "write -z 65536 65536", "write -P 0x11 5M 64k", "discard 5M 64k"]);
    const raw = qemuRaw(p, join(dir.path, "b.raw"));
    const img = await openImage(p, { readOnly: true });
    const got = new Uint8Array(16 << 20);
    await img.read(0, got);
    await img.close();
    expect(firstDiff(got, raw)).toBe(-1);
    writeFileSync(join(dir.path, "x"), "");
  });
});
