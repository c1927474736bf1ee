// Crash consistency: a writer process is killed (SIGKILL) at random points;
// after every kill qemu-img check must report zero corruptions (leaks are
// allowed). TYPEVISOR_SLOW=1 runs many more kills (crash.slow.test.ts).
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describeWithTools, tempDir } from "@typevisor/test-support";
import { afterAll, expect, it } from "vitest";
import { crashRounds } from "./crash-rounds.js";

const dir = tempDir("qcow2-crash-slow-");
afterAll(() => dir.remove());

const configs: [string, string[]][] = [
  ["v3 64k", []],
  ["v2", ["-o", "compat=0.10"]],
  ["512-byte clusters", ["-o", "cluster_size=512"]],
  ["1-bit refcounts 4k", ["-o", "cluster_size=4k,refcount_bits=1"]],
  ["64-bit refcounts", ["-o", "refcount_bits=64,cluster_size=8k"]],
  ["extended L2", ["-o", "extended_l2=on,cluster_size=32k"]],
  ["zstd", ["-o", "compression_type=zstd"]],
  ["2M clusters", ["-o", "cluster_size=2M"]],
];

describeWithTools(["qemu-img"], "crash consistency, many kills", () => {
  it("built package present", () => {
    expect(existsSync(join(__dirname, "..", "dist", "index.js"))).toBe(true);
  });
  for (const [i, [name, args]] of configs.entries()) {
    it(`${name}: 25 kills`, async () => {
      await crashRounds(dir.path, `s${i}.qcow2`, args, 25, 100 + i);
    }, 600_000);
  }
});
