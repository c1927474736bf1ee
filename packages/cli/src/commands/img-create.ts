// typevisor img create [-f qcow2|raw] [-o options] FILE [SIZE]
import { parseArgs } from "node:util";
import { createQcow2, detectFormat, FileStore, openImage, resolveRelative, type Qcow2CreateOptions } from "@typevisor/qcow2";
import { CommandError, type CommandIo } from "../command.js";
import { onOff, HELP, parseOr, parseOptions, sizeArg } from "./img-common.js";

const USAGE = `usage: typevisor img create [-f qcow2|raw] [-b backing_file] [-F backing_fmt] [-o options] FILE [SIZE]
  -o cluster_size=SIZE, compat=0.10|1.1, lazy_refcounts=on|off, refcount_bits=N,
     extended_l2=on|off, compression_type=zlib|zstd, preallocation=off|metadata|falloc|full,
     backing_file=NAME, backing_fmt=qcow2|raw, data_file=NAME, data_file_raw=on|off,
     encrypt.format=luks (passphrase from TYPEVISOR_IMG_PASSPHRASE)
`;

const KNOWN = new Set(["cluster_size", "compat", "lazy_refcounts", "refcount_bits", "extended_l2", "compression_type", "preallocation", "backing_file", "backing_fmt", "data_file", "data_file_raw", "encrypt.format", "encrypt.cipher-alg", "encrypt.iter-time", "size"]);

/** Translates qemu-img -o options into create options (shared with convert). */
export function qcow2Options(o: Map<string, string>, size: number): Qcow2CreateOptions {
  for (const k of o.keys()) if (!KNOWN.has(k)) throw new CommandError(`invalid option '${k}' for qcow2\n${USAGE}`, 2);
  const compat = o.get("compat");
  if (compat !== undefined && !["0.10", "1.1", "v2", "v3"].includes(compat)) throw new CommandError(`invalid compat '${compat}' (0.10 or 1.1)`, 2);
  const pre = o.get("preallocation");
  if (pre !== undefined && !["off", "metadata", "falloc", "full"].includes(pre)) throw new CommandError(`invalid preallocation '${pre}'`, 2);
  const ct = o.get("compression_type");
  if (ct !== undefined && ct !== "zlib" && ct !== "zstd") throw new CommandError(`invalid compression_type '${ct}' (zlib or zstd)`, 2);
  const enc = o.get("encrypt.format");
  if (enc !== undefined && enc !== "luks") throw new CommandError(`encrypt.format '${enc}' is not supported (luks is)`, 2);
  return {
    size,
    clusterSize: o.has("cluster_size") ? sizeArg(o.get("cluster_size")!, "cluster_size") : undefined,
    compat: compat as Qcow2CreateOptions["compat"],
    lazyRefcounts: onOff("lazy_refcounts", o.get("lazy_refcounts")),
    refcountBits: o.has("refcount_bits") ? Number(o.get("refcount_bits")) : undefined,
    extendedL2: onOff("extended_l2", o.get("extended_l2")),
    compressionType: ct as "zlib" | "zstd" | undefined,
    preallocation: pre as Qcow2CreateOptions["preallocation"],
    backingFile: o.get("backing_file"),
    backingFormat: o.get("backing_fmt"),
    dataFile: o.get("data_file"),
    dataFileRaw: onOff("data_file_raw", o.get("data_file_raw")),
  };
}

/** Creates the image file (qcow2 or raw) at `path`. */
export async function createImageFile(path: string, fmt: string, opts: Qcow2CreateOptions, encrypt: boolean): Promise<void> {
  if (fmt === "raw") {
    const s = await FileStore.open(path, { create: true });
    await s.truncate(opts.size);
    await s.close();
    return;
  }
  if (fmt !== "qcow2") throw new CommandError(`unknown format '${fmt}' (qcow2 or raw)`, 2);
  const store = await FileStore.open(path, { create: true });
  let dataStore: FileStore | undefined;
  try {
    if (opts.dataFile) dataStore = await FileStore.open(resolveRelative(path, opts.dataFile), { create: true });
    const o: Qcow2CreateOptions = { ...opts, dataStore };
    if (encrypt) {
      const pass = process.env.TYPEVISOR_IMG_PASSPHRASE;
      if (!pass) throw new CommandError("encrypt.format=luks needs the passphrase in TYPEVISOR_IMG_PASSPHRASE", 2);
      const { luksCreateHook } = await import("@typevisor/qcow2");
      o.prepare = luksCreateHook(pass);
    }
    await createQcow2(store, o);
  } finally {
    await store.close().catch(() => undefined);
    if (dataStore) await dataStore.close().catch(() => undefined);
  }
}

/** Runs `img create`. */
export async function run(argv: string[], io: CommandIo): Promise<number> {
  const { values, positionals } = parseOr(USAGE, () => parseArgs({ args: argv, options: { ...HELP, ...{ format: { type: "string", short: "f" }, options: { type: "string", short: "o", multiple: true }, backing: { type: "string", short: "b" }, "backing-format": { type: "string", short: "F" }, quiet: { type: "boolean", short: "q" } } }, allowPositionals: true }));
  if (values.help) {
    io.stdout.write(USAGE);
    return 0;
  }
  const [file, sizeText] = positionals;
  if (!file || positionals.length > 2) throw new CommandError(`expected FILE [SIZE]\n${USAGE}`, 2);
  const fmt = values.format ?? "raw";
  const o = parseOptions(values.options);
  if (values.backing) o.set("backing_file", values.backing);
  if (values["backing-format"]) o.set("backing_fmt", values["backing-format"]);
  let size: number;
  if (sizeText !== undefined) size = sizeArg(sizeText);
  else if (o.has("size")) size = sizeArg(o.get("size")!);
  else if (o.has("backing_file")) {
    // Size defaults to the backing file's.
    const bpath = resolveRelative(file, o.get("backing_file")!);
    const bfmt = o.get("backing_fmt") ?? (await detectFormat(bpath));
    if (!o.has("backing_fmt")) o.set("backing_fmt", bfmt);
    const b = await openImage(bpath, { readOnly: true, format: bfmt as "qcow2" | "raw" });
    size = b.size;
    await b.close();
  } else throw new CommandError(`size is required unless a backing file gives it\n${USAGE}`, 2);
  o.delete("size");
  if (fmt === "raw" && [...o.keys()].some((k) => k !== "preallocation")) throw new CommandError("raw images take no options but preallocation", 2);
  const opts = fmt === "qcow2" ? qcow2Options(o, size) : { size };
  if (!values.quiet) io.stdout.write(`Formatting '${file}', fmt=${fmt} size=${size}\n`);
  await createImageFile(file, fmt, opts, o.get("encrypt.format") === "luks");
  return 0;
}
