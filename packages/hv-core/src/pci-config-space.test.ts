import { describe, expect, it } from "vitest";
import { Machine } from "./machine.js";
import { PciConfigSpace, PCI_CAP_ID_MSI, PCI_CAP_ID_MSIX, PCI_CAP_ID_VENDOR } from "./pci-config-space.js";
import { PciError, formatPciAddress, type PciSlot } from "./pci.js";
import type { IrqLine } from "./irq.js";
import { StateError } from "./snapshottable.js";

function setup() {
  const m = new Machine({ memory: "1M" });
  const msis: [number, number][] = [];
  m.irqs.msiSink = { deliverMsi: (a, d) => void msis.push([a, d]) };
  const levels: string[] = [];
  m.irqs.router = { setIrqLevel: (g, l) => void levels.push(`${g}:${l ? 1 : 0}`) };
  const lines = new Map<number, IrqLine>();
  const slot: PciSlot = {
    bus: 0,
    device: 3,
    function: 0,
    address: formatPciAddress(0, 3, 0),
    intx: (pin) => {
      if (!lines.has(pin)) lines.set(pin, m.irqs.line(16 + pin - 1));
      return lines.get(pin)!;
    },
    gsiOf: (pin) => 16 + pin - 1,
  };
  const regs = new Uint32Array(64);
  const accesses: string[] = [];
  const cfg = new PciConfigSpace(m, {
    name: "dev",
    vendorId: 0x1af4,
    deviceId: 0x1041,
    classCode: 0x010000,
    revision: 1,
    subsystemVendorId: 0x1af4,
    subsystemId: 2,
    interruptPin: 1,
    bars: [
      { index: 0, kind: "io", size: 32, handler: { read: (o, s) => (accesses.push(`io r ${o}/${s}`), 0x5a), write: (o, s, v) => void accesses.push(`io w ${o}/${s}=${v}`) } },
      { index: 1, kind: "mem32", size: 0x1000 },
      {
        index: 2,
        kind: "mem64",
        size: 0x4000,
        prefetchable: true,
        handler: { read: (o) => regs[o >> 2], write: (o, _s, v) => void (regs[o >> 2] = v) },
      },
    ],
  });
  return { m, cfg, slot, msis, levels, regs, accesses };
}

describe("PciConfigSpace: header", () => {
  it("exposes identity read-only and masks command/status writes", () => {
    const { cfg } = setup();
    expect(cfg.configRead(0, 4)).toBe(0x10411af4);
    expect(cfg.configRead(8, 4)).toBe(0x01000001);
    expect(cfg.configRead(0x2c, 4)).toBe(0x00021af4);
    expect(cfg.configRead(0x3d, 1)).toBe(1);
    cfg.configWrite(0, 4, 0xffffffff);
    expect(cfg.configRead(0, 4)).toBe(0x10411af4);
    cfg.configWrite(4, 2, 0xffff);
    expect(cfg.configRead(4, 2)).toBe(0x0547);
    cfg.configWrite(0x3c, 1, 11);
    expect(cfg.configRead(0x3c, 1)).toBe(11);
    cfg.configWrite(0x3d, 1, 3);
    expect(cfg.configRead(0x3d, 1)).toBe(1);
    // Outside the 256-byte space: reads 0, writes ignored.
    expect(cfg.configRead(0x100, 4)).toBe(0);
    expect(() => cfg.configWrite(0x100, 4, 1)).not.toThrow();
  });

  it("sizes BARs by writing all-ones (PCI 3.0 §6.2.5.1)", () => {
    const { cfg } = setup();
    expect(cfg.configRead(0x10, 4)).toBe(0x1);
    expect(cfg.configRead(0x18, 4)).toBe(0xc);
    for (const off of [0x10, 0x14, 0x18, 0x1c, 0x20, 0x24]) cfg.configWrite(off, 4, 0xffffffff);
    expect(cfg.configRead(0x10, 4)).toBe(0xffffffe1); // 32 bytes of I/O
    expect(cfg.configRead(0x14, 4)).toBe(0xfffff000); // 4 KiB memory
    expect(cfg.configRead(0x18, 4)).toBe(0xffffc00c); // 16 KiB, 64-bit, prefetchable
    expect(cfg.configRead(0x1c, 4)).toBe(0xffffffff); // upper half
    expect(cfg.configRead(0x20, 4)).toBe(0); // unimplemented
    expect(cfg.configRead(0x30, 4)).toBe(0); // no expansion ROM
  });

  it("rejects impossible BAR layouts with typed errors", () => {
    const m = new Machine();
    const base = { name: "x", vendorId: 1, deviceId: 2, classCode: 0 };
    expect(() => new PciConfigSpace(m, { ...base, bars: [{ index: 0, kind: "mem32", size: 3000 }] })).toThrow(PciError);
    expect(() => new PciConfigSpace(m, { ...base, bars: [{ index: 5, kind: "mem64", size: 4096 }] })).toThrow(/index/);
    expect(() => new PciConfigSpace(m, { ...base, bars: [{ index: 0, kind: "mem64", size: 4096 }, { index: 1, kind: "io", size: 4 }] })).toThrow(/overlaps/);
    expect(() => new PciConfigSpace(m, { ...base, bars: [{ index: 0, kind: "io", size: 512 }] })).toThrow(/size/);
  });
});

