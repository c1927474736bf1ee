import { VirtioConfigError } from "./errors.js";

/**
 * Splits a QEMU-style option string at commas; `,,` stands for a literal
 * comma (so file names may contain one).
 */
export function splitOptionString(text: string): string[] {
  const parts: string[] = [];
  let cur = "";
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === ",") {
      if (text[i + 1] === ",") {
        cur += ",";
        i++;
      } else {
        parts.push(cur);
        cur = "";
      }
    } else cur += ch;
  }
  parts.push(cur);
  return parts;
}

/** What `--disk FILE[,format=qcow2|raw][,readonly]` asks for. */
export interface DiskOption {
  /** Image file path. */
  path: string;
  /** Image format; `undefined` lets the opener detect it. */
  format: "qcow2" | "raw" | undefined;
  /** Present the disk read-only. */
  readOnly: boolean;
}

const BOOL: Record<string, boolean> = { on: true, off: false, true: true, false: false, yes: true, no: false, "1": true, "0": false };

function flag(key: string, value: string | undefined, option: string): boolean {
  if (value === undefined) return true;
  const b = BOOL[value.toLowerCase()];
  if (b === undefined) throw new VirtioConfigError("VIRTIO_OPTION", `${option}: "${key}=${value}" is not on/off`);
  return b;
}

function keyValue(part: string): [string, string | undefined] {
  const eq = part.indexOf("=");
  return eq < 0 ? [part, undefined] : [part.slice(0, eq), part.slice(eq + 1)];
}

/**
 * Parses the value of `typevisor run --disk`: `FILE[,format=qcow2|raw][,readonly]`
 * (`readonly=on|off` also accepted; `,,` for a comma in the file name).
 * @throws VirtioConfigError `VIRTIO_OPTION` naming the bad part
 */
export function parseDiskOption(text: string): DiskOption {
  const [path, ...rest] = splitOptionString(text);
  if (path === "" || path.includes("=")) throw new VirtioConfigError("VIRTIO_OPTION", `--disk "${text}": the first part must be the image file`);
  const out: DiskOption = { path, format: undefined, readOnly: false };
  for (const part of rest) {
    const [key, value] = keyValue(part);
    if (key === "format") {
      if (value !== "qcow2" && value !== "raw") throw new VirtioConfigError("VIRTIO_OPTION", `--disk "${text}": format must be qcow2 or raw, not "${value ?? ""}"`);
      out.format = value;
    } else if (key === "readonly") {
      out.readOnly = flag(key, value, `--disk "${text}"`);
    } else {
      throw new VirtioConfigError("VIRTIO_OPTION", `--disk "${text}": unknown option "${key}" (known: format, readonly)`);
    }
  }
  return out;
}
