import { describe, expect, it } from "vitest";
import { E820, MIN_PC_RAM, pcMemoryLayout } from "./memory-map.js";

describe("PC memory map", () => {
  it("lays out 256 MiB: conventional memory, reserved EBDA/BIOS area, RAM from 1 MiB, device pages", () => {
    const { e820, lowEnd, highSize } = pcMemoryLayout(256 << 20);
    expect(lowEnd).toBe(256 << 20);
    expect(highSize).toBe(0);
    expect(e820.filter((e) => e.type === E820.RAM)).toEqual([
      { addr: 0, size: 0x9fc00, type: 1 },
      { addr: 0x100000, size: (256 << 20) - 0x100000, type: 1 },
    ]);
    for (let i = 1; i < e820.length; i++) expect(e820[i].addr).toBeGreaterThanOrEqual(e820[i - 1].addr + e820[i - 1].size);
    expect(e820.some((e) => e.type === E820.RESERVED && e.addr === 0xb0000000 && e.size === 0x10000000)).toBe(true);
  });

  it("puts RAM beyond the PCI hole above 4 GiB", () => {
    const { e820, lowEnd, highSize } = pcMemoryLayout(4 * 2 ** 30);
    expect(lowEnd).toBe(0xb0000000);
    expect(highSize).toBe(4 * 2 ** 30 - 0xb0000000);
    expect(e820.at(-1)).toEqual({ addr: 2 ** 32, size: highSize, type: E820.RAM });
    const ram = e820.filter((e) => e.type === E820.RAM).reduce((n, e) => n + e.size, 0);
    expect(ram).toBe(4 * 2 ** 30 - (0x100000 - 0x9fc00));
  });

  it("rejects too little RAM", () => {
    expect(() => pcMemoryLayout(MIN_PC_RAM - 1)).toThrow(/at least 2 MiB/);
  });
});
