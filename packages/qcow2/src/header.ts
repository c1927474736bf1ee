// The qcow2 header (spec: "Header" and "Header extensions"): parsing with
// every field checked, and serialization that keeps what we do not
// understand (unknown compatible bits, unknown extensions).
import { getU64, setU64, viewOf } from "./bytes.js";
import { Qcow2FormatError, Qcow2UnsupportedError } from "./errors.js";

/** "QFI\xfb". */
export const QCOW2_MAGIC = 0x514649fb;

/** Incompatible feature bits (header bytes 72-79). */
export const INCOMPAT = { dirty: 0, corrupt: 1, externalDataFile: 2, compressionType: 3, extendedL2: 4 } as const;
/** Compatible feature bits (header bytes 80-87). */
export const COMPAT = { lazyRefcounts: 0 } as const;
/** Autoclear feature bits (header bytes 88-95). */
export const AUTOCLEAR = { bitmaps: 0, rawExternalData: 1 } as const;

/** Header extension type codes. */
export const EXT = {
  end: 0,
  backingFormat: 0xe2792aca,
  featureNameTable: 0x6803f857,
  bitmaps: 0x23852875,
  fullDiskEncryption: 0x0537be77,
  externalDataFile: 0x44415441,
} as const;

/** Largest L1 table accepted, in bytes (as QEMU: 32 MiB). */
export const MAX_L1_BYTES = 32 << 20;
/** Largest refcount table accepted, in bytes (as QEMU: 8 MiB). */
export const MAX_REFTABLE_BYTES = 8 << 20;
/** Most internal snapshots accepted (as QEMU). */
export const MAX_SNAPSHOTS = 65536;
/** Longest backing file name accepted, in bytes (as QEMU). */
export const MAX_BACKING_NAME = 1023;

/** One feature-name-table entry. */
export interface FeatureName {
  /** 0 incompatible, 1 compatible, 2 autoclear. */
  type: number;
  /** Bit number. */
  bit: number;
  /** Human-readable name. */
  name: string;
}

/** A header extension kept verbatim. */
export interface RawExtension {
  /** Extension type code. */
  type: number;
  /** Its data (without padding). */
  data: Uint8Array;
}

/** The decoded header, every field of the qcow2 spec plus known extensions. */
export interface Qcow2Header {
  /** 2 or 3. */
  version: number;
  /** Offset of the backing file name in the image, 0 when none. */
  backingFileOffset: number;
  /** Length of the backing file name. */
  backingFileSize: number;
  /** log2 of the cluster size (9..21). */
  clusterBits: number;
  /** Virtual disk size in bytes. */
  size: number;
  /** 0 none, 1 AES (legacy), 2 LUKS. */
  cryptMethod: number;
  /** Entries in the active L1 table. */
  l1Size: number;
  /** Offset of the active L1 table. */
  l1TableOffset: number;
  /** Offset of the refcount table. */
  refcountTableOffset: number;
  /** Clusters the refcount table occupies. */
  refcountTableClusters: number;
  /** Internal snapshots. */
  nbSnapshots: number;
  /** Offset of the snapshot table. */
  snapshotsOffset: number;
  /** Incompatible feature bits. */
  incompatible: bigint;
  /** Compatible feature bits. */
  compatible: bigint;
  /** Autoclear feature bits. */
  autoclear: bigint;
  /** log2 of the refcount width in bits (0..6). */
  refcountOrder: number;
  /** Length of the fixed header (72 for v2, at least 104 for v3). */
  headerLength: number;
  /** 0 zlib (deflate), 1 zstd. */
  compressionType: number;
  /** Backing file name, if any. */
  backingFile?: string;
  /** Backing file format (extension 0xe2792aca), if any. */
  backingFormat?: string;
  /** External data file name (extension 0x44415441), if any. */
  dataFile?: string;
  /** Offset and length of the LUKS header (extension 0x0537be77), if any. */
  cryptoHeader?: {
    /** File offset of the LUKS header. */
    offset: number;
    /** Bytes of the LUKS area. */
    length: number;
  };
  /** Feature names declared by the image. */
  featureNames: FeatureName[];
  /** Extensions this library does not interpret, kept to be written back. */
  unknownExtensions: RawExtension[];
  /** Bitmaps extension kept verbatim (its autoclear bit is cleared on read-write open). */
  bitmapsExtension?: Uint8Array;
}

