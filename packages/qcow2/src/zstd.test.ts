import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describeWithTools, seeded, tempDir } from "@typevisor/test-support";
import { afterAll, describe, expect, it } from "vitest";
import { zstdCompress, zstdDecompress } from "./zstd.js";

function sample(kind: number, size: number, seed: number): Uint8Array {
  const next = seeded(seed);
  const b = new Uint8Array(size);
  if (kind === 0) for (let i = 0; i < size; i++) b[i] = next() & 0xff; // incompressible
  if (kind === 1) for (let i = 0; i < size; i++) b[i] = "the quick brown fox jumps over the lazy dog ".charCodeAt(i % 44) ^ (next() % 17 === 0 ? 1 : 0);
  if (kind === 2) b.fill(7);
  if (kind === 3) for (let i = 0; i < size; i++) b[i] = (i >> 9) & 0xff; // runs
  if (kind === 4) for (let i = 0; i < size; i++) b[i] = next() % 7 === 0 ? next() & 0xff : b[Math.max(0, i - 1 - (next() % 300))];
  return b;
}

const dir = tempDir("zstd-");
afterAll(() => dir.remove());

describe("zstd (own encoder and decoder)", () => {
  it("round-trips every kind of data and size", () => {
    for (const size of [1, 100, 255, 256, 4096, 65536, 65792, 200000]) {
      for (let kind = 0; kind < 5; kind++) {
        const d = sample(kind, size, size + kind);
        const c = zstdCompress(d);
        expect(zstdDecompress(c, size)).toEqual(d);
      }
    }
  });

  it("compresses compressible data", () => {
    const d = sample(1, 65536, 9);
    expect(zstdCompress(d).length).toBeLessThan(d.length / 3);
  });

  it("rejects damaged input with a typed error, never a hang", () => {
    const d = sample(4, 65536, 3);
    const c = zstdCompress(d);
    const next = seeded(77);
    for (let t = 0; t < 300; t++) {
      const bad = c.slice();
      for (let k = 0; k < 3; k++) bad[next() % bad.length] ^= 1 << (next() % 8);
      try {
        zstdDecompress(bad, 65536);
      } catch (e) {
        expect((e as { code?: string }).code).toBe("QCOW2_BAD_ZSTD");
      }
    }
  });
});

describeWithTools(["zstd"], "zstd against the reference implementation", () => {
  it("decodes what zstd wrote at several levels, and zstd decodes ours", () => {
    for (const [kind, level] of [[1, 1], [1, 19], [4, 3], [4, 19], [0, 3], [3, 9]] as const) {
      const d = sample(kind, 300000, kind * 7 + level);
      const raw = join(dir.path, `in-${kind}-${level}`);
      writeFileSync(raw, d);
      execFileSync("zstd", ["-q", "-f", `-${level}`, raw, "-o", raw + ".zst"]);
      const theirs = new Uint8Array(readFileSync(raw + ".zst"));
      expect(zstdDecompress(theirs, d.length)).toEqual(d);
      writeFileSync(raw + ".ours.zst", zstdCompress(d));
      execFileSync("zstd", ["-q", "-d", "-f", raw + ".ours.zst", "-o", raw + ".back"]);
      expect(new Uint8Array(readFileSync(raw + ".back"))).toEqual(d);
    }
  });
});
