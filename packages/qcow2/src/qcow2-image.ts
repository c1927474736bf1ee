// A qcow2 image as a block device: cluster mapping through the L1/L2 tables,
// allocation with reference counts, copy-on-write for clusters shared with
// internal snapshots, compressed clusters, zero clusters, extended L2 entries
// with subclusters, backing files and external data files.
//
// Crash safety (spec: the refcount and L2 invariants qemu-img check tests):
// a cluster's refcount is raised and made durable before anything refers to
// it, and a reference is removed before the refcount is lowered. Clusters
// are reserved in batches so one barrier covers many allocations; a crash
// leaks at most the unused part of a batch.
import type { BlockDevice } from "./block-device.js";
import { getU64, setU64, viewOf } from "./bytes.js";
import { compressCluster, decompressCluster } from "./compress.js";
import { Qcow2FormatError, Qcow2UsageError } from "./errors.js";
import { AUTOCLEAR, COMPAT, featureSet, INCOMPAT, MAX_L1_BYTES, parseHeader, serializeHeader, unknownAutoclear, type Qcow2Header } from "./header.js";
import { compressedRef, encodeCompressed, entryOffset, l1Reserved, l2Reserved, OFLAG_COMPRESSED, OFLAG_COPIED, OFLAG_ZERO, putEntry } from "./l2-entry.js";
import { RwLock } from "./lock.js";
import { checkRange } from "./raw-image.js";
import { entryBytes, getRefcountEntry, maxRefcount, setRefcountEntry } from "./refcounts.js";
import type { ByteStore } from "./store.js";

/** Encryption of data clusters (LUKS), plugged in by the LUKS module. */
export interface ClusterCipher {
  /** Decrypts `buf` in place; `hostOffset` is its offset in the data file (512-byte aligned). */
  decrypt(hostOffset: number, buf: Uint8Array): void;
  /** Encrypts `buf` in place. */
  encrypt(hostOffset: number, buf: Uint8Array): void;
}

/** Options for {@link Qcow2Image.open}. */
export interface Qcow2OpenOptions {
  /** Open read-only (default false unless the store is read-only). */
  readOnly?: boolean;
  /** The backing image, already opened (the caller resolves names; see openImage). */
  backing?: BlockDevice | null;
  /** The external data file, already opened, when the image has one. */
  dataStore?: ByteStore;
  /** Bytes of L2 tables to keep in memory (default: enough for the whole disk, at most 32 MiB). */
  l2CacheBytes?: number;
  /** Bytes of refcount blocks to keep in memory (default 4 MiB). */
  refcountCacheBytes?: number;
  /**
   * Flush the file between a refcount update and the metadata that depends
   * on it, so a power loss (not only a crash) leaves a consistent image.
   * Default true.
   */
  barriers?: boolean;
  /** Do not rebuild refcounts when the dirty bit is set (check uses this). */
  skipDirtyRepair?: boolean;
  /** Decrypts and encrypts data clusters (LUKS images). */
  cipher?: ClusterCipher;
}

/** How one guest cluster (or subcluster) is stored. */
export const enum ClusterType {
  /** Not allocated: reads from the backing file, or zeros. */
  Unallocated = 0,
  /** Reads as zeros, no host cluster. */
  ZeroPlain = 1,
  /** Reads as zeros, host cluster kept. */
  ZeroAlloc = 2,
  /** Data in a host cluster. */
  Normal = 3,
  /** Compressed data. */
  Compressed = 4,
  /** Extended L2: host cluster allocated but this subcluster is not (reads from backing). */
  UnallocatedAlloc = 5,
}

/** One mapped extent, as `map` reports it. */
export interface MapExtent {
  /** Guest offset. */
  start: number;
  /** Length in bytes. */
  length: number;
  /** True when the data is allocated in this image (not the backing chain). */
  data: boolean;
  /** True when the extent reads as zeros. */
  zero: boolean;
  /** True when this image (or the backing image at `depth`) decides the contents: data or a zero cluster, not a hole. */
  present: boolean;
  /** True when the data is compressed. */
  compressed: boolean;
  /** Host offset of the data (for uncompressed data in this image). */
  offset?: number;
  /** Depth in the backing chain where the data lives (0 = this image). */
  depth: number;
}

const NO_BACKING: BlockDevice | null = null;
const MIN_RESERVE = 16;
const MAX_RESERVE = 1024;

/** A qcow2 image opened for I/O. Implements {@link BlockDevice}. */
export class Qcow2Image implements BlockDevice {
  /** The image file. */
  readonly store: ByteStore;
  /** Where data clusters live: the image file, or the external data file. */
  readonly dataStore: ByteStore;
  /** The decoded header (kept in sync with the file). */
  readonly header: Qcow2Header;
  /** @inheritdoc */
  readonly readOnly: boolean;
  /** The backing image, if any. */
  backing: BlockDevice | null;
  /** Cluster size in bytes. */
  readonly clusterSize: number;
  /** log2 of the cluster size. */
  readonly clusterBits: number;
  /** True when L2 entries are extended (128-bit, with 32 subclusters). */
  readonly extendedL2: boolean;
  /** Bytes per L2 entry (8 or 16). */
  readonly l2EntryBytes: number;
  /** Entries per L2 table. */
  readonly l2Entries: number;
  /** Subcluster size (the cluster size without extended L2). */
  readonly subclusterSize: number;
  /** Refcount entries per refcount block (changes only when amend rewrites the refcount structure). */
  refblockEntries: number;
  /** @internal */ l1: Uint8Array;
  /** @internal */ l1View: DataView;
  /** @internal */ reftable: number[];
  /** @internal */ readonly lock = new RwLock();
  /** @internal */ readonly cipher: ClusterCipher | undefined;
  private readonly barriers: boolean;
  private readonly l2Cache = new Map<number, Uint8Array>();
  private readonly l2Loading = new Map<number, Promise<Uint8Array>>();
  private readonly l2CacheMax: number;
  private readonly rbCache = new Map<number, Uint8Array>();
  private readonly rbCacheMax: number;
  private freeHint = 0;
  private reserveNext = 0;
  private reserveEnd = 0;
  private reserveBatch = MIN_RESERVE;
  private compressedCursor = 0;
  private compressedEnd = 0;
  private lastDecompressed = { key: -1, data: new Uint8Array(0) };
  private metadataClusters = new Set<number>();
  // Write-back metadata (as QEMU's caches): L2 tables and L1 entries changed
  // in memory, and references dropped whose refcounts are lowered only once
  // the new tables are on disk. flushMetadata() writes them in order.
  private readonly dirtyL2 = new Set<number>();
  private readonly dirtyL1 = new Set<number>();
  private pendingFrees: [number, number][] = [];
  private closed = false;
  private dirtyMarked = false;

  private constructor(store: ByteStore, header: Qcow2Header, options: Qcow2OpenOptions) {
    this.store = store;
    this.header = header;
    this.readOnly = !!options.readOnly || store.readOnly;
    this.backing = options.backing ?? NO_BACKING;
    this.clusterBits = header.clusterBits;
    this.clusterSize = 2 ** header.clusterBits;
    this.extendedL2 = featureSet(header.incompatible, INCOMPAT.extendedL2);
    this.l2EntryBytes = this.extendedL2 ? 16 : 8;
    this.l2Entries = this.clusterSize / this.l2EntryBytes;
    this.subclusterSize = this.extendedL2 ? this.clusterSize / 32 : this.clusterSize;
    this.refblockEntries = (this.clusterSize * 8) >> header.refcountOrder;
    this.dataStore = options.dataStore ?? store;
    this.barriers = options.barriers ?? true;
    this.cipher = options.cipher;
    const wholeDisk = Math.ceil(header.size / this.clusterSize) * this.l2EntryBytes;
    this.l2CacheMax = Math.max(4, Math.ceil((options.l2CacheBytes ?? Math.min(32 << 20, Math.max(1 << 20, wholeDisk))) / this.clusterSize));
    this.rbCacheMax = Math.max(4, Math.ceil((options.refcountCacheBytes ?? 4 << 20) / this.clusterSize));
    this.l1 = new Uint8Array(0);
    this.l1View = viewOf(this.l1);
    this.reftable = [];
  }

  /**
   * Opens a qcow2 image held in `store`.
   * @throws Qcow2Error - on a malformed or unsupported image, naming field and offset
   */
  static async open(store: ByteStore, options: Qcow2OpenOptions = {}): Promise<Qcow2Image> {
    const first = new Uint8Array(Math.min(store.size, 2 << 20));
    await store.read(0, first);
    const header = parseHeader(first, store.size);
    const readOnly = !!options.readOnly || store.readOnly;
    if (featureSet(header.incompatible, INCOMPAT.corrupt)) {
      if (!readOnly) throw new Qcow2FormatError("QCOW2_CORRUPT", "image is marked corrupt; it can only be opened read-only (repair it with check -r all)", { offset: 72, field: "incompatible_features" });
    }
    if (featureSet(header.incompatible, INCOMPAT.externalDataFile) && !options.dataStore) {
      throw new Qcow2UsageError("QCOW2_DATA_FILE_MISSING", `image needs its external data file${header.dataFile ? ` '${header.dataFile}'` : ""}; open it and pass it as dataStore`);
    }
    if (header.cryptMethod === 2 && !options.cipher) {
      throw new Qcow2UsageError("QCOW2_ENCRYPTED", "image is LUKS-encrypted; a passphrase is needed");
    }
    const img = new Qcow2Image(store, header, { ...options, readOnly });
    await img.load();
    if (!img.readOnly) await img.openForWrite(options);
    return img;
  }

