// The block compiler: hot decoded blocks (decoder.ts records) become
// WebAssembly functions (region-codegen.ts generates them), specialised on each
// record's operands. It sits on top of the decoded-block interpreter
// (record-ops.ts) and agrees with it instruction by instruction. This file
// chooses what a compiled function covers and keeps the table of them.
//
// - A compiled function covers a region: a hot block and the decoded blocks
//   reachable from it by direct branches that the interpreter ran often.
//   Inside it, control moves between blocks through a jump table on the
//   block, so loops that span blocks stay in one function; any target it
//   does not hold returns to the run loop. Regions are large (hundreds of
//   blocks): V8 compiles WebAssembly at once with a baseline compiler and
//   optimizes hot functions in the background, so size costs little, while
//   every return to the run loop costs a dispatch.
// - With 32-bit code, blocks of a few other pages may join (a loop or a
//   call that crosses a page boundary: Linux's decompressor spent a fifth of
//   its time going through the run loop for one such loop). A block of
//   another page starts with a check that its linear page still translates,
//   for execution, to the host page it was decoded from (its execute TLB
//   entry); a write to any of the region's pages drops the region.
// - A region is specialised on what held when it was compiled, which it
//   checks on entry and after every instruction the interpreter runs for
//   it: its pages lie inside the CS limit, flat segments, the stack size.
//   It reads the TLB tags of whichever privilege is current.
// - Compiled code belongs to block ids, so it is dropped exactly when the
//   decoded blocks are (a write to a page, a full flush, an EPT change, a
//   move of the host memory); the table is bounded in regions and in code.
import type { Cpu } from "./cpu.js";
import { GENERIC_BLOCK, type DecodeCacheListener } from "./decode-cache.js";
import * as D from "./decoder.js";
import { successors } from "./region-blocks.js";
import { buildRegionModule, type RegionPlan } from "./region-codegen.js";
import { RegionTable, WASM_REGIONS } from "./region-table.js";
import { TLB_CURRENT_TAGS, TLB_SIZE, TLB_TABLE_LAYOUT } from "@typevisor/mmu-ept";

/** Options of the block compiler (`x86Cpu({ jit })`, `new Cpu(..., { jit })`). */
export interface JitOptions {
  /**
   * Times a block starts in the interpreter before it is compiled (default
   * {@link DEFAULT_JIT_THRESHOLD}); 0 compiles every block the first time it runs.
   */
  threshold?: number;
}

/**
 * Block starts before a block is compiled, unless configured. Compiling
 * only pays off for code that keeps running; most of Linux's
 * initialisation runs once, while the decompressor's loops reach any
 * threshold within milliseconds. Booting Linux (bench/boot-linux,
 * alternating runs) took 9.3 s at 60000, 8.3 to 8.6 s at 20000 and 8.5 s
 * at 8000.
 */
export const DEFAULT_JIT_THRESHOLD = 20000;

/** Whether the block compiler can run here: it needs WebAssembly, and guest memory in a WebAssembly memory. */
export function blockCompilerAvailable(cpu: Cpu): boolean {
  return WASM_REGIONS && cpu.memory.host.memory !== undefined;
}

/** Pages a region's blocks come from at most (the entry page included). */
const MAX_REGION_PAGES = 4;
/** Blocks per region at most. */
const MAX_REGION_BLOCKS = 512;
/** Instructions per region at most. */
const MAX_REGION_INSNS = 4000;
/** Live regions at most; one more drops them all (like a translation-cache flush). */
const MAX_REGIONS = 4096;
/** Total WebAssembly code (bytes) at most before everything compiled is dropped. */
const MAX_CODE_BYTES = 64 << 20;

/** A compiled region: its slot in the region table, the block ids it is the code of, and its code size. */
interface Region {
  slot: number;
  ids: number[];
  bytes: number;
  live: boolean;
}

/** The compiled code that depends on one page: regions holding its blocks, and its blocks found not compilable. */
interface PageCode {
  regions: Region[];
  failed: number[];
}