describe("PciConfigSpace: BAR decoding", () => {
  it("maps BARs only while decoding is enabled, and follows moves", () => {
    const { m, cfg, slot, regs, accesses } = setup();
    cfg.attach(slot);
    cfg.configWrite(0x10, 4, 0xc000);
    cfg.configWrite(0x18, 4, 0xfe000000);
    cfg.configWrite(0x1c, 4, 0);
    expect(m.ports.ownerOf(0xc000)).toBeUndefined();
    cfg.configWrite(4, 2, 0x3);
    expect(m.ports.ownerOf(0xc000)).toBe("dev BAR0");
    expect(m.ports.read(0xc004, 2)).toBe(0x5a);
    m.ports.write(0xc01f, 1, 7);
    expect(accesses).toEqual(["io r 4/2", "io w 31/1=7"]);
    m.mmio.write(0xfe000010, 4, 0xdeadbeef);
    expect(regs[4]).toBe(0xdeadbeef);
    expect(cfg.barAddress(2)).toBe(0xfe000000);
    expect(cfg.barAddress(1)).toBe(-1); // BAR1 still at 0: unassigned
    // Move BAR2 above 4 GiB.
    cfg.configWrite(0x1c, 4, 0x1);
    expect(m.mmio.ownerOf(0xfe000000)).toBeUndefined();
    expect(m.mmio.ownerOf(0x1fe000000)).toBe("dev BAR2");
    // Memory decoding off: gone; I/O stays.
    cfg.configWrite(4, 2, 0x1);
    expect(m.mmio.ownerOf(0x1fe000000)).toBeUndefined();
    expect(m.ports.ownerOf(0xc000)).toBe("dev BAR0");
    // Sizing with decoding on leaves an impossible address unmapped (I/O past 64 KiB).
    cfg.configWrite(0x10, 4, 0xffffffff);
    expect(cfg.barAddress(0)).toBe(-1);
    cfg.detach();
    expect(m.ports.ownerOf(0xc000)).toBeUndefined();
  });

  it("leaves a BAR the guest places over another device unmapped, without failing", () => {
    const { m, cfg, slot } = setup();
    m.mmio.register("other", 0xfe000000, 0x1000, { read: () => 0, write: () => {} });
    cfg.attach(slot);
    cfg.configWrite(0x14, 4, 0xfe000000);
    cfg.configWrite(4, 2, 0x2);
    expect(cfg.barAddress(1)).toBe(-1);
    expect(m.mmio.ownerOf(0xfe000000)).toBe("other");
    cfg.configWrite(0x14, 4, 0xfe001000);
    expect(cfg.barAddress(1)).toBe(0xfe001000);
  });

  it("lets two BARs swap addresses in one command-enabled sequence", () => {
    const { m, cfg, slot } = setup();
    cfg.attach(slot);
    cfg.configWrite(0x14, 4, 0xf0000000);
    cfg.configWrite(0x18, 4, 0xf1000000);
    cfg.configWrite(4, 2, 0x2);
    cfg.configWrite(0x14, 4, 0xf1000000); // collides with BAR2 for now
    expect(cfg.barAddress(1)).toBe(-1);
    cfg.configWrite(0x18, 4, 0xf0000000);
    expect(m.mmio.ownerOf(0xf0000000)).toBe("dev BAR2");
    // BAR1 is retried whenever BARs change: it now fits.
    expect(cfg.barAddress(1)).toBe(0xf1000000);
  });
});