  private async load(): Promise<void> {
    const h = this.header;
    const cs = this.clusterSize;
    this.l1 = new Uint8Array(h.l1Size * 8);
    this.l1View = viewOf(this.l1);
    if (h.l1Size > 0) {
      if (h.l1TableOffset + h.l1Size * 8 > this.store.size) throw new Qcow2FormatError("QCOW2_L1_PAST_EOF", `L1 table of ${h.l1Size} entries runs past the end of the file`, { offset: 36, field: "l1_size" });
      await this.store.read(h.l1TableOffset, this.l1);
    }
    const rtBytes = h.refcountTableClusters * cs;
    if (h.refcountTableOffset + rtBytes > this.store.size + cs) throw new Qcow2FormatError("QCOW2_REFTABLE_PAST_EOF", "refcount table runs past the end of the file", { offset: 56, field: "refcount_table_clusters" });
    const rt = new Uint8Array(rtBytes);
    await this.store.read(h.refcountTableOffset, rt);
    const rv = viewOf(rt);
    this.reftable = new Array(rtBytes / 8);
    for (let i = 0; i < this.reftable.length; i++) {
      const at = h.refcountTableOffset + i * 8;
      const off = getU64(rv, i * 8, "refcount_table entry", at);
      if (off % cs !== 0) throw new Qcow2FormatError("QCOW2_UNALIGNED_REFBLOCK", `refcount block offset 0x${off.toString(16)} is not cluster aligned`, { offset: at, field: "refcount_table[" + i + "]" });
      this.reftable[i] = off;
    }
    // Top-level structures must not overlap each other or the header.
    const overlap = (a0: number, al: number, b0: number, bl: number) => al > 0 && bl > 0 && a0 < b0 + bl && b0 < a0 + al;
    const hdr = [0, cs] as const;
    const l1r = [h.l1TableOffset, h.l1Size * 8] as const;
    const rtr = [h.refcountTableOffset, rtBytes] as const;
    if (overlap(...l1r, ...hdr)) throw new Qcow2FormatError("QCOW2_METADATA_OVERLAP", "L1 table overlaps the header", { offset: 40, field: "l1_table_offset" });
    if (overlap(...rtr, ...hdr)) throw new Qcow2FormatError("QCOW2_METADATA_OVERLAP", "refcount table overlaps the header", { offset: 48, field: "refcount_table_offset" });
    if (overlap(...l1r, ...rtr)) throw new Qcow2FormatError("QCOW2_METADATA_OVERLAP", "L1 table overlaps the refcount table", { offset: 40, field: "l1_table_offset" });
    if (h.nbSnapshots > 0 && overlap(h.snapshotsOffset, 40, 0, cs)) throw new Qcow2FormatError("QCOW2_METADATA_OVERLAP", "snapshot table overlaps the header", { offset: 64, field: "snapshots_offset" });
    this.metadataClusters.add(0);
    this.addMetadata(h.l1TableOffset, h.l1Size * 8);
    this.addMetadata(h.refcountTableOffset, rtBytes);
    for (const off of this.reftable) if (off) this.addMetadata(off, cs);
    for (let i = 0; i < h.l1Size; i++) {
      const off = this.l1Offset(i);
      if (off) this.addMetadata(off, cs);
    }
    if (h.cryptoHeader) this.addMetadata(h.cryptoHeader.offset, h.cryptoHeader.length);
  }

  private async openForWrite(options: Qcow2OpenOptions): Promise<void> {
    const h = this.header;
    let rewrite = false;
    // Unknown autoclear bits: the feature they belong to may be stale now
    // that an unaware writer modifies the image (spec: autoclear_features).
    const unknown = unknownAutoclear(h);
    if (unknown !== 0n || featureSet(h.autoclear, AUTOCLEAR.bitmaps)) {
      // We do not maintain persistent dirty bitmaps, so their bit goes too.
      h.autoclear &= ~(unknown | (1n << BigInt(AUTOCLEAR.bitmaps)));
      rewrite = true;
    }
    if (rewrite) await this.writeHeader();
    if (featureSet(h.incompatible, INCOMPAT.dirty) && !options.skipDirtyRepair) {
      const { checkImage } = await import("./check.js");
      await checkImage(this, { repair: "all" });
      await this.setDirty(false);
    }
    if (this.lazyRefcounts) {
      await this.setDirty(true);
      this.dirtyMarked = true;
    }
  }

  /** True when the image postpones refcount durability (lazy_refcounts, compatible bit 0). */
  get lazyRefcounts(): boolean {
    return featureSet(this.header.compatible, COMPAT.lazyRefcounts);
  }

  /** @inheritdoc */
  get size(): number {
    return this.header.size;
  }

  /** Bytes of guest data one L2 table maps. */
  get l2Coverage(): number {
    return this.l2Entries * this.clusterSize;
  }

  /** True when the data file is a raw image of the disk (autoclear bit 1). */
  get dataFileRaw(): boolean {
    return featureSet(this.header.autoclear, AUTOCLEAR.rawExternalData);
  }

  /** True when data clusters live in an external data file (host offset = guest offset). */
  get hasDataFile(): boolean {
    return featureSet(this.header.incompatible, INCOMPAT.externalDataFile);
  }

  // ---------------------------------------------------------------- header

  /** @internal Rewrites the header cluster from {@link header}. */
  async writeHeader(): Promise<void> {
    const bytes = serializeHeader(this.header);
    // The whole first cluster, so nothing stale follows the new header.
    const cluster = new Uint8Array(this.clusterSize);
    cluster.set(bytes);
    await this.store.write(0, cluster);
  }

  /** @internal Sets or clears the dirty bit on disk. */
  async setDirty(on: boolean): Promise<void> {
    const h = this.header;
    const bit = 1n << BigInt(INCOMPAT.dirty);
    const next = on ? h.incompatible | bit : h.incompatible & ~bit;
    if (next === h.incompatible) return;
    if (!on) await this.store.flush();
    h.incompatible = next;
    const b = new Uint8Array(8);
    viewOf(b).setBigUint64(0, next);
    await this.store.write(72, b);
    if (on) await this.store.flush();
  }

  /** @internal Turns lazy refcounts (compatible bit 0) on or off, keeping the dirty bit consistent. */
  async setLazyRefcounts(on: boolean): Promise<void> {
    const bit = 1n << BigInt(COMPAT.lazyRefcounts);
    await this.store.flush();
    this.header.compatible = on ? this.header.compatible | bit : this.header.compatible & ~bit;
    if (!on && this.dirtyMarked) {
      this.dirtyMarked = false;
      this.header.incompatible &= ~(1n << BigInt(INCOMPAT.dirty));
    }
    await this.writeHeader();
    if (on && !this.dirtyMarked) {
      await this.setDirty(true);
      this.dirtyMarked = true;
    }
  }

  /** @internal Marks the image corrupt (incompatible bit 1) so it is not written again before repair. */
  async markCorrupt(): Promise<void> {
    if (this.readOnly || this.header.version < 3) return;
    this.header.incompatible |= 1n << BigInt(INCOMPAT.corrupt);
    const b = new Uint8Array(8);
    viewOf(b).setBigUint64(0, this.header.incompatible);
    await this.store.write(72, b).catch(() => undefined);
  }

  private addMetadata(offset: number, length: number): void {
    if (length <= 0) return;
    const first = Math.floor(offset / this.clusterSize);
    const last = Math.floor((offset + length - 1) / this.clusterSize);
    for (let c = first; c <= last && c - first < 1 << 22; c++) this.metadataClusters.add(c);
  }

  /** @internal Forgets a metadata cluster that was freed. */
  dropMetadata(offset: number, length: number): void {
    const first = Math.floor(offset / this.clusterSize);
    const last = Math.floor((offset + length - 1) / this.clusterSize);
    for (let c = first; c <= last; c++) this.metadataClusters.delete(c);
  }

  /** @internal Registers clusters as metadata, so data writes never land on them. */
  noteMetadata(offset: number, length: number): void {
    this.addMetadata(offset, length);
  }

  private guardData(host: number, length: number): void {
    if (this.hasDataFile) return;
    const first = Math.floor(host / this.clusterSize);
    const last = Math.floor((host + length - 1) / this.clusterSize);
    for (let c = first; c <= last; c++) {
      if (this.metadataClusters.has(c)) {
        void this.markCorrupt();
        throw new Qcow2FormatError("QCOW2_METADATA_OVERLAP", `a data write to host offset 0x${(c * this.clusterSize).toString(16)} would overwrite image metadata; the image is corrupt`, { offset: c * this.clusterSize, field: "l2_entry" });
      }
    }
  }

  // ------------------------------------------------------------ L1 and L2

  /** @internal Host offset of the L2 table for L1 index `i` (0 = none). */
  l1Offset(i: number): number {
    const hi = this.l1View.getUint32(i * 8);
    const lo = this.l1View.getUint32(i * 8 + 4);
    const at = this.header.l1TableOffset + i * 8;
    if (l1Reserved(hi, lo)) throw new Qcow2FormatError("QCOW2_BAD_L1_ENTRY", `L1 entry ${i} has reserved bits set or an unaligned offset`, { offset: at, field: `l1_table[${i}]` });
    const off = entryOffset(hi, lo);
    if (off < 0) throw new Qcow2FormatError("QCOW2_BAD_L1_ENTRY", `L1 entry ${i} points past 2^53`, { offset: at, field: `l1_table[${i}]` });
    if (off % this.clusterSize !== 0) throw new Qcow2FormatError("QCOW2_UNALIGNED_L2", `L2 table offset 0x${off.toString(16)} is not cluster aligned`, { offset: at, field: `l1_table[${i}]` });
    return off;
  }

  /** @internal True when L1 entry `i` has the COPIED flag. */
  l1Copied(i: number): boolean {
    return (this.l1View.getUint32(i * 8) & OFLAG_COPIED) !== 0;
  }

