// The decoded-instruction cache: instructions are decoded once into compact
// records (see decoder.ts), grouped in blocks that end at a control transfer,
// and found again by guest-physical page and offset. Pages are write-protected
// through mmu-ept's code-page map, so a write to one (self-modifying code,
// a loader reusing the page) drops what was decoded from it.

/** int32 words per record: [id | length | size | sub | A | B], [EA form], [displacement], [immediate]. */
export const REC_STRIDE = 4;
/** Records in the pool (a full pool flushes the whole cache, like a translation cache). */
const MAX_RECORDS = 1 << 19;
/** Highest block id (ids are stored in 16-bit page maps; 0 means "not decoded"). */
export const MAX_BLOCKS = 0xffff;
/** Pages with a block map at once (each map is 8 KiB). */
const MAX_PAGES = 2048;
/** Entries of the direct-mapped page-map cache in front of the page table (a power of two). */
const HOT_PAGES = 256;
/** Instructions per block at most. */
export const MAX_BLOCK_RECORDS = 32;
/** Block 1: one generic record, for pages that are not cached (see {@link DecodeCache.strikes}). */
export const GENERIC_BLOCK = 1;
/** Invalidations of one page after which it stays uncached (code and written data share it). */
const STRIKE_LIMIT = 8;
/**
 * Every this many invalidations, and every this many times an uncached page
 * is entered, all strike counts halve: a page that stops being written (or
 * is reused for code later) is cached again.
 */
const STRIKE_DECAY = 4096;

/** What the decode cache tells the block compiler, so compiled code lives exactly as long as its blocks. */
export interface DecodeCacheListener {
  /** Block `id` was (re)assigned to newly decoded code. */
  assigned(id: number): void;
  /** The blocks decoded from guest page `gpn` were dropped. */
  droppedPage(gpn: number): void;
  /** Every block was dropped. */
  droppedAll(): void;
}

/**
 * Decoded blocks of one vCPU, keyed by guest-physical page and code-segment
 * size. A block is `bCount` consecutive records starting at record word
 * `bStart` and covering `bBytes` bytes of one page; a page's map gives the
 * block that starts at each byte offset. Everything is preallocated typed
 * arrays except the page maps, which are recycled.
 */
export class DecodeCache {
  /** The records (REC_STRIDE words each). */
  readonly rec = new Int32Array(MAX_RECORDS * REC_STRIDE);
  /** First free record word. */
  recTop = REC_STRIDE;
  /** First record word of each block. */
  readonly bStart = new Int32Array(MAX_BLOCKS + 1);
  /** Instructions in each block (a fused record counts two). */
  readonly bCount = new Uint8Array(MAX_BLOCKS + 1);
  /** Bytes each block covers (from its first instruction to the end of its last). */
  readonly bBytes = new Uint16Array(MAX_BLOCKS + 1);
  /** Next free block id. */
  blockTop = GENERIC_BLOCK + 1;
  /** A page map with no blocks (never written). */
  readonly empty = new Uint16Array(4096);
  /** A page map where every offset runs the generic record (uncached pages). */
  readonly uncached = new Uint16Array(4096).fill(GENERIC_BLOCK);
  private readonly pages = new Map<number, Uint16Array>();
  /**
   * A direct-mapped cache of `pages` (key, map), checked first: control
   * moves between pages millions of times a second while the kernel
   * initialises, and a hash-map lookup for each crossing is a measurable
   * share of the run. Entries are cleared when their page is dropped.
   */
  private readonly hotKey = new Float64Array(HOT_PAGES).fill(-1);
  private readonly hotMap: Uint16Array[] = new Array<Uint16Array>(HOT_PAGES).fill(this.empty);
  private readonly spare: Uint16Array[] = [];
  /** Invalidations per guest page, saturating (pages that keep being written are not cached). */
  private strikes = new Uint8Array(0);
  private uncachedEntries = 0;
  /** Pages dropped because they were written (statistics). */
  invalidations = 0;
  /** Blocks decoded (statistics). */
  decodedBlocks = 0;
  /** Full flushes (statistics). */
  flushes = 0;
  /** Told when block ids are assigned and when decoded code is dropped (the block compiler). */
  listener: DecodeCacheListener | undefined;

