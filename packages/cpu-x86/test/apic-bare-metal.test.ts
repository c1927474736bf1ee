// The local APIC in bare-metal programs run on our machine and on QEMU TCG
// (which implements an xAPIC): self IPIs and priorities, the TPR, nesting,
// software disable, destinations, the timer in one-shot, periodic and
// masked modes (apic.asm), and two CPUs started with INIT/SIPI exchanging
// IPIs and NMIs (smp.asm). The programs print only what does not depend on
// how fast time runs; the outputs must be identical.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import { describeWithTools, tempDir } from "@typevisor/test-support";
import { runOurs, runQemu } from "./harness/bare-metal.js";

const SRC = join(__dirname, "bare-metal");

describeWithTools(["nasm", "qemu-system-i386"], "local APIC bare-metal programs behave as on QEMU TCG", () => {
  for (const [name, vcpus] of [["apic", 1], ["smp", 2]] as const) {
    it(`${name} (${vcpus} CPU${vcpus > 1 ? "s" : ""})`, async () => {
      const dir = tempDir("tv-apic-");
      try {
        const bin = join(dir.path, `${name}.bin`);
        execFileSync("nasm", ["-f", "bin", "-I", `${SRC}/`, join(SRC, `${name}.asm`), "-o", bin]);
        const qemu = runQemu(bin, dir.path, vcpus);
        const ours = await runOurs(readFileSync(bin), 50_000_000, vcpus);
        expect(ours.output).toBe(qemu.output);
        expect(ours.end).toBe(qemu.end);
        expect(qemu.output).toMatch(/done\n$/);
      } finally {
        dir.remove();
      }
    });
  }
});
