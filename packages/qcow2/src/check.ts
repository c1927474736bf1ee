// Consistency check and repair, as `qemu-img check` does it: walk every
// structure that references clusters (header, L1/L2 tables of the active
// image and of each snapshot, refcount table and blocks, snapshot table,
// LUKS header), count the references, and compare with the stored
// refcounts. More stored than referenced is a leak; fewer is a corruption.
import { getU64, setU64, viewOf } from "./bytes.js";
import { Qcow2Error, Qcow2UsageError } from "./errors.js";
import { compressedRef, entryOffset, l1Reserved, l2Reserved, OFLAG_COMPRESSED, OFLAG_COPIED, OFLAG_ZERO } from "./l2-entry.js";
import type { Qcow2Image } from "./qcow2-image.js";
import { getRefcountEntry, maxRefcount, setRefcountEntry } from "./refcounts.js";
import { readSnapshotTable } from "./snapshots.js";

/** Result of {@link checkImage}, with the fields of `qemu-img check --output=json`. */
export interface CheckResult {
  /** References that are higher than the refcount allows (refcount too low): corruption. */
  corruptions: number;
  /** Clusters whose refcount is higher than their references. */
  leaks: number;
  /** Errors that stopped parts of the check (unreadable structures). */
  checkErrors: number;
  /** Corruptions repaired. */
  corruptionsFixed: number;
  /** Leaks repaired. */
  leaksFixed: number;
  /** Guest clusters in the virtual disk. */
  totalClusters: number;
  /** Guest clusters allocated in this image. */
  allocatedClusters: number;
  /** Allocated guest clusters not contiguous with the previous one on the host. */
  fragmentedClusters: number;
  /** Compressed guest clusters. */
  compressedClusters: number;
  /** End of the last cluster in use. */
  imageEndOffset: number;
  /** One line per problem found, as qemu-img prints them. */
  messages: string[];
}

/** Options of {@link checkImage}. */
export interface CheckOptions {
  /** Repair "leaks" (lower refcounts) or "all" (also raise them, rebuild broken refcount structures, fix COPIED flags). */
  repair?: "leaks" | "all";
}

/** Most host clusters a check will count (the counting array is 4 bytes each: 512 MiB). */
export const CHECK_MAX_CLUSTERS = 1 << 27;

/** The exit status qemu-img check would give: 0 clean, 1 check error, 2 corruptions, 3 leaks only. */
export function checkExitCode(r: CheckResult): number {
  if (r.checkErrors > 0) return 1;
  if (r.corruptions > 0) return 2;
  if (r.leaks > 0) return 3;
  return 0;
}

/**
 * Checks (and optionally repairs) an opened image. Takes the image's
 * exclusive lock; repairing needs a read-write image.
 */
export async function checkImage(img: Qcow2Image, options: CheckOptions = {}): Promise<CheckResult> {
  if (options.repair && img.readOnly) throw new Qcow2UsageError("QCOW2_READ_ONLY", "repair needs the image open read-write");
  const first = await runCheck(img, options);
  if (!options.repair || (first.corruptions === 0 && first.leaks === 0)) return first;
  // Report what remains after repairing, as qemu-img does.
  const after = await runCheck(img, {});
  after.leaksFixed = first.leaksFixed;
  after.corruptionsFixed = first.corruptionsFixed;
  after.messages = [...first.messages, ...after.messages];
  return after;
}