  /** @internal Loads an L2 table (through the cache). */
  async loadL2(offset: number, l1Index = -1): Promise<Uint8Array> {
    const hit = this.l2Cache.get(offset);
    if (hit) {
      if (this.l2Cache.size > 8) {
        this.l2Cache.delete(offset);
        this.l2Cache.set(offset, hit);
      }
      return hit;
    }
    const pending = this.l2Loading.get(offset);
    if (pending) return pending;
    const p = (async () => {
      if (offset + this.clusterSize > this.store.size) {
        throw new Qcow2FormatError("QCOW2_L2_PAST_EOF", `L2 table at 0x${offset.toString(16)} is past the end of the ${this.store.size}-byte file`, { offset: l1Index >= 0 ? this.header.l1TableOffset + l1Index * 8 : offset, field: l1Index >= 0 ? `l1_table[${l1Index}]` : "l2_table" });
      }
      const t = new Uint8Array(this.clusterSize);
      await this.store.read(offset, t);
      this.cacheL2(offset, t);
      return t;
    })();
    this.l2Loading.set(offset, p);
    try {
      return await p;
    } finally {
      this.l2Loading.delete(offset);
    }
  }

  private cacheL2(offset: number, t: Uint8Array): void {
    this.l2Cache.set(offset, t);
    if (this.l2Cache.size <= this.l2CacheMax) return;
    // Evict clean tables, oldest first; dirty ones stay until written.
    for (const k of this.l2Cache.keys()) {
      if (this.l2Cache.size <= this.l2CacheMax) break;
      if (!this.dirtyL2.has(k) && k !== offset) this.l2Cache.delete(k);
    }
  }

  /**
   * @internal Writes deferred metadata in crash-safe order: a barrier (the
   * refcounts of newly used clusters and the data become durable), the
   * changed L2 tables, a barrier, the changed L1 entries, a barrier, then the
   * refcount decrements of dropped references. A crash anywhere leaks at most.
   */
  async flushMetadata(): Promise<void> {
    if (this.dirtyL2.size === 0 && this.dirtyL1.size === 0 && this.pendingFrees.length === 0) return;
    await this.barrier();
    if (this.dirtyL2.size) {
      const writes: Promise<void>[] = [];
      for (const off of this.dirtyL2) {
        const t = this.l2Cache.get(off);
        if (t) writes.push(this.store.write(off, t));
      }
      this.dirtyL2.clear();
      await Promise.all(writes);
    }
    if (this.dirtyL1.size) {
      await this.barrier();
      const idx = [...this.dirtyL1].sort((a, b) => a - b);
      this.dirtyL1.clear();
      // Contiguous runs of entries in one write each.
      for (let k = 0; k < idx.length; ) {
        let e = k;
        while (e + 1 < idx.length && idx[e + 1] === idx[e] + 1) e++;
        await this.store.write(this.header.l1TableOffset + idx[k] * 8, this.l1.subarray(idx[k] * 8, (idx[e] + 1) * 8));
        k = e + 1;
      }
    }
    if (this.pendingFrees.length) {
      await this.barrier();
      const frees = this.pendingFrees;
      this.pendingFrees = [];
      for (const [o, l] of frees) await this.freeHostRange(o, l);
    }
  }

  /** Writes deferred metadata when the L2 cache is over its size. */
  private async trimCache(): Promise<void> {
    if (this.l2Cache.size > this.l2CacheMax && this.dirtyL2.size > 0) await this.flushMetadata();
  }

  /** @internal Drops cached tables (after a snapshot is applied, for example). */
  dropCaches(): void {
    // Tables not yet written stay: they are the only copy.
    for (const k of [...this.l2Cache.keys()]) if (!this.dirtyL2.has(k)) this.l2Cache.delete(k);
    this.rbCache.clear();
    this.lastDecompressed.key = -1;
  }

  /**
   * @internal Classifies guest cluster entry `idx` of L2 table `t` at
   * subcluster `sc` (0 without extended L2). Returns the type and sets
   * `this.hostOut` to the host cluster offset.
   */
  classify(t: Uint8Array, l2Offset: number, idx: number, sc: number): ClusterType {
    const pos = idx * this.l2EntryBytes;
    // Big-endian words read by hand: no DataView per call on the read path.
    const hi = ((t[pos] << 24) | (t[pos + 1] << 16) | (t[pos + 2] << 8) | t[pos + 3]) >>> 0;
    const lo = ((t[pos + 4] << 24) | (t[pos + 5] << 16) | (t[pos + 6] << 8) | t[pos + 7]) >>> 0;
    const at = l2Offset + pos;
    if (hi & OFLAG_COMPRESSED) {
      if (this.hasDataFile) throw new Qcow2FormatError("QCOW2_BAD_L2_ENTRY", "compressed cluster in an image with an external data file", { offset: at, field: "l2_entry" });
      this.hostOut = 0;
      return ClusterType.Compressed;
    }
    if (l2Reserved(hi, lo)) {
      throw new Qcow2FormatError("QCOW2_BAD_L2_ENTRY", `L2 entry has reserved bits set or an unaligned offset (0x${hi.toString(16)}${lo.toString(16).padStart(8, "0")})`, { offset: at, field: "l2_entry" });
    }
    const host = entryOffset(hi, lo);
    if (host < 0 || host % this.clusterSize !== 0) throw new Qcow2FormatError("QCOW2_UNALIGNED_DATA", `data cluster offset is not cluster aligned`, { offset: at, field: "l2_entry" });
    this.hostOut = host;
    if (host === 0 && this.hasDataFile && hi & OFLAG_COPIED) {
      // Offset 0 is a real cluster of an external data file; COPIED tells
      // it from "unallocated" (data clusters there always have refcount 1).
      if (this.extendedL2) {
        const zeroBits = ((t[pos + 8] << 24) | (t[pos + 9] << 16) | (t[pos + 10] << 8) | t[pos + 11]) >>> 0;
        const allocBits = ((t[pos + 12] << 24) | (t[pos + 13] << 16) | (t[pos + 14] << 8) | t[pos + 15]) >>> 0;
        const bit = 1 << sc;
        return allocBits & bit ? ClusterType.Normal : zeroBits & bit ? ClusterType.ZeroAlloc : ClusterType.UnallocatedAlloc;
      }
      return lo & OFLAG_ZERO ? ClusterType.ZeroAlloc : ClusterType.Normal;
    }
    if (this.extendedL2) {
      if (lo & OFLAG_ZERO) throw new Qcow2FormatError("QCOW2_BAD_L2_ENTRY", "extended L2 entry has bit 0 set", { offset: at, field: "l2_entry" });
      const zeroBits = ((t[pos + 8] << 24) | (t[pos + 9] << 16) | (t[pos + 10] << 8) | t[pos + 11]) >>> 0;
      const allocBits = ((t[pos + 12] << 24) | (t[pos + 13] << 16) | (t[pos + 14] << 8) | t[pos + 15]) >>> 0;
      if (zeroBits & allocBits) throw new Qcow2FormatError("QCOW2_BAD_L2_BITMAP", "subcluster marked both allocated and zero", { offset: at + 8, field: "l2_bitmap" });
      if (host === 0 && allocBits !== 0) throw new Qcow2FormatError("QCOW2_BAD_L2_BITMAP", "subclusters allocated without a host cluster", { offset: at + 8, field: "l2_bitmap" });
      const bit = 1 << sc;
      if (allocBits & bit) return ClusterType.Normal;
      if (zeroBits & bit) return host ? ClusterType.ZeroAlloc : ClusterType.ZeroPlain;
      return host ? ClusterType.UnallocatedAlloc : ClusterType.Unallocated;
    }
    if (lo & OFLAG_ZERO) {
      if (this.header.version < 3) throw new Qcow2FormatError("QCOW2_BAD_L2_ENTRY", "zero flag in a version 2 image", { offset: at, field: "l2_entry" });
      return host ? ClusterType.ZeroAlloc : ClusterType.ZeroPlain;
    }
    return host ? ClusterType.Normal : ClusterType.Unallocated;
  }

  /** @internal Host offset set by the last {@link classify}. */
  hostOut = 0;

  // ------------------------------------------------------------- reading

  /**
   * Host offset for a request that lies inside one mapped, uncompressed
   * standard cluster whose L2 table is cached; -1 otherwise. With
   * `forWrite` the cluster must also be owned (COPIED). The 4 KiB random
   * I/O path: no allocation, no await before the data access.
   */
  private fastHost(offset: number, length: number, forWrite: boolean): number {
    if (this.extendedL2 || this.cipher) return -1;
    const cs = this.clusterSize;
    const cluster = Math.floor(offset / cs);
    const inCluster = offset - cluster * cs;
    if (inCluster + length > cs) return -1;
    const l1i = Math.floor(cluster / this.l2Entries);
    if (l1i >= this.header.l1Size) return -1;
    const hi1 = this.l1View.getUint32(l1i * 8);
    const lo1 = this.l1View.getUint32(l1i * 8 + 4);
    if (l1Reserved(hi1, lo1)) return -1;
    const l2Off = entryOffset(hi1, lo1);
    if (l2Off <= 0) return -1;
    const t = this.l2Cache.get(l2Off);
    if (!t) return -1;
    const p = (cluster - l1i * this.l2Entries) * 8;
    const hi = (t[p] << 24) | (t[p + 1] << 16) | (t[p + 2] << 8) | t[p + 3];
    const lo = (t[p + 4] << 24) | (t[p + 5] << 16) | (t[p + 6] << 8) | t[p + 7];
    if (hi & OFLAG_COMPRESSED || lo & 0x1ff || hi & 0x3f000000) return -1;
    if (forWrite && !(hi & OFLAG_COPIED)) return -1;
    const host = entryOffset(hi, lo);
    if (host <= 0 || host % cs !== 0) return -1;
    return host + inCluster;
  }