describe("PciConfigSpace: capabilities and interrupts", () => {
  it("chains capabilities from offset 0x34 and sets the status bit", () => {
    const { cfg } = setup();
    expect(cfg.configRead(6, 2) & 0x10).toBe(0);
    const v = cfg.addCapability(PCI_CAP_ID_VENDOR, 16);
    cfg.define(v + 2, 1, 16);
    cfg.addMsi({ vectors: 4 });
    cfg.addMsix({ vectors: 3, tableBar: 1, tableOffset: 0, pbaBar: 1, pbaOffset: 0x800 });
    expect(cfg.configRead(6, 2) & 0x10).toBe(0x10);
    const ids: number[] = [];
    for (let p = cfg.configRead(0x34, 1), n = 0; p !== 0 && n < 48; p = cfg.configRead(p + 1, 1), n++) {
      expect(p & 3).toBe(0);
      ids.push(cfg.configRead(p, 1));
    }
    expect(ids).toEqual([PCI_CAP_ID_VENDOR, PCI_CAP_ID_MSI, PCI_CAP_ID_MSIX]);
  });

  it("drives INTx through the slot's line, gated by INTx disable", () => {
    const { cfg, slot, levels } = setup();
    cfg.attach(slot);
    cfg.setIntx(true);
    expect(levels).toEqual(["16:1"]);
    expect(cfg.configRead(6, 2) & 0x8).toBe(0x8);
    cfg.configWrite(4, 2, 0x400);
    expect(levels).toEqual(["16:1", "16:0"]);
    expect(cfg.configRead(6, 2) & 0x8).toBe(0x8); // status still shows the request
    cfg.configWrite(4, 2, 0);
    cfg.setIntx(false);
    expect(levels).toEqual(["16:1", "16:0", "16:1", "16:0"]);
    expect(cfg.notify(0)).toBe(false); // no MSI enabled: use INTx
  });

  it("delivers MSI with multiple-message data and per-vector masking (§6.8.1)", () => {
    const m = new Machine();
    const msis: [number, number][] = [];
    m.irqs.msiSink = { deliverMsi: (a, d) => void msis.push([a, d]) };
    const cfg = new PciConfigSpace(m, { name: "msi", vendorId: 1, deviceId: 2, classCode: 0 });
    const cap = cfg.addMsi({ vectors: 8, perVectorMask: true });
    expect(cfg.configRead(cap + 2, 2)).toBe(0x186); // PVM, 64-bit, MMC=3
    cfg.configWrite(cap + 4, 4, 0xfee01000);
    cfg.configWrite(cap + 8, 4, 0);
    cfg.configWrite(cap + 0xc, 2, 0x4030);
    cfg.configWrite(cap + 2, 2, 0x21); // enable, MME = 2 (4 vectors)
    expect(cfg.msiEnabled).toBe(true);
    expect(cfg.notify(1)).toBe(true);
    expect(cfg.notify(3)).toBe(true);
    expect(cfg.notify(5)).toBe(true); // beyond the 4 enabled: dropped
    expect(msis).toEqual([
      [0xfee01000, 0x4031],
      [0xfee01000, 0x4033],
    ]);
    cfg.configWrite(cap + 0x10, 4, 0x4); // mask vector 2
    cfg.notify(2);
    expect(msis.length).toBe(2);
    expect(cfg.configRead(cap + 0x14, 4)).toBe(0x4); // pending
    cfg.configWrite(cap + 0x10, 4, 0);
    expect(msis[2]).toEqual([0xfee01000, 0x4032]);
    expect(cfg.configRead(cap + 0x14, 4)).toBe(0);
  });

  it("serves the MSI-X table and PBA from the BAR and honours masks (§6.8.2)", () => {
    const { m, cfg, slot, msis, levels } = setup();
    const cap = cfg.addMsix({ vectors: 3, tableBar: 1, tableOffset: 0, pbaBar: 1, pbaOffset: 0x800 });
    expect(cfg.configRead(cap + 2, 2)).toBe(2);
    expect(cfg.configRead(cap + 4, 4)).toBe(1);
    expect(cfg.configRead(cap + 8, 4)).toBe(0x801);
    cfg.attach(slot);
    cfg.configWrite(0x14, 4, 0xfebf0000);
    cfg.configWrite(4, 2, 0x6);
    const t = 0xfebf0000;
    expect(m.mmio.read(t + 12, 4)).toBe(1); // masked at reset
    m.mmio.write(t + 16, 4, 0xfee00000);
    m.mmio.write(t + 20, 4, 0);
    m.mmio.write(t + 24, 4, 0x41);
    cfg.setIntx(true);
    expect(levels).toEqual(["16:1"]);
    cfg.configWrite(cap + 2, 2, 0x8000); // enable: INTx must drop
    expect(levels).toEqual(["16:1", "16:0"]);
    expect(cfg.notify(1)).toBe(true);
    expect(msis).toEqual([]);
    expect(m.mmio.read(t + 0x800, 4)).toBe(2); // pending bit 1
    m.mmio.write(t + 28, 4, 0); // unmask vector 1 -> delivered
    expect(msis).toEqual([[0xfee00000, 0x41]]);
    expect(m.mmio.read(t + 0x800, 4)).toBe(0);
    cfg.configWrite(cap + 2, 2, 0xc000); // function mask
    cfg.notify(1);
    expect(msis.length).toBe(1);
    cfg.configWrite(cap + 2, 2, 0x8000);
    expect(msis.length).toBe(2);
    m.mmio.write(t + 0x800, 4, 0xffffffff); // PBA is read-only
    expect(m.mmio.read(t + 0x800, 4)).toBe(0);
    expect(m.mmio.read64AsNumber(t + 16)).toBe(0xfee00000);
    expect(m.mmio.read(t + 25, 1)).toBe(0); // byte read of data
    expect(m.mmio.read(t + 24, 1)).toBe(0x41);
  });

  it("validates MSI-X placement", () => {
    const { cfg } = setup();
    expect(() => cfg.addMsix({ vectors: 300, tableBar: 1, tableOffset: 0, pbaBar: 1, pbaOffset: 0x800 })).toThrow(/does not fit/);
    expect(() => cfg.addMsix({ vectors: 2, tableBar: 0, tableOffset: 0, pbaBar: 1, pbaOffset: 0x800 })).toThrow(/not a memory BAR/);
    expect(() => cfg.addMsix({ vectors: 2, tableBar: 1, tableOffset: 0, pbaBar: 1, pbaOffset: 0x10 })).toThrow(/overlap/);
  });
});

