import { EPT_EXEC, EPT_READ, EPT_WRITE } from "./ept.js";
import { PAGE_SHIFT } from "./host-memory.js";
import { NOT_RAM, type PhysicalMemory } from "./physical-memory.js";

/** Access kind: data read. */
export const ACCESS_READ = 0;
/** Access kind: data write. */
export const ACCESS_WRITE = 1;
/** Access kind: instruction fetch. */
export const ACCESS_EXEC = 2;

/** Page-fault error code bits (Intel SDM Vol. 3 §4.7). */
export const PF_PRESENT = 1;
/** Error code: the access was a write. */
export const PF_WRITE = 2;
/** Error code: the access was a user-mode access. */
export const PF_USER = 4;
/** Error code: a reserved bit was set in a paging-structure entry. */
export const PF_RSVD = 8;
/** Error code: the access was an instruction fetch (reported with PAE + EFER.NXE). */
export const PF_FETCH = 16;

/** CR0.WP: supervisor writes honour read-only pages. */
export const CR0_WP = 1 << 16;
/** CR0.PG: paging enabled. */
export const CR0_PG = 1 << 31;
/** CR4.PSE: 4 MiB pages in 32-bit paging. */
export const CR4_PSE = 1 << 4;
/** CR4.PAE: physical address extension paging. */
export const CR4_PAE = 1 << 5;
/** CR4.PGE: global pages. */
export const CR4_PGE = 1 << 7;

/** A CPU's instruction-fetch window that the MMU closes when its fetch cache goes stale. */
export interface FetchWindow {
  /** Bytes in the window minus one; the MMU sets -1 (closed). */
  winLen: number;
}

/** Entries of the direct-mapped software TLB (covers 64 MiB of distinct pages). */
export const TLB_SIZE = 1 << 14;
const TLB_MASK = TLB_SIZE - 1;

/**
 * The arrays of a TLB's table, in order, each {@link TLB_SIZE} int32 long:
 * read, write and execute tags for supervisor and user accesses, then each
 * entry's host byte offset. Compiled guest code addresses them from
 * {@link Mmu.tlbTable}.
 */
export const TLB_TABLE_LAYOUT = {
  /** Read tags of supervisor accesses. */
  readSupervisor: 0,
  /** Read tags of user accesses. */
  readUser: 1,
  /** Write tags of supervisor accesses. */
  writeSupervisor: 2,
  /** Write tags of user accesses. */
  writeUser: 3,
  /** Execute tags of supervisor fetches. */
  execSupervisor: 4,
  /** Execute tags of user fetches. */
  execUser: 5,
  /** Host byte offset of each entry's page. */
  hostOffset: 6,
} as const;
/**
 * Byte offset, in a TLB's table, of three int32 words that give the byte
 * offsets (in the host memory) of the tag arrays in use now: read, write
 * and execute, for the privilege selected by {@link Mmu.setUser}. Compiled
 * code reads them, so one region serves supervisor and user code.
 */
export const TLB_CURRENT_TAGS = 7 * TLB_SIZE * 4;
const TLB_TABLE_BYTES = TLB_CURRENT_TAGS + 3 * 4;

/**
 * Thrown (one preallocated instance) when a linear access page-faults. The
 * CPU catches it, reads {@link Mmu.faultAddress} and {@link Mmu.faultCode},
 * and delivers #PF. No allocation on the fault path.
 */
export class PageFaultSignal {
  /** Marker for `instanceof`-free checks. */
  readonly isPageFault = true;
}

/** The page-fault signal the MMU throws. */
export const PAGE_FAULT = new PageFaultSignal();

/**
 * One vCPU's memory management unit: guest paging (none, 32-bit with 4 MiB
 * pages, PAE with NX; global pages, CR0.WP, accessed/dirty bits, #PF error
 * codes) composed with the EPT of {@link PhysicalMemory}, cached in a
 * direct-mapped software TLB.
 *
 * Fast path: an ordinary access is a tag compare and one typed-array access
 * into the host chunk. Read, write and execute tags are separate, and each
 * exists for supervisor and user, so the CPL costs no branch per access
 * (the CPU selects the tag set on CPL changes). A write tag exists only
 * once the page is writable, its guest dirty bit is set and it is in the
 * dirty log, so dirty tracking costs nothing on the fast path. MMIO is never
 * cached: those accesses walk and go to the bus.
 */
export class Mmu {
  // Paging state the CPU mirrors here on every CR0/CR3/CR4/EFER change.
  /** CR0 as last set. */
  cr0 = 0;
  /** CR3 as last set. */
  cr3 = 0;
  /** CR4 as last set. */
  cr4 = 0;
  /** EFER.NXE. */
  nxe = false;
  /** PAE page-directory-pointer-table entries (lo, hi) loaded at the last CR3 load. */
  readonly pdpte = new Int32Array(8);