const KNOWN_INCOMPAT = (1n << 5n) - 1n;
const KNOWN_COMPAT = 1n;
const KNOWN_AUTOCLEAR = 3n;

/** Names of our own feature bits, for messages and the table we write. */
export const OUR_FEATURE_NAMES: FeatureName[] = [
  { type: 0, bit: 0, name: "dirty bit" },
  { type: 0, bit: 1, name: "corrupt bit" },
  { type: 0, bit: 2, name: "external data file" },
  { type: 0, bit: 3, name: "compression type" },
  { type: 0, bit: 4, name: "extended L2 entries" },
  { type: 1, bit: 0, name: "lazy refcounts" },
  { type: 2, bit: 0, name: "bitmaps" },
  { type: 2, bit: 1, name: "raw external data" },
];

function hasBit(mask: bigint, bit: number): boolean {
  return ((mask >> BigInt(bit)) & 1n) === 1n;
}

/** True when feature `bit` is set in `mask`. */
export function featureSet(mask: bigint, bit: number): boolean {
  return hasBit(mask, bit);
}

function fail(message: string, offset: number, field: string): never {
  throw new Qcow2FormatError("QCOW2_BAD_HEADER", message, { offset, field });
}

const decoder = new TextDecoder("utf-8", { fatal: false });

/**
 * Parses the header from the first bytes of the file (at least one cluster,
 * or the whole file when shorter). Checks every field; throws a typed error
 * naming the field and offset on anything out of range.
 * @param buf - the beginning of the file
 * @param fileSize - the file's length, for range checks
 */
