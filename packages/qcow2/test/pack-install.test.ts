// The published artifact, not the source: pack @typevisor/qcow2, install the
// tarball into an empty folder, and use it through both module systems.
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const root = join(__dirname, "..", "..", "..");
const pkgDir = join(__dirname, "..");

describe("packed @typevisor/qcow2", () => {
  it("installs alone and works with import and require", () => {
    expect(existsSync(join(pkgDir, "dist", "index.js")), "dist/ is missing: build first (npm test does)").toBe(true);
    const expr = `[typeof pkg.openImage, typeof pkg.Qcow2Image, new pkg.Qcow2Error("X", "m").code]`;
    const out = execFileSync("node", [join(root, "scripts", "pack-install-check.mjs"), "@typevisor/qcow2", expr], { encoding: "utf8" });
    const result = JSON.parse(out.trim().split("\n").pop()!);
    const expected = ["function", "function", "X"];
    expect(result.esm).toEqual(expected);
    expect(result.cjs).toEqual(expected);
    expect(result.files).toContain("dist/index.js");
    expect(result.files).toContain("README.md");
    expect(result.files.filter((f: string) => f.startsWith("src/") || f.includes(".test."))).toEqual([]);
  }, 120_000);
});
