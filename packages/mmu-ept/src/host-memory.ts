import { TypevisorError } from "@typevisor/hv-core";

/** log2 of the host page size (4 KiB, the EPT's granularity). */
export const PAGE_SHIFT = 12;
/** Host and guest page size in bytes. */
export const PAGE_SIZE = 1 << PAGE_SHIFT;
/** log2 of the number of pages per host chunk. */
export const CHUNK_PAGES_SHIFT = 6;
/** Pages per host chunk (64 pages, 256 KiB). */
export const CHUNK_PAGES = 1 << CHUNK_PAGES_SHIFT;
/** Bytes per host chunk. */
export const CHUNK_SIZE = CHUNK_PAGES * PAGE_SIZE;

/** Raised when the host page pool cannot satisfy a request (pool limit reached, bad page number). */
export class HostMemoryError extends TypevisorError {}

/** Most host pages one {@link HostMemory} holds: its byte offsets must stay int32 on the hot path (2 GiB). */
export const MAX_HOST_PAGES = (2 ** 31 - CHUNK_SIZE) / PAGE_SIZE;

/** A WebAssembly memory, as far as the host memory uses one (TypeScript's ES libraries do not declare the WebAssembly API). */
export interface WasmMemory {
  /** The memory's bytes (replaced when the memory grows). */
  readonly buffer: ArrayBuffer;
}

/** The WebAssembly memory constructor, where the platform has WebAssembly. */
const WasmMemoryCtor = (globalThis as { WebAssembly?: { Memory: new (d: { initial: number; maximum?: number }) => WasmMemory } }).WebAssembly?.Memory;

/** Size of a WebAssembly memory page. */
const WASM_PAGE = 65536;
/** Table space reserved after the arena up front (grown when more is asked for): room for two vCPUs' TLBs and state. */
const TABLE_RESERVE = 1 << 20;
/** Alignment of each table. */
const TABLE_ALIGN = 64;

/** Dropped chunks whose memory the host still holds, at least this many bytes, before {@link HostMemory.release} runs by itself. */
const RELEASE_MIN_BYTES = 16 << 20;

// Page states: free and zero in the current arena, in use, free but written.
const PAGE_ZERO = 0;
const PAGE_USED = 1;
const PAGE_DIRTY = 2;

/**
 * The host side of guest RAM: a pool of host pages in one buffer (a
 * WebAssembly memory's), the arena, sized for `maxPages` pages up front. The operating system commits
 * the arena's memory only when a page is first written, so guest RAM still
 * costs the host only what the guest touched.
 *
 * One buffer is what makes guest memory fast: a host page number (hpn)
 * times 4096 is a byte offset into {@link HostMemory.bytes}, so a TLB entry
 * is one integer and the hot paths index one typed array whose base V8 keeps
 * in a register (separate buffers per chunk cost an extra dependent load
 * and a map check on every access).
 *
 * Pages are accounted in chunks of {@link CHUNK_PAGES} pages. A chunk whose
 * last page is freed is dropped. JavaScript cannot give part of an
 * ArrayBuffer back to the host, so {@link HostMemory.release} copies the
 * chunks still in use into a fresh arena and lets the old one go; it runs by
 * itself once dropped chunks hold a quarter of the memory in use (and at
 * least 16 MiB), so memory a balloon reclaims really returns to the host.
 * Whoever keeps a view of the arena registers with
 * {@link HostMemory.onRelocate} to pick up the new one.
 */
export class HostMemory {
  /**
   * The WebAssembly memory that holds the arena and, after it, the tables
   * ({@link HostMemory.allocTable}): compiled guest code imports it, so its
   * accesses to guest RAM and to those tables are plain memory operations.
   * Undefined where WebAssembly is missing (the arena is then an ArrayBuffer).
   * Replaced by {@link HostMemory.release} and when the tables grow.
   */
  memory: WasmMemory | undefined;
  /** Byte view of the arena: host page `hpn` is bytes `hpn * 4096` to `hpn * 4096 + 4095`. Replaced by {@link HostMemory.release}. */
  bytes: Uint8Array;
  /** Uint16 view of the arena (aligned 16-bit accesses). Replaced by {@link HostMemory.release}. */
  words16: Uint16Array;
  /** Int32 view of the arena (aligned 32-bit accesses, EPT entries). Replaced by {@link HostMemory.release}. */
  words32: Int32Array;
  /** Most pages in use at once: `maxPages`, capped at {@link MAX_HOST_PAGES}. */
  readonly capacity: number;
  private readonly used: Int32Array; // pages in use per chunk
  private readonly pageState: Uint8Array;
  private readonly resident: Uint8Array; // per chunk: 1 once written in the current arena
  private readonly freePages: number[] = [];
  private readonly relocateListeners: (() => void)[] = [];
  private bump = 0; // next never-used page when the free list is empty
  private pagesInUse = 0;
  private droppedResident = 0; // dropped chunks whose memory the arena still holds
  /** Bytes of the arena proper (host pages); the tables follow it. */
  readonly arenaBytes: number;
  private tableTop: number; // next free table byte

