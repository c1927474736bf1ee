// The published artifact, not the source: pack @typevisor/pc (with hv-core),
// install the tarballs into an empty folder, and use it through both module systems.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const root = join(__dirname, "..", "..", "..");
const pkgDir = join(__dirname, "..");

describe("packed @typevisor/pc", () => {
  it("installs and works with import and require", () => {
    expect(existsSync(join(pkgDir, "dist", "index.js")), "dist/ is missing: build first (npm test does)").toBe(true);
    const expr = `[typeof pkg.pcPlatform, typeof pkg.linuxBoot, pkg.parseCpio(new pkg.InitramfsBuilder().file("/x", "y").toCpio()).length, pkg.buildAcpiTables(0xe0000, { cpus: 1 }).bytes.subarray(0, 8).reduce((s, b) => s + String.fromCharCode(b), "")]`;
    const out = execFileSync("node", [join(root, "scripts", "pack-install-check.mjs"), "@typevisor/pc", expr], { encoding: "utf8" });
    const result = JSON.parse(out.trim().split("\n").pop()!);
    const expected = ["function", "function", 1, "RSD PTR "];
    expect(result.esm).toEqual(expected);
    expect(result.cjs).toEqual(expected);
    expect(result.files).toContain("dist/index.js");
    expect(result.files).toContain("dist/index.cjs");
    expect(result.files).toContain("README.md");
    expect(result.files.filter((f: string) => f.startsWith("src/") || f.includes(".test.") || f.startsWith("test/"))).toEqual([]);
  }, 180_000);
});
