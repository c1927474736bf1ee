// A writer to be killed: runs a seeded workload on an image until killed.
// Prints "ready", then "s N" before operation N starts and "f N" once the
// flush that is operation N has completed.
// Usage: node crash-writer.mjs IMAGE SEED
import process from "node:process";
import { openImage, createSnapshot } from "../dist/index.js";
import { nextOp, rng } from "./crash-ops.mjs";

const [path, seedText] = process.argv.slice(2);
const next = rng(Number(seedText));
const img = await openImage(path);
const cs = img.clusterSize;
// Snapshot operations are not crash-clean under qemu-img check's COPIED
// rule (nor are QEMU's); they run before the kill window, so the workload
// still exercises copy-on-write of shared clusters.
// Two draws always happen here, so the checker can replay the sequence.
const wantSnapshot = next() % 2 === 1;
const snapshotName = `s${next() % 100000}`;
if (wantSnapshot && img.header.nbSnapshots < 3 && img.header.refcountOrder > 0) {
  await createSnapshot(img, { name: snapshotName });
}
await img.flush();
process.stdout.write("ready\n");
for (let i = 0; ; i++) {
  const op = nextOp(next, img.size, cs);
  process.stdout.write(`s ${i}\n`);
  if (op.kind === "write") await img.write(op.offset, new Uint8Array(op.length).fill(op.fill));
  else if (op.kind === "compressed") await img.writeCompressed(op.offset, new Uint8Array(cs).fill(op.fill));
  else if (op.kind === "discard") await img.discard(op.offset, op.length);
  else if (op.kind === "zero") await img.writeZeroes(op.offset, op.length, { unmap: op.unmap });
  else {
    await img.flush();
    process.stdout.write(`f ${i}\n`);
  }
}