  /**
   * Mask applied to every guest-physical address: -1, or ~(1 << 20) while
   * the A20 gate is disabled (the 8086 wrap-around the PC keeps for old
   * real-mode code; the platform toggles it through port 0x92 or the 8042).
   */
  a20Mask = -1;

  /** Linear address of the last page fault (the CPU copies it to CR2), as an int32: `>>> 0` gives the address (docs/DESIGN.md, hot-path rules). */
  faultAddress = 0;
  /** Error code of the last page fault. */
  faultCode = 0;

  // TLB: tags per access kind and privilege; -1 is never a page number. The
  // arrays are views of one table in the host memory (TLB_TABLE_LAYOUT), so
  // compiled guest code reads them where they are.
  private tagRS: Int32Array;
  private tagRU: Int32Array;
  private tagWS: Int32Array;
  private tagWU: Int32Array;
  private tagXS: Int32Array;
  private tagXU: Int32Array;
  /** Byte offset of this TLB's table in the host memory's buffer (see {@link TLB_TABLE_LAYOUT}). */
  readonly tlbTable: number;
  private currentTags: Int32Array;
  /** Page of the last instruction fetch (a one-entry cache in front of the execute tags), or -1. */
  fetchVpn = -1;
  /** The host arena's bytes, for {@link Mmu.fetchVpn} (kept for the CPU's fetch window). */
  fetchMem: Uint8Array;
  /** Byte offset of {@link Mmu.fetchVpn}'s page in {@link Mmu.fetchMem}. */
  fetchOff = 0;
  /** Guest page number of {@link Mmu.fetchVpn}'s page. */
  fetchGpn = 0;
  /** Incremented whenever the fetch cache is dropped, so a CPU's own copy of it can tell it is stale. */
  fetchGen = 0;
  /**
   * A CPU's copy of the fetch cache (its instruction-fetch window): closed
   * (`winLen = -1`) whenever the fetch cache is dropped, so the CPU need
   * not check {@link Mmu.fetchGen} per instruction.
   */
  fetchWindow: FetchWindow | undefined;
  /** Current read tags (supervisor or user set). */
  tagR: Int32Array;
  /** Current write tags. */
  tagW: Int32Array;
  /** Current execute tags. */
  tagX: Int32Array;
  /** The host arena's byte view (`HostMemory.bytes`); every entry's page is at {@link Mmu.off}. */
  bytes: Uint8Array;
  /** The host arena's uint16 view (aligned 16-bit accesses). */
  words16: Uint16Array;
  /** The host arena's int32 view (aligned 32-bit accesses). */
  words32: Int32Array;
  /** Byte offset of each entry's host page in the arena (`hpn * 4096`, below 2^31). */
  off: Int32Array;
  /** Guest page number behind each entry (for code-page bookkeeping). */
  readonly gpnOf = new Float64Array(TLB_SIZE);
  private readonly flags = new Uint8Array(TLB_SIZE); // 1 = global, 2 = from a large page
  /** Per 2 MiB of linear space: 1 once a large page's piece there was cached, until INVLPG scans the span (so most INVLPGs skip the scan). */
  private readonly largeSpans = new Uint8Array(1 << (32 - PAGE_SHIFT - 9));
  private readonly inList = new Uint8Array(TLB_SIZE); // 1 while the index is in `listed`
  private readonly listed = new Int32Array(TLB_SIZE); // indices that may hold entries, for cheap flushes
  private listedCount = 0;
  private user = false;
  /** Guest-physical address of the last access that went to MMIO (set by the slow paths): a Float64Array slot, since it may pass 2^31 (docs/DESIGN.md, hot-path rules). */
  private readonly lastGpa = new Float64Array(1);
  /** TLB misses served (statistics). */
  misses = 0;
  /** Called after every access that went to the MMIO bus (the CPU re-checks interrupts: a device may have raised one). */
  mmioHook: (() => void) | undefined;

