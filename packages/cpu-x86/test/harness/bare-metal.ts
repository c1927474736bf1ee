// Runs a bare-metal multiboot image (a.out kludge, loaded at its header's
// addresses) on our machine and on QEMU TCG, capturing what each writes to
// the debug console (port 0xE9) and how it stops (isa-debug-exit on port
// 0xF4, or shutdown on a triple fault).
import { spawnSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { createMachine, X86_CPU_CONTROL, type StopInfo } from "@typevisor/hv-core";
import { PHYSICAL_MEMORY } from "@typevisor/mmu-ept";
import { X86_CPUS, x86Cpu, type CpuOptions } from "../../src/index.js";

/** What a bare-metal run printed and how it ended. */
export interface BareMetalRun {
  output: string;
  /** "exit N" (isa-debug-exit value) or "shutdown" (triple fault). */
  end: string;
  /** Instructions the block compiler's generated code retired (ours only). */
  compiled?: number;
}

/** Parses the multiboot header (flags bit 16: addresses in the header) of a flat image. */
function multiboot(image: Uint8Array): { load: number; fileOffset: number; entry: number } {
  const dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  for (let off = 0; off + 32 <= Math.min(image.length, 8192); off += 4) {
    if (dv.getUint32(off, true) !== 0x1badb002) continue;
    const flags = dv.getUint32(off + 4, true);
    if (((dv.getUint32(off, true) + flags + dv.getUint32(off + 8, true)) >>> 0) !== 0) continue;
    if (!(flags & 0x10000)) throw new Error("multiboot header without load addresses");
    const headerAddr = dv.getUint32(off + 12, true);
    const loadAddr = dv.getUint32(off + 16, true);
    return { load: loadAddr, fileOffset: off - (headerAddr - loadAddr), entry: dv.getUint32(off + 28, true) };
  }
  throw new Error("no multiboot header");
}

/** Runs `image` on our vCPU (or `vcpus` of them; the others wait for a startup IPI), with the block compiler as `jit` says (default: as the environment says). */
export async function runOurs(image: Uint8Array, maxInstructions = 50_000_000, vcpus = 1, jit?: CpuOptions["jit"]): Promise<BareMetalRun> {
  const vm = await createMachine({ memory: "32M", clock: { mode: "deterministic" }, plugins: [x86Cpu({ vcpus, ...(jit !== undefined ? { jit } : {}) })] });
  let output = "";
  vm.ports.register("debugcon", 0xe9, 1, { read: () => 0xe9, write: (_o, _s, v) => void (output += String.fromCharCode(v)) });
  vm.ports.register("debug-exit", 0xf4, 4, { read: () => 0xff, write: (_o, _s, v) => vm.requestStop({ reason: "exit", exitCode: (v << 1) | 1 }) });
  const mem = vm.services.get(PHYSICAL_MEMORY);
  const mb = multiboot(image);
  mem.write(mb.load, image.subarray(mb.fileOffset));
  const flat = (selector: number, access: number) => ({ selector, base: 0, limit: 0xffffffff, access, flags: 0xc });
  vm.services.get(X86_CPU_CONTROL).applyBootState(0, {
    eip: mb.entry,
    cr0: 0x11,
    regs: { eax: 0x2badb002, ebx: 0 },
    segments: { cs: flat(0x08, 0x9b), ds: flat(0x10, 0x93), es: flat(0x10, 0x93), fs: flat(0x10, 0x93), gs: flat(0x10, 0x93), ss: flat(0x10, 0x93) },
  });
  // A backstop only (the instruction guard below bounds a runaway program):
  // long enough for a loaded CI machine compiling every block at once.
  const limit = setTimeout(() => vm.requestStop({ reason: "timeout", message: "no exit within 50 s" }), 50_000);
  const guard = setInterval(() => {
    if (vm.instructions > maxInstructions) vm.requestStop({ reason: "timeout", message: `more than ${maxInstructions} instructions` });
  }, 50);
  const cpus = vm.services.get(X86_CPUS);
  let stop: StopInfo;
  try {
    stop = await vm.run();
  } finally {
    clearTimeout(limit);
    clearInterval(guard);
  }
  const end = stop.reason === "exit" ? `exit ${stop.exitCode}` : stop.reason === "shutdown" ? "shutdown" : `${stop.reason}: ${stop.message ?? ""}`;
  const compiled = cpus.reduce((sum, cpu) => sum + (cpu.jit?.compiledInstructions ?? 0), 0);
  return { output, end, compiled };
}

/** Runs `image` (a file) on QEMU TCG with -no-reboot (a triple fault ends the process with status 0), with `vcpus` CPUs. */
export function runQemu(file: string, dir: string, vcpus = 1): BareMetalRun {
  const out = join(dir, "debugcon.txt");
  rmSync(out, { force: true });
  const r = spawnSync(
    "qemu-system-i386",
    ["-accel", "tcg", "-cpu", "max", "-smp", String(vcpus), "-kernel", file, "-m", "32", "-display", "none", "-serial", "none", "-monitor", "none", "-no-reboot", "-debugcon", `file:${out}`, "-device", "isa-debug-exit,iobase=0xf4,iosize=4"],
    { timeout: 30_000 },
  );
  const output = readFileSync(out, "latin1");
  const end = r.status === 0 ? "shutdown" : `exit ${r.status}`;
  return { output, end };
}