  /** @param maxPages - upper bound on pages in use at once (guest RAM plus EPT tables), so a hostile guest cannot grow the host without limit */
  constructor(readonly maxPages: number) {
    if (!Number.isSafeInteger(maxPages) || maxPages < 1) throw new HostMemoryError("HOST_MEMORY_SIZE", `host page limit ${maxPages} is not a positive integer`);
    this.capacity = Math.min(maxPages, MAX_HOST_PAGES);
    const chunks = Math.ceil(this.capacity / CHUNK_PAGES);
    this.used = new Int32Array(chunks);
    this.resident = new Uint8Array(chunks);
    this.pageState = new Uint8Array(chunks * CHUNK_PAGES);
    this.arenaBytes = chunks * CHUNK_SIZE;
    this.tableTop = this.arenaBytes;
    const arena = this.newArena(this.arenaBytes + TABLE_RESERVE);
    this.bytes = new Uint8Array(arena, 0, this.arenaBytes);
    this.words16 = new Uint16Array(arena, 0, this.arenaBytes >> 1);
    this.words32 = new Int32Array(arena, 0, this.arenaBytes >> 2);
  }

  /** A zeroed buffer of `bytes` (a multiple of 64 KiB): a new WebAssembly memory's, where there is WebAssembly. */
  private newArena(bytes: number): ArrayBuffer {
    if (WasmMemoryCtor === undefined) {
      this.memory = undefined;
      return new ArrayBuffer(bytes);
    }
    this.memory = new WasmMemoryCtor({ initial: bytes / WASM_PAGE, maximum: 65536 });
    return this.memory.buffer;
  }

  /** The buffer holding the arena and the tables. */
  get buffer(): ArrayBuffer {
    return this.bytes.buffer as ArrayBuffer;
  }

  /**
   * Reserves `bytes` of zeroed table space after the arena, in the same
   * memory (a vCPU's TLB and state, which compiled code reads), and returns
   * its byte offset in {@link HostMemory.buffer}. Tables live as long as
   * the memory; views of them go stale with the arena's (re-create them in
   * an {@link HostMemory.onRelocate} listener). Growing the space relocates.
   */
  allocTable(bytes: number): number {
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new HostMemoryError("HOST_TABLE", `table size ${bytes} is not a byte count`);
    const at = this.tableTop;
    const end = at + Math.ceil(bytes / TABLE_ALIGN) * TABLE_ALIGN;
    const size = this.buffer.byteLength;
    if (end > size) {
      const grown = Math.ceil((end - size + TABLE_RESERVE) / WASM_PAGE) * WASM_PAGE;
      this.moveTo(size + grown);
    }
    this.tableTop = end;
    return at;
  }

  /** Host pages currently allocated. */
  get allocatedPages(): number {
    return this.pagesInUse;
  }

  /** Chunks with at least one page in use. */
  get allocatedChunks(): number {
    let n = 0;
    for (let c = 0; c < this.used.length; c++) if (this.used[c] > 0) n++;
    return n;
  }

  /** Bytes of dropped chunks that the arena still holds (what {@link HostMemory.release} would give back). */
  get releasableBytes(): number {
    return this.droppedResident * CHUNK_SIZE;
  }

