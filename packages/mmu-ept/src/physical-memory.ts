import { GuestMemoryError, TypevisorError, type GuestMemory, type MmioBus, type Snapshottable, type StateValue } from "@typevisor/hv-core";
import { EPT_EXEC, EPT_READ, EPT_RWX, EPT_WRITE, Ept } from "./ept.js";
import { HostMemory, PAGE_SIZE } from "./host-memory.js";

/**
 * Called on an EPT violation in a range it was registered for: the access
 * `access` (EPT_READ/WRITE/EXEC bits) to guest-physical `gpa` found no
 * sufficient mapping. Return true after fixing the EPT (map a page, restore
 * write permission) so the access retries; false to pass it on (in the end
 * to the MMIO bus).
 */
export type EptViolationHandler = (gpa: number, access: number) => boolean;

/** Raised for a bad memory layout request (overlap, misalignment, bad state data). */
export class MemoryLayoutError extends TypevisorError {}

interface Region {
  readonly base: number; // guest page number
  readonly end: number; // exclusive
}

interface RomRegion extends Region {
  readonly bytes: Uint8Array;
}

interface HandlerRegion extends Region {
  readonly handler: EptViolationHandler;
}

/** Options of {@link PhysicalMemory}. */
export interface PhysicalMemoryOptions {
  /** Bytes of guest RAM; by default mapped at guest-physical 0. */
  ramSize: number;
  /** The machine's MMIO bus: guest-physical addresses that are not RAM or ROM go there. */
  mmio?: MmioBus;
  /** Host page limit (RAM + EPT tables + ROM); default RAM pages + 1/256 + 64. */
  maxHostPages?: number;
}

/** How many times one access may be retried after violation handlers claim to have fixed it. */
const MAX_VIOLATION_RETRIES = 4;

/** Result of {@link PhysicalMemory.resolve} when the address is not backed by host memory (MMIO). */
export const NOT_RAM = -1;

/**
 * Guest-physical memory: RAM regions backed by host pages allocated on first
 * touch, ROM regions (read/execute only), an Intel-format EPT mapping one to
 * the other, EPT-violation handlers (balloon, lazy restore, write protection),
 * the dirty log, and the MMIO bus for everything else. Implements
 * {@link GuestMemory} for device DMA (dirty-logged like vCPU writes).
 *
 * First touch is itself an EPT violation: the page is not present, the
 * built-in RAM handler allocates a host page, maps it read/write/execute and
 * the access retries. Features that intercept memory do it only by changing
 * EPT entries, never on the TLB fast path.
 */
export class PhysicalMemory implements GuestMemory, Snapshottable {
  /** Snapshot id. */
  readonly stateId = "memory";
  /** Snapshot format version. */
  readonly stateVersion = 1;
  /** The host page pool. */
  readonly host: HostMemory;
  /** The extended page table. */
  readonly ept: Ept;
  /** The MMIO bus for non-RAM addresses (may be replaced before the guest runs). */
  mmio: MmioBus | undefined;
  /** Bytes of guest RAM (sum of the RAM regions). */
  ramSize: number;
  private ram: Region[] = [];
  private roms: RomRegion[] = [];
  private handlers: HandlerRegion[] = [];
  /** Dirty bitmap, one bit per guest page below {@link PhysicalMemory.trackedPages}. */
  private dirty: Int32Array;
  /** Code pages: one byte per guest page, non-zero while a vCPU caches decoded instructions from it. */
  readonly codePages: Uint8Array;
  private readonly writeProtectListeners: (() => void)[] = [];
  private readonly codeWriteListeners: ((gpn: number) => void)[] = [];
  private readonly codeProtectListeners: ((gpn: number) => void)[] = [];
  /** Guest pages the dirty log and code-page map cover (the highest RAM end, rounded up). */
  trackedPages: number;