export function parseHeader(buf: Uint8Array, fileSize: number): Qcow2Header {
  if (buf.length < 72) throw new Qcow2FormatError("QCOW2_TRUNCATED", `file is ${buf.length} bytes, shorter than a qcow2 header`, { offset: 0, field: "header" });
  const v = viewOf(buf);
  if (v.getUint32(0) !== QCOW2_MAGIC) throw new Qcow2FormatError("QCOW2_BAD_MAGIC", "not a qcow2 image (bad magic)", { offset: 0, field: "magic" });
  const version = v.getUint32(4);
  if (version !== 2 && version !== 3) throw new Qcow2UnsupportedError("QCOW2_VERSION", `qcow2 version ${version} is not supported (2 and 3 are)`, { offset: 4, field: "version" });
  const clusterBits = v.getUint32(20);
  if (clusterBits < 9 || clusterBits > 21) fail(`cluster_bits ${clusterBits} is outside 9..21`, 20, "cluster_bits");
  const clusterSize = 2 ** clusterBits;
  const h: Qcow2Header = {
    version,
    backingFileOffset: getU64(v, 8, "backing_file_offset"),
    backingFileSize: v.getUint32(16),
    clusterBits,
    size: getU64(v, 24, "size"),
    cryptMethod: v.getUint32(32),
    l1Size: v.getUint32(36),
    l1TableOffset: getU64(v, 40, "l1_table_offset"),
    refcountTableOffset: getU64(v, 48, "refcount_table_offset"),
    refcountTableClusters: v.getUint32(56),
    nbSnapshots: v.getUint32(60),
    snapshotsOffset: getU64(v, 64, "snapshots_offset"),
    incompatible: 0n,
    compatible: 0n,
    autoclear: 0n,
    refcountOrder: 4,
    headerLength: 72,
    compressionType: 0,
    featureNames: [],
    unknownExtensions: [],
  };
  if (version === 3) {
    if (buf.length < 104) fail("version 3 header is truncated", 72, "header_length");
    h.incompatible = v.getBigUint64(72);
    h.compatible = v.getBigUint64(80);
    h.autoclear = v.getBigUint64(88);
    h.refcountOrder = v.getUint32(96);
    h.headerLength = v.getUint32(100);
    if (h.headerLength < 104 || h.headerLength > clusterSize || h.headerLength > buf.length) fail(`header_length ${h.headerLength} is outside 104..cluster size`, 100, "header_length");
    if (h.headerLength > 104) h.compressionType = buf[104];
  }
  if (h.refcountOrder > 6) fail(`refcount_order ${h.refcountOrder} is larger than 6`, 96, "refcount_order");
  if (h.cryptMethod > 2) fail(`crypt_method ${h.cryptMethod} is unknown`, 32, "crypt_method");
  if (h.compressionType > 1) throw new Qcow2UnsupportedError("QCOW2_COMPRESSION_TYPE", `compression_type ${h.compressionType} is unknown`, { offset: 104, field: "compression_type" });
  if (h.compressionType !== 0 && !hasBit(h.incompatible, INCOMPAT.compressionType)) fail("compression_type is not zlib but the compression type incompatible bit is clear", 104, "compression_type");
  const clusterAligned = (x: number, off: number, field: string) => {
    if (x % clusterSize !== 0) fail(`${field} 0x${x.toString(16)} is not aligned to the ${clusterSize}-byte cluster`, off, field);
  };
  clusterAligned(h.l1TableOffset, 40, "l1_table_offset");
  clusterAligned(h.refcountTableOffset, 48, "refcount_table_offset");
  clusterAligned(h.snapshotsOffset, 64, "snapshots_offset");
  if (h.refcountTableOffset === 0) fail("refcount_table_offset is 0", 48, "refcount_table_offset");
  if (h.refcountTableClusters === 0 || h.refcountTableClusters * clusterSize > MAX_REFTABLE_BYTES) fail(`refcount_table_clusters ${h.refcountTableClusters} is outside 1..${MAX_REFTABLE_BYTES / clusterSize}`, 56, "refcount_table_clusters");
  if (h.l1Size * 8 > MAX_L1_BYTES) fail(`l1_size ${h.l1Size} is larger than the ${MAX_L1_BYTES / 8}-entry limit`, 36, "l1_size");
  if (h.nbSnapshots > MAX_SNAPSHOTS) fail(`nb_snapshots ${h.nbSnapshots} is larger than ${MAX_SNAPSHOTS}`, 60, "nb_snapshots");
  // L1 must map the whole virtual disk (spec: l1_size).
  const entryBytes = hasBit(h.incompatible, INCOMPAT.extendedL2) ? 16 : 8;
  const bytesPerL1 = clusterSize * (clusterSize / entryBytes);
  if (h.l1Size < Math.ceil(h.size / bytesPerL1)) fail(`l1_size ${h.l1Size} is too small for a ${h.size}-byte disk (needs ${Math.ceil(h.size / bytesPerL1)})`, 36, "l1_size");
  if (h.l1Size > 0 && h.l1TableOffset === 0) fail("l1_table_offset is 0 but l1_size is not", 40, "l1_table_offset");
  for (const [off, x, field] of [[40, h.l1TableOffset, "l1_table_offset"], [48, h.refcountTableOffset, "refcount_table_offset"]] as const) {
    if (x >= fileSize) fail(`${field} 0x${x.toString(16)} is past the end of the ${fileSize}-byte file`, off, field);
  }
  if (hasBit(h.incompatible, INCOMPAT.extendedL2) && clusterBits < 14) fail("extended L2 entries need clusters of at least 16 KiB", 20, "cluster_bits");
  if (version === 2 && h.refcountOrder !== 4) fail("version 2 images have 16-bit refcounts", 96, "refcount_order");

  if (h.backingFileOffset > 0 && h.backingFileSize > MAX_BACKING_NAME) fail(`backing_file_size ${h.backingFileSize} is larger than ${MAX_BACKING_NAME}`, 16, "backing_file_size");

  // Header extensions: from the end of the fixed header up to the backing
  // file name (or the end of the first cluster).
  let pos = version === 3 ? h.headerLength : 72;
  const limit = Math.min(buf.length, h.backingFileOffset > 0 ? h.backingFileOffset : clusterSize, clusterSize);
  let ended = false;
  for (let count = 0; pos + 8 <= limit && count < 4096; count++) {
    const type = v.getUint32(pos);
    const len = v.getUint32(pos + 4);
    if (type === EXT.end) {
      ended = true;
      break;
    }
    const dataAt = pos + 8;
    if (len > limit - dataAt) fail(`header extension 0x${type.toString(16)} of ${len} bytes runs past the header area`, pos + 4, "header_extension.length");
    const data = buf.slice(dataAt, dataAt + len);
    const dv = viewOf(data);
    switch (type) {
      case EXT.backingFormat:
        h.backingFormat = decoder.decode(data).replace(/\0+$/, "");
        break;
      case EXT.featureNameTable:
        for (let i = 0; i + 48 <= len; i += 48) {
          const name = decoder.decode(data.subarray(i + 2, i + 48)).replace(/\0.*$/s, "");
          h.featureNames.push({ type: data[i], bit: data[i + 1], name });
        }
        break;
      case EXT.externalDataFile:
        h.dataFile = decoder.decode(data).replace(/\0+$/, "");
        break;
      case EXT.fullDiskEncryption:
        if (len < 16) fail("full disk encryption header extension is shorter than 16 bytes", pos + 4, "header_extension.length");
        h.cryptoHeader = { offset: getU64(dv, 0, "crypto_header.offset", dataAt), length: getU64(dv, 8, "crypto_header.length", dataAt + 8) };
        break;
      case EXT.bitmaps:
        h.bitmapsExtension = data;
        break;
      default:
        h.unknownExtensions.push({ type, data });
    }
    pos = dataAt + ((len + 7) & ~7);
  }
  if (!ended && version === 3 && pos + 8 <= limit) fail("too many header extensions", pos, "header_extension");

  // Refuse unknown incompatible features, naming them (spec: feature name table).
  const unknownIncompat = h.incompatible & ~KNOWN_INCOMPAT;
  if (unknownIncompat !== 0n) {
    const bits: string[] = [];
    for (let b = 0; b < 64; b++) {
      if (hasBit(unknownIncompat, b)) {
        const named = h.featureNames.find((f) => f.type === 0 && f.bit === b);
        bits.push(named ? `bit ${b} (${named.name})` : `bit ${b}`);
      }
    }
    throw new Qcow2UnsupportedError("QCOW2_UNKNOWN_INCOMPATIBLE", `image uses unknown incompatible feature ${bits.join(", ")}`, { offset: 72, field: "incompatible_features" });
  }
  if (h.cryptMethod === 1) throw new Qcow2UnsupportedError("QCOW2_AES_ENCRYPTION", "legacy AES encryption (crypt_method 1) is not supported; convert with LUKS", { offset: 32, field: "crypt_method" });
  if (h.cryptMethod === 2 && !h.cryptoHeader) fail("LUKS encryption without a full disk encryption header extension", 32, "crypt_method");
  if (hasBit(h.incompatible, INCOMPAT.externalDataFile) && h.dataFile === undefined) {
    // Allowed by the spec (the user names the file), but we need a name.
    h.dataFile = "";
  }

  if (h.backingFileOffset > 0) {
    if (h.backingFileSize > MAX_BACKING_NAME) fail(`backing_file_size ${h.backingFileSize} is larger than ${MAX_BACKING_NAME}`, 16, "backing_file_size");
    if (h.backingFileOffset + h.backingFileSize > Math.min(clusterSize, buf.length)) fail("backing file name runs past the first cluster", 8, "backing_file_offset");
    h.backingFile = decoder.decode(buf.subarray(h.backingFileOffset, h.backingFileOffset + h.backingFileSize));
  }
  return h;
}

