import { promisify } from "node:util";
import { gzip as zlibGzip } from "node:zlib";
import { TypevisorError } from "@typevisor/hv-core";

const gzipAsync = promisify(zlibGzip);

/** Raised for a bad initramfs entry or spec line; names the entry or line. */
export class InitramfsError extends TypevisorError {}

/** File type bits of `st_mode` (POSIX). */
const S_IFMT = 0o170000;
const S_IFSOCK = 0o140000;
const S_IFLNK = 0o120000;
const S_IFREG = 0o100000;
const S_IFBLK = 0o060000;
const S_IFDIR = 0o040000;
const S_IFCHR = 0o020000;
const S_IFIFO = 0o010000;

/** What every archive member has. Paths are absolute or relative to the root; parents are created as needed. */
export interface InitramfsEntryBase {
  /** Path inside the archive. */
  path: string;
  /** Permission bits (default 0644 for files, 0755 for folders, 0600 for device nodes). */
  mode?: number;
  /** Owner (default 0). */
  uid?: number;
  /** Group (default 0). */
  gid?: number;
}

/** A regular file. */
export interface InitramfsFile extends InitramfsEntryBase {
  /** Member type. */
  type: "file";
  /** Contents. */
  data: Uint8Array;
}

/** A folder. */
export interface InitramfsDir extends InitramfsEntryBase {
  /** Member type. */
  type: "dir";
}

/** A symbolic link (mode is always 0777). */
export interface InitramfsSymlink extends InitramfsEntryBase {
  /** Member type. */
  type: "symlink";
  /** Where it points. */
  target: string;
}

/** A character or block device node. */
export interface InitramfsNode extends InitramfsEntryBase {
  /** Member type. */
  type: "node";
  /** `c` for a character device, `b` for a block device. */
  kind: "c" | "b";
  /** Major number. */
  major: number;
  /** Minor number. */
  minor: number;
}

/** A FIFO or a socket. */
export interface InitramfsSpecial extends InitramfsEntryBase {
  /** Member type. */
  type: "pipe" | "socket";
}

/** One archive member. */
export type InitramfsEntry = InitramfsFile | InitramfsDir | InitramfsSymlink | InitramfsNode | InitramfsSpecial;

/** A member as read back by {@link parseCpio}. */
export interface CpioMember {
  /** Name as stored (no leading slash). */
  name: string;
  /** Full `st_mode` (type and permissions). */
  mode: number;
  /** Owner. */
  uid: number;
  /** Group. */
  gid: number;
  /** Link count. */
  nlink: number;
  /** Modification time (seconds). */
  mtime: number;
  /** Device numbers of device nodes. */
  rdevMajor: number;
  /** Minor device number. */
  rdevMinor: number;
  /** Contents (file data, or a symlink's target). */
  data: Uint8Array;
}

/** The newc trailer name. */
const TRAILER = "TRAILER!!!";
/** Largest member a newc header can describe (8 hex digits). */
const MAX_MEMBER = 0xffffffff;

function normalize(path: string): string {
  const parts = path.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.length === 0) throw new InitramfsError("INITRAMFS_PATH", `"${path}" names the archive root, not a member`);
  if (parts.includes("..")) throw new InitramfsError("INITRAMFS_PATH", `"${path}" contains ".."`);
  if (parts.some((p) => p.includes("\0"))) throw new InitramfsError("INITRAMFS_PATH", `"${path.replace(/\0/g, "\\0")}" contains a NUL byte`);
  return parts.join("/");
}

/**
 * Builds an initramfs: a cpio archive in the "newc" format
 * (Documentation/driver-api/early-userspace/buffer-format.rst), optionally
 * gzip-compressed. Members get sequential inode numbers, mtime 0 (or the
 * given time) and root ownership unless told otherwise, so the same input
 * gives the same bytes. Missing parent directories are added (mode 0755)
 * before their children, since the kernel's unpacker does not create them.
 */
export class InitramfsBuilder {
  private readonly entries = new Map<string, InitramfsEntry>();
  private readonly order: string[] = [];

  /** @param mtime - modification time stamped on every member (seconds since the epoch); default 0 */
  constructor(private readonly mtime = 0) {}

  /** Number of members (including implied directories). */
  get size(): number {
    return this.order.length;
  }