  /** @param options - see {@link PhysicalMemoryOptions} */
  constructor(options: PhysicalMemoryOptions) {
    const size = options.ramSize;
    if (!Number.isSafeInteger(size) || size <= 0 || size % PAGE_SIZE !== 0 || size > 2 ** 40) {
      throw new MemoryLayoutError("MEMORY_SIZE", `RAM size ${size} must be a positive multiple of 4096 up to 1 TiB`);
    }
    const pages = size / PAGE_SIZE;
    this.host = new HostMemory(options.maxHostPages ?? pages + Math.ceil(pages / 256) + 64);
    this.ept = new Ept(this.host);
    this.mmio = options.mmio;
    this.ramSize = size;
    this.ram = [{ base: 0, end: pages }];
    this.trackedPages = pages;
    this.dirty = new Int32Array((pages + 31) >>> 5);
    this.codePages = new Uint8Array(pages);
  }

  // ---- layout ----

  /** The RAM regions as [base, length] pairs in bytes. */
  get ramRegions(): [number, number][] {
    return this.ram.map((r) => [r.base * PAGE_SIZE, (r.end - r.base) * PAGE_SIZE]);
  }

  /**
   * Replaces the RAM layout (e.g. a PC's hole at 640 KiB..1 MiB, RAM above
   * 4 GiB). Pages no longer RAM lose their host pages; call before the guest runs.
   */
  setRamRegions(regions: readonly [base: number, length: number][]): void {
    const next: Region[] = [];
    let total = 0;
    for (const [base, length] of regions) {
      if (base % PAGE_SIZE !== 0 || length % PAGE_SIZE !== 0 || length <= 0 || base < 0 || base + length > 2 ** 48) {
        throw new MemoryLayoutError("MEMORY_LAYOUT", `RAM region 0x${base.toString(16)}+0x${length.toString(16)} is not page-aligned or is out of range`);
      }
      next.push({ base: base / PAGE_SIZE, end: (base + length) / PAGE_SIZE });
      total += length;
    }
    next.sort((a, b) => a.base - b.base);
    for (let i = 1; i < next.length; i++) {
      if (next[i].base < next[i - 1].end) throw new MemoryLayoutError("MEMORY_OVERLAP", `RAM regions overlap at page 0x${next[i].base.toString(16)}`);
    }
    for (const r of this.ram) {
      for (let g = r.base; g < r.end; g++) if (!next.some((n) => g >= n.base && g < n.end)) this.releasePage(g);
    }
    this.ram = next;
    this.ramSize = total;
    const top = next.length > 0 ? next[next.length - 1].end : 0;
    if (top > this.trackedPages) {
      this.trackedPages = top;
      const d = new Int32Array((top + 31) >>> 5);
      d.set(this.dirty);
      this.dirty = d;
      const c = new Uint8Array(top);
      c.set(this.codePages);
      (this as { codePages: Uint8Array }).codePages = c;
    }
    this.ept.invalidate();
  }

  /**
   * Maps a read-only, executable ROM image at `gpa` (firmware). Writes to it
   * go to the MMIO bus, so they are dropped unless a device claims them.
   */
  addRom(gpa: number, bytes: Uint8Array): void {
    if (gpa % PAGE_SIZE !== 0 || gpa < 0) throw new MemoryLayoutError("MEMORY_LAYOUT", `ROM at 0x${gpa.toString(16)} is not page-aligned`);
    const base = gpa / PAGE_SIZE;
    const end = base + Math.ceil(bytes.length / PAGE_SIZE);
    for (const r of [...this.ram, ...this.roms]) {
      if (base < r.end && r.base < end) throw new MemoryLayoutError("MEMORY_OVERLAP", `ROM at 0x${gpa.toString(16)} overlaps RAM or another ROM`);
    }
    this.roms.push({ base, end, bytes: bytes.slice() });
    for (let g = base; g < end; g++) {
      const hpn = this.host.allocPage();
      const src = bytes.subarray((g - base) * PAGE_SIZE, (g - base + 1) * PAGE_SIZE);
      this.host.pageView(hpn).set(src);
      this.ept.map(g, hpn, EPT_READ | EPT_EXEC);
    }
  }

