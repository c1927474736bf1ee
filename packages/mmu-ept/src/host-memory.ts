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

/**
 * The host side of guest RAM: a pool of host pages living in chunks of
 * {@link CHUNK_SIZE} bytes, each chunk its own ArrayBuffer, allocated when a
 * page in it is first needed and dropped when its last page is freed (so
 * memory a balloon reclaims really returns to the host).
 *
 * A host page number (hpn) is `chunk << CHUNK_PAGES_SHIFT | page`; its host
 * physical address, as the EPT stores it, is `hpn * 4096`.
 */
export class HostMemory {
  /** Byte view of each chunk, or `undefined` while the chunk is not allocated. */
  readonly chunks: (Uint8Array | undefined)[] = [];
  /** Int32 view of each chunk (aligned 32-bit accesses). */
  readonly chunks32: (Int32Array | undefined)[] = [];
  /** Uint16 view of each chunk (aligned 16-bit accesses). */
  readonly chunks16: (Uint16Array | undefined)[] = [];
  private used = new Int32Array(16);
  private pageUsed = new Uint8Array(16 * CHUNK_PAGES);
  private readonly freePages: number[] = [];
  private bump = 0; // next never-used page when the free list is empty
  private pagesInUse = 0;

  /** @param maxPages - upper bound on pages in use at once (guest RAM plus EPT tables), so a hostile guest cannot grow the host without limit */
  constructor(readonly maxPages: number) {}

  /** Host pages currently allocated. */
  get allocatedPages(): number {
    return this.pagesInUse;
  }

  /** Chunks currently backed by host memory. */
  get allocatedChunks(): number {
    let n = 0;
    for (const c of this.chunks) if (c) n++;
    return n;
  }

  /**
   * Allocates one zero-filled host page.
   * @throws HostMemoryError `HOST_MEMORY_EXHAUSTED` when `maxPages` are in use
   */
  allocPage(): number {
    if (this.pagesInUse >= this.maxPages) {
      throw new HostMemoryError("HOST_MEMORY_EXHAUSTED", `host page pool exhausted (${this.maxPages} pages in use)`);
    }
    let hpn: number;
    let fresh = false;
    if (this.freePages.length > 0) hpn = this.freePages.pop()!;
    else {
      hpn = this.bump++;
      fresh = true;
    }
    const chunk = hpn >>> CHUNK_PAGES_SHIFT;
    if (chunk >= this.used.length) this.grow(chunk + 1);
    let mem = this.chunks[chunk];
    if (!mem) {
      const buf = new ArrayBuffer(CHUNK_SIZE);
      mem = new Uint8Array(buf);
      this.chunks[chunk] = mem;
      this.chunks32[chunk] = new Int32Array(buf);
      this.chunks16[chunk] = new Uint16Array(buf);
    } else if (!fresh) {
      const off = (hpn & (CHUNK_PAGES - 1)) << PAGE_SHIFT;
      mem.fill(0, off, off + PAGE_SIZE);
    }
    this.used[chunk]++;
    this.pageUsed[hpn] = 1;
    this.pagesInUse++;
    return hpn;
  }

  /**
   * Returns a page to the pool. When it was the last used page of its chunk,
   * the chunk's buffer is dropped and its pages leave the free list.
   * @throws HostMemoryError `HOST_PAGE` for a page that is not allocated
   */
  freePage(hpn: number): void {
    if (!(hpn >= 0 && hpn < this.bump) || this.pageUsed[hpn] === 0) {
      throw new HostMemoryError("HOST_PAGE", `host page ${hpn} is not allocated`);
    }
    this.pageUsed[hpn] = 0;
    this.pagesInUse--;
    const chunk = hpn >>> CHUNK_PAGES_SHIFT;
    if (--this.used[chunk] === 0) {
      this.chunks[chunk] = undefined;
      this.chunks32[chunk] = undefined;
      this.chunks16[chunk] = undefined;
      // Pages of a dropped chunk get a fresh zeroed buffer when reused.
      for (let i = this.freePages.length - 1; i >= 0; i--) {
        if (this.freePages[i] >>> CHUNK_PAGES_SHIFT === chunk) this.freePages.splice(i, 1);
      }
      if (((chunk + 1) << CHUNK_PAGES_SHIFT) === this.bump) this.bump = chunk << CHUNK_PAGES_SHIFT;
      else for (let p = 0; p < CHUNK_PAGES; p++) this.freePages.push((chunk << CHUNK_PAGES_SHIFT) | p);
    } else {
      this.freePages.push(hpn);
    }
  }

  /** Whether host page `hpn` is allocated. */
  isAllocated(hpn: number): boolean {
    return hpn >= 0 && hpn < this.bump && this.pageUsed[hpn] === 1;
  }

  /** The chunk byte view holding `hpn` (throws when not allocated). */
  chunkOf(hpn: number): Uint8Array {
    const c = this.chunks[hpn >>> CHUNK_PAGES_SHIFT];
    if (!c || this.pageUsed[hpn] !== 1) throw new HostMemoryError("HOST_PAGE", `host page ${hpn} is not allocated`);
    return c;
  }

  /** A view of exactly host page `hpn` (tests, bulk copies). */
  pageView(hpn: number): Uint8Array {
    const off = (hpn & (CHUNK_PAGES - 1)) << PAGE_SHIFT;
    return this.chunkOf(hpn).subarray(off, off + PAGE_SIZE);
  }

  private grow(chunks: number): void {
    let n = this.used.length;
    while (n < chunks) n *= 2;
    const used = new Int32Array(n);
    used.set(this.used);
    this.used = used;
    const pu = new Uint8Array(n * CHUNK_PAGES);
    pu.set(this.pageUsed);
    this.pageUsed = pu;
  }
}
