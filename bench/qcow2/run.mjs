// qcow2 I/O: @typevisor/qcow2 against qemu-img on the same files, in one run.
//   npm run qcow2 -w @typevisor/bench        (QCOW2_BENCH_MB=1024 by default)
// Sequential read and write (1 MiB requests), 4 KiB random read and write
// (64 KiB clusters, the whole L2 table set cached), and a compressed convert.
// Prints MiB/s or IOPS for both and the ratio ours/qemu (higher is better).
// Each figure is the best of 2 or 3 runs, after a sync, because the machine
// may be shared and background writeback would penalise whoever runs next.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { createQcow2, FileStore, openImage, Qcow2Image } from "@typevisor/qcow2";

const MB = 1 << 20;
const SIZE = Number(process.env.QCOW2_BENCH_MB ?? 1024) * MB;
const RANDOM_OPS = Number(process.env.QCOW2_BENCH_RANDOM_OPS ?? 40000);
const DEPTH = 8;
const STEP = 4096 * 99991; // a prime number of 4 KiB blocks: visits blocks in scrambled order
const dir = mkdtempSync(join(tmpdir(), "qcow2-bench-"));
const rows = [];

/** Writes back all dirty pages, so neither side pays for the other's writes. */
function settle() {
  execFileSync("sync");
}

/** Best (shortest) of `n` timings: the machine may be shared; noise only slows runs down. */
async function best(n, fn) {
  let t = Infinity;
  for (let i = 0; i < n; i++) {
    const x = await fn(i);
    if (process.env.QCOW2_BENCH_VERBOSE) console.log(`  run ${i}: ${x.toFixed(3)} s`);
    t = Math.min(t, x);
  }
  return t;
}

function qemuBench(args) {
  settle();
  const out = execFileSync("qemu-img", ["bench", "-f", "qcow2", "-t", "writeback", "-d", String(DEPTH), ...args], { encoding: "utf8" });
  const m = /Run completed in ([\d.]+) seconds/.exec(out);
  if (!m) throw new Error(`unexpected qemu-img bench output: ${out}`);
  return Number(m[1]);
}

function time(fn) {
  settle();
  const t = process.hrtime.bigint();
  return Promise.resolve(fn()).then(() => Number(process.hrtime.bigint() - t) / 1e9);
}

/** Runs `count` requests with DEPTH in flight; `op(i)` starts request i. */
async function inFlight(count, op) {
  let next = 0;
  const worker = async () => {
    while (next < count) await op(next++);
  };
  await Promise.all(Array.from({ length: DEPTH }, worker));
}

async function fresh(name) {
  const f = join(dir, name);
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-o", "cluster_size=64k", f, String(SIZE)]);
  return f;
}

function report(name, unit, ours, qemu) {
  rows.push({ name, unit, ours, qemu });
  const f = (v) => (unit === "IOPS" ? v.toFixed(0) : v.toFixed(1));
  console.log(`${name.padEnd(36)} ours ${f(ours).padStart(9)} ${unit}   qemu-img ${f(qemu).padStart(9)} ${unit}   ratio ${(ours / qemu).toFixed(2)}x`);
}

