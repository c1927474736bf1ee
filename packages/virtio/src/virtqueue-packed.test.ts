import { describe, expect, it } from "vitest";
import { VirtioStatus } from "./constants.js";
import { MMIO, type PackedDriverQueue } from "../test/guest-driver.js";
import { LoopbackDevice, mmioRig } from "../test/loopback-device.js";

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

function packedRig(opts: { eventIdx?: boolean; indirect?: boolean; size?: number; queueSize?: number } = {}) {
  const rig = mmioRig(new LoopbackDevice(opts.size ?? 16));
  rig.driver.negotiate({ packed: true, eventIdx: opts.eventIdx ?? false, indirect: opts.indirect ?? true });
  const q = rig.driver.setupQueue(0, opts.queueSize) as PackedDriverQueue;
  rig.driver.driverOk();
  const needsReset: string[] = [];
  rig.device.events.on("needsReset", (e) => needsReset.push(e.reason));
  return { ...rig, q, needsReset };
}

/** Writes one raw packed descriptor. */
function rawDesc(rig: ReturnType<typeof packedRig>, slot: number, addr: number, len: number, id: number, flags: number): void {
  const b = rig.q.desc + 16 * slot;
  rig.mem.writeU32(b, addr % 2 ** 32);
  rig.mem.writeU32(b + 4, Math.floor(addr / 2 ** 32));
  rig.mem.writeU32(b + 8, len);
  rig.mem.writeU16(b + 12, id);
  rig.mem.writeU16(b + 14, flags);
}

const AVAIL1 = 1 << 7; // available in the first lap (wrap counter 1)

describe("packed virtqueue: normal operation", () => {
  it("uses a queue size that is not a power of two, with chains wrapping around the ring end", () => {
    const { driver, q, device } = packedRig({ queueSize: 5 });
    expect(device.queues[0].packed).toBe(true);
    for (let i = 0; i < 500; i++) {
      const words = [`a${i}`, `bb${i}`, `c${i}`].slice(0, 1 + (i % 3));
      const id = q.add({ out: words.map(enc), in: [3, 40] });
      q.publish();
      driver.kick(0);
      const used = q.takeUsed();
      expect(used.length).toBe(1);
      expect(used[0].id).toBe(id);
      expect(dec(q.written(id, used[0].len))).toBe(words.join("").split("").reverse().join(""));
      if (i % 50 === 49) (driver.alloc as unknown as { next: number }).next = 0x10000;
    }
    expect(device.status & VirtioStatus.DEVICE_NEEDS_RESET).toBe(0);
  });

  it("returns several buffers in one batch, in order, each advancing by its chain length", () => {
    const { driver, q } = packedRig({ queueSize: 8 });
    const ids = [q.add({ out: [enc("one"), enc("!")], in: [4] }), q.add({ out: [enc("two")], in: [1, 3] }), q.add({ out: [enc("3")], in: [1], indirect: true })];
    q.publish();
    driver.kick(0);
    const used = q.takeUsed();
    expect(used.map((u) => u.id)).toEqual(ids);
    expect(used.map((u) => dec(q.written(u.id, u.len)))).toEqual(["!eno", "owt", "3"]);
    expect(q.free()).toBe(8);
  });

  it("driver event suppression: DISABLE silences interrupts", () => {
    const { driver, q, irqLevel } = packedRig();
    q.setInterrupts(false);
    q.add({ out: [enc("a")], in: [1] });
    q.publish();
    driver.kick(0);
    expect(irqLevel()).toBe(false);
    expect(q.takeUsed().length).toBe(1);
  });

  it("EVENT_IDX: a DESC event fires when the used descriptor at that slot (and wrap) is written", () => {
    const { driver, q, irqLevel } = packedRig({ eventIdx: true, queueSize: 4 });
    // Event at slot 1 in the second lap (wrap counter 0): nothing fires during the first lap.
    q.setUsedEvent(1, 0);
    for (let i = 0; i < 4; i++) {
      q.add({ in: [1] }); // one slot each
      q.publish();
      driver.kick(0);
      expect(q.takeUsed().length).toBe(1);
      expect(irqLevel()).toBe(false);
    }
    // Second lap: slot 0, then slot 1 fires.
    q.add({ in: [1] }); // one slot each
    q.publish();
    driver.kick(0);
    q.takeUsed();
    expect(irqLevel()).toBe(false);
    q.add({ in: [1] }); // one slot each
    q.publish();
    driver.kick(0);
    expect(irqLevel()).toBe(true);
  });

  it("EVENT_IDX: a batch that jumps over the event slot still fires", () => {
    const { driver, q, irqLevel } = packedRig({ eventIdx: true, queueSize: 8 });
    q.setUsedEvent(2, 1);
    q.add({ out: [enc("a"), enc("b")], in: [2] }); // slots 0-2
    q.add({ out: [enc("c")], in: [1] }); // slots 3-4
    q.publish();
    driver.kick(0);
    expect(irqLevel()).toBe(true);
  });

  it("the device can ask the driver not to notify (device event suppression)", () => {
    const { q, device } = packedRig();
    device.queues[0].setNotification(false);
    expect(q.deviceWantsNotify()).toBe(false);
    device.queues[0].setNotification(true);
    expect(q.deviceWantsNotify()).toBe(true);
  });

  it("ignores a notification when nothing is available", () => {
    const { driver, q, needsReset } = packedRig();
    driver.kick(0);
    expect(q.takeUsed()).toEqual([]);
    expect(needsReset).toEqual([]);
  });
});

