// The README's example must stay true: run it as written.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import * as core from "@typevisor/hv-core";
import * as mmu from "@typevisor/mmu-ept";
import * as cpu from "../src/index.js";

it("README example runs and prints what it claims", async () => {
  const readme = readFileSync(join(__dirname, "..", "README.md"), "utf8");
  const code = /```ts\n([\s\S]*?)```/.exec(readme)![1];
  const body = code
    .replace(/^import .*$/gm, "")
    .replace(/\((_offset|_size|value|selector|access): number(, (access|_size): number)?(, value: number)?\)/g, (m) => m.replace(/: number/g, ""))
    .replace(/console\.log\(await vm\.run\(\)\);.*$/m, "return await vm.run();");
  const fn = new Function("core", "mmu", "cpu", `const { createMachine, X86_CPU_CONTROL } = core; const { PHYSICAL_MEMORY } = mmu; const { x86Cpu } = cpu; return (async () => {${body}})();`);
  const stop = await fn(core, mmu, cpu);
  expect(stop).toEqual({ reason: "exit", exitCode: 55 });
  expect(code).toContain("{ reason: 'exit', exitCode: 55 }");
});
