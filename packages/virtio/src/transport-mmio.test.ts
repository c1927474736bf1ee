import { describe, expect, it } from "vitest";
import { Machine, GUEST_MEMORY } from "@typevisor/hv-core";
import { VirtioFeature, VirtioStatus } from "./constants.js";
import { FlatGuestMemory } from "./flat-guest-memory.js";
import { attachVirtioMmio, VirtioMmioTransport, virtioMmioKernelParam, VIRTIO_MMIO_MAGIC } from "./transport-mmio.js";
import { MMIO, type SplitDriverQueue } from "../test/guest-driver.js";
import { LoopbackDevice, mmioRig, MMIO_BASE } from "../test/loopback-device.js";

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

describe("virtio-mmio transport registers", () => {
  it("identifies itself as a version 2 virtio-mmio device", () => {
    const { driver } = mmioRig(new LoopbackDevice());
    expect(driver.read(MMIO.MAGIC)).toBe(VIRTIO_MMIO_MAGIC);
    expect(driver.read(MMIO.VERSION)).toBe(2);
    expect(driver.read(MMIO.DEVICE_ID)).toBe(0x7f);
    // Registers are 32-bit only: narrower accesses read 0.
    expect(driver.read(MMIO.MAGIC, 1)).toBe(0);
    expect(driver.read(MMIO.MAGIC + 2, 2)).toBe(0);
  });

  it("shows the offered features in two words and nothing above", () => {
    const { driver } = mmioRig(new LoopbackDevice());
    const [lo, hi] = driver.deviceFeatures();
    expect(lo & 1).toBe(1); // the device-specific bit 0 the loopback offers
    expect((lo >>> VirtioFeature.INDIRECT_DESC) & 1).toBe(1);
    expect((lo >>> VirtioFeature.EVENT_IDX) & 1).toBe(1);
    expect(hi & 1).toBe(1); // VERSION_1
    expect((hi >>> 2) & 1).toBe(1); // RING_PACKED
    expect((hi >>> 1) & 1).toBe(0); // ACCESS_PLATFORM only on request
    driver.write(MMIO.DEVICE_FEATURES_SEL, 2);
    expect(driver.read(MMIO.DEVICE_FEATURES)).toBe(0);
  });

  it("ring feature options withdraw packed, event index and indirect", () => {
    const { driver } = mmioRig(new LoopbackDevice(16, { packed: false, eventIdx: false, indirect: false, accessPlatform: true }));
    const [lo, hi] = driver.deviceFeatures();
    expect(lo >>> 28).toBe(0);
    expect(hi).toBe(0b11); // VERSION_1 | ACCESS_PLATFORM
  });

  it("refuses FEATURES_OK without VERSION_1 or with features it never offered", () => {
    const { driver, device } = mmioRig(new LoopbackDevice());
    const reasons: string[] = [];
    device.events.on("requestError", (e) => reasons.push(e.reason));
    driver.write(MMIO.STATUS, 1 | 2);
    driver.write(MMIO.DRIVER_FEATURES_SEL, 1);
    driver.write(MMIO.DRIVER_FEATURES, 0);
    driver.write(MMIO.STATUS, 1 | 2 | 8);
    expect(driver.status() & 8).toBe(0);
    driver.write(MMIO.DRIVER_FEATURES, 1 | (1 << 20)); // VERSION_1 plus bit 52, never offered
    driver.write(MMIO.STATUS, 1 | 2 | 8);
    expect(driver.status() & 8).toBe(0);
    driver.write(MMIO.DRIVER_FEATURES, 1);
    driver.write(MMIO.DRIVER_FEATURES_SEL, 3);
    driver.write(MMIO.DRIVER_FEATURES, 1); // a bit above 63
    driver.write(MMIO.STATUS, 1 | 2 | 8);
    expect(driver.status() & 8).toBe(0);
    expect(reasons.join("\n")).toMatch(/VERSION_1 not accepted/);
    expect(reasons.join("\n")).toMatch(/does not offer/);
    // After a reset, a proper negotiation works.
    expect(driver.negotiate()).toEqual([1 << 28, 1]);
    expect(driver.status()).toBe(1 | 2 | 8);
    // Features are frozen once FEATURES_OK is set.
    driver.write(MMIO.DRIVER_FEATURES_SEL, 0);
    driver.write(MMIO.DRIVER_FEATURES, 0);
    expect(device.hasFeature(VirtioFeature.INDIRECT_DESC)).toBe(true);
  });

  it("programs queues: size, addresses, ready; registers are read back", () => {
    const { driver, device } = mmioRig(new LoopbackDevice(16));
    driver.negotiate();
    driver.write(MMIO.QUEUE_SEL, 0);
    expect(driver.read(MMIO.QUEUE_NUM_MAX)).toBe(16);
    driver.write(MMIO.QUEUE_SEL, 1);
    expect(driver.read(MMIO.QUEUE_NUM_MAX)).toBe(0); // no such queue
    const q = driver.setupQueue(0, 8) as SplitDriverQueue;
    driver.write(MMIO.QUEUE_SEL, 0);
    expect(driver.read(MMIO.QUEUE_READY)).toBe(1);
    expect(driver.read(MMIO.QUEUE_NUM)).toBe(8);
    expect(driver.read(MMIO.QUEUE_DESC_LOW)).toBe(q.desc);
    expect(driver.read(MMIO.QUEUE_DRIVER_LOW)).toBe(q.avail);
    expect(driver.read(MMIO.QUEUE_DEVICE_LOW)).toBe(q.used);
    // Addresses cannot change while the queue is enabled.
    driver.write(MMIO.QUEUE_DESC_LOW, 0x4000);
    expect(device.queues[0].descAddr).toBe(q.desc);
    // Disabling the queue returns it to its reset state.
    driver.write(MMIO.QUEUE_READY, 0);
    expect(driver.read(MMIO.QUEUE_READY)).toBe(0);
    expect(driver.read(MMIO.QUEUE_NUM)).toBe(16);
  });

  it("reads the configuration space at 0x100 in 1, 2 and 4 byte accesses; outside reads 0", () => {
    const { driver } = mmioRig(new LoopbackDevice());
    expect(driver.config(0, 4)).toBe(0x12345678);
    expect(driver.config(0, 2)).toBe(0x5678);
    expect(driver.config(2, 2)).toBe(0x1234);
    expect(driver.config(3, 1)).toBe(0x12);
    expect(driver.config(6, 4)).toBe(0); // crosses the end of the 8-byte space
    expect(driver.config(0x80, 4)).toBe(0);
  });

  it("bumps ConfigGeneration on a configuration change and raises a config interrupt once active", () => {
    const { driver, device, irqLevel } = mmioRig(new LoopbackDevice());
    const g0 = driver.read(MMIO.CONFIG_GENERATION);
    device.bumpConfig(7);
    expect(driver.read(MMIO.CONFIG_GENERATION)).toBe(g0 + 1);
    expect(irqLevel()).toBe(false); // not active yet: no notification
    driver.negotiate();
    driver.setupQueue(0);
    driver.driverOk();
    device.bumpConfig(8);
    expect(driver.config(4, 4)).toBe(8);
    expect(irqLevel()).toBe(true);
    expect(driver.read(MMIO.INTERRUPT_STATUS)).toBe(2);
    driver.write(MMIO.INTERRUPT_ACK, 2);
    expect(irqLevel()).toBe(false);
  });

  it("reset through status 0 disables queues, clears features, interrupts and selectors", () => {
    const { driver, device, irqLevel } = mmioRig(new LoopbackDevice());
    driver.negotiate();
    const q = driver.setupQueue(0);
    driver.driverOk();
    expect(device.activated).toBe(1);
    q.add({ out: [enc("abc")], in: [3] });
    q.publish();
    driver.kick(0);
    expect(irqLevel()).toBe(true);
    driver.write(MMIO.QUEUE_SEL, 0);
    driver.write(MMIO.STATUS, 0);
    expect(driver.status()).toBe(0);
    expect(irqLevel()).toBe(false);
    expect(driver.read(MMIO.INTERRUPT_STATUS)).toBe(0);
    expect(driver.read(MMIO.QUEUE_READY)).toBe(0);
    expect(device.driverFeatures(0)).toBe(0);
    expect(device.resets).toBe(2); // negotiate() resets first, then this one
  });

  it("machine reset resets the device", () => {
    const { driver, device, machine } = mmioRig(new LoopbackDevice());
    driver.negotiate();
    driver.setupQueue(0);
    driver.driverOk();
    (machine as unknown as { doReset(): void }).doReset();
    expect(device.status).toBe(0);
    expect(device.queues[0].ready).toBe(false);
  });

  it("gives Linux its command-line parameter", () => {
    const { transport } = mmioRig(new LoopbackDevice());
    expect(transport.kernelParam).toBe("virtio_mmio.device=0x200@0xd0000000:5");
    expect(virtioMmioKernelParam(0xfeb00000, 0x1000, 11)).toBe("virtio_mmio.device=0x1000@0xfeb00000:11");
  });

  it("reports no shared memory regions", () => {
    const { driver } = mmioRig(new LoopbackDevice());
    for (const off of [0xb0, 0xb4, 0xb8, 0xbc]) expect(driver.read(off)).toBe(0xffffffff);
  });

  it("rejects a window too small for the configuration space", () => {
    const machine = new Machine({ memory: 1 << 16 });
    machine.services.provide(GUEST_MEMORY, new FlatGuestMemory(1 << 16));
    expect(() => attachVirtioMmio(machine, new LoopbackDevice(), { base: MMIO_BASE, irq: 5, size: 0x100 })).toThrow(/too small/);
  });

  it("saves and restores mid-operation: in-flight buffers complete after the restore", () => {
    const a = mmioRig(new LoopbackDevice(8));
    a.driver.negotiate({ eventIdx: true });
    const q = a.driver.setupQueue(0);
    a.driver.driverOk();
    a.device.hold = true;
    const id1 = q.add({ out: [enc("hello")], in: [5] });
    q.publish();
    a.driver.kick(0);
    expect(a.device.held.length).toBe(1);
    const saved = a.transport.saveState();
    const heldChains = a.device.held.map((c) => c.save());
    // A second machine with a copy of RAM continues where the first stopped.
    const b = mmioRig(new LoopbackDevice(8));
    b.mem.bytes.set(a.mem.bytes);
    b.transport.loadState(structuredClone(saved));
    expect(b.device.status).toBe(a.device.status);
    expect(b.device.queues[0].inflight).toBe(1);
    const chain = b.device["newChain"]();
    expect(chain.load(heldChains[0])).toBe(true);
    chain.generation = b.device.queues[0].generation;
    b.device.complete(b.device.queues[0], chain);
    const usedB = b.device.queues[0];
    expect(usedB.inflight).toBe(0);
    // Read the used ring in b's memory with the (copied) driver state.
    const qb = q as SplitDriverQueue;
    const usedIdx = b.mem.readU16(qb.used + 2);
    expect(usedIdx).toBe(1);
    expect(b.mem.readU32(qb.used + 4)).toBe(id1);
    expect(b.mem.readU32(qb.used + 8)).toBe(5);
  });

  it("rejects malformed saved state with a typed error", () => {
    const { transport } = mmioRig(new LoopbackDevice());
    const good = transport.saveState();
    expect(() => transport.loadState({ ...good, queueSel: -1 })).toThrow(/QueueSel/);
    expect(() => transport.loadState({ ...good, device: { ...good.device, queues: [] } })).toThrow(/queue list/);
    expect(() => transport.loadState({ ...good, device: { ...good.device, status: 4096 } })).toThrow(/status/);
    const badQueue = { ...good.device.queues[0], size: 3, ring: { avail: 0, availWrap: 0, used: 0, usedWrap: 0, signalled: 0 } };
    expect(() => transport.loadState({ ...good, device: { ...good.device, queues: [badQueue] } })).toThrow(/power of two/);
  });

  it("is a Snapshottable with a stable id", () => {
    const { transport } = mmioRig(new LoopbackDevice());
    expect(transport).toBeInstanceOf(VirtioMmioTransport);
    expect(transport.stateId).toBe("virtio-mmio@0xd0000000");
  });
});

describe("virtio-mmio end to end with a loopback device", () => {
  for (const packed of [false, true]) {
    it(`moves data through a ${packed ? "packed" : "split"} queue and interrupts`, () => {
      const { driver, irqLevel } = mmioRig(new LoopbackDevice());
      driver.negotiate({ packed });
      expect(driver.packed).toBe(packed);
      const q = driver.setupQueue(0);
      driver.driverOk();
      expect(driver.status()).toBe(VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK | VirtioStatus.DRIVER_OK);
      const id = q.add({ out: [enc("hello, "), enc("world")], in: [4, 20] });
      q.publish();
      expect(irqLevel()).toBe(false);
      driver.kick(0);
      expect(irqLevel()).toBe(true);
      expect(driver.ackInterrupt()).toBe(1);
      expect(irqLevel()).toBe(false);
      const used = q.takeUsed();
      expect(used).toEqual([{ id, len: 12 }]);
      expect(dec(q.written(id, 12))).toBe("dlrow ,olleh");
    });
  }
});
