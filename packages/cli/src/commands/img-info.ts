// typevisor img info [--output=json] [--backing-chain] FILE
import { parseArgs } from "node:util";
import { listSnapshots, Qcow2Image, RawImage, type BlockDevice, type SnapshotInfo } from "@typevisor/qcow2";
import { CommandError, type CommandIo } from "../command.js";
import { actualSize, human, json, open, HELP, parseOr } from "./img-common.js";

const USAGE = `usage: typevisor img info [-f fmt] [--output=human|json] [--backing-chain] FILE\n`;

function snapshotJson(s: SnapshotInfo) {
  return {
    ...(s.icount >= 0 ? { icount: s.icount } : {}),
    "vm-state-size": s.vmStateSize,
    name: s.name,
    "date-sec": s.dateSec,
    "date-nsec": s.dateNsec,
    "vm-clock-sec": Math.floor(s.vmClockNsec / 1e9),
    "vm-clock-nsec": s.vmClockNsec % 1e9,
    id: s.id,
  };
}

/** The info record of one image, with qemu-img's JSON field names. */
export async function describe(path: string, dev: BlockDevice): Promise<Record<string, unknown>> {
  const info: Record<string, unknown> = { "virtual-size": dev.size, filename: path };
  if (dev instanceof Qcow2Image) {
    const h = dev.header;
    info["cluster-size"] = dev.clusterSize;
    info.format = "qcow2";
    info["actual-size"] = await actualSize(path);
    if (h.backingFile) {
      info["backing-filename"] = h.backingFile;
      info["full-backing-filename"] = h.backingFile.startsWith("/") ? h.backingFile : path.replace(/[^/]*$/, "") + h.backingFile;
      if (h.backingFormat) info["backing-filename-format"] = h.backingFormat;
    }
    const snaps = await listSnapshots(dev);
    if (snaps.length) info.snapshots = snaps.map(snapshotJson);
    const data: Record<string, unknown> = { compat: h.version === 3 ? "1.1" : "0.10" };
    if (h.version === 2) {
      data["compression-type"] = "zlib";
      data["refcount-bits"] = 16;
    } else {
      if (dev.hasDataFile) {
        data["data-file"] = h.dataFile;
        data["data-file-raw"] = dev.dataFileRaw;
      }
      data["compression-type"] = h.compressionType === 1 ? "zstd" : "zlib";
      data["lazy-refcounts"] = dev.lazyRefcounts;
      data["refcount-bits"] = 1 << h.refcountOrder;
      data.corrupt = (h.incompatible & 2n) !== 0n;
      data["extended-l2"] = dev.extendedL2;
    }
    if (h.cryptMethod === 2) {
      data.encrypt = { format: "luks" };
      info.encrypted = true;
    }
    info["format-specific"] = { type: "qcow2", data };
    info["dirty-flag"] = (h.incompatible & 1n) !== 0n;
  } else if (dev instanceof RawImage) {
    info.format = "raw";
    info["actual-size"] = await actualSize(path);
    info["dirty-flag"] = false;
  }
  return info;
}

function humanText(info: Record<string, unknown>): string {
  const lines = [`image: ${info.filename}`, `file format: ${info.format}`, `virtual size: ${human(info["virtual-size"] as number)} (${info["virtual-size"]} bytes)`, `disk size: ${human(info["actual-size"] as number)}`];
  if (info["cluster-size"]) lines.push(`cluster_size: ${info["cluster-size"]}`);
  if (info["backing-filename"]) {
    lines.push(`backing file: ${info["backing-filename"]}`);
    if (info["backing-filename-format"]) lines.push(`backing file format: ${info["backing-filename-format"]}`);
  }
  if (info.encrypted) lines.push("encrypted: yes");
  const snaps = info.snapshots as ReturnType<typeof snapshotJson>[] | undefined;
  if (snaps) {
    lines.push("Snapshot list:", snapshotHeader());
    for (const s of snaps) lines.push(snapshotLine(s));
  }
  const fs = info["format-specific"] as { data: Record<string, unknown> } | undefined;
  if (fs) {
    lines.push("Format specific information:");
    for (const [k, v] of Object.entries(fs.data)) lines.push(`    ${k.replace(/-/g, " ")}: ${typeof v === "object" ? JSON.stringify(v) : v}`);
  }
  return lines.join("\n") + "\n";
}

/** Column header of a snapshot list. */
export function snapshotHeader(): string {
  return "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT";
}

/** One snapshot list row, as qemu-img prints it. */
export function snapshotLine(s: ReturnType<typeof snapshotJson>): string {
  const d = new Date(s["date-sec"] * 1000);
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  const date = `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  const secs = s["vm-clock-sec"];
  const clock = `${p(Math.floor(secs / 3600))}:${p(Math.floor(secs / 60) % 60)}:${p(secs % 60)}.${p(Math.floor(s["vm-clock-nsec"] / 1e6), 3)}`;
  return `${s.id.padEnd(10)}${s.name.padEnd(18)}${human(s["vm-state-size"]).padStart(7)} ${date} ${clock} ${String(s.icount ?? "").padStart(10)}`;
}

export { snapshotJson };

/** Runs `img info`. */
export async function run(argv: string[], io: CommandIo): Promise<number> {
  const { values, positionals } = parseOr(USAGE, () => parseArgs({ args: argv, options: { ...HELP, ...{ format: { type: "string", short: "f" }, output: { type: "string" }, "backing-chain": { type: "boolean" } } }, allowPositionals: true }));
  if (values.help) {
    io.stdout.write(USAGE);
    return 0;
  }
  if (positionals.length !== 1) throw new CommandError(`expected one FILE\n${USAGE}`, 2);
  const output = values.output ?? "human";
  if (output !== "human" && output !== "json") throw new CommandError(`--output must be human or json`, 2);
  // Like qemu-img, info does not need the backing file unless the chain is asked for.
  const dev = await open(positionals[0], { readOnly: true, format: values.format, metadataOnly: true, noBacking: !values["backing-chain"] });
  try {
    const chain: Record<string, unknown>[] = [];
    let d: BlockDevice | null = dev;
    let path = positionals[0];
    while (d) {
      const info = await describe(path, d);
      chain.push(info);
      if (!values["backing-chain"] || !(d instanceof Qcow2Image) || !d.backing) break;
      path = info["full-backing-filename"] as string;
      d = d.backing;
    }
    if (output === "json") io.stdout.write(json(values["backing-chain"] ? chain : chain[0]));
    else io.stdout.write(chain.map(humanText).join("\n"));
  } finally {
    await dev.close();
  }
  return 0;
}
