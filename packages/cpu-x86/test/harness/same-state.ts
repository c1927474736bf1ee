// What a program leaves behind, for comparing one way of running it (decoded
// records, compiled regions) with the byte-by-byte interpreter.
import { expect } from "vitest";
import type { CpuOptions } from "../../src/index.js";

/** Registers, EFLAGS and a window of guest memory after a run. */
export interface RunState {
  regs: number[];
  flags: number;
  /** Guest memory from `base` on. */
  memory: Uint8Array;
}

/** The ways of running a program that must agree: interpreted records, every block compiled at once, and compiled after a few starts. */
export const ENGINES: CpuOptions[] = [{ jit: false }, { jit: { threshold: 0 } }, { jit: { threshold: 5 } }];

/** Expects `got` to equal `reference`; `base` is the guest address of the memory windows' first byte. */
export function expectSameState(got: RunState, reference: RunState, label: string, base: number): void {
  expect(got.regs, label).toEqual(reference.regs);
  expect(got.flags, label).toBe(reference.flags);
  const diff = got.memory.findIndex((v, i) => v !== reference.memory[i]);
  expect(diff, `${label}: first difference at ${(base + diff).toString(16)}`).toBe(-1);
}
