// Test helpers: run qemu-img/qemu-io, build deterministic data.
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { seeded } from "@typevisor/test-support";

/** Runs qemu-img and returns stdout; throws with stderr on failure. */
export function qemuImg(...args: string[]): string {
  return execFileSync("qemu-img", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

/** Runs qemu-img check --output=json; returns the parsed report and exit status. */
export function qemuCheck(path: string, extra: string[] = []): { status: number; report: Record<string, number | string>; stderr: string } {
  const r = spawnSync("qemu-img", ["check", "--output=json", ...extra, path], { encoding: "utf8" });
  let report: Record<string, number | string> = {};
  try {
    report = JSON.parse(r.stdout);
  } catch {
    report = {};
  }
  return { status: r.status ?? -1, report, stderr: r.stderr };
}

/** Runs qemu-io commands on an image. */
export function qemuIo(path: string, cmds: string[], fmt = "qcow2"): string {
  const args = ["-f", fmt];
  for (const c of cmds) args.push("-c", c);
  args.push(path);
  return execFileSync("qemu-io", args, { encoding: "utf8" });
}

/** The image's contents as qemu-img sees them. */
export function qemuRaw(path: string, out: string, extra: string[] = []): Uint8Array {
  execFileSync("qemu-img", ["convert", ...extra, "-O", "raw", path, out]);
  return new Uint8Array(readFileSync(out));
}

/** Deterministic pseudo-random bytes. */
export function pattern(length: number, seed: number): Uint8Array {
  const next = seeded(seed);
  const b = new Uint8Array(length);
  for (let i = 0; i < length; i += 4) {
    const v = next();
    b[i] = v;
    if (i + 1 < length) b[i + 1] = v >>> 8;
    if (i + 2 < length) b[i + 2] = v >>> 16;
    if (i + 3 < length) b[i + 3] = v >>> 24;
  }
  return b;
}

/** Index of the first differing byte, or -1. */
export function firstDiff(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}
