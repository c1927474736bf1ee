// Faults raised in the middle of compiled blocks (bare-metal/region-faults.asm):
// a #GP from the compiled code's segment limit check and a #DE from an
// instruction the compiled code hands to the interpreter. Compiled regions
// have no exception handler: they store the guest state and the faulting
// instruction's position before each call that may throw (jit.ts,
// beforeThrow). QEMU TCG does not check data segment limits, so the
// reference is our byte-by-byte interpreter, itself checked against QEMU by
// the other bare-metal programs.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import { describeWithTools, tempDir } from "@typevisor/test-support";
import { runOurs } from "./harness/bare-metal.js";

const SRC = join(__dirname, "bare-metal");

describeWithTools(["nasm"], "faults in the middle of compiled blocks", () => {
  it("push the faulting instruction's EIP and the registers before it, as the interpreter does", async () => {
    const dir = tempDir("tv-region-faults-");
    const bin = join(dir.path, "region-faults.bin");
    execFileSync("nasm", ["-f", "bin", "-I", `${SRC}/`, join(SRC, "region-faults.asm"), "-o", bin]);
    const image = readFileSync(bin);
    dir.remove();
    const reference = await runOurs(image, 50_000_000, 1, false);
    const lines = reference.output.split("\n");
    // The first round and every 64th run with a limited DS, every 32nd round divides by zero.
    expect(lines.filter((l) => l.startsWith("#GP e=00000000 at=00000000 "))).toHaveLength(5);
    expect(lines.filter((l) => l.startsWith("#DE at=00000000 "))).toHaveLength(9);
    expect(reference.end).toBe("exit 1");
    for (const threshold of [0, 3]) {
      const got = await runOurs(image, 50_000_000, 1, { threshold });
      expect(got.output, `threshold ${threshold}`).toBe(reference.output);
      expect(got.end).toBe(reference.end);
      expect(got.compiled, `threshold ${threshold}: compiled instructions`).toBeGreaterThan(3000);
    }
  });
});
