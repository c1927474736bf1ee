// The published artifact, not the source: pack @typevisor/hv-core, install
// the tarball into an empty folder, and use it through both module systems.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const root = join(__dirname, "..", "..", "..");
const pkgDir = join(__dirname, "..");

describe("packed @typevisor/hv-core", () => {
  it("installs alone and works with import and require", () => {
    expect(existsSync(join(pkgDir, "dist", "index.js")), "dist/ is missing: build first (npm test does)").toBe(true);
    const expr = `[typeof pkg.createMachine, new pkg.Machine({ memory: "1M" }).ramSize, pkg.parseSize("2G"), new pkg.PortIoBus().read(0x80, 2)]`;
    const out = execFileSync("node", [join(root, "scripts", "pack-install-check.mjs"), "@typevisor/hv-core", expr], { encoding: "utf8" });
    const result = JSON.parse(out.trim().split("\n").pop()!);
    const expected = ["function", 1048576, 2147483648, 0xffff];
    expect(result.esm).toEqual(expected);
    expect(result.cjs).toEqual(expected);
    // Only the build output and docs ship; no sources or tests.
    expect(result.files).toContain("dist/index.js");
    expect(result.files).toContain("dist/index.cjs");
    expect(result.files).toContain("dist/index.d.ts");
    expect(result.files).toContain("README.md");
    expect(result.files.filter((f: string) => f.startsWith("src/") || f.includes(".test."))).toEqual([]);
  }, 120_000);
});
