#!/usr/bin/env node
// `npm start`: the project's main job. Booting a guest needs the x86 CPU and
// the PC platform, which are not there yet; until they land this reports
// what is built so nobody mistakes the state of the project.
import { readdirSync, existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const pkgs = readdirSync(join(root, "packages")).filter((d) => existsSync(join(root, "packages", d, "package.json")));
console.log("typevisor: built packages:");
for (const d of pkgs) {
  const p = JSON.parse(readFileSync(join(root, "packages", d, "package.json"), "utf8"));
  console.log(`  ${p.name}@${p.version}  ${p.description}`);
}
console.log("\nBooting a guest needs @typevisor/cpu-x86 and @typevisor/pc, which have not landed yet.");
