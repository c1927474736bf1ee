// Differential test against the real CPU: thousands of seeded random
// instruction cases run natively (static i386 ELF) and on our vCPU; the
// registers, EFLAGS (minus architecturally undefined bits) and a memory
// window must agree. Reproduce one batch with TYPEVISOR_DIFF_SEED=<seed>.
import { expect, it } from "vitest";
import { describeWithTools, tempDir } from "@typevisor/test-support";
import { runBatch } from "./diff/differential.js";

const fixed = process.env.TYPEVISOR_DIFF_SEED ? [Number(process.env.TYPEVISOR_DIFF_SEED)] : [1, 2, 3, 4, 5, 6, 7, 8];

describeWithTools(["nasm", "ld", "objdump"], "integer instructions agree with the real CPU", () => {
  for (const seed of fixed) {
    it(`seed ${seed}: 1000 cases`, async () => {
      const dir = tempDir("tv-diff-");
      try {
        const r = runBatch(dir.path, seed, 1000);
        expect(r.mismatch, r.mismatch).toBeUndefined();
        // In the "compiled" test project every block is compiled at once: about half of each batch (the
        // cases; the harness around them has instructions the compiler leaves to the interpreter) is generated code.
        if (process.env.TYPEVISOR_JIT === "0") expect(r.compiled / r.instructions).toBeGreaterThan(0.3);
      } finally {
        dir.remove();
      }
      // Let the test runner's RPC through: the batches run for a minute with every block compiled.
      await new Promise((resolve) => setImmediate(resolve));
    });
  }
});