  /** @inheritdoc */
  async read(offset: number, dest: Uint8Array): Promise<void> {
    this.live();
    checkRange(offset, dest.length, this.header.size, "read");
    const quick = this.lock.tryShared();
    if (quick) {
      const host = this.fastHost(offset, dest.length, false);
      if (host >= 0) {
        try {
          await this.readData(host, dest);
        } finally {
          quick();
        }
        return;
      }
      quick();
    }
    const release = await this.lock.shared();
    try {
      await this.readUnlocked(offset, dest);
    } finally {
      release();
    }
  }

  /** @internal Reads without taking the lock (caller holds it). */
  async readUnlocked(offset: number, dest: Uint8Array): Promise<void> {
    if (this.cipher && ((offset | dest.length) & 511) !== 0) {
      // Encrypted data is read in whole sectors.
      const a = offset - (offset % 512);
      const b = Math.ceil((offset + dest.length) / 512) * 512;
      const tmp = new Uint8Array(b - a);
      await this.readUnlocked(a, tmp);
      dest.set(tmp.subarray(offset - a, offset - a + dest.length));
      return;
    }
    const cs = this.clusterSize;
    const scs = this.subclusterSize;
    const pending: Promise<void>[] = [];
    // Contiguous host reads are merged into one request.
    let runHost = -1;
    let runDest = 0;
    let runLen = 0;
    const flushRun = () => {
      if (runLen > 0) pending.push(this.readData(runHost, dest.subarray(runDest, runDest + runLen)));
      runLen = 0;
      runHost = -1;
    };
    let holeStart = -1;
    let holeLen = 0;
    const flushHole = () => {
      if (holeLen > 0) pending.push(this.readBacking(offset + holeStart, dest.subarray(holeStart, holeStart + holeLen)));
      holeLen = 0;
      holeStart = -1;
    };
    let pos = 0;
    const len = dest.length;
    while (pos < len) {
      const g = offset + pos;
      const l1i = Math.floor(g / this.l2Coverage);
      const l2Off = l1i < this.header.l1Size ? this.l1Offset(l1i) : 0;
      const l2End = (l1i + 1) * this.l2Coverage;
      if (l2Off === 0) {
        const n = Math.min(len - pos, l2End - g);
        flushRun();
        if (holeLen > 0 && holeStart + holeLen === pos) holeLen += n;
        else {
          flushHole();
          holeStart = pos;
          holeLen = n;
        }
        pos += n;
        continue;
      }
      const t = await this.loadL2(l2Off, l1i);
      while (pos < len && offset + pos < l2End) {
        const gg = offset + pos;
        const inL2 = gg - l1i * this.l2Coverage;
        const idx = Math.floor(inL2 / cs);
        const inCluster = inL2 - idx * cs;
        const sc = this.extendedL2 ? Math.floor(inCluster / scs) : 0;
        const n = Math.min(len - pos, (sc + 1) * scs - inCluster);
        const type = this.classify(t, l2Off, idx, sc);
        if (type === ClusterType.Normal) {
          flushHole();
          const host = this.hostOut + inCluster;
          if (runLen > 0 && runHost + runLen === host && runDest + runLen === pos) runLen += n;
          else {
            flushRun();
            runHost = host;
            runDest = pos;
            runLen = n;
          }
        } else if (type === ClusterType.Unallocated || type === ClusterType.UnallocatedAlloc) {
          flushRun();
          if (holeLen > 0 && holeStart + holeLen === pos) holeLen += n;
          else {
            flushHole();
            holeStart = pos;
            holeLen = n;
          }
        } else if (type === ClusterType.Compressed) {
          flushRun();
          flushHole();
          const data = await this.decompressed(t, l2Off, idx);
          dest.set(data.subarray(inCluster, inCluster + n), pos);
        } else {
          flushRun();
          flushHole();
          dest.fill(0, pos, pos + n);
        }
        pos += n;
      }
    }
    flushRun();
    flushHole();
    if (pending.length === 1) await pending[0];
    else if (pending.length > 1) await Promise.all(pending);
  }

  private async readData(host: number, dest: Uint8Array): Promise<void> {
    if (host + dest.length > this.dataStore.size && !this.hasDataFile) {
      throw new Qcow2FormatError("QCOW2_DATA_PAST_EOF", `data cluster at 0x${host.toString(16)} is past the end of the ${this.dataStore.size}-byte file`, { offset: host, field: "l2_entry" });
    }
    await this.dataStore.read(host, dest);
    if (this.cipher) this.cipher.decrypt(host, dest);
  }

  /** Reads guest bytes that are not allocated here: from the backing image, or zeros. */
  private async readBacking(guest: number, dest: Uint8Array): Promise<void> {
    const b = this.backing;
    if (!b || guest >= b.size) {
      dest.fill(0);
      return;
    }
    const n = Math.min(dest.length, b.size - guest);
    await b.read(guest, n === dest.length ? dest : dest.subarray(0, n));
    if (n < dest.length) dest.fill(0, n);
  }

  /** @internal The decompressed contents of compressed entry `idx` of an L2 table. */
  async decompressed(t: Uint8Array, l2Off: number, idx: number): Promise<Uint8Array> {
    const v = viewOf(t);
    const pos = idx * this.l2EntryBytes;
    const hi = v.getUint32(pos);
    const lo = v.getUint32(pos + 4);
    const ref = compressedRef(hi, lo, this.clusterBits);
    const key = ref.offset * 4096 + (ref.length & 4095);
    if (this.lastDecompressed.key === key) return this.lastDecompressed.data;
    if (ref.offset + ref.length > this.store.size + 512 || ref.offset < this.clusterSize) {
      throw new Qcow2FormatError("QCOW2_COMPRESSED_RANGE", `compressed data at 0x${ref.offset.toString(16)} (${ref.length} bytes) lies outside the file`, { offset: l2Off + pos, field: "l2_entry.compressed" });
    }
    const src = new Uint8Array(Math.min(ref.length, this.store.size - ref.offset));
    await this.store.read(ref.offset, src);
    const out = new Uint8Array(this.clusterSize);
    decompressCluster(this.header.compressionType, src, out, ref.offset);
    this.lastDecompressed = { key, data: out };
    return out;
  }

  // ------------------------------------------------------------ refcounts

  /** @internal Loads the refcount block at `offset` for reftable index `ti`. */
  async loadRefblock(ti: number): Promise<Uint8Array | null> {
    const off = this.reftable[ti];
    if (!off) return null;
    const hit = this.rbCache.get(ti);
    if (hit) return hit;
    if (off + this.clusterSize > this.store.size) {
      throw new Qcow2FormatError("QCOW2_REFBLOCK_PAST_EOF", `refcount block at 0x${off.toString(16)} is past the end of the file`, { offset: this.header.refcountTableOffset + ti * 8, field: `refcount_table[${ti}]` });
    }
    const b = new Uint8Array(this.clusterSize);
    await this.store.read(off, b);
    this.rbCache.set(ti, b);
    while (this.rbCache.size > this.rbCacheMax) this.rbCache.delete(this.rbCache.keys().next().value as number);
    return b;
  }

  /** The refcount of host cluster `cluster`. */
  async getRefcount(cluster: number): Promise<number> {
    const ti = Math.floor(cluster / this.refblockEntries);
    if (ti >= this.reftable.length) return 0;
    const b = await this.loadRefblock(ti);
    if (!b) return 0;
    return getRefcountEntry(b, viewOf(b), this.header.refcountOrder, cluster - ti * this.refblockEntries);
  }

  /**
   * @internal Adds `delta` to the refcounts of clusters [first, first+count)
   * (or sets them to `delta` with `absolute`), writing each touched block
   * once. Refcount blocks are created as needed.
   */
  async updateRefcounts(first: number, count: number, delta: number, absolute = false): Promise<void> {
    const order = this.header.refcountOrder;
    const max = maxRefcount(order);
    let c = first;
    const end = first + count;
    while (c < end) {
      const ti = Math.floor(c / this.refblockEntries);
      await this.ensureRefblock(ti);
      const b = (await this.loadRefblock(ti))!;
      const v = viewOf(b);
      const base = ti * this.refblockEntries;
      const stop = Math.min(end, base + this.refblockEntries);
      const firstIdx = c - base;
      for (; c < stop; c++) {
        const i = c - base;
        const old = getRefcountEntry(b, v, order, i);
        const next = absolute ? delta : old + delta;
        if (next < 0 || next > max) {
          throw new Qcow2FormatError(next < 0 ? "QCOW2_REFCOUNT_UNDERFLOW" : "QCOW2_REFCOUNT_OVERFLOW", `refcount of cluster ${c} would become ${next}`, { offset: this.reftable[ti] + Math.floor((i << order) / 8), field: "refcount_block" });
        }
        setRefcountEntry(b, v, order, i, next);
        if (next === 0) {
          // A free cluster is no longer metadata nor a cached table.
          if (c < this.freeHint) this.freeHint = c;
          if (this.metadataClusters.delete(c)) this.l2Cache.delete(c * this.clusterSize);
        }
      }
      const [s, e] = entryBytes(order, firstIdx, stop - 1 - base);
      await this.store.write(this.reftable[ti] + s, b.subarray(s, e));
    }
  }

  /** Makes sure reftable entry `ti` points at a refcount block, creating one (and growing the table) if needed. */
  private async ensureRefblock(ti: number): Promise<void> {
    if (ti < this.reftable.length && this.reftable[ti]) return;
    if (ti >= this.reftable.length) await this.growReftable(ti);
    if (this.reftable[ti]) return;
    // The new block describes its own range and lives in its first
    // cluster: nothing valid refers to a cluster whose range has no block.
    const cs = this.clusterSize;
    const self = ti * this.refblockEntries;
    const b = new Uint8Array(cs);
    setRefcountEntry(b, viewOf(b), this.header.refcountOrder, 0, 1);
    const off = self * cs;
    await this.store.write(off, b);
    await this.barrier();
    const e = new Uint8Array(8);
    setU64(viewOf(e), 0, off);
    await this.store.write(this.header.refcountTableOffset + ti * 8, e);
    this.reftable[ti] = off;
    this.rbCache.set(ti, b);
    this.addMetadata(off, cs);
    await this.barrier();
  }

