import { Machine, PciConfigSpace, PciError } from "@typevisor/hv-core";
import { describe, expect, it } from "vitest";
import { ECAM_BASE, PciHost } from "./pci-host.js";

function make() {
  const m = new Machine({ memory: "16M" });
  const levels: string[] = [];
  m.irqs.router = { setIrqLevel: (g, l) => void levels.push(`${g}:${+l}`) };
  let resets = 0;
  const host = new PciHost({ host: m, reset: () => resets++ });
  m.ports.register("pci-host", 0xcf8, 8, host.portHandler);
  m.mmio.register("ecam", ECAM_BASE, 0x10000000, host.ecamHandler);
  const cfg = (bus: number, dev: number, fn: number, reg: number): number => 0x80000000 | (bus << 16) | (dev << 11) | (fn << 8) | reg;
  const read = (bus: number, dev: number, fn: number, reg: number, size: 1 | 2 | 4 = 4): number => {
    m.ports.write(0xcf8, 4, cfg(bus, dev, fn, reg & 0xfc));
    return m.ports.read(0xcfc + (reg & 3), size);
  };
  const write = (bus: number, dev: number, fn: number, reg: number, value: number, size: 1 | 2 | 4 = 4): void => {
    m.ports.write(0xcf8, 4, cfg(bus, dev, fn, reg & 0xfc));
    m.ports.write(0xcfc + (reg & 3), size, value);
  };
  const dev = (name: string, bars = true) =>
    new PciConfigSpace(m, {
      name,
      vendorId: 0x1af4,
      deviceId: 0x1042,
      classCode: 0x018000,
      interruptPin: 1,
      bars: bars
        ? [
            { index: 0, kind: "io", size: 64, handler: { read: () => 0x11, write: () => {} } },
            { index: 1, kind: "mem32", size: 0x1000, handler: { read: () => 0x22, write: () => {} } },
            { index: 2, kind: "mem64", size: 0x4000, prefetchable: true, handler: { read: () => 0x33, write: () => {} } },
          ]
        : [],
    });
  return { m, host, read, write, dev, levels, resets: () => resets };
}

