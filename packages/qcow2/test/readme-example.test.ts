// The README's example must stay true: run it as written.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import * as qcow2 from "../src/index.js";

it("README example runs and prints what it claims", async () => {
  const readme = readFileSync(join(__dirname, "..", "README.md"), "utf8");
  const code = /```ts\n([\s\S]*?)```/.exec(readme)![1];
  const logged: unknown[] = [];
  const body = code.replace(/^import .*$/m, "");
  const fn = new Function("q", "console", `const { checkImage, createQcow2, MemoryStore, Qcow2Image } = q; return (async () => {${body}})();`);
  await fn(qcow2, { log: (v: unknown) => logged.push(v) });
  expect(logged).toEqual(["hello, qcow2", 0]);
  expect(code).toContain("// hello, qcow2");
});
