// Backing chains, external data files, LUKS, concurrency, storage backends,
// VM state in snapshots and lazy refcounts, each against qemu-img.
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Volume } from "memfs";
import { describeWithTools, seeded, tempDir } from "@typevisor/test-support";
import { afterAll, describe, expect, it } from "vitest";
import { createQcow2, createSnapshot, FileStore, listSnapshots, luksCreateHook, MemoryStore, openImage, Qcow2Error, Qcow2Image, RawImage, readVmState, SourceStore, writeVmState, type FsLike } from "../src/index.js";
import { firstDiff, pattern, qemuCheck, qemuImg, qemuIo, qemuRaw } from "./helpers.js";
import { applyToDevice, applyToMirror, makeWorkload } from "./workload.js";

const dir = tempDir("qcow2-features-");
afterAll(() => dir.remove());
const p = (n: string) => join(dir.path, n);

async function readAll(path: string, o: Parameters<typeof openImage>[1] = {}): Promise<Uint8Array> {
  const img = await openImage(path, { readOnly: true, ...o });
  const b = new Uint8Array(img.size);
  await img.read(0, b);
  await img.close();
  return b;
}

describeWithTools(["qemu-img", "qemu-io"], "backing chains", () => {
  it("reads a qemu chain of depth 4 (qcow2 over qcow2 over raw) and writes on top of it", async () => {
    writeFileSync(p("c0.raw"), pattern(4 << 20, 1));
    qemuImg("create", "-q", "-f", "qcow2", "-b", "c0.raw", "-F", "raw", p("c1.qcow2"));
    qemuIo(p("c1.qcow2"), ["write -P 1 100k 300k", "write -z 1M 128k"]);
    qemuImg("create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", "-b", "c1.qcow2", "-F", "qcow2", p("c2.qcow2"), "6M");
    qemuIo(p("c2.qcow2"), ["write -P 2 5M 64k", "discard 0 64k", "write -c -P 7 2M 4k"]);
    qemuImg("create", "-q", "-f", "qcow2", "-o", "extended_l2=on", "-b", "c2.qcow2", "-F", "qcow2", p("c3.qcow2"));
    qemuIo(p("c3.qcow2"), ["write -P 3 3000 5000", "write -z 3M 2k"]);
    const want = qemuRaw(p("c3.qcow2"), p("c3.raw"));
    expect(firstDiff(await readAll(p("c3.qcow2")), want)).toBe(-1);
    // Our writes over the chain.
    const img = await openImage(p("c3.qcow2"));
    const mirror = want.slice();
    for (const op of makeWorkload(31, img.size, 65536, 50)) {
      await applyToDevice(img, op);
      applyToMirror(mirror, op, 65536);
    }
    await img.close();
    expect(qemuCheck(p("c3.qcow2")).status).toBe(0);
    expect(firstDiff(qemuRaw(p("c3.qcow2"), p("c3b.raw")), mirror)).toBe(-1);
  });

  it("refuses a backing loop and an over-deep chain with typed errors", async () => {
    qemuImg("create", "-q", "-f", "qcow2", p("la.qcow2"), "1M");
    qemuImg("create", "-q", "-f", "qcow2", "-u", "-b", "la.qcow2", "-F", "qcow2", p("lb.qcow2"), "1M");
    qemuImg("rebase", "-u", "-b", "lb.qcow2", "-F", "qcow2", p("la.qcow2"));
    await expect(openImage(p("la.qcow2"))).rejects.toMatchObject({ code: "QCOW2_BACKING_LOOP", field: "backing_file_offset" });
    let prev = "d0.qcow2";
    qemuImg("create", "-q", "-f", "qcow2", p(prev), "1M");
    for (let i = 1; i <= 5; i++) {
      qemuImg("create", "-q", "-f", "qcow2", "-b", prev, "-F", "qcow2", p(`d${i}.qcow2`));
      prev = `d${i}.qcow2`;
    }
    await expect(openImage(p(prev), { maxChainDepth: 3 })).rejects.toMatchObject({ code: "QCOW2_CHAIN_TOO_DEEP" });
    expect((await readAll(p(prev))).length).toBe(1 << 20);
  });
});