  /**
   * Moves the refcount table to a larger one at the end of the used area,
   * together with the refcount blocks that describe the new table itself.
   */
  private async growReftable(needIndex: number): Promise<void> {
    const cs = this.clusterSize;
    const per = this.refblockEntries;
    const oldEntries = this.reftable.length;
    const fileClusters = Math.ceil(this.store.size / cs);
    // Start the new area on a range boundary past everything in use.
    let highest = fileClusters;
    for (let i = oldEntries - 1; i >= 0; i--) {
      if (this.reftable[i]) {
        highest = Math.max(highest, (i + 1) * per);
        break;
      }
    }
    highest = Math.max(highest, this.reserveEnd);
    const start = Math.ceil(highest / per) * per;
    let entries = Math.max(needIndex + 1, Math.ceil(oldEntries * 1.5), oldEntries + 1);
    let tableClusters = 0;
    let blocks = 1;
    for (let iter = 0; iter < 64; iter++) {
      tableClusters = Math.ceil((entries * 8) / cs);
      blocks = 1;
      while (Math.ceil((blocks + tableClusters) / per) > blocks) blocks++;
      const need = start / per + blocks;
      if (need <= (tableClusters * cs) / 8) break;
      entries = need;
    }
    entries = (tableClusters * cs) / 8;
    if (tableClusters * cs > (8 << 20)) throw new Qcow2UsageError("QCOW2_TOO_LARGE", "the refcount table would exceed 8 MiB; use larger clusters or refcounts");
    const order = this.header.refcountOrder;
    const used = blocks + tableClusters;
    // Blocks first (block j at start+j describes range start/per + j), then the table.
    const newTable = new Uint8Array(tableClusters * cs);
    const tv = viewOf(newTable);
    for (let i = 0; i < oldEntries; i++) setU64(tv, i * 8, this.reftable[i]);
    for (let j = 0; j < blocks; j++) {
      const b = new Uint8Array(cs);
      const bv = viewOf(b);
      const rangeFirst = start + j * per;
      for (let c = rangeFirst; c < Math.min(rangeFirst + per, start + used); c++) setRefcountEntry(b, bv, order, c - rangeFirst, 1);
      const off = (start + j) * cs;
      await this.store.write(off, b);
      setU64(tv, (start / per + j) * 8, off);
    }
    const tableOff = (start + blocks) * cs;
    await this.store.write(tableOff, newTable);
    await this.barrier();
    const oldOff = this.header.refcountTableOffset;
    const oldClusters = this.header.refcountTableClusters;
    const hb = new Uint8Array(12);
    setU64(viewOf(hb), 0, tableOff);
    viewOf(hb).setUint32(8, tableClusters);
    await this.store.write(48, hb);
    await this.barrier();
    this.header.refcountTableOffset = tableOff;
    this.header.refcountTableClusters = tableClusters;
    const next = new Array<number>(entries).fill(0);
    for (let i = 0; i < oldEntries; i++) next[i] = this.reftable[i];
    for (let j = 0; j < blocks; j++) next[start / per + j] = (start + j) * cs;
    this.reftable = next;
    this.rbCache.clear();
    this.addMetadata(start * cs, used * cs);
    this.dropMetadata(oldOff, oldClusters * cs);
    await this.updateRefcounts(oldOff / cs, oldClusters, -1);
  }

  /** @internal Flushes the file when barriers are on and refcounts are not lazy. */
  async barrier(): Promise<void> {
    if (this.barriers && !this.dirtyMarked) await this.store.flush();
  }

  /**
   * Finds `count` contiguous free clusters from the hint, raises their
   * refcount to one and makes that durable. Ranges without a refcount block
   * get one, placed right after the run (so long runs can cross ranges).
   */
  private async allocateNew(count: number): Promise<number> {
    const order = this.header.refcountOrder;
    const per = this.refblockEntries;
    const cs = this.clusterSize;
    for (let attempt = 0; attempt < 8; attempt++) {
      let runStart = this.freeHint;
      let c = runStart;
      const uncovered: number[] = [];
      let guard = 0;
      while (c - runStart < count + uncovered.length) {
        if (++guard > 1 << 27) throw new Qcow2UsageError("QCOW2_NO_SPACE", "no free clusters found");
        const ti = Math.floor(c / per);
        if (ti >= this.reftable.length || !this.reftable[ti]) {
          if (uncovered[uncovered.length - 1] !== ti) uncovered.push(ti);
          c++;
          continue;
        }
        const b = (await this.loadRefblock(ti))!;
        const v = viewOf(b);
        const base = ti * per;
        const stop = base + per;
        for (; c < stop && c - runStart < count + uncovered.length; c++) {
          if (getRefcountEntry(b, v, order, c - base) !== 0) {
            runStart = c + 1;
            uncovered.length = 0;
          }
        }
      }
      const total = count + uncovered.length;
      const tooFar = uncovered.find((ti) => ti >= this.reftable.length);
      if (tooFar !== undefined) {
        await this.growReftable(Math.floor((runStart + total - 1) / per));
        continue; // the new table and its blocks took space: look again
      }
      // Clusters in ranges that already have a block: count them first.
      const runEnd = runStart + total;
      let c0 = runStart;
      while (c0 < runEnd) {
        const ti = Math.floor(c0 / per);
        const e = Math.min(runEnd, (ti + 1) * per);
        if (!uncovered.includes(ti)) await this.updateRefcounts(c0, e - c0, 1);
        c0 = e;
      }
      // Then the new blocks, each counting the run's clusters in its range.
      for (let j = 0; j < uncovered.length; j++) {
        const ti = uncovered[j];
        const blk = new Uint8Array(cs);
        const bv = viewOf(blk);
        const base = ti * per;
        for (let k = Math.max(runStart, base); k < Math.min(runEnd, base + per); k++) setRefcountEntry(blk, bv, order, k - base, 1);
        const off = (runStart + count + j) * cs;
        await this.store.write(off, blk);
        this.rbCache.set(ti, blk);
        this.addMetadata(off, cs);
      }
      if (uncovered.length) {
        await this.barrier();
        for (let j = 0; j < uncovered.length; j++) {
          const ti = uncovered[j];
          const off = (runStart + count + j) * cs;
          const e = new Uint8Array(8);
          setU64(viewOf(e), 0, off);
          await this.store.write(this.header.refcountTableOffset + ti * 8, e);
          this.reftable[ti] = off;
        }
      }
      if (runStart === this.freeHint) this.freeHint = runEnd;
      // No barrier here: whatever refers to these clusters is written after one.
      return runStart;
    }
    throw new Qcow2UsageError("QCOW2_NO_SPACE", "could not allocate clusters after growing the refcount table");
  }

  /**
   * @internal Allocates `count` contiguous clusters (refcount one, durable)
   * and returns the first one's index. Small requests come from a reserved
   * batch so one barrier serves many allocations.
   */
  async allocClusters(count: number): Promise<number> {
    if (this.reserveEnd - this.reserveNext >= count) {
      const c = this.reserveNext;
      this.reserveNext += count;
      return c;
    }
    if (count > MAX_RESERVE / 4) return this.allocateNew(count);
    await this.releaseReserve();
    const n = Math.max(count, this.reserveBatch);
    this.reserveBatch = Math.min(MAX_RESERVE, this.reserveBatch * 2);
    const c = await this.allocateNew(n);
    this.reserveNext = c + count;
    this.reserveEnd = c + n;
    return c;
  }

  /** Returns the unused reserved clusters (refcount back to zero). */
  private async releaseReserve(): Promise<void> {
    if (this.reserveEnd > this.reserveNext) {
      const first = this.reserveNext;
      const n = this.reserveEnd - this.reserveNext;
      this.reserveNext = this.reserveEnd = 0;
      await this.updateRefcounts(first, n, -1);
      if (first < this.freeHint) this.freeHint = first;
    }
    this.reserveNext = this.reserveEnd = 0;
  }

  /** @internal Drops one reference to each cluster of a freed data or compressed range. */
  async freeHostRange(offset: number, length: number): Promise<void> {
    const first = Math.floor(offset / this.clusterSize);
    const last = Math.floor((offset + length - 1) / this.clusterSize);
    if (this.compressedCursor && this.compressedEnd > first * this.clusterSize && Math.floor(this.compressedCursor / this.clusterSize) <= last) {
      // The cluster compressed data is being packed into may be freed: start a new one.
      this.compressedCursor = 0;
    }
    await this.updateRefcounts(first, last - first + 1, -1);
  }

  // ------------------------------------------------------------ writing

  private live(): void {
    if (this.closed) throw new Qcow2UsageError("QCOW2_CLOSED", `${this.store.name} is closed`);
  }

  private writable(): void {
    this.live();
    if (this.readOnly) throw new Qcow2UsageError("QCOW2_READ_ONLY", `${this.store.name} is open read-only`);
  }

  /** @internal Writes L1 entry `i` to memory and disk. */
  async setL1(i: number, offset: number, copied: boolean): Promise<void> {
    putEntry(this.l1View, i * 8, offset, copied ? OFLAG_COPIED : 0, 0);
    await this.store.write(this.header.l1TableOffset + i * 8, this.l1.subarray(i * 8, i * 8 + 8));
  }

