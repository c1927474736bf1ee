// Whole-image operations behind qemu-img resize, rebase, commit and amend.
import { viewOf } from "./bytes.js";
import { Qcow2UsageError } from "./errors.js";
import { featureSet, INCOMPAT, MAX_BACKING_NAME, serializeHeader } from "./header.js";
import { compressedRef, entryOffset, OFLAG_COMPRESSED, OFLAG_ZERO } from "./l2-entry.js";
import type { Qcow2Image } from "./qcow2-image.js";
import { readSnapshotTable } from "./snapshots.js";

/**
 * Changes the virtual size. Growing only extends the L1 table. Shrinking
 * (which must be asked for) releases every cluster past the new end.
 */
export async function resizeQcow2(img: Qcow2Image, size: number, options: { shrink?: boolean } = {}): Promise<void> {
  if (img.readOnly) throw new Qcow2UsageError("QCOW2_READ_ONLY", "image is read-only");
  if (!Number.isSafeInteger(size) || size < 0 || size % 512 !== 0) throw new Qcow2UsageError("QCOW2_BAD_SIZE", `invalid size ${size} (must be a multiple of 512)`);
  const old = img.size;
  if (size === old) return;
  if (size < old) {
    if (!options.shrink) throw new Qcow2UsageError("QCOW2_SHRINK", "shrinking would lose data; pass shrink (qemu-img resize --shrink) to confirm");
    if (img.header.nbSnapshots > 0) throw new Qcow2UsageError("QCOW2_SHRINK_SNAPSHOTS", "cannot shrink an image that has internal snapshots");
    // Release whole clusters past the new end; the partial cluster at the
    // end is zeroed past the new size so growing again reads zeros.
    const cs = img.clusterSize;
    const cut = Math.ceil(size / cs) * cs;
    if (cut < old) await img.discard(cut, old - cut);
    if (cut > size) await img.writeZeroes(size, Math.min(cut, old) - size);
    const release = await img.lock.exclusive();
    try {
      await img.flushMetadata();
      await img.setVirtualSize(size);
      // L2 tables wholly past the end are freed.
      const firstFree = Math.ceil(size / img.l2Coverage);
      for (let i = firstFree; i < img.header.l1Size; i++) {
        const l2 = img.l1Offset(i);
        if (!l2) continue;
        await img.setL1(i, 0, false);
        await img.barrier();
        await img.freeHostRange(l2, cs);
      }
    } finally {
      release();
    }
    return;
  }
  const release = await img.lock.exclusive();
  try {
    await img.growL1(Math.ceil(size / img.l2Coverage));
    await img.setVirtualSize(size);
  } finally {
    release();
  }
}

/**
 * Drops every mapping of the active image (qemu-img commit empties the top
 * image so the backing file shows through). Snapshots keep theirs.
 */
export async function emptyImage(img: Qcow2Image): Promise<void> {
  if (img.readOnly) throw new Qcow2UsageError("QCOW2_READ_ONLY", "image is read-only");
  const cs = img.clusterSize;
  const release = await img.lock.exclusive();
  try {
    await img.flushMetadata();
    for (let i = 0; i < img.header.l1Size; i++) {
      const l2 = img.l1Offset(i);
      if (!l2) continue;
      const t = (await img.loadL2(l2, i)).slice();
      await img.setL1(i, 0, false);
      await img.barrier();
      if (!img.hasDataFile) {
        const tv = viewOf(t);
        for (let j = 0; j < img.l2Entries; j++) {
          const p = j * img.l2EntryBytes;
          const hi = tv.getUint32(p);
          const lo = tv.getUint32(p + 4);
          if (hi & OFLAG_COMPRESSED) {
            const r = compressedRef(hi, lo, img.clusterBits);
            await img.freeHostRange(r.offset, r.length);
            continue;
          }
          const host = entryOffset(hi, lo);
          if (host > 0) await img.freeHostRange(host, cs);
        }
      }
      await img.freeHostRange(l2, cs);
    }
  } finally {
    release();
  }
}

/** Rewrites the header with a new backing file name and format (qemu-img rebase -u). */
export async function setBackingFile(img: Qcow2Image, name: string | undefined, format: string | undefined): Promise<void> {
  if (img.readOnly) throw new Qcow2UsageError("QCOW2_READ_ONLY", "image is read-only");
  if (name && new TextEncoder().encode(name).length > MAX_BACKING_NAME) throw new Qcow2UsageError("QCOW2_BAD_OPTION", "backing file name is too long");
  const release = await img.lock.exclusive();
  try {
    const h = img.header;
    const saved = { backingFile: h.backingFile, backingFormat: h.backingFormat };
    h.backingFile = name || undefined;
    h.backingFormat = name ? format : undefined;
    try {
      serializeHeader({ ...h }); // fits in the first cluster?
    } catch (e) {
      Object.assign(h, saved);
      throw e;
    }
    await img.writeHeader();
  } finally {
    release();
  }
}