  /** Adds a member; a later entry with the same path replaces the earlier one in place. */
  add(entry: InitramfsEntry): this {
    const path = normalize(entry.path);
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join("/");
      const existing = this.entries.get(parent);
      if (!existing) this.put(parent, { type: "dir", path: parent, mode: 0o755 });
      else if (existing.type !== "dir") throw new InitramfsError("INITRAMFS_PATH", `"/${path}": "/${parent}" is not a directory`);
    }
    this.put(path, { ...entry, path });
    return this;
  }

  /** Adds a regular file. */
  file(path: string, data: Uint8Array | string, mode = 0o644): this {
    return this.add({ type: "file", path, data: typeof data === "string" ? new TextEncoder().encode(data) : data, mode });
  }

  /** Adds a directory. */
  dir(path: string, mode = 0o755): this {
    return this.add({ type: "dir", path, mode });
  }

  /** Adds a symbolic link. */
  symlink(path: string, target: string): this {
    return this.add({ type: "symlink", path, target });
  }

  /** Adds a character or block device node. */
  node(path: string, kind: "c" | "b", major: number, minor: number, mode = 0o600): this {
    return this.add({ type: "node", path, kind, major, minor, mode });
  }

  private put(path: string, e: InitramfsEntry): void {
    if (!this.entries.has(path)) this.order.push(path);
    this.entries.set(path, e);
  }

  /** The uncompressed newc archive. */
  toCpio(): Uint8Array {
    const chunks: Uint8Array[] = [];
    let total = 0;
    let ino = 721;
    const emit = (name: string, mode: number, uid: number, gid: number, nlink: number, data: Uint8Array, rmaj: number, rmin: number, inode: number, mtime: number): void => {
      if (data.length > MAX_MEMBER) throw new InitramfsError("INITRAMFS_SIZE", `"/${name}" is ${data.length} bytes; newc members are limited to 4 GiB`);
      const nameBytes = new TextEncoder().encode(name);
      const fields = [inode, mode, uid, gid, nlink, mtime, data.length, 0, 0, rmaj, rmin, nameBytes.length + 1, 0];
      const header = "070701" + fields.map((f) => (f >>> 0).toString(16).toUpperCase().padStart(8, "0")).join("");
      const headLen = Math.ceil((110 + nameBytes.length + 1) / 4) * 4;
      const dataLen = Math.ceil(data.length / 4) * 4;
      const buf = new Uint8Array(headLen + dataLen);
      for (let i = 0; i < 110; i++) buf[i] = header.charCodeAt(i);
      buf.set(nameBytes, 110);
      buf.set(data, headLen);
      chunks.push(buf);
      total += buf.length;
    };
    for (const path of this.order) {
      const e = this.entries.get(path)!;
      const uid = e.uid ?? 0;
      const gid = e.gid ?? 0;
      const perm = (m: number | undefined, d: number): number => {
        const v = m ?? d;
        if (!Number.isInteger(v) || v < 0 || v > 0o7777) throw new InitramfsError("INITRAMFS_MODE", `"/${path}": mode ${v} is not 0..07777`);
        return v;
      };
      switch (e.type) {
        case "file":
          emit(path, S_IFREG | perm(e.mode, 0o644), uid, gid, 1, e.data, 0, 0, ino++, this.mtime);
          break;
        case "dir":
          emit(path, S_IFDIR | perm(e.mode, 0o755), uid, gid, 2, new Uint8Array(0), 0, 0, ino++, this.mtime);
          break;
        case "symlink":
          emit(path, S_IFLNK | 0o777, uid, gid, 1, new TextEncoder().encode(e.target), 0, 0, ino++, this.mtime);
          break;
        case "node":
          if (!Number.isInteger(e.major) || !Number.isInteger(e.minor) || e.major < 0 || e.minor < 0 || e.major > 0xfff || e.minor > 0xfffff) {
            throw new InitramfsError("INITRAMFS_DEVICE", `"/${path}": device ${e.major}:${e.minor} is out of range`);
          }
          emit(path, (e.kind === "c" ? S_IFCHR : S_IFBLK) | perm(e.mode, 0o600), uid, gid, 1, new Uint8Array(0), e.major, e.minor, ino++, this.mtime);
          break;
        default:
          emit(path, (e.type === "pipe" ? S_IFIFO : S_IFSOCK) | perm(e.mode, 0o644), uid, gid, 1, new Uint8Array(0), 0, 0, ino++, this.mtime);
      }
    }
    emit(TRAILER, 0, 0, 0, 1, new Uint8Array(0), 0, 0, 0, 0);
    const out = new Uint8Array(total);
    let o = 0;
    for (const c of chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }

  /** The archive compressed with gzip (what `CONFIG_RD_GZIP` kernels unpack). */
  async toGzip(): Promise<Uint8Array> {
    return gzip(this.toCpio());
  }
}

/**
 * Gzip-compresses `data` with node:zlib. Not with the web CompressionStream:
 * web streams detach the ArrayBuffers they pass along, and the first detach
 * in a process makes V8 add a detached-buffer check to every typed-array
 * access in optimized code, the vCPU's guest-memory accesses included.
 */
