// Internal snapshots (spec: "Snapshots"): the snapshot table, and create,
// apply, delete. Each snapshot owns a copy of the L1 table; clusters are
// shared by reference counts, and the active image copies on write. The VM
// state of a snapshot lives in its own L1 tree, past the end of the disk
// (at the first L2 boundary after it), where a snapshot package can save and
// load machine state.
import { getU64, setU64, TWO32, viewOf } from "./bytes.js";
import { Qcow2FormatError, Qcow2UsageError } from "./errors.js";
import { MAX_SNAPSHOTS } from "./header.js";
import { compressedRef, entryOffset, l1Reserved, OFLAG_COMPRESSED, OFLAG_COPIED } from "./l2-entry.js";
import type { Qcow2Image } from "./qcow2-image.js";
import { maxRefcount } from "./refcounts.js";

/** One internal snapshot, as listed by `qemu-img snapshot -l`. */
export interface SnapshotInfo {
  /** Unique id string (QEMU numbers them "1", "2", ...). */
  id: string;
  /** Name. */
  name: string;
  /** Offset of this snapshot's L1 table. */
  l1TableOffset: number;
  /** Entries in this snapshot's L1 table. */
  l1Size: number;
  /** Creation time, seconds since the epoch. */
  dateSec: number;
  /** Creation time, nanoseconds part. */
  dateNsec: number;
  /** Guest clock at creation, nanoseconds. */
  vmClockNsec: number;
  /** Bytes of saved VM state (0 for a disk-only snapshot). */
  vmStateSize: number;
  /** Virtual disk size when the snapshot was taken. */
  diskSize: number;
  /** Instructions executed (record/replay), or -1 when unknown. */
  icount: number;
  /** Extra data bytes this library does not interpret (kept). */
  unknownExtra: Uint8Array;
}

/** Limit on a snapshot table's size (as QEMU: 64 MiB). */
export const MAX_SNAPSHOT_TABLE = 64 << 20;

const dec = new TextDecoder();
const enc = new TextEncoder();

