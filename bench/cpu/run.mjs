#!/usr/bin/env node
// CPU benchmark: the same guest (workload.asm: an integer sieve that fits in
// cache, then a loop over a 32 MiB array) on our vCPU (its block compiler
// on, the default, and off: the interpreter alone), on v86 with and without
// its JIT, and on QEMU TCG, in one run. Prints guest MIPS per phase and our
// speed (compiler on) relative to each engine.
//
//   node bench/cpu/run.mjs [--sieve=N] [--array=N] [--json]
//
// Instruction counts come from our interpreter (exact, per phase between
// the port-0x510 markers) and are used for every engine. v86 reports its own counter. QEMU's time per
// phase is the difference between runs with and without that phase.
// Times are CPU time (user + system) of the engine's process, so other load
// on the machine does not skew the ratios; wall-clock MIPS are printed too.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const { values: args } = parseArgs({
  options: { sieve: { type: "string", default: "2000" }, array: { type: "string", default: "6" }, json: { type: "boolean", default: false }, skip: { type: "string", default: "" } },
});
const SIEVE = Number(args.sieve);
const ARRAY = Number(args.array);
const skip = new Set(args.skip.split(",").filter(Boolean));
const dir = mkdtempSync(join(tmpdir(), "tv-bench-cpu-"));
const log = (...a) => args.json || console.log(...a);

function build(sieve, array) {
  const out = join(dir, `w-${sieve}-${array}.bin`);
  execFileSync("nasm", ["-f", "bin", `-DSIEVE_REPS=${sieve}`, `-DARRAY_REPS=${array}`, join(here, "workload.asm"), "-o", out]);
  return out;
}

// ---------------------------------------------------------------- ours
async function runOurs(image, jit) {
  const { createMachine, X86_CPU_CONTROL } = await import("@typevisor/hv-core");
  const { PHYSICAL_MEMORY } = await import("@typevisor/mmu-ept");
  const { x86Cpu, X86_CPUS } = await import("@typevisor/cpu-x86");
  const vm = await createMachine({ memory: "128M", plugins: [x86Cpu(jit ? {} : { jit: false })] });
  const cpu = vm.services.get(X86_CPUS)[0];
  const marks = [];
  vm.ports.register("marker", 0x510, 1, { read: () => 0, write: (_o, _s, v) => (marks[v] = mark(cpu.instructions + cpu.sliceCount)) });
  vm.ports.register("exit", 0xf4, 4, { read: () => 0, write: (_o, _s, v) => vm.requestStop({ reason: "exit", exitCode: (v << 1) | 1 }) });
  const bytes = readFileSync(image);
  vm.services.get(PHYSICAL_MEMORY).write(0x100000, bytes);
  const flat = (selector, access) => ({ selector, base: 0, limit: 0xffffffff, access, flags: 0xc });
  vm.services.get(X86_CPU_CONTROL).applyBootState(0, {
    eip: new DataView(bytes.buffer, bytes.byteOffset).getUint32(28, true),
    cr0: 0x11,
    regs: { eax: 0x2badb002 },
    segments: { cs: flat(0x08, 0x9b), ds: flat(0x10, 0x93), es: flat(0x10, 0x93), ss: flat(0x10, 0x93) },
  });
  const stop = await vm.run();
  if (stop.exitCode !== 1) throw new Error(`our run ended with ${JSON.stringify(stop)}`);
  return phases(marks);
}

function mark(n) {
  const u = process.cpuUsage();
  return { cpu: (u.user + u.system) / 1000, wall: performance.now(), n };
}

function phases(marks) {
  const phase = (a, b) => ({ ms: marks[b].cpu - marks[a].cpu, wallMs: marks[b].wall - marks[a].wall, instructions: marks[b].n - marks[a].n });
  return { sieve: phase(1, 2), array: phase(3, 4) };
}

// ---------------------------------------------------------------- v86
async function runV86(image, jit) {
  const { V86 } = await import("v86");
  return new Promise((resolve, reject) => {
    const emulator = new V86({
      wasm_path: require.resolve("v86/build/v86.wasm"),
      memory_size: 128 << 20,
      vga_memory_size: 2 << 20,
      multiboot: { buffer: readFileSync(image).buffer },
      autostart: true,
      disable_jit: !jit,
    });
    const marks = [];
    const timer = setTimeout(() => reject(new Error("v86 timed out")), 600_000);
    emulator.add_listener("emulator-ready", () => {
      const io = emulator.v86.cpu.io;
      io.register_write(0x510, {}, (v) => (marks[v] = mark(emulator.get_instruction_counter())));
      io.register_write(0xf4, {}, (v) => {
        clearTimeout(timer);
        emulator.stop();
        if (v !== 0) reject(new Error(`v86 guest reported failure ${v}`));
        else resolve(phases(marks));
      });
    });
  });
}

