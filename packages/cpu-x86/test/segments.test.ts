// Segment limit and type checks against the real CPU (QEMU TCG does not
// check segment limits). See diff/segments.ts for how each case works.
import { expect, it } from "vitest";
import { describeWithTools } from "@typevisor/test-support";
import { runSegmentCases } from "./diff/segments.js";

describeWithTools(["nasm", "ld"], "segment limit and type checks agree with the real CPU", () => {
  it("120 random LDT segments and accesses", () => {
    const r = runSegmentCases(77, 120);
    expect(r.mismatch, r.mismatch).toBeUndefined();
    // The generator must exercise both outcomes.
    expect(r.faults).toBeGreaterThan(20);
    expect(r.faults).toBeLessThan(100);
  });
});
