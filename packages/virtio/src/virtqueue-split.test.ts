import { describe, expect, it } from "vitest";
import { CHAIN_BAD_ADDRESS, CHAIN_BAD_ORDER, CHAIN_TOO_LONG } from "./descriptor-chain.js";
import { VirtioStatus } from "./constants.js";
import { MMIO, type SplitDriverQueue } from "../test/guest-driver.js";
import { LoopbackDevice, mmioRig } from "../test/loopback-device.js";

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

function splitRig(opts: { eventIdx?: boolean; indirect?: boolean; size?: number; queueSize?: number } = {}) {
  const rig = mmioRig(new LoopbackDevice(opts.size ?? 16));
  rig.driver.negotiate({ eventIdx: opts.eventIdx ?? false, indirect: opts.indirect ?? true });
  const q = rig.driver.setupQueue(0, opts.queueSize) as SplitDriverQueue;
  rig.driver.driverOk();
  const needsReset: string[] = [];
  rig.device.events.on("needsReset", (e) => needsReset.push(e.reason));
  return { ...rig, q, needsReset };
}

describe("split virtqueue: normal operation", () => {
  it("returns several buffers in one batch with one interrupt", () => {
    const { driver, q, irqLevel, machine } = splitRig();
    let rises = 0;
    machine.irqs.router = { setIrqLevel: (_g, level) => void (level && rises++) };
    const ids = ["one", "two", "three"].map((s) => q.add({ out: [enc(s)], in: [8] }));
    q.publish();
    driver.kick(0);
    expect(rises).toBe(1);
    expect(irqLevel()).toBe(true);
    const used = q.takeUsed();
    expect(used.map((u) => u.id)).toEqual(ids);
    expect(used.map((u) => dec(q.written(u.id, u.len)))).toEqual(["eno", "owt", "eerht"]);
  });

  it("walks chains split over many descriptors, readable first then writable", () => {
    const { driver, q } = splitRig();
    const id = q.add({ out: [enc("ab"), enc(""), enc("cde"), enc("f")], in: [1, 0, 2, 10] });
    q.publish();
    driver.kick(0);
    const [u] = q.takeUsed();
    expect(u).toEqual({ id, len: 6 });
    expect(dec(q.written(id, 6))).toBe("fedcba");
  });

  it("follows indirect descriptor tables", () => {
    const { driver, q } = splitRig();
    const id = q.add({ out: [enc("xy"), enc("z")], in: [2, 2], indirect: true });
    q.publish();
    driver.kick(0);
    expect(q.takeUsed()).toEqual([{ id, len: 3 }]);
    expect(dec(q.written(id, 3))).toBe("zyx");
  });

  it("handles normal descriptors followed by one indirect descriptor (§2.7.5.3.2)", () => {
    const { driver, q, mem } = splitRig();
    const data = 0x8000;
    mem.write(data, enc("12345"));
    const table = 0x9000;
    q.writeDesc(table, 0, data + 2, 3, 0, 0); // "345", readable
    q.writeDesc(table, 1, 0xa000, 8, 2, 0); // writable
    q.writeDesc(table, 0, data + 2, 3, 1, 1);
    q.writeDesc(q.desc, 5, data, 2, 1, 6); // "12", then next = 6
    q.writeDesc(q.desc, 6, table, 32, 4, 0); // indirect
    q.addRawHead(5);
    q.publish();
    driver.kick(0);
    expect(q.takeUsed()).toEqual([{ id: 5, len: 5 }]);
    expect(dec(mem.bytes.subarray(0xa000, 0xa005))).toBe("54321");
  });

  it("NO_INTERRUPT suppresses the used-buffer interrupt (no EVENT_IDX)", () => {
    const { driver, q, irqLevel } = splitRig();
    q.setInterrupts(false);
    q.add({ out: [enc("a")], in: [1] });
    q.publish();
    driver.kick(0);
    expect(irqLevel()).toBe(false);
    expect(q.takeUsed().length).toBe(1);
    q.setInterrupts(true);
    q.add({ out: [enc("b")], in: [1] });
    q.publish();
    driver.kick(0);
    expect(irqLevel()).toBe(true);
  });

  it("EVENT_IDX: interrupts only when used_event is crossed, and publishes avail_event", () => {
    const { driver, q, irqLevel, device } = splitRig({ eventIdx: true });
    expect(device.hasFeature(29)).toBe(true);
    q.setUsedEvent(2); // interrupt when used entry 2 is written (the third buffer)
    q.add({ out: [enc("a")], in: [1] });
    q.add({ out: [enc("b")], in: [1] });
    q.publish();
    driver.kick(0);
    expect(irqLevel()).toBe(false);
    expect(q.availEvent()).toBe(2); // the device wants to hear about avail entry 2 next
    q.add({ out: [enc("c")], in: [1] });
    q.add({ out: [enc("d")], in: [1] });
    q.publish();
    expect(q.deviceWantsNotify()).toBe(true); // publishing entries 2 and 3 crosses avail_event
    driver.kick(0);
    expect(irqLevel()).toBe(true);
    expect(q.takeUsed().length).toBe(4);
    driver.ackInterrupt();
    // used_event left at 2: the next batch (entries 4, 5) does not cross it.
    q.add({ out: [enc("e")], in: [1] });
    q.publish();
    driver.kick(0);
    expect(irqLevel()).toBe(false);
  });

  it("keeps working across 16-bit index wrap-around", () => {
    const { driver, q, device } = splitRig({ size: 4, eventIdx: true });
    let done = 0;
    for (let i = 0; i < 70_000; i++) {
      q.setUsedEvent((i + 0) & 0xffff);
      const id = q.add({ out: [enc(String.fromCharCode(65 + (i % 26)))], in: [1] });
      q.publish();
      driver.kick(0);
      const used = q.takeUsed();
      expect(used.length).toBe(1);
      expect(used[0].id).toBe(id);
      done++;
      // Re-use the same guest memory for data: rewind the test allocator occasionally.
      if (i % 1000 === 999) (driver.alloc as unknown as { next: number }).next = 0x10000;
    }
    expect(done).toBe(70_000);
    expect(device.status & VirtioStatus.DEVICE_NEEDS_RESET).toBe(0);
  });

  it("does not consume buffers before DRIVER_OK", () => {
    const rig = mmioRig(new LoopbackDevice());
    rig.driver.negotiate();
    const q = rig.driver.setupQueue(0);
    q.add({ out: [enc("a")], in: [1] });
    q.publish();
    rig.driver.kick(0);
    expect(q.takeUsed()).toEqual([]);
    rig.driver.driverOk();
    rig.driver.kick(0);
    expect(q.takeUsed().length).toBe(1);
  });

  it("completes held buffers later; a queue reset in between drops them", () => {
    const { driver, q, device } = splitRig();
    device.hold = true;
    q.add({ out: [enc("a")], in: [1] });
    q.publish();
    driver.kick(0);
    expect(device.queues[0].inflight).toBe(1);
    device.release();
    expect(q.takeUsed().length).toBe(1);
    q.add({ out: [enc("b")], in: [1] });
    q.publish();
    driver.kick(0);
    const held = device.held;
    driver.write(MMIO.STATUS, 0); // reset while a buffer is held
    device.held = held;
    device.release(); // the late completion must not touch the (reset) queue
    expect(device.queues[0].inflight).toBe(0);
    expect(device.status).toBe(0);
  });
});