describe("PciConfigSpace: reset and snapshots", () => {
  it("reset restores power-on contents and unmaps", () => {
    const { m, cfg, slot } = setup();
    cfg.attach(slot);
    cfg.configWrite(0x14, 4, 0xfebf0000);
    cfg.configWrite(4, 2, 0x7);
    cfg.configWrite(0x3c, 1, 10);
    expect(cfg.busMasterEnabled).toBe(true);
    cfg.reset();
    expect(cfg.configRead(4, 2)).toBe(0);
    expect(cfg.configRead(0x14, 4)).toBe(0);
    expect(cfg.configRead(0x3c, 1)).toBe(0);
    expect(m.mmio.ownerOf(0xfebf0000)).toBeUndefined();
  });

  it("saves and restores, remapping BARs, and rejects foreign state", () => {
    const a = setup();
    a.cfg.addMsix({ vectors: 2, tableBar: 1, tableOffset: 0, pbaBar: 1, pbaOffset: 0x800 });
    a.cfg.attach(a.slot);
    a.cfg.configWrite(0x14, 4, 0xfebf0000);
    a.cfg.configWrite(4, 2, 0x2);
    a.m.mmio.write(0xfebf0008, 4, 0x77);
    const saved = a.cfg.saveState();
    const b = setup();
    b.cfg.addMsix({ vectors: 2, tableBar: 1, tableOffset: 0, pbaBar: 1, pbaOffset: 0x800 });
    b.cfg.attach(b.slot);
    b.cfg.loadState(saved);
    expect(b.m.mmio.ownerOf(0xfebf0000)).toBe("dev BAR1");
    expect(b.m.mmio.read(0xfebf0008, 4)).toBe(0x77);
    const c = setup();
    expect(() => c.cfg.loadState(saved)).toThrow(StateError); // no MSI-X table here
    const bad = { ...(saved as Record<string, unknown>) } as Record<string, unknown>;
    const config = (bad.config as Uint8Array).slice();
    config[0] = 0x12;
    expect(() => b.cfg.loadState({ ...(saved as object), config } as never)).toThrow(/read-only byte at configuration offset 0x0/);
  });
});
