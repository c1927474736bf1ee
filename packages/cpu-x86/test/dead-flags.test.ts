// The block compiler skips IMUL's overflow test (a double multiply) when the
// next instruction overwrites every arithmetic flag without reading them and
// cannot leave the region first (jit.ts, overwritesFlags). Everywhere else
// the flags must be there: for a Jcc, ADC, PUSHFD, and before an instruction
// with a memory operand (it may leave the region, and a fault there would push
// the flags IMUL left). Each engine must end as the byte-by-byte interpreter
// does.
import { it } from "vitest";
import { PhysicalMemory } from "@typevisor/mmu-ept";
import { describeWithTools } from "@typevisor/test-support";
import type { CpuOptions } from "../src/index.js";
import { flatCpu } from "./harness/flat-cpu.js";
import { nasmBinary } from "./harness/nasm.js";
import { ENGINES, expectSameState, type RunState } from "./harness/same-state.js";

const LOG = 0x20000;
const FRESH = 0x100000; // one page per round: the CMP with a memory operand misses the TLB once per page

const PROGRAM = `
bits 32
org 0x1000
  mov ebp, ${LOG}
  mov ecx, 400
  mov esi, 0x12345
round:
  mov eax, ecx
  imul eax, esi              ; overflows on most rounds
  imul esi, eax, 0x10001
  cmp eax, ecx               ; IMUL flags dead
  mov [ebp], eax
  imul ebx, eax, 77
  adc ebx, 0                 ; reads IMUL's CF
  mov [ebp+4], ebx
  imul edx, esi, 3
  pushfd                     ; reads IMUL's flags
  pop dword [ebp+8]
  imul dx, si                ; 16-bit
  test edx, edx              ; dead again
  mov [ebp+12], edx
  mov edi, ecx
  and edi, 63
  shl edi, 12
  imul eax, esi, 1000
  cmp [edi+${FRESH}], eax    ; may leave the region first: IMUL's flags are kept
  mov edx, 0
  setc dl
  mov [ebp+16], edx
  imul eax, eax, 3
  jo over                    ; reads OF
  add ebp, 4
over:
  add ebp, 20
  dec ecx
  jnz round
  imul eax, esi, 5
  hlt                        ; the last IMUL's flags are what the run leaves
`;


function run(code: Uint8Array, options: CpuOptions, step = false): RunState {
  const memory = new PhysicalMemory({ ramSize: 2 << 20 });
  memory.write(0x1000, code);
  const cpu = flatCpu(memory, 0x1000, 0x8000, options);
  if (step) for (let guard = 0; !cpu.halted && guard < 1_000_000; guard++) cpu.step();
  else for (let guard = 0; !cpu.halted && guard < 10_000; guard++) cpu.runSlice(1000);
  const out = new Uint8Array(0x4000);
  memory.read(LOG, out);
  return { regs: Array.from(cpu.regs.slice(0, 8)), flags: cpu.getFlags(), memory: out };
}

describeWithTools(["nasm"], "IMUL flags in compiled regions", () => {
  it("match the interpreter where they are read, and wherever the region may leave", () => {
    const code = nasmBinary(PROGRAM);
    const reference = run(code, { jit: false }, true);
    for (const options of ENGINES) expectSameState(run(code, options), reference, JSON.stringify(options), LOG);
  });
});
