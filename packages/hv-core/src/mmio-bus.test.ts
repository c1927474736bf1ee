import { describe, expect, it } from "vitest";
import type { AccessSize, MmioHandler } from "./io-handler.js";
import { MmioBus } from "./mmio-bus.js";

class Ram implements MmioHandler {
  readonly bytes: Uint8Array;
  calls = 0;
  constructor(length: number) {
    this.bytes = new Uint8Array(length);
  }
  read(offset: number, size: AccessSize): number {
    this.calls++;
    let v = 0;
    for (let i = 0; i < size; i++) v |= this.bytes[offset + i] << (8 * i);
    return v >>> 0;
  }
  write(offset: number, size: AccessSize, value: number): void {
    this.calls++;
    for (let i = 0; i < size; i++) this.bytes[offset + i] = (value >>> (8 * i)) & 0xff;
  }
}

describe("MmioBus", () => {
  it("finds the right region among many, including above 4 GiB", () => {
    const bus = new MmioBus();
    const devs: Ram[] = [];
    for (let i = 0; i < 40; i++) {
      const d = new Ram(0x1000);
      devs.push(d);
      bus.register(`dev${i}`, 0xfe000000 + i * 0x2000, 0x1000, d);
    }
    const high = new Ram(0x1000);
    bus.register("high", 0x8_0000_0000, 0x1000, high);
    for (let i = 39; i >= 0; i--) bus.write(0xfe000000 + i * 0x2000 + 4, 4, i * 0x01010101);
    for (let i = 0; i < 40; i++) expect(bus.read(0xfe000000 + i * 0x2000 + 4, 4)).toBe((i * 0x01010101) >>> 0);
    bus.write(0x8_0000_0010, 2, 0xbeef);
    expect(high.bytes[0x10]).toBe(0xef);
    expect(bus.ownerOf(0x8_0000_0fff)).toBe("high");
    expect(bus.isClaimed(0xfe001000)).toBe(false);
  });

  it("returns all-ones for unclaimed addresses", () => {
    const bus = new MmioBus();
    expect(bus.read(0xfee00000, 4)).toBe(0xffffffff);
    expect(bus.read(0x1234, 2)).toBe(0xffff);
    expect(bus.read(0x1234, 1)).toBe(0xff);
  });

  it("splits 8-byte accesses for handlers without read64, low half first", () => {
    const bus = new MmioBus();
    const d = new Ram(16);
    bus.register("d", 0x1000, 16, d);
    bus.write64(0x1000, 0x89abcdef, 0x01234567);
    expect(bus.read(0x1000, 4)).toBe(0x89abcdef);
    expect(bus.read(0x1004, 4)).toBe(0x01234567);
    const out = new Uint32Array(2);
    bus.read64(0x1000, out);
    expect([...out]).toEqual([0x89abcdef, 0x01234567]);
    bus.write64(0x1008, 0x89abcdef, 0x1234);
    expect(bus.read64AsNumber(0x1008)).toBe(0x123489abcdef);
  });

  it("gives 8-byte accesses whole to handlers that take them", () => {
    const bus = new MmioBus();
    const seen: string[] = [];
    bus.register("wide", 0x2000, 8, {
      read: () => 0,
      write: () => void seen.push("split"),
      read64: (_o, out) => {
        out[0] = 1;
        out[1] = 2;
      },
      write64: (o, lo, hi) => void seen.push(`${o}:${lo}:${hi}`),
    });
    bus.write64(0x2000, 7, 9);
    const out = new Uint32Array(2);
    bus.read64(0x2000, out);
    expect(seen).toEqual(["0:7:9"]);
    expect([...out]).toEqual([1, 2]);
  });

  it("assembles an access that straddles two regions", () => {
    const bus = new MmioBus();
    const a = new Ram(2);
    const b = new Ram(2);
    a.bytes.set([1, 2]);
    b.bytes.set([3, 4]);
    bus.register("a", 0x100, 2, a);
    bus.register("b", 0x102, 2, b);
    expect(bus.read(0x101, 2)).toBe(0x0302);
    expect(bus.read(0x100, 4)).toBe(0x04030201);
  });

  it("detects overlaps and frees regions", () => {
    const bus = new MmioBus();
    const r = bus.register("hpet", 0xfed00000, 0x400, new Ram(0x400));
    expect(() => bus.register("ioapic", 0xfed003ff, 0x20, new Ram(0x20))).toThrowError(/overlaps "hpet"/);
    r.unregister();
    bus.register("ioapic", 0xfed003ff, 0x20, new Ram(0x20));
    expect(bus.describe()).toEqual([{ name: "ioapic", base: 0xfed003ff, length: 0x20 }]);
  });
});