/** Options of {@link amendQcow2}, named after qemu-img amend's -o options. */
export interface AmendOptions {
  /** "0.10" (version 2) or "1.1" (version 3). */
  compat?: "0.10" | "1.1";
  /** Turn lazy refcounts on or off. */
  lazyRefcounts?: boolean;
  /** New refcount width (the refcount structure is rebuilt). */
  refcountBits?: number;
  /** New backing file name ("" removes it). */
  backingFile?: string;
  /** New backing file format. */
  backingFormat?: string;
  /** Keep the external data file a raw image (autoclear bit 1). */
  dataFileRaw?: boolean;
}

/** Changes image options in place (qemu-img amend). */
export async function amendQcow2(img: Qcow2Image, o: AmendOptions): Promise<void> {
  if (img.readOnly) throw new Qcow2UsageError("QCOW2_READ_ONLY", "image is read-only");
  const h = img.header;
  if (o.compat === "1.1" && h.version === 2) {
    h.version = 3;
    h.headerLength = 112;
    await lockedHeader(img);
  }
  if (o.lazyRefcounts !== undefined) {
    if (h.version < 3 && o.lazyRefcounts) throw new Qcow2UsageError("QCOW2_BAD_OPTION", "lazy refcounts need compat=1.1");
    const release = await img.lock.exclusive();
    try {
      await img.setLazyRefcounts(o.lazyRefcounts);
    } finally {
      release();
    }
  }
  if (o.refcountBits !== undefined) {
    const order = Math.log2(o.refcountBits);
    if (!Number.isInteger(order) || order < 0 || order > 6) throw new Qcow2UsageError("QCOW2_BAD_OPTION", `refcount_bits ${o.refcountBits} must be a power of two up to 64`);
    if (h.version < 3 && order !== 4) throw new Qcow2UsageError("QCOW2_BAD_OPTION", "compat=0.10 images have 16-bit refcounts");
    if (order !== h.refcountOrder) {
      const { changeRefcountOrder } = await import("./check.js");
      await changeRefcountOrder(img, order);
    }
  }
  if (o.compat === "0.10" && h.version === 3) await downgradeToV2(img);
  if (o.backingFile !== undefined || o.backingFormat !== undefined) {
    await setBackingFile(img, o.backingFile ?? h.backingFile, o.backingFormat ?? h.backingFormat);
  }
  if (o.dataFileRaw !== undefined) {
    if (!featureSet(h.incompatible, INCOMPAT.externalDataFile)) throw new Qcow2UsageError("QCOW2_BAD_OPTION", "data_file_raw needs an external data file");
    const bit = 2n;
    h.autoclear = o.dataFileRaw ? h.autoclear | bit : h.autoclear & ~bit;
    await lockedHeader(img);
  }
}

async function lockedHeader(img: Qcow2Image): Promise<void> {
  const release = await img.lock.exclusive();
  try {
    await img.writeHeader();
  } finally {
    release();
  }
}

/** Version 3 to 2: only when nothing needs version 3 (zero clusters are written out as data would be too; refused). */
async function downgradeToV2(img: Qcow2Image): Promise<void> {
  const h = img.header;
  if (h.incompatible !== 0n) throw new Qcow2UsageError("QCOW2_AMEND", "cannot downgrade: the image uses incompatible features (extended L2, zstd, data file, or it is dirty)");
  if (h.refcountOrder !== 4) throw new Qcow2UsageError("QCOW2_AMEND", "cannot downgrade: version 2 needs 16-bit refcounts");
  if (h.nbSnapshots > 0) {
    const snaps = await readSnapshotTable(img);
    if (snaps.list.some((s) => s.diskSize !== h.size)) throw new Qcow2UsageError("QCOW2_AMEND", "cannot downgrade: a snapshot has a different disk size");
  }
  // Zero flags have no meaning in version 2: refuse if any are set.
  for (let i = 0; i < h.l1Size; i++) {
    const l2 = img.l1Offset(i);
    if (!l2) continue;
    const tv = viewOf(await img.loadL2(l2, i));
    for (let j = 0; j < img.l2Entries; j++) {
      if (!(tv.getUint32(j * 8) & OFLAG_COMPRESSED) && tv.getUint32(j * 8 + 4) & OFLAG_ZERO) throw new Qcow2UsageError("QCOW2_AMEND", "cannot downgrade: the image has zero clusters");
    }
  }
  h.version = 2;
  h.compatible = 0n;
  h.autoclear = 0n;
  h.headerLength = 72;
  await lockedHeader(img);
}