describeWithTools(["qemu-img", "qemu-io"], "external data files", () => {
  for (const raw of [false, true]) {
    it(`qemu's data file (data_file_raw=${raw}) reads back; ours passes qemu-img check and compare`, async () => {
      const img0 = p(`df${raw}.qcow2`);
      qemuImg("create", "-q", "-f", "qcow2", "-o", `data_file=${p(`df${raw}.data`)},data_file_raw=${raw ? "on" : "off"}`, img0, "4M");
      qemuIo(img0, ["write -P 5 0 1M", "write -z 512k 64k", "write -P 6 3M 100k"]);
      expect(firstDiff(await readAll(img0), qemuRaw(img0, p(`df${raw}.raw`)))).toBe(-1);

      const ours = p(`odf${raw}.qcow2`);
      const store = await FileStore.open(ours, { create: true });
      const data = await FileStore.open(p(`odf${raw}.data`), { create: true });
      // qemu resolves a relative data file name against its working directory: store it absolute.
      await createQcow2(store, { size: 4 << 20, dataFile: p(`odf${raw}.data`), dataStore: data, dataFileRaw: raw });
      await store.close();
      await data.close();
      const img = await openImage(ours);
      const mirror = new Uint8Array(4 << 20);
      for (const op of makeWorkload(41, img.size, 65536, 40)) {
        await applyToDevice(img, op);
        applyToMirror(mirror, op, 65536);
      }
      await img.close();
      expect(qemuCheck(ours).status).toBe(0);
      expect(firstDiff(qemuRaw(ours, p(`odf${raw}.out`)), mirror)).toBe(-1);
      if (raw) expect(firstDiff(new Uint8Array(readFileSync(p(`odf${raw}.data`))), mirror)).toBe(-1);
    });
  }
});

describeWithTools(["qemu-img", "qemu-io"], "LUKS encryption", () => {
  const secret = ["--object", "secret,id=sec0,data=hunter2"];
  const opts = (f: string) => `driver=qcow2,file.filename=${f},encrypt.key-secret=sec0`;

  it("reads qemu's LUKS image with the passphrase, and refuses a wrong one", async () => {
    const f = p("luks-q.qcow2");
    // qemu calibrates PBKDF2 by CPU time and sometimes fails to measure it
    // on a busy machine ("Unable to get accurate CPU usage"): try again.
    for (let attempt = 0; ; attempt++) {
      try {
        qemuImg("create", "-q", ...secret, "-f", "qcow2", "-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=50", f, "2M");
        break;
      } catch (e) {
        if (attempt >= 4 || !String(e).includes("accurate CPU usage")) throw e;
      }
    }
    execFileSync("qemu-io", [...secret, "--image-opts", "-c", "write -P 0x42 1000 70000", "-c", "write -P 0x17 1M 64k", opts(f)]);
    execFileSync("qemu-img", ["convert", ...secret, "--image-opts", opts(f), "-O", "raw", p("luks-q.raw")]);
    expect(firstDiff(await readAll(f, { passphrase: "hunter2" }), new Uint8Array(readFileSync(p("luks-q.raw"))))).toBe(-1);
    await expect(openImage(f, { passphrase: "wrong" })).rejects.toMatchObject({ code: "QCOW2_LUKS_PASSPHRASE" });
    await expect(openImage(f)).rejects.toMatchObject({ code: "QCOW2_ENCRYPTED" });
  });

  it("writes a LUKS image qemu decrypts to the same data", async () => {
    const f = p("luks-o.qcow2");
    const store = await FileStore.open(f, { create: true });
    await createQcow2(store, { size: 2 << 20, prepare: luksCreateHook("hunter2", { iterations: 2000 }) });
    await store.close();
    const img = await openImage(f, { passphrase: "hunter2" });
    const mirror = new Uint8Array(2 << 20);
    for (const op of makeWorkload(51, img.size, 65536, 30)) {
      await applyToDevice(img, op);
      applyToMirror(mirror, op, 65536);
    }
    await img.close();
    expect(spawnSync("qemu-img", ["check", ...secret, "--image-opts", opts(f)]).status).toBe(0);
    execFileSync("qemu-img", ["convert", ...secret, "--image-opts", opts(f), "-O", "raw", p("luks-o.raw")]);
    expect(firstDiff(new Uint8Array(readFileSync(p("luks-o.raw"))), mirror)).toBe(-1);
    // The data is not in the file in clear.
    const probe = mirror.subarray(mirror.findIndex((b) => b !== 0), mirror.findIndex((b) => b !== 0) + 64);
    expect(readFileSync(f).includes(Buffer.from(probe))).toBe(false);
  });
});

