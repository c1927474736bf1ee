// The published artifact, not the source: pack @typevisor/virtio (and
// hv-core, its dependency), install the tarballs into an empty folder, and
// use the package through both module systems.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const root = join(__dirname, "..", "..", "..");
const pkgDir = join(__dirname, "..");

describe("packed @typevisor/virtio", () => {
  it("installs alone and works with import and require", () => {
    expect(existsSync(join(pkgDir, "dist", "index.js")), "dist/ is missing: build first (npm test does)").toBe(true);
    const expr = `[typeof pkg.VirtioBlkDevice, pkg.parseDiskOption("a.img,readonly").readOnly, new pkg.VirtioRngDevice().deviceId, pkg.virtioMmioKernelParam(0xfeb00000, 0x200, 5)]`;
    const out = execFileSync("node", [join(root, "scripts", "pack-install-check.mjs"), "@typevisor/virtio", expr], { encoding: "utf8" });
    const result = JSON.parse(out.trim().split("\n").pop()!);
    const expected = ["function", true, 4, "virtio_mmio.device=0x200@0xfeb00000:5"];
    expect(result.esm).toEqual(expected);
    expect(result.cjs).toEqual(expected);
    expect(result.files).toContain("dist/index.js");
    expect(result.files).toContain("dist/index.cjs");
    expect(result.files).toContain("dist/index.d.ts");
    expect(result.files).toContain("README.md");
    expect(result.files.filter((f: string) => f.startsWith("src/") || f.includes(".test."))).toEqual([]);
  }, 120_000);
});
