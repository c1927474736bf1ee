// typevisor img snapshot [-l | -c NAME | -a NAME | -d NAME] FILE
import { parseArgs } from "node:util";
import { applySnapshot, createSnapshot, deleteSnapshot, listSnapshots } from "@typevisor/qcow2";
import { CommandError, type CommandIo } from "../command.js";
import { json, needQcow2, open, HELP, parseOr } from "./img-common.js";
import { snapshotHeader, snapshotJson, snapshotLine } from "./img-info.js";

const USAGE = `usage: typevisor img snapshot [-l | -c NAME | -a NAME | -d NAME] [--output=human|json] FILE
  -l list, -c create, -a apply (revert to), -d delete (NAME is a tag or an id)
`;

/** Runs `img snapshot`. */
export async function run(argv: string[], io: CommandIo): Promise<number> {
  const { values, positionals } = parseOr(USAGE, () => parseArgs({ args: argv, options: { ...HELP, ...{ list: { type: "boolean", short: "l" }, create: { type: "string", short: "c" }, apply: { type: "string", short: "a" }, delete: { type: "string", short: "d" }, output: { type: "string" }, quiet: { type: "boolean", short: "q" } } }, allowPositionals: true }));
  if (values.help) {
    io.stdout.write(USAGE);
    return 0;
  }
  if (positionals.length !== 1) throw new CommandError(`expected one FILE\n${USAGE}`, 2);
  const actions = [values.list, values.create, values.apply, values.delete].filter((x) => x !== undefined && x !== false);
  if (actions.length > 1) throw new CommandError("give only one of -l, -c, -a, -d", 2);
  const path = positionals[0];
  const list = actions.length === 0 || values.list;
  const dev = await open(path, { readOnly: !!list, metadataOnly: true });
  try {
    const img = needQcow2(dev, path, "snapshot");
    if (list) {
      const snaps = (await listSnapshots(img)).map(snapshotJson);
      if (values.output === "json") io.stdout.write(json(snaps));
      else if (snaps.length) io.stdout.write(["Snapshot list:", snapshotHeader(), ...snaps.map(snapshotLine)].join("\n") + "\n");
    } else if (values.create !== undefined) {
      await createSnapshot(img, { name: values.create });
    } else if (values.apply !== undefined) {
      await applySnapshot(img, values.apply);
    } else if (values.delete !== undefined) {
      await deleteSnapshot(img, values.delete);
    }
  } finally {
    await dev.close();
  }
  return 0;
}
