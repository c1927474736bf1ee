import { describe, expect, it } from "vitest";
import { fuzzQueue } from "../test/fuzz.js";

// The long run: 100 seeds x 5 000 rounds per layout, about a million hostile chains in all.
describe("virtqueue fuzzing, long run", () => {
  for (const packed of [false, true]) {
    it(`${packed ? "packed" : "split"}: no violations over 500 000 rounds`, () => {
      let chains = 0;
      for (let i = 0; i < 100; i++) {
        const seed = 0xf022_0000 + i;
        const res = fuzzQueue(seed, 5_000, packed);
        expect(res.violations, `seed 0x${seed.toString(16)}`).toEqual([]);
        expect(res.maxAccessesPerKick).toBeLessThan(300_000);
        chains += res.chains;
      }
      console.log(`${packed ? "packed" : "split"}: ${chains} chains`);
      expect(chains).toBeGreaterThan(300_000);
    }, 300_000);
  }
});
