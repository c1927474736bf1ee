// typevisor img rebase [-u] [-p] -b BACKING [-F fmt] FILE
// Safe mode copies into FILE every cluster it does not hold whose contents
// differ between the old and the new backing file, so the guest sees the
// same disk; -u only rewrites the name.
import { parseArgs } from "node:util";
import { openImage, Qcow2Image, resolveRelative, setBackingFile, type BlockDevice } from "@typevisor/qcow2";
import { CommandError, type CommandIo } from "../command.js";
import { needQcow2, open, HELP, parseOr, Progress } from "./img-common.js";

const USAGE = `usage: typevisor img rebase [-u] [-p] -b BACKING [-F backing_fmt] FILE
  -b ""  removes the backing file (its data is copied in first unless -u)
`;

/** Runs `img rebase`. */
export async function run(argv: string[], io: CommandIo): Promise<number> {
  const { values, positionals } = parseOr(USAGE, () => parseArgs({ args: argv, options: { ...HELP, ...{ backing: { type: "string", short: "b" }, "backing-format": { type: "string", short: "F" }, unsafe: { type: "boolean", short: "u" }, progress: { type: "boolean", short: "p" }, format: { type: "string", short: "f" }, quiet: { type: "boolean", short: "q" } } }, allowPositionals: true }));
  if (values.help) {
    io.stdout.write(USAGE);
    return 0;
  }
  if (positionals.length !== 1 || values.backing === undefined) throw new CommandError(`expected -b BACKING FILE\n${USAGE}`, 2);
  const path = positionals[0];
  const dev = await open(path, { noBacking: !!values.unsafe });
  try {
    const img = needQcow2(dev, path, "rebase");
    const name = values.backing;
    const fmt = name ? values["backing-format"] : undefined;
    if (!values.unsafe) {
      let next: BlockDevice | null = null;
      if (name) next = await openImage(resolveRelative(path, name), { readOnly: true, format: fmt as "qcow2" | "raw" | undefined });
      try {
        await copyDifferences(img, next, new Progress(io, !!values.progress));
      } finally {
        await next?.close();
      }
    }
    await setBackingFile(img, name || undefined, fmt ?? (name ? img.header.backingFormat : undefined));
  } finally {
    await dev.close();
  }
  return 0;
}

async function copyDifferences(img: Qcow2Image, next: BlockDevice | null, progress: Progress): Promise<void> {
  const old = img.backing;
  const cs = img.clusterSize;
  const a = new Uint8Array(cs);
  const b = new Uint8Array(cs);
  const holes = (await img.map()).filter((e) => e.depth > 0 || !e.present);
  const total = holes.reduce((n, e) => n + e.length, 0);
  let done = 0;
  for (const e of holes) {
    for (let p = e.start; p < e.start + e.length; ) {
      const n = Math.min(cs - (p % cs), e.start + e.length - p);
      const oa = a.subarray(0, n);
      const nb = b.subarray(0, n);
      await readOr0(old, p, oa);
      await readOr0(next, p, nb);
      let same = true;
      for (let i = 0; i < n && same; i++) same = oa[i] === nb[i];
      if (!same) await img.write(p, oa);
      p += n;
      done += n;
      progress.update(done, total);
    }
  }
  progress.finish();
}

async function readOr0(dev: BlockDevice | null, pos: number, dest: Uint8Array): Promise<void> {
  dest.fill(0);
  if (!dev || pos >= dev.size) return;
  const n = Math.min(dest.length, dev.size - pos);
  await dev.read(pos, dest.subarray(0, n));
}
