import { describe, expect, it } from "vitest";
import { CHUNK_PAGES, CHUNK_SIZE, HostMemory, MAX_HOST_PAGES, PAGE_SIZE } from "./host-memory.js";

/** Fills host page `hpn` with a byte derived from its number. */
function stamp(host: HostMemory, hpn: number): void {
  host.pageView(hpn).fill((hpn % 251) + 1);
}

function stamped(host: HostMemory, hpn: number): boolean {
  return host.pageView(hpn).every((b) => b === (hpn % 251) + 1);
}

describe("HostMemory", () => {
  it("allocates zeroed pages in chunks and drops a chunk with its last page", () => {
    const host = new HostMemory(1000);
    const pages = Array.from({ length: 70 }, () => host.allocPage());
    expect(host.allocatedChunks).toBe(2);
    host.pageView(pages[3]).fill(0xaa);
    host.freePage(pages[3]);
    const again = host.allocPage();
    expect(again).toBe(pages[3]);
    expect(host.pageView(again).every((b) => b === 0)).toBe(true);
    for (const p of pages.slice(64)) host.freePage(p);
    expect(host.allocatedChunks).toBe(1);
    expect(() => host.freePage(pages[65])).toThrow(/not allocated/);
    expect(() => host.pageView(pages[65])).toThrow(expect.objectContaining({ code: "HOST_PAGE" }));
  });

  it("enforces its page limit", () => {
    const host = new HostMemory(3);
    host.allocPage();
    host.allocPage();
    host.allocPage();
    expect(() => host.allocPage()).toThrow(expect.objectContaining({ code: "HOST_MEMORY_EXHAUSTED" }));
  });

  it("holds at most 2 GiB, so host byte offsets stay int32", () => {
    const host = new HostMemory(2 ** 30);
    expect(host.capacity).toBe(MAX_HOST_PAGES);
    expect(host.bytes.byteLength).toBeLessThan(2 ** 31);
    expect(() => new HostMemory(0)).toThrow(expect.objectContaining({ code: "HOST_MEMORY_SIZE" }));
  });

  it("release moves the pages in use to a new arena and gives back dropped chunks", () => {
    const host = new HostMemory(1000);
    const pages = Array.from({ length: 3 * CHUNK_PAGES + 8 }, () => host.allocPage());
    for (const p of pages) stamp(host, p);
    for (const p of pages.slice(CHUNK_PAGES, 2 * CHUNK_PAGES)) host.freePage(p);
    host.freePage(pages[5]); // a free page in a chunk still in use
    expect(host.releasableBytes).toBe(CHUNK_SIZE);
    let moves = 0;
    host.onRelocate(() => moves++);
    const old = host.bytes;

    expect(host.release()).toBe(CHUNK_SIZE);
    expect(moves).toBe(1);
    expect(host.bytes).not.toBe(old);
    expect(host.words32.buffer).toBe(host.bytes.buffer);
    expect(host.words16.buffer).toBe(host.bytes.buffer);
    expect(host.releasableBytes).toBe(0);
    for (const p of pages) if (host.isAllocated(p)) expect(stamped(host, p), `page ${p}`).toBe(true);
    expect(host.release()).toBe(0);
    expect(moves).toBe(1);

    // Pages handed out again are zero, whether their chunk was dropped or not.
    const again = Array.from({ length: CHUNK_PAGES + 1 }, () => host.allocPage());
    expect(new Set(again)).toEqual(new Set([pages[5], ...pages.slice(CHUNK_PAGES, 2 * CHUNK_PAGES)]));
    for (const p of again) expect(host.pageView(p).every((b) => b === 0), `page ${p}`).toBe(true);
    expect(host.allocatedPages).toBe(pages.length);
  });

  it("releases by itself once dropped chunks hold a quarter of the memory in use and 16 MiB", () => {
    const total = (64 << 20) / PAGE_SIZE;
    const host = new HostMemory(total + 64);
    for (let i = 0; i < total; i++) host.allocPage();
    for (let p = 0; p < total; p += 97) stamp(host, p);
    let moves = 0;
    host.onRelocate(() => moves++);
    const dropChunks = (16 << 20) / CHUNK_SIZE;
    for (let p = 0; p < (dropChunks - 1) * CHUNK_PAGES; p++) host.freePage(p);
    expect(moves).toBe(0);
    expect(host.releasableBytes).toBe((dropChunks - 1) * CHUNK_SIZE);
    for (let p = (dropChunks - 1) * CHUNK_PAGES; p < dropChunks * CHUNK_PAGES; p++) host.freePage(p);
    expect(moves).toBe(1);
    expect(host.releasableBytes).toBe(0);
    for (let p = 0; p < total; p += 97) if (p >= dropChunks * CHUNK_PAGES) expect(stamped(host, p), `page ${p}`).toBe(true);
  });

  it("keeps tables after the arena, in the WebAssembly memory, through releases and growth", () => {
    const host = new HostMemory(3 * CHUNK_PAGES);
    expect(host.memory?.buffer).toBe(host.buffer);
    const a = host.allocTable(100);
    expect(a).toBe(host.arenaBytes);
    new Uint8Array(host.buffer, a, 100).fill(7);
    const pages = Array.from({ length: 2 * CHUNK_PAGES }, () => host.allocPage());
    stamp(host, pages[0]);
    let moves = 0;
    host.onRelocate(() => moves++);
    // More than the space reserved up front: the memory grows, and moves.
    const b = host.allocTable(3 << 20);
    expect(b).toBeGreaterThanOrEqual(a + 100);
    expect(b % 64).toBe(0);
    expect(moves).toBe(1);
    expect(host.buffer.byteLength).toBeGreaterThanOrEqual(b + (3 << 20));
    expect(new Uint8Array(host.buffer, b, 3 << 20).every((v) => v === 0)).toBe(true);
    new Uint8Array(host.buffer, b, 16).fill(9);
    expect(stamped(host, pages[0])).toBe(true);
    // A release keeps both tables.
    for (const p of pages.slice(CHUNK_PAGES)) host.freePage(p);
    host.release();
    expect(moves).toBe(2);
    expect(new Uint8Array(host.buffer, a, 100).every((v) => v === 7)).toBe(true);
    expect(new Uint8Array(host.buffer, b, 16).every((v) => v === 9)).toBe(true);
    expect(host.bytes.byteLength).toBe(host.arenaBytes);
    expect(() => host.allocTable(-1)).toThrow(expect.objectContaining({ code: "HOST_TABLE" }));
  });
});
