// The README's example must stay true: run it as written.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import * as core from "../src/index.js";

it("README example runs and prints what it claims", async () => {
  const readme = readFileSync(join(__dirname, "..", "README.md"), "utf8");
  const code = /```ts\n([\s\S]*?)```/.exec(readme)![1];
  const body = code
    .replace(/^import .*$/m, "")
    .replace(/: (Machine|Plugin|Vcpu)\b/g, "")
    .replace(/console\.log\(stop\);.*$/m, "return stop;");
  const fn = new Function("core", `const { createMachine } = core; return (async () => {${body}})();`);
  const stop = await fn(core);
  expect(stop).toEqual({ reason: "exit", exitCode: 43 });
  expect(code).toContain("{ reason: 'exit', exitCode: 43 }");
});