async function runCheck(img: Qcow2Image, options: CheckOptions, keep?: { refs?: Uint32Array }): Promise<CheckResult> {
  const h = img.header;
  const cs = img.clusterSize;
  const res: CheckResult = { corruptions: 0, leaks: 0, checkErrors: 0, corruptionsFixed: 0, leaksFixed: 0, totalClusters: Math.ceil(h.size / cs), allocatedClusters: 0, fragmentedClusters: 0, compressedClusters: 0, imageEndOffset: 0, messages: [] };
  const fileClusters = Math.ceil(img.store.size / cs);
  if (fileClusters > CHECK_MAX_CLUSTERS) throw new Qcow2UsageError("QCOW2_CHECK_TOO_LARGE", `the image has ${fileClusters} clusters; check handles at most ${CHECK_MAX_CLUSTERS}`);
  const refs = new Uint32Array(fileClusters + 1);
  const err = (msg: string) => {
    res.messages.push(msg);
    res.corruptions++;
  };
  const inc = (offset: number, length: number, what: string): boolean => {
    if (length <= 0) return true;
    const a = Math.floor(offset / cs);
    const b = Math.floor((offset + length - 1) / cs);
    if (b >= refs.length) {
      // Only the file's clusters (and the partial sector run after its end) can be referenced.
      err(`ERROR ${what} at offset 0x${offset.toString(16)} is past the end of the image file`);
      return false;
    }
    for (let c = a; c <= b; c++) refs[c]++;
    return true;
  };
  const release = await img.lock.exclusive();
  try {
    if (!img.readOnly) await img.flushMetadata();
    inc(0, cs, "header");
    if (h.cryptoHeader) inc(h.cryptoHeader.offset, h.cryptoHeader.length, "LUKS header");
    // Refcount structures.
    let rebuild = false;
    inc(h.refcountTableOffset, h.refcountTableClusters * cs, "refcount table");
    for (let i = 0; i < img.reftable.length; i++) {
      const off = img.reftable[i];
      if (!off) continue;
      if (off + cs > img.store.size) {
        err(`ERROR refcount block ${i} is outside image`);
        rebuild = true;
        continue;
      }
      inc(off, cs, `refcount block ${i}`);
    }
    // Active L1 and each snapshot's.
    const walk = async (l1Offset: number, l1Size: number, active: boolean, label: string) => {
      if (l1Size === 0) return;
      if (l1Offset % cs !== 0 || l1Offset + l1Size * 8 > img.store.size) {
        err(`ERROR ${label} L1 table at 0x${l1Offset.toString(16)} is misaligned or past the end of the file`);
        return;
      }
      inc(l1Offset, l1Size * 8, `${label} L1 table`);
      const l1 = active ? img.l1 : new Uint8Array(l1Size * 8);
      if (!active) await img.store.read(l1Offset, l1);
      const lv = viewOf(l1);
      let lastHost = -1;
      for (let i = 0; i < l1Size; i++) {
        const hi = lv.getUint32(i * 8);
        const lo = lv.getUint32(i * 8 + 4);
        const l2Off = entryOffset(hi, lo);
        if (l2Off === 0) continue;
        if (l1Reserved(hi, lo) || l2Off < 0 || l2Off % cs !== 0) {
          err(`ERROR ${label} L1 entry ${i}: L2 table offset 0x${l2Off.toString(16)} misaligned or reserved bits set`);
          continue;
        }
        if (l2Off + cs > img.store.size) {
          err(`ERROR ${label} L1 entry ${i}: L2 table at 0x${l2Off.toString(16)} is past the end of the file`);
          continue;
        }
        inc(l2Off, cs, "L2 table");
        const t = new Uint8Array(cs);
        await img.store.read(l2Off, t);
        const tv = viewOf(t);
        for (let j = 0; j < img.l2Entries; j++) {
          const p = j * img.l2EntryBytes;
          const ehi = tv.getUint32(p);
          const elo = tv.getUint32(p + 4);
          if (ehi === 0 && elo === 0) continue;
          const guestCluster = i * img.l2Entries + j;
          const where = `L2 entry ${j} of table 0x${l2Off.toString(16)}`;
          if (ehi & OFLAG_COMPRESSED) {
            if (ehi & OFLAG_COPIED) err(`ERROR ${where}: compressed cluster has the COPIED flag`);
            const r = compressedRef(ehi, elo, img.clusterBits);
            if (r.offset + r.length > img.store.size + 512) {
              err(`ERROR ${where}: compressed data at 0x${r.offset.toString(16)} is past the end of the file`);
              continue;
            }
            inc(r.offset & ~511, r.length + (r.offset & 511), "compressed cluster");
            if (active && guestCluster < res.totalClusters) {
              res.allocatedClusters++;
              res.compressedClusters++;
            }
            continue;
          }
          const host = entryOffset(ehi, elo);
          if (l2Reserved(ehi, elo) || host < 0 || host % cs !== 0) {
            err(`ERROR ${where}: offset 0x${host.toString(16)} misaligned or reserved bits set`);
            continue;
          }
          if (host === 0) continue;
          if (active && guestCluster < res.totalClusters && !(elo & OFLAG_ZERO)) {
            res.allocatedClusters++;
            if (lastHost >= 0 && host !== lastHost + cs) res.fragmentedClusters++;
            lastHost = host;
          }
          if (img.hasDataFile) continue;
          if (host + cs > img.store.size + cs * 0 && !(elo & OFLAG_ZERO) && !img.extendedL2) {
            if (host >= img.store.size) {
              err(`ERROR ${where}: data cluster at 0x${host.toString(16)} is past the end of the file`);
              continue;
            }
          }
          inc(host, cs, "data cluster");
        }
      }
    };
    await walk(h.l1TableOffset, h.l1Size, true, "active");
    if (h.nbSnapshots > 0) {
      try {
        const snaps = await readSnapshotTable(img);
        inc(h.snapshotsOffset, snaps.tableBytes, "snapshot table");
        for (const s of snaps.list) {
          await walk(s.l1TableOffset, s.l1Size, false, `snapshot ${s.id}`);
          if (s.vmStateSize > 0) {
            // VM state lives after the end of the virtual disk in the snapshot's own L1 tree.
          }
        }
      } catch (e) {
        if (!(e instanceof Qcow2Error)) throw e;
        res.messages.push(`ERROR snapshot table: ${e.message}`);
        res.checkErrors++;
      }
    }

    // Compare with the stored refcounts.
    const order = h.refcountOrder;
    const total = Math.max(refs.length, fileClusters);
    const fixes: [number, number][] = [];
    for (let c = 0; c < total; c++) {
      const computed = c < refs.length ? refs[c] : 0;
      let stored = 0;
      const ti = Math.floor(c / img.refblockEntries);
      if (ti < img.reftable.length && img.reftable[ti] && img.reftable[ti] + cs <= img.store.size) {
        const b = await img.loadRefblock(ti);
        if (b) stored = getRefcountEntry(b, viewOf(b), order, c - ti * img.refblockEntries);
      } else if (ti >= img.reftable.length && computed > 0) {
        rebuild = true;
      }
      if (computed > 0) res.imageEndOffset = (c + 1) * cs;
      if (stored === computed) continue;
      if (computed > maxRefcount(order)) {
        err(`ERROR cluster ${c} has ${computed} references, more than refcount_bits can hold`);
        continue;
      }
      if (stored === 0) rebuild = true;
      let fixing = false;
      if (stored > computed && options.repair) {
        fixing = true;
        res.leaksFixed++;
      } else if (stored < computed && options.repair === "all" && stored !== 0) {
        fixing = true;
        res.corruptionsFixed++;
      }
      res.messages.push(`${fixing ? "Repairing" : stored < computed ? "ERROR" : "Leaked"} cluster ${c} refcount=${stored} reference=${computed}`);
      if (stored < computed) res.corruptions++;
      else res.leaks++;
      if (fixing) fixes.push([c, computed]);
    }
    if (keep) keep.refs = refs;
    if (options.repair === "all" && rebuild) {
      await rebuildRefcounts(img, refs, h.refcountOrder);
      res.corruptionsFixed += res.corruptions - res.corruptionsFixed;
      res.messages.push("Rebuilding refcount structure");
    } else {
      for (const [c, v] of fixes) await img.updateRefcounts(c, 1, v, true);
    }
    if (options.repair === "all") await fixCopiedFlags(img, res);
    else await checkCopiedFlags(img, res);
    if (options.repair) await img.store.flush();
  } finally {
    release();
  }
  return res;
}

