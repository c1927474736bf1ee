// MOVS, CMPS, STOS, LODS and SCAS without REP run from decoded records
// (Cpu.stringElement) and, in hot blocks, as compiled code. Loops of them
// (strcmp, strlen, copies up and down, segment overrides) must leave the
// registers, flags and memory the byte-by-byte interpreter leaves.
import { expect, it } from "vitest";
import { PhysicalMemory } from "@typevisor/mmu-ept";
import { describeWithTools } from "@typevisor/test-support";
import type { CpuOptions } from "../src/index.js";
import { flatCpu } from "./harness/flat-cpu.js";
import { nasmBinary } from "./harness/nasm.js";
import { ENGINES, expectSameState, type RunState } from "./harness/same-state.js";

const DATA = 0x10000;
const DATA_SIZE = 0x3000;

// Each loop stores EFLAGS and the registers it used after every round, so a
// difference shows where it first appears.
const PROGRAM = `bits 32
org 0x1000
  mov ebp, 0x12000            ; log
  mov edx, 30                 ; rounds
round:
  ; strcmp: lodsb / scasb / jne / test / jnz, strings that differ after a few bytes
  cld
  lea esi, [0x10000 + edx*8]
  lea edi, [0x10400 + edx*4]
cmp_loop:
  lodsb
  scasb
  jne cmp_done
  test al, al
  jnz cmp_loop
cmp_done:
  pushfd
  pop dword [ebp]
  mov [ebp+4], esi
  mov [ebp+8], edi
  mov [ebp+12], eax
  ; copies down (DF=1) by words, with an ES override on the source
  std
  lea esi, [0x10800 + edx*2]
  lea edi, [0x10c00 + edx*2]
  mov ecx, 9
copy_down:
  es movsw
  dec ecx
  jnz copy_down
  ; compares dwords down, then stores and loads dwords up
  lea esi, [0x10200 + edx*4]
  lea edi, [0x10600 + edx*4]
  cmpsd
  pushfd
  pop dword [ebp+16]
  cld
  mov eax, edx
  imul eax, 0x01010101
  lea edi, [0x11000 + edx*4]
  stosd
  stosb
  lea esi, [0x10100 + edx]
  lodsd
  ss lodsw
  scasd
  pushfd
  pop dword [ebp+20]
  mov [ebp+24], esi
  mov [ebp+28], edi
  mov [ebp+32], eax
  add ebp, 36
  dec edx
  jnz round
  hlt
`;


function data(): Uint8Array {
  const a = new Uint8Array(DATA_SIZE);
  // Mostly equal strings with a difference every 13 bytes and zeros now and then.
  for (let i = 0; i < a.length; i++) a[i] = i % 29 === 28 ? 0 : 0x41 + ((i * 7) % 13);
  for (let i = 0x400; i < 0x800; i++) a[i] = i % 13 === 0 ? 0x5a : a[i - 0x400 + (i % 8 === 0 ? 1 : 0)];
  return a;
}

/** Runs the program in slices (decoded blocks, compiled ones with a JIT), or with `step` one instruction at a time through the byte-by-byte interpreter. */
function run(code: Uint8Array, options: CpuOptions, step = false): RunState {
  const memory = new PhysicalMemory({ ramSize: 1 << 20 });
  memory.write(0x1000, code);
  memory.write(DATA, data());
  const cpu = flatCpu(memory, 0x1000, 0x8000, options);
  if (step) for (let guard = 0; !cpu.halted && guard < 1_000_000; guard++) cpu.step();
  else for (let guard = 0; !cpu.halted && guard < 10_000; guard++) cpu.runSlice(1000);
  expect(cpu.halted).toBe(true);
  const out = new Uint8Array(DATA_SIZE + 0x2000);
  memory.read(DATA, out);
  return { regs: Array.from(cpu.regs.slice(0, 8)), flags: cpu.getFlags(), memory: out };
}

describeWithTools(["nasm"], "string instructions without REP", () => {
  it("leave what the byte-by-byte interpreter leaves, from records and compiled", () => {
    const code = nasmBinary(PROGRAM);
    const reference = run(code, { jit: false }, true);
    for (const options of ENGINES) expectSameState(run(code, options), reference, JSON.stringify(options), DATA);
  });
});
