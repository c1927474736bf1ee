// Bare-metal programs (assembled with nasm at test time) run on our vCPU
// and on QEMU TCG; what they print on the debug console and how they stop
// must agree. They cover exceptions and error codes, protection checks,
// privilege transitions through gates, SYSENTER/SYSEXIT, task switches,
// virtual-8086 mode, paging, #DF and triple fault, self-modifying code
// through page aliases, faults that restart in the middle of a block, and the
// FPU as an operating system sees it (CR0.EM/MP/TS/NE, CR4.OSFXSR, FXSAVE
// alignment).
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import { describeWithTools, tempDir } from "@typevisor/test-support";
import { runOurs, runQemu } from "./harness/bare-metal.js";

const SRC = join(__dirname, "bare-metal");
const PROGRAMS = (process.env.TYPEVISOR_BM ?? "protection,tasks,v86,paging,realmode,smc,restart,fpu").split(",");

describeWithTools(["nasm", "qemu-system-i386"], "bare-metal programs behave as on QEMU TCG", () => {
  for (const name of PROGRAMS) {
    it(name, async () => {
      const dir = tempDir("tv-bm-");
      try {
        const bin = join(dir.path, `${name}.bin`);
        execFileSync("nasm", ["-f", "bin", "-I", `${SRC}/`, join(SRC, `${name}.asm`), "-o", bin]);
        const qemu = runQemu(bin, dir.path);
        const ours = await runOurs(readFileSync(bin));
        expect(ours.output).toBe(qemu.output);
        expect(ours.end).toBe(qemu.end);
        expect(qemu.output.length).toBeGreaterThan(20);
        // The "compiled" test project compiles every block at once: the program ran as generated code.
        if (process.env.TYPEVISOR_JIT === "0") expect(ours.compiled).toBeGreaterThan(200);
      } finally {
        dir.remove();
      }
    });
  }
});
