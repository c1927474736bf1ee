import { describe, expect, it } from "vitest";
import { parseSize } from "./size.js";

describe("parseSize", () => {
  it("parses QEMU-style sizes", () => {
    expect(parseSize("256M")).toBe(256 * 2 ** 20);
    expect(parseSize("1G")).toBe(2 ** 30);
    expect(parseSize("1.5G")).toBe(1.5 * 2 ** 30);
    expect(parseSize("64k")).toBe(65536);
    expect(parseSize("2GiB")).toBe(2 ** 31);
    expect(parseSize("4096")).toBe(4096);
    expect(parseSize(512)).toBe(512);
  });
  it("rejects what is not a size", () => {
    expect(() => parseSize("12Q")).toThrowError(/invalid size "12Q"/);
    expect(() => parseSize("")).toThrowError(/invalid size/);
    expect(() => parseSize("0.3K")).toThrowError(/whole number/);
    expect(() => parseSize(-1)).toThrowError(/invalid size/);
  });
});
