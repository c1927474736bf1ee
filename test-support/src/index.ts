// Helpers shared by the test suites of every package. Not published.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe } from "vitest";

const found = new Map<string, string | undefined>();

/** Absolute path of `command` on PATH, or undefined. Cached. */
export function toolPath(command: string): string | undefined {
  if (!found.has(command)) {
    const r = spawnSync("sh", ["-c", `command -v ${command}`], { encoding: "utf8" });
    found.set(command, r.status === 0 ? r.stdout.trim() : undefined);
  }
  return found.get(command);
}

/** Debian package that provides each peer tool, for skip messages. */
const DEBIAN: Record<string, string> = {
  "qemu-img": "qemu-utils",
  nasm: "nasm",
  "qemu-system-i386": "qemu-system-x86",
  "qemu-system-x86_64": "qemu-system-x86",
  ld: "binutils",
  cpio: "cpio",
  zstd: "zstd",
  iasl: "acpica-tools",
  acpiexec: "acpica-tools",
  gzip: "gzip",
  "apt-get": "apt",
  "dpkg-deb": "dpkg",
  sed: "sed",
};

/**
 * A describe block that needs external tools. When one is missing the block
 * is skipped and the reason is printed, so a skip is never silent.
 */
export function describeWithTools(tools: string[], name: string, body: () => void): void {
  const missing = tools.filter((t) => !toolPath(t));
  if (missing.length === 0) {
    describe(name, body);
    return;
  }
  const pkgs = [...new Set(missing.map((t) => DEBIAN[t] ?? t))].join(" ");
  console.warn(`SKIP "${name}": missing ${missing.join(", ")} (apt-get install ${pkgs})`);
  describe.skip(name, body);
}

/**
 * A small, fast, seeded PRNG (xorshift32) returning uint32 values; the same
 * seed gives the same sequence on every machine.
 */
export function seeded(seed: number): () => number {
  let s = seed >>> 0 || 0x9e3779b9;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

/** A fresh temporary folder and a function that removes it. */
export function tempDir(prefix = "tv-test-"): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}
