// The big seeded sweep of the differential test (TYPEVISOR_SLOW=1): 200
// batches of 2000 cases, each against the real CPU.
import { expect, it } from "vitest";
import { describeWithTools, tempDir } from "@typevisor/test-support";
import { runBatch } from "./diff/differential.js";

describeWithTools(["nasm", "ld", "objdump"], "integer instructions agree with the real CPU (sweep)", () => {
  for (let group = 0; group < 20; group++) {
    it(`seeds ${1000 + group * 10}..${1009 + group * 10}: 20 000 cases`, () => {
      const dir = tempDir("tv-diff-");
      try {
        for (let seed = 1000 + group * 10; seed < 1010 + group * 10; seed++) {
          const r = runBatch(dir.path, seed, 2000);
          expect(r.mismatch, r.mismatch).toBeUndefined();
        }
      } finally {
        dir.remove();
      }
    }, 120_000);
  }
});
