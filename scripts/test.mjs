#!/usr/bin/env node
// Runs every package's tests through turbo, then totals the vitest JSON
// reports into one line, `N passed, N failed`, printed last.
//
//   node scripts/test.mjs [--checks] [turbo filters...]
//
// --checks also runs typecheck, lint, the TypeDoc build and the release dry
// run, and counts each as one test (CI uses this).
// TYPEVISOR_SLOW=1 includes the *.slow.test.ts suites.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const argv = [...process.argv.slice(2), ...(process.env.TYPEVISOR_TEST_ARGS ?? "").split(/\s+/).filter(Boolean)];
const checks = argv.includes("--checks");
const filters = argv.filter((a) => a !== "--checks");
const turbo = join(root, "node_modules", ".bin", "turbo");

// Versions of the peer tools go into turbo's hash, so results cached while a
// tool was missing (tests skipped) are not replayed once it is installed.
function toolVersion(cmd, flag = "--version") {
  const r = spawnSync(cmd, [flag], { encoding: "utf8" });
  return r.status === 0 ? (r.stdout || r.stderr).split("\n")[0].trim() : "none";
}
const tools = ["qemu-img", "nasm", "qemu-system-i386", "qemu-system-x86_64", "tcpdump"].map((t) => `${t}=${toolVersion(t)}`).join(";");
const env = { ...process.env, TYPEVISOR_TOOLS: tools };

const workspaces = ["packages", "examples", "bench", "docs", "test-support"]
  .filter((d) => existsSync(join(root, d)))
  .flatMap((d) => (existsSync(join(root, d, "package.json")) ? [join(root, d)] : readdirSync(join(root, d), { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => join(root, d, e.name))))
  .filter((dir) => existsSync(join(dir, "package.json")));
const withTests = workspaces.filter((dir) => JSON.parse(readFileSync(join(dir, "package.json"), "utf8")).scripts?.test);
for (const dir of withTests) rmSync(join(dir, "test-results.json"), { force: true });

let passed = 0;
let failed = 0;
let skipped = 0;
const failures = [];

if (checks) {
  const named = [
    ["typecheck", [turbo, "run", "typecheck"]],
    ["lint", [turbo, "run", "lint"]],
    ["docs (TypeDoc, warnings are errors)", [turbo, "run", "docs"]],
    ["release dry run (pack every package)", ["node", join(root, "scripts", "release.mjs"), "--dry-run"]],
    ["changeset status", [join(root, "node_modules", ".bin", "changeset"), "status"]],
  ];
  for (const [name, [cmd, ...args]] of named) {
    console.log(`\n=== check: ${name}`);
    const r = spawnSync(cmd, args, { cwd: root, stdio: "inherit", env });
    if (r.status === 0) passed++;
    else {
      failed++;
      failures.push(`check "${name}" (exit ${r.status ?? r.signal})`);
    }
  }
}

console.log("\n=== tests");
const run = spawnSync(turbo, ["run", "test", "--continue", ...filters], { cwd: root, stdio: "inherit", env });

for (const dir of withTests) {
  const name = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")).name;
  const file = join(dir, "test-results.json");
  if (!existsSync(file)) {
    if (filters.length > 0) continue; // filtered out
    failed++;
    failures.push(`${name}: no test report (the test run crashed or did not start)`);
    continue;
  }
  const r = JSON.parse(readFileSync(file, "utf8"));
  passed += r.numPassedTests;
  failed += r.numFailedTests;
  skipped += r.numPendingTests + r.numTodoTests;
  for (const suite of r.testResults) {
    if (suite.status === "failed" && suite.assertionResults.every((a) => a.status !== "failed")) {
      failed++; // a file that failed to load or crashed outside any test
      failures.push(`${name}: ${suite.name.replace(root + "/", "")}: ${(suite.message || "suite failed").split("\n")[0]}`);
    }
    for (const a of suite.assertionResults) {
      if (a.status === "failed") failures.push(`${name}: ${a.fullName}`);
    }
  }
}
if (run.status !== 0 && failed === 0) {
  failed++;
  failures.push(`turbo run test exited with ${run.status ?? run.signal}`);
}

if (failures.length) {
  console.log("\nFailures:");
  for (const f of failures) console.log(`  - ${f}`);
}
console.log(`\n${skipped} skipped (each skip prints its reason above)`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
