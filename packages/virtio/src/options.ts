import { VirtioConfigError } from "./errors.js";
import { formatMac, parseMac } from "./net-backend.js";

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

/** What `--net switch=NAME[,mac=...][,pcap=FILE]` asks for. */
export interface NetOption {
  /** Name of the in-process virtual switch to join. */
  switch: string | undefined;
  /** MAC address, normalised to `52:54:00:12:34:56` form; `undefined` for a generated one. */
  mac: string | undefined;
  /** File to capture this NIC's traffic into (pcap). */
  pcap: string | undefined;
}

/**
 * Parses the value of `typevisor run --net`: `switch=NAME[,mac=52:54:00:12:34:56][,pcap=FILE]`.
 * At least one of `switch` and `pcap` is needed; the MAC must be unicast.
 * @throws VirtioConfigError `VIRTIO_OPTION` naming the bad part
 */
export function parseNetOption(text: string): NetOption {
  const out: NetOption = { switch: undefined, mac: undefined, pcap: undefined };
  for (const part of splitOptionString(text)) {
    const [key, value] = keyValue(part);
    if (value === undefined || value === "") throw new VirtioConfigError("VIRTIO_OPTION", `--net "${text}": "${key}" needs a value (${key}=...)`);
    if (key === "switch") {
      if (!/^[A-Za-z0-9_.-]+$/.test(value)) throw new VirtioConfigError("VIRTIO_OPTION", `--net "${text}": switch name "${value}" may use only letters, digits, "_", "-" and "."`);
      out.switch = value;
    } else if (key === "mac") {
      const mac = parseMac(value);
      if (!mac) throw new VirtioConfigError("VIRTIO_OPTION", `--net "${text}": "${value}" is not a MAC address (52:54:00:12:34:56)`);
      if (mac[0] & 1) throw new VirtioConfigError("VIRTIO_OPTION", `--net "${text}": ${value} is a multicast address; a NIC needs a unicast one`);
      out.mac = formatMac(mac);
    } else if (key === "pcap") {
      out.pcap = value;
    } else {
      throw new VirtioConfigError("VIRTIO_OPTION", `--net "${text}": unknown option "${key}" (known: switch, mac, pcap)`);
    }
  }
  if (out.switch === undefined && out.pcap === undefined) throw new VirtioConfigError("VIRTIO_OPTION", `--net "${text}": give switch=NAME (and/or pcap=FILE)`);
  return out;
}