  /**
   * @internal The L2 table for L1 index `l1i`, ready to be modified in
   * place: allocated if missing, copied if shared with a snapshot.
   */
  async writableL2(l1i: number): Promise<{ offset: number; table: Uint8Array }> {
    const cur = this.l1Offset(l1i);
    if (cur && this.l1Copied(l1i)) return { offset: cur, table: await this.loadL2(cur, l1i) };
    const c = await this.allocClusters(1);
    const off = c * this.clusterSize;
    let table: Uint8Array;
    if (cur) {
      // Copy-on-write of an L2 table shared with a snapshot: the data
      // clusters keep their refcounts (one per image that maps them).
      table = (await this.loadL2(cur, l1i)).slice();
    } else {
      table = new Uint8Array(this.clusterSize);
    }
    this.addMetadata(off, this.clusterSize);
    this.dirtyL2.add(off);
    this.cacheL2(off, table);
    putEntry(this.l1View, l1i * 8, off, OFLAG_COPIED, 0);
    this.dirtyL1.add(l1i);
    if (cur) {
      this.pendingFrees.push([cur, this.clusterSize]);
      this.l2Cache.delete(cur);
    }
    return { offset: off, table };
  }

  /** @inheritdoc */
  async write(offset: number, src: Uint8Array): Promise<void> {
    this.writable();
    checkRange(offset, src.length, this.header.size, "write");
    if (src.length === 0) return;
    // Overwriting data in place changes no metadata: shared access is enough.
    const quick = this.lock.tryShared();
    if (quick) {
      const host = this.fastHost(offset, src.length, true);
      if (host >= 0 && (this.hasDataFile || host + src.length <= this.dataStore.size)) {
        try {
          await this.writeData(host, src);
        } finally {
          quick();
        }
        return;
      }
      quick();
    }
    const release = await this.lock.exclusive();
    try {
      await this.writeUnlocked(offset, src);
      await this.trimCache();
    } finally {
      release();
    }
  }

  /** @internal The write path; the caller holds the exclusive lock. */
  async writeUnlocked(offset: number, src: Uint8Array): Promise<void> {
    if (this.cipher && ((offset | src.length) & 511) !== 0) {
      // Encrypted data is written in whole sectors: read, modify, write.
      const a = offset - (offset % 512);
      const b = Math.min(Math.ceil((offset + src.length) / 512) * 512, Math.max(this.header.size, offset + src.length));
      const tmp = new Uint8Array(Math.ceil((b - a) / 512) * 512);
      await this.readUnlocked(a, tmp);
      tmp.set(src, offset - a);
      await this.writeUnlocked(a, tmp);
      return;
    }
    let pos = 0;
    while (pos < src.length) {
      const g = offset + pos;
      const l1i = Math.floor(g / this.l2Coverage);
      const l2End = (l1i + 1) * this.l2Coverage;
      const n = Math.min(src.length - pos, l2End - g);
      await this.writeInL2(l1i, g, src.subarray(pos, pos + n));
      pos += n;
    }
  }

  /** Writes a range that lies inside one L2 table's coverage. */
  private async writeInL2(l1i: number, guest: number, src: Uint8Array): Promise<void> {
    const cs = this.clusterSize;
    const { offset: l2Off, table } = await this.writableL2(l1i);
    const tv = viewOf(table);
    const base = l1i * this.l2Coverage;
    const firstIdx = Math.floor((guest - base) / cs);
    const lastIdx = Math.floor((guest + src.length - 1 - base) / cs);
    const dataWrites: Promise<void>[] = [];
    const toFree: [number, number][] = [];
    let changedLo = -1;
    let changedHi = -1;
    const touch = (i: number) => {
      if (changedLo < 0 || i < changedLo) changedLo = i;
      if (i > changedHi) changedHi = i;
    };
    let idx = firstIdx;
    while (idx <= lastIdx) {
      const cStart = base + idx * cs;
      const wStart = Math.max(guest, cStart);
      const wEnd = Math.min(guest + src.length, cStart + cs);
      const part = src.subarray(wStart - guest, wEnd - guest);
      const pos = idx * this.l2EntryBytes;
      const hi = tv.getUint32(pos);
      const type0 = this.classify(table, l2Off, idx, 0);
      const host0 = this.hostOut;
      const copied = (hi & OFLAG_COPIED) !== 0;
      if (this.extendedL2 && host0 && copied && type0 !== ClusterType.Compressed) {
        await this.writeSubclusters(table, l2Off, idx, cStart, host0, wStart, part, dataWrites);
        touch(idx);
        idx++;
        continue;
      }
      if (!this.extendedL2 && type0 === ClusterType.Normal && copied) {
        // In place; merge with following in-place clusters that are contiguous on the host.
        let runEnd = idx;
        let hostEnd = host0 + cs;
        while (runEnd + 1 <= lastIdx) {
          const t = this.classify(table, l2Off, runEnd + 1, 0);
          if (t !== ClusterType.Normal || this.hostOut !== hostEnd || !(tv.getUint32((runEnd + 1) * 8) & OFLAG_COPIED)) break;
          runEnd++;
          hostEnd += cs;
        }
        const rEnd = Math.min(guest + src.length, base + (runEnd + 1) * cs);
        const h = host0 + (wStart - cStart);
        dataWrites.push(this.writeData(h, src.subarray(wStart - guest, rEnd - guest)));
        idx = runEnd + 1;
        continue;
      }
      if (!this.extendedL2 && type0 === ClusterType.ZeroAlloc && copied) {
        // Reuse the host cluster: fill around the write with zeros.
        const buf = new Uint8Array(cs);
        buf.set(part, wStart - cStart);
        dataWrites.push(this.writeData(host0, buf));
        putEntry(tv, pos, host0, OFLAG_COPIED, 0);
        touch(idx);
        idx++;
        continue;
      }
      // Allocate: a run of clusters that all need new host clusters.
      let runEnd = idx;
      while (runEnd + 1 <= lastIdx && this.needsAlloc(table, l2Off, runEnd + 1)) runEnd++;
      const count = runEnd - idx + 1;
      const hostFirst = this.hasDataFile ? -1 : await this.allocClusters(count);
      for (let k = 0; k < count; k++) {
        const i = idx + k;
        const cs0 = base + i * cs;
        const ws = Math.max(guest, cs0);
        const we = Math.min(guest + src.length, cs0 + cs);
        const host = this.hasDataFile ? cs0 : (hostFirst + k) * cs;
        const t = this.classify(table, l2Off, i, 0);
        const oldHost = this.hostOut;
        const p = i * this.l2EntryBytes;
        const ehi = tv.getUint32(p);
        const elo = tv.getUint32(p + 4);
        if (ws === cs0 && we === cs0 + cs) {
          dataWrites.push(this.writeData(host, src.subarray(ws - guest, we - guest)));
        } else {
          // Partial cluster: the rest comes from the old contents.
          const buf = new Uint8Array(cs);
          await this.oldContents(table, l2Off, i, cs0, t, oldHost, buf, ws - cs0, we - cs0);
          buf.set(src.subarray(ws - guest, we - guest), ws - cs0);
          dataWrites.push(this.writeData(host, buf));
        }
        if (t === ClusterType.Compressed) {
          const ref = compressedRef(ehi, elo, this.clusterBits);
          toFree.push([ref.offset, ref.length]);
        } else if (oldHost && !this.hasDataFile && oldHost !== host) {
          toFree.push([oldHost, cs]);
        }
        putEntry(tv, p, host, OFLAG_COPIED, 0);
        if (this.extendedL2) {
          // Fresh cluster written whole: every subcluster allocated.
          tv.setUint32(p + 8, 0);
          tv.setUint32(p + 12, 0xffffffff);
        }
        touch(i);
      }
      idx = runEnd + 1;
    }
    if (dataWrites.length === 1) await dataWrites[0];
    else if (dataWrites.length > 1) await Promise.all(dataWrites);
    if (changedLo >= 0) this.dirtyL2.add(l2Off);
    for (const f of toFree) this.pendingFrees.push(f);
  }

  /** True when guest cluster `idx` needs a new host cluster to be written. */
  private needsAlloc(table: Uint8Array, l2Off: number, idx: number): boolean {
    const t = this.classify(table, l2Off, idx, 0);
    const copied = (viewOf(table).getUint32(idx * this.l2EntryBytes) & OFLAG_COPIED) !== 0;
    if (this.extendedL2) return !(this.hostOut && copied && t !== ClusterType.Compressed);
    if (t === ClusterType.Normal || t === ClusterType.ZeroAlloc) return !copied;
    return true;
  }

  /**
   * Fills `buf` (one cluster) with the current contents of guest cluster
   * `idx`, except [skipFrom, skipTo) which the caller overwrites.
   */
  private async oldContents(table: Uint8Array, l2Off: number, idx: number, cStart: number, t: ClusterType, oldHost: number, buf: Uint8Array, skipFrom: number, skipTo: number): Promise<void> {
    if (this.extendedL2 || t === ClusterType.UnallocatedAlloc) {
      // Subclusters may differ: read the guest view of the cluster.
      const parts: Promise<void>[] = [];
      if (skipFrom > 0) parts.push(this.readClusterPart(table, l2Off, idx, cStart, buf, 0, skipFrom));
      if (skipTo < this.clusterSize) parts.push(this.readClusterPart(table, l2Off, idx, cStart, buf, skipTo, this.clusterSize));
      await Promise.all(parts);
      return;
    }
    switch (t) {
      case ClusterType.Normal:
        await this.readData(oldHost, buf);
        return;
      case ClusterType.Compressed:
        buf.set(await this.decompressed(table, l2Off, idx));
        return;
      case ClusterType.Unallocated: {
        if (this.backing) {
          const parts: Promise<void>[] = [];
          if (skipFrom > 0) parts.push(this.readBacking(cStart, buf.subarray(0, skipFrom)));
          if (skipTo < this.clusterSize) parts.push(this.readBacking(cStart + skipTo, buf.subarray(skipTo)));
          await Promise.all(parts);
        }
        return;
      }
      default:
        return; // zeros
    }
  }

