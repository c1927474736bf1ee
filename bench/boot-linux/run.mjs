// Linux boot: the same Debian i386 kernel, busybox initramfs and command line
// on typevisor, on v86 (npm v86 with Debian's SeaBIOS, JIT on) and on QEMU TCG
// (qemu-system-i386), in one run. Prints the seconds from start to the first
// line the guest's /init prints, and the ratios. For typevisor and v86 it also
// prints when the kernel's own code first ran (the bzImage decompressor is
// done: two very different workloads, one hot loop and code that mostly runs
// once), and for typevisor what share ran as compiled code and how often the
// run loop dispatched, which is where to look first when the ratio moves.
//
//   npm run boot-linux -w @typevisor/bench [-- --skip=v86,qemu] [-- --append="..."]
//
// The guest (kernel + busybox) is fetched and cached by the pc package, like
// `typevisor guest fetch`. Every engine gets the same command line; the
// marker is the first line of /init's output ("tv: exec: ...").
import { spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createMachine } from "@typevisor/hv-core";
import { x86Cpu } from "@typevisor/cpu-x86";
import { busyboxInitramfs, fetchDebianGuest, linuxBoot, pcPlatform } from "@typevisor/pc";

const require = createRequire(import.meta.url);
const args = Object.fromEntries(process.argv.slice(2).map((a) => a.replace(/^--/, "").split(/=(.*)/s)));
const skip = new Set((args.skip ?? "").split(",").filter(Boolean));
const MARKER = "tv: exec:";
const CMDLINE = `console=ttyS0 ${args.append ?? ""} tv.exec="poweroff -f"`.replace(/\s+/g, " ");
const MEMORY = 256 << 20;
const LIMIT_S = Number(args.limit ?? 900);

const guest = await fetchDebianGuest({ onProgress: (l) => console.error(`guest: ${l}`) });
const kernel = readFileSync(guest.kernel);
const initrd = await busyboxInitramfs({ busybox: readFileSync(guest.busybox) }).toGzip();
console.log(`kernel ${guest.kernelRelease}, initramfs ${(initrd.length / 1024).toFixed(0)} KiB, cmdline: ${CMDLINE}`);

/** Watches a byte stream for the marker line; resolves with seconds since `t0`. */
function watcher(t0) {
  let text = "";
  let resolve;
  const done = new Promise((r) => (resolve = r));
  return {
    done,
    feed(bytes) {
      text += Buffer.from(bytes).toString("latin1");
      if (text.length > 1 << 20) text = text.slice(-4096);
      if (text.includes(MARKER)) resolve((performance.now() - t0) / 1000);
    },
  };
}