  /**
   * Allocates one zero-filled host page.
   * @throws HostMemoryError `HOST_MEMORY_EXHAUSTED` when `maxPages` (or {@link MAX_HOST_PAGES}) are in use
   */
  allocPage(): number {
    if (this.pagesInUse >= this.capacity) {
      const why = this.capacity < this.maxPages ? `the most one machine holds, ${MAX_HOST_PAGES} pages (2 GiB)` : `${this.maxPages} pages`;
      throw new HostMemoryError("HOST_MEMORY_EXHAUSTED", `host page pool exhausted (${this.pagesInUse} pages in use, limit ${why})`);
    }
    const hpn = this.freePages.length > 0 ? this.freePages.pop()! : this.bump++;
    const chunk = hpn >>> CHUNK_PAGES_SHIFT;
    if (this.pageState[hpn] === PAGE_DIRTY) this.bytes.fill(0, hpn * PAGE_SIZE, (hpn + 1) * PAGE_SIZE);
    if (this.used[chunk]++ === 0 && this.resident[chunk] === 1) this.droppedResident--;
    this.resident[chunk] = 1;
    this.pageState[hpn] = PAGE_USED;
    this.pagesInUse++;
    return hpn;
  }

  /**
   * Returns a page to the pool. When it was the last page in use of its
   * chunk, the chunk is dropped, and {@link HostMemory.release} runs once
   * enough memory is held by dropped chunks.
   * @throws HostMemoryError `HOST_PAGE` for a page that is not allocated
   */
  freePage(hpn: number): void {
    if (!this.isAllocated(hpn)) throw new HostMemoryError("HOST_PAGE", `host page ${hpn} is not allocated`);
    this.pageState[hpn] = PAGE_DIRTY;
    this.pagesInUse--;
    this.freePages.push(hpn);
    if (--this.used[hpn >>> CHUNK_PAGES_SHIFT] !== 0) return;
    this.droppedResident++;
    if (this.releasableBytes >= Math.max(RELEASE_MIN_BYTES, (this.allocatedChunks * CHUNK_SIZE) / 4)) this.release();
  }

  /**
   * Gives the memory of dropped chunks back to the host: copies every chunk
   * in use into a fresh arena at the same offsets (host page numbers do not
   * change) and drops the old arena. Views taken before are stale afterwards;
   * the {@link HostMemory.onRelocate} listeners run before this returns.
   * @returns the bytes given back
   */
  release(): number {
    const released = this.releasableBytes;
    if (released === 0) return 0;
    this.moveTo(this.buffer.byteLength);
    return released;
  }

  /**
   * Copies the chunks in use and the tables into a new buffer of `size`
   * bytes (dropped chunks stay behind, zero), and tells the listeners.
   */
  private moveTo(size: number): void {
    const old = new Uint8Array(this.buffer);
    const arena = this.newArena(size);
    const bytes = new Uint8Array(arena);
    for (let c = 0; c < this.used.length; c++) {
      if (this.used[c] > 0) bytes.set(old.subarray(c * CHUNK_SIZE, (c + 1) * CHUNK_SIZE), c * CHUNK_SIZE);
      else if (this.resident[c] === 1) {
        this.resident[c] = 0;
        this.pageState.fill(PAGE_ZERO, c * CHUNK_PAGES, (c + 1) * CHUNK_PAGES);
      }
    }
    this.droppedResident = 0;
    bytes.set(old.subarray(this.arenaBytes, this.tableTop), this.arenaBytes);
    this.bytes = new Uint8Array(arena, 0, this.arenaBytes);
    this.words16 = new Uint16Array(arena, 0, this.arenaBytes >> 1);
    this.words32 = new Int32Array(arena, 0, this.arenaBytes >> 2);
    for (const l of this.relocateListeners) l();
  }

  /** Registers a callback run after {@link HostMemory.release} replaced the arena: re-read {@link HostMemory.bytes} and the other views. */
  onRelocate(listener: () => void): void {
    this.relocateListeners.push(listener);
  }

  /** Whether host page `hpn` is allocated. */
  isAllocated(hpn: number): boolean {
    return Number.isInteger(hpn) && hpn >= 0 && hpn < this.bump && this.pageState[hpn] === PAGE_USED;
  }

  /** A view of exactly host page `hpn` (tests, bulk copies); stale after {@link HostMemory.release}. */
  pageView(hpn: number): Uint8Array {
    if (!this.isAllocated(hpn)) throw new HostMemoryError("HOST_PAGE", `host page ${hpn} is not allocated`);
    return this.bytes.subarray(hpn * PAGE_SIZE, (hpn + 1) * PAGE_SIZE);
  }
}
