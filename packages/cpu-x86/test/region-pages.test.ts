// Compiled regions may hold blocks of other pages than the one they are
// entered on (jit.ts): a loop that straddles a page boundary then stays in
// one region instead of going back to the run loop at every crossing. Such
// a block runs only while its linear page still translates to the host page
// it was decoded from, and a write to either page drops the region. Each
// program must leave what the byte-by-byte interpreter leaves.
import { expect, it } from "vitest";
import { PhysicalMemory } from "@typevisor/mmu-ept";
import { describeWithTools } from "@typevisor/test-support";
import type { Cpu, CpuOptions } from "../src/index.js";
import { flatCpu } from "./harness/flat-cpu.js";
import { nasmBinary } from "./harness/nasm.js";
import { ENGINES, expectSameState, type RunState } from "./harness/same-state.js";

const ROUNDS = 3000;
const LOG = 0x20000;
const RAM = 4 << 20;

/**
 * The loop's head sits at the end of page 0x1000 and its body at the start
 * of page 0x2000, which jumps back (the shape of Linux's BCJ filter in the
 * bzImage decompressor). `PHASES` runs it more than once, with what comes
 * between the runs.
 */
function program(phases: string): string {
  return `bits 32
org 0x1000
  mov ebp, ${LOG}
${phases}
  hlt

run_loop:                       ; ECX rounds, then the registers to the log
  xor eax, eax
  xor ebx, ebx
  jmp top
  times 0xfe0 - ($ - $$) db 0x90
top:                            ; 0x1fe0
  mov edx, ecx
  and edx, 7
  cmp edx, 5
  jne body                      ; most rounds cross into the next page
  add eax, ecx
  rol eax, 3
  jmp body
  times 0x1000 - ($ - $$) db 0x90
body:                           ; 0x2000
  add ebx, eax                  ; patched to SUB (29 C3) by the programs below
  xor eax, edx
  add eax, 0x9e3779b9
  dec ecx
  jnz top
  mov [ebp], eax
  mov [ebp+4], ebx
  pushfd
  pop dword [ebp+8]
  add ebp, 12
  ret
  times 0x2000 - ($ - $$) db 0xcc
`;
}

const RUN = `  mov ecx, ${ROUNDS}\n  call run_loop`;

/** One loop run: what the region must hold in one function. */
const STRADDLE = program(RUN);

/**
 * A store turns the body's ADD into SUB (a write to the region's second
 * page); then the second page is remapped, with paging on, to a copy whose
 * ADD became XOR (31 C3): only the translation changed, no code page was written.
 */
const CHANGES = program(`${RUN}
  mov byte [body], 0x29
${RUN}
  ; page tables at 0x80000: identity for the first 4 MiB
  mov edi, 0x81000
  mov eax, 3
  mov ecx, 1024
fill:
  mov [edi], eax
  add eax, 0x1000
  add edi, 4
  dec ecx
  jnz fill
  mov dword [0x80000], 0x81003
  mov eax, 0x80000
  mov cr3, eax
  mov eax, cr0
  or eax, 0x80000000
  mov cr0, eax
${RUN}
  ; the copy of the body's page at 0x3000, with XOR, mapped at 0x2000
  mov esi, 0x2000
  mov edi, 0x3000
  mov ecx, 1024
  rep movsd
  mov byte [0x3000], 0x31
  mov dword [0x81000 + 2 * 4], 0x3003
  invlpg [0x2000]
${RUN}
  ; and back to the original page
  mov dword [0x81000 + 2 * 4], 0x2003
  invlpg [0x2000]
${RUN}`);


interface Outcome extends RunState {
  cpu: Cpu;
}

/** Runs the program in slices (decoded blocks, compiled ones with a JIT), or with `step` one instruction at a time through the byte-by-byte interpreter. */
function run(code: Uint8Array, options: CpuOptions, step = false): Outcome {
  const memory = new PhysicalMemory({ ramSize: RAM });
  memory.write(0x1000, code);
  const cpu = flatCpu(memory, 0x1000, 0x8000, options);
  if (step) for (let guard = 0; !cpu.halted && guard < 2_000_000; guard++) cpu.step();
  else for (let guard = 0; !cpu.halted && guard < 10_000; guard++) cpu.runSlice(1000);
  expect(cpu.halted).toBe(true);
  const out = new Uint8Array(0x100);
  memory.read(LOG, out);
  return { regs: Array.from(cpu.regs.slice(0, 8)), flags: cpu.getFlags(), memory: out, cpu };
}

/** Runs `code` on every engine against the byte-by-byte interpreter; returns the compiled runs. */
function checkAgainstInterpreter(code: Uint8Array): Outcome[] {
  const reference = run(code, { jit: false }, true);
  const compiled: Outcome[] = [];
  for (const options of ENGINES) {
    const got = run(code, options);
    expectSameState(got, reference, JSON.stringify(options), LOG);
    if (options.jit !== false) compiled.push(got);
  }
  return compiled;
}

describeWithTools(["nasm"], "compiled regions across pages", () => {
  it("a loop that straddles a page boundary runs in one region", () => {
    for (const { cpu } of checkAgainstInterpreter(nasmBinary(STRADDLE))) {
      const jit = cpu.jit!;
      // Two crossings per round; the run loop sees about one dispatch per slice of 1000 instructions.
      expect(jit.dispatches).toBeLessThan(ROUNDS / 10);
      expect(jit.compiledInstructions).toBeGreaterThan(ROUNDS * 6);
    }
  });

  it("a store to the second page drops the region, and a remapped second page is not run from the old code", () => {
    const compiled = checkAgainstInterpreter(nasmBinary(CHANGES));
    for (const { cpu } of compiled) expect(cpu.jit!.dropped).toBeGreaterThan(0);
  });
});