/**
 * @internal Rewrites the refcount structure with another refcount width
 * (qemu-img amend -o refcount_bits). Refuses an image with corruptions.
 */
export async function changeRefcountOrder(img: Qcow2Image, order: number): Promise<void> {
  const keep: { refs?: Uint32Array } = {};
  const r = await runCheck(img, {}, keep);
  if (r.corruptions > 0 || r.checkErrors > 0) throw new Qcow2UsageError("QCOW2_AMEND", "the image has corruptions; repair it before changing refcount_bits");
  let max = 0;
  for (const v of keep.refs!) if (v > max) max = v;
  if (max > 2 ** (1 << order) - 1 && order < 6) throw new Qcow2UsageError("QCOW2_AMEND", `a cluster has ${max} references, more than ${1 << order}-bit refcounts hold`);
  const release = await img.lock.exclusive();
  try {
    await rebuildRefcounts(img, keep.refs!, order);
  } finally {
    release();
  }
}

/** Counts L1/L2 entries whose COPIED flag disagrees with refcount == 1 (active image only). */
async function checkCopiedFlags(img: Qcow2Image, res: CheckResult, fix = false): Promise<void> {
  const cs = img.clusterSize;
  for (let i = 0; i < img.header.l1Size; i++) {
    const hi = img.l1View.getUint32(i * 8);
    const lo = img.l1View.getUint32(i * 8 + 4);
    const l2Off = entryOffset(hi, lo);
    if (l2Off <= 0 || l1Reserved(hi, lo) || l2Off % cs !== 0 || l2Off + cs > img.store.size) continue;
    const rc = await img.getRefcount(l2Off / cs);
    if ((rc === 1) !== ((hi & OFLAG_COPIED) !== 0)) {
      if (fix) {
        await img.setL1(i, l2Off, rc === 1);
        res.corruptionsFixed++;
        res.messages.push(`Repairing OFLAG_COPIED L2 cluster: l1_index=${i} l1_entry=${l2Off.toString(16)} refcount=${rc}`);
      } else {
        res.corruptions++;
        res.messages.push(`ERROR OFLAG_COPIED L2 cluster: l1_index=${i} l1_entry=${l2Off.toString(16)} refcount=${rc}`);
      }
    }
    if (img.hasDataFile) continue;
    const t = await img.loadL2(l2Off, i);
    const tv = viewOf(t);
    let dirtyLo = -1;
    let dirtyHi = -1;
    for (let j = 0; j < img.l2Entries; j++) {
      const p = j * img.l2EntryBytes;
      const ehi = tv.getUint32(p);
      const elo = tv.getUint32(p + 4);
      if (ehi & OFLAG_COMPRESSED) continue;
      const host = entryOffset(ehi, elo);
      if (host <= 0 || l2Reserved(ehi, elo) || host % cs !== 0) continue;
      const r = await img.getRefcount(host / cs);
      if ((r === 1) !== ((ehi & OFLAG_COPIED) !== 0)) {
        if (fix) {
          tv.setUint32(p, r === 1 ? (ehi | OFLAG_COPIED) >>> 0 : (ehi & ~OFLAG_COPIED) >>> 0);
          if (dirtyLo < 0) dirtyLo = j;
          dirtyHi = j;
          res.corruptionsFixed++;
          res.messages.push(`Repairing OFLAG_COPIED data cluster: l2_entry=${host.toString(16)} refcount=${r}`);
        } else {
          res.corruptions++;
          res.messages.push(`ERROR OFLAG_COPIED data cluster: l2_entry=${host.toString(16)} refcount=${r}`);
        }
      }
    }
    if (dirtyLo >= 0) await img.writeL2Range(l2Off, t, dirtyLo, dirtyHi);
  }
}

