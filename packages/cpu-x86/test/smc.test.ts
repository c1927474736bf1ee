// Self-modifying code against the real CPU: stores into code that the
// decoded-instruction cache holds (or is about to run) must take effect as
// on hardware, including a store to the very next instruction (Intel SDM
// Vol. 3 §11.6: the processor checks writes against prefetched code).
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import { describeWithTools, tempDir } from "@typevisor/test-support";
import { runUserElf } from "./harness/user-mode.js";

/** Assembles and links test/smc/`name`.asm with a writable text segment; returns the native run and ours. */
function both(dir: string, name: string): { native: Buffer; ours: ReturnType<typeof runUserElf> } {
  const obj = join(dir, `${name}.o`);
  const exe = join(dir, name);
  execFileSync("nasm", ["-f", "elf32", join(__dirname, "smc", `${name}.asm`), "-o", obj]);
  // -N: one writable and executable segment, so the program may patch its own text.
  execFileSync("ld", ["-m", "elf_i386", "-N", "-o", exe, obj], { stdio: ["ignore", "ignore", "ignore"] });
  const native = spawnSync(exe, []);
  expect(native.status).toBe(0);
  return { native: native.stdout as Buffer, ours: runUserElf(readFileSync(exe)) };
}

describeWithTools(["nasm", "ld"], "self-modifying code agrees with the real CPU", () => {
  it("stores to the next instruction, the same block, another page and across a page boundary", () => {
    const dir = tempDir("tv-smc-");
    try {
      const { native, ours } = both(dir.path, "user");
      expect(ours.exitCode).toBe(0);
      expect(Buffer.from(ours.stdout).toString("hex")).toBe(native.toString("hex"));
      expect(native.length).toBe(37);
      // The code really ran from the cache, and the stores dropped cached pages.
      expect(ours.cpu.decoded.decodedBlocks).toBeGreaterThan(10);
      expect(ours.cpu.decoded.invalidations).toBeGreaterThan(5);
    } finally {
      dir.remove();
    }
  });

  it("stops caching a page that holds both a loop and the data it writes", () => {
    const dir = tempDir("tv-smc-");
    try {
      const { native, ours } = both(dir.path, "shared-page");
      expect(Buffer.from(ours.stdout).toString("hex")).toBe(native.toString("hex"));
      expect(native.readUInt32LE(0)).toBe(300000);
      // 100 000 writes to the code page; the page strikes out after a few of them.
      expect(ours.cpu.decoded.invalidations).toBeLessThan(20);
    } finally {
      dir.remove();
    }
  });
});