  /**
   * Removes the ROM mapped at `gpa` (e.g. when a chipset's PAM registers
   * turn the BIOS area into RAM: remove the ROM, extend the RAM regions,
   * copy the image into RAM). Returns false when no ROM starts there.
   */
  removeRom(gpa: number): boolean {
    const base = gpa / PAGE_SIZE;
    const rom = this.roms.find((r) => r.base === base);
    if (!rom) return false;
    this.roms = this.roms.filter((r) => r !== rom);
    for (let g = rom.base; g < rom.end; g++) this.releasePage(g);
    return true;
  }

  /** Whether guest page `gpn` is in a RAM region. */
  isRamPage(gpn: number): boolean {
    for (const r of this.ram) if (gpn >= r.base && gpn < r.end) return true;
    return false;
  }

  /**
   * Registers an EPT-violation handler for guest-physical `gpa .. gpa+length-1`
   * (balloon, lazy restore, write protection). Handlers run newest first, before
   * the built-in first-touch allocator.
   * @returns a function that removes the handler
   */
  addViolationHandler(gpa: number, length: number, handler: EptViolationHandler): () => void {
    const h: HandlerRegion = { base: Math.floor(gpa / PAGE_SIZE), end: Math.ceil((gpa + length) / PAGE_SIZE), handler };
    this.handlers = [h, ...this.handlers];
    return () => {
      this.handlers = this.handlers.filter((x) => x !== h);
    };
  }

  /** Subscribes to write-protection events: every cached writable translation must go (dirty log reset). */
  onWriteProtect(listener: () => void): void {
    this.writeProtectListeners.push(listener);
  }

  /**
   * Subscribes to pages becoming code pages ({@link PhysicalMemory.protectCodePage}):
   * a TLB drops the writable translations of that one page.
   */
  onCodeProtect(listener: (gpn: number) => void): void {
    this.codeProtectListeners.push(listener);
  }

  /** Subscribes to writes into pages marked in {@link PhysicalMemory.codePages} (decoded-instruction caches drop the page). */
  onCodeWrite(listener: (gpn: number) => void): void {
    this.codeWriteListeners.push(listener);
  }

  // ---- translation ----

  /**
   * Resolves guest page `gpn` to a host page for an access needing `perms`,
   * running violation handlers and the first-touch allocator.
   * @returns the host page number, or {@link NOT_RAM} for MMIO (or a denied access)
   */
  resolve(gpn: number, perms: number): number {
    const ept = this.ept;
    for (let tries = 0; tries < MAX_VIOLATION_RETRIES; tries++) {
      const hpn = ept.translate(gpn, perms);
      if (hpn >= 0) return hpn;
      if (!this.handleViolation(gpn, perms)) return NOT_RAM;
    }
    return NOT_RAM;
  }

  private handleViolation(gpn: number, perms: number): boolean {
    const gpa = gpn * PAGE_SIZE;
    for (const h of this.handlers) if (gpn >= h.base && gpn < h.end && h.handler(gpa, perms)) return true;
    // First touch of RAM: not present at all -> allocate a zeroed host page.
    if (this.ept.violationPerms === 0 && !this.ept.violationMisconfig && this.isRamPage(gpn) && this.ept.entry(gpn) === undefined) {
      this.ept.map(gpn, this.host.allocPage(), EPT_RWX);
      return true;
    }
    return false;
  }

  /**
   * Unmaps guest page `gpn` and returns its host page to the pool (balloon
   * inflate, RAM removal). The next touch of a RAM page gets a zeroed page.
   */
  releasePage(gpn: number): void {
    const hpn = this.ept.unmap(gpn);
    if (hpn >= 0) this.host.freePage(hpn);
  }

  /**
   * Marks guest page `gpn` as holding code a vCPU has compiled or cached:
   * every TLB drops its writable translations of the page, so the next
   * write to it takes the slow path and reaches the
   * {@link PhysicalMemory.onCodeWrite} listeners.
   */
  protectCodePage(gpn: number): void {
    if (gpn >= this.trackedPages || this.codePages[gpn] !== 0) return;
    this.codePages[gpn] = 1;
    for (const l of this.codeProtectListeners) l(gpn);
  }

