// Runs generated x87/MMX/SSE cases natively and on our vCPU and compares the
// full FPU/SIMD state (FXSAVE), the registers, EFLAGS and the memory window.
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { seeded } from "@typevisor/test-support";
import { runUserElf } from "../harness/user-mode.js";
import { buildElf } from "./differential.js";
import { FPU_RECORD, REC_REGS, REC_WIN, assembleFpu, generateFpuCases, type FpuCase } from "./fpu-generate.js";

const NAMES = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eflags"];

/**
 * Whether the host CPU is AMD's. Our vCPU models Intel's FXSAVE image, and
 * two of its fields are model-specific rather than instruction semantics:
 * AMD saves FIP, FDP and FOP only while an x87 exception is pending
 * (FSW.ES set; AMD64 APM Vol. 5, FXSAVE), and its MXCSR_MASK has bit 17
 * (MM, misaligned-access exception mask) that Intel CPUs lack.
 */
const HOST_IS_AMD = (() => {
  try {
    return /^vendor_id\s*:\s*AuthenticAMD$/m.test(readFileSync("/proc/cpuinfo", "latin1"));
  } catch {
    return false;
  }
})();

/** Outcome of one batch. */
export interface FpuBatchResult {
  cases: number;
  mismatch?: string;
  instructions: number;
}

/** The value of an 80-bit register as a double (for tolerance comparisons), or NaN for NaNs/unsupported. */
function f80Value(b: Buffer, o: number): number {
  const lo = b.readUInt32LE(o);
  const hi = b.readUInt32LE(o + 4);
  const se = b.readUInt16LE(o + 8);
  const e = se & 0x7fff;
  const s = se & 0x8000 ? -1 : 1;
  if (e === 0x7fff) return (hi & 0x7fffffff) === 0 && lo === 0 && hi >>> 31 ? s * Infinity : NaN;
  const m = hi * 2 ** 32 + lo;
  return s * m * 2 ** (Math.max(e, 1) - 16383 - 63);
}

function close(x: number, y: number, rel: number): boolean {
  if (Number.isNaN(x) || Number.isNaN(y)) return Number.isNaN(x) && Number.isNaN(y);
  if (x === y) return true;
  return Math.abs(x - y) <= rel * Math.max(Math.abs(x), Math.abs(y));
}

function f80Hex(b: Buffer, o: number): string {
  return `${b.readUInt16LE(o + 8).toString(16).padStart(4, "0")}:${b.readUInt32LE(o + 4).toString(16).padStart(8, "0")}${b.readUInt32LE(o).toString(16).padStart(8, "0")}`;
}

function describeCase(c: FpuCase): string {
  const img = Buffer.from(c.image);
  const cw = img.readUInt16LE(0);
  const sw = img.readUInt16LE(2);
  const st: string[] = [];
  for (let i = 0; i < 8; i++) st.push(`st${i}=${f80Hex(img, 32 + i * 16)}`);
  const xmm: string[] = [];
  for (let i = 0; i < 8; i++) xmm.push(`xmm${i}=${img.subarray(160 + i * 16, 176 + i * 16).toString("hex")}`);
  return `  instruction:\n    ${c.asm.replace(/\n/g, "\n    ")}\n  input: cw=${cw.toString(16)} sw=${sw.toString(16)} ftw=${img[4].toString(16)} mxcsr=${img.readUInt32LE(24).toString(16)}\n    ${st.join(" ")}\n    ${xmm.join(" ")}\n  regs: ${c.regs.map((v) => (v >>> 0).toString(16)).join(" ")} eflags=${c.flags.toString(16)}\n  window: ${Buffer.from(c.window).toString("hex")}`;
}

/**
 * Whether an AMD host's result may differ from Intel's, which our vCPU
 * follows: FPREM/FPREM1 of a denormal by an infinity returns the dividend
 * on Intel, while AMD also signals underflow and, with underflow unmasked,
 * stores it rescaled (seen on an AMD EPYC host).
 */
function amdModelSpecific(c: FpuCase): boolean {
  if (!HOST_IS_AMD || !c.asm.startsWith("fprem")) return false;
  const img = Buffer.from(c.image);
  // The FXSAVE image holds the registers as ST(i).
  const exp = (i: number): number => img.readUInt16LE(32 + i * 16 + 8) & 0x7fff;
  const mant = (i: number): bigint => img.readBigUInt64LE(32 + i * 16);
  return exp(0) === 0 && mant(0) !== 0n && exp(1) === 0x7fff && mant(1) === 1n << 63n;
}

