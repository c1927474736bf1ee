import { TypevisorError } from "@typevisor/hv-core";
import type { HostMemory } from "./host-memory.js";

/** EPT permission bit: read (Intel SDM Vol. 3 §29.3.2, bit 0). */
export const EPT_READ = 1;
/** EPT permission bit: write (bit 1). */
export const EPT_WRITE = 2;
/** EPT permission bit: execute (bit 2). */
export const EPT_EXEC = 4;
/** All three permissions. */
export const EPT_RWX = 7;
/** Memory type write-back (bits 5:3 = 6) that every leaf carries; the CPU ignores memory types. */
const EPT_MT_WB = 6 << 3;
/** Leaf entry of a large page (bit 7). */
const EPT_LARGE = 1 << 7;
/** Accessed flag (bit 8), maintained when the EPTP enables A/D flags. */
export const EPT_ACCESSED = 1 << 8;
/** Dirty flag (bit 9) on leaves, maintained when the EPTP enables A/D flags. */
export const EPT_DIRTY = 1 << 9;

/** Raised for an invalid EPT operation (bad level, address out of the 48-bit guest-physical space). */
export class EptError extends TypevisorError {}

/** Guest-physical page numbers the 4-level EPT covers (48-bit guest-physical addresses). */
export const EPT_MAX_GPN = 2 ** 36;

/**
 * An extended page table in Intel's format (SDM Vol. 3 §29.3): four levels
 * of 512 64-bit entries, each table a host page, leaves carrying R/W/X
 * permissions, a write-back memory type, and 4 KiB, 2 MiB or 1 GiB pages.
 * Permissions of the levels are AND-ed. Entries are kept as little-endian
 * lo/hi int32 pairs inside host pages, exactly as hardware would read them.
 *
 * Every change that can revoke a mapping a TLB may hold notifies the
 * listeners (the INVEPT of this software EPT), so TLBs flush.
 */
export class Ept {
  /** Host page number of the PML4 table. */
  readonly root: number;
  /** Whether accessed/dirty flags are maintained (EPTP bit 6). */
  adEnabled = false;
  /** Result of the last failed {@link Ept.translate}: the permissions the walk found (0 for not present). */
  violationPerms = 0;
  /** Result of the last failed {@link Ept.translate}: true when an entry was misconfigured (write without read, reserved bits). */
  violationMisconfig = false;
  /** Result of the last successful {@link Ept.translate}: the effective permissions. */
  lastPerms = 0;
  private readonly listeners: (() => void)[] = [];

  /** @param host - the host page pool the tables (and the pages they map) live in */
  constructor(private readonly host: HostMemory) {
    this.root = host.allocPage();
  }

  /** The EPT pointer a VMCS would hold: PML4 address, walk length 4, write-back, A/D enable (Intel SDM Vol. 3 §25.6.11). */
  get eptp(): number {
    return this.root * 4096 + (3 << 3) + 6 + (this.adEnabled ? 1 << 6 : 0);
  }

  /** Registers a callback run after each change that may revoke a cached translation. */
  onInvalidate(listener: () => void): void {
    this.listeners.push(listener);
  }

  /** Notifies TLBs that translations changed (INVEPT, all contexts). */
  invalidate(): void {
    for (const l of this.listeners) l();
  }

  /** The arena's int32 view, after checking that `hpn` holds a table (a table page is 1024 int32s from `hpn << 10`). */
  private table(hpn: number): Int32Array {
    if (!this.host.isAllocated(hpn)) throw new EptError("EPT_TABLE", `EPT table page ${hpn} is not allocated`);
    return this.host.words32;
  }

  /**
   * Translates guest-physical page `gpn` for an access needing `perms`
   * (EPT_READ/WRITE/EXEC bits). Sets accessed/dirty flags when enabled.
   * @returns the host page number, -1 on an EPT violation (see
   *   `violationPerms`) or -2 on a misconfiguration
   */
  translate(gpn: number, perms: number): number {
    if (!(gpn >= 0 && gpn < EPT_MAX_GPN)) {
      this.violationPerms = 0;
      this.violationMisconfig = false;
      return -1;
    }
    let hpn = this.root;
    let eff = EPT_RWX;
    for (let level = 3; level >= 0; level--) {
      const idx = level === 0 ? gpn & 511 : (gpn / (1 << (9 * level))) & 511;
      const t = this.table(hpn);
      const base = hpn * 1024 + idx * 2;
      const lo = t[base];
      const hi = t[base + 1];
      const p = lo & 7;
      if (p === 0) {
        this.violationPerms = 0;
        this.violationMisconfig = false;
        return -1;
      }
      if ((p & 3) === EPT_WRITE) {
        this.violationPerms = 0;
        this.violationMisconfig = true;
        return -2;
      }
      eff &= p;
      const addr = (lo >>> 12) + (hi & 0xfffff) * 0x100000;
      const leaf = level === 0 || (lo & EPT_LARGE) !== 0;
      if (leaf && level > 2) {
        // 512 GiB pages do not exist (bit 7 of a PML4E is reserved).
        this.violationPerms = 0;
        this.violationMisconfig = true;
        return -2;
      }
      if ((eff & perms) !== perms) {
        this.violationPerms = eff;
        this.violationMisconfig = false;
        return -1;
      }
      if (this.adEnabled) {
        let set = EPT_ACCESSED;
        if (leaf && (perms & EPT_WRITE) !== 0) set |= EPT_DIRTY;
        if ((lo & set) !== set) t[base] = lo | set;
      }
      if (leaf) {
        this.lastPerms = eff;
        if (level === 0) return addr;
        // A large page: the low 9*level bits of the frame come from gpn.
        const span = 1 << (9 * level);
        return addr + (gpn % span);
      }
      hpn = addr;
    }
    return -1; // unreachable: level 0 is always a leaf
  }

