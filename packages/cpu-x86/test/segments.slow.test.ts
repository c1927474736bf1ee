// The larger sweep of segment cases against the real CPU (TYPEVISOR_SLOW=1).
import { expect, it } from "vitest";
import { describeWithTools } from "@typevisor/test-support";
import { runSegmentCases } from "./diff/segments.js";

describeWithTools(["nasm", "ld"], "segment limit and type checks agree with the real CPU (sweep)", () => {
  for (let seed = 100; seed < 105; seed++) {
    it(`seed ${seed}: 400 cases`, () => {
      const r = runSegmentCases(seed, 400);
      expect(r.mismatch, r.mismatch).toBeUndefined();
    }, 120_000);
  }
});