  /** Reads guest bytes [from, to) of cluster `idx` (per subcluster) into `buf`. */
  private async readClusterPart(table: Uint8Array, l2Off: number, idx: number, cStart: number, buf: Uint8Array, from: number, to: number): Promise<void> {
    const scs = this.subclusterSize;
    let p = from;
    while (p < to) {
      const sc = Math.floor(p / scs);
      const n = Math.min(to - p, (sc + 1) * scs - p);
      const t = this.classify(table, l2Off, idx, sc);
      const host = this.hostOut;
      const d = buf.subarray(p, p + n);
      if (t === ClusterType.Normal) await this.readData(host + p, d);
      else if (t === ClusterType.Compressed) d.set((await this.decompressed(table, l2Off, idx)).subarray(p, p + n));
      else if (t === ClusterType.Unallocated || t === ClusterType.UnallocatedAlloc) await this.readBacking(cStart + p, d);
      else d.fill(0);
      p += n;
    }
  }

  /** Extended L2, host cluster owned: write touched subclusters in place and mark them allocated. */
  private async writeSubclusters(table: Uint8Array, l2Off: number, idx: number, cStart: number, host: number, wStart: number, part: Uint8Array, dataWrites: Promise<void>[]): Promise<void> {
    const scs = this.subclusterSize;
    const tv = viewOf(table);
    const p = idx * 16;
    let zero = tv.getUint32(p + 8);
    let alloc = tv.getUint32(p + 12);
    const from = wStart - cStart;
    const to = from + part.length;
    const scFirst = Math.floor(from / scs);
    const scLast = Math.floor((to - 1) / scs);
    // Subclusters not yet allocated need their untouched parts filled.
    const lo = scFirst * scs;
    const hi = (scLast + 1) * scs;
    const buf = new Uint8Array(hi - lo);
    for (let sc = scFirst; sc <= scLast; sc++) {
      if (alloc & (1 << sc)) {
        const s = sc * scs;
        const e = s + scs;
        const a = Math.max(s, from);
        const b = Math.min(e, to);
        if (a > s || b < e) {
          // Allocated but partly written: keep its old bytes around the write.
          if (a > s) await this.readData(host + s, buf.subarray(s - lo, a - lo));
          if (b < e) await this.readData(host + b, buf.subarray(b - lo, e - lo));
        }
      } else {
        const s = sc * scs;
        const e = s + scs;
        const a = Math.max(s, from);
        const b = Math.min(e, to);
        if (!(zero & (1 << sc))) {
          if (a > s) await this.readBacking(cStart + s, buf.subarray(s - lo, a - lo));
          if (b < e) await this.readBacking(cStart + b, buf.subarray(b - lo, e - lo));
        }
      }
    }
    buf.set(part, from - lo);
    dataWrites.push(this.writeData(host + lo, buf));
    for (let sc = scFirst; sc <= scLast; sc++) {
      alloc |= 1 << sc;
      zero &= ~(1 << sc);
    }
    tv.setUint32(p + 8, zero >>> 0);
    tv.setUint32(p + 12, alloc >>> 0);
  }

  private async writeData(host: number, data: Uint8Array): Promise<void> {
    this.guardData(host, data.length);
    if (this.cipher) {
      const enc = data.slice();
      this.cipher.encrypt(host, enc);
      await this.dataStore.write(host, enc);
      return;
    }
    await this.dataStore.write(host, data);
  }

  /** @internal Writes L2 entries [first, last] of a table to disk. */
  async writeL2Range(l2Off: number, table: Uint8Array, first: number, last: number): Promise<void> {
    const s = first * this.l2EntryBytes;
    const e = (last + 1) * this.l2EntryBytes;
    await this.store.write(l2Off + s, table.subarray(s, e));
  }

  /**
   * Writes one whole cluster compressed (spec: compressed clusters). The
   * cluster must be aligned; data that does not shrink is written normally.
   */
  async writeCompressed(offset: number, data: Uint8Array): Promise<void> {
    this.writable();
    const cs = this.clusterSize;
    if (offset % cs !== 0 || (data.length !== cs && offset + data.length !== this.header.size)) {
      throw new Qcow2UsageError("QCOW2_COMPRESSED_ALIGNMENT", "compressed writes must cover whole clusters");
    }
    if (this.hasDataFile) throw new Qcow2UsageError("QCOW2_COMPRESSED_DATA_FILE", "images with an external data file cannot hold compressed clusters");
    if (this.cipher) throw new Qcow2UsageError("QCOW2_COMPRESSED_ENCRYPTED", "encrypted images cannot hold compressed clusters");
    const full = data.length === cs ? data : (() => {
      const b = new Uint8Array(cs);
      b.set(data);
      return b;
    })();
    const packed = compressCluster(this.header.compressionType, full);
    if (!packed || packed.length > cs - 512) {
      await this.write(offset, data);
      return;
    }
    const release = await this.lock.exclusive();
    try {
      const l1i = Math.floor(offset / this.l2Coverage);
      const { offset: l2Off, table } = await this.writableL2(l1i);
      const idx = (offset - l1i * this.l2Coverage) / cs;
      const t = this.classify(table, l2Off, idx, 0);
      const oldHost = this.hostOut;
      const tv = viewOf(table);
      const p = idx * this.l2EntryBytes;
      const oldRef = t === ClusterType.Compressed ? compressedRef(tv.getUint32(p), tv.getUint32(p + 4), this.clusterBits) : undefined;
      // Pack compressed data densely: continue in the current cluster when it fits.
      let at: number;
      let pack = this.compressedCursor > 0 && this.compressedCursor + packed.length <= this.compressedEnd;
      if (pack) {
        // Sharing a host cluster needs room in its refcount.
        const c0 = Math.floor(this.compressedCursor / cs);
        const c1 = Math.floor((this.compressedCursor + packed.length - 1) / cs);
        for (let c = c0; c <= c1 && pack; c++) pack = (await this.getRefcount(c)) < maxRefcount(this.header.refcountOrder);
      }
      if (pack) {
        at = this.compressedCursor;
        // Each host cluster a compressed cluster touches holds one
        // reference for it; these clusters already hold one for earlier data.
        const firstC = Math.floor(at / cs);
        const lastC = Math.floor((at + packed.length - 1) / cs);
        await this.updateRefcounts(firstC, lastC - firstC + 1, 1);
      } else {
        at = -1;
        const cur = this.compressedCursor;
        if (cur > 0 && (await this.getRefcount(Math.floor(cur / cs))) < maxRefcount(this.header.refcountOrder)) {
          // Continue across the boundary when the next clusters follow on
          // the host, as QEMU packs compressed data.
          const n = Math.ceil((cur + packed.length - this.compressedEnd) / cs);
          const c = await this.allocClusters(n);
          if (c * cs === this.compressedEnd) {
            at = cur;
            await this.updateRefcounts(Math.floor(cur / cs), 1, 1);
            this.compressedEnd += n * cs;
          } else {
            await this.updateRefcounts(c, n, -1);
          }
        }
        if (at < 0) {
          const n = Math.ceil(packed.length / cs);
          const c = await this.allocClusters(n);
          at = c * cs;
          this.compressedEnd = at + n * cs;
        }
      }
      this.compressedCursor = at + packed.length;
      if (this.compressedCursor >= this.compressedEnd) this.compressedCursor = 0;
      await this.store.write(at, packed);
      const [ehi, elo] = encodeCompressed(at, packed.length, this.clusterBits);
      tv.setUint32(p, ehi);
      tv.setUint32(p + 4, elo);
      if (this.extendedL2) {
        tv.setUint32(p + 8, 0);
        tv.setUint32(p + 12, 0);
      }
      this.dirtyL2.add(l2Off);
      if (oldRef) this.pendingFrees.push([oldRef.offset, oldRef.length]);
      else if (oldHost && (t === ClusterType.Normal || t === ClusterType.ZeroAlloc || t === ClusterType.UnallocatedAlloc)) this.pendingFrees.push([oldHost, cs]);
      await this.trimCache();
    } finally {
      release();
    }
  }

  /** @inheritdoc */
  async discard(offset: number, length: number): Promise<void> {
    this.writable();
    checkRange(offset, length, this.header.size, "discard");
    const release = await this.lock.exclusive();
    try {
      await this.zeroOrDiscard(offset, length, true, true);
      await this.trimCache();
    } finally {
      release();
    }
  }

  /** @inheritdoc */
  async writeZeroes(offset: number, length: number, options: { unmap?: boolean } = {}): Promise<void> {
    this.writable();
    checkRange(offset, length, this.header.size, "write-zeroes");
    const release = await this.lock.exclusive();
    try {
      await this.zeroOrDiscard(offset, length, !!options.unmap, false);
      await this.trimCache();
    } finally {
      release();
    }
  }