describeWithTools(["qemu-img"], "snapshots with VM state, lazy refcounts", () => {
  it("keeps VM state per snapshot where qemu-img sees its size", async () => {
    const f = p("vm.qcow2");
    qemuImg("create", "-q", "-f", "qcow2", f, "4M");
    const img = (await openImage(f)) as Qcow2Image;
    await img.write(0, pattern(100000, 3));
    const state = pattern(300000, 4);
    await writeVmState(img, 0, state);
    await createSnapshot(img, { name: "with-state", vmStateSize: state.length, vmClockNsec: 5e9 });
    await img.write(0, pattern(100000, 5));
    const back = new Uint8Array(state.length);
    await readVmState(img, "with-state", 0, back);
    expect(firstDiff(back, state)).toBe(-1);
    const snaps = await listSnapshots(img);
    expect(snaps[0]).toMatchObject({ name: "with-state", vmStateSize: 300000, vmClockNsec: 5e9 });
    await img.close();
    expect(qemuCheck(f).status).toBe(0);
    expect(qemuImg("snapshot", "-l", f)).toMatch(/with-state\s+293 KiB/);
  });

  it("a writer that stops without closing leaves the dirty bit; reopening rebuilds the refcounts", async () => {
    const f = p("lazy.qcow2");
    const store = await FileStore.open(f, { create: true });
    await createQcow2(store, { size: 4 << 20, lazyRefcounts: true });
    await store.close();
    const img = await openImage(f);
    await img.write(0, pattern(1 << 20, 9));
    await img.flush();
    // No close: the process "dies" here (the handle is dropped).
    await (img as Qcow2Image).store.close();
    expect(qemuImg("info", "--output=json", f)).toContain('"dirty-flag": true');
    const again = await openImage(f);
    await again.close();
    expect(qemuCheck(f).status).toBe(0);
    expect(firstDiff(await readAll(f), (() => {
      const m = new Uint8Array(4 << 20);
      m.set(pattern(1 << 20, 9));
      return m;
    })())).toBe(-1);
  });
});

describe("block device behaviour", () => {
  it("many requests in flight give the same result as running them one by one", async () => {
    const store = new MemoryStore();
    await createQcow2(store, { size: 16 << 20, clusterSize: 4096 });
    const img = await Qcow2Image.open(store);
    const mirror = new Uint8Array(16 << 20);
    const next = seeded(99);
    for (let round = 0; round < 20; round++) {
      // Non-overlapping requests, started together.
      const slots = new Set<number>();
      const jobs: Promise<void>[] = [];
      for (let k = 0; k < 16; k++) {
        const slot = next() % 256;
        if (slots.has(slot)) continue;
        slots.add(slot);
        const off = slot * 65536 + (next() % 30000);
        const len = 1 + (next() % 30000);
        if (next() % 3 === 0) {
          const want = mirror.slice(off, off + len);
          const got = new Uint8Array(len);
          jobs.push(img.read(off, got).then(() => expect(firstDiff(got, want)).toBe(-1)));
        } else if (next() % 5 === 0) {
          jobs.push(img.writeZeroes(off, len));
          mirror.fill(0, off, off + len);
        } else {
          const d = pattern(len, next());
          jobs.push(img.write(off, d));
          mirror.set(d, off);
        }
      }
      await Promise.all(jobs);
    }
    const all = new Uint8Array(16 << 20);
    await img.read(0, all);
    expect(firstDiff(all, mirror)).toBe(-1);
    await img.close();
  });

  it("works on memfs, and read-only on a Blob (as a browser File)", async () => {
    const vol = new Volume();
    vol.mkdirSync("/d", { recursive: true });
    const fs = vol as unknown as FsLike;
    const s = await FileStore.open("/d/m.qcow2", { create: true, fs });
    await createQcow2(s, { size: 1 << 20 });
    await s.close();
    const img = await openImage("/d/m.qcow2", { fs });
    await img.write(4096, pattern(10000, 1));
    await img.close();
    const bytes = vol.readFileSync("/d/m.qcow2") as Buffer;
    const blobImg = await Qcow2Image.open(new SourceStore(new Blob([bytes])));
    expect(blobImg.readOnly).toBe(true);
    const got = new Uint8Array(10000);
    await blobImg.read(4096, got);
    expect(firstDiff(got, pattern(10000, 1))).toBe(-1);
    await expect(blobImg.write(0, new Uint8Array(1))).rejects.toBeInstanceOf(Qcow2Error);
    const raw = new RawImage(new MemoryStore(new Uint8Array(8192)));
    await raw.write(100, Uint8Array.of(1, 2, 3));
    const r = new Uint8Array(3);
    await raw.read(100, r);
    expect([...r]).toEqual([1, 2, 3]);
    await expect(raw.read(8190, new Uint8Array(4))).rejects.toMatchObject({ code: "QCOW2_OUT_OF_RANGE" });
  });
});