/** A page whose blocks a region holds, by its offset in pages from the entry page. */
interface RegionPage {
  delta: number;
  map: Uint16Array;
  /** Byte offset of its host page in the arena, as the TLB has it. */
  hostOff: number;
  gpn: number;
}

/** Result of compiling one region. */
interface Compiled {
  slot: number;
  /** The entry page's blocks (the region is entered at these). */
  blocks: number[];
  bytes: number;
  /** Guest pages of the blocks beyond the entry page. */
  foreign: number[];
}

/** What {@link BlockCompiler.onCompile} is given for each region. */
export interface CompiledRegion {
  /** region_<guest page>_<offset of the entry block>. */
  name: string;
  /** The WebAssembly module. */
  wasm: Uint8Array;
}

/**
 * The block compiler of one vCPU: use counts per decoded block, the table
 * of compiled functions by block id, and region selection.
 */
export class BlockCompiler implements DecodeCacheListener {
  /**
   * @internal The region-table slot of each block id's compiled region (0: none).
   * `table.enter(slot, eip, n, budget)` runs it from EIP with `n`
   * instructions retired in the slice, and returns the new count, or its
   * complement (`~count`, negative) when the interpreter must run the
   * instruction at the new EIP (the region cannot run here, or an access
   * took a slow path).
   */
  readonly slots: Int32Array;
  /** @internal The vCPU's region table (region-table.ts). */
  readonly table: RegionTable;
  /** Starts of each block in the interpreter since it was decoded. */
  readonly hits: Uint16Array;
  /** Per block id: 0 not compiled, 1 compiled (in a region), 2 not compilable. */
  readonly states: Uint8Array;
  /** Block starts before compiling. */
  readonly threshold: number;
  /** @internal the run loop's counts: dispatches, times it ran the interpreter instead, instructions retired by compiled code (Float64Array slots: they pass 2^31; docs/DESIGN.md, hot-path rules). */
  readonly counts = new Float64Array(3);
  /** Times the run loop looked for compiled code (statistics). */
  get dispatches(): number {
    return this.counts[0];
  }
  /** Times it ran the interpreter instead (statistics). */
  get interpreted(): number {
    return this.counts[1];
  }
  /** Instructions retired by compiled code (statistics). */
  get compiledInstructions(): number {
    return this.counts[2];
  }
  /** Regions compiled (statistics). */
  compiled = 0;
  /** Regions dropped with their page or by a flush (statistics). */
  dropped = 0;
  /** Full drops of the compiled-code cache because it hit its bounds (statistics). */
  evictions = 0;
  /** Compilations that failed (the generated code did not build: a bug; the block stays interpreted). */
  failures = 0;
  /** Called with each compiled region (diagnostics: dumping what the compiler makes of a guest). */
  onCompile: ((region: CompiledRegion) => void) | undefined;
  /** Why the last compilation failed (diagnostics). */
  lastFailure: unknown;
  private liveRegions = 0;
  private liveBytes = 0;
  /** Compiled code per page key (gpn * 2 + code32): the regions holding its blocks, so a page's code can be dropped. */
  private readonly byPage = new Map<number, PageCode>();

  constructor(
    private readonly cpu: Cpu,
    maxBlocks: number,
    options: JitOptions,
  ) {
    this.slots = new Int32Array(maxBlocks + 1);
    this.table = new RegionTable(cpu, maxBlocks);
    this.hits = new Uint16Array(maxBlocks + 1);
    this.states = new Uint8Array(maxBlocks + 1);
    this.threshold = Math.max(0, Math.min(0xfffe, Math.floor(options.threshold ?? DEFAULT_JIT_THRESHOLD)));
  }

  /** Regions alive now (statistics). */
  get regions(): number {
    return this.liveRegions;
  }

  /** Compiled code alive now, in bytes of WebAssembly (statistics). */
  get codeBytes(): number {
    return this.liveBytes;
  }

