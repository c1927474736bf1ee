// The big seeded sweep of the FPU/SIMD differential test (TYPEVISOR_SLOW=1):
// 24 groups of 10 batches of 1500 cases each (360 000 cases), x87, SSE/SSE2
// and MMX, each against the real CPU.
import { expect, it } from "vitest";
import { describeWithTools, tempDir } from "@typevisor/test-support";
import { runFpuBatch } from "./diff/fpu-differential.js";

const MIXES = ["x87", "x87", "sse", "all"] as const;

describeWithTools(["nasm", "ld", "objdump"], "x87/MMX/SSE/SSE2 instructions agree with the real CPU (sweep)", () => {
  for (let group = 0; group < 24; group++) {
    const mix = MIXES[group % MIXES.length];
    it(`seeds ${5000 + group * 10}..${5009 + group * 10} (${mix}): 15 000 cases`, async () => {
      const dir = tempDir("tv-fpu-diff-");
      try {
        for (let seed = 5000 + group * 10; seed < 5010 + group * 10; seed++) {
          const r = runFpuBatch(dir.path, seed, 1500, mix);
          expect(r.mismatch, r.mismatch).toBeUndefined();
          await new Promise((resolve) => setImmediate(resolve)); // let the test runner's RPC through
        }
      } finally {
        dir.remove();
      }
    }, 300_000);
  }
});
