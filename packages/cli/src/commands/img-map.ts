// typevisor img map [-f fmt] [--output=human|json] FILE
import { parseArgs } from "node:util";
import { Qcow2Image } from "@typevisor/qcow2";
import { CommandError, type CommandIo } from "../command.js";
import { open, HELP, parseOr } from "./img-common.js";

const USAGE = `usage: typevisor img map [-f fmt] [--output=human|json] FILE\n`;

/** Runs `img map`. */
export async function run(argv: string[], io: CommandIo): Promise<number> {
  const { values, positionals } = parseOr(USAGE, () => parseArgs({ args: argv, options: { ...HELP, ...{ format: { type: "string", short: "f" }, output: { type: "string" } } }, allowPositionals: true }));
  if (values.help) {
    io.stdout.write(USAGE);
    return 0;
  }
  if (positionals.length !== 1) throw new CommandError(`expected one FILE\n${USAGE}`, 2);
  const output = values.output ?? "human";
  if (output !== "human" && output !== "json") throw new CommandError("--output must be human or json", 2);
  const path = positionals[0];
  const dev = await open(path, { readOnly: true, format: values.format, metadataOnly: true });
  try {
    const extents = dev instanceof Qcow2Image ? await dev.map() : [{ start: 0, length: dev.size, data: true, zero: false, present: true, compressed: false, offset: 0, depth: 0 }];
    if (output === "json") {
      const rows = extents.map((e) => {
        const r: Record<string, unknown> = { start: e.start, length: e.length, depth: e.depth, present: e.present, zero: e.zero, data: e.data, compressed: e.compressed };
        if (e.offset !== undefined) r.offset = e.offset;
        return JSON.stringify(r).replace(/":/g, '": ').replace(/,"/g, ', "');
      });
      io.stdout.write(`[${rows.join(",\n")}]\n`);
    } else {
      const hex = (n: number) => `0x${n.toString(16)}`;
      io.stdout.write(`${"Offset".padEnd(20)}${"Length".padEnd(20)}${"Mapped to".padEnd(20)}File\n`);
      for (const e of extents) {
        if (!e.data || e.offset === undefined || e.depth !== 0) continue;
        io.stdout.write(`${hex(e.start).padEnd(20)}${hex(e.length).padEnd(20)}${hex(e.offset).padEnd(20)}${path}\n`);
      }
    }
  } finally {
    await dev.close();
  }
  return 0;
}