  /** The raw leaf entry for `gpn` as [lo, hi, level], or undefined when a level is not present. */
  entry(gpn: number): [number, number, number] | undefined {
    this.checkGpn(gpn);
    let hpn = this.root;
    for (let level = 3; level >= 0; level--) {
      const idx = (gpn / 2 ** (9 * level)) & 511;
      const t = this.table(hpn);
      const base = hpn * 1024 + idx * 2;
      const lo = t[base];
      const hi = t[base + 1];
      // A leaf with no permissions but an address is mapped-and-revoked (not present to the CPU, but owned).
      if (level === 0 || (lo & EPT_LARGE) !== 0) return lo === 0 && hi === 0 ? undefined : [lo >>> 0, hi >>> 0, level];
      if ((lo & 7) === 0) return undefined;
      hpn = (lo >>> 12) + (hi & 0xfffff) * 0x100000;
    }
    return undefined;
  }

  /**
   * Maps guest page `gpn` to host page `hpn` with `perms`, at `level` 0
   * (4 KiB), 1 (2 MiB) or 2 (1 GiB); large pages need aligned `gpn`/`hpn`.
   * Creates intermediate tables (full permissions) as needed.
   * @returns the host page previously mapped at this leaf, or -1
   */
  map(gpn: number, hpn: number, perms: number, level = 0): number {
    this.checkGpn(gpn);
    if (level < 0 || level > 2) throw new EptError("EPT_LEVEL", `EPT leaf level ${level} is not 0, 1 or 2`);
    const span = 2 ** (9 * level);
    if (gpn % span !== 0 || hpn % span !== 0) throw new EptError("EPT_ALIGN", `large EPT page at gpn 0x${gpn.toString(16)} -> hpn 0x${hpn.toString(16)} is not aligned to ${span} pages`);
    const [t, base] = this.slot(gpn, level, true)!;
    const lo = t[base];
    const hi = t[base + 1];
    const old = lo !== 0 || hi !== 0 ? (lo >>> 12) + (hi & 0xfffff) * 0x100000 : -1;
    t[base] = ((hpn % 0x100000) << 12) | EPT_MT_WB | (level > 0 ? EPT_LARGE : 0) | (perms & 7);
    t[base + 1] = Math.floor(hpn / 0x100000) & 0xfffff;
    if (old >= 0) this.invalidate();
    return old;
  }

  /**
   * Removes the leaf mapping `gpn` at `level`.
   * @returns the host page it mapped, or -1 when none
   */
  unmap(gpn: number, level = 0): number {
    this.checkGpn(gpn);
    const s = this.slot(gpn, level, false);
    if (!s) return -1;
    const [t, base] = s;
    const lo = t[base];
    if (lo === 0 && t[base + 1] === 0) return -1;
    const old = (lo >>> 12) + (t[base + 1] & 0xfffff) * 0x100000;
    t[base] = 0;
    t[base + 1] = 0;
    this.invalidate();
    return old;
  }

  /**
   * Changes the permissions of the 4 KiB leaf mapping `gpn` (write-protect,
   * execute-protect, restore). Returns false when `gpn` is not mapped at level 0.
   */
  protect(gpn: number, perms: number): boolean {
    this.checkGpn(gpn);
    const s = this.slot(gpn, 0, false);
    if (!s) return false;
    const [t, base] = s;
    const lo = t[base];
    if (lo === 0 && t[base + 1] === 0) return false;
    t[base] = (lo & ~7) | (perms & 7);
    if ((lo & ~perms & 7) !== 0) this.invalidate(); // only a revoked permission can be cached
    return true;
  }

  /** Clears the EPT dirty flag of 4 KiB leaf `gpn`; returns whether it was set. */
  clearDirty(gpn: number): boolean {
    const s = this.slot(gpn, 0, false);
    if (!s) return false;
    const [t, base] = s;
    const was = (t[base] & EPT_DIRTY) !== 0;
    t[base] &= ~EPT_DIRTY;
    if (was) this.invalidate();
    return was;
  }

  private checkGpn(gpn: number): void {
    if (!Number.isSafeInteger(gpn) || gpn < 0 || gpn >= EPT_MAX_GPN) {
      throw new EptError("EPT_RANGE", `guest page 0x${gpn.toString(16)} is outside the 48-bit guest-physical space`);
    }
  }

  /** Finds (optionally creating tables for) the entry slot of `gpn` at `level`. */
  private slot(gpn: number, level: number, create: boolean): [Int32Array, number] | undefined {
    let hpn = this.root;
    for (let l = 3; ; l--) {
      const idx = (gpn / 2 ** (9 * l)) & 511;
      const t = this.table(hpn);
      const base = hpn * 1024 + idx * 2;
      if (l === level) return [t, base];
      let lo = t[base];
      if ((lo & 7) === 0) {
        if (!create) return undefined;
        const page = this.host.allocPage();
        t[base] = ((page % 0x100000) << 12) | EPT_RWX;
        t[base + 1] = Math.floor(page / 0x100000);
        lo = t[base];
      } else if ((lo & EPT_LARGE) !== 0) {
        if (!create) return undefined;
        throw new EptError("EPT_LARGE", `guest page 0x${gpn.toString(16)} lies in a large EPT page; unmap it before mapping smaller pages`);
      }
      hpn = (lo >>> 12) + (t[base + 1] & 0xfffff) * 0x100000;
    }
  }
}
