// Opening an image file by path: detect qcow2 or raw, open the backing
// chain (any depth, with loop detection) and the external data file.
import type { BlockDevice } from "./block-device.js";
import { Qcow2FormatError, Qcow2UsageError } from "./errors.js";
import { parseHeader, QCOW2_MAGIC } from "./header.js";
import { openLuks } from "./luks.js";
import { Qcow2Image, type ClusterCipher } from "./qcow2-image.js";
import { RawImage } from "./raw-image.js";
import { FileStore, type FsLike } from "./store.js";

/** Options of {@link openImage}. */
export interface OpenImageOptions {
  /** Open read-only (backing files are always read-only). */
  readOnly?: boolean;
  /** "qcow2" or "raw"; detected from the magic when omitted. */
  format?: "qcow2" | "raw";
  /** File system to use (Node's by default; memfs works). */
  fs?: FsLike;
  /** Most backing files to follow (default 64). */
  maxChainDepth?: number;
  /** Do not open the backing file (the image is read alone; holes read as zeros). */
  noBacking?: boolean;
  /** Passphrase for LUKS-encrypted images. */
  passphrase?: string | Uint8Array;
  /**
   * Open an encrypted image without its passphrase, for metadata work only
   * (info, map, snapshot lists): any data access then fails.
   */
  metadataOnly?: boolean;
  /** Bytes of L2 cache per qcow2 image. */
  l2CacheBytes?: number;
  /** See {@link Qcow2OpenOptions.barriers}. */
  barriers?: boolean;
  /** Use synchronous positional I/O for the files (see {@link FileStore.open}). */
  syncIo?: boolean;
}

const locked = (): never => {
  throw new Qcow2UsageError("QCOW2_ENCRYPTED", "the image is encrypted and was opened without its passphrase");
};
const LOCKED: ClusterCipher = { decrypt: locked, encrypt: locked };

/** Joins a name stored in an image with the directory of that image (QEMU resolves relative backing names so). */
export function resolveRelative(imagePath: string, name: string): string {
  if (name.startsWith("/") || /^[a-z]+:/i.test(name)) return name;
  const slash = imagePath.lastIndexOf("/");
  return slash < 0 ? name : imagePath.slice(0, slash + 1) + name;
}

/** Detects the format of the file at `path` from its first bytes. */
export async function detectFormat(path: string, fs?: FsLike): Promise<"qcow2" | "raw"> {
  const s = await FileStore.open(path, { readOnly: true, fs });
  try {
    const b = new Uint8Array(4);
    await s.read(0, b);
    return new DataView(b.buffer).getUint32(0) === QCOW2_MAGIC && s.size >= 4 ? "qcow2" : "raw";
  } finally {
    await s.close();
  }
}

async function realPath(path: string, fs?: FsLike): Promise<string> {
  if (fs) return path;
  const { realpath } = await import("node:fs/promises");
  return realpath(path).catch(() => path);
}

/**
 * Opens a disk image file as a {@link BlockDevice}: qcow2 (with its backing
 * chain and data file) or raw.
 */
export async function openImage(path: string, options: OpenImageOptions = {}): Promise<BlockDevice> {
  return openChain(path, options, options.readOnly ?? false, 0, new Set(), options.format);
}

async function openChain(path: string, o: OpenImageOptions, readOnly: boolean, depth: number, seen: Set<string>, format?: string): Promise<BlockDevice> {
  const max = o.maxChainDepth ?? 64;
  if (depth > max) throw new Qcow2FormatError("QCOW2_CHAIN_TOO_DEEP", `backing chain is deeper than ${max} images at '${path}'`, { field: "backing_file" });
  const real = await realPath(path, o.fs);
  if (seen.has(real)) throw new Qcow2FormatError("QCOW2_BACKING_LOOP", `backing chain loops back to '${path}'`, { offset: 8, field: "backing_file_offset" });
  seen.add(real);
  const fmt = format ?? (await detectFormat(path, o.fs));
  const store = await FileStore.open(path, { readOnly, fs: o.fs, syncIo: o.syncIo });
  try {
    if (fmt === "raw") return new RawImage(store);
    if (fmt !== "qcow2") throw new Qcow2UsageError("QCOW2_FORMAT", `unknown image format '${fmt}'`);
    const first = new Uint8Array(Math.min(store.size, 2 << 20));
    await store.read(0, first);
    const h = parseHeader(first, store.size);
    let backing: BlockDevice | null = null;
    let dataStore: FileStore | undefined;
    let cipher: ClusterCipher | undefined;
    try {
      if (h.backingFile && !o.noBacking) {
        const bfmt = h.backingFormat === "raw" || h.backingFormat === "qcow2" ? h.backingFormat : h.backingFormat ? undefined : undefined;
        if (h.backingFormat && !bfmt) throw new Qcow2UsageError("QCOW2_FORMAT", `backing format '${h.backingFormat}' is not supported`);
        backing = await openChain(resolveRelative(path, h.backingFile), o, true, depth + 1, seen, bfmt);
      }
      if (h.dataFile !== undefined) {
        if (!h.dataFile) throw new Qcow2UsageError("QCOW2_DATA_FILE_MISSING", `'${path}' needs an external data file but does not name it`);
        // Relative to the image first; QEMU itself resolves against its
        // working directory, so that is tried next.
        dataStore = await FileStore.open(resolveRelative(path, h.dataFile), { readOnly, fs: o.fs }).catch(() => FileStore.open(h.dataFile!, { readOnly, fs: o.fs }));
      }
      if (h.cryptMethod === 2 && o.passphrase === undefined && o.metadataOnly) {
        cipher = LOCKED;
      } else if (h.cryptMethod === 2) {
        if (o.passphrase === undefined) throw new Qcow2UsageError("QCOW2_ENCRYPTED", `'${path}' is LUKS-encrypted; a passphrase is needed`);
        cipher = await openLuks(store, h.cryptoHeader!.offset, h.cryptoHeader!.length, o.passphrase);
      }
      return await Qcow2Image.open(store, { readOnly, backing, dataStore, cipher, l2CacheBytes: o.l2CacheBytes, barriers: o.barriers });
    } catch (e) {
      if (backing) await backing.close();
      if (dataStore) await dataStore.close();
      throw e;
    }
  } catch (e) {
    await store.close();
    throw e;
  }
}
