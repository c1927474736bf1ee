// The README's example must stay true: run it as written.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import * as core from "@typevisor/hv-core";
import * as pc from "@typevisor/pc";
import * as virtio from "../src/index.js";

it("README example runs and prints what it claims", async () => {
  const readme = readFileSync(join(__dirname, "..", "README.md"), "utf8");
  const code = /```ts\n([\s\S]*?)```/.exec(readme)![1];
  const claimed = /^\/\/ (virtio_mmio\.device=.*)$/m.exec(code)![1];
  const body = code
    .replace(/^import .*$/gm, "")
    .replace(/: Plugin\b/g, "")
    .replace(/console\.log\((.*)\);$/m, "return $1;");
  const fn = new Function("core", "virtio", `const { createMachine, GUEST_MEMORY } = core; const { FlatGuestMemory, MemoryBlockBackend, MemoryCharBackend, virtioBlk, virtioConsole, virtioMmioKernelParams, virtioRng } = virtio; return (async () => {${body}})();`);
  const printed = await fn(core, virtio);
  expect(printed).toBe(claimed);
});

it("README virtio-pci example runs on the PC platform and prints what it claims", async () => {
  const readme = readFileSync(join(__dirname, "..", "README.md"), "utf8");
  const code = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)][1][1];
  const claimed = /^\/\/ (0000:.*)$/m.exec(code)![1];
  const body = code
    .replace(/^import .*$/gm, "")
    .replace(/: Plugin\b/g, "")
    .replace(/console\.log\((.*)\);$/m, "return $1;");
  const fn = new Function("core", "pc", "virtio", `const { createMachine, GUEST_MEMORY } = core; const { pcPlatform } = pc; const { FlatGuestMemory, MemoryBlockBackend, virtioBlk } = virtio; return (async () => {${body}})();`);
  const printed = await fn(core, pc, virtio);
  expect(printed).toBe(claimed);
});
