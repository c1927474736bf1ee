// The project's own bare-metal programs on the whole PC platform: each is a
// multiboot image booted by `typevisor run` (x86Cpu + pcPlatform, the
// multiboot loader) and by QEMU TCG with -kernel; what they print on the
// debug console (port 0xE9) and the isa-debug-exit status must agree.
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { expect, it } from "vitest";
import { describeWithTools, tempDir } from "@typevisor/test-support";
import { main } from "../src/main.js";

const SRC = join(__dirname, "pc-programs");
// The start-up code (GDT, IDT, exception stubs, print helpers) the CPU's own
// bare-metal tests use; shared so the programs stay short.
const LIB = join(__dirname, "..", "..", "cpu-x86", "test", "bare-metal");

describeWithTools(["nasm", "qemu-system-i386"], "bare-metal programs on the PC platform agree with QEMU TCG", () => {
  for (const file of readdirSync(SRC).filter((f) => f.endsWith(".asm"))) {
    it(file, async () => {
      const dir = tempDir();
      try {
        const image = join(dir.path, "image.bin");
        execFileSync("nasm", ["-f", "bin", `-I${LIB}/`, "-o", image, join(SRC, file)]);

        const stdout = new PassThrough();
        const stderr = new PassThrough();
        let ours = "";
        let err = "";
        stdout.on("data", (d) => (ours += d.toString("latin1")));
        stderr.on("data", (d) => (err += d));
        const status = await main(["run", "--kernel", image, "--serial", "none", "--debugcon", "stdio", "--memory", "32M", "--no-reboot", "--timeout", "120"], { stdout, stderr, stdin: new PassThrough() });

        const log = join(dir.path, "qemu.txt");
        const q = spawnSync("qemu-system-i386", ["-accel", "tcg", "-kernel", image, "-m", "32", "-display", "none", "-serial", "none", "-monitor", "none", "-no-reboot", "-debugcon", `file:${log}`, "-device", "isa-debug-exit,iobase=0xf4,iosize=4"], { timeout: 120_000 });
        const theirs = readFileSync(log, "latin1");

        expect(err).toBe("");
        expect(ours).toBe(theirs);
        expect(status).toBe(q.status);
        expect(ours).toContain("done");
      } finally {
        dir.remove();
      }
    }, 300_000);
  }
});