describe("packed virtqueue: hostile driver", () => {
  it.each([
    ["a chain running around the whole ring", (r: ReturnType<typeof packedRig>) => {
      for (let s = 0; s < 16; s++) rawDesc(r, s, 0x8000, 1, 0, AVAIL1 | 1);
    }, /runs around the whole ring/],
    ["INDIRECT with NEXT", (r: ReturnType<typeof packedRig>) => rawDesc(r, 0, 0x9000, 16, 0, AVAIL1 | 4 | 1), /both INDIRECT and NEXT/],
    ["an indirect table of odd length", (r: ReturnType<typeof packedRig>) => rawDesc(r, 0, 0x9000, 24, 0, AVAIL1 | 4), /multiple of 16/],
    ["an indirect table outside RAM", (r: ReturnType<typeof packedRig>) => rawDesc(r, 0, 0x7fff0000, 16, 0, AVAIL1 | 4), /outside guest RAM/],
    [
      "a nested indirect table",
      (r: ReturnType<typeof packedRig>) => {
        r.mem.writeU16(0x9000 + 14, 4);
        rawDesc(r, 0, 0x9000, 32, 0, AVAIL1 | 4);
      },
      /nests another indirect table/,
    ],
  ])("%s sets DEVICE_NEEDS_RESET", (_name, corrupt, message) => {
    const r = packedRig();
    corrupt(r);
    r.driver.kick(0);
    expect(r.device.status & VirtioStatus.DEVICE_NEEDS_RESET).toBe(VirtioStatus.DEVICE_NEEDS_RESET);
    expect(r.needsReset[0]).toMatch(message);
    expect(r.driver.read(MMIO.INTERRUPT_STATUS) & 2).toBe(2);
  });

  it("an indirect descriptor without INDIRECT_DESC negotiated sets DEVICE_NEEDS_RESET", () => {
    const r = packedRig({ indirect: false });
    rawDesc(r, 0, 0x9000, 16, 0, AVAIL1 | 4);
    r.driver.kick(0);
    expect(r.needsReset[0]).toMatch(/INDIRECT_DESC was not negotiated/);
  });

  it("a buffer ID reused while the device holds it sets DEVICE_NEEDS_RESET", () => {
    const r = packedRig();
    r.device.hold = true;
    rawDesc(r, 0, 0x8000, 8, 3, AVAIL1);
    rawDesc(r, 1, 0x8000, 8, 3, AVAIL1);
    r.driver.kick(0);
    expect(r.needsReset[0]).toMatch(/buffer 3 was made available again/);
  });

  it("more buffers in flight than the queue size sets DEVICE_NEEDS_RESET", () => {
    const r = packedRig({ queueSize: 4 });
    r.device.hold = true;
    for (let s = 0; s < 4; s++) rawDesc(r, s, 0x8000, 8, s, AVAIL1);
    r.driver.kick(0);
    expect(r.device.queues[0].inflight).toBe(4);
    // The driver makes the slots "available" again for the second lap without any used entry.
    for (let s = 0; s < 4; s++) rawDesc(r, s, 0x8000, 8, 10 + s, 1 << 15);
    r.driver.kick(0);
    expect(r.needsReset[0]).toMatch(/more than 4 buffers in flight/);
  });

  it("buffers outside RAM fail only their request", () => {
    const r = packedRig();
    rawDesc(r, 0, 2 ** 40, 8, 7, AVAIL1);
    r.driver.kick(0);
    expect(r.needsReset).toEqual([]);
    expect(r.device.problems).toEqual([1]);
    // The used descriptor at slot 0: id 7, length 0, AVAIL and USED both set (wrap 1).
    expect([r.mem.readU16(r.q.desc + 12), r.mem.readU32(r.q.desc + 8), r.mem.readU16(r.q.desc + 14)]).toEqual([7, 0, 0x8080]);
  });
});
