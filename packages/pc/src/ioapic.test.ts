import { InterruptLines } from "@typevisor/hv-core";
import { describe, expect, it } from "vitest";
import { IoApic } from "./ioapic.js";
import { PcInterruptRouter, isaIrqToGsi, pciIntxGsi } from "./interrupt-router.js";
import { Pic8259Pair } from "./pic-8259.js";

function make() {
  const irqs = new InterruptLines();
  const msis: [number, number][] = [];
  irqs.msiSink = { deliverMsi: (a, d) => void msis.push([a, d]) };
  const io = new IoApic(irqs, 2);
  const reg = (r: number): number => {
    io.handler.write(0, 4, r);
    return io.handler.read(0x10, 4);
  };
  const setReg = (r: number, v: number): void => {
    io.handler.write(0, 4, r);
    io.handler.write(0x10, 4, v);
  };
  const route = (pin: number, low: number, dest = 0): void => {
    setReg(0x11 + pin * 2, dest << 24);
    setReg(0x10 + pin * 2, low);
  };
  return { irqs, msis, io, reg, setReg, route };
}

describe("I/O APIC", () => {
  it("reports ID, version 0x20 with 24 entries, and masked entries at reset", () => {
    const { reg, setReg } = make();
    expect(reg(0)).toBe(2 << 24);
    expect(reg(1)).toBe(0x00170020);
    expect(reg(0x10)).toBe(0x10000);
    setReg(0, 0x0f000000);
    expect(reg(0)).toBe(0x0f000000);
    expect(reg(0x40)).toBe(0); // past the table
  });

  it("turns an edge on an unmasked pin into an MSI in the SDM §11.11 format", () => {
    const { io, msis, route, reg } = make();
    route(4, 0x0000_0931, 3); // vector 0x31, lowest priority (001), logical destination (bit 11), edge
    expect(reg(0x18)).toBe(0x0931);
    expect(reg(0x19)).toBe(0x03000000);
    io.setIrq(4, true);
    io.setIrq(4, true); // no new edge
    io.setIrq(4, false);
    io.setIrq(4, true);
    expect(msis).toEqual([
      [0xfee03004, 0x4131],
      [0xfee03004, 0x4131],
    ]);
  });

  it("loses edges on masked pins (82093AA §3.2.4)", () => {
    const { io, msis, route } = make();
    route(1, 0x10031);
    io.setIrq(1, true);
    io.setIrq(1, false);
    route(1, 0x00031);
    expect(msis).toEqual([]);
  });

  it("level pins set Remote IRR, wait for the EOI broadcast, and redeliver while asserted", () => {
    const { irqs, io, msis, route, reg, setReg } = make();
    route(17, 0x8000 | 0x2000 | 0x41); // level, active low, vector 0x41
    io.setIrq(17, true);
    expect(msis).toEqual([[0xfee00000, 0xc041]]);
    expect(reg(0x10 + 34) & 0x4000).toBe(0x4000);
    irqs.eoi(0x41); // still asserted: again
    expect(msis.length).toBe(2);
    io.setIrq(17, false);
    irqs.eoi(0x41);
    expect(reg(0x10 + 34) & 0x4000).toBe(0);
    expect(msis.length).toBe(2);
    // Remote IRR is read-only to software.
    setReg(0x10 + 34, 0x4000 | 0x8000 | 0x41);
    expect(reg(0x10 + 34) & 0x4000).toBe(0);
    // The EOI register (version 0x20) works like the broadcast.
    io.setIrq(17, true);
    expect(msis.length).toBe(3);
    io.setIrq(17, false);
    io.handler.write(0x40, 4, 0x41);
    expect(reg(0x10 + 34) & 0x4000).toBe(0);
  });

  it("delivers an asserted level pin when it is unmasked", () => {
    const { io, msis, route } = make();
    route(20, 0x18051);
    io.setIrq(20, true);
    expect(msis).toEqual([]);
    route(20, 0x08051);
    expect(msis).toEqual([[0xfee00000, 0xc051]]);
  });

  it("snapshots", () => {
    const a = make();
    a.route(9, 0x8061);
    a.io.setIrq(9, true);
    const b = make();
    b.io.loadState(a.io.saveState());
    expect(b.io.entry(9)).toEqual(a.io.entry(9));
    expect(() => b.io.loadState({ low: [] })).toThrow(/malformed/);
  });
});

describe("PC interrupt routing", () => {
  it("sends ISA GSIs to both controllers, PIT IRQ 0 via GSI 2, PCI GSIs to the I/O APIC only", () => {
    const irqs = new InterruptLines();
    const msis: number[] = [];
    irqs.msiSink = { deliverMsi: (_a, d) => void msis.push(d & 0xff) };
    const pic = new Pic8259Pair();
    const io = new IoApic(irqs);
    irqs.router = new PcInterruptRouter(pic, io);
    const m = pic.portHandler("master");
    for (const v of [0x11, 0x20, 0x04, 0x01]) m.write(v === 0x11 ? 0 : 1, 1, v);
    for (let pin = 0; pin < 24; pin++) {
      io.handler.write(0, 4, 0x10 + pin * 2);
      io.handler.write(0x10, 4, 0x30 + pin);
    }
    expect(isaIrqToGsi(0)).toBe(2);
    irqs.line(isaIrqToGsi(0)).pulse();
    expect(pic.acknowledge()).toBe(0x20);
    expect(msis).toEqual([0x32]);
    irqs.line(pciIntxGsi(3, 1)).pulse();
    expect(msis).toEqual([0x32, 0x30 + 19]);
    expect(pic.hasInterrupt()).toBe(false);
  });
});
