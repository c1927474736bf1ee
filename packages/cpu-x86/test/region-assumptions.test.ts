// A compiled region assumes what held when it was compiled: that the
// segments it addresses are flat (no limit or type checks), that those
// with base 0 keep it (it then adds no base), and the stack size (jit.ts).
// It checks these on entry and after every instruction it hands to the
// interpreter. These programs run a loop, change one of them, and run it
// again; every engine must leave what the byte-by-byte interpreter leaves.
import { expect, it } from "vitest";
import { PhysicalMemory } from "@typevisor/mmu-ept";
import { describeWithTools } from "@typevisor/test-support";
import type { CpuOptions } from "../src/index.js";
import { flatCpu } from "./harness/flat-cpu.js";
import { nasmBinary } from "./harness/nasm.js";
import { ENGINES, expectSameState, type RunState } from "./harness/same-state.js";

const LOG = 0x20000;
const ROUNDS = 200;

/** A GDT at 0x800: flat code, flat data with base 0, flat data with base 0x3000, and a 16-bit flat data segment for SS. */
const PRELUDE = `bits 32
org 0x1000
  lgdt [gdtr]
  mov ebp, ${LOG}
  jmp start
align 8
gdt: dq 0
  dq 0x00cf9b000000ffff      ; 0x08 code, flat
  dq 0x00cf93000000ffff      ; 0x10 data, flat, base 0
  dq 0x00cf93003000ffff      ; 0x18 data, flat, base 0x3000
  dq 0x008f93000000ffff      ; 0x20 data, flat, base 0, 16-bit (B=0)
gdtr: dw 5 * 8 - 1
  dd gdt
start:
`;

/** The loop: reads and read-modify-writes through DS, pushes and pops through SS; ECX rounds, the registers and flags to the log. */
const LOOP = `
loop_body:
  mov esi, ecx
  and esi, 0xff
  shl esi, 2
  add esi, 0x10000
  mov eax, [esi]
  add [esi + 0x400], eax
  push eax
  pop ebx
  xor ebx, ecx
  mov [esi + 0x800], ebx
  dec ecx
  jnz loop_body
  mov [ebp], eax
  mov [ebp + 4], ebx
  pushfd
  pop dword [ebp + 8]
  add ebp, 12
  ret
`;

/** Runs the loop through an indirect call, so the run loop enters the loop's own region (compiled in the first run) each time. */
const RUN = `  mov ecx, ${ROUNDS}\n  mov edx, loop_body\n  call edx`;

/** DS keeps being flat but its base moves from 0 to 0x3000 between the runs. */
const BASE_MOVES = `${PRELUDE}${RUN}
  mov ax, 0x18
  mov ds, ax
${RUN}
  mov ax, 0x10
  mov ds, ax
${RUN}
  hlt
${LOOP}`;

/**
 * SS becomes a 16-bit stack between the runs, with ESP = 0x18000: SP is
 * 0x8000 then, and a 32-bit stack pointer would address RAM 64 KiB higher.
 */
const STACK_SHRINKS = `${PRELUDE}${RUN}
  mov ax, 0x20
  mov ss, ax
  mov esp, 0x18000
  mov dword [0x17ff0], 0       ; the page a 32-bit stack pointer would use is in the TLB, so such a push would not leave
${RUN}
  mov ax, 0x10
  mov ss, ax
  mov esp, 0x8000
${RUN}
  hlt
${LOOP}`;

function run(code: Uint8Array, options: CpuOptions, step = false): RunState {
  const memory = new PhysicalMemory({ ramSize: 1 << 20 });
  memory.write(0x1000, code);
  const data = new Uint8Array(0x8000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 13 + 7) & 0xff;
  memory.write(0x10000, data);
  const cpu = flatCpu(memory, 0x1000, 0x8000, options);
  if (step) for (let guard = 0; !cpu.halted && guard < 1_000_000; guard++) cpu.step();
  else for (let guard = 0; !cpu.halted && guard < 10_000; guard++) cpu.runSlice(1000);
  expect(cpu.halted).toBe(true);
  const out = new Uint8Array(0x18000);
  memory.read(0x8000, out);
  return { regs: Array.from(cpu.regs.slice(0, 8)), flags: cpu.getFlags(), memory: out };
}

function checkAgainstInterpreter(source: string): void {
  const code = nasmBinary(source);
  const reference = run(code, { jit: false }, true);
  for (const options of ENGINES) expectSameState(run(code, options), reference, JSON.stringify(options), 0x8000);
}

describeWithTools(["nasm"], "what compiled regions assume", () => {
  it("a flat segment whose base moves away from 0 is not addressed as if it were still 0", () => {
    checkAgainstInterpreter(BASE_MOVES);
  });

  it("a stack that becomes 16-bit is not addressed as a 32-bit one", () => {
    checkAgainstInterpreter(STACK_SHRINKS);
  });
});
