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

describeWithTools(["nasm", "ld"], "self-modifying code agrees with the real CPU", () => {
  it("stores to the next instruction, the same block, another page and across a page boundary", () => {
    const dir = tempDir("tv-smc-");
    try {
      const obj = join(dir.path, "user.o");
      const exe = join(dir.path, "user");
      execFileSync("nasm", ["-f", "elf32", join(__dirname, "smc", "user.asm"), "-o", obj]);
      // -N: one writable and executable segment, so the program may patch its own text.
      execFileSync("ld", ["-m", "elf_i386", "-N", "-o", exe, obj], { stdio: ["ignore", "ignore", "ignore"] });
      const native = spawnSync(exe, []);
      expect(native.status).toBe(0);
      const ours = runUserElf(readFileSync(exe));
      expect(ours.exitCode).toBe(0);
      expect(Buffer.from(ours.stdout).toString("hex")).toBe((native.stdout as Buffer).toString("hex"));
      expect(native.stdout.length).toBe(37);
      // The code really ran from the cache, and the stores dropped cached pages.
      expect(ours.cpu.decoded.decodedBlocks).toBeGreaterThan(10);
      expect(ours.cpu.decoded.invalidations).toBeGreaterThan(5);
    } finally {
      dir.remove();
    }
  });
});
