import { readFileSync } from "node:fs";
import { join } from "node:path";
import { TLB_SIZE } from "@typevisor/mmu-ept";
import { describe, expect, it } from "vitest";
import * as D from "./decoder.js";

describe("record dispatch", () => {
  it("labels every case with the id of the handler it names", () => {
    const src = readFileSync(join(__dirname, "record-ops.ts"), "utf8");
    const cases = [...src.matchAll(/case (\d+): (?:\{ )?\/\/ (H_\w+)/g)];
    const ids = Object.entries(D).filter(([k]) => k.startsWith("H_"));
    expect(cases.length).toBe(ids.length);
    for (const [, num, name] of cases) expect((D as Record<string, unknown>)[name]).toBe(Number(num));
  });

  it("indexes the TLB with the mask written inline", () => {
    const src = readFileSync(join(__dirname, "record-ops.ts"), "utf8");
    expect(src).toContain("& 16383; // TLB_SIZE - 1");
    expect(TLB_SIZE - 1).toBe(16383);
  });
});
