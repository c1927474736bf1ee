import { describe, expect, it } from "vitest";
import { EPT_ACCESSED, EPT_DIRTY, EPT_EXEC, EPT_READ, EPT_RWX, EPT_WRITE, Ept } from "./ept.js";
import { HostMemory } from "./host-memory.js";

describe("Ept (Intel format)", () => {
  it("maps 4 KiB pages with permissions and reports violations", () => {
    const host = new HostMemory(100);
    const ept = new Ept(host);
    const hpn = host.allocPage();
    expect(ept.translate(0x12345, EPT_READ)).toBe(-1);
    expect(ept.violationPerms).toBe(0);
    ept.map(0x12345, hpn, EPT_READ | EPT_EXEC);
    expect(ept.translate(0x12345, EPT_READ)).toBe(hpn);
    expect(ept.translate(0x12345, EPT_EXEC)).toBe(hpn);
    expect(ept.translate(0x12345, EPT_WRITE)).toBe(-1);
    expect(ept.violationPerms).toBe(EPT_READ | EPT_EXEC);
    expect(ept.translate(0x12346, EPT_READ)).toBe(-1);
  });

  it("stores entries as Intel lays them out: RWX in bits 0-2, WB memory type, address in 51:12", () => {
    const host = new HostMemory(100);
    const ept = new Ept(host);
    ept.map(5, 0x123456, EPT_RWX);
    const [lo, hi, level] = ept.entry(5)!;
    expect(level).toBe(0);
    expect(lo & 7).toBe(7);
    expect((lo >>> 3) & 7).toBe(6);
    expect(lo >>> 12).toBe(0x23456);
    expect(hi).toBe(0x1);
    // The PML4 entry that leads there points at a real host page holding the next table.
    const pml4 = new Int32Array(host.pageView(ept.root).buffer, host.pageView(ept.root).byteOffset, 1024);
    expect(pml4[0] & 7).toBe(7);
    expect(host.isAllocated(pml4[0] >>> 12)).toBe(true);
    expect(ept.eptp % 4096).toBe((3 << 3) | 6);
  });

  it("translates 2 MiB and 1 GiB pages and rejects misaligned ones", () => {
    const host = new HostMemory(100);
    const ept = new Ept(host);
    ept.map(512, 1024, EPT_RWX, 1);
    expect(ept.translate(512 + 77, EPT_WRITE)).toBe(1024 + 77);
    ept.map(512 * 512 * 3, 512 * 512, EPT_READ, 2);
    expect(ept.translate(512 * 512 * 3 + 1000, EPT_READ)).toBe(512 * 512 + 1000);
    expect(ept.translate(512 * 512 * 3 + 1000, EPT_WRITE)).toBe(-1);
    expect(() => ept.map(513, 1024, EPT_RWX, 1)).toThrow(/not aligned/);
  });

  it("AND-s permissions across levels and flags write-without-read as a misconfiguration", () => {
    const host = new HostMemory(100);
    const ept = new Ept(host);
    ept.map(7, host.allocPage(), EPT_WRITE);
    expect(ept.translate(7, EPT_WRITE)).toBe(-2);
    expect(ept.violationMisconfig).toBe(true);
  });

  it("sets accessed and dirty flags when enabled", () => {
    const host = new HostMemory(100);
    const ept = new Ept(host);
    ept.adEnabled = true;
    ept.map(9, host.allocPage(), EPT_RWX);
    ept.translate(9, EPT_READ);
    expect(ept.entry(9)![0] & (EPT_ACCESSED | EPT_DIRTY)).toBe(EPT_ACCESSED);
    ept.translate(9, EPT_WRITE);
    expect(ept.entry(9)![0] & EPT_DIRTY).toBe(EPT_DIRTY);
    expect(ept.clearDirty(9)).toBe(true);
    expect(ept.entry(9)![0] & EPT_DIRTY).toBe(0);
  });

  it("notifies listeners only when a cached translation could be revoked", () => {
    const host = new HostMemory(100);
    const ept = new Ept(host);
    let n = 0;
    ept.onInvalidate(() => n++);
    ept.map(1, host.allocPage(), EPT_READ);
    expect(n).toBe(0); // not present before: nothing cached
    ept.protect(1, EPT_RWX);
    expect(n).toBe(0); // only granted
    ept.protect(1, EPT_READ);
    expect(n).toBe(1);
    ept.unmap(1);
    expect(n).toBe(2);
  });
});