  /** @param generic - the id of the generic record (decoder.ts), written as block 1 */
  constructor(private readonly generic: number) {
    this.rec[0] = generic;
    this.bStart[GENERIC_BLOCK] = 0;
    this.bCount[GENERIC_BLOCK] = 1;
    this.bBytes[GENERIC_BLOCK] = 1;
  }

  /**
   * The block map of page `gpn` decoded with CS.D = `code32`, created when
   * missing; the {@link DecodeCache.uncached} map for pages that strike out.
   * `created` is called for a new map (the CPU write-protects the page).
   */
  pageMap(gpn: number, code32: boolean): Uint16Array {
    const key = gpn * 2 + (code32 ? 1 : 0);
    const h = key & (HOT_PAGES - 1);
    if (this.hotKey[h] === key) return this.hotMap[h];
    const m = this.pages.get(key);
    if (m !== undefined) return this.remember(h, key, m);
    if (gpn < this.strikes.length && this.strikes[gpn] >= STRIKE_LIMIT) {
      if (++this.uncachedEntries % STRIKE_DECAY === 0) this.decay();
      return this.uncached;
    }
    if (this.pages.size >= MAX_PAGES) this.flush();
    const fresh = this.spare.pop();
    const map = fresh ?? new Uint16Array(4096);
    if (fresh) map.fill(0);
    this.pages.set(key, map);
    return this.remember(h, key, map);
  }

  /** The block map of page `gpn` decoded with CS.D = `code32` when it has one (nothing is created). */
  peekMap(gpn: number, code32: boolean): Uint16Array | undefined {
    const key = gpn * 2 + (code32 ? 1 : 0);
    const h = key & (HOT_PAGES - 1);
    if (this.hotKey[h] === key) return this.hotMap[h];
    return this.pages.get(key);
  }

  private remember(h: number, key: number, map: Uint16Array): Uint16Array {
    this.hotKey[h] = key;
    this.hotMap[h] = map;
    return map;
  }

  /**
   * Makes room for a block of up to MAX_BLOCK_RECORDS records, flushing the
   * whole cache when the pool is full.
   * @returns whether it flushed (every page map is gone)
   */
  reserve(): boolean {
    if (this.recTop + MAX_BLOCK_RECORDS * REC_STRIDE <= this.rec.length && this.blockTop < MAX_BLOCKS) return false;
    this.flush();
    return true;
  }

  /** Records block `id` (records from `start` to the current top: `count` instructions, `bytes` long) in `map` at `offset`. */
  commit(map: Uint16Array, offset: number, start: number, count: number, bytes: number): number {
    const id = this.blockTop++;
    this.bStart[id] = start;
    this.bCount[id] = count;
    this.bBytes[id] = bytes;
    map[offset] = id;
    this.decodedBlocks++;
    this.listener?.assigned(id);
    return id;
  }

  /**
   * Drops what was decoded from page `gpn` (it was written).
   * @returns whether anything was cached for it
   */
  invalidate(gpn: number): boolean {
    let had = false;
    for (let k = 0; k < 2; k++) {
      const key = gpn * 2 + k;
      const m = this.pages.get(key);
      if (m !== undefined) {
        this.pages.delete(key);
        const h = key & (HOT_PAGES - 1);
        if (this.hotKey[h] === key) this.hotKey[h] = -1;
        this.spare.push(m);
        had = true;
      }
    }
    if (had) {
      this.strike(gpn);
      this.listener?.droppedPage(gpn);
    }
    return had;
  }

  private strike(gpn: number): void {
    if (gpn >= this.strikes.length) {
      const s = new Uint8Array(Math.max(gpn + 1, this.strikes.length * 2, 1024));
      s.set(this.strikes);
      this.strikes = s;
    }
    if (this.strikes[gpn] < 255) this.strikes[gpn]++;
    if (++this.invalidations % STRIKE_DECAY === 0) this.decay();
  }

  private decay(): void {
    for (let i = 0; i < this.strikes.length; i++) this.strikes[i] >>= 1;
  }

  /** Drops every decoded block (pool full, or the guest-physical mapping changed). */
  flush(): void {
    for (const m of this.pages.values()) this.spare.push(m);
    this.pages.clear();
    this.hotKey.fill(-1);
    this.recTop = REC_STRIDE;
    this.blockTop = GENERIC_BLOCK + 1;
    this.flushes++;
    this.listener?.droppedAll();
  }

  /** Pages with decoded blocks (statistics). */
  get pageCount(): number {
    return this.pages.size;
  }
}
