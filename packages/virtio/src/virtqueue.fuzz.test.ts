import { describe, expect, it } from "vitest";
import { fuzzQueue } from "../test/fuzz.js";

// Each seed picks a queue size and features; 2 x 12 seeds x 2000 rounds is
// some 30 000 hostile chains. The slow suite runs many more.
const SEEDS = Array.from({ length: 12 }, (_, i) => 0x5eed0000 + i);

describe("virtqueue fuzzing: hostile descriptor chains", () => {
  for (const packed of [false, true]) {
    it(`${packed ? "packed" : "split"}: every chain is handled or the device asks for a reset, within bounded work`, () => {
      let chains = 0;
      let flagged = 0;
      let resets = 0;
      let maxAccesses = 0;
      for (const seed of SEEDS) {
        const res = fuzzQueue(seed, 2000, packed);
        expect(res.violations, `seed 0x${seed.toString(16)}`).toEqual([]);
        // A notification does at most a few accesses per descriptor of at most size chains.
        expect(res.maxAccessesPerKick).toBeLessThan(300_000);
        chains += res.chains;
        flagged += res.flagged;
        resets += res.resets;
        maxAccesses = Math.max(maxAccesses, res.maxAccessesPerKick);
      }
      // The fuzzer must actually reach all three outcomes.
      console.log(`${packed ? "packed" : "split"}: ${chains} chains popped, ${flagged} flagged, ${resets} resets, at most ${maxAccesses} memory accesses per notification`);
      expect(chains).toBeGreaterThan(15_000);
      expect(flagged).toBeGreaterThan(100);
      expect(resets).toBeGreaterThan(100);
    });
  }
});
