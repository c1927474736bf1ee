import { GuestMemoryError, MmioBus } from "@typevisor/hv-core";
import { describe, expect, it } from "vitest";
import { EPT_READ, EPT_RWX, EPT_WRITE } from "./ept.js";
import { PhysicalMemory } from "./physical-memory.js";

describe("PhysicalMemory", () => {
  it("allocates host pages on first touch only", () => {
    const m = new PhysicalMemory({ ramSize: 64 << 20 });
    const base = m.host.allocatedPages;
    expect(m.readU32(0x100000)).toBe(0);
    m.writeU32(0x200ffe, 0xdeadbeef); // crosses a page
    expect(m.readU32(0x200ffe)).toBe(0xdeadbeef);
    expect(m.host.allocatedPages - base).toBeLessThan(8); // 3 data pages + EPT tables
  });

  it("copies bulk data across pages and rejects DMA outside RAM", () => {
    const m = new PhysicalMemory({ ramSize: 1 << 20 });
    const src = new Uint8Array(10000).map((_, i) => i * 7);
    m.write(0x1800, src);
    const back = new Uint8Array(10000);
    m.read(0x1800, back);
    expect(back).toEqual(src);
    expect(() => m.readU8(1 << 20)).toThrow(GuestMemoryError);
    expect(m.isRam(0xff000, 0x1000)).toBe(true);
    expect(m.isRam(0xff000, 0x1001)).toBe(false);
  });

  it("maps ROM read-only and sends writes to the bus", () => {
    const bus = new MmioBus();
    const writes: number[] = [];
    const m = new PhysicalMemory({ ramSize: 1 << 20, mmio: bus });
    m.setRamRegions([[0, 0xa0000]]);
    m.addRom(0xf0000, new Uint8Array(0x10000).fill(0x90));
    bus.register("rom-shadow", 0xf0000, 0x10000, { read: () => 0, write: (o) => writes.push(o) });
    expect(m.readU8(0xffff0)).toBe(0x90);
    expect(m.resolve(0xf0, EPT_WRITE)).toBe(-1);
    expect(() => m.writeU8(0xf0000, 1)).toThrow(GuestMemoryError);
    expect(m.isRam(0xa0000, 1)).toBe(false);
    // PAM-style shadowing: the ROM goes, RAM takes its place with the same contents.
    expect(m.removeRom(0xf0000)).toBe(true);
    m.setRamRegions([[0, 0x100000]]);
    expect(m.readU8(0xffff0)).toBe(0);
    m.write(0xf0000, new Uint8Array(0x10000).fill(0x90));
    m.writeU8(0xf0000, 1);
    expect(m.readU8(0xf0000)).toBe(1);
    expect(m.removeRom(0xf0000)).toBe(false);
  });

  it("runs violation handlers first: write protection that logs and restores", () => {
    const m = new PhysicalMemory({ ramSize: 1 << 20 });
    m.writeU8(0x5000, 1);
    m.ept.protect(5, EPT_READ);
    const seen: [number, number][] = [];
    m.addViolationHandler(0x5000, 0x1000, (gpa, access) => {
      seen.push([gpa, access]);
      m.ept.protect(5, EPT_RWX);
      return true;
    });
    m.writeU8(0x5001, 2);
    expect(seen).toEqual([[0x5000, EPT_WRITE]]);
    expect(m.readU8(0x5001)).toBe(2);
  });

  it("logs dirty pages and clears the log atomically", () => {
    const m = new PhysicalMemory({ ramSize: 1 << 20 });
    let revoked = 0;
    m.onWriteProtect(() => revoked++);
    m.writeU8(0x3000, 1);
    m.write(0x7ff0, new Uint8Array(32));
    expect(m.dirtyPages()).toEqual([3, 7, 8]);
    const bits = m.fetchAndClearDirty();
    expect(bits[0]).toBe((1 << 3) | (1 << 7) | (1 << 8));
    expect(m.dirtyPages()).toEqual([]);
    expect(revoked).toBe(1);
  });

  it("write-protects code pages in every TLB and reports the first write to them", async () => {
    const { Mmu } = await import("./mmu.js");
    const m = new PhysicalMemory({ ramSize: 1 << 20 });
    const mmu = new Mmu(m);
    mmu.write32(0x6000, 1); // cached writable
    const seen: number[] = [];
    m.onCodeWrite((gpn) => seen.push(gpn));
    m.protectCodePage(6);
    mmu.write32(0x6004, 2); // the writable entry is gone: the write reaches the listener
    mmu.write32(0x6008, 3); // the page is no longer marked: no second report
    m.protectCodePage(6);
    m.writeU8(0x6010, 4); // DMA too
    expect(seen).toEqual([6, 6]);
    expect(m.readU32(0x6004)).toBe(2);
  });

  it("saves and restores RAM contents, validating the data", () => {
    const a = new PhysicalMemory({ ramSize: 1 << 20 });
    a.writeU32(0x1234, 0xcafebabe);
    a.writeU8(0x80000, 7);
    const saved = a.saveState();
    const b = new PhysicalMemory({ ramSize: 1 << 20 });
    b.writeU8(0x9000, 9);
    b.loadState(saved);
    expect(b.readU32(0x1234)).toBe(0xcafebabe);
    expect(b.readU8(0x80000)).toBe(7);
    expect(b.readU8(0x9000)).toBe(0);
    expect(() => b.loadState({ regions: [[0, 1 << 20]], pages: [1e9], bytes: new Uint8Array(4096) })).toThrow(/not RAM/);
    expect(() => b.loadState({ regions: [], pages: [1], bytes: new Uint8Array(3) })).toThrow(/bytes/);
  });
});