  /** @param memory - the machine's guest-physical memory */
  constructor(readonly memory: PhysicalMemory) {
    const host = memory.host;
    this.bytes = this.fetchMem = host.bytes;
    this.words16 = host.words16;
    this.words32 = host.words32;
    this.tlbTable = host.allocTable(TLB_TABLE_BYTES);
    const view = (k: number): Int32Array => new Int32Array(host.buffer, this.tlbTable + k * TLB_SIZE * 4, TLB_SIZE);
    this.tagRS = view(TLB_TABLE_LAYOUT.readSupervisor).fill(-1);
    this.tagRU = view(TLB_TABLE_LAYOUT.readUser).fill(-1);
    this.tagWS = view(TLB_TABLE_LAYOUT.writeSupervisor).fill(-1);
    this.tagWU = view(TLB_TABLE_LAYOUT.writeUser).fill(-1);
    this.tagXS = view(TLB_TABLE_LAYOUT.execSupervisor).fill(-1);
    this.tagXU = view(TLB_TABLE_LAYOUT.execUser).fill(-1);
    this.off = view(TLB_TABLE_LAYOUT.hostOffset);
    this.currentTags = new Int32Array(host.buffer, this.tlbTable + TLB_CURRENT_TAGS, 3);
    this.tagR = this.tagRS;
    this.tagW = this.tagWS;
    this.tagX = this.tagXS;
    this.setUser(false);
    host.onRelocate(() => {
      // Host page numbers stay the same and the table moved with the arena, so the TLB stays valid: only the views change.
      this.bytes = this.fetchMem = host.bytes;
      this.words16 = host.words16;
      this.words32 = host.words32;
      this.tagRS = view(TLB_TABLE_LAYOUT.readSupervisor);
      this.tagRU = view(TLB_TABLE_LAYOUT.readUser);
      this.tagWS = view(TLB_TABLE_LAYOUT.writeSupervisor);
      this.tagWU = view(TLB_TABLE_LAYOUT.writeUser);
      this.tagXS = view(TLB_TABLE_LAYOUT.execSupervisor);
      this.tagXU = view(TLB_TABLE_LAYOUT.execUser);
      this.off = view(TLB_TABLE_LAYOUT.hostOffset);
      this.currentTags = new Int32Array(host.buffer, this.tlbTable + TLB_CURRENT_TAGS, 3);
      this.setUser(this.user);
    });
    memory.ept.onInvalidate(() => this.flushAll());
    memory.onWriteProtect(() => this.flushWrites());
    memory.onCodeProtect((gpn) => this.flushWritesTo(gpn));
  }

  /** Enables or disables the A20 gate; translations change, so the TLB is flushed. */
  setA20(enabled: boolean): void {
    const mask = enabled ? -1 : ~(1 << 20);
    if (mask === this.a20Mask) return;
    this.a20Mask = mask;
    this.flushAll();
  }

  /** Selects supervisor (CPL 0-2) or user (CPL 3) permission checks. */
  setUser(user: boolean): void {
    this.user = user;
    this.dropFetchPage();
    this.tagR = user ? this.tagRU : this.tagRS;
    this.tagW = user ? this.tagWU : this.tagWS;
    this.tagX = user ? this.tagXU : this.tagXS;
    const current = this.currentTags;
    current[0] = this.tagR.byteOffset;
    current[1] = this.tagW.byteOffset;
    current[2] = this.tagX.byteOffset;
  }

  /** Whether user-mode checks are selected. */
  get isUser(): boolean {
    return this.user;
  }

  /**
   * Sets the paging registers. Flushes what the architecture flushes: a CR3
   * load drops non-global entries; a change of CR0.PG/WP or CR4.PSE/PAE/PGE
   * (or EFER.NXE) drops everything (Intel SDM Vol. 3 §4.10.4.1). The CPU
   * loads the PAE PDPTEs separately ({@link Mmu.loadPdptes}).
   */
  setPaging(cr0: number, cr3: number, cr4: number, nxe: boolean): void {
    const modeChanged = ((cr0 ^ this.cr0) & (CR0_PG | CR0_WP)) !== 0 || ((cr4 ^ this.cr4) & (CR4_PSE | CR4_PAE | CR4_PGE)) !== 0 || nxe !== this.nxe;
    const cr3Changed = cr3 !== this.cr3;
    this.cr0 = cr0;
    this.cr3 = cr3;
    this.cr4 = cr4;
    this.nxe = nxe;
    if (modeChanged) this.flushAll();
    else if (cr3Changed) this.flushNonGlobal();
  }

  /**
   * Loads the four PAE PDPTEs from the table at CR3 (MOV to CR3 in PAE mode,
   * Intel SDM Vol. 3 §4.4.1).
   * @returns false when a present PDPTE has reserved bits set (the CPU raises #GP(0))
   */
  loadPdptes(cr3: number): boolean {
    const base = (cr3 >>> 0) & 0xffffffe0;
    const tmp = new Int32Array(8);
    for (let i = 0; i < 4; i++) {
      const lo = this.physRead32(base + i * 8);
      const hi = this.physRead32(base + i * 8 + 4);
      if (lo & 1 && ((lo & 0x1e6) !== 0 || (hi & 0xfffffff0) !== 0)) return false;
      tmp[i * 2] = lo;
      tmp[i * 2 + 1] = hi;
    }
    this.pdpte.set(tmp);
    this.flushNonGlobal();
    return true;
  }

  // ---- flushing ----

