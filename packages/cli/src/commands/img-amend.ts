// typevisor img amend -o options FILE
import { parseArgs } from "node:util";
import { amendQcow2, type AmendOptions } from "@typevisor/qcow2";
import { CommandError, type CommandIo } from "../command.js";
import { needQcow2, onOff, open, HELP, parseOr, parseOptions } from "./img-common.js";

const USAGE = `usage: typevisor img amend -o compat=0.10|1.1,lazy_refcounts=on|off,refcount_bits=N,backing_file=NAME,backing_fmt=FMT,data_file_raw=on|off FILE\n`;

/** Runs `img amend`. */
export async function run(argv: string[], io: CommandIo): Promise<number> {
  const { values, positionals } = parseOr(USAGE, () => parseArgs({ args: argv, options: { ...HELP, ...{ options: { type: "string", short: "o", multiple: true }, format: { type: "string", short: "f" }, progress: { type: "boolean", short: "p" }, quiet: { type: "boolean", short: "q" } } }, allowPositionals: true }));
  if (values.help) {
    io.stdout.write(USAGE);
    return 0;
  }
  if (positionals.length !== 1 || !values.options) throw new CommandError(`expected -o options FILE\n${USAGE}`, 2);
  const o = parseOptions(values.options);
  const a: AmendOptions = {};
  for (const [k, v] of o) {
    switch (k) {
      case "compat":
        if (v !== "0.10" && v !== "1.1") throw new CommandError(`invalid compat '${v}'`, 2);
        a.compat = v;
        break;
      case "lazy_refcounts":
        a.lazyRefcounts = onOff(k, v);
        break;
      case "refcount_bits":
        a.refcountBits = Number(v);
        break;
      case "backing_file":
        a.backingFile = v;
        break;
      case "backing_fmt":
        a.backingFormat = v;
        break;
      case "data_file_raw":
        a.dataFileRaw = onOff(k, v);
        break;
      default:
        throw new CommandError(`option '${k}' cannot be amended`, 2);
    }
  }
  const path = positionals[0];
  const dev = await open(path, { noBacking: true, format: values.format });
  try {
    await amendQcow2(needQcow2(dev, path, "amend"), a);
  } finally {
    await dev.close();
  }
  return 0;
}
