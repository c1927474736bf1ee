import { describe, expect, it } from "vitest";
import { DecodeCache, GENERIC_BLOCK, MAX_BLOCK_RECORDS, REC_STRIDE } from "./decode-cache.js";

describe("DecodeCache", () => {
  it("keeps one block map per physical page and code-segment size", () => {
    const dc = new DecodeCache(0);
    const a = dc.pageMap(5, true);
    expect(dc.pageMap(5, true)).toBe(a);
    expect(dc.pageMap(5, false)).not.toBe(a);
    expect(dc.pageMap(6, true)).not.toBe(a);
    expect(dc.pageCount).toBe(3);
  });

  it("finds maps again through its page cache, also for pages sharing a cache slot, and never a dropped one", () => {
    const dc = new DecodeCache(0);
    // Keys gpn * 2 + 1 of pages 5 and 133 fall in the same slot of the 256-entry cache.
    const a = dc.pageMap(5, true);
    const b = dc.pageMap(133, true);
    expect(b).not.toBe(a);
    expect(dc.pageMap(5, true)).toBe(a);
    expect(dc.pageMap(133, true)).toBe(b);
    dc.invalidate(5);
    const d = dc.pageMap(9, true); // page 9 gets page 5's recycled map
    expect(d).toBe(a);
    const c = dc.pageMap(5, true);
    expect(c).not.toBe(d); // page 5 gets a map of its own, not page 9's through a stale cache entry
    expect(dc.pageMap(5, true)).toBe(c);
    dc.commit(c, 0x20, dc.recTop, 1, 3);
    dc.flush();
    expect(dc.pageMap(5, true)[0x20]).toBe(0); // an empty map after the flush, not the cached one with its block
    expect(dc.pageCount).toBe(1);
  });

  it("drops a written page's maps and recycles them empty", () => {
    const dc = new DecodeCache(0);
    const a = dc.pageMap(5, true);
    dc.commit(a, 0x10, dc.recTop, 1, 3);
    expect(a[0x10]).not.toBe(0);
    expect(dc.invalidate(5)).toBe(true);
    expect(dc.invalidate(5)).toBe(false);
    const b = dc.pageMap(9, true);
    expect(b).toBe(a); // recycled
    expect(b[0x10]).toBe(0);
  });

  it("stops caching a page that keeps being written, and caches it again later", () => {
    const dc = new DecodeCache(0);
    for (let i = 0; i < 8; i++) {
      dc.pageMap(7, true);
      dc.invalidate(7);
    }
    expect(dc.pageMap(7, true)).toBe(dc.uncached);
    expect(dc.uncached.every((b) => b === GENERIC_BLOCK)).toBe(true);
    // Entering the uncached page decays the strikes: after enough entries it is cached again.
    let cached = false;
    for (let i = 0; i < 5000 && !cached; i++) cached = dc.pageMap(7, true) !== dc.uncached;
    expect(cached).toBe(true);
  });

  it("flushes everything when the record pool is full", () => {
    const dc = new DecodeCache(0);
    const map = dc.pageMap(1, true);
    let flushed = false;
    for (let i = 0; i < 100_000 && !flushed; i++) {
      flushed = dc.reserve();
      if (!flushed) {
        const start = dc.recTop;
        dc.recTop += MAX_BLOCK_RECORDS * REC_STRIDE;
        dc.commit(map, i & 0xfff, start, MAX_BLOCK_RECORDS, 1);
      }
    }
    expect(flushed).toBe(true);
    expect(dc.flushes).toBe(1);
    expect(dc.pageCount).toBe(0);
    expect(dc.recTop).toBe(REC_STRIDE);
  });
});
