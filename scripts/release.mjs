#!/usr/bin/env node
// Publishes the packages whose versions changesets bumped.
//   node scripts/release.mjs --dry-run   build, then pack every public package
//                                        (npm pack --dry-run) and list contents
//   node scripts/release.mjs             build, then `changeset publish`
// Versions are bumped beforehand with `npx changeset version`.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dry = process.argv.includes("--dry-run");
const bin = (n) => join(root, "node_modules", ".bin", n);

function run(cmd, args, capture = false) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: capture ? ["ignore", "pipe", "inherit"] : "inherit", encoding: "utf8" });
  if (r.status !== 0) {
    console.error(`release: ${cmd} ${args.join(" ")} failed`);
    process.exit(r.status || 1);
  }
  return r.stdout;
}

run(bin("turbo"), ["run", "build", "--output-logs=errors-only"]);
const packages = readdirSync(join(root, "packages"))
  .map((d) => join(root, "packages", d, "package.json"))
  .filter(existsSync)
  .map((f) => JSON.parse(readFileSync(f, "utf8")))
  .filter((p) => !p.private);

if (dry) {
  for (const p of packages) {
    const [info] = JSON.parse(run("npm", ["pack", "--dry-run", "--json", "-w", p.name], true));
    const kb = (info.size / 1024).toFixed(1);
    console.log(`${p.name}@${p.version}: ${info.entryCount} files, ${kb} KiB packed (${info.filename})`);
    if (!info.files.some((f) => f.path === "dist/index.js") || !info.files.some((f) => f.path === "README.md")) {
      console.error(`release: ${p.name} would ship without dist/index.js or README.md`);
      process.exit(1);
    }
  }
  console.log(`dry run: ${packages.length} packages packed, nothing published`);
} else {
  run(bin("changeset"), ["publish"]);
}
