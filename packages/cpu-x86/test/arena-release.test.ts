// Guest RAM lives in one host arena. Releasing the memory of dropped chunks
// moves the arena (HostMemory.release), and everything that held a view of
// it must follow: the TLB's views, the fetch window, and compiled regions,
// which take the views as constants. A program that keeps running while the
// arena moves under it must end exactly as the byte-by-byte interpreter
// ends it without any move.
import { expect, it } from "vitest";
import { PhysicalMemory } from "@typevisor/mmu-ept";
import { describeWithTools } from "@typevisor/test-support";
import type { CpuOptions } from "../src/index.js";
import { flatCpu } from "./harness/flat-cpu.js";
import { nasmBinary } from "./harness/nasm.js";
import { ENGINES, expectSameState, type RunState } from "./harness/same-state.js";

const DATA = 0x10000; // two pages the loop reads and writes
const SPARE = 0x200000; // pages touched and released between slices
const SPARE_PAGES = 128; // at least one whole host chunk, wherever the pages land
const RAM = 4 << 20;

const PROGRAM = `
bits 32
org 0x1000
  mov ecx, 20000
  xor eax, eax
round:
  mov esi, ecx
  and esi, 0x7fc
  add esi, ${DATA}
  add eax, [esi]
  add [esi+0x800], eax
  xor ax, [esi+0x1001]        ; misaligned, inside the second page
  rol eax, 3
  push eax
  pop edx
  mov [esi+0x1400], edx
  dec ecx
  jnz round
  hlt
`;


interface Outcome extends RunState {
  released: number;
  moves: number;
}

/** Runs the program; with `move`, touches and releases spare pages and moves the arena after every slice. With `step`, runs it one instruction at a time through the byte-by-byte interpreter. */
function run(code: Uint8Array, options: CpuOptions, move: boolean, step = false): Outcome {
  const memory = new PhysicalMemory({ ramSize: RAM });
  memory.write(0x1000, code);
  const data = new Uint8Array(0x2000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37 + 11) & 0xff;
  memory.write(DATA, data);
  let moves = 0;
  memory.host.onRelocate(() => moves++);
  const cpu = flatCpu(memory, 0x1000, 0x8000, options);
  let released = 0;
  const page = new Uint8Array(4096).fill(0x5a);
  if (step) for (let guard = 0; !cpu.halted && guard < 1_000_000; guard++) cpu.step();
  else
    for (let guard = 0; !cpu.halted && guard < 10_000; guard++) {
      // Releasing guest pages changes the EPT, which drops compiled code by itself. The arena moves after
      // a slice has compiled new code, and the next slice runs before the EPT changes again: the code
      // compiled against the old arena must be gone because the arena moved.
      if (move) {
        for (let p = 0; p < SPARE_PAGES; p++) memory.write(SPARE + p * 4096, page);
        for (let p = 0; p < SPARE_PAGES; p++) memory.releasePage((SPARE >> 12) + p);
      }
      cpu.runSlice(2000);
      if (move) released += memory.host.release();
      cpu.runSlice(2000);
    }
  expect(cpu.halted).toBe(true);
  const out = new Uint8Array(0x3000);
  memory.read(DATA, out);
  return { regs: Array.from(cpu.regs.slice(0, 8)), flags: cpu.getFlags(), memory: out, released, moves };
}

describeWithTools(["nasm"], "moving the host arena under a running guest", () => {
  it("keeps every engine's result equal to the interpreter's, with the arena moved after every slice", () => {
    const code = nasmBinary(PROGRAM);
    const reference = run(code, { jit: false }, false, true);
    for (const options of ENGINES) {
      const label = JSON.stringify(options);
      const got = run(code, options, true);
      expectSameState(got, reference, label, DATA);
      // Every slice gave back at least one whole chunk of spare pages, and the arena moved each time.
      expect(got.moves, label).toBeGreaterThan(10);
      expect(got.released, label).toBeGreaterThanOrEqual(got.moves * 64 * 4096);
    }
  });
});