  /** Drops the compiled code of page `gpn` (its blocks were dropped), and every region holding a block of it. */
  droppedPage(gpn: number): void {
    for (let k = 0; k < 2; k++) {
      const key = gpn * 2 + k;
      const pc = this.byPage.get(key);
      if (pc === undefined) continue;
      for (const r of pc.regions) this.kill(r);
      for (const id of pc.failed) if (this.states[id] === 2) this.states[id] = 0;
      this.byPage.delete(key);
    }
  }

  /** Drops every compiled function (the decoded blocks were flushed, the cache is full, or the host memory moved). */
  droppedAll(): void {
    for (const pc of this.byPage.values()) {
      for (const r of pc.regions) this.kill(r);
      for (const id of pc.failed) if (this.states[id] === 2) this.states[id] = 0;
    }
    this.byPage.clear();
  }

  /** Takes a live region out of the table (its blocks run interpreted, and count toward compiling again). */
  private kill(r: Region): void {
    if (!r.live) return;
    r.live = false;
    for (const id of r.ids)
      if (this.slots[id] === r.slot) {
        this.slots[id] = 0;
        this.states[id] = 0;
      }
    this.table.release(r.slot);
    this.liveRegions--;
    this.liveBytes -= r.bytes;
    this.dropped++;
  }

  /** The code registry of page key `key`, created when missing. */
  private pageCode(key: number): PageCode {
    let pc = this.byPage.get(key);
    if (pc === undefined) {
      pc = { regions: [], failed: [] };
      this.byPage.set(key, pc);
    }
    return pc;
  }

  /** A block id was (re)assigned by the decode cache: it starts cold. */
  assigned(id: number): void {
    this.hits[id] = 0;
    this.slots[id] = 0;
    this.states[id] = 0;
  }

  /**
   * Compiles the region entered at block `b` (at EIP `eip`, in the page map
   * `map` of guest page `gpn`) and enters it in the table.
   */
  compile(b: number, eip: number, map: Uint16Array, gpn: number): void {
    const cpu = this.cpu;
    if (this.liveRegions >= MAX_REGIONS || this.liveBytes >= MAX_CODE_BYTES) {
      this.droppedAll();
      this.evictions++;
    }
    const off = (cpu.csBase + eip) & 0xfff;
    let res: Compiled | undefined;
    try {
      res = this.build(b, off, map, cpu.code32, gpn, ((cpu.csBase + eip) >>> 12) & 0xfffff);
    } catch (e) {
      this.failures++;
      this.lastFailure = e;
      res = undefined;
    }
    const code32 = cpu.code32 ? 1 : 0;
    if (res === undefined) {
      this.states[b] = 2;
      this.pageCode(gpn * 2 + code32).failed.push(b);
      return;
    }
    this.compiled++;
    this.liveRegions++;
    this.liveBytes += res.bytes;
    const region: Region = { slot: res.slot, ids: [], bytes: res.bytes, live: true };
    // Only the entry page's blocks enter the region: its code is laid out relative to that page.
    for (const id of res.blocks) {
      if (id === b || this.states[id] === 0) {
        this.slots[id] = res.slot;
        this.states[id] = 1;
        region.ids.push(id);
      }
    }
    this.pageCode(gpn * 2 + code32).regions.push(region);
    for (const f of res.foreign) this.pageCode(f * 2 + code32).regions.push(region);
  }

