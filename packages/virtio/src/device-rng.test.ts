import { describe, expect, it } from "vitest";
import { seeded } from "@typevisor/test-support";
import { VirtioRngDevice } from "./device-rng.js";
import { mmioRig } from "../test/loopback-device.js";

function rngRig(device: VirtioRngDevice, packed = false) {
  const rig = mmioRig(device);
  rig.driver.negotiate({ packed });
  const q = rig.driver.setupQueue(0);
  rig.driver.driverOk();
  return { ...rig, q };
}

describe("virtio-rng", () => {
  it("is device 4 with one queue and no configuration", () => {
    const { driver, device } = rngRig(new VirtioRngDevice());
    expect(driver.read(0x008)).toBe(4);
    expect(device.queues.length).toBe(1);
    expect(device.config.length).toBe(0);
  });

  for (const packed of [false, true]) {
    it(`fills device-writable buffers from the host's crypto source (${packed ? "packed" : "split"})`, () => {
      const { driver, q, irqLevel, device } = rngRig(new VirtioRngDevice(), packed);
      const a = q.add({ in: [64] });
      const b = q.add({ in: [10, 4000, 6000] });
      q.publish();
      driver.kick(0);
      expect(irqLevel()).toBe(true);
      const used = q.takeUsed();
      expect(used).toEqual([
        { id: a, len: 64 },
        { id: b, len: 10_010 },
      ]);
      // The test driver pre-fills buffers with 0xcc: random data replaced it.
      const bytes = q.written(b, 10_010);
      const counts = new Uint32Array(256);
      for (const x of bytes) counts[x]++;
      expect(counts[0xcc]).toBeLessThan(120); // ~39 expected from a uniform source
      expect(new Set(bytes).size).toBe(256);
      expect(device.bytesProvided).toBe(10_074);
    });
  }

  it("uses the given source and caps the bytes per request", () => {
    const r = seeded(1);
    const expected = seeded(1);
    const device = new VirtioRngDevice({ source: (d) => d.forEach((_, i) => (d[i] = r() & 0xff)), maxBytesPerRequest: 100 });
    const { driver, q } = rngRig(device);
    const id = q.add({ in: [1000] });
    q.publish();
    driver.kick(0);
    expect(q.takeUsed()).toEqual([{ id, len: 100 }]);
    const want = Uint8Array.from({ length: 100 }, () => expected() & 0xff);
    expect(q.written(id, 100)).toEqual(want);
  });

  it("returns read-only and malformed buffers empty", () => {
    const { driver, q, device, mem } = rngRig(new VirtioRngDevice());
    const a = q.add({ out: [new Uint8Array(8)] });
    q.publish();
    driver.kick(0);
    expect(q.takeUsed()).toEqual([{ id: a, len: 0 }]);
    expect(device.needsResetReason).toBeUndefined();
    void mem;
  });
});
