// Slice boundaries anywhere: the same program run in slices of 1, 2, 3, 5,
// 7 and 100 000 instructions, and single-stepped through the byte-by-byte
// interpreter (TF), must end in the same state after the same number of
// instructions. Slices that end between a compare and its branch (which the
// decoder fuses into one record) retire the compare alone.
import { expect, it } from "vitest";
import { PhysicalMemory } from "@typevisor/mmu-ept";
import { describeWithTools } from "@typevisor/test-support";
import { x86 } from "../src/index.js";
import { nasmBinary } from "./harness/nasm.js";
import { flatCpu } from "./harness/flat-cpu.js";

const PROGRAM = `bits 32
org 0x1000
  mov ecx, 40
  xor ebx, ebx
outer:
  mov edx, ecx
inner:
  add ebx, edx
  mov [0x8000 + edx*4], ebx
  dec edx
  cmp edx, 10
  jg inner
  test ecx, 1
  jz even
  add ebx, [0x8000 + ecx*4]
even:
  cmp ecx, ebx
  jb below
  xor ebx, 0x55
below:
  dec ecx
  jnz outer
  hlt
`;

function run(image: Uint8Array, slice: number, singleStep: boolean): { regs: number[]; instructions: number; sum: number } {
  const memory = new PhysicalMemory({ ramSize: 1 << 20 });
  memory.write(0x1000, image);
  const cpu = flatCpu(memory, 0x1000, 0x7000);
  // TF with the #DB vector pointing at an IRET would change the stack; instead the exception intercept swallows each trap.
  if (singleStep) {
    cpu.setFlagsRaw(2 | x86.TF);
    cpu.exceptionExit = (vector) => vector === x86.EXC_DB;
  }
  // The count starts just below 2^31 so it passes it during the run (it is kept as a double from the start).
  const start = 2 ** 31 - 1000;
  cpu.instructions = start;
  let total = 0;
  for (let guard = 0; !cpu.halted && guard < 1_000_000; guard++) total += cpu.runSlice(slice);
  expect(cpu.instructions).toBe(start + total);
  let sum = 0;
  for (let a = 0x8000; a < 0x8100; a += 4) sum = (sum + memory.readU32(a)) | 0;
  return { regs: Array.from(cpu.regs.subarray(0, 8)), instructions: total, sum };
}

describeWithTools(["nasm"], "slices of any length", () => {
  it("end in the same state after the same instruction count", () => {
    const image = nasmBinary(PROGRAM);
    const reference = run(image, 100_000, true);
    expect(reference.instructions).toBeGreaterThan(1000);
    for (const slice of [1, 2, 3, 5, 7, 100_000]) expect(run(image, slice, false), `slices of ${slice}`).toEqual(reference);
  });
});
