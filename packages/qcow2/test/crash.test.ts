// Crash consistency: a writer process is killed (SIGKILL) at random points;
// after every kill qemu-img check must report zero corruptions (leaks are
// allowed). TYPEVISOR_SLOW=1 runs many more kills (crash.slow.test.ts).
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describeWithTools, tempDir } from "@typevisor/test-support";
import { afterAll, expect, it } from "vitest";
import { crashRounds } from "./crash-rounds.js";

const dir = tempDir("qcow2-crash-");
afterAll(() => dir.remove());

describeWithTools(["qemu-img"], "crash consistency (killed writers)", () => {
  it("built package present", () => {
    expect(existsSync(join(__dirname, "..", "dist", "index.js")), "dist/ is missing: build first (npm test does)").toBe(true);
  });
  it("64k clusters, 16-bit refcounts: 12 kills", async () => {
    await crashRounds(dir.path, "a.qcow2", [], 12, 7);
  }, 120_000);
  it("4k clusters, extended L2: 8 kills", async () => {
    await crashRounds(dir.path, "b.qcow2", ["-o", "cluster_size=16k,extended_l2=on"], 8, 8);
  }, 120_000);
});