  /** Drops every entry, global ones included. */
  flushAll(): void {
    const l = this.listed;
    for (let k = 0; k < this.listedCount; k++) {
      this.clearEntry(l[k]);
      this.inList[l[k]] = 0;
    }
    this.listedCount = 0;
  }

  /** Drops every non-global entry (CR3 load). */
  flushNonGlobal(): void {
    const l = this.listed;
    let keep = 0;
    for (let k = 0; k < this.listedCount; k++) {
      const i = l[k];
      if (this.flags[i] & 1) l[keep++] = i;
      else {
        this.clearEntry(i);
        this.inList[i] = 0;
      }
    }
    this.listedCount = keep;
  }

  /** Drops every writable entry (dirty-log reset, write protection). */
  flushWrites(): void {
    this.tagWS.fill(-1);
    this.tagWU.fill(-1);
  }

  /**
   * Drops the writable translations of guest page `gpn` only (it became a
   * code page): the entries that may hold a translation are listed, so this
   * costs a scan of them rather than a flush of every writable page.
   */
  flushWritesTo(gpn: number): void {
    const l = this.listed;
    for (let k = 0; k < this.listedCount; k++) {
      const i = l[k];
      if (this.gpnOf[i] === gpn) {
        this.tagWS[i] = -1;
        this.tagWU[i] = -1;
      }
    }
  }

  /** INVLPG: drops the translation of the page containing `la` (the whole large page if it is one). */
  invlpg(la: number): void {
    const vpn = la >>> PAGE_SHIFT;
    this.dropVpn(vpn);
    // A large page's 4 KiB pieces sit in their own entries: drop all of them.
    const span = this.cr4 & CR4_PAE ? 512 : 1024;
    const first = vpn - (vpn % span);
    const s0 = first >>> 9;
    const s1 = (first + span - 1) >>> 9;
    if (this.largeSpans[s0] === 0 && this.largeSpans[s1] === 0) return;
    for (let v = first; v < first + span; v++) {
      const i = v & TLB_MASK;
      if (this.flags[i] & 2 && this.tagRS[i] === v) this.dropVpn(v);
    }
    this.largeSpans[s0] = 0;
    this.largeSpans[s1] = 0;
  }

  private dropVpn(vpn: number): void {
    const i = vpn & TLB_MASK;
    if (this.tagRS[i] === vpn || this.tagRU[i] === vpn || this.tagWS[i] === vpn || this.tagWU[i] === vpn || this.tagXS[i] === vpn || this.tagXU[i] === vpn) {
      this.clearEntry(i); // stays listed; a later flush clears it again harmlessly
    }
  }

  /** Drops the fetch cache and closes the CPU's fetch window. */
  private dropFetchPage(): void {
    this.fetchVpn = -1;
    this.fetchGen++;
    if (this.fetchWindow) this.fetchWindow.winLen = -1;
  }

  private clearEntry(i: number): void {
    this.dropFetchPage();
    this.tagRS[i] = -1;
    this.tagRU[i] = -1;
    this.tagWS[i] = -1;
    this.tagWU[i] = -1;
    this.tagXS[i] = -1;
    this.tagXU[i] = -1;
    this.flags[i] = 0;
  }

  // ---- physical access for page walks ----

  /** Reads a 32-bit value at guest-physical `gpa` (through the EPT; MMIO goes to the bus). */
  physRead32(gpa: number): number {
    if (this.a20Mask !== -1 && gpa < 0x100000000) gpa = (gpa & this.a20Mask) >>> 0;
    const mem = this.memory;
    const hpn = mem.resolve(Math.floor(gpa / 4096), EPT_READ);
    if (hpn === NOT_RAM) return mem.mmio ? mem.mmio.read(gpa, 4) | 0 : -1;
    return this.words32[((hpn << PAGE_SHIFT) + (gpa % 4096)) >> 2];
  }

  /** Writes a 32-bit value at guest-physical `gpa` (A/D updates), dirty-logged. */
  physWrite32(gpa: number, value: number): void {
    if (this.a20Mask !== -1 && gpa < 0x100000000) gpa = (gpa & this.a20Mask) >>> 0;
    const mem = this.memory;
    const gpn = Math.floor(gpa / 4096);
    const hpn = mem.resolve(gpn, EPT_WRITE);
    if (hpn === NOT_RAM) {
      mem.mmio?.write(gpa, 4, value >>> 0);
      return;
    }
    mem.markDirty(gpn);
    this.words32[((hpn << PAGE_SHIFT) + (gpa % 4096)) >> 2] = value;
  }

  // ---- translation ----

  private fault(la: number, code: number): never {
    this.faultAddress = la | 0;
    this.faultCode = code;
    throw PAGE_FAULT;
  }

