// Creating images (qemu-img create -f qcow2 and its -o options).
import { setU64, viewOf } from "./bytes.js";
import { COMPRESSION } from "./compress.js";
import { Qcow2UsageError } from "./errors.js";
import { AUTOCLEAR, COMPAT, INCOMPAT, serializeHeader, type Qcow2Header } from "./header.js";
import { OFLAG_COPIED, putEntry } from "./l2-entry.js";
import { Qcow2Image } from "./qcow2-image.js";
import { setRefcountEntry } from "./refcounts.js";
import type { ByteStore } from "./store.js";

/** Bytes to place in the image at creation (see {@link Qcow2CreateOptions.prepare}). */
export interface HeaderAreaWrite {
  /** File offset. */
  offset: number;
  /** Bytes to write there. */
  data: Uint8Array;
}

/** Options of {@link createQcow2}, named after qemu-img's `-o` options. */
export interface Qcow2CreateOptions {
  /** Virtual disk size in bytes. */
  size: number;
  /** Cluster size in bytes, a power of two from 512 to 2 MiB (default 64 KiB). */
  clusterSize?: number;
  /** "1.1" (version 3, default) or "0.10" (version 2). */
  compat?: "0.10" | "1.1" | "v2" | "v3";
  /** Postpone refcount updates (compatible bit 0); version 3 only. */
  lazyRefcounts?: boolean;
  /** Refcount width: 1, 2, 4, 8, 16 (default), 32 or 64 bits. */
  refcountBits?: number;
  /** 128-bit L2 entries with 32 subclusters (clusters of at least 16 KiB). */
  extendedL2?: boolean;
  /** Compression for compressed clusters: "zlib" (default) or "zstd". */
  compressionType?: "zlib" | "zstd";
  /** "off" (default), "metadata", "falloc" or "full". */
  preallocation?: "off" | "metadata" | "falloc" | "full";
  /** Backing file name, stored as given. */
  backingFile?: string;
  /** Backing file format ("qcow2", "raw"), stored in a header extension. */
  backingFormat?: string;
  /** External data file name, stored as given (needs `dataStore`). */
  dataFile?: string;
  /** The external data file, opened for writing. */
  dataStore?: ByteStore;
  /** The external data file is kept a valid raw image (autoclear bit 1). */
  dataFileRaw?: boolean;
  /**
   * Sets extra header fields and reserves space right after the first
   * refcount block before anything is written; returns data to write there
   * (LUKS uses this, see luksCreateHook).
   */
  prepare?: (h: Qcow2Header, reserve: (bytes: number) => number) => HeaderAreaWrite[];
}

/**
 * Writes a new, empty qcow2 image into `store` (which should be empty).
 * Layout as QEMU's: header, refcount table, one refcount block, then the
 * L1 table. Returns nothing; open the store with {@link Qcow2Image.open}.
 */