/** @internal Reads and validates the snapshot table. */
export async function readSnapshotTable(img: Qcow2Image): Promise<{ list: SnapshotInfo[]; tableBytes: number }> {
  const h = img.header;
  const list: SnapshotInfo[] = [];
  if (h.nbSnapshots === 0) return { list, tableBytes: 0 };
  const fileSize = img.store.size;
  if (h.snapshotsOffset === 0 || h.snapshotsOffset >= fileSize) throw new Qcow2FormatError("QCOW2_SNAPSHOT_TABLE_PAST_EOF", `snapshot table at 0x${h.snapshotsOffset.toString(16)} is past the end of the ${fileSize}-byte file`, { offset: 64, field: "snapshots_offset" });
  // Read incrementally, never more than the file or the table limit holds.
  const limit = Math.min(fileSize - h.snapshotsOffset, MAX_SNAPSHOT_TABLE);
  let buf = new Uint8Array(Math.min(limit, 64 * 1024));
  await img.store.read(h.snapshotsOffset, buf);
  let pos = 0;
  const need = async (n: number, field: string) => {
    if (pos + n > limit) throw new Qcow2FormatError("QCOW2_SNAPSHOT_TABLE_PAST_EOF", `snapshot table runs past the end of the file (or the ${MAX_SNAPSHOT_TABLE}-byte limit)`, { offset: h.snapshotsOffset + pos, field });
    if (pos + n > buf.length) {
      const next = new Uint8Array(Math.min(limit, Math.max(buf.length * 2, pos + n)));
      await img.store.read(h.snapshotsOffset, next);
      buf = next;
    }
  };
  const ids = new Set<string>();
  for (let i = 0; i < h.nbSnapshots; i++) {
    const at = h.snapshotsOffset + pos;
    await need(40, `snapshot[${i}]`);
    let v = viewOf(buf);
    const l1TableOffset = getU64(v, pos, "snapshot.l1_table_offset", at);
    const l1Size = v.getUint32(pos + 8);
    const idSize = v.getUint16(pos + 12);
    const nameSize = v.getUint16(pos + 14);
    const dateSec = v.getUint32(pos + 16);
    const dateNsec = v.getUint32(pos + 20);
    const clockHi = v.getUint32(pos + 24);
    const vmClockNsec = clockHi * TWO32 + v.getUint32(pos + 28);
    let vmStateSize = v.getUint32(pos + 32);
    const extraSize = v.getUint32(pos + 36);
    if (extraSize > 1024) throw new Qcow2FormatError("QCOW2_BAD_SNAPSHOT", `snapshot ${i} has ${extraSize} bytes of extra data (limit 1024)`, { offset: at + 36, field: "extra_data_size" });
    if (h.version >= 3 && extraSize < 16) throw new Qcow2FormatError("QCOW2_BAD_SNAPSHOT", `snapshot ${i} extra data is ${extraSize} bytes; version 3 needs 16`, { offset: at + 36, field: "extra_data_size" });
    if (l1TableOffset % img.clusterSize !== 0) throw new Qcow2FormatError("QCOW2_BAD_SNAPSHOT", `snapshot ${i} L1 table offset is not cluster aligned`, { offset: at, field: "snapshot.l1_table_offset" });
    if (l1Size * 8 > 32 << 20) throw new Qcow2FormatError("QCOW2_BAD_SNAPSHOT", `snapshot ${i} L1 size ${l1Size} is too large`, { offset: at + 8, field: "snapshot.l1_size" });
    if (l1Size > 0 && l1TableOffset + l1Size * 8 > fileSize) throw new Qcow2FormatError("QCOW2_BAD_SNAPSHOT", `snapshot ${i} L1 table runs past the end of the file`, { offset: at, field: "snapshot.l1_table_offset" });
    await need(40 + extraSize + idSize + nameSize, `snapshot[${i}]`);
    v = viewOf(buf);
    let diskSize = h.size;
    let icount = -1;
    const ex = pos + 40;
    if (extraSize >= 8) {
      const large = getU64(v, ex, "snapshot.vm_state_size_large", at + 40);
      vmStateSize = large;
    }
    if (extraSize >= 16) diskSize = getU64(v, ex + 8, "snapshot.disk_size", at + 48);
    if (extraSize >= 24) {
      const hi = v.getUint32(ex + 16);
      icount = hi >= 0x80000000 ? -1 : hi * TWO32 + v.getUint32(ex + 20);
    }
    const unknownExtra = extraSize > 24 ? buf.slice(ex + 24, ex + extraSize) : new Uint8Array(0);
    const id = dec.decode(buf.subarray(ex + extraSize, ex + extraSize + idSize));
    const name = dec.decode(buf.subarray(ex + extraSize + idSize, ex + extraSize + idSize + nameSize));
    if (ids.has(id)) throw new Qcow2FormatError("QCOW2_BAD_SNAPSHOT", `two snapshots have id '${id}'`, { offset: at, field: "snapshot.id_str" });
    ids.add(id);
    list.push({ id, name, l1TableOffset, l1Size, dateSec, dateNsec, vmClockNsec, vmStateSize, diskSize, icount, unknownExtra });
    pos += 40 + extraSize + idSize + nameSize;
    pos = (pos + 7) & ~7;
  }
  return { list, tableBytes: pos };
}