  /**
   * Translates linear `la` for `access` as user (`user`) or supervisor,
   * setting accessed/dirty bits, and fills the TLB when the target is RAM.
   * @returns the guest-physical address
   * @throws PAGE_FAULT (see {@link Mmu.faultAddress}/{@link Mmu.faultCode})
   */
  translate(la: number, access: number, user: boolean): number {
    la >>>= 0;
    const cr0 = this.cr0;
    let gpa: number;
    let uOk = true;
    let wOk = true; // guest paging allows writes (for the access's privilege)
    let wS = true; // supervisor may write
    let wU = true; // user may write
    let xOk = true;
    let global = false;
    let large = false;
    if ((cr0 & CR0_PG) === 0) {
      gpa = la;
    } else {
      const isWrite = access === ACCESS_WRITE;
      const errBase = (isWrite ? PF_WRITE : 0) | (user ? PF_USER : 0) | (access === ACCESS_EXEC && this.nxe && this.cr4 & CR4_PAE ? PF_FETCH : 0);
      const wp = (cr0 & CR0_WP) !== 0;
      if ((this.cr4 & CR4_PAE) === 0) {
        const pdeAddr = ((this.cr3 & 0xfffff000) >>> 0) + ((la >>> 22) << 2);
        const pde = this.physRead32(pdeAddr);
        if ((pde & 1) === 0) this.fault(la, errBase);
        if (pde & 0x80 && this.cr4 & CR4_PSE) {
          // 4 MiB page; without PSE-36 bits 21:13 are reserved (SDM Vol. 3 §4.3).
          if (pde & 0x3fe000) this.fault(la, errBase | PF_PRESENT | PF_RSVD);
          uOk = (pde & 4) !== 0;
          wU = (pde & 2) !== 0 && uOk;
          wS = (pde & 2) !== 0 || !wp;
          if (user ? !uOk || (isWrite && !wU) : isWrite && !wS) this.fault(la, errBase | PF_PRESENT);
          const set = 0x20 | (isWrite ? 0x40 : 0);
          if ((pde & set) !== set) this.physWrite32(pdeAddr, pde | set);
          global = (pde & 0x100) !== 0 && (this.cr4 & CR4_PGE) !== 0;
          large = true;
          gpa = ((pde & 0xffc00000) >>> 0) + (la & 0x3fffff);
          wOk = isWrite || (pde & 0x40) !== 0;
        } else {
          const pteAddr = ((pde & 0xfffff000) >>> 0) + (((la >>> 12) & 0x3ff) << 2);
          const pte = this.physRead32(pteAddr);
          if ((pte & 1) === 0) this.fault(la, errBase);
          uOk = (pde & pte & 4) !== 0;
          const w = (pde & pte & 2) !== 0;
          wU = w && uOk;
          wS = w || !wp;
          if (user ? !uOk || (isWrite && !wU) : isWrite && !wS) this.fault(la, errBase | PF_PRESENT);
          if ((pde & 0x20) === 0) this.physWrite32(pdeAddr, pde | 0x20);
          const set = 0x20 | (isWrite ? 0x40 : 0);
          if ((pte & set) !== set) this.physWrite32(pteAddr, pte | set);
          global = (pte & 0x100) !== 0 && (this.cr4 & CR4_PGE) !== 0;
          gpa = ((pte & 0xfffff000) >>> 0) + (la & 0xfff);
          wOk = isWrite || (pte & 0x40) !== 0;
        }
      } else {
        // PAE (SDM Vol. 3 §4.4): PDPTE registers, 64-bit entries, NX in bit 63.
        const nxe = this.nxe;
        const rsvdHi = nxe ? 0x7ffffff0 : 0xfffffff0 | 0;
        const i = la >>> 30;
        const pdpLo = this.pdpte[i * 2];
        if ((pdpLo & 1) === 0) this.fault(la, errBase);
        const pdeAddr = (this.pdpte[i * 2 + 1] & 0xf) * 0x100000000 + ((pdpLo & 0xfffff000) >>> 0) + (((la >>> 21) & 511) << 3);
        const pdeLo = this.physRead32(pdeAddr);
        if ((pdeLo & 1) === 0) this.fault(la, errBase);
        const pdeHi = this.physRead32(pdeAddr + 4);
        if (pdeHi & rsvdHi) this.fault(la, errBase | PF_PRESENT | PF_RSVD);
        let nx = nxe && pdeHi < 0;
        if (pdeLo & 0x80) {
          if (pdeLo & 0x1fe000) this.fault(la, errBase | PF_PRESENT | PF_RSVD);
          uOk = (pdeLo & 4) !== 0;
          wU = (pdeLo & 2) !== 0 && uOk;
          wS = (pdeLo & 2) !== 0 || !wp;
          xOk = !nx;
          if (user ? !uOk || (isWrite && !wU) : isWrite && !wS) this.fault(la, errBase | PF_PRESENT);
          if (access === ACCESS_EXEC && nx) this.fault(la, errBase | PF_PRESENT);
          const set = 0x20 | (isWrite ? 0x40 : 0);
          if ((pdeLo & set) !== set) this.physWrite32(pdeAddr, pdeLo | set);
          global = (pdeLo & 0x100) !== 0 && (this.cr4 & CR4_PGE) !== 0;
          large = true;
          gpa = (pdeHi & 0xf) * 0x100000000 + ((pdeLo & 0xffe00000) >>> 0) + (la & 0x1fffff);
          wOk = isWrite || (pdeLo & 0x40) !== 0;
        } else {
          const pteAddr = (pdeHi & 0xf) * 0x100000000 + ((pdeLo & 0xfffff000) >>> 0) + (((la >>> 12) & 511) << 3);
          const pteLo = this.physRead32(pteAddr);
          if ((pteLo & 1) === 0) this.fault(la, errBase);
          const pteHi = this.physRead32(pteAddr + 4);
          if (pteHi & rsvdHi) this.fault(la, errBase | PF_PRESENT | PF_RSVD);
          nx = nx || (nxe && pteHi < 0);
          uOk = (pdeLo & pteLo & 4) !== 0;
          const w = (pdeLo & pteLo & 2) !== 0;
          wU = w && uOk;
          wS = w || !wp;
          xOk = !nx;
          if (user ? !uOk || (isWrite && !wU) : isWrite && !wS) this.fault(la, errBase | PF_PRESENT);
          if (access === ACCESS_EXEC && nx) this.fault(la, errBase | PF_PRESENT);
          if ((pdeLo & 0x20) === 0) this.physWrite32(pdeAddr, pdeLo | 0x20);
          const set = 0x20 | (isWrite ? 0x40 : 0);
          if ((pteLo & set) !== set) this.physWrite32(pteAddr, pteLo | set);
          global = (pteLo & 0x100) !== 0 && (this.cr4 & CR4_PGE) !== 0;
          gpa = (pteHi & 0xf) * 0x100000000 + ((pteLo & 0xfffff000) >>> 0) + (la & 0xfff);
          wOk = isWrite || (pteLo & 0x40) !== 0;
        }
      }
    }
    if (this.a20Mask !== -1 && gpa < 0x100000000) gpa = (gpa & this.a20Mask) >>> 0;
    this.fill(la >>> PAGE_SHIFT, Math.floor(gpa / 4096), access, uOk, wOk && wS, wOk && wU, xOk, global, large);
    return gpa;
  }