export async function gzip(data: Uint8Array): Promise<Uint8Array> {
  const out = await gzipAsync(data);
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/**
 * Reads a newc archive back (for tests and inspection). Concatenated
 * archives are read up to the first trailer.
 * @throws InitramfsError naming the byte offset of a malformed header
 */
export function parseCpio(archive: Uint8Array, maxMembers = 1_000_000): CpioMember[] {
  const out: CpioMember[] = [];
  let o = 0;
  const dec = new TextDecoder();
  while (out.length < maxMembers) {
    if (o + 110 > archive.length) throw new InitramfsError("CPIO_TRUNCATED", `cpio header at offset ${o} is cut off`);
    const magic = dec.decode(archive.subarray(o, o + 6));
    if (magic !== "070701" && magic !== "070702") throw new InitramfsError("CPIO_MAGIC", `bad cpio magic "${magic}" at offset ${o}`);
    const f = (i: number): number => {
      const s = dec.decode(archive.subarray(o + 6 + i * 8, o + 14 + i * 8));
      if (!/^[0-9a-fA-F]{8}$/.test(s)) throw new InitramfsError("CPIO_FIELD", `bad cpio field ${i} "${s}" at offset ${o + 6 + i * 8}`);
      return parseInt(s, 16);
    };
    const namesize = f(11);
    const filesize = f(6);
    if (namesize < 1 || o + 110 + namesize > archive.length) throw new InitramfsError("CPIO_FIELD", `cpio name size ${namesize} at offset ${o + 94} runs past the archive`);
    const name = dec.decode(archive.subarray(o + 110, o + 110 + namesize - 1));
    const dataStart = Math.ceil((o + 110 + namesize) / 4) * 4;
    if (dataStart + filesize > archive.length) throw new InitramfsError("CPIO_FIELD", `cpio member "${name}" (${filesize} bytes) runs past the archive`);
    if (name === TRAILER) break;
    out.push({ name, mode: f(1), uid: f(2), gid: f(3), nlink: f(4), mtime: f(5), rdevMajor: f(9), rdevMinor: f(10), data: archive.slice(dataStart, dataStart + filesize) });
    o = Math.ceil((dataStart + filesize) / 4) * 4;
  }
  return out;
}

/**
 * Adds the members described by a `gen_init_cpio` spec (the kernel's
 * usr/gen_init_cpio format): `file NAME LOCATION MODE UID GID`,
 * `dir NAME MODE UID GID`, `nod NAME MODE UID GID c|b MAJ MIN`,
 * `slink NAME TARGET MODE UID GID`, `pipe NAME MODE UID GID`,
 * `sock NAME MODE UID GID`; `#` starts a comment. Modes are octal.
 * @param readFile - reads a `file` entry's LOCATION
 * @throws InitramfsError naming the line
 */
export function addSpec(builder: InitramfsBuilder, spec: string, readFile: (location: string) => Uint8Array): InitramfsBuilder {
  spec.split("\n").forEach((raw, i) => {
    const line = raw.replace(/#.*/, "").trim();
    if (line === "") return;
    const w = line.split(/\s+/);
    const where = `spec line ${i + 1}`;
    const octal = (s: string | undefined): number => {
      if (s === undefined || !/^[0-7]{1,6}$/.test(s)) throw new InitramfsError("INITRAMFS_SPEC", `${where}: "${s ?? ""}" is not an octal mode`);
      return parseInt(s, 8);
    };
    const num = (s: string | undefined): number => {
      if (s === undefined || !/^\d{1,10}$/.test(s)) throw new InitramfsError("INITRAMFS_SPEC", `${where}: "${s ?? ""}" is not a number`);
      return Number(s);
    };
    const argc = (n: number): void => {
      if (w.length < n) throw new InitramfsError("INITRAMFS_SPEC", `${where}: "${w[0]}" needs ${n - 1} fields, found ${w.length - 1}`);
    };
    switch (w[0]) {
      case "file":
        argc(6);
        builder.add({ type: "file", path: w[1], data: readFile(w[2]), mode: octal(w[3]), uid: num(w[4]), gid: num(w[5]) });
        break;
      case "dir":
        argc(5);
        builder.add({ type: "dir", path: w[1], mode: octal(w[2]), uid: num(w[3]), gid: num(w[4]) });
        break;
      case "nod":
        argc(8);
        if (w[5] !== "c" && w[5] !== "b") throw new InitramfsError("INITRAMFS_SPEC", `${where}: device type "${w[5]}" is not c or b`);
        builder.add({ type: "node", path: w[1], mode: octal(w[2]), uid: num(w[3]), gid: num(w[4]), kind: w[5], major: num(w[6]), minor: num(w[7]) });
        break;
      case "slink":
        argc(6);
        builder.add({ type: "symlink", path: w[1], target: w[2], uid: num(w[4]), gid: num(w[5]) });
        break;
      case "pipe":
      case "sock":
        argc(5);
        builder.add({ type: w[0] === "pipe" ? "pipe" : "socket", path: w[1], mode: octal(w[2]), uid: num(w[3]), gid: num(w[4]) });
        break;
      default:
        throw new InitramfsError("INITRAMFS_SPEC", `${where}: unknown entry type "${w[0]}"`);
    }
  });
  return builder;
}

/** Type bits of a mode, for readers of {@link parseCpio} output. */
export function cpioType(mode: number): "file" | "dir" | "symlink" | "char" | "block" | "pipe" | "socket" | "unknown" {
  switch (mode & S_IFMT) {
    case S_IFREG:
      return "file";
    case S_IFDIR:
      return "dir";
    case S_IFLNK:
      return "symlink";
    case S_IFCHR:
      return "char";
    case S_IFBLK:
      return "block";
    case S_IFIFO:
      return "pipe";
    case S_IFSOCK:
      return "socket";
    default:
      return "unknown";
  }
}