function serializeTable(list: SnapshotInfo[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const s of list) {
    const id = enc.encode(s.id);
    const name = enc.encode(s.name);
    const extra = 24 + s.unknownExtra.length;
    const len = (40 + extra + id.length + name.length + 7) & ~7;
    const b = new Uint8Array(len);
    const v = viewOf(b);
    setU64(v, 0, s.l1TableOffset);
    v.setUint32(8, s.l1Size);
    v.setUint16(12, id.length);
    v.setUint16(14, name.length);
    v.setUint32(16, s.dateSec);
    v.setUint32(20, s.dateNsec);
    setU64(v, 24, s.vmClockNsec);
    v.setUint32(32, Math.min(s.vmStateSize, 0xffffffff));
    v.setUint32(36, extra);
    setU64(v, 40, s.vmStateSize);
    setU64(v, 48, s.diskSize);
    if (s.icount >= 0) setU64(v, 56, s.icount);
    else {
      v.setUint32(56, 0xffffffff);
      v.setUint32(60, 0xffffffff);
    }
    b.set(s.unknownExtra, 64);
    b.set(id, 40 + extra);
    b.set(name, 40 + extra + id.length);
    parts.push(b);
  }
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let p = 0;
  for (const x of parts) {
    out.set(x, p);
    p += x.length;
  }
  return out;
}

/** Writes a new snapshot table, switches the header to it, frees the old one. */
async function writeTable(img: Qcow2Image, list: SnapshotInfo[]): Promise<void> {
  const h = img.header;
  const cs = img.clusterSize;
  const bytes = serializeTable(list);
  if (bytes.length > MAX_SNAPSHOT_TABLE) throw new Qcow2UsageError("QCOW2_TOO_MANY_SNAPSHOTS", "the snapshot table would exceed 64 MiB");
  let off = 0;
  if (bytes.length > 0) {
    const clusters = Math.ceil(bytes.length / cs);
    off = (await img.allocClusters(clusters)) * cs;
    img.noteMetadata(off, clusters * cs);
    await img.store.write(off, bytes);
    await img.barrier();
  }
  const oldOff = h.snapshotsOffset;
  const oldBytes = h.nbSnapshots > 0 ? (await readSnapshotTable(img)).tableBytes : 0;
  const hb = new Uint8Array(12);
  viewOf(hb).setUint32(0, list.length);
  setU64(viewOf(hb), 4, off);
  await img.store.write(60, hb);
  await img.barrier();
  h.nbSnapshots = list.length;
  h.snapshotsOffset = off;
  if (oldBytes > 0) {
    img.dropMetadata(oldOff, oldBytes);
    await img.freeHostRange(oldOff, oldBytes);
  }
}

/**
 * Adds `delta` to the refcount of every L2 table and data cluster the L1
 * table `l1` references (once per reference), batched per cluster.
 */
async function adjustTree(img: Qcow2Image, l1: Uint8Array, l1Offset: number, delta: number): Promise<void> {
  const cs = img.clusterSize;
  const counts = new Map<number, number>();
  const add = (c: number) => counts.set(c, (counts.get(c) ?? 0) + delta);
  const lv = viewOf(l1);
  for (let i = 0; i < l1.length / 8; i++) {
    const hi = lv.getUint32(i * 8);
    const lo = lv.getUint32(i * 8 + 4);
    const l2 = entryOffset(hi, lo);
    if (!l2) continue;
    if (l1Reserved(hi, lo) || l2 < 0 || l2 % cs !== 0) throw new Qcow2FormatError("QCOW2_BAD_L1_ENTRY", `L1 entry ${i} is invalid`, { offset: l1Offset + i * 8, field: `l1_table[${i}]` });
    add(l2 / cs);
    if (img.hasDataFile) continue;
    const t = await img.loadL2(l2);
    const tv = viewOf(t);
    for (let j = 0; j < img.l2Entries; j++) {
      const p = j * img.l2EntryBytes;
      const ehi = tv.getUint32(p);
      const elo = tv.getUint32(p + 4);
      if (ehi & OFLAG_COMPRESSED) {
        const r = compressedRef(ehi, elo, img.clusterBits);
        for (let c = Math.floor(r.offset / cs); c <= Math.floor((r.offset + r.length - 1) / cs); c++) add(c);
        continue;
      }
      const host = entryOffset(ehi, elo);
      if (host > 0) add(host / cs);
    }
  }
  const sorted = [...counts.keys()].sort((a, b) => a - b);
  // Refuse before changing anything if a refcount would overflow.
  const max = maxRefcount(img.header.refcountOrder);
  for (const c of sorted) {
    const next = (await img.getRefcount(c)) + counts.get(c)!;
    if (next > max) throw new Qcow2UsageError("QCOW2_REFCOUNT_OVERFLOW", `cluster ${c} would need a refcount of ${next}; ${1 << img.header.refcountOrder}-bit refcounts hold at most ${max} (amend refcount_bits)`);
  }
  for (const c of sorted) await img.updateRefcounts(c, 1, counts.get(c)!);
}

