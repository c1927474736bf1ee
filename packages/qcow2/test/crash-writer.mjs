// A writer to be killed: runs a seeded workload on an image forever.
// Usage: node crash-writer.mjs IMAGE SEED
import process from "node:process";
import { openImage, createSnapshot } from "../dist/index.js";

const [path, seedText] = process.argv.slice(2);
let s = Number(seedText) >>> 0 || 1;
const next = () => {
  s ^= s << 13;
  s >>>= 0;
  s ^= s >>> 17;
  s ^= s << 5;
  s >>>= 0;
  return s;
};
const img = await openImage(path);
const cs = img.clusterSize;
const clusters = Math.floor(img.size / cs);
// Snapshot operations are not crash-clean under qemu-img check's COPIED
// rule (nor are QEMU's); they run before the kill window, so the workload
// still exercises copy-on-write of shared clusters.
if (img.header.nbSnapshots < 3 && img.header.refcountOrder > 0 && next() % 2) {
  await img.write(0, new Uint8Array(cs * 8).fill(next() & 0xff));
  await createSnapshot(img, { name: `s${next() % 1000}` });
}
process.stdout.write("ready\n");
for (let i = 0; ; i++) {
  const op = next() % 10;
  const off = (next() % clusters) * cs + (next() % 2 ? next() % cs : 0);
  const len = Math.min(img.size - off, 1 + (next() % (cs * 4)));
  if (op < 5) {
    const b = new Uint8Array(len).fill(next() & 0xff);
    await img.write(off, b);
  } else if (op < 6) {
    const c = (next() % clusters) * cs;
    await img.writeCompressed(c, new Uint8Array(cs).fill(next() & 0xff));
  } else if (op < 7) {
    await img.discard(off, len);
  } else if (op < 8) {
    await img.writeZeroes(off, len, { unmap: next() % 2 === 0 });
  } else {
    await img.flush();
  }
}
