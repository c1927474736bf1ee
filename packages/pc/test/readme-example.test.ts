// The README's example must stay true: run it as written.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import * as core from "@typevisor/hv-core";
import * as pc from "../src/index.js";

it("README example runs and prints what it claims", () => {
  const readme = readFileSync(join(__dirname, "..", "README.md"), "utf8");
  const code = /```ts\n([\s\S]*?)```/.exec(readme)![1];
  const body = code.replace(/^import .*$/gm, "");
  const printed: string[] = [];
  const fn = new Function("core", "pc", "console", `const { VirtualClock } = core; const { InitramfsBuilder, MemorySerial, Uart16550, parseCpio } = pc; ${body}`);
  fn(core, pc, { log: (s: string) => printed.push(s) });
  expect(printed).toEqual(['"hello\\n"', "init dev dev/console"]);
  const claims = [...code.matchAll(/\/\/ (.*)$/gm)].map((m) => m[1]).filter((c) => !c.startsWith("the guest"));
  expect(claims).toEqual(['"hello\\n"', "init dev dev/console"]);
});
