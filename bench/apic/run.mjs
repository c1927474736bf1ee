#!/usr/bin/env node
// Local APIC benchmark: the same guest (workload.asm: self IPIs taken and
// retired with an EOI, then reads of an APIC register) on our machine and
// on QEMU TCG, in one run. Prints operations per CPU second for each phase
// and our speed relative to QEMU.
//
//   node bench/apic/run.mjs [--ipis=N] [--reads=N] [--json]
//
// Our time per phase comes from port-0x510 markers; QEMU's is the
// difference between runs with and without that phase (best of three).
// Times are CPU time (user + system) of the engine's process, so other load
// on the machine does not skew the ratio; wall-clock rates are printed too.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: { ipis: { type: "string", default: "200000" }, reads: { type: "string", default: "2000000" }, json: { type: "boolean", default: false } },
});
const IPIS = Number(args.ipis);
const READS = Number(args.reads);
const dir = mkdtempSync(join(tmpdir(), "tv-bench-apic-"));
const log = (...a) => args.json || console.log(...a);

function build(ipis, reads) {
  const out = join(dir, `w-${ipis}-${reads}.bin`);
  execFileSync("nasm", ["-f", "bin", `-DIPI_REPS=${ipis}`, `-DMMIO_REPS=${reads}`, join(here, "workload.asm"), "-o", out]);
  return out;
}

function mark() {
  const u = process.cpuUsage();
  return { cpu: (u.user + u.system) / 1000, wall: performance.now() };
}

async function runOurs(image) {
  const { createMachine, X86_CPU_CONTROL } = await import("@typevisor/hv-core");
  const { PHYSICAL_MEMORY } = await import("@typevisor/mmu-ept");
  const { x86Cpu } = await import("@typevisor/cpu-x86");
  const vm = await createMachine({ memory: "32M", plugins: [x86Cpu()] });
  const marks = [];
  vm.ports.register("marker", 0x510, 1, { read: () => 0, write: (_o, _s, v) => (marks[v] = mark()) });
  vm.ports.register("exit", 0xf4, 4, { read: () => 0, write: (_o, _s, v) => vm.requestStop({ reason: "exit", exitCode: (v << 1) | 1 }) });
  const bytes = readFileSync(image);
  vm.services.get(PHYSICAL_MEMORY).write(0x100000, bytes);
  const flat = (selector, access) => ({ selector, base: 0, limit: 0xffffffff, access, flags: 0xc });
  vm.services.get(X86_CPU_CONTROL).applyBootState(0, {
    eip: new DataView(bytes.buffer, bytes.byteOffset).getUint32(28, true),
    cr0: 0x11,
    segments: { cs: flat(0x08, 0x9b), ds: flat(0x10, 0x93), es: flat(0x10, 0x93), ss: flat(0x10, 0x93) },
  });
  const stop = await vm.run();
  if (stop.exitCode !== 1) throw new Error(`our run ended with ${JSON.stringify(stop)}`);
  const phase = (a, b) => ({ ms: marks[b].cpu - marks[a].cpu, wallMs: marks[b].wall - marks[a].wall });
  return { ipi: phase(1, 2), read: phase(3, 4) };
}

function qemuMs(image) {
  // CPU time of QEMU (all its threads) from bash's `times`, and wall time.
  const cmd = `qemu-system-i386 -accel tcg -kernel ${image} -m 32 -display none -serial none -monitor none -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=4; s=$?; times; exit $s`;
  const t0 = performance.now();
  const r = spawnSync("bash", ["-c", cmd], { timeout: 600_000, encoding: "utf8" });
  const wall = performance.now() - t0;
  if (r.status !== 1) throw new Error(`QEMU exited with ${r.status} ${r.stderr}`);
  const sec = (t) => {
    const m = /(\d+)m([\d.]+)s/.exec(t);
    return m ? Number(m[1]) * 60 + Number(m[2]) : NaN;
  };
  const [, children] = r.stdout.trim().split("\n");
  const [user, sys] = children.trim().split(/\s+/).map(sec);
  return { cpu: (user + sys) * 1000, wall };
}

function runQemu() {
  const best = (img) => {
    const r = [qemuMs(img), qemuMs(img), qemuMs(img)];
    return { cpu: Math.min(...r.map((x) => x.cpu)), wall: Math.min(...r.map((x) => x.wall)) };
  };
  const base = best(build(0, 0));
  const i = best(build(IPIS, 0));
  const m = best(build(0, READS));
  return { ipi: { ms: i.cpu - base.cpu, wallMs: i.wall - base.wall }, read: { ms: m.cpu - base.cpu, wallMs: m.wall - base.wall } };
}

log(`workload: ${IPIS} self IPIs (ICR write, delivery, EOI, IRET), ${READS} APIC register reads`);
const results = { typevisor: await runOurs(build(IPIS, READS)), "QEMU TCG": runQemu() };
rmSync(dir, { recursive: true, force: true });

const rate = (n, p) => n / p.ms; // thousands per CPU second
const wallRate = (n, p) => n / p.wallMs;
const ours = results.typevisor;
const rows = Object.entries(results).map(([engine, r]) => ({
  engine,
  ipiKps: +rate(IPIS, r.ipi).toFixed(1),
  readKps: +rate(READS, r.read).toFixed(1),
  ipiWallKps: +wallRate(IPIS, r.ipi).toFixed(1),
  readWallKps: +wallRate(READS, r.read).toFixed(1),
  oursVsThis: engine === "typevisor" ? "-" : `${(rate(IPIS, ours.ipi) / rate(IPIS, r.ipi)).toFixed(2)}x / ${(rate(READS, ours.read) / rate(READS, r.read)).toFixed(2)}x`,
}));
if (args.json) console.log(JSON.stringify(rows));
else {
  console.log("\nthousands per CPU second (wall clock in parentheses)");
  console.log("engine              self IPIs          register reads     typevisor speed relative to it (IPIs / reads)");
  for (const r of rows) console.log(`${r.engine.padEnd(20)}${`${r.ipiKps} (${r.ipiWallKps})`.padEnd(19)}${`${r.readKps} (${r.readWallKps})`.padEnd(19)}${r.oursVsThis}`);
}
process.exit(0);
