import { describe, expect, it } from "vitest";
import { parseDiskOption, splitOptionString } from "./options.js";

describe("option strings", () => {
  it("splits at commas, with ,, for a literal comma", () => {
    expect(splitOptionString("a,b=c,,d,e")).toEqual(["a", "b=c,d", "e"]);
    expect(splitOptionString("")).toEqual([""]);
  });

  it.each([
    ["disk.qcow2", { path: "disk.qcow2", format: undefined, readOnly: false }],
    ["disk.img,format=raw", { path: "disk.img", format: "raw", readOnly: false }],
    ["/images/a,,b.qcow2,format=qcow2,readonly", { path: "/images/a,b.qcow2", format: "qcow2", readOnly: true }],
    ["d.img,readonly=off", { path: "d.img", format: undefined, readOnly: false }],
    ["d.img,readonly=on,format=raw", { path: "d.img", format: "raw", readOnly: true }],
  ])("--disk %s", (text, want) => {
    expect(parseDiskOption(text)).toEqual(want);
  });

  it.each([
    ["", /first part must be the image file/],
    ["format=raw", /first part must be the image file/],
    ["d.img,format=vmdk", /format must be qcow2 or raw, not "vmdk"/],
    ["d.img,readonly=maybe", /not on\/off/],
    ["d.img,cache=none", /unknown option "cache"/],
  ])("--disk %s is rejected", (text, message) => {
    expect(() => parseDiskOption(text)).toThrow(message);
  });
});
