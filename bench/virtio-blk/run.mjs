#!/usr/bin/env node
// virtio-blk: the same Debian guest and the same workload on typevisor and
// on QEMU TCG, each with a virtio-blk disk on its own copy of one qcow2
// image, in one run. The guest times three phases itself (/proc/uptime,
// 10 ms resolution):
//   write  dd 256 MiB from /dev/zero to /dev/vda, then fsync
//   read   drop caches, dd 256 MiB from /dev/vda
//   random drop caches, 400 reads of 4 KiB at scattered offsets (one dd each)
// and prints MiB/s, reads/s and the ratios. For typevisor it also prints the
// time the storage backend (the qcow2 library) was busy during the run, from
// `typevisor run --stats`: if that is a small share of the phases' time, the
// device path is not the bottleneck and CPU emulation is.
//
//   npm run virtio-blk -w @typevisor/bench [-- --skip=qemu] [-- --mib=256]
import { execFileSync, spawn } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { busyboxInitramfs, fetchDebianGuest, moduleClosure } from "@typevisor/pc";

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: { skip: { type: "string", default: "" }, mib: { type: "string", default: "256" }, reads: { type: "string", default: "400" }, limit: { type: "string", default: "1800" } },
});
const skip = new Set(args.skip.split(",").filter(Boolean));
const MIB = Number(args.mib);
const READS = Number(args.reads);
const LIMIT_S = Number(args.limit);
const MEMORY_MIB = 512;
const TYPEVISOR = join(here, "../../packages/cli/dist/bin.js");

const guest = await fetchDebianGuest({ onProgress: (l) => console.error(`guest: ${l}`) });
const closure = moduleClosure(guest.modules, ["virtio_pci", "virtio_blk"]);
const files = {};
for (const m of closure) files[`lib/modules/${guest.kernelRelease}/${m.path}`] = readFileSync(join(guest.modules, m.path));
const initrd = await busyboxInitramfs({ busybox: readFileSync(guest.busybox), files, modules: closure.map((m) => m.name) }).toGzip();

// Each phase prints "<name> <start s> <end s>" (guest uptime; busybox date
// has no %N). Offsets of the random reads: a multiplicative walk over the
// disk's 4 KiB blocks.
const blocks = (MIB * 1024) / 4;
const t = "$(cut -d' ' -f1 /proc/uptime)";
const script = [
  `s=${t}; dd if=/dev/zero of=/dev/vda bs=1M count=${MIB} conv=fsync 2>/dev/null; echo tvb-write $s ${t}`,
  `echo 3 > /proc/sys/vm/drop_caches; s=${t}; dd if=/dev/vda of=/dev/null bs=1M count=${MIB} 2>/dev/null; echo tvb-read $s ${t}`,
  `echo 3 > /proc/sys/vm/drop_caches; s=${t}; i=0; while [ $i -lt ${READS} ]; do dd if=/dev/vda of=/dev/null bs=4k count=1 skip=$(( (i * 7919) % ${blocks} )) 2>/dev/null; i=$((i+1)); done; echo tvb-random $s ${t}`,
].join("; ");
const APPEND = "console=ttyS0 cryptomgr.notests";

const dir = mkdtempSync(join(tmpdir(), "tv-bench-blk-"));
const image = join(dir, "disk.qcow2");
execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", image, `${MIB + 64}M`]);
writeFileSync(join(dir, "initrd.gz"), initrd);
console.log(`kernel ${guest.kernelRelease}, ${MEMORY_MIB} MiB RAM, qcow2 ${MIB + 64} MiB (64 KiB clusters), ${MIB} MiB each way, ${READS} random 4 KiB reads`);

/** Runs a command, collecting stdout; rejects after LIMIT_S. */
function collect(cmd, argv) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${cmd}: no result within ${LIMIT_S} s`));
    }, LIMIT_S * 1000);
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    child.on("close", (status) => {
      clearTimeout(timer);
      resolve({ status, out, err });
    });
  });
}

/** Phase times in seconds from the guest's output. */
function phases(out, who) {
  const r = {};
  for (const name of ["write", "read", "random"]) {
    const m = new RegExp(`tvb-${name} ([\\d.]+) ([\\d.]+)`).exec(out);
    if (!m) throw new Error(`${who}: the guest printed no ${name} timing:\n${out.slice(-2000)}`);
    r[name] = Math.max(0.01, Number(m[2]) - Number(m[1]));
  }
  return r;
}

async function typevisor() {
  const disk = join(dir, "typevisor.qcow2");
  copyFileSync(image, disk);
  const stats = join(dir, "stats.json");
  const r = await collect("node", [TYPEVISOR, "run", "--initrd", join(dir, "initrd.gz"), "--append", APPEND, "--exec", script, "--memory", `${MEMORY_MIB}M`, "--disk", disk, "--no-reboot", "--stats", stats]);
  if (r.status !== 0) throw new Error(`typevisor exited with ${r.status}: ${r.err}`);
  const p = phases(r.out, "typevisor");
  const s = JSON.parse(readFileSync(stats, "utf8"));
  return { ...p, backendSeconds: s.disks[0].busySeconds, requests: s.disks[0].requests, cpuSeconds: s.cpuSeconds, wallSeconds: s.wallSeconds };
}

async function qemu() {
  const disk = join(dir, "qemu.qcow2");
  copyFileSync(image, disk);
  const r = await collect("qemu-system-i386", [
    "-accel", "tcg", "-m", String(MEMORY_MIB), "-kernel", guest.kernel, "-initrd", join(dir, "initrd.gz"),
    "-append", `${APPEND} tv.exec="${script}"`, "-drive", `file=${disk},format=qcow2,if=virtio`,
    "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
  ]);
  return phases(r.out, "QEMU");
}

const results = {};
try {
  for (const [name, fn] of [["typevisor", typevisor], ["QEMU TCG", qemu]]) {
    if (skip.has(name.split(" ")[0].toLowerCase())) continue;
    try {
      results[name] = await fn();
    } catch (e) {
      console.log(`${name}: failed: ${e.message}`);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

const row = (p) => ({ write: MIB / p.write, read: MIB / p.read, random: READS / p.random });
console.log("\nengine        write MiB/s   read MiB/s   random 4K reads/s");
for (const [name, p] of Object.entries(results)) {
  const r = row(p);
  console.log(`${name.padEnd(14)}${r.write.toFixed(1).padStart(11)}${r.read.toFixed(1).padStart(13)}${r.random.toFixed(1).padStart(20)}`);
}
const ours = results.typevisor;
const peer = results["QEMU TCG"];
if (ours && peer) {
  const a = row(ours);
  const b = row(peer);
  console.log(`\nratios (typevisor / QEMU TCG; above 1 means typevisor is faster): write ${(a.write / b.write).toFixed(2)}x, read ${(a.read / b.read).toFixed(2)}x, random ${(a.random / b.random).toFixed(2)}x`);
}
if (ours) {
  const phaseSeconds = ours.write + ours.read + ours.random;
  console.log(
    `typevisor: the qcow2 backend was busy ${ours.backendSeconds.toFixed(2)} s of the ${phaseSeconds.toFixed(1)} s the three phases took ` +
      `(${((100 * ours.backendSeconds) / phaseSeconds).toFixed(1)}%; requests ${JSON.stringify(ours.requests)}); ` +
      `the rest is CPU emulation of the guest (its drivers, page cache, dd). Whole run: ${ours.wallSeconds.toFixed(1)} s wall, ${ours.cpuSeconds.toFixed(1)} s CPU.`,
  );
}
process.exit(0);
