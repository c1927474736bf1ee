// typevisor img resize [--shrink] [-f fmt] FILE [+|-]SIZE
import { parseArgs } from "node:util";
import { Qcow2Image, RawImage, resizeQcow2 } from "@typevisor/qcow2";
import { CommandError, type CommandIo } from "../command.js";
import { open, HELP, parseOr, sizeArg } from "./img-common.js";

const USAGE = `usage: typevisor img resize [-f fmt] [--shrink] FILE [+|-]SIZE\n`;

/** Runs `img resize`. */
export async function run(argv: string[], io: CommandIo): Promise<number> {
  // "-1G" would look like an option to parseArgs: split the size off first.
  const last = argv[argv.length - 1];
  const rel = last !== undefined && /^[+-]\d/.test(last) ? last : undefined;
  const { values, positionals } = parseOr(USAGE, () => parseArgs({ args: rel ? argv.slice(0, -1) : argv, options: { ...HELP, format: { type: "string", short: "f" }, shrink: { type: "boolean" }, quiet: { type: "boolean", short: "q" } }, allowPositionals: true }));
  if (values.help) {
    io.stdout.write(USAGE);
    return 0;
  }
  if (rel) positionals.push(rel);
  if (positionals.length !== 2) throw new CommandError(`expected FILE SIZE\n${USAGE}`, 2);
  const [path, text] = positionals;
  const dev = await open(path, { format: values.format });
  try {
    const amount = sizeArg(text.replace(/^-/, ""));
    const size = text.startsWith("+") ? dev.size + amount : text.startsWith("-") ? dev.size - amount : amount;
    if (size < 0) throw new CommandError("new size would be negative", 1);
    if (size < dev.size && !values.shrink) throw new CommandError("use the --shrink option to confirm that data past the new end may be lost", 1);
    if (dev instanceof Qcow2Image) await resizeQcow2(dev, size, { shrink: values.shrink });
    else if (dev instanceof RawImage) await dev.resize(size);
    if (!values.quiet) io.stdout.write("Image resized.\n");
  } finally {
    await dev.close();
  }
  return 0;
}
