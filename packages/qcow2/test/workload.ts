// Seeded random workloads applied to an image and to a plain buffer (the
// mirror of what the disk must read back).
import { seeded } from "@typevisor/test-support";
import type { BlockDevice } from "../src/index.js";
import { pattern } from "./helpers.js";

/** One operation. */
export type Op =
  | { kind: "write"; offset: number; length: number; seed: number }
  | { kind: "zero"; offset: number; length: number; unmap: boolean }
  | { kind: "discard"; offset: number; length: number };

/** A list of operations inside a disk of `size` bytes with clusters of `cs`. */
export function makeWorkload(seed: number, size: number, cs: number, count: number, kinds: Op["kind"][] = ["write", "write", "write", "zero", "discard"]): Op[] {
  const next = seeded(seed);
  const ops: Op[] = [];
  const maxLen = Math.min(size, cs * 3 + 4096);
  for (let i = 0; i < count; i++) {
    const kind = kinds[next() % kinds.length];
    let offset: number;
    let length: number;
    if (next() % 3 === 0) {
      // Aligned to clusters.
      const clusters = Math.ceil(size / cs);
      offset = (next() % clusters) * cs;
      length = Math.min(size - offset, (1 + (next() % 3)) * cs);
    } else {
      offset = (next() % (size / 512)) * 512 + (kind === "write" ? next() % 512 : 0);
      offset = Math.min(offset, size - 1);
      length = 1 + (next() % maxLen);
      if (kind !== "write") length = Math.max(512, length - (length % 512));
      length = Math.min(length, size - offset);
    }
    if (kind === "write") ops.push({ kind, offset, length, seed: next() });
    else if (kind === "zero") ops.push({ kind, offset, length, unmap: next() % 2 === 0 });
    else ops.push({ kind, offset, length });
  }
  return ops;
}

/**
 * Applies `op` to the mirror as this library defines it: discard zeroes the
 * whole clusters it covers (the disk's partial last cluster counts as whole)
 * and leaves partial clusters alone.
 */
export function applyToMirror(mirror: Uint8Array, op: Op, cs: number, discardZeroes = true): void {
  if (op.kind === "write") mirror.set(pattern(op.length, op.seed), op.offset);
  else if (op.kind === "zero") mirror.fill(0, op.offset, op.offset + op.length);
  else if (discardZeroes) {
    const end = op.offset + op.length;
    const a = Math.ceil(op.offset / cs) * cs;
    const b = end === mirror.length ? end : Math.floor(end / cs) * cs;
    if (b > a) mirror.fill(0, a, b);
  }
}

/** Applies `op` to a device. */
export async function applyToDevice(dev: BlockDevice, op: Op): Promise<void> {
  if (op.kind === "write") await dev.write(op.offset, pattern(op.length, op.seed));
  else if (op.kind === "zero") await dev.writeZeroes(op.offset, op.length, { unmap: op.unmap });
  else await dev.discard(op.offset, op.length);
}

/** The same operation as a qemu-io command. */
export function qemuIoCommand(op: Op): string {
  if (op.kind === "write") return `write -P ${op.seed & 0xff} ${op.offset} ${op.length}`;
  if (op.kind === "zero") return `write -z ${op.unmap ? "-u " : ""}${op.offset} ${op.length}`;
  return `discard ${op.offset} ${op.length}`;
}
