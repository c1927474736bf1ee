// Compiled regions serve aligned accesses to cached pages themselves; a TLB
// miss or a misaligned access (so also one that crosses a page) leaves the
// region before its instruction, which the interpreter then runs from the
// state before it (jit.ts). Loops that mix all of these, including
// read-modify-writes, must leave the registers, flags and memory the
// byte-by-byte interpreter leaves.
import { expect, it } from "vitest";
import { PhysicalMemory } from "@typevisor/mmu-ept";
import { describeWithTools } from "@typevisor/test-support";
import type { CpuOptions } from "../src/index.js";
import { flatCpu } from "./harness/flat-cpu.js";
import { nasmBinary } from "./harness/nasm.js";
import { ENGINES, expectSameState, type RunState } from "./harness/same-state.js";

const ROUNDS = 300;
const DATA = 0x10000; // two pages of data, then the log
const LOG = 0x20000;
const FRESH = 0x100000; // one page per round, first touched in that round
const RAM = 4 << 20;

/** Every access in the loop stays in one page, most of them misaligned. */
const IN_PAGE = `
round:
  mov esi, ecx
  and esi, 0xff
  add esi, 0x10001            ; odd, so every access through it is misaligned
  mov eax, [esi]
  add eax, ecx
  mov [esi+0x801], eax
  mov bx, [esi+2]
  mov [esi+0x403], bx
  add dword [esi+0x205], eax  ; read-modify-write, misaligned
  sub word [esi+0x607], bx
  inc dword [esi+0x902]
  xor eax, [esi+0x301]
  mov [ebp], eax
  mov [ebp+4], ebx
  pushfd
  pop dword [ebp+8]
  add ebp, 12
  dec ecx
  jnz round
  hlt
`;

/** The same, with accesses that cross pages and a first touch of a new page every round. */
const CROSSING = `
round:
  mov esi, ecx
  and esi, 0xff
  add esi, 0x10001
  mov eax, [esi]
  add eax, ecx
  mov [esi+0x801], eax
  mov edx, [0x10ffe]          ; crosses into the second data page
  xor edx, ecx
  mov [0x10ffd], edx
  add dword [0x10fff], ecx    ; read-modify-write across the pages
  mov edi, ecx
  shl edi, 12
  add edi, ${FRESH + 0xffe}   ; the last bytes of page ${FRESH >> 12} + ECX, and the next page
  mov [edi], eax              ; a TLB miss and a page crossing at once
  add [edi-0x800], edx        ; a TLB hit now
  mov ebx, [edi-0x7ff]
  mov [ebp], eax
  mov [ebp+4], ebx
  mov [ebp+8], edx
  pushfd
  pop dword [ebp+12]
  add ebp, 16
  dec ecx
  jnz round
  hlt
`;

function assemble(body: string): Uint8Array {
  return nasmBinary(`bits 32\norg 0x1000\n  mov ebp, ${LOG}\n  mov ecx, ${ROUNDS}\n${body}`);
}

interface Outcome extends RunState {
  interpreted: number;
  compiled: number;
}

/** Runs the program in slices (decoded blocks, compiled ones with a JIT), or with `step` one instruction at a time through the byte-by-byte interpreter. */
function run(code: Uint8Array, options: CpuOptions, step = false): Outcome {
  const memory = new PhysicalMemory({ ramSize: RAM });
  memory.write(0x1000, code);
  const data = new Uint8Array(0x2000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37 + 11) & 0xff;
  memory.write(DATA, data);
  const cpu = flatCpu(memory, 0x1000, 0x8000, options);
  if (step) for (let guard = 0; !cpu.halted && guard < 1_000_000; guard++) cpu.step();
  else for (let guard = 0; !cpu.halted && guard < 10_000; guard++) cpu.runSlice(1000);
  expect(cpu.halted).toBe(true);
  const out = new Uint8Array(RAM - DATA);
  memory.read(DATA, out);
  return {
    regs: Array.from(cpu.regs.slice(0, 8)),
    flags: cpu.getFlags(),
    memory: out,
    interpreted: cpu.jit?.interpreted ?? 0,
    compiled: cpu.jit?.compiledInstructions ?? 0,
  };
}

/** Runs `code` interpreted, from records and compiled; each must match the byte-by-byte interpreter, and `compiled` checks what the block compiler's runs counted. */
function checkAgainstInterpreter(code: Uint8Array, compiled: (got: Outcome, label: string) => void): void {
  const reference = run(code, { jit: false }, true);
  for (const options of ENGINES) {
    const got = run(code, options);
    const label = JSON.stringify(options);
    expectSameState(got, reference, label, DATA);
    if (options.jit !== false) compiled(got, label);
  }
}

describeWithTools(["nasm"], "slow paths of compiled regions", () => {
  it("misaligned accesses inside a page leave for the interpreter and match it", () => {
    checkAgainstInterpreter(assemble(IN_PAGE), (got, label) => {
      // Every round leaves at its first misaligned access, after its three aligned-free instructions ran compiled.
      expect(got.interpreted, label).toBeGreaterThanOrEqual(ROUNDS - 10);
      expect(got.compiled, label).toBeGreaterThanOrEqual((ROUNDS - 10) * 3);
    });
  });

  it("page crossings and TLB misses leave for the interpreter and resume compiled", () => {
    checkAgainstInterpreter(assemble(CROSSING), (got, label) => {
      // Every round leaves at its first crossing; the rest of the round's block runs interpreted.
      expect(got.interpreted, label).toBeGreaterThanOrEqual(ROUNDS);
      expect(got.compiled, label).toBeGreaterThan(ROUNDS * 3);
    });
  });
});
