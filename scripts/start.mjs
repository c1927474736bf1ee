#!/usr/bin/env node
// `npm start`: the main job — boot the default VM. `typevisor run` with no
// kernel fetches Debian's i386 kernel and busybox once (apt-get download into
// a private cache), builds the guest initramfs and boots it to a shell on the
// serial console. Arguments after `npm start --` go to `typevisor run`
// (e.g. `npm start -- --exec "uname -a"`; `npm start -- --help`).
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const r = spawnSync(process.execPath, [join(root, "packages", "cli", "dist", "bin.js"), "run", ...process.argv.slice(2)], { stdio: "inherit" });
process.exit(r.status ?? 1);
