// typevisor img commit [-d] [-p] FILE
// Writes every range FILE holds into its backing file, then (unless -d)
// empties FILE so it reads through to the updated backing file.
import { parseArgs } from "node:util";
import { emptyImage, openImage, Qcow2Image, resolveRelative } from "@typevisor/qcow2";
import { CommandError, type CommandIo } from "../command.js";
import { needQcow2, open, HELP, parseOr, Progress } from "./img-common.js";

const USAGE = `usage: typevisor img commit [-d] [-p] FILE\n  -d  keep FILE's data (do not empty it)\n`;

/** Runs `img commit`. */
export async function run(argv: string[], io: CommandIo): Promise<number> {
  const { values, positionals } = parseOr(USAGE, () => parseArgs({ args: argv, options: { ...HELP, ...{ "skip-empty": { type: "boolean", short: "d" }, progress: { type: "boolean", short: "p" }, format: { type: "string", short: "f" }, quiet: { type: "boolean", short: "q" } } }, allowPositionals: true }));
  if (values.help) {
    io.stdout.write(USAGE);
    return 0;
  }
  if (positionals.length !== 1) throw new CommandError(`expected one FILE\n${USAGE}`, 2);
  const path = positionals[0];
  const dev = await open(path, { noBacking: true });
  try {
    const img = needQcow2(dev, path, "commit");
    const h = img.header;
    if (!h.backingFile) throw new CommandError(`${path} has no backing file to commit to`, 1);
    const base = await openImage(resolveRelative(path, h.backingFile), { format: h.backingFormat as "qcow2" | "raw" | undefined });
    try {
      const extents = (await img.map()).filter((e) => e.depth === 0 && e.present);
      const total = extents.reduce((n, e) => n + e.length, 0);
      const progress = new Progress(io, !!values.progress);
      const buf = new Uint8Array(1 << 20);
      let done = 0;
      for (const e of extents) {
        const end = Math.min(e.start + e.length, base.size);
        for (let p = e.start; p < end; p += buf.length) {
          const n = Math.min(buf.length, end - p);
          if (e.zero && !e.data) await base.writeZeroes(p, n);
          else {
            await img.read(p, buf.subarray(0, n));
            await base.write(p, buf.subarray(0, n));
          }
          done += n;
          progress.update(done, total);
        }
      }
      progress.finish();
      await base.flush();
    } finally {
      await base.close();
    }
    if (!values["skip-empty"]) await emptyImage(img as Qcow2Image);
    if (!values.quiet) io.stdout.write("Image committed.\n");
  } finally {
    await dev.close();
  }
  return 0;
}
