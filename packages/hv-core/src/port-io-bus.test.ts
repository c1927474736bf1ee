import { describe, expect, it } from "vitest";
import type { AccessSize, IoHandler } from "./io-handler.js";
import { BusError, PortIoBus } from "./port-io-bus.js";

/** A byte-addressed register file that records accesses. */
class Regs implements IoHandler {
  readonly bytes: Uint8Array;
  readonly log: string[] = [];
  constructor(length: number, fill = 0) {
    this.bytes = new Uint8Array(length).fill(fill);
  }
  read(offset: number, size: AccessSize): number {
    this.log.push(`r${size}@${offset}`);
    let v = 0;
    for (let i = 0; i < size; i++) v |= this.bytes[offset + i] << (8 * i);
    return v >>> 0;
  }
  write(offset: number, size: AccessSize, value: number): void {
    this.log.push(`w${size}@${offset}=${value.toString(16)}`);
    for (let i = 0; i < size; i++) this.bytes[offset + i] = (value >>> (8 * i)) & 0xff;
  }
}

describe("PortIoBus", () => {
  it("dispatches 1, 2 and 4 byte accesses with region-relative offsets", () => {
    const bus = new PortIoBus();
    const dev = new Regs(8);
    bus.register("uart", 0x3f8, 8, dev);
    bus.write(0x3f8, 4, 0xdeadbeef);
    expect(bus.read(0x3f8, 1)).toBe(0xef);
    expect(bus.read(0x3f9, 2)).toBe(0xadbe);
    expect(bus.read(0x3f8, 4)).toBe(0xdeadbeef);
    expect(dev.log).toEqual(["w4@0=deadbeef", "r1@0", "r2@1", "r4@0"]);
  });

  it("returns all-ones for unclaimed ports and reports them to the tracer", () => {
    const bus = new PortIoBus();
    const seen: string[] = [];
    bus.onUnclaimed = (a, s, w) => seen.push(`${w ? "w" : "r"}${s}@${a.toString(16)}`);
    expect(bus.read(0x80, 1)).toBe(0xff);
    expect(bus.read(0x80, 2)).toBe(0xffff);
    expect(bus.read(0x80, 4)).toBe(0xffffffff);
    bus.write(0x80, 1, 0x12);
    expect(seen.slice(0, 1)).toEqual(["r1@80"]);
    expect(seen).toContain("w1@80");
  });

  it("splits an access that straddles a device and a gap into bytes", () => {
    const bus = new PortIoBus();
    const dev = new Regs(2, 0x11);
    bus.register("dev", 0x100, 2, dev);
    expect(bus.read(0xff, 4)).toBe(0xff1111ff);
    bus.write(0x101, 2, 0xabcd);
    expect(dev.bytes[1]).toBe(0xcd);
  });

  it("masks handler results and written values to the access size", () => {
    const bus = new PortIoBus();
    const seen: number[] = [];
    bus.register("wide", 0x10, 4, { read: () => 0x12345678, write: (_o, _s, v) => void seen.push(v) });
    expect(bus.read(0x10, 1)).toBe(0x78);
    expect(bus.read(0x10, 2)).toBe(0x5678);
    bus.write(0x10, 1, 0x1ff);
    bus.write(0x10, 4, -1);
    expect(seen).toEqual([0xff, 0xffffffff]);
  });

  it("rejects overlapping claims, naming both devices", () => {
    const bus = new PortIoBus();
    bus.register("pic", 0x20, 2, new Regs(2));
    expect(() => bus.register("pit", 0x21, 4, new Regs(4))).toThrowError(/"pit".*overlap "pic".*0x21/);
    try {
      bus.register("pit", 0x21, 4, new Regs(4));
    } catch (e) {
      expect((e as BusError).code).toBe("BUS_OVERLAP");
    }
  });

  it("rejects ranges outside the port space", () => {
    const bus = new PortIoBus();
    expect(() => bus.register("x", 0xfffe, 4, new Regs(4))).toThrowError(BusError);
    expect(() => bus.register("x", 0, 0, new Regs(4))).toThrowError(BusError);
  });

  it("frees ports on unregister and reuses the slot", () => {
    const bus = new PortIoBus();
    const r = bus.register("a", 0x60, 1, new Regs(1, 0x42));
    expect(bus.read(0x60, 1)).toBe(0x42);
    r.unregister();
    r.unregister();
    expect(bus.read(0x60, 1)).toBe(0xff);
    expect(bus.ownerOf(0x60)).toBeUndefined();
    bus.register("b", 0x60, 1, new Regs(1, 0x24));
    expect(bus.read(0x60, 1)).toBe(0x24);
    expect(bus.ownerOf(0x60)).toBe("b");
  });
});
