// typevisor img compare [-f fmt] [-F fmt] [-p] A B
// Exit status as qemu-img: 0 identical, 1 different, 2 error.
import type { BlockDevice } from "@typevisor/qcow2";
import { parseArgs } from "node:util";
import { isZeroBuffer } from "@typevisor/qcow2";
import { CommandError, type CommandIo } from "../command.js";
import { open, HELP, parseOr, Progress } from "./img-common.js";

const USAGE = `usage: typevisor img compare [-f fmt] [-F fmt] [-p] [-s] A B
exit status: 0 identical, 1 contents differ, 2 error
`;

/** Runs `img compare`. */
export async function run(argv: string[], io: CommandIo): Promise<number> {
  const { values, positionals } = parseOr(USAGE, () => parseArgs({ args: argv, options: { ...HELP, ...{ "a-format": { type: "string", short: "f" }, "b-format": { type: "string", short: "F" }, progress: { type: "boolean", short: "p" }, strict: { type: "boolean", short: "s" }, quiet: { type: "boolean", short: "q" } } }, allowPositionals: true }));
  if (values.help) {
    io.stdout.write(USAGE);
    return 0;
  }
  if (positionals.length !== 2) throw new CommandError(`expected two images\n${USAGE}`, 2);
  let a: BlockDevice | undefined;
  let b: BlockDevice | undefined;
  try {
    a = await open(positionals[0], { readOnly: true, format: values["a-format"] });
    b = await open(positionals[1], { readOnly: true, format: values["b-format"] });
  } catch (e) {
    await a?.close();
    io.stderr.write(`typevisor img compare: ${(e as Error).message}\n`);
    return 2;
  }
  try {
    if (a.size !== b.size) {
      if (values.strict) {
        io.stdout.write("Strict mode: Image size mismatch!\n");
        return 1;
      }
      io.stdout.write("Warning: Image size mismatch!\n");
    }
    const common = Math.min(a.size, b.size);
    const progress = new Progress(io, !!values.progress);
    const chunk = 1 << 20;
    const ba = new Uint8Array(chunk);
    const bb = new Uint8Array(chunk);
    for (let p = 0; p < common; p += chunk) {
      const n = Math.min(chunk, common - p);
      await Promise.all([a.read(p, ba.subarray(0, n)), b.read(p, bb.subarray(0, n))]);
      for (let i = 0; i < n; i++) {
        if (ba[i] !== bb[i]) {
          progress.finish();
          io.stdout.write(`Content mismatch at offset ${p + i - ((p + i) % 512)}!\n`);
          return 1;
        }
      }
      progress.update(p + n, Math.max(a.size, b.size));
    }
    // The longer image must be zero past the shorter one's end.
    const longer = a.size > b.size ? a : b;
    for (let p = common; p < longer.size; p += chunk) {
      const n = Math.min(chunk, longer.size - p);
      await longer.read(p, ba.subarray(0, n));
      if (!isZeroBuffer(ba.subarray(0, n))) {
        let i = 0;
        while (ba[i] === 0) i++;
        progress.finish();
        io.stdout.write(`Content mismatch at offset ${p + i - ((p + i) % 512)}!\n`);
        return 1;
      }
    }
    progress.finish();
    io.stdout.write("Images are identical.\n");
    return 0;
  } finally {
    await a.close();
    await b.close();
  }
}