/** Compares one record; returns the differences. */
export function compareRecord(c: FpuCase, a: Buffer, b: Buffer, o: number): string[] {
  const d: string[] = [];
  if (amdModelSpecific(c)) return d;
  const w16 = (k: number): [number, number] => [a.readUInt16LE(o + k), b.readUInt16LE(o + k)];
  const [cwA, cwB] = w16(0);
  if (cwA !== cwB) d.push(`FCW native ${cwA.toString(16)} ours ${cwB.toString(16)}`);
  const [swA, swB] = w16(2);
  if ((swA & ~c.swIgnore) !== (swB & ~c.swIgnore)) d.push(`FSW native ${swA.toString(16)} ours ${swB.toString(16)} (xor ${(swA ^ swB).toString(16)})`);
  if (a[o + 4] !== b[o + 4]) d.push(`FTW native ${a[o + 4].toString(16)} ours ${b[o + 4].toString(16)}`);
  const fipA = a.readUInt32LE(o + 8);
  const fipB = b.readUInt32LE(o + 8);
  const pointersSaved = !HOST_IS_AMD || (swA & 0x80) !== 0;
  if (fipA !== fipB && pointersSaved) d.push(`FIP native ${fipA.toString(16)} ours ${fipB.toString(16)}`);
  const mxA = a.readUInt32LE(o + 24);
  const mxB = b.readUInt32LE(o + 24);
  if (mxA !== mxB) d.push(`MXCSR native ${mxA.toString(16)} ours ${mxB.toString(16)} (xor ${(mxA ^ mxB).toString(16)})`);
  const mmA = a.readUInt32LE(o + 28) & (HOST_IS_AMD ? ~0x20000 : -1);
  const mmB = b.readUInt32LE(o + 28);
  if (mmA !== mmB) d.push(`MXCSR_MASK native ${mmA.toString(16)} ours ${mmB.toString(16)}`);
  for (let i = 0; i < 8; i++) {
    const k = o + 32 + i * 16;
    const same = a.compare(b, k, k + 16, k, k + 16) === 0;
    if (same) continue;
    if (c.approx & (1 << i) && close(f80Value(a, k), f80Value(b, k), 2 ** -50) && a.readUInt16LE(k + 8) >> 15 === b.readUInt16LE(k + 8) >> 15) continue;
    d.push(`ST${i} native ${f80Hex(a, k)} ours ${f80Hex(b, k)}`);
  }
  for (let r = 0; r < 8; r++) {
    for (let l = 0; l < 4; l++) {
      const k = o + 160 + r * 16 + l * 4;
      const x = a.readUInt32LE(k);
      const y = b.readUInt32LE(k);
      if (x === y) continue;
      if (c.approxXmm & (1 << (4 * r + l))) {
        const fx = a.readFloatLE(k);
        const fy = b.readFloatLE(k);
        if (close(fx, fy, 2 ** -11) || (Math.abs(fx) < 2 ** -126 && Math.abs(fy) < 2 ** -126)) continue;
      }
      d.push(`XMM${r}[${l}] native ${x.toString(16)} ours ${y.toString(16)}`);
    }
  }
  for (let r = 0; r < 9; r++) {
    let x = a.readUInt32LE(o + REC_REGS + r * 4);
    let y = b.readUInt32LE(o + REC_REGS + r * 4);
    if (r === 8) {
      x &= ~c.flagsIgnore;
      y &= ~c.flagsIgnore;
    }
    if (x !== y) d.push(`${NAMES[r]} native ${x.toString(16)} ours ${y.toString(16)}`);
  }
  for (let k = 0; k < 128; k++) {
    if (c.windowIgnore.some(([s, e]) => k >= s && k < e)) continue;
    if (a[o + REC_WIN + k] !== b[o + REC_WIN + k]) {
      d.push(`window byte ${k}: native ${a[o + REC_WIN + k].toString(16)} ours ${b[o + REC_WIN + k].toString(16)}`);
      break;
    }
  }
  return d;
}

function disassemble(exe: string, i: number): string {
  const syms = execFileSync("nm", [exe], { encoding: "utf8" });
  const addr = (n: string): string | undefined => syms.split("\n").find((l) => l.endsWith(` ${n}`))?.split(" ")[0];
  const start = addr(`case${i}`);
  const stop = addr(`case${i + 1}`) ?? addr("_start");
  if (!start) return "(no symbol)";
  const args = ["-d", "-M", "intel", `--start-address=0x${start}`];
  if (stop && parseInt(stop, 16) > parseInt(start, 16)) args.push(`--stop-address=0x${stop}`);
  const text = execFileSync("objdump", [...args, exe], { encoding: "utf8" });
  const lines = text.split("\n").filter((l) => /^\s+[0-9a-f]+:/.test(l));
  // Only the instructions under test: between the register setup and the FXSAVE.
  const first = lines.findIndex((l) => /\spopf\s*$/.test(l)) + 8; // after POPFD and the seven register loads
  const last = lines.findIndex((l, k) => k >= first && l.includes("fxsave"));
  return lines.slice(first, last > first ? last : undefined).join("\n");
}

/** Runs one seeded batch; with `all`, collects every mismatching case (up to `limit`). */
export function runFpuBatch(dir: string, seed: number, count: number, mix: "all" | "x87" | "sse" | "mmx" = "all", limit = 1): FpuBatchResult {
  const rng = seeded(seed);
  const cases = generateFpuCases(rng, count, mix);
  const exe = buildElf(dir, `fpu-${mix}-${seed}`, assembleFpu(cases));
  const native = spawnSync(exe, [], { maxBuffer: 256 << 20 });
  if (native.status !== 0) throw new Error(`native run of seed ${seed} failed: status ${native.status} signal ${native.signal}`);
  const ours = runUserElf(readFileSync(exe), 200_000_000, { fpu: true });
  const a = native.stdout as Buffer;
  const b = Buffer.from(ours.stdout);
  if (b.length !== a.length) {
    return { cases: count, mismatch: `output length ${b.length}, native ${a.length}${ours.signal ? ` (ours took ${ours.signal} at eip ${(ours.cpu.eip >>> 0).toString(16)})` : ""}`, instructions: ours.instructions };
  }
  const reports: string[] = [];
  for (let i = 0; i < count && reports.length < limit; i++) {
    const diffs = compareRecord(cases[i], a, b, i * FPU_RECORD);
    if (diffs.length > 0) reports.push(`seed ${seed} case ${i}:\n${describeCase(cases[i])}\n  differences:\n    ${diffs.join("\n    ")}\n  disassembly:\n${disassemble(exe, i)}`);
  }
  return { cases: count, instructions: ours.instructions, mismatch: reports.length ? reports.join("\n\n") : undefined };
}