  /**
   * Zeroes or discards. Whole clusters (whole subclusters with extended L2)
   * change their L2 entry; partial ones are written with zeros (write-zeroes)
   * or left alone (discard).
   */
  private async zeroOrDiscard(offset: number, length: number, unmap: boolean, discard: boolean): Promise<void> {
    const cs = this.clusterSize;
    const v2 = this.header.version < 3;
    // Version 2 has no zero flag: a discard would uncover the backing file.
    if (discard && v2 && this.backing) return;
    if (this.hasDataFile && this.dataFileRaw) {
      // The data file must stay a faithful raw image of the disk.
      const z = new Uint8Array(Math.min(length, 1 << 20));
      for (let p = 0; p < length; p += z.length) await this.dataStore.write(offset + p, z.subarray(0, Math.min(z.length, length - p)));
    }
    const gran = this.extendedL2 && !discard ? this.subclusterSize : cs;
    const end = offset + length;
    const zStart = Math.ceil(offset / gran) * gran;
    // The disk's last cluster may be partial: its end counts as aligned.
    const zEnd = end === this.header.size ? Math.ceil(end / gran) * gran : Math.floor(end / gran) * gran;
    if (zEnd <= zStart) {
      if (!discard && length > 0) await this.writeUnlocked(offset, new Uint8Array(length));
      return;
    }
    if (!discard) {
      if (offset < zStart) await this.writeUnlocked(offset, new Uint8Array(zStart - offset));
      if (zEnd < end) await this.writeUnlocked(zEnd, new Uint8Array(end - zEnd));
    }
    let g = zStart;
    while (g < zEnd) {
      const l1i = Math.floor(g / this.l2Coverage);
      const l2End = Math.min(zEnd, (l1i + 1) * this.l2Coverage);
      const cur = l1i < this.header.l1Size ? this.l1Offset(l1i) : 0;
      if (!cur && !this.backing) {
        g = l2End; // nothing allocated: reads as zeros already
        continue;
      }
      if (v2 && this.backing && !discard) {
        // No zero flag in version 2: write real zeros over the backing data.
        const chunk = new Uint8Array(Math.min(l2End - g, 1 << 20));
        for (let p = g; p < l2End; p += chunk.length) await this.writeUnlocked(p, chunk.subarray(0, Math.min(chunk.length, l2End - p)));
        g = l2End;
        continue;
      }
      const { offset: l2Off, table } = await this.writableL2(l1i);
      const tv = viewOf(table);
      const base = l1i * this.l2Coverage;
      const toFree: [number, number][] = [];
      let lo = -1;
      while (g < l2End) {
        const idx = Math.floor((g - base) / cs);
        const cStart = base + idx * cs;
        const p = idx * this.l2EntryBytes;
        const t0 = this.classify(table, l2Off, idx, 0);
        const host = this.hostOut;
        const ehi = tv.getUint32(p);
        const elo = tv.getUint32(p + 4);
        const copied = (ehi & OFLAG_COPIED) !== 0;
        const scEnd = Math.min(l2End, cStart + cs);
        if (this.extendedL2 && (g !== cStart || scEnd !== cStart + cs) && t0 !== ClusterType.Compressed) {
          // Some subclusters only.
          const s0 = (g - cStart) / this.subclusterSize;
          const s1 = Math.ceil((scEnd - cStart) / this.subclusterSize);
          let zero = tv.getUint32(p + 8);
          let alloc = tv.getUint32(p + 12);
          for (let sc = s0; sc < s1; sc++) {
            alloc &= ~(1 << sc);
            if (!discard || this.backing) zero |= 1 << sc;
            else zero &= ~(1 << sc);
          }
          tv.setUint32(p + 8, zero >>> 0);
          tv.setUint32(p + 12, alloc >>> 0);
          if (lo < 0) lo = idx;
          g = scEnd;
          continue;
        }
        if (this.extendedL2 && t0 === ClusterType.Compressed && (g !== cStart || scEnd !== cStart + cs)) {
          // Partial zeroing of a compressed cluster: rewrite it uncompressed.
          await this.writeUnlocked(g, new Uint8Array(scEnd - g));
          g = scEnd;
          continue;
        }
        const keepHost = !unmap && !discard && copied && host !== 0 && t0 !== ClusterType.Compressed && !v2;
        const plainZero = v2 ? false : discard ? !!this.backing : true;
        if (t0 === ClusterType.Compressed) {
          const ref = compressedRef(ehi, elo, this.clusterBits);
          toFree.push([ref.offset, ref.length]);
        } else if (host && !keepHost && !this.hasDataFile) {
          toFree.push([host, cs]);
        }
        if (this.extendedL2) {
          putEntry(tv, p, keepHost ? host : 0, keepHost ? OFLAG_COPIED : 0, 0);
          tv.setUint32(p + 8, plainZero || keepHost ? 0xffffffff : 0);
          tv.setUint32(p + 12, 0);
        } else if (keepHost) {
          putEntry(tv, p, host, OFLAG_COPIED, OFLAG_ZERO);
        } else {
          putEntry(tv, p, 0, 0, plainZero ? OFLAG_ZERO : 0);
        }
        if (lo < 0) lo = idx;
        g = scEnd;
      }
      if (lo >= 0) this.dirtyL2.add(l2Off);
      for (const f of toFree) this.pendingFrees.push(f);
    }
  }

  /** @inheritdoc */
  async flush(): Promise<void> {
    this.live();
    if (this.readOnly) return;
    const release = await this.lock.exclusive();
    try {
      await this.flushMetadata();
      await this.store.flush();
      if (this.dataStore !== this.store) await this.dataStore.flush();
    } finally {
      release();
    }
  }

  /** @inheritdoc */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      if (!this.readOnly) {
        const release = await this.lock.exclusive();
        try {
          await this.flushMetadata();
          await this.releaseReserve();
          await this.store.flush();
          if (this.dataStore !== this.store) await this.dataStore.flush();
          if (this.dirtyMarked) {
            this.dirtyMarked = false;
            await this.setDirty(false);
            await this.store.flush();
          }
        } finally {
          release();
        }
      }
    } finally {
      this.closed = true;
      await this.store.close();
      if (this.dataStore !== this.store) await this.dataStore.close();
      if (this.backing) await this.backing.close();
    }
  }

  /**
   * @internal Makes the active L1 table hold at least `entries` entries,
   * moving it to new clusters (header switched atomically, then the old
   * table freed).
   */
  async growL1(entries: number): Promise<void> {
    const h = this.header;
    if (entries <= h.l1Size) return;
    await this.flushMetadata();
    if (entries * 8 > MAX_L1_BYTES) throw new Qcow2UsageError("QCOW2_TOO_LARGE", `the L1 table would need ${entries} entries, more than ${MAX_L1_BYTES / 8}`);
    const cs = this.clusterSize;
    const clusters = Math.ceil((entries * 8) / cs);
    const first = await this.allocClusters(clusters);
    const table = new Uint8Array(clusters * cs);
    table.set(this.l1);
    const off = first * cs;
    this.addMetadata(off, clusters * cs);
    await this.store.write(off, table);
    await this.barrier();
    const hb = new Uint8Array(12);
    viewOf(hb).setUint32(0, entries);
    setU64(viewOf(hb), 4, off);
    await this.store.write(36, hb);
    await this.barrier();
    const oldOff = h.l1TableOffset;
    const oldBytes = h.l1Size * 8;
    h.l1Size = entries;
    h.l1TableOffset = off;
    this.l1 = table.subarray(0, entries * 8);
    this.l1View = viewOf(this.l1);
    if (oldBytes > 0) {
      this.dropMetadata(oldOff, oldBytes);
      await this.freeHostRange(oldOff, oldBytes);
    }
  }

  /** @internal Writes the virtual size field (header bytes 24-31). */
  async setVirtualSize(size: number): Promise<void> {
    const b = new Uint8Array(8);
    setU64(viewOf(b), 0, size);
    await this.store.write(24, b);
    this.header.size = size;
  }

  // ------------------------------------------------------------ mapping

  /**
   * Describes how the guest range is stored, as `qemu-img map` does:
   * consecutive extents with the same state are merged.
   */
  async map(offset = 0, length = this.header.size - offset): Promise<MapExtent[]> {
    this.live();
    const release = await this.lock.shared();
    const out: MapExtent[] = [];
    try {
      const push = (e: MapExtent) => {
        const last = out[out.length - 1];
        if (last && last.start + last.length === e.start && last.data === e.data && last.zero === e.zero && last.present === e.present && last.compressed === e.compressed && last.depth === e.depth && (last.offset === undefined ? e.offset === undefined : e.offset === last.offset + last.length)) {
          last.length += e.length;
        } else out.push(e);
      };
      const cs = this.clusterSize;
      const scs = this.subclusterSize;
      let g = offset;
      const end = offset + length;
      while (g < end) {
        const l1i = Math.floor(g / this.l2Coverage);
        const l2End = Math.min(end, (l1i + 1) * this.l2Coverage);
        const l2Off = l1i < this.header.l1Size ? this.l1Offset(l1i) : 0;
        if (!l2Off) {
          await this.mapHole(g, l2End - g, push);
          g = l2End;
          continue;
        }
        const t = await this.loadL2(l2Off, l1i);
        while (g < l2End) {
          const idx = Math.floor((g - l1i * this.l2Coverage) / cs);
          const inC = g - l1i * this.l2Coverage - idx * cs;
          const sc = this.extendedL2 ? Math.floor(inC / scs) : 0;
          const n = Math.min(l2End - g, (sc + 1) * scs - inC);
          const type = this.classify(t, l2Off, idx, sc);
          if (type === ClusterType.Normal) push({ start: g, length: n, data: true, zero: false, present: true, compressed: false, offset: this.hostOut + inC, depth: 0 });
          else if (type === ClusterType.Compressed) push({ start: g, length: n, data: true, zero: false, present: true, compressed: true, depth: 0 });
          else if (type === ClusterType.ZeroPlain || type === ClusterType.ZeroAlloc) push({ start: g, length: n, data: false, zero: true, present: true, compressed: false, depth: 0 });
          else await this.mapHole(g, n, push);
          g += n;
        }
      }
    } finally {
      release();
    }
    return out;
  }

  private async mapHole(g: number, n: number, push: (e: MapExtent) => void): Promise<void> {
    const b = this.backing;
    if (b && g < b.size) {
      const inB = Math.min(n, b.size - g);
      if (b instanceof Qcow2Image) {
        for (const e of await b.map(g, inB)) push({ ...e, depth: e.depth + 1, offset: undefined });
      } else {
        push({ start: g, length: inB, data: true, zero: false, present: true, compressed: false, depth: 1 });
      }
      if (inB < n) push({ start: g + inB, length: n - inB, data: false, zero: true, present: false, compressed: false, depth: 0 });
      return;
    }
    push({ start: g, length: n, data: false, zero: true, present: false, compressed: false, depth: 0 });
  }
}
