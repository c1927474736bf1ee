#!/usr/bin/env node
// Brings a fresh clone to a runnable state, doing only what is missing:
//   1. npm dependencies (npm install when node_modules is absent or stale)
//   2. Debian tools the tests use as peers (qemu-img, nasm, QEMU, ...), when
//      this process may install them (root, or passwordless sudo)
//   3. a build of every package (turbo; a cache hit when nothing changed)
// Flags: --no-build skips step 3 (npm test builds through turbo itself);
//        --no-debian skips step 2.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const args = new Set(process.argv.slice(2));
const say = (msg) => console.log(`[setup] ${msg}`);

function sh(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { cwd: root, stdio: "inherit", ...opts });
  if (r.status !== 0) {
    console.error(`[setup] ${cmd} ${argv.join(" ")} failed (exit ${r.status ?? r.signal})`);
    process.exit(r.status || 1);
  }
}

function has(command) {
  return spawnSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" }).status === 0;
}

// 1. npm dependencies
const lock = join(root, "package-lock.json");
const installed = join(root, "node_modules", ".package-lock.json");
const stale = !existsSync(installed) || (existsSync(lock) && statSync(lock).mtimeMs > statSync(installed).mtimeMs + 1000);
if (stale) {
  say("installing npm dependencies");
  // `npm install` rather than `npm ci`: it honours the lock file, and npm
  // leaves other platforms' optional packages out of it, which `npm ci` rejects.
  sh("npm", ["install", "--no-audit", "--no-fund"]);
}

// 2. Debian tools
if (!args.has("--no-debian")) {
  const wanted = readFileSync(join(root, "scripts", "debian-packages.txt"), "utf8")
    .split("\n")
    .map((l) => l.replace(/#.*/, "").trim())
    .filter(Boolean)
    .map((l) => l.split(/\s+/));
  const missing = wanted.filter(([pkg, cmd]) =>
    cmd && cmd !== "-" ? !has(cmd) : spawnSync("dpkg", ["-s", pkg], { stdio: "ignore" }).status !== 0,
  );
  if (missing.length > 0) {
    const names = missing.map(([p]) => p);
    const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
    const sudo = !isRoot && has("sudo") && spawnSync("sudo", ["-n", "true"], { stdio: "ignore" }).status === 0;
    if (!has("apt-get") || (!isRoot && !sudo)) {
      say(`missing Debian packages: ${names.join(" ")}; tests that need them will skip (install them with apt-get to run those tests)`);
    } else {
      const pre = sudo ? ["sudo", "-n"] : [];
      const run = (argv) => sh(pre[0] ?? argv[0], pre.length ? [...pre.slice(1), ...argv] : argv.slice(1), { env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } });
      say(`installing Debian packages: ${names.join(" ")}`);
      run(["apt-get", "update", "-qq"]);
      run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", ...names]);
    }
  }
}

// 3. build
if (!args.has("--no-build")) {
  say("building packages (cached when unchanged)");
  sh(join(root, "node_modules", ".bin", "turbo"), ["run", "build", "--output-logs=errors-only"]);
}