  /** Marks `gpn` dirty; called by TLB write fills and DMA writes. */
  markDirty(gpn: number): void {
    if (gpn < this.trackedPages) this.dirty[gpn >>> 5] |= 1 << (gpn & 31);
    if (gpn < this.trackedPages && this.codePages[gpn] !== 0) {
      this.codePages[gpn] = 0; // listeners drop what they cached; writes may be fast again
      for (const l of this.codeWriteListeners) l(gpn);
    }
  }

  /** Whether guest page `gpn` was written since the last {@link PhysicalMemory.fetchAndClearDirty}. */
  isDirty(gpn: number): boolean {
    return gpn < this.trackedPages && (this.dirty[gpn >>> 5] & (1 << (gpn & 31))) !== 0;
  }

  /**
   * Returns the dirty bitmap (bit `gpn & 31` of word `gpn >> 5`) and clears
   * it in one step, revoking every cached writable translation so the next
   * write to each page is logged again. Atomic: vCPUs run on this thread.
   */
  fetchAndClearDirty(): Int32Array {
    const out = this.dirty.slice();
    this.dirty.fill(0);
    for (const l of this.writeProtectListeners) l();
    return out;
  }

  /** Guest page numbers currently marked dirty (for tests and tools). */
  dirtyPages(): number[] {
    const out: number[] = [];
    for (let w = 0; w < this.dirty.length; w++) {
      const bits = this.dirty[w];
      if (bits !== 0) for (let b = 0; b < 32; b++) if (bits & (1 << b)) out.push(w * 32 + b);
    }
    return out;
  }

  // ---- physical accessors (page walks, DMA) ----

  private hostFor(gpa: number, perms: number, length: number, what: string): { mem: Uint8Array; off: number } {
    const gpn = Math.floor(gpa / PAGE_SIZE);
    const hpn = this.resolve(gpn, perms);
    if (hpn < 0) throw new GuestMemoryError(gpa, length, what);
    if (perms & EPT_WRITE) this.markDirty(gpn);
    return { mem: this.host.bytes, off: hpn * PAGE_SIZE + (gpa % PAGE_SIZE) };
  }

  /** Copies guest-physical `gpa..` into `dest` (RAM or ROM only). */
  read(gpa: number, dest: Uint8Array): void {
    let done = 0;
    while (done < dest.length) {
      const a = gpa + done;
      const n = Math.min(dest.length - done, PAGE_SIZE - (a % PAGE_SIZE));
      const { mem, off } = this.hostFor(a, EPT_READ, dest.length, "DMA read");
      dest.set(mem.subarray(off, off + n), done);
      done += n;
    }
  }

  /** Copies `src` to guest-physical `gpa..` (RAM only), dirty-logging each page. */
  write(gpa: number, src: Uint8Array): void {
    for (let done = 0; done < src.length; ) {
      const a = gpa + done;
      const n = Math.min(src.length - done, PAGE_SIZE - (a % PAGE_SIZE));
      const { mem, off } = this.hostFor(a, EPT_WRITE, src.length, "DMA write");
      mem.set(src.subarray(done, done + n), off);
      done += n;
    }
  }

  /** Reads one byte of RAM/ROM. */
  readU8(gpa: number): number {
    const { mem, off } = this.hostFor(gpa, EPT_READ, 1, "DMA read");
    return mem[off];
  }

  /** Reads a little-endian 16-bit value. */
  readU16(gpa: number): number {
    return this.readU8(gpa) | (this.readU8(gpa + 1) << 8);
  }

  /** Reads a little-endian 32-bit value (unsigned). */
  readU32(gpa: number): number {
    if (gpa % PAGE_SIZE <= PAGE_SIZE - 4) {
      const { mem, off } = this.hostFor(gpa, EPT_READ, 4, "DMA read");
      return (mem[off] | (mem[off + 1] << 8) | (mem[off + 2] << 16) | (mem[off + 3] << 24)) >>> 0;
    }
    return (this.readU16(gpa) | (this.readU16(gpa + 2) << 16)) >>> 0;
  }

