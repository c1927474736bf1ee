// Runs generated cases natively and on our vCPU and compares the records.
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { seeded } from "@typevisor/test-support";
import { runUserElf } from "../harness/user-mode.js";
import { RECORD, assemble, generateCases, type DiffCase } from "./generate.js";

const NAMES = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi", "eflags"];

/** Outcome of one batch. */
export interface BatchResult {
  cases: number;
  /** Description of the first mismatch, or undefined when every case agreed. */
  mismatch?: string;
  instructions: number;
  /** Of those, instructions the block compiler's generated code retired. */
  compiled: number;
}

/** Assembles and links `src` into a static i386 ELF in `dir`. */
export function buildElf(dir: string, name: string, src: string): string {
  const asm = join(dir, `${name}.asm`);
  const obj = join(dir, `${name}.o`);
  const exe = join(dir, name);
  writeFileSync(asm, src);
  execFileSync("nasm", ["-f", "elf32", "-O1", asm, "-o", obj]);
  execFileSync("ld", ["-m", "elf_i386", "-o", exe, obj]);
  return exe;
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
  return text.split("\n").filter((l) => /^\s+[0-9a-f]+:/.test(l)).join("\n");
}

function describeCase(c: DiffCase): string {
  const regs = c.regs.map((v, i) => `${NAMES[i]}=${(v >>> 0).toString(16)}`).join(" ");
  return `  instruction:\n    ${c.asm.replace(/\n/g, "\n    ")}\n  input: ${regs} eflags=${c.flags.toString(16)}\n  window: ${Buffer.from(c.window).toString("hex")}`;
}

/** Runs one seeded batch of `count` cases in `dir`. */
export function runBatch(dir: string, seed: number, count: number): BatchResult {
  const rng = seeded(seed);
  const cases = generateCases(rng, count);
  const exe = buildElf(dir, `batch-${seed}`, assemble(cases));
  const native = spawnSync(exe, [], { maxBuffer: 64 << 20 });
  if (native.status !== 0) throw new Error(`native run of seed ${seed} failed: status ${native.status} signal ${native.signal}`);
  const ours = runUserElf(readFileSync(exe));
  const a = native.stdout as Buffer;
  const b = Buffer.from(ours.stdout);
  if (b.length !== a.length) return { cases: count, mismatch: `output length ${b.length}, native ${a.length}`, instructions: ours.instructions, compiled: ours.cpu.jit?.compiledInstructions ?? 0 };
  for (let i = 0; i < count; i++) {
    const c = cases[i];
    const o = i * RECORD;
    const diffs: string[] = [];
    for (let r = 0; r < 9; r++) {
      if (c.undefRegs?.includes(r)) continue;
      let x = a.readUInt32LE(o + r * 4);
      let y = b.readUInt32LE(o + r * 4);
      if (r === 8) {
        x &= ~c.undefFlags;
        y &= ~c.undefFlags;
      }
      if (x !== y) diffs.push(`${NAMES[r]}: native ${x.toString(16)} ours ${y.toString(16)}${r === 8 ? ` (xor ${(x ^ y).toString(16)})` : ""}`);
    }
    for (let k = 0; k < 64; k++) {
      if (a[o + 36 + k] !== b[o + 36 + k]) {
        diffs.push(`memory window byte ${k}: native ${a[o + 36 + k].toString(16)} ours ${b[o + 36 + k].toString(16)}`);
        break;
      }
    }
    if (diffs.length > 0) {
      return {
        cases: count,
        instructions: ours.instructions,
        compiled: ours.cpu.jit?.compiledInstructions ?? 0,
        mismatch: `seed ${seed} case ${i}:\n${describeCase(c)}\n  differences:\n    ${diffs.join("\n    ")}\n  disassembly:\n${disassemble(exe, i)}`,
      };
    }
  }
  return { cases: count, instructions: ours.instructions, compiled: ours.cpu.jit?.compiledInstructions ?? 0 };
}