try {
  console.log(`qcow2 benchmark: ${SIZE / MB} MiB image, 64 KiB clusters, queue depth ${DEPTH}, qemu-img ${execFileSync("qemu-img", ["--version"], { encoding: "utf8" }).split("\n")[0].replace("qemu-img version ", "")}`);
  const seqCount = SIZE / MB;
  // Each of our runs uses Node's async file I/O (the default), then
  // synchronous pread/pwrite (FileStore syncIo) on a separate image.
  for (const syncIo of [false, true]) {
    const tag = syncIo ? " (syncIo)" : "";
    // Sequential write into empty images (best of 2, fresh image each time).
    // Each image is deleted before the next run: the page cache of this
    // machine may be small, and a full cache slows the next writer down.
    const tq = await best(2, async () => {
      const qw = await fresh("qw.qcow2");
      const t = qemuBench(["-w", "-s", "1M", "-c", String(seqCount), qw]);
      rmSync(qw);
      return t;
    });
    let img;
    let ow;
    const to = await best(2, async (k) => {
      if (img) {
        await img.close();
        rmSync(ow);
      }
      ow = await fresh(`ow${syncIo}${k}.qcow2`);
      img = await openImage(ow, { syncIo });
      const buf = new Uint8Array(MB).fill(0xa5);
      // Neither side syncs inside the timed part (qemu-img bench does not flush).
      return time(() => inFlight(seqCount, (i) => img.write(i * MB, buf)));
    });
    report(`sequential write 1 MiB${tag}`, "MiB/s", SIZE / MB / to, SIZE / MB / tq);
    await img.flush(); // qemu-img reads this file next: our metadata must be on disk

    // Sequential read of the image just written.
    const tqr = await best(2, () => qemuBench(["-s", "1M", "-c", String(seqCount), ow]));
    const bufs = Array.from({ length: DEPTH }, () => new Uint8Array(MB));
    const tor = await best(2, () => time(() => inFlight(seqCount, (i) => img.read(i * MB, bufs[i % DEPTH]))));
    report(`sequential read 1 MiB${tag}`, "MiB/s", SIZE / MB / tor, SIZE / MB / tqr);

    // 4 KiB random reads and writes on the fully allocated image.
    const small = Array.from({ length: DEPTH }, () => new Uint8Array(4096).fill(7));
    const off = (i) => (i * STEP) % SIZE;
    const tqrr = await best(3, () => qemuBench(["-s", "4k", "-S", String(STEP), "-c", String(RANDOM_OPS), ow]));
    const torr = await best(3, () => time(() => inFlight(RANDOM_OPS, (i) => img.read(off(i), small[i % DEPTH]))));
    report(`random read 4 KiB${tag}`, "IOPS", RANDOM_OPS / torr, RANDOM_OPS / tqrr);
    await img.flush();
    const tqrw = await best(3, () => qemuBench(["-w", "-s", "4k", "-S", String(STEP), "-c", String(RANDOM_OPS), ow]));
    const torw = await best(3, () => time(() => inFlight(RANDOM_OPS, (i) => img.write(off(i), small[i % DEPTH]))));
    report(`random write 4 KiB${tag}`, "IOPS", RANDOM_OPS / torw, RANDOM_OPS / tqrw);
    await img.close();
    for (const f of readdirSync(dir)) if (f.endsWith(".qcow2")) rmSync(join(dir, f));
  }

  // Compressed convert of semi-compressible data (zlib, qemu-img's default).
  const convMB = Math.min(256, SIZE / MB);
  const raw = join(dir, "in.raw");
  const data = new Uint8Array(convMB * MB);
  let s = 12345;
  for (let i = 0; i < data.length; i += 4) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    data[i] = s >>> 24;
    data[i + 1] = i >> 12;
  }
  writeFileSync(raw, data);
  const tqc = await time(() => execFileSync("qemu-img", ["convert", "-c", "-f", "raw", "-O", "qcow2", raw, join(dir, "qc.qcow2")]));
  const tocv = await time(async () => {
    const store = await FileStore.open(join(dir, "oc.qcow2"), { create: true });
    await createQcow2(store, { size: data.length });
    await store.close();
    const out = await openImage(join(dir, "oc.qcow2"), { barriers: false });
    const src = await openImage(raw, { readOnly: true, format: "raw" });
    const cs = out instanceof Qcow2Image ? out.clusterSize : 65536;
    const cbuf = new Uint8Array(cs);
    for (let p = 0; p < data.length; p += cs) {
      await src.read(p, cbuf);
      await out.writeCompressed(p, cbuf);
    }
    await src.close();
    await out.close();
  });
  report("compressed convert (zlib)", "MiB/s", convMB / tocv, convMB / tqc);
  const size = (n) => (statSync(join(dir, n)).size / MB).toFixed(1);
  console.log(`${"".padEnd(36)} output: ours ${size("oc.qcow2")} MiB, qemu-img ${size("qc.qcow2")} MiB (same deflate level 6, 4 KiB window)`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
