// typevisor img check [-r leaks|all] [--output=json] FILE
// Exit status as qemu-img: 0 clean, 1 check error, 2 corruptions, 3 leaks only.
import { parseArgs } from "node:util";
import { checkExitCode, checkImage, FileStore, Qcow2Error, Qcow2Image, type CheckResult } from "@typevisor/qcow2";
import { CommandError, type CommandIo } from "../command.js";
import { json, HELP, parseOr } from "./img-common.js";

const USAGE = `usage: typevisor img check [-f qcow2] [-r leaks|all] [--output=human|json] FILE
exit status: 0 no problems, 1 check could not complete, 2 corruptions, 3 leaks only
`;

function report(path: string, r: CheckResult): Record<string, unknown> {
  const out: Record<string, unknown> = { "image-end-offset": r.imageEndOffset, "total-clusters": r.totalClusters, "check-errors": r.checkErrors };
  if (r.leaks) out.leaks = r.leaks;
  if (r.corruptions) out.corruptions = r.corruptions;
  if (r.leaksFixed) out["leaks-fixed"] = r.leaksFixed;
  if (r.corruptionsFixed) out["corruptions-fixed"] = r.corruptionsFixed;
  out["allocated-clusters"] = r.allocatedClusters;
  out.filename = path;
  out.format = "qcow2";
  if (r.fragmentedClusters) out["fragmented-clusters"] = r.fragmentedClusters;
  if (r.compressedClusters) out["compressed-clusters"] = r.compressedClusters;
  return out;
}

function humanText(r: CheckResult): string {
  const lines: string[] = [...r.messages];
  if (r.leaksFixed || r.corruptionsFixed) lines.push(`The following inconsistencies were found and repaired:\n\n    ${r.leaksFixed} leaked clusters\n    ${r.corruptionsFixed} corruptions\n\nDouble checking the fixed image now...`);
  if (r.corruptions === 0 && r.leaks === 0 && r.checkErrors === 0) lines.push("No errors were found on the image.");
  if (r.corruptions) lines.push(`\n${r.corruptions} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.`);
  if (r.leaks) lines.push(`\n${r.leaks} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.`);
  if (r.checkErrors) lines.push(`\n${r.checkErrors} internal errors have occurred during the check.`);
  if (r.totalClusters) {
    const pct = (n: number) => ((n * 100) / r.totalClusters).toFixed(2);
    lines.push(`${r.allocatedClusters}/${r.totalClusters} = ${pct(r.allocatedClusters)}% allocated, ${pct(r.fragmentedClusters)}% fragmented, ${pct(r.compressedClusters)}% compressed clusters`);
  }
  lines.push(`Image end offset: ${r.imageEndOffset}`);
  return lines.join("\n") + "\n";
}

/** Runs `img check`. */
export async function run(argv: string[], io: CommandIo): Promise<number> {
  const { values, positionals } = parseOr(USAGE, () => parseArgs({ args: argv, options: { ...HELP, ...{ format: { type: "string", short: "f" }, repair: { type: "string", short: "r" }, output: { type: "string" }, quiet: { type: "boolean", short: "q" } } }, allowPositionals: true }));
  if (values.help) {
    io.stdout.write(USAGE);
    return 0;
  }
  if (positionals.length !== 1) throw new CommandError(`expected one FILE\n${USAGE}`, 2);
  const repair = values.repair as "leaks" | "all" | undefined;
  if (repair !== undefined && repair !== "leaks" && repair !== "all") throw new CommandError("-r takes leaks or all", 2);
  if (values.format !== undefined && values.format !== "qcow2") throw new CommandError(`check supports qcow2 images, not '${values.format}'`, 1);
  const output = values.output ?? "human";
  if (output !== "human" && output !== "json") throw new CommandError("--output must be human or json", 2);
  const path = positionals[0];
  let img: Qcow2Image;
  try {
    const store = await FileStore.open(path, { readOnly: !repair });
    try {
      // The backing chain is not needed to check this file's structures.
      img = await Qcow2Image.open(store, { skipDirtyRepair: true, readOnly: !repair, dataStore: store, cipher: { decrypt() {}, encrypt() {} } });
    } catch (e) {
      await store.close();
      throw e;
    }
  } catch (e) {
    if (e instanceof Qcow2Error) {
      io.stderr.write(`typevisor img check: ${path}: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
  let r: CheckResult;
  try {
    r = await checkImage(img, { repair });
  } catch (e) {
    if (e instanceof Qcow2Error) {
      io.stderr.write(`typevisor img check: ${path}: ${e.message}\n`);
      return 1;
    }
    throw e;
  } finally {
    await img.close().catch(() => undefined);
  }
  if (output === "json") {
    if (!values.quiet) for (const m of r.messages) io.stderr.write(m + "\n");
    io.stdout.write(json(report(path, r)));
  } else if (!values.quiet) io.stdout.write(humanText(r));
  return checkExitCode(r);
}
