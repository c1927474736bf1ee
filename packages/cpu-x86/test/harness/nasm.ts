// Assembles a flat binary (nasm -f bin) from source text, for tests that run
// a small program straight from guest memory.
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "@typevisor/test-support";

/** The flat binary nasm makes of `source` (its `org` says where it goes). */
export function nasmBinary(source: string): Uint8Array {
  const dir = tempDir("tv-nasm-");
  try {
    const src = join(dir.path, "program.asm");
    const bin = join(dir.path, "program.bin");
    writeFileSync(src, source);
    execFileSync("nasm", ["-f", "bin", "-o", bin, src]);
    return readFileSync(bin);
  } finally {
    dir.remove();
  }
}