  /** Resolves the host page and fills TLB entry for `vpn` when the target is RAM. */
  private fill(vpn: number, gpn: number, access: number, uOk: boolean, wS: boolean, wU: boolean, xOk: boolean, global: boolean, large: boolean): void {
    this.misses++;
    const mem = this.memory;
    const need = access === ACCESS_WRITE ? EPT_WRITE : access === ACCESS_EXEC ? EPT_EXEC : EPT_READ;
    const hpn = mem.resolve(gpn, need);
    if (hpn === NOT_RAM) return; // MMIO or EPT-denied: the caller goes to the bus
    const perms = mem.ept.lastPerms;
    const i = vpn & TLB_MASK;
    if (this.tagRS[i] !== vpn && this.tagXS[i] !== vpn && this.tagWS[i] !== vpn) this.clearEntry(i);
    if (this.inList[i] === 0) {
      this.inList[i] = 1;
      this.listed[this.listedCount++] = i;
    }
    this.flags[i] = (global ? 1 : 0) | (large ? 2 : 0);
    if (large) this.largeSpans[vpn >>> 9] = 1;
    this.off[i] = hpn << PAGE_SHIFT;
    this.gpnOf[i] = gpn;
    if (perms & EPT_READ) {
      this.tagRS[i] = vpn;
      if (uOk) this.tagRU[i] = vpn;
    }
    if (perms & EPT_EXEC && xOk) {
      this.tagXS[i] = vpn;
      if (uOk) this.tagXU[i] = vpn;
    }
    if (access === ACCESS_WRITE) {
      mem.markDirty(gpn);
      // Pages holding decoded code stay slow for writes so each write invalidates.
      if (perms & EPT_WRITE && (gpn >= mem.trackedPages || mem.codePages[gpn] === 0)) {
        if (wS) this.tagWS[i] = vpn;
        if (wU) this.tagWU[i] = vpn;
      }
    }
  }

  // ---- accesses (linear addresses; the CPU applies segmentation first) ----

  /** Reads a byte at linear `la`. */
  read8(la: number): number {
    const vpn = la >>> 12;
    const i = vpn & TLB_MASK;
    if (this.tagR[i] === vpn) return this.bytes[this.off[i] + (la & 0xfff)];
    return this.read8Slow(la);
  }