async function fixCopiedFlags(img: Qcow2Image, res: CheckResult): Promise<void> {
  await checkCopiedFlags(img, res, true);
}

/**
 * Writes a new refcount table and blocks from computed counts, past the end
 * of everything in use, then switches the header to them. The old
 * structures become free space.
 */
async function rebuildRefcounts(img: Qcow2Image, refs: Uint32Array, order: number): Promise<void> {
  const h = img.header;
  const cs = img.clusterSize;
  const per = (cs * 8) >> order;
  // The old table and blocks are replaced: they no longer count.
  const drop = (off: number, len: number) => {
    for (let c = Math.floor(off / cs); c < Math.ceil((off + len) / cs) && c < refs.length; c++) if (refs[c] > 0) refs[c]--;
  };
  drop(h.refcountTableOffset, h.refcountTableClusters * cs);
  for (const off of img.reftable) if (off && off + cs <= img.store.size) drop(off, cs);
  let used = 0;
  for (let c = refs.length - 1; c >= 0; c--) if (refs[c]) {
    used = c + 1;
    break;
  }
  const start = Math.max(used, Math.ceil(img.store.size / cs));
  let blocks = 0;
  let tableClusters = 1;
  for (let iter = 0; iter < 64; iter++) {
    const end = start + blocks + tableClusters;
    const nb = Math.ceil(end / per);
    const nt = Math.max(1, Math.ceil((nb * 8) / cs));
    if (nb === blocks && nt === tableClusters) break;
    blocks = nb;
    tableClusters = nt;
  }
  const count = (c: number) => (c < refs.length ? refs[c] : 0) + (c >= start && c < start + blocks + tableClusters ? 1 : 0);
  const table = new Uint8Array(tableClusters * cs);
  for (let j = 0; j < blocks; j++) {
    const b = new Uint8Array(cs);
    const bv = viewOf(b);
    for (let i = 0; i < per; i++) {
      const v = count(j * per + i);
      if (v) setRefcountEntry(b, bv, order, i, v);
    }
    const off = (start + j) * cs;
    await img.store.write(off, b);
    setU64(viewOf(table), j * 8, off);
  }
  const tableOff = (start + blocks) * cs;
  await img.store.write(tableOff, table);
  await img.store.flush();
  // One write switches table, size and width together.
  h.refcountTableOffset = tableOff;
  h.refcountTableClusters = tableClusters;
  h.refcountOrder = order;
  await img.writeHeader();
  await img.store.flush();
  img.refblockEntries = per;
  const entries = (tableClusters * cs) / 8;
  img.reftable = new Array(entries).fill(0);
  for (let j = 0; j < blocks; j++) img.reftable[j] = getU64(viewOf(table), j * 8, "refcount_table");
  img.dropCaches();
  img.noteMetadata(start * cs, (blocks + tableClusters) * cs);
}