  /** Writes one byte. */
  writeU8(gpa: number, value: number): void {
    const { mem, off } = this.hostFor(gpa, EPT_WRITE, 1, "DMA write");
    mem[off] = value;
  }

  /** Writes a little-endian 16-bit value. */
  writeU16(gpa: number, value: number): void {
    this.writeU8(gpa, value);
    this.writeU8(gpa + 1, value >>> 8);
  }

  /** Writes a little-endian 32-bit value. */
  writeU32(gpa: number, value: number): void {
    if (gpa % PAGE_SIZE <= PAGE_SIZE - 4) {
      const { mem, off } = this.hostFor(gpa, EPT_WRITE, 4, "DMA write");
      mem[off] = value;
      mem[off + 1] = value >>> 8;
      mem[off + 2] = value >>> 16;
      mem[off + 3] = value >>> 24;
      return;
    }
    this.writeU16(gpa, value);
    this.writeU16(gpa + 2, value >>> 16);
  }

  /** Whether `gpa .. gpa+length-1` is entirely RAM (valid for DMA). */
  isRam(gpa: number, length: number): boolean {
    if (!(gpa >= 0) || !(length >= 0)) return false;
    const first = Math.floor(gpa / PAGE_SIZE);
    const last = Math.floor((gpa + Math.max(length, 1) - 1) / PAGE_SIZE);
    for (let g = first; g <= last; g++) if (!this.isRamPage(g)) return false;
    return true;
  }

  /** Loads `bytes` at guest-physical `gpa` (boot loaders): RAM only. */
  load(gpa: number, bytes: Uint8Array): void {
    this.write(gpa, bytes);
  }

  // ---- snapshot ----

  /** Saves every RAM page that has host memory and is not all zeros. */
  saveState(): StateValue {
    const pages: number[] = [];
    const parts: Uint8Array[] = [];
    for (const r of this.ram) {
      for (let g = r.base; g < r.end; g++) {
        const e = this.ept.entry(g);
        if (!e || e[2] !== 0) continue;
        const hpn = (e[0] >>> 12) + (e[1] & 0xfffff) * 0x100000;
        const view = this.host.pageView(hpn);
        if (view.every((b) => b === 0)) continue;
        pages.push(g);
        parts.push(view.slice());
      }
    }
    const bytes = new Uint8Array(parts.length * PAGE_SIZE);
    parts.forEach((p, i) => bytes.set(p, i * PAGE_SIZE));
    return { ramSize: this.ramSize, regions: this.ramRegions, pages, bytes };
  }

  /** Restores RAM contents saved by {@link PhysicalMemory.saveState}; validates every field. */
  loadState(data: StateValue): void {
    const d = data as { ramSize?: unknown; regions?: unknown; pages?: unknown; bytes?: unknown };
    if (typeof d !== "object" || d === null || !Array.isArray(d.pages) || !(d.bytes instanceof Uint8Array) || !Array.isArray(d.regions)) {
      throw new MemoryLayoutError("MEMORY_STATE", "memory state is malformed (needs regions, pages, bytes)");
    }
    if (d.bytes.length !== d.pages.length * PAGE_SIZE) {
      throw new MemoryLayoutError("MEMORY_STATE", `memory state has ${d.pages.length} pages but ${d.bytes.length} bytes`);
    }
    const regions = d.regions as unknown[];
    for (const r of regions) {
      if (!Array.isArray(r) || r.length !== 2 || typeof r[0] !== "number" || typeof r[1] !== "number") throw new MemoryLayoutError("MEMORY_STATE", "memory state has a malformed region");
    }
    this.setRamRegions(regions as [number, number][]);
    for (const r of this.ram) for (let g = r.base; g < r.end; g++) this.releasePage(g);
    (d.pages as unknown[]).forEach((g, i) => {
      if (typeof g !== "number" || !this.isRamPage(g)) throw new MemoryLayoutError("MEMORY_STATE", `memory state page ${String(g)} (entry ${i}) is not RAM`);
      this.write(g * PAGE_SIZE, (d.bytes as Uint8Array).subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE));
    });
    this.dirty.fill(0);
    this.ept.invalidate();
  }
}