/** Sets the COPIED flags of the active L1 and L2 tables from the refcounts (spec: bit 63). */
async function syncCopied(img: Qcow2Image): Promise<void> {
  const cs = img.clusterSize;
  for (let i = 0; i < img.header.l1Size; i++) {
    const l2 = img.l1Offset(i);
    if (!l2) continue;
    const one = (await img.getRefcount(l2 / cs)) === 1;
    if (one !== img.l1Copied(i)) await img.setL1(i, l2, one);
    if (img.hasDataFile) continue;
    const t = await img.loadL2(l2, i);
    const tv = viewOf(t);
    let lo = -1;
    let hi = -1;
    for (let j = 0; j < img.l2Entries; j++) {
      const p = j * img.l2EntryBytes;
      const ehi = tv.getUint32(p);
      if (ehi & OFLAG_COMPRESSED) continue;
      const host = entryOffset(ehi, tv.getUint32(p + 4));
      if (host <= 0) continue;
      const r1 = (await img.getRefcount(host / cs)) === 1;
      if (r1 !== ((ehi & OFLAG_COPIED) !== 0)) {
        tv.setUint32(p, r1 ? (ehi | OFLAG_COPIED) >>> 0 : (ehi & ~OFLAG_COPIED) >>> 0);
        if (lo < 0) lo = j;
        hi = j;
      }
    }
    // Only entries that changed are written; they are written only when the
    // table is not shared (a shared table has no COPIED entries to change).
    if (lo >= 0) await img.writeL2Range(l2, t, lo, hi);
  }
}

async function markBusy(img: Qcow2Image): Promise<void> {
  if (img.header.version >= 3 && !img.lazyRefcounts) await img.setDirty(true);
}

async function markDone(img: Qcow2Image): Promise<void> {
  if (img.header.version >= 3 && !img.lazyRefcounts) await img.setDirty(false);
}

function findSnapshot(list: SnapshotInfo[], idOrName: string): number {
  let i = list.findIndex((s) => s.id === idOrName);
  if (i < 0) i = list.findIndex((s) => s.name === idOrName);
  if (i < 0) throw new Qcow2UsageError("QCOW2_NO_SNAPSHOT", `no snapshot with id or name '${idOrName}'`);
  return i;
}

/** Offset in the guest address space where VM state starts (first L2 boundary at or after the disk's end). */
export function vmStateOffset(img: Qcow2Image): number {
  return Math.ceil(img.size / img.l2Coverage) * img.l2Coverage;
}

/** Lists the internal snapshots. */
export async function listSnapshots(img: Qcow2Image): Promise<SnapshotInfo[]> {
  const release = await img.lock.shared();
  try {
    return (await readSnapshotTable(img)).list;
  } finally {
    release();
  }
}

/**
 * Writes VM state for the next snapshot into the active image, past the
 * disk's end (QEMU's layout). {@link createSnapshot} captures it and then
 * drops it from the active image.
 */
export async function writeVmState(img: Qcow2Image, position: number, data: Uint8Array): Promise<void> {
  if (img.readOnly) throw new Qcow2UsageError("QCOW2_READ_ONLY", "image is read-only");
  const release = await img.lock.exclusive();
  try {
    const base = vmStateOffset(img);
    const need = Math.ceil((base + position + data.length) / img.l2Coverage);
    if (need > img.header.l1Size) await img.growL1(need);
    await img.writeUnlocked(base + position, data);
  } finally {
    release();
  }
}

