#!/usr/bin/env node
// Packs one workspace package with `npm pack`, installs the tarball into an
// empty folder (offline: its own dependencies are packed alongside from the
// workspace), and checks that both `import` and `require` of it work there.
//
//   node scripts/pack-install-check.mjs @typevisor/hv-core 'expr using pkg'
//
// The expression is evaluated with `pkg` bound to the loaded module in both
// module systems; the script prints one JSON line
//   {"tarball":…,"files":[…],"esm":…,"cjs":…}
// and exits non-zero on any failure.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const [name, expr = "Object.keys(pkg).sort()"] = process.argv.slice(2);
if (!name) {
  console.error("usage: pack-install-check.mjs <workspace-package-name> [expression using pkg]");
  process.exit(2);
}

const run = (cmd, args, cwd) => execFileSync(cmd, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
const work = mkdtempSync(join(tmpdir(), "tv-pack-"));
try {
  // Pack the package and every workspace package it depends on (recursively).
  const manifests = new Map();
  for (const m of JSON.parse(run("npm", ["query", ".workspace", "--json"], root))) manifests.set(m.name, m);
  const wanted = [];
  const visit = (n) => {
    if (wanted.includes(n)) return;
    const m = manifests.get(n);
    if (!m) throw new Error(`${n} is not a workspace package`);
    wanted.push(n);
    for (const dep of Object.keys(m.dependencies ?? {})) if (manifests.has(dep)) visit(dep);
  };
  visit(name);
  const tarballs = [];
  let files = [];
  for (const n of wanted) {
    const out = JSON.parse(run("npm", ["pack", "-w", n, "--pack-destination", work, "--json"], root));
    tarballs.push(join(work, out[0].filename));
    if (n === name) files = out[0].files.map((f) => f.path).sort();
  }
  const consumer = join(work, "consumer");
  run("mkdir", ["-p", consumer]);
  writeFileSync(join(consumer, "package.json"), JSON.stringify({ name: "consumer", private: true, version: "1.0.0" }));
  run("npm", ["install", "--offline", "--no-audit", "--no-fund", "--no-package-lock", ...tarballs], consumer);
  writeFileSync(join(consumer, "esm.mjs"), `import * as pkg from ${JSON.stringify(name)};\nconsole.log(JSON.stringify(${expr}));\n`);
  writeFileSync(join(consumer, "cjs.cjs"), `const pkg = require(${JSON.stringify(name)});\nconsole.log(JSON.stringify(${expr}));\n`);
  const esm = JSON.parse(run("node", ["esm.mjs"], consumer));
  const cjs = JSON.parse(run("node", ["cjs.cjs"], consumer));
  const installed = JSON.parse(readFileSync(join(consumer, "node_modules", ...name.split("/"), "package.json"), "utf8"));
  console.log(JSON.stringify({ tarball: tarballs[0], version: installed.version, files, esm, cjs }));
} catch (e) {
  console.error(`pack-install-check ${name}: ${e.stderr || e.message}`);
  process.exitCode = 1;
} finally {
  rmSync(work, { recursive: true, force: true });
}