function withLimit(promise, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no "${MARKER}" within ${LIMIT_S} s`)), LIMIT_S * 1000))),
  ]).finally(() => clearTimeout(timer));
}

/**
 * Notes when the guest first runs at a kernel virtual address (0xC0000000
 * up): the bzImage's decompressor (physical addresses) is done and the
 * kernel proper runs. Sampled every 10 ms.
 */
function kernelEntryWatch(t0, ip, instructions) {
  const at = { seconds: 0, instructions: 0 };
  const timer = setInterval(() => {
    if (at.seconds === 0 && ip() >>> 0 >= 0xc0000000) {
      at.seconds = (performance.now() - t0) / 1000;
      at.instructions = instructions();
    }
  }, 10);
  return { at, stop: () => clearInterval(timer) };
}

/** The decompression split as a note suffix (empty when the kernel entry was not seen). */
function split(at) {
  return at.seconds > 0 ? `; kernel decompressed at ${at.seconds.toFixed(1)} s (${(at.instructions / 1e9).toFixed(2)} G instructions)` : "";
}

async function typevisor() {
  const t0 = performance.now();
  const w = watcher(t0);
  const cpu0 = process.cpuUsage();
  const vm = await createMachine({ memory: MEMORY, plugins: [x86Cpu(), pcPlatform({ serial: { write: (d) => w.feed(d) } })] });
  const cpu = vm.vcpus[0];
  const entry = kernelEntryWatch(t0, () => cpu.eip, () => vm.instructions);
  await vm.boot(linuxBoot({ kernel, initrd, cmdline: CMDLINE }));
  const s = await withLimit(w.done, "typevisor").finally(entry.stop);
  const instructions = vm.instructions;
  await vm.stop();
  const u = process.cpuUsage(cpu0);
  // Where the time goes, from the vCPU's own counters: how much ran as compiled code, and how often the run loop dispatched.
  const jit = cpu.jit;
  const compiled = jit ? `, ${((100 * jit.compiledInstructions) / instructions).toFixed(0)}% in compiled code, ${(instructions / Math.max(1, jit.dispatches)).toFixed(0)} instructions per dispatch, ${jit.compiled} regions compiled` : "";
  return { seconds: s, note: `${(instructions / 1e9).toFixed(2)} G instructions, ${(instructions / 1e6 / ((u.user + u.system) / 1e6)).toFixed(0)} MIPS per CPU second${compiled}${split(entry.at)}` };
}

async function v86() {
  const { V86 } = await import("v86");
  const bios = "/usr/share/seabios/bios-256k.bin";
  const vgabios = "/usr/share/seabios/vgabios-stdvga.bin";
  if (!existsSync(bios)) throw new Error("SeaBIOS missing (apt-get install seabios)");
  const t0 = performance.now();
  const w = watcher(t0);
  const emulator = new V86({
    wasm_path: require.resolve("v86/build/v86.wasm"),
    memory_size: MEMORY,
    vga_memory_size: 8 << 20,
    bios: { buffer: readFileSync(bios).buffer },
    vga_bios: { buffer: readFileSync(vgabios).buffer },
    bzimage: { buffer: kernel.buffer.slice(kernel.byteOffset, kernel.byteOffset + kernel.byteLength) },
    initrd: { buffer: initrd.buffer.slice(initrd.byteOffset, initrd.byteOffset + initrd.byteLength) },
    cmdline: CMDLINE,
    autostart: true,
    disable_speaker: true,
  });
  emulator.add_listener("serial0-output-byte", (b) => w.feed([b]));
  // v86's instruction counter is 32 bits wide and wraps every 4.3 G: sample it often enough to count the wraps.
  let instructions = 0;
  let last = 0;
  const sample = () => {
    const now = emulator.get_instruction_counter() >>> 0;
    instructions += (now - last + 2 ** 32) % 2 ** 32;
    last = now;
  };
  const sampler = setInterval(sample, 100);
  const entry = kernelEntryWatch(t0, () => emulator.v86?.cpu?.instruction_pointer?.[0] ?? 0, () => (sample(), instructions));
  try {
    const s = await withLimit(w.done, "v86");
    sample();
    return { seconds: s, note: `${(instructions / 1e9).toFixed(2)} G instructions${split(entry.at)}` };
  } finally {
    entry.stop();
    clearInterval(sampler);
    await emulator.destroy?.();
    emulator.stop?.();
  }
}

async function qemu() {
  const dir = mkdtempSync(join(tmpdir(), "tv-boot-"));
  try {
    writeFileSync(join(dir, "initrd.gz"), initrd);
    const t0 = performance.now();
    const w = watcher(t0);
    const child = spawn("qemu-system-i386", ["-accel", "tcg", "-m", String(MEMORY >> 20), "-kernel", guest.kernel, "-initrd", join(dir, "initrd.gz"), "-append", CMDLINE, "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot"], { stdio: ["ignore", "pipe", "inherit"] });
    child.stdout.on("data", (d) => w.feed(d));
    try {
      return { seconds: await withLimit(w.done, "QEMU"), note: "" };
    } finally {
      child.kill("SIGKILL");
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const results = {};
for (const [name, fn] of [["typevisor", typevisor], ["v86 (JIT on, SeaBIOS)", v86], ["QEMU TCG", qemu]]) {
  const key = name.split(" ")[0].toLowerCase();
  if (skip.has(key)) continue;
  try {
    results[name] = await fn();
    console.log(`${name.padEnd(24)} ${results[name].seconds.toFixed(1).padStart(7)} s to /init  ${results[name].note}`);
  } catch (e) {
    console.log(`${name.padEnd(24)} failed: ${e.message}`);
  }
}
const ours = results.typevisor?.seconds;
if (ours) {
  console.log("\nratios (peer seconds / typevisor seconds; above 1 means typevisor is faster):");
  for (const [name, r] of Object.entries(results)) if (name !== "typevisor") console.log(`  vs ${name}: ${(r.seconds / ours).toFixed(2)}x`);
}
process.exit(0);