  /**
   * Chooses the region's blocks and compiles its function. `vpn0` is the
   * linear page of the entry block; with 32-bit code the region may also
   * take hot blocks of other pages (a loop or a call that crosses a page
   * boundary), each entered only after a check that its linear page still
   * translates, for execution, to the host page it was decoded from.
   */
  private build(b: number, off0: number, map: Uint16Array, code32: boolean, gpn: number, vpn0: number): Compiled | undefined {
    const cpu = this.cpu;
    const mmu = cpu.mmu;
    const dc = cpu.decoded;
    const rec = dc.rec;
    // A block whose first record is the generic one gains nothing from compiling (it is also what an uncached page uses).
    if ((rec[dc.bStart[b]] & 0xff) === D.H_GENERIC) return undefined;
    // Pages of the region by offset from the entry page (index 0).
    const pages: RegionPage[] = [{ delta: 0, map, hostOff: 0, gpn }];
    const crossPages = code32 && cpu.ipMask === -1;
    const tlbMask = mmu.tagX.length - 1;
    /** The region's page for page delta `d` (entered in `pages` when `add`), or undefined when its blocks cannot be used. */
    const pageAt = (d: number, add: boolean): RegionPage | undefined => {
      for (const p of pages) if (p.delta === d) return p;
      if (!crossPages || pages.length >= MAX_REGION_PAGES) return undefined;
      const v = vpn0 + d;
      if (v < 0 || v > 0xfffff || mmu.tagX[v & tlbMask] !== v) return undefined;
      const pg = mmu.gpnOf[v & tlbMask];
      const m = dc.peekMap(pg, code32);
      if (m === undefined || m === dc.uncached) return undefined;
      const p = { delta: d, map: m, hostOff: mmu.off[v & tlbMask], gpn: pg };
      if (add) pages.push(p);
      return p;
    };
    // The region: block b, then blocks reachable by direct branches and fall-through, breadth first.
    const offs: number[] = [off0];
    const ids: number[] = [b];
    const seen = new Set<number>([off0]);
    let insns = dc.bCount[b];
    // Successors must have run often in the interpreter (1/64 of the compile threshold): a path that never ran is likely cold.
    const minHits = this.threshold >> 6;
    for (let q = 0; q < offs.length; q++) {
      const succ = successors(rec, dc.bStart[ids[q]], dc.bCount[ids[q]], offs[q], dc.bBytes[ids[q]]);
      for (const so of succ) {
        if (seen.has(so)) continue;
        seen.add(so);
        const page = pageAt(so >> 12, false);
        if (page === undefined) continue;
        const id = page.map[so & 0xfff];
        if (id <= GENERIC_BLOCK || this.hits[id] < minHits) continue;
        if (offs.length >= MAX_REGION_BLOCKS || insns + dc.bCount[id] > MAX_REGION_INSNS) continue;
        pageAt(so >> 12, true);
        offs.push(so);
        ids.push(id);
        insns += dc.bCount[id];
      }
    }
    let fastSegs = 0;
    let zeroSegs = 0;
    for (let i = 0; i < 6; i++)
      if (cpu.segFast[i] === 1) {
        fastSegs |= 1 << i;
        if (cpu.segBase[i] === 0) zeroSegs |= 1 << i;
      }
    // The span of EIP the region's pages cover, relative to the entry page's start: the region checks it against the CS limit on entry.
    const deltas = pages.map((p) => p.delta);
    const slot = this.table.allocate();
    const plan: RegionPlan = {
      id: b,
      rec,
      offs,
      ids,
      bStart: dc.bStart,
      bCount: dc.bCount,
      bBytes: dc.bBytes,
      pageOf: offs.map((o) => pages.findIndex((p) => p.delta === o >> 12)),
      pages,
      spanLo: Math.min(...deltas) * 4096,
      spanHi: Math.max(...deltas) * 4096 + 4095,
      code32,
      fastSegs,
      zeroSegs,
      stack32: cpu.stack32,
    };
    const tables = {
      currentTags: mmu.tlbTable + TLB_CURRENT_TAGS,
      off: mmu.tlbTable + TLB_TABLE_LAYOUT.hostOffset * TLB_SIZE * 4,
      state: cpu.stateOffset,
    };
    let module;
    try {
      module = buildRegionModule(plan, tables, cpu.memory.host.buffer.byteLength >>> 16);
      this.table.instantiate(module.bytes, slot);
    } catch (e) {
      this.table.release(slot);
      throw e;
    }
    this.table.maps[b] = map;
    // The region's name says where its code comes from.
    this.onCompile?.({ name: `region_${gpn.toString(16)}_${off0.toString(16)}`, wasm: module.bytes });
    const used = new Set(plan.pageOf);
    return {
      slot,
      blocks: ids.filter((_, q) => plan.pageOf[q] === 0),
      bytes: module.bytes.length,
      foreign: pages.filter((_, i) => i > 0 && used.has(i)).map((p) => p.gpn),
    };
  }
}