export async function createQcow2(store: ByteStore, o: Qcow2CreateOptions): Promise<void> {
  const cs = o.clusterSize ?? 65536;
  const clusterBits = Math.log2(cs);
  if (!Number.isInteger(clusterBits) || clusterBits < 9 || clusterBits > 21) throw new Qcow2UsageError("QCOW2_BAD_OPTION", `cluster size ${cs} must be a power of two between 512 and 2M`);
  const version = o.compat === "0.10" || o.compat === "v2" ? 2 : 3;
  const bits = o.refcountBits ?? 16;
  const order = Math.log2(bits);
  if (!Number.isInteger(order) || order < 0 || order > 6) throw new Qcow2UsageError("QCOW2_BAD_OPTION", `refcount_bits ${bits} must be a power of two up to 64`);
  if (version === 2 && (bits !== 16 || o.lazyRefcounts || o.extendedL2 || o.dataFile || o.compressionType === "zstd")) {
    throw new Qcow2UsageError("QCOW2_BAD_OPTION", "compat=0.10 supports only 16-bit refcounts and no lazy refcounts, extended L2, data file or zstd");
  }
  if (o.extendedL2 && cs < 16384) throw new Qcow2UsageError("QCOW2_BAD_OPTION", "extended_l2 needs a cluster size of at least 16K");
  if (!Number.isSafeInteger(o.size) || o.size < 0) throw new Qcow2UsageError("QCOW2_BAD_OPTION", `invalid size ${o.size}`);
  if (o.size % 512 !== 0) throw new Qcow2UsageError("QCOW2_BAD_OPTION", "size must be a multiple of 512");
  if (o.dataFile && !o.dataStore) throw new Qcow2UsageError("QCOW2_BAD_OPTION", "data_file needs the data file opened (dataStore)");
  if (o.dataFileRaw && !o.dataFile) throw new Qcow2UsageError("QCOW2_BAD_OPTION", "data_file_raw needs data_file");
  if (o.backingFormat && !o.backingFile) throw new Qcow2UsageError("QCOW2_BAD_OPTION", "backing_fmt needs backing_file");

  let incompatible = 0n;
  if (o.extendedL2) incompatible |= 1n << BigInt(INCOMPAT.extendedL2);
  if (o.compressionType === "zstd") incompatible |= 1n << BigInt(INCOMPAT.compressionType);
  if (o.dataFile) incompatible |= 1n << BigInt(INCOMPAT.externalDataFile);
  const h: Qcow2Header = {
    version,
    backingFileOffset: 0,
    backingFileSize: 0,
    clusterBits,
    size: 0, // set once the L1 table exists
    cryptMethod: 0,
    l1Size: 0,
    l1TableOffset: 0,
    refcountTableOffset: cs,
    refcountTableClusters: 1,
    nbSnapshots: 0,
    snapshotsOffset: 0,
    incompatible,
    compatible: o.lazyRefcounts ? 1n << BigInt(COMPAT.lazyRefcounts) : 0n,
    autoclear: o.dataFileRaw ? 1n << BigInt(AUTOCLEAR.rawExternalData) : 0n,
    refcountOrder: order,
    headerLength: version === 3 ? 112 : 72,
    compressionType: o.compressionType === "zstd" ? COMPRESSION.zstd : COMPRESSION.zlib,
    backingFile: o.backingFile,
    backingFormat: o.backingFormat,
    dataFile: o.dataFile,
    featureNames: [],
    unknownExtensions: [],
  };
  // Clusters 0 (header), 1 (refcount table), 2 (first refcount block).
  let next = 3;
  const reserve = (bytes: number) => {
    const at = next * cs;
    next += Math.ceil(bytes / cs);
    return at;
  };
  const extra = o.prepare ? o.prepare(h, reserve) : [];
  if (h.cryptMethod && (o.preallocation ?? "off") !== "off") throw new Qcow2UsageError("QCOW2_BAD_OPTION", "preallocation of encrypted images is not supported");
  const perBlock = (cs * 8) >> order;
  if (next > perBlock) throw new Qcow2UsageError("QCOW2_BAD_OPTION", "initial metadata does not fit the first refcount block; use larger clusters");
  await store.truncate(0);
  await store.write(0, serializeHeader(h));
  const rt = new Uint8Array(cs);
  setU64(viewOf(rt), 0, 2 * cs);
  await store.write(cs, rt);
  const rb = new Uint8Array(cs);
  for (let c = 0; c < next; c++) setRefcountEntry(rb, viewOf(rb), order, c, 1);
  await store.write(2 * cs, rb);
  for (const x of extra) await store.write(x.offset, x.data);
  if (next > 3) {
    const end = next * cs;
    if (store.size < end) await store.truncate(end);
  }
  if (o.dataStore) await o.dataStore.truncate(0);

  // L1 table and preallocation go through the normal allocation path.
  const img = await Qcow2Image.open(store, { dataStore: o.dataStore, barriers: false, skipDirtyRepair: true, cipher: o.prepare ? NO_CIPHER_CHECK : undefined });
  try {
    const bytesPerL2 = img.l2Coverage;
    await img.growL1(Math.max(1, Math.ceil(o.size / bytesPerL2)));
    await img.setVirtualSize(o.size);
    const prealloc = o.preallocation ?? (o.dataFileRaw ? "metadata" : "off");
    if (prealloc !== "off") await preallocate(img, prealloc);
  } finally {
    await img.close();
  }
}

// createQcow2 opens the image it just wrote before any LUKS key is set up;
// data is never read through it, so a cipher that refuses use is enough.
const NO_CIPHER_CHECK = {
  decrypt(): void {
    throw new Qcow2UsageError("QCOW2_ENCRYPTED", "internal: data access during create");
  },
  encrypt(): void {
    throw new Qcow2UsageError("QCOW2_ENCRYPTED", "internal: data access during create");
  },
};

/** Allocates every L2 table and data cluster (and, for falloc/full, the file space). */
async function preallocate(img: Qcow2Image, mode: "metadata" | "falloc" | "full"): Promise<void> {
  const cs = img.clusterSize;
  const clusters = Math.ceil(img.size / cs);
  let c = 0;
  while (c < clusters) {
    const l1i = Math.floor((c * cs) / img.l2Coverage);
    const { offset: l2Off, table } = await img.writableL2(l1i);
    const firstIdx = c - l1i * img.l2Entries;
    const n = Math.min(clusters - c, img.l2Entries - firstIdx);
    const host = img.hasDataFile ? -1 : await img.allocClusters(n);
    const tv = viewOf(table);
    for (let k = 0; k < n; k++) {
      const g = (c + k) * cs;
      const p = (firstIdx + k) * img.l2EntryBytes;
      putEntry(tv, p, img.hasDataFile ? g : (host + k) * cs, OFLAG_COPIED, 0);
      if (img.extendedL2) {
        tv.setUint32(p + 8, 0);
        tv.setUint32(p + 12, 0xffffffff);
      }
    }
    await img.writeL2Range(l2Off, table, firstIdx, firstIdx + n - 1);
    if (!img.hasDataFile && mode !== "metadata") {
      const end = (host + n) * cs;
      if (mode === "full") {
        const z = new Uint8Array(Math.min(n * cs, 4 << 20));
        for (let p = host * cs; p < end; p += z.length) await img.store.write(p, z.subarray(0, Math.min(z.length, end - p)));
      } else if (img.store.size < end) await img.store.truncate(end);
    }
    c += n;
  }
  if (img.hasDataFile) {
    if (img.dataStore.size < img.size) await img.dataStore.truncate(img.size);
  } else if (mode === "metadata") {
    // Data clusters exist in the map: the file must cover them.
    let last = 0;
    const clustersInFile = Math.ceil(img.store.size / cs);
    for (let k = clustersInFile; k < clustersInFile + clusters + 64; k++) if ((await img.getRefcount(k)) > 0) last = k + 1;
    if (img.store.size < last * cs) await img.store.truncate(last * cs);
  }
}
