// x87, MMX, SSE and SSE2 against the real CPU: seeded random cases restore a
// complete FPU/SIMD state with FXRSTOR (stack, tags, control/status words,
// MXCSR, XMM registers), run an instruction or a short sequence, and compare
// FXSAVE, the registers, EFLAGS and a memory window exactly (transcendental
// results to 2^-50 relative, RCPPS/RSQRTPS to the architectural 1.5·2^-12).
// Reproduce one batch with TYPEVISOR_FPU_SEED=<seed> TYPEVISOR_FPU_MIX=x87|sse|mmx.
import { expect, it } from "vitest";
import { describeWithTools, tempDir } from "@typevisor/test-support";
import { runFpuBatch } from "./diff/fpu-differential.js";

type Mix = "x87" | "sse" | "mmx" | "all";
const seedEnv = process.env.TYPEVISOR_FPU_SEED;
const mixEnv = (process.env.TYPEVISOR_FPU_MIX ?? "all") as Mix;
const BATCHES: [number, Mix, number][] = seedEnv
  ? [[Number(seedEnv), mixEnv, 1000]]
  : [
      [1, "x87", 1500],
      [2, "x87", 1500],
      [3, "x87", 1500],
      [4, "x87", 1500],
      [5, "x87", 1500],
      [6, "sse", 1500],
      [7, "sse", 1500],
      [8, "sse", 1500],
      [9, "mmx", 1500],
      [10, "mmx", 1500],
      [11, "all", 1500],
      [12, "all", 1500],
    ];

describeWithTools(["nasm", "ld", "objdump"], "x87/MMX/SSE/SSE2 instructions agree with the real CPU", () => {
  for (const [seed, mix, count] of BATCHES) {
    it(`seed ${seed} (${mix}): ${count} cases`, async () => {
      const dir = tempDir("tv-fpu-diff-");
      try {
        const r = runFpuBatch(dir.path, seed, count, mix);
        expect(r.mismatch, r.mismatch).toBeUndefined();
      } finally {
        dir.remove();
      }
      // Let the test runner's RPC through: a file of batches runs for minutes with every block compiled.
      await new Promise((resolve) => setImmediate(resolve));
    }, 60_000);
  }
});