  /** Reads a 16-bit value at linear `la` (zero-extended). */
  read16(la: number): number {
    const vpn = la >>> 12;
    const i = vpn & TLB_MASK;
    const o = la & 0xfff;
    if (this.tagR[i] === vpn && o !== 0xfff) {
      const a = this.off[i] + o;
      if ((a & 1) === 0) return this.words16[a >> 1];
      const m = this.bytes;
      return m[a] | (m[a + 1] << 8);
    }
    return this.read16Slow(la);
  }

  private read16Slow(la: number): number {
    if ((la & 0xfff) !== 0xfff) {
      const gpa = this.translate(la, ACCESS_READ, this.user);
      const vpn = la >>> 12;
      if (this.tagR[vpn & TLB_MASK] === vpn) return this.read16(la);
      const bus = this.memory.mmio;
      this.lastGpa[0] = gpa;
      const v = bus ? bus.read(gpa, 2) : 0xffff;
      this.mmioHook?.();
      return v;
    }
    this.probeRead(la, 2);
    return this.read8(la) | (this.read8(la + 1) << 8);
  }

  /** Reads a 32-bit value at linear `la` (as int32). */
  read32(la: number): number {
    const vpn = la >>> 12;
    const i = vpn & TLB_MASK;
    const o = la & 0xfff;
    if (this.tagR[i] === vpn && o <= 0xffc) {
      const a = this.off[i] + o;
      if ((a & 3) === 0) return this.words32[a >> 2];
      const m = this.bytes;
      return m[a] | (m[a + 1] << 8) | (m[a + 2] << 16) | (m[a + 3] << 24);
    }
    return this.read32Slow(la);
  }

  /** Writes a byte at linear `la`. */
  write8(la: number, v: number): void {
    const vpn = la >>> 12;
    const i = vpn & TLB_MASK;
    if (this.tagW[i] === vpn) {
      this.bytes[this.off[i] + (la & 0xfff)] = v;
      return;
    }
    this.write8Slow(la, v);
  }

  /** Writes a 16-bit value at linear `la`. */
  write16(la: number, v: number): void {
    const vpn = la >>> 12;
    const i = vpn & TLB_MASK;
    const o = la & 0xfff;
    if (this.tagW[i] === vpn && o !== 0xfff) {
      const a = this.off[i] + o;
      if ((a & 1) === 0) this.words16[a >> 1] = v;
      else {
        const m = this.bytes;
        m[a] = v;
        m[a + 1] = v >> 8;
      }
      return;
    }
    this.writeSlow(la, v, 2);
  }

  /** Writes a 32-bit value at linear `la`. */
  write32(la: number, v: number): void {
    const vpn = la >>> 12;
    const i = vpn & TLB_MASK;
    const o = la & 0xfff;
    if (this.tagW[i] === vpn && o <= 0xffc) {
      const a = this.off[i] + o;
      if ((a & 3) === 0) this.words32[a >> 2] = v;
      else {
        const m = this.bytes;
        m[a] = v;
        m[a + 1] = v >> 8;
        m[a + 2] = v >> 16;
        m[a + 3] = v >> 24;
      }
      return;
    }
    this.writeSlow(la, v, 4);
  }

  /** Fetches an instruction byte at linear `la` (execute permission). */
  fetch8(la: number): number {
    const vpn = la >>> 12;
    if (vpn === this.fetchVpn) return this.fetchMem[this.fetchOff + (la & 0xfff)];
    const i = vpn & TLB_MASK;
    if (this.tagX[i] === vpn) {
      this.fetchVpn = vpn;
      this.fetchMem = this.bytes;
      this.fetchOff = this.off[i];
      this.fetchGpn = this.gpnOf[i];
      return this.bytes[this.off[i] + (la & 0xfff)];
    }
    return this.fetch8Slow(la);
  }

  /**
   * Makes the page of `la` the fetch page ({@link Mmu.fetchVpn},
   * {@link Mmu.fetchMem}, {@link Mmu.fetchOff}, {@link Mmu.fetchGpn}) without
   * reading it, translating for execute when the TLB misses, so a decoder can
   * look at the bytes in place.
   * @returns false when the page is not RAM or ROM (MMIO: the CPU fetches through the bus)
   * @throws PAGE_FAULT like an instruction fetch
   */
  fetchPage(la: number): boolean {
    const vpn = la >>> 12;
    if (vpn === this.fetchVpn) return true;
    const i = vpn & TLB_MASK;
    if (this.tagX[i] !== vpn) {
      this.translate(la, ACCESS_EXEC, this.user);
      if (this.tagX[i] !== vpn) return false;
    }
    this.fetchVpn = vpn;
    this.fetchMem = this.bytes;
    this.fetchOff = this.off[i];
    this.fetchGpn = this.gpnOf[i];
    return true;
  }

