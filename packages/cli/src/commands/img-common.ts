// Shared pieces of the `typevisor img` subcommands: option parsing in
// qemu-img's style, opening images, progress output.
import { stat } from "node:fs/promises";
import { parseSize } from "@typevisor/hv-core";
import { openImage, Qcow2Error, Qcow2Image, type BlockDevice } from "@typevisor/qcow2";
import { CommandError, type CommandIo } from "../command.js";

/** Runs a node:util parseArgs call, turning its errors into usage errors (status 2). */
export function parseOr<R>(usage: string, f: () => R): R {
  try {
    return f();
  } catch (e) {
    throw new CommandError(`${(e as Error).message}\n${usage}`, 2);
  }
}

/** The `--help`/`-h` option every subcommand takes. */
export const HELP = { help: { type: "boolean", short: "h" } } as const;

/** Splits a qemu-img `-o key=value,key=value` string (`,,` escapes a comma). */
export function parseOptions(list: string[] | undefined): Map<string, string> {
  const out = new Map<string, string>();
  for (const item of list ?? []) {
    const parts = item.replace(/,,/g, "\uE000").split(",");
    for (const p of parts) {
      if (!p) continue;
      const eq = p.indexOf("=");
      const key = (eq < 0 ? p : p.slice(0, eq)).trim();
      const value = (eq < 0 ? "on" : p.slice(eq + 1)).replace(/\uE000/g, ",");
      out.set(key, value);
    }
  }
  return out;
}

/** "on"/"off" (and true/false, yes/no) to a boolean. */
export function onOff(key: string, v: string | undefined): boolean | undefined {
  if (v === undefined) return undefined;
  if (/^(on|true|yes|1)$/i.test(v)) return true;
  if (/^(off|false|no|0)$/i.test(v)) return false;
  throw new CommandError(`option ${key} expects on or off, not '${v}'`, 2);
}

/** A size argument (qemu-img accepts k/M/G/T suffixes). */
export function sizeArg(text: string, what = "size"): number {
  try {
    return parseSize(text.replace(/^\+/, ""));
  } catch {
    throw new CommandError(`invalid ${what} '${text}'`, 2);
  }
}

/** Opens an image, turning library errors into command errors. */
export async function open(path: string, o: { readOnly?: boolean; format?: string; noBacking?: boolean; barriers?: boolean; metadataOnly?: boolean } = {}): Promise<BlockDevice> {
  if (o.format !== undefined && o.format !== "qcow2" && o.format !== "raw") throw new CommandError(`unknown format '${o.format}' (qcow2 or raw)`, 2);
  try {
    return await openImage(path, { readOnly: o.readOnly, format: o.format as "qcow2" | "raw" | undefined, noBacking: o.noBacking, barriers: o.barriers, passphrase: process.env.TYPEVISOR_IMG_PASSPHRASE, metadataOnly: o.metadataOnly });
  } catch (e) {
    throw asCommandError(e, path);
  }
}

/** Library errors become one-line command errors; anything else propagates. */
export function asCommandError(e: unknown, path?: string): unknown {
  if (e instanceof Qcow2Error) return new CommandError(path ? `${path}: ${e.message}` : e.message, 1);
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err.code === "string" && err.syscall) return new CommandError(`${path ?? err.path ?? ""}: ${err.message}`, 1);
  return e;
}

/** The qcow2 image behind a device, or a command error. */
export function needQcow2(dev: BlockDevice, path: string, what: string): Qcow2Image {
  if (!(dev instanceof Qcow2Image)) throw new CommandError(`${path}: ${what} needs a qcow2 image`, 1);
  return dev;
}

/** Bytes the file occupies on disk (allocated blocks). */
export async function actualSize(path: string): Promise<number> {
  const s = await stat(path);
  return s.blocks !== undefined ? s.blocks * 512 : s.size;
}

/** qemu-img's human sizes: "64 KiB", "1 GiB", "512 B". */
export function human(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  if (u === 0) return `${bytes} B`;
  const s = v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  return `${s.replace(/\.?0+$/, "")} ${units[u]}`;
}

/** A progress line on stderr, as qemu-img -p draws it, rate limited. */
export class Progress {
  private last = -1;
  private readonly io: CommandIo;
  private readonly enabled: boolean;

  /** @param enabled - draw at all (-p) */
  constructor(io: CommandIo, enabled: boolean) {
    this.io = io;
    this.enabled = enabled;
  }

  /** Reports `done` of `total`. */
  update(done: number, total: number): void {
    if (!this.enabled) return;
    const pct = total > 0 ? Math.min(100, (done / total) * 100) : 100;
    if (pct - this.last < 1 && pct < 100) return;
    this.last = pct;
    this.io.stderr.write(`    (${pct.toFixed(2)}/100%)\r`);
  }

  /** Ends the line. */
  finish(): void {
    if (!this.enabled) return;
    if (this.last < 100) this.update(1, 1);
    this.io.stderr.write("\n");
  }
}

/** JSON with qemu-img's indentation. */
export function json(v: unknown): string {
  return JSON.stringify(v, null, 4) + "\n";
}