describe("split virtqueue: hostile driver", () => {
  it("an available index more than a queue ahead sets DEVICE_NEEDS_RESET", () => {
    const { driver, q, device, needsReset, irqLevel } = splitRig();
    q.setAvailIdx(17);
    driver.kick(0);
    expect(device.status & VirtioStatus.DEVICE_NEEDS_RESET).toBe(VirtioStatus.DEVICE_NEEDS_RESET);
    expect(needsReset[0]).toMatch(/virtqueue 0: avail.idx moved from 0 to 17/);
    // The driver hears about it through a configuration change interrupt.
    expect(irqLevel()).toBe(true);
    expect(driver.read(MMIO.INTERRUPT_STATUS) & 2).toBe(2);
    // The device ignores the queue until reset; the driver cannot clear the bit.
    driver.write(MMIO.STATUS, driver.status() & ~64);
    expect(device.status & 64).toBe(64);
    // A reset recovers it.
    driver.negotiate();
    const q2 = driver.setupQueue(0);
    driver.driverOk();
    q2.add({ out: [enc("ok")], in: [2] });
    q2.publish();
    driver.kick(0);
    expect(q2.takeUsed().length).toBe(1);
  });

  it.each([
    ["a head index past the table", (q: SplitDriverQueue) => q.addRawHead(16), /names head descriptor 16/],
    ["a next index past the table", (q: SplitDriverQueue) => (q.writeDesc(q.desc, 0, 0x8000, 1, 1, 99), q.addRawHead(0)), /next 99/],
    ["a descriptor loop", (q: SplitDriverQueue) => (q.writeDesc(q.desc, 0, 0x8000, 1, 1, 1), q.writeDesc(q.desc, 1, 0x8000, 1, 1, 0), q.addRawHead(0)), /loop/],
    ["a self loop", (q: SplitDriverQueue) => (q.writeDesc(q.desc, 3, 0x8000, 1, 1, 3), q.addRawHead(3)), /loop/],
    ["INDIRECT with NEXT", (q: SplitDriverQueue) => (q.writeDesc(q.desc, 0, 0x9000, 16, 5, 1), q.addRawHead(0)), /both INDIRECT and NEXT/],
    ["an indirect table length not a multiple of 16", (q: SplitDriverQueue) => (q.writeDesc(q.desc, 0, 0x9000, 20, 4, 0), q.addRawHead(0)), /not a non-zero multiple of 16/],
    ["an empty indirect table", (q: SplitDriverQueue) => (q.writeDesc(q.desc, 0, 0x9000, 0, 4, 0), q.addRawHead(0)), /not a non-zero multiple of 16/],
    ["an indirect table outside RAM", (q: SplitDriverQueue) => (q.writeDesc(q.desc, 0, 0xfff00000, 32, 4, 0), q.addRawHead(0)), /outside guest RAM/],
    ["an indirect table above 2^52", (q: SplitDriverQueue) => (q.writeDesc(q.desc, 0, 2 ** 52, 32, 4, 0), q.addRawHead(0)), /outside guest RAM/],
    ["a huge indirect table", (q: SplitDriverQueue) => (q.writeDesc(q.desc, 0, 0x9000, 0xfffffff0, 4, 0), q.addRawHead(0)), /entries, more than/],
    [
      "a nested indirect table",
      (q: SplitDriverQueue) => (q.writeDesc(0x9000, 0, 0xa000, 16, 4, 0), q.writeDesc(q.desc, 0, 0x9000, 16, 4, 0), q.addRawHead(0)),
      /nests another indirect table/,
    ],
    [
      "a loop inside an indirect table",
      (q: SplitDriverQueue) => (q.writeDesc(0x9000, 0, 0x8000, 1, 1, 1), q.writeDesc(0x9000, 1, 0x8000, 1, 1, 0), q.writeDesc(q.desc, 0, 0x9000, 32, 4, 0), q.addRawHead(0)),
      /loops/,
    ],
    [
      "a next past an indirect table",
      (q: SplitDriverQueue) => (q.writeDesc(0x9000, 0, 0x8000, 1, 1, 2), q.writeDesc(q.desc, 0, 0x9000, 32, 4, 0), q.addRawHead(0)),
      /next 2, outside the table of 2/,
    ],
  ])("%s sets DEVICE_NEEDS_RESET and the host carries on", (_name, corrupt, message) => {
    const { driver, q, device, needsReset } = splitRig();
    corrupt(q);
    q.publish();
    driver.kick(0);
    expect(device.status & VirtioStatus.DEVICE_NEEDS_RESET).toBe(VirtioStatus.DEVICE_NEEDS_RESET);
    expect(needsReset.length).toBe(1);
    expect(needsReset[0]).toMatch(message);
    // Further notifications are ignored, not re-reported.
    driver.kick(0);
    expect(needsReset.length).toBe(1);
  });

  it("an indirect descriptor without INDIRECT_DESC negotiated sets DEVICE_NEEDS_RESET", () => {
    const { driver, q, needsReset } = splitRig({ indirect: false });
    q.writeDesc(q.desc, 0, 0x9000, 16, 4, 0);
    q.addRawHead(0);
    q.publish();
    driver.kick(0);
    expect(needsReset[0]).toMatch(/INDIRECT_DESC was not negotiated/);
  });

  it("a head made available twice while the device holds it sets DEVICE_NEEDS_RESET", () => {
    const { driver, q, device, needsReset } = splitRig();
    device.hold = true;
    const id = q.add({ out: [enc("a")], in: [1] });
    q.addRawHead(id);
    q.publish();
    driver.kick(0);
    expect(needsReset[0]).toMatch(/made available again/);
  });

  it.each([
    ["outside RAM", (q: SplitDriverQueue) => (q.writeDesc(q.desc, 0, 0x200000, 8, 0, 0), q.addRawHead(0)), CHAIN_BAD_ADDRESS],
    ["ending past RAM", (q: SplitDriverQueue) => (q.writeDesc(q.desc, 0, 0xffff0, 0x20, 0, 0), q.addRawHead(0)), CHAIN_BAD_ADDRESS],
    ["at 2^63", (q: SplitDriverQueue) => (q.writeDesc(q.desc, 0, 2 ** 63, 8, 0, 0), q.addRawHead(0)), CHAIN_BAD_ADDRESS],
    ["readable after writable", (q: SplitDriverQueue) => (q.writeDesc(q.desc, 0, 0x8000, 8, 3, 1), q.writeDesc(q.desc, 1, 0x8000, 8, 0, 0), q.addRawHead(0)), CHAIN_BAD_ORDER],
    [
      "longer than 2^32 - 1 bytes in total",
      (q: SplitDriverQueue) => (q.writeDesc(q.desc, 0, 0, 0x80000000, 1, 1), q.writeDesc(q.desc, 1, 0, 0x80000000, 0, 0), q.addRawHead(0)),
      CHAIN_BAD_ADDRESS, // also outside 1 MiB of RAM: the first problem found wins
    ],
  ])("a buffer %s fails only that request", (_name, corrupt, problem) => {
    const { driver, q, device, needsReset } = splitRig();
    corrupt(q);
    q.publish();
    driver.kick(0);
    expect(needsReset).toEqual([]);
    expect(device.problems).toEqual([problem]);
    expect(q.takeUsed()).toEqual([{ id: 0, len: 0 }]);
    // The queue keeps working.
    const id = q.add({ out: [enc("ok")], in: [2] });
    q.publish();
    driver.kick(0);
    expect(q.takeUsed()).toEqual([{ id, len: 2 }]);
  });

  it("a chain longer than 2^32 - 1 bytes inside RAM limits is flagged too long", async () => {
    const { FlatGuestMemory } = await import("./flat-guest-memory.js");
    const { DescriptorChain } = await import("./descriptor-chain.js");
    // A memory that claims to be huge, to reach the length check.
    const mem = new FlatGuestMemory(16);
    Object.defineProperty(mem, "isRam", { value: () => true });
    const c = new DescriptorChain(4);
    c.clear();
    c.add(mem, 0, 0, 0xffffffff, false, 0);
    expect(c.problem).toBe(0);
    c.add(mem, 0, 0, 1, false, 1);
    expect(c.problem).toBe(CHAIN_TOO_LONG);
  });

  it.each([
    ["a size that is not a power of two", 12, {}, /not a power of two/],
    ["a size above the maximum", 32, {}, /outside 1\.\.16/],
    ["a zero size", 0, {}, /outside 1\.\.16/],
    ["a misaligned used ring", 16, { used: 0x5002 }, /not 4-byte aligned/],
    ["a descriptor table outside RAM", 16, { desc: 0x400000 }, /outside guest RAM/],
  ])("enabling a queue with %s sets DEVICE_NEEDS_RESET", (_name, size, addrs: { desc?: number; used?: number }, message) => {
    const rig = mmioRig(new LoopbackDevice(16));
    const reasons: string[] = [];
    rig.device.events.on("needsReset", (e) => reasons.push(e.reason));
    rig.driver.negotiate();
    rig.driver.write(MMIO.QUEUE_SEL, 0);
    rig.driver.write(MMIO.QUEUE_NUM, size);
    rig.driver.write(MMIO.QUEUE_DESC_LOW, addrs.desc ?? 0x4000);
    rig.driver.write(MMIO.QUEUE_DRIVER_LOW, 0x5000 + 0x800);
    rig.driver.write(MMIO.QUEUE_DEVICE_LOW, addrs.used ?? 0x6000);
    rig.driver.write(MMIO.QUEUE_READY, 1);
    expect(rig.driver.read(MMIO.QUEUE_READY)).toBe(0);
    expect(reasons[0]).toMatch(message);
    expect(rig.device.status & 64).toBe(64);
  });

  it("enabling a queue before FEATURES_OK or DRIVER_OK before FEATURES_OK sets DEVICE_NEEDS_RESET", () => {
    const rig = mmioRig(new LoopbackDevice(16));
    rig.driver.write(MMIO.STATUS, 1 | 2);
    rig.driver.write(MMIO.QUEUE_SEL, 0);
    rig.driver.write(MMIO.QUEUE_READY, 1);
    expect(rig.device.needsResetReason).toMatch(/before FEATURES_OK/);
    const rig2 = mmioRig(new LoopbackDevice(16));
    rig2.driver.write(MMIO.STATUS, 1 | 2 | 4);
    expect(rig2.device.needsResetReason).toMatch(/DRIVER_OK without FEATURES_OK/);
  });
});