  /**
   * Makes sure `la .. la+size-1` is writable now (fills the TLB or faults)
   * without writing: instructions check every destination before they change
   * any state, so a fault leaves the instruction restartable.
   */
  probeWrite(la: number, size: number): void {
    const vpn = la >>> 12;
    if (this.tagW[vpn & TLB_MASK] !== vpn) this.translate(la, ACCESS_WRITE, this.user);
    const last = (la + size - 1) >>> 12;
    if (last !== vpn && this.tagW[last & TLB_MASK] !== last) this.translate(last << 12, ACCESS_WRITE, this.user); // CR2 = first byte of the second page
  }

  /** Makes sure `la .. la+size-1` is readable now (fills the TLB or faults). */
  probeRead(la: number, size: number): void {
    const vpn = la >>> 12;
    if (this.tagR[vpn & TLB_MASK] !== vpn) this.translate(la, ACCESS_READ, this.user);
    const last = (la + size - 1) >>> 12;
    if (last !== vpn && this.tagR[last & TLB_MASK] !== last) this.translate(last << 12, ACCESS_READ, this.user);
  }

  private read8Slow(la: number): number {
    const gpa = this.translate(la, ACCESS_READ, this.user);
    const vpn = la >>> 12;
    const i = vpn & TLB_MASK;
    if (this.tagR[i] === vpn) return this.bytes[this.off[i] + (la & 0xfff)];
    this.lastGpa[0] = gpa;
    const bus = this.memory.mmio;
    const v = bus ? bus.read(gpa, 1) : 0xff;
    this.mmioHook?.();
    return v;
  }

  private read32Slow(la: number): number {
    if ((la & 0xfff) <= 0xffc) {
      const gpa = this.translate(la, ACCESS_READ, this.user);
      const vpn = la >>> 12;
      if (this.tagR[vpn & TLB_MASK] === vpn) return this.read32(la);
      const bus = this.memory.mmio;
      this.lastGpa[0] = gpa;
      const v = bus ? bus.read(gpa, 4) | 0 : -1;
      this.mmioHook?.();
      return v;
    }
    // Crosses a page: both pages are checked before anything is returned.
    this.probeRead(la, 4);
    return this.read8(la) | (this.read8(la + 1) << 8) | (this.read8(la + 2) << 16) | (this.read8(la + 3) << 24);
  }

  private write8Slow(la: number, v: number): void {
    const gpa = this.translate(la, ACCESS_WRITE, this.user);
    const vpn = la >>> 12;
    const i = vpn & TLB_MASK;
    if (this.tagW[i] === vpn) {
      this.bytes[this.off[i] + (la & 0xfff)] = v;
      return;
    }
    this.writeUncached(gpa, v, 1);
  }

  private writeSlow(la: number, v: number, size: 2 | 4): void {
    const o = la & 0xfff;
    if (o <= 0x1000 - size) {
      const gpa = this.translate(la, ACCESS_WRITE, this.user);
      const vpn = la >>> 12;
      if (this.tagW[vpn & TLB_MASK] === vpn) {
        if (size === 2) this.write16(la, v);
        else this.write32(la, v);
        return;
      }
      this.writeUncached(gpa, v, size);
      return;
    }
    this.probeWrite(la, size);
    for (let k = 0; k < size; k++) this.write8(la + k, v >>> (8 * k));
  }

  /** A write that the TLB does not cache: MMIO, ROM, or a RAM page holding decoded code. */
  private writeUncached(gpa: number, v: number, size: 1 | 2 | 4): void {
    const mem = this.memory;
    const gpn = Math.floor(gpa / 4096);
    const hpn = mem.resolve(gpn, EPT_WRITE);
    if (hpn === NOT_RAM) {
      this.lastGpa[0] = gpa;
      mem.mmio?.write(gpa, size, size === 4 ? v >>> 0 : v & ((1 << (size * 8)) - 1));
      this.mmioHook?.();
      return;
    }
    mem.markDirty(gpn);
    const m = this.bytes;
    const a = (hpn << PAGE_SHIFT) + (gpa % 4096);
    for (let k = 0; k < size; k++) m[a + k] = v >>> (8 * k);
  }

  private fetch8Slow(la: number): number {
    const gpa = this.translate(la, ACCESS_EXEC, this.user);
    const vpn = la >>> 12;
    const i = vpn & TLB_MASK;
    if (this.tagX[i] === vpn) return this.bytes[this.off[i] + (la & 0xfff)];
    // Executing from MMIO (or an EPT execute-denied page that a handler did not fix).
    const bus = this.memory.mmio;
    return bus ? bus.read(gpa, 1) : 0xff;
  }

  /** Guest-physical address of the last MMIO access (diagnostics). */
  get lastMmioAddress(): number {
    return this.lastGpa[0];
  }
}
