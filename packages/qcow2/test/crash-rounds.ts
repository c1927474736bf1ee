// Crash rounds: start a writer process, let it run a random time, SIGKILL
// it, and require qemu-img check to find no corruption (leaks allowed).
import { spawn } from "node:child_process";
import { join } from "node:path";
import { seeded } from "@typevisor/test-support";
import { expect } from "vitest";
import { qemuCheck, qemuImg } from "./helpers.js";

/** Runs `kills` rounds of start-writer, wait, SIGKILL, qemu-img check. */
export async function crashRounds(dir: string, name: string, createArgs: string[], kills: number, seed: number): Promise<void> {
  const f = join(dir, name);
  qemuImg("create", "-q", "-f", "qcow2", ...createArgs, f, "16M");
  const next = seeded(seed);
  const writer = join(__dirname, "crash-writer.mjs");
  for (let k = 0; k < kills; k++) {
    const child = spawn(process.execPath, [writer, f, String(next())], { stdio: ["ignore", "pipe", "pipe"] });
    let err = "";
    child.stderr.on("data", (d) => (err += d));
    await new Promise<void>((resolve, reject) => {
      child.stdout.once("data", () => resolve());
      child.once("exit", (code) => reject(new Error(`writer exited early (${code}): ${err}`)));
    });
    await new Promise((r) => setTimeout(r, 5 + (next() % 150)));
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    const c = qemuCheck(f);
    expect(c.report.corruptions ?? 0, `kill ${k}: ${JSON.stringify(c.report)} ${c.stderr}`).toBe(0);
    expect([0, 3], `kill ${k}: qemu-img check exit ${c.status}: ${c.stderr}`).toContain(c.status);
  }
}