// ---------------------------------------------------------------- QEMU TCG
function qemuMs(image) {
  // CPU time of QEMU (all its threads) from bash's `times`, and wall time.
  const cmd = `qemu-system-i386 -accel tcg -kernel ${image} -m 128 -display none -serial none -monitor none -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=4; s=$?; times; exit $s`;
  const t0 = performance.now();
  const r = spawnSync("bash", ["-c", cmd], { timeout: 600_000, encoding: "utf8" });
  const wall = performance.now() - t0;
  if (r.status !== 1) throw new Error(`QEMU exited with ${r.status} ${r.stderr}`);
  const sec = (t) => { const m = /(\d+)m([\d.]+)s/.exec(t); return m ? Number(m[1]) * 60 + Number(m[2]) : NaN; };
  const [, children] = r.stdout.trim().split("\n");
  const [user, sys] = children.trim().split(/\s+/).map(sec);
  return { cpu: (user + sys) * 1000, wall };
}

function runQemu(full, sieveOnly, arrayOnly, empty, ours) {
  // Best of 3 for each configuration: start-up time varies by a few ms.
  const best = (img) => {
    const r = [qemuMs(img), qemuMs(img), qemuMs(img)];
    return { cpu: Math.min(...r.map((x) => x.cpu)), wall: Math.min(...r.map((x) => x.wall)) };
  };
  const base = best(empty);
  const s = best(sieveOnly);
  const a = best(arrayOnly);
  return {
    sieve: { ms: s.cpu - base.cpu, wallMs: s.wall - base.wall, instructions: ours.sieve.instructions },
    array: { ms: a.cpu - base.cpu, wallMs: a.wall - base.wall, instructions: ours.array.instructions },
  };
}

const mips = (p) => p.instructions / p.ms / 1000;
const wallMips = (p) => p.instructions / p.wallMs / 1000;

const full = build(SIEVE, ARRAY);
log(`workload: sieve of 8192 x ${SIEVE}, 32 MiB array x ${ARRAY}`);
const results = {};
const interpreter = await runOurs(full, false);
log(`typevisor interpreter: ${interpreter.sieve.instructions} + ${interpreter.array.instructions} instructions`);
results.typevisor = await runOurs(full, true);
// The generated code keeps the instruction count in a local between exits; the interpreter's count is exact.
results.typevisor.sieve.instructions = interpreter.sieve.instructions;
results.typevisor.array.instructions = interpreter.array.instructions;
results["typevisor (interpreter)"] = interpreter;
if (!skip.has("v86-nojit")) results["v86 (JIT off)"] = await runV86(full, false);
if (!skip.has("v86")) results["v86 (JIT on)"] = await runV86(full, true);
if (!skip.has("qemu")) results["QEMU TCG"] = runQemu(full, build(SIEVE, 0), build(0, ARRAY), build(0, 0), results.typevisor);
rmSync(dir, { recursive: true, force: true });

const ours = results.typevisor;
const rows = Object.entries(results).map(([name, r]) => ({
  engine: name,
  sieveMips: +mips(r.sieve).toFixed(1),
  arrayMips: +mips(r.array).toFixed(1),
  sieveWallMips: +wallMips(r.sieve).toFixed(1),
  arrayWallMips: +wallMips(r.array).toFixed(1),
  oursVsThis: name === "typevisor" ? "-" : `${(mips(ours.sieve) / mips(r.sieve)).toFixed(2)}x / ${(mips(ours.array) / mips(r.array)).toFixed(2)}x`,
}));
if (args.json) console.log(JSON.stringify(rows));
else {
  console.log("\nguest MIPS per CPU second (wall-clock MIPS in parentheses)");
  console.log("engine                  sieve MIPS         array MIPS         typevisor speed relative to it (sieve / array)");
  for (const r of rows) console.log(`${r.engine.padEnd(24)}${`${r.sieveMips} (${r.sieveWallMips})`.padEnd(19)}${`${r.arrayMips} (${r.arrayWallMips})`.padEnd(19)}${r.oursVsThis}`);
}
process.exit(0);