/** True for a known feature; unknown compatible bits are kept, unknown autoclear bits are cleared on read-write open. */
export function unknownAutoclear(h: Qcow2Header): bigint {
  return h.autoclear & ~KNOWN_AUTOCLEAR;
}

/** Unknown compatible bits (kept as they are). */
export function unknownCompatible(h: Qcow2Header): bigint {
  return h.compatible & ~KNOWN_COMPAT;
}

const encoder = new TextEncoder();

function pushExt(parts: Uint8Array[], type: number, data: Uint8Array): void {
  const padded = new Uint8Array(8 + ((data.length + 7) & ~7));
  const v = viewOf(padded);
  v.setUint32(0, type);
  v.setUint32(4, data.length);
  padded.set(data, 8);
  parts.push(padded);
}

/**
 * Serializes the header, its extensions and the backing file name into one
 * buffer that must fit in the first cluster. Sets `backingFileOffset`/`Size`.
 */
export function serializeHeader(h: Qcow2Header): Uint8Array {
  const clusterSize = 2 ** h.clusterBits;
  const fixedLen = h.version === 3 ? Math.max(h.headerLength, 112) : 72;
  const parts: Uint8Array[] = [];
  {
    if (h.backingFormat && h.backingFile) pushExt(parts, EXT.backingFormat, encoder.encode(h.backingFormat));
    if (h.dataFile) pushExt(parts, EXT.externalDataFile, encoder.encode(h.dataFile));
    if (h.cryptoHeader) {
      const d = new Uint8Array(16);
      setU64(viewOf(d), 0, h.cryptoHeader.offset);
      setU64(viewOf(d), 8, h.cryptoHeader.length);
      pushExt(parts, EXT.fullDiskEncryption, d);
    }
    if (h.bitmapsExtension && featureSet(h.autoclear, AUTOCLEAR.bitmaps)) pushExt(parts, EXT.bitmaps, h.bitmapsExtension);
    for (const e of h.unknownExtensions) pushExt(parts, e.type, e.data);
    if (h.version === 3) {
      const names = [...OUR_FEATURE_NAMES, ...h.featureNames.filter((f) => !OUR_FEATURE_NAMES.some((o) => o.type === f.type && o.bit === f.bit))];
      const table = new Uint8Array(names.length * 48);
      names.forEach((f, i) => {
        table[i * 48] = f.type;
        table[i * 48 + 1] = f.bit;
        table.set(encoder.encode(f.name).subarray(0, 46), i * 48 + 2);
      });
      pushExt(parts, EXT.featureNameTable, table);
    }
    pushExt(parts, EXT.end, new Uint8Array(0));
  }
  const extLen = parts.reduce((n, p) => n + p.length, 0);
  const name = h.backingFile ? encoder.encode(h.backingFile) : new Uint8Array(0);
  const total = fixedLen + extLen + name.length;
  if (total > clusterSize) throw new Qcow2FormatError("QCOW2_HEADER_TOO_LARGE", `header, extensions and backing file name need ${total} bytes, more than one ${clusterSize}-byte cluster`, { offset: 0, field: "header" });
  const out = new Uint8Array(total);
  const v = viewOf(out);
  h.backingFileOffset = name.length ? fixedLen + extLen : 0;
  h.backingFileSize = name.length;
  v.setUint32(0, QCOW2_MAGIC);
  v.setUint32(4, h.version);
  setU64(v, 8, h.backingFileOffset);
  v.setUint32(16, h.backingFileSize);
  v.setUint32(20, h.clusterBits);
  setU64(v, 24, h.size);
  v.setUint32(32, h.cryptMethod);
  v.setUint32(36, h.l1Size);
  setU64(v, 40, h.l1TableOffset);
  setU64(v, 48, h.refcountTableOffset);
  v.setUint32(56, h.refcountTableClusters);
  v.setUint32(60, h.nbSnapshots);
  setU64(v, 64, h.snapshotsOffset);
  if (h.version === 3) {
    v.setBigUint64(72, h.incompatible);
    v.setBigUint64(80, h.compatible);
    v.setBigUint64(88, h.autoclear);
    v.setUint32(96, h.refcountOrder);
    h.headerLength = fixedLen;
    v.setUint32(100, fixedLen);
    out[104] = h.compressionType;
  }
  let pos = fixedLen;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  out.set(name, pos);
  return out;
}
