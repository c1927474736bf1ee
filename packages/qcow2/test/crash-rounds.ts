// Crash rounds: start a writer process, let it run a random time, SIGKILL
// it, then require (1) qemu-img check finds no corruption (leaks allowed)
// and (2) every byte not touched since the writer's last completed flush
// reads back (through qemu-img) as the operations up to that flush made it.
import { spawn } from "node:child_process";
import { join } from "node:path";
import { seeded } from "@typevisor/test-support";
import { expect } from "vitest";
// @ts-expect-error plain JavaScript shared with the writer process
import { applyExpected, nextOp, rng } from "./crash-ops.mjs";
import { qemuCheck, qemuImg, qemuRaw } from "./helpers.js";

interface Op {
  kind: string;
  offset: number;
  length: number;
}

function clusterSizeOf(args: string[]): number {
  const m = /cluster_size=(\d+)([kM]?)/.exec(args.join(","));
  if (!m) return 65536;
  return Number(m[1]) * (m[2] === "k" ? 1024 : m[2] === "M" ? 1 << 20 : 1);
}

/** Runs `kills` rounds of start-writer, wait, SIGKILL, check. */
export async function crashRounds(dir: string, name: string, createArgs: string[], kills: number, seed: number): Promise<void> {
  const f = join(dir, name);
  qemuImg("create", "-q", "-f", "qcow2", ...createArgs, f, "16M");
  const cs = clusterSizeOf(createArgs);
  const next = seeded(seed);
  const writer = join(__dirname, "crash-writer.mjs");
  for (let k = 0; k < kills; k++) {
    const before = qemuRaw(f, `${f}.before.raw`);
    const wseed = next();
    const child = spawn(process.execPath, [writer, f, String(wseed)], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    await new Promise<void>((resolve, reject) => {
      const check = () => (out.includes("ready\n") ? resolve() : undefined);
      child.stdout.on("data", check);
      child.once("exit", (code) => reject(new Error(`writer exited early (${code}): ${err}`)));
    });
    await new Promise((r) => setTimeout(r, 5 + (next() % 150)));
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    const c = qemuCheck(f);
    expect(c.report.corruptions ?? 0, `kill ${k}: ${JSON.stringify(c.report)} ${c.stderr}`).toBe(0);
    expect([0, 3], `kill ${k}: qemu-img check exit ${c.status}: ${c.stderr}`).toContain(c.status);

    // Durability: replay the same operations.
    const lines = out.split("\n").filter((l) => /^[sf] \d+$/.test(l));
    let lastFlush = -1;
    let lastStart = -1;
    for (const l of lines) {
      const n = Number(l.slice(2));
      if (l[0] === "f") lastFlush = n;
      else lastStart = n;
    }
    const r = rng(wseed);
    r(); // the writer's two start-up draws (snapshot or not, its name)
    r();
    const expected = before.slice();
    const unknown = new Uint8Array(expected.length);
    const ops: Op[] = [];
    for (let i = 0; i <= lastStart; i++) ops.push(nextOp(r, expected.length, cs));
    for (let i = 0; i <= lastFlush; i++) applyExpected(expected, ops[i], cs);
    for (let i = lastFlush + 1; i <= lastStart; i++) {
      const o = ops[i];
      if (o.kind !== "flush") unknown.fill(1, o.offset, o.offset + o.length);
    }
    const after = qemuRaw(f, `${f}.after.raw`);
    let bad = -1;
    for (let i = 0; i < after.length; i++) {
      if (!unknown[i] && after[i] !== expected[i]) {
        bad = i;
        break;
      }
    }
    expect(bad, `kill ${k}: byte ${bad} lost after the last flush (op ${lastFlush} of ${lastStart})`).toBe(-1);
  }
}