describe("PCI host bridge", () => {
  it("enumerates through configuration mechanism #1 like Linux's pci_conf1", () => {
    const { host, read, dev } = make();
    host.plug(dev("blk"), { device: 3 });
    const found: string[] = [];
    for (let d = 0; d < 32; d++) {
      const id = read(0, d, 0, 0);
      if (id !== 0xffffffff) found.push(`${d}:${id.toString(16)}`);
    }
    expect(found).toEqual(["0:81b36", "3:10421af4"]);
    expect(read(0, 0, 0, 8) >>> 8).toBe(0x060000); // host bridge class
    expect(read(0, 3, 0, 2, 2)).toBe(0x1042); // word at 0xCFE
    expect(read(0, 3, 0, 0x3d, 1)).toBe(1); // byte at 0xCFD
    expect(read(1, 3, 0, 0)).toBe(0xffffffff); // no other buses
  });

  it("ignores data ports while the enable bit is clear", () => {
    const { m, host, dev } = make();
    host.plug(dev("blk"), { device: 3 });
    m.ports.write(0xcf8, 4, 3 << 11);
    expect(m.ports.read(0xcfc, 4)).toBe(0xffffffff);
    expect(m.ports.read(0xcf8, 4)).toBe(3 << 11);
  });

  it("serves the same space through ECAM, including extended offsets and unaligned accesses", () => {
    const { m, host, dev, read } = make();
    host.plug(dev("blk"), { device: 3 });
    const base = ECAM_BASE + (3 << 15);
    expect(m.mmio.read(base, 4)).toBe(0x10421af4);
    m.mmio.write(base + 0x3c, 1, 0x0b);
    expect(read(0, 3, 0, 0x3c, 1)).toBe(0x0b);
    expect(m.mmio.read(base + 1, 2)).toBe(0x421a);
    expect(m.mmio.read(base + 0x100, 4)).toBe(0); // conventional function: extended space reads 0
    expect(m.mmio.read(ECAM_BASE + (1 << 20), 4)).toBe(0xffffffff);
  });

  it("sets the multi-function bit of function 0 when other functions exist", () => {
    const { host, dev, read } = make();
    host.plug(dev("f0"), { device: 5, function: 0 });
    expect((read(0, 5, 0, 0x0c) >>> 16) & 0xff).toBe(0x00);
    host.plug(dev("f1"), { device: 5, function: 1 });
    expect((read(0, 5, 0, 0x0c) >>> 16) & 0xff).toBe(0x80);
    expect(read(0, 5, 0, 0x0e, 1)).toBe(0x80);
    expect((read(0, 5, 1, 0x0c) >>> 16) & 0xff).toBe(0x00);
  });

  it("chooses free slots, rejects taken or impossible ones, and unplugs", () => {
    const { host, dev, read } = make();
    const a = dev("a");
    expect(host.plug(a).address).toBe("0000:00:01.0");
    expect(host.plug(dev("b")).address).toBe("0000:00:02.0");
    expect(() => host.plug(dev("c"), { device: 1 })).toThrow(PciError);
    expect(() => host.plug(dev("c"), { device: 32 })).toThrow(/0..31/);
    expect(() => host.plug(a, { device: 9 })).toThrow(/already plugged/);
    host.unplug(a);
    expect(read(0, 1, 0, 0)).toBe(0xffffffff);
    expect(host.functions().map((f) => f.slot.address)).toEqual(["0000:00:00.0", "0000:00:02.0"]);
  });

  it("routes INTx to GSI 16 + ((device + pin - 1) mod 4)", () => {
    const { host, dev, levels } = make();
    const d = dev("blk");
    const slot = host.plug(d, { device: 3 });
    expect(slot.gsiOf(1)).toBe(19);
    expect(slot.gsiOf(2)).toBe(16);
    d.setIntx(true);
    d.setIntx(false);
    expect(levels).toEqual(["19:1", "19:0"]);
  });

  it("assigns BARs like firmware: aligned, decoded, with the interrupt line set", () => {
    const { m, host, dev, read } = make();
    host.plug(dev("a"), { device: 3 });
    host.plug(dev("b"), { device: 4 });
    expect(host.assignResources()).toEqual([]);
    for (const d of [3, 4]) {
      expect(read(0, d, 0, 4, 2) & 7).toBe(7);
      const io = read(0, d, 0, 0x10) & ~3;
      const mem = read(0, d, 0, 0x14) & ~0xf;
      const mem64 = read(0, d, 0, 0x18) & ~0xf;
      expect(io % 64).toBe(0);
      expect(io).toBeGreaterThanOrEqual(0xc000);
      expect((mem >>> 0) % 0x1000).toBe(0);
      expect((mem64 >>> 0) % 0x4000).toBe(0);
      expect(read(0, d, 0, 0x1c)).toBe(0);
      expect(m.ports.read(io, 1)).toBe(0x11);
      expect(m.mmio.read(mem >>> 0, 4)).toBe(0x22);
      expect(m.mmio.read(mem64 >>> 0, 4)).toBe(0x33);
    }
    expect(read(0, 3, 0, 0x3c, 1)).toBe(19);
    expect(read(0, 4, 0, 0x3c, 1)).toBe(16);
    // A window too small leaves BARs unassigned and says which.
    const small = make();
    small.host.plug(small.dev("x"), { device: 1 });
    expect(small.host.assignResources({ io: [0xc000, 0xc020], mem: [0xc0000000, 0xc0002000] })).toEqual(["0000:00:01.0 BAR2 (memory, 16384 bytes)", "0000:00:01.0 BAR0 (I/O, 64 bytes)"]);
  });

  it("resets the system through the reset control register at 0xCF9 (byte access only)", () => {
    const { m, host, resets, read } = make();
    m.ports.write(0xcf9, 1, 0x02);
    expect(resets()).toBe(0);
    m.ports.write(0xcf9, 1, 0x06);
    expect(resets()).toBe(1);
    m.ports.write(0xcf8, 4, 0x80000000);
    expect(resets()).toBe(1);
    host.bridge.configWrite(0x3c, 1, 5);
    host.reset();
    expect(read(0, 0, 0, 0x3c, 1)).toBe(0);
  });
});