/** Reads a snapshot's saved VM state. */
export async function readVmState(img: Qcow2Image, idOrName: string, position: number, dest: Uint8Array): Promise<void> {
  const release = await img.lock.exclusive();
  try {
    const list = (await readSnapshotTable(img)).list;
    const s = list[findSnapshot(list, idOrName)];
    if (position < 0 || position + dest.length > s.vmStateSize) throw new Qcow2UsageError("QCOW2_OUT_OF_RANGE", `VM state read past its ${s.vmStateSize} bytes`);
    const l1 = new Uint8Array(s.l1Size * 8);
    await img.store.read(s.l1TableOffset, l1);
    const base = Math.ceil(s.diskSize / img.l2Coverage) * img.l2Coverage;
    // Read through the snapshot's L1 table in place of the active one.
    const saved = { l1: img.l1, view: img.l1View, size: img.header.l1Size, off: img.header.l1TableOffset };
    img.l1 = l1;
    img.l1View = viewOf(l1);
    img.header.l1Size = s.l1Size;
    img.header.l1TableOffset = s.l1TableOffset;
    try {
      await img.readUnlocked(base + position, dest);
    } finally {
      img.l1 = saved.l1;
      img.l1View = saved.view;
      img.header.l1Size = saved.size;
      img.header.l1TableOffset = saved.off;
    }
  } finally {
    release();
  }
}

/** Options of {@link createSnapshot}. */
export interface CreateSnapshotOptions {
  /** Name (required, need not be unique). */
  name: string;
  /** Id (default: one more than the largest numeric id). */
  id?: string;
  /** Bytes of VM state written with {@link writeVmState} to capture (default 0). */
  vmStateSize?: number;
  /** Guest clock in nanoseconds (default 0). */
  vmClockNsec?: number;
  /** Creation time in milliseconds since the epoch (default now). */
  dateMs?: number;
  /** Instructions executed, for record/replay (default unknown). */
  icount?: number;
}

/** Creates an internal snapshot of the current disk state; returns it. */
export async function createSnapshot(img: Qcow2Image, o: CreateSnapshotOptions): Promise<SnapshotInfo> {
  if (img.readOnly) throw new Qcow2UsageError("QCOW2_READ_ONLY", "image is read-only");
  if (img.hasDataFile) throw new Qcow2UsageError("QCOW2_SNAPSHOT_DATA_FILE", "internal snapshots are not possible with an external data file");
  const release = await img.lock.exclusive();
  try {
    await img.flushMetadata();
    const list = (await readSnapshotTable(img)).list;
    if (list.length >= MAX_SNAPSHOTS) throw new Qcow2UsageError("QCOW2_TOO_MANY_SNAPSHOTS", "too many snapshots");
    const id = o.id ?? String(list.reduce((m, s) => Math.max(m, Number(s.id) || 0), 0) + 1);
    if (list.some((s) => s.id === id)) throw new Qcow2UsageError("QCOW2_SNAPSHOT_EXISTS", `a snapshot with id '${id}' exists`);
    const cs = img.clusterSize;
    const h = img.header;
    // Refcounts and COPIED flags cannot change together: a crash in between
    // leaves flags that disagree with refcounts. The dirty bit makes the
    // next read-write open rebuild them (spec: incompatible bit 0).
    // 1. Count the snapshot's references (refused before any change if a
    //    refcount would overflow), fix the COPIED flags, save its L1 copy.
    const l1Copy = img.l1.slice();
    const cv = viewOf(l1Copy);
    for (let i = 0; i < h.l1Size; i++) cv.setUint32(i * 8, cv.getUint32(i * 8) & ~OFLAG_COPIED);
    await markBusy(img);
    try {
      await adjustTree(img, img.l1, h.l1TableOffset, 1);
    } catch (e) {
      if (e instanceof Qcow2UsageError) await markDone(img);
      throw e;
    }
    await syncCopied(img);
    let l1Off = 0;
    if (h.l1Size > 0) {
      const clusters = Math.ceil((h.l1Size * 8) / cs);
      l1Off = (await img.allocClusters(clusters)) * cs;
      img.noteMetadata(l1Off, clusters * cs);
      const padded = new Uint8Array(clusters * cs);
      padded.set(l1Copy);
      await img.store.write(l1Off, padded);
    }
    await img.barrier();
    const now = o.dateMs ?? Date.now();
    const info: SnapshotInfo = {
      id,
      name: o.name,
      l1TableOffset: l1Off,
      l1Size: h.l1Size,
      dateSec: Math.floor(now / 1000),
      dateNsec: (now % 1000) * 1e6,
      vmClockNsec: o.vmClockNsec ?? 0,
      vmStateSize: o.vmStateSize ?? 0,
      diskSize: h.size,
      icount: o.icount ?? -1,
      unknownExtra: new Uint8Array(0),
    };
    await writeTable(img, [...list, info]);
    // The VM state is not needed in the active image any more.
    if (info.vmStateSize > 0) {
      const base = vmStateOffset(img);
      const len = Math.ceil(info.vmStateSize / cs) * cs;
      await discardRange(img, base, len);
    }
    await markDone(img);
    return info;
  } finally {
    release();
  }
}

