// Segment limit and type checks against the real CPU. QEMU TCG does not
// check segment limits, so the oracle is this machine's CPU: each case is a
// static i386 program that installs an LDT descriptor with modify_ldt(2)
// (data, expand-down data or code; read-only or writable; 16/32-bit; byte or
// page granular; present or not), loads it into a segment register and
// accesses memory near the limit. Natively a fault kills the process with
// SIGSEGV (#GP) or SIGBUS (#SS, #NP); on our vCPU the exception is
// intercepted and mapped the way Linux maps it. Outcomes must agree.
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { seeded, tempDir } from "@typevisor/test-support";
import { buildElf } from "./differential.js";
import { runUserElf } from "../harness/user-mode.js";

/** One generated segment case. */
export interface SegCase {
  contents: number;
  readOnly: number;
  big: number;
  pages: number;
  notPresent: number;
  limit: number;
  seg: string;
  write: boolean;
  size: number;
  offset: number;
}

function makeCase(rng: () => number): SegCase {
  const pick = <T>(a: T[]): T => a[rng() % a.length];
  const contents = pick([0, 0, 1, 1, 2]);
  const limit = pick([0, 1, 3, 0xff, 0x7ff, 0xfff, 0x1000, 0x1003, 0x8000, 0xfffe, 0xffff]);
  const big = rng() % 2;
  const size = pick([1, 2, 4]);
  const seg = contents === 2 ? pick(["es", "fs", "gs", "ds"]) : pick(["es", "fs", "gs", "ds", "ss"]);
  let offset: number;
  if (contents === 1 && rng() % 2) offset = (big ? limit + 0x100 : 0xffff) - (rng() % 6);
  else offset = Math.max(0, limit - 4 + (rng() % 8));
  return { contents, readOnly: rng() % 3 === 0 ? 1 : 0, big, pages: rng() % 8 === 0 ? 1 : 0, notPresent: rng() % 12 === 0 ? 1 : 0, limit, seg, write: rng() % 2 === 1, size, offset };
}

function source(c: SegCase): string {
  const flags = c.big | (c.contents << 1) | (c.readOnly << 3) | (c.pages << 4) | (c.notPresent << 5);
  const reg = c.size === 1 ? "al" : c.size === 2 ? "ax" : "eax";
  const access = c.write ? `mov [${c.seg}:${c.offset}], ${reg}` : `mov ${reg}, [${c.seg}:${c.offset}]`;
  return [
    "bits 32",
    "global _start",
    "section .bss",
    "alignb 4096",
    "area: resb 0x14000",
    "section .data",
    "desc: dd 0, area, " + c.limit + ", " + flags,
    "section .text",
    "_start:",
    "  mov eax, 123",
    "  mov ebx, 1",
    "  mov ecx, desc",
    "  mov edx, 16",
    "  int 0x80",
    "  mov bx, 7",
    `  mov ${c.seg}, bx`,
    `  ${access}`,
    "  mov bx, ds",
    "  mov eax, 1",
    "  xor ebx, ebx",
    "  int 0x80",
  ].join("\n") + "\n";
}

/** Runs `count` seeded cases; returns the first disagreement (or undefined) and how many faulted natively. */
export function runSegmentCases(seed: number, count: number): { mismatch?: string; faults: number } {
  const dir = tempDir("tv-seg-");
  try {
    const rng = seeded(seed);
    let faults = 0;
    for (let i = 0; i < count; i++) {
      const c = makeCase(rng);
      const exe = buildElf(dir.path, `seg${i}`, source(c));
      const native = spawnSync(exe);
      const nat = native.signal ?? `exit ${native.status}`;
      const r = runUserElf(readFileSync(exe), 1000);
      const ours = r.signal ?? `exit ${r.exitCode}`;
      if (nat !== "exit 0") faults++;
      if (ours !== nat) return { mismatch: `seed ${seed} case ${i}: ${JSON.stringify(c)}: native ${nat}, ours ${ours}\n${source(c)}`, faults };
    }
    return { faults };
  } finally {
    dir.remove();
  }
}
