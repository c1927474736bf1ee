// The README's example must stay true: run it as written.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import * as mmuEpt from "../src/index.js";

it("README example runs and prints what it claims", () => {
  const readme = readFileSync(join(__dirname, "..", "README.md"), "utf8");
  const code = /```ts\n([\s\S]*?)```/.exec(readme)![1];
  const printed: unknown[] = [];
  const body = code.replace(/^import .*$/m, "");
  new Function("lib", "console", `const { Mmu, PhysicalMemory, CR0_PG } = lib; ${body}`)(mmuEpt, { log: (v: unknown) => printed.push(v) });
  expect(printed[0]).toBe("cafe");
  expect(printed[1]).toEqual([1, 2, 9]);
  expect(code).toContain("[1, 2, 9]");
});
