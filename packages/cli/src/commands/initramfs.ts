import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { initramfsFromPath } from "@typevisor/pc";
import { CommandError, type Command, type CommandIo } from "../command.js";

const HELP = `usage: typevisor initramfs --out FILE [--no-gzip] DIR|SPEC

Builds an initramfs (cpio "newc" archive, gzip-compressed by default) from a
folder (its contents become the archive's root, owned by root) or from a
gen_init_cpio spec file, one entry per line:

  file /init init.sh 0755 0 0
  dir /dev 0755 0 0
  nod /dev/console 0600 0 0 c 5 1
  slink /bin/sh busybox 0777 0 0

options:
  --out FILE   where to write the archive
  --no-gzip    write the cpio archive uncompressed
  -h, --help   show this help
`;

async function run(argv: string[], io: CommandIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, options: { out: { type: "string" }, "no-gzip": { type: "boolean" }, help: { type: "boolean", short: "h" } } });
  } catch (e) {
    throw new CommandError(`${(e as Error).message}\n\n${HELP}`, 2);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    io.stdout.write(HELP);
    return 0;
  }
  if (positionals.length !== 1 || !values.out) throw new CommandError(`expected --out FILE and one DIR or SPEC\n\n${HELP}`, 2);
  let builder;
  try {
    builder = initramfsFromPath(positionals[0]);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") throw new CommandError(`${positionals[0]}: no such file or folder`);
    throw e;
  }
  const bytes = values["no-gzip"] ? builder.toCpio() : await builder.toGzip();
  writeFileSync(values.out, bytes);
  io.stderr.write(`wrote ${values.out}: ${builder.size} entries, ${bytes.length} bytes\n`);
  return 0;
}

/** `typevisor initramfs`: build an initramfs from a folder or a gen_init_cpio spec. */
export const command: Command = { name: "initramfs", summary: "build an initramfs (cpio newc, gzip) from a folder or a spec", run };
