// `typevisor img`: disk image work shaped like qemu-img.
import type { Command, CommandIo } from "../command.js";
import { CommandError } from "../command.js";
import { asCommandError } from "./img-common.js";

type Sub = { summary: string; load: () => Promise<{ run(argv: string[], io: CommandIo): Promise<number> }> };

const SUBCOMMANDS: Record<string, Sub> = {
  amend: { summary: "change image options in place (-o compat=,lazy_refcounts=,refcount_bits=,...)", load: () => import("./img-amend.js") },
  check: { summary: "check an image for leaks and corruptions, and repair them (-r leaks|all)", load: () => import("./img-check.js") },
  commit: { summary: "write an image's data into its backing file", load: () => import("./img-commit.js") },
  compare: { summary: "compare the contents of two images", load: () => import("./img-compare.js") },
  convert: { summary: "copy an image to another format or options (-O fmt, -c compress, -p progress)", load: () => import("./img-convert.js") },
  create: { summary: "create an image (-f qcow2|raw, -o options) FILE SIZE", load: () => import("./img-create.js") },
  info: { summary: "show an image's format, sizes, options and snapshots", load: () => import("./img-info.js") },
  map: { summary: "show how the image's data is mapped", load: () => import("./img-map.js") },
  rebase: { summary: "change an image's backing file (-b new, -u unsafe)", load: () => import("./img-rebase.js") },
  resize: { summary: "change an image's virtual size ([+|-]SIZE, --shrink)", load: () => import("./img-resize.js") },
  snapshot: { summary: "internal snapshots: -c create, -l list, -a apply, -d delete", load: () => import("./img-snapshot.js") },
};

function usage(): string {
  const names = Object.keys(SUBCOMMANDS).sort();
  return [
    "usage: typevisor img <subcommand> [options]",
    "",
    "Disk image tools for qcow2 and raw images (the qemu-img command set).",
    "",
    ...names.map((n) => `  ${n.padEnd(9)} ${SUBCOMMANDS[n].summary}`),
    "",
    "Run 'typevisor img <subcommand> --help' for its options.",
    "",
  ].join("\n");
}

const command: Command = {
  name: "img",
  summary: "disk images: create, info, check, convert, compare, map, snapshot, resize, rebase, commit, amend",
  async run(argv: string[], io: CommandIo): Promise<number> {
    const [sub, ...rest] = argv;
    if (sub === undefined || sub === "--help" || sub === "-h" || sub === "help") {
      io.stdout.write(usage());
      return sub === undefined ? 2 : 0;
    }
    const entry = SUBCOMMANDS[sub];
    if (!entry) throw new CommandError(`unknown subcommand '${sub}'\n\n${usage()}`, 2);
    const mod = await entry.load();
    try {
      return await mod.run(rest, io);
    } catch (e) {
      throw asCommandError(e);
    }
  },
};

export default command;
