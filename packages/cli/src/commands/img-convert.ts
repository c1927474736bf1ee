// typevisor img convert [-f fmt] -O fmt [-c] [-p] [-o options] [-B backing] IN OUT
import { parseArgs } from "node:util";
import { isZeroBuffer, openImage, Qcow2Image, type BlockDevice } from "@typevisor/qcow2";
import { CommandError, type CommandIo } from "../command.js";
import { createImageFile, qcow2Options } from "./img-create.js";
import { open, HELP, parseOr, parseOptions, Progress } from "./img-common.js";

const USAGE = `usage: typevisor img convert [-f fmt] -O qcow2|raw [-c] [-p] [-o options] [-B backing_file] [-F backing_fmt] IN OUT
  -c  compress the output clusters (qcow2)
  -p  show progress
`;

const CHUNK = 2 << 20;

/** Extents of `dev` that may hold data (holes of a qcow2 image are skipped). */
async function dataExtents(dev: BlockDevice): Promise<[number, number][]> {
  if (!(dev instanceof Qcow2Image)) return [[0, dev.size]];
  const out: [number, number][] = [];
  for (const e of await dev.map()) {
    if (e.zero && !e.data) continue; // zero clusters and holes read as zeros
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === e.start) last[1] += e.length;
    else out.push([e.start, e.length]);
  }
  return out;
}

/** Runs `img convert`. */
export async function run(argv: string[], io: CommandIo): Promise<number> {
  const { values, positionals } = parseOr(USAGE, () => parseArgs({ args: 
    argv, options: { ...HELP, ...{
      format: { type: "string", short: "f" },
      "output-format": { type: "string", short: "O" },
      compress: { type: "boolean", short: "c" },
      progress: { type: "boolean", short: "p" },
      options: { type: "string", short: "o", multiple: true },
      backing: { type: "string", short: "B" },
      "backing-format": { type: "string", short: "F" },
      quiet: { type: "boolean", short: "q" },
    } }, allowPositionals: true }));
  if (values.help) {
    io.stdout.write(USAGE);
    return 0;
  }
  if (positionals.length !== 2) throw new CommandError(`expected IN OUT\n${USAGE}`, 2);
  const [inPath, outPath] = positionals;
  const outFmt = values["output-format"] ?? "raw";
  if (outFmt !== "qcow2" && outFmt !== "raw") throw new CommandError(`unknown output format '${outFmt}'`, 2);
  if (values.compress && outFmt !== "qcow2") throw new CommandError("-c needs -O qcow2", 2);
  const src = await open(inPath, { readOnly: true, format: values.format });
  try {
    const o = parseOptions(values.options);
    if (values.backing) o.set("backing_file", values.backing);
    if (values["backing-format"]) o.set("backing_fmt", values["backing-format"]);
    const opts = outFmt === "qcow2" ? qcow2Options(o, src.size) : { size: src.size };
    if (outFmt === "raw" && o.size > 0) throw new CommandError("raw output takes no options", 2);
    await createImageFile(outPath, outFmt, opts, o.get("encrypt.format") === "luks");
    // The new image is rebuilt from scratch on failure: barriers would only slow it.
    const dst = await openImage(outPath, { format: outFmt, barriers: false, noBacking: false, passphrase: process.env.TYPEVISOR_IMG_PASSPHRASE });
    try {
      await copy(src, dst, !!values.compress, new Progress(io, !!values.progress), !!opts.backingFile);
      await dst.flush();
    } finally {
      await dst.close();
    }
  } finally {
    await src.close();
  }
  return 0;
}

async function copy(src: BlockDevice, dst: BlockDevice, compress: boolean, progress: Progress, hasBacking: boolean): Promise<void> {
  // With a backing file every range matters (zeros must hide backing data).
  const extents = hasBacking ? [[0, src.size] as [number, number]] : await dataExtents(src);
  const total = extents.reduce((n, [, l]) => n + l, 0);
  let done = 0;
  const cs = dst instanceof Qcow2Image ? dst.clusterSize : 65536;
  const buf = new Uint8Array(Math.max(CHUNK, cs));
  for (const [start, length] of extents) {
    for (let p = start; p < start + length; ) {
      // Chunks end on the destination's cluster boundaries.
      let end = Math.floor((p + buf.length) / cs) * cs;
      if (end <= p) end = p + buf.length;
      end = Math.min(end, start + length);
      const n = end - p;
      const chunk = buf.subarray(0, n);
      await src.read(p, chunk);
      // Write cluster by cluster, skipping zeros (the new image reads zero there).
      for (let q = 0; q < n; ) {
        const clusterEnd = Math.min(n, Math.floor((p + q) / cs) * cs + cs - p);
        const piece = chunk.subarray(q, clusterEnd);
        if (!isZeroBuffer(piece)) {
          let runEnd = clusterEnd;
          if (!compress) {
            while (runEnd < n) {
              const nextEnd = Math.min(n, runEnd + cs);
              if (isZeroBuffer(chunk.subarray(runEnd, nextEnd))) break;
              runEnd = nextEnd;
            }
          }
          const data = chunk.subarray(q, runEnd);
          if (compress && dst instanceof Qcow2Image && (p + q) % cs === 0 && (data.length === cs || p + runEnd === dst.size)) await dst.writeCompressed(p + q, data);
          else await dst.write(p + q, data);
          q = runEnd;
        } else {
          if (hasBacking) await dst.writeZeroes(p + q, clusterEnd - q);
          q = clusterEnd;
        }
      }
      p += n;
      done += n;
      progress.update(done, total);
    }
  }
  progress.finish();
}
