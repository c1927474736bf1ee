import { describe, expect, it, vi } from "vitest";
import type { BlockDevice } from "@typevisor/qcow2";
import { TimedBlockDevice } from "./run-stats.js";

/** A disk whose requests complete when the test says so. */
function manualDisk(): { disk: BlockDevice; finish: () => void } {
  const pending: (() => void)[] = [];
  const later = (): Promise<void> => new Promise((resolve) => pending.push(resolve));
  return {
    disk: { size: 4096, readOnly: false, read: later, write: later, flush: later, discard: later, writeZeroes: later, close: async () => {} },
    finish: () => pending.shift()!(),
  };
}

describe("TimedBlockDevice", () => {
  it("counts requests by kind and busy time once for overlapping requests", async () => {
    const now = vi.spyOn(performance, "now");
    try {
      const { disk, finish } = manualDisk();
      const t = new TimedBlockDevice(disk);
      now.mockReturnValue(1000);
      const a = t.read(0, new Uint8Array(512));
      now.mockReturnValue(1005);
      const b = t.write(512, new Uint8Array(512));
      now.mockReturnValue(1010);
      finish();
      await a;
      now.mockReturnValue(1030);
      finish();
      await b; // busy from 1000 to 1030 with two in flight part of it: 30 ms
      now.mockReturnValue(2000);
      const c = t.flush();
      now.mockReturnValue(2004);
      finish();
      await c;
      expect(t.busyMs).toBe(34);
      expect(t.requests).toEqual({ read: 1, write: 1, flush: 1, discard: 0, writeZeroes: 0 });
      expect(t.size).toBe(4096);
    } finally {
      now.mockRestore();
    }
  });

  it("ends a failed request's busy span too", async () => {
    const now = vi.spyOn(performance, "now");
    try {
      let fail: (e: Error) => void = () => {};
      const failing: BlockDevice = { size: 0, readOnly: true, read: () => new Promise((_, reject) => (fail = reject)), write: async () => {}, flush: async () => {}, discard: async () => {}, writeZeroes: async () => {}, close: async () => {} };
      const t = new TimedBlockDevice(failing);
      now.mockReturnValue(0);
      const r = t.read(0, new Uint8Array(1));
      now.mockReturnValue(5);
      fail(new Error("EIO"));
      await expect(r).rejects.toThrow("EIO");
      now.mockReturnValue(10);
      const f = t.flush();
      now.mockReturnValue(12);
      await f;
      expect(t.busyMs).toBe(7);
      expect(t.requests.read).toBe(1);
    } finally {
      now.mockRestore();
    }
  });
});