async function discardRange(img: Qcow2Image, offset: number, length: number): Promise<void> {
  // Reuse the public path without its range check (VM state is past the disk end).
  const anyImg = img as unknown as { zeroOrDiscard(o: number, l: number, unmap: boolean, discard: boolean): Promise<void> };
  const savedSize = img.header.size;
  img.header.size = Math.max(savedSize, offset + length);
  try {
    await anyImg.zeroOrDiscard(offset, length, true, true);
  } finally {
    img.header.size = savedSize;
  }
}

/** Reverts the disk to a snapshot (qemu-img snapshot -a). */
export async function applySnapshot(img: Qcow2Image, idOrName: string): Promise<void> {
  if (img.readOnly) throw new Qcow2UsageError("QCOW2_READ_ONLY", "image is read-only");
  const release = await img.lock.exclusive();
  try {
    await img.flushMetadata();
    const list = (await readSnapshotTable(img)).list;
    const s = list[findSnapshot(list, idOrName)];
    const h = img.header;
    await markBusy(img);
    const l1 = new Uint8Array(s.l1Size * 8);
    await img.store.read(s.l1TableOffset, l1);
    if (s.l1Size > h.l1Size) await img.growL1(s.l1Size);
    // New references first, then switch, then drop the old ones.
    await adjustTree(img, l1, s.l1TableOffset, 1);
    await img.barrier();
    const old = img.l1.slice();
    const next = new Uint8Array(h.l1Size * 8);
    next.set(l1);
    await img.store.write(h.l1TableOffset, next);
    img.l1.set(next);
    if (s.diskSize !== h.size) await img.setVirtualSize(s.diskSize);
    await img.barrier();
    img.dropCaches();
    await adjustTree(img, old, h.l1TableOffset, -1);
    await syncCopied(img);
    await markDone(img);
  } finally {
    release();
  }
}

/** Deletes a snapshot (qemu-img snapshot -d). */
export async function deleteSnapshot(img: Qcow2Image, idOrName: string): Promise<void> {
  if (img.readOnly) throw new Qcow2UsageError("QCOW2_READ_ONLY", "image is read-only");
  const release = await img.lock.exclusive();
  try {
    await img.flushMetadata();
    const list = (await readSnapshotTable(img)).list;
    const i = findSnapshot(list, idOrName);
    const s = list[i];
    await markBusy(img);
    await writeTable(img, list.filter((_, k) => k !== i));
    const l1 = new Uint8Array(s.l1Size * 8);
    await img.store.read(s.l1TableOffset, l1);
    await img.barrier();
    await adjustTree(img, l1, s.l1TableOffset, -1);
    if (s.l1Size > 0) {
      img.dropMetadata(s.l1TableOffset, s.l1Size * 8);
      await img.freeHostRange(s.l1TableOffset, s.l1Size * 8);
    }
    await syncCopied(img);
    await markDone(img);
  } finally {
    release();
  }
}
