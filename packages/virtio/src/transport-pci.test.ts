import { describe, expect, it } from "vitest";
import { FlatGuestMemory } from "./flat-guest-memory.js";
import { MemoryBlockBackend, type BlockBackend } from "./block-backend.js";
import { VirtioBlkDevice } from "./device-blk.js";
import { VirtioRngDevice } from "./device-rng.js";
import { VirtioNetDevice } from "./device-net.js";
import type { VirtioDevice } from "./virtio-device.js";
import { VirtioPciTransport, VIRTIO_MSI_NO_VECTOR, VIRTIO_PCI_REGS_BAR } from "./transport-pci.js";
import { FakePciConfigSpace } from "../test/fake-pci.js";
import { PciGuestDriver } from "../test/pci-driver.js";
import { GuestAllocator } from "../test/guest-driver.js";
import { LoopbackDevice } from "../test/loopback-device.js";

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

function pciRig<D extends VirtioDevice>(device: D) {
  const mem = new FlatGuestMemory(1 << 20);
  let pci!: FakePciConfigSpace;
  const transport = new VirtioPciTransport(device, { host: { memory: mem }, createConfigSpace: (o) => (pci = new FakePciConfigSpace(o)) });
  const driver = new PciGuestDriver(pci, mem, new GuestAllocator(0x1000, 1 << 20));
  return { mem, pci, transport, driver, device };
}

describe("virtio-pci: identity and capabilities", () => {
  it("is a modern virtio function: vendor 0x1af4, device 0x1040 + id, revision 1, INTA#", () => {
    const { pci } = pciRig(new VirtioBlkDevice({ disk: new MemoryBlockBackend(4096) }));
    expect(pci.configRead(0, 2)).toBe(0x1af4);
    expect(pci.configRead(2, 2)).toBe(0x1042);
    expect(pci.configRead(8, 1)).toBe(1);
    expect(pci.configRead(8, 4) >>> 8).toBe(0x010000); // class code above the revision
    expect(pci.configRead(0x2c, 2)).toBe(0x1af4);
    expect(pci.configRead(0x2e, 2)).toBeGreaterThanOrEqual(0x40);
    expect(pci.configRead(0x3d, 1)).toBe(1);
    expect(pci.bars.get(4)).toMatchObject({ kind: "mem64", size: 0x4000, prefetchable: true });
    expect(pci.bars.get(1)).toMatchObject({ kind: "mem32", size: 0x1000 });
    expect(pciRig(new VirtioNetDevice()).pci.configRead(2, 2)).toBe(0x1041);
    expect(pciRig(new VirtioNetDevice()).pci.configRead(0x0b, 1)).toBe(0x02);
    expect(pciRig(new VirtioRngDevice()).pci.configRead(2, 2)).toBe(0x1044);
  });

  it("lists common, ISR, device, notify and PCI-access capabilities, plus MSI-X with a vector per queue", () => {
    const { driver, pci, transport } = pciRig(new VirtioNetDevice());
    const byType = Object.fromEntries(driver.caps.map((c) => [c.type, c]));
    expect(byType[1]).toMatchObject({ bar: VIRTIO_PCI_REGS_BAR, offset: 0, length: 0x40, capLen: 16 });
    expect(byType[3]).toMatchObject({ bar: VIRTIO_PCI_REGS_BAR, offset: 0x1000, length: 1 });
    expect(byType[4]).toMatchObject({ bar: VIRTIO_PCI_REGS_BAR, offset: 0x2000, length: 12 });
    expect(byType[2]).toMatchObject({ bar: VIRTIO_PCI_REGS_BAR, offset: 0x3000, length: 8, capLen: 20 });
    expect(byType[5]).toMatchObject({ capLen: 20 });
    expect(driver.multiplier).toBe(4);
    expect(pci.configRead(6, 2) & 0x10).toBe(0x10); // capability list present
    expect(transport.msixVectors).toBe(3);
    expect(pci.msix).toMatchObject({ vectors: 3, tableBar: 1, tableOffset: 0, pbaBar: 1, pbaOffset: 0x800 });
  });

  it("omits the device capability for a device without configuration space", () => {
    const { driver } = pciRig(new VirtioRngDevice());
    expect(driver.caps.map((c) => c.type).sort()).toEqual([1, 2, 3, 5]);
  });
});

describe("virtio-pci: common configuration", () => {
  it("negotiates features and exposes queue parameters", () => {
    const { driver, device } = pciRig(new LoopbackDevice(16));
    driver.negotiate({ eventIdx: true });
    expect(device.hasFeature(29)).toBe(true);
    expect(driver.r(0x12, 2)).toBe(1); // num_queues
    driver.w(0x16, 2, 0);
    expect(driver.r(0x18, 2)).toBe(16);
    expect(driver.r(0x1e, 2)).toBe(0);
    expect(driver.r(0x1a, 2)).toBe(VIRTIO_MSI_NO_VECTOR);
    driver.w(0x16, 2, 5); // no such queue
    expect(driver.r(0x18, 2)).toBe(0);
    expect(driver.r(0x1c, 2)).toBe(0);
    // Narrow and wide reads compose from the fields (status, generation, queue_select).
    driver.w(0x16, 2, 0x0102);
    expect(driver.r(0x14, 4)).toBe((0x0102 << 16) | (device.configGeneration << 8) | 11);
  });

  it("refuses vectors beyond the MSI-X table: they read back as NO_VECTOR", () => {
    const { driver } = pciRig(new LoopbackDevice(16));
    driver.negotiate();
    driver.w(0x10, 2, 1);
    expect(driver.r(0x10, 2)).toBe(1);
    driver.w(0x10, 2, 2);
    expect(driver.r(0x10, 2)).toBe(VIRTIO_MSI_NO_VECTOR);
    driver.w(0x16, 2, 0);
    driver.w(0x1a, 2, 7);
    expect(driver.r(0x1a, 2)).toBe(VIRTIO_MSI_NO_VECTOR);
  });

  it("sets queue addresses only while the queue is disabled", () => {
    const { driver, device } = pciRig(new LoopbackDevice(16));
    driver.negotiate();
    driver.setupQueue(0);
    const desc = device.queues[0].descAddr;
    driver.w(0x20, 4, 0x8000);
    expect(device.queues[0].descAddr).toBe(desc);
    expect(driver.r(0x20, 4)).toBe(desc);
  });
});

describe("virtio-pci: data path and interrupts", () => {
  for (const packed of [false, true]) {
    it(`INTx: ISR bit 0 and the line; reading ISR clears both (${packed ? "packed" : "split"})`, () => {
      const { driver, pci } = pciRig(new LoopbackDevice(16));
      driver.negotiate({ packed });
      const q = driver.setupQueue(0);
      driver.driverOk();
      const id = q.add({ out: [enc("pci")], in: [8] });
      q.publish();
      driver.kick(0);
      expect(pci.intx).toBe(true);
      expect(driver.isr()).toBe(1);
      expect(pci.intx).toBe(false);
      expect(driver.isr()).toBe(0);
      const [u] = q.takeUsed();
      expect(u).toEqual({ id, len: 3 });
      expect(dec(q.written(id, 3))).toBe("icp");
    });
  }

  it("MSI-X: each queue signals its vector, configuration changes the config vector", () => {
    const { driver, pci, device } = pciRig(new LoopbackDevice(16));
    driver.negotiate();
    driver.enableMsix(2);
    driver.w(0x10, 2, 1);
    const q = driver.setupQueue(0, { vector: 0 });
    driver.driverOk();
    q.add({ out: [enc("x")], in: [1] });
    q.publish();
    driver.kick(0);
    expect(pci.messages).toEqual([[0xfee00000, 0x40]]);
    expect(pci.intx).toBe(false);
    device.bumpConfig(5);
    expect(pci.messages[1]).toEqual([0xfee00000, 0x41]);
    expect(driver.isr() & 2).toBe(2); // the configuration bit is set in ISR in both modes
    // NO_VECTOR: the queue has no interrupt at all.
    driver.w(0x16, 2, 0);
    driver.w(0x1a, 2, VIRTIO_MSI_NO_VECTOR);
    q.add({ out: [enc("y")], in: [1] });
    q.publish();
    driver.kick(0);
    expect(pci.messages.length).toBe(2);
    expect(q.takeUsed().length).toBe(2);
  });

  it("ignores notifications while bus mastering is off (no DMA)", () => {
    const { driver, pci } = pciRig(new LoopbackDevice(16));
    driver.negotiate();
    const q = driver.setupQueue(0);
    driver.driverOk();
    pci.configWrite(4, 2, 0x2);
    q.add({ out: [enc("x")], in: [1] });
    q.publish();
    driver.kick(0);
    expect(q.takeUsed()).toEqual([]);
    driver.enableBusMaster();
    driver.kick(0);
    expect(q.takeUsed().length).toBe(1);
  });

  it("reset returns vectors to NO_VECTOR; device_status stays non-zero until in-flight I/O drains", async () => {
    const disk = new MemoryBlockBackend(1 << 16);
    const gates: (() => void)[] = [];
    const slow: BlockBackend = {
      size: disk.size,
      readOnly: false,
      read: (o, d) => new Promise<void>((r) => gates.push(() => r(disk.read(o, d)))),
      write: (o, s) => disk.write(o, s),
      flush: () => disk.flush(),
      discard: (o, l) => disk.discard(o, l),
      writeZeroes: (o, l) => disk.writeZeroes(o, l),
      close: () => disk.close(),
    };
    const { driver } = pciRig(new VirtioBlkDevice({ disk: slow }));
    driver.negotiate();
    driver.w(0x10, 2, 0);
    const q = driver.setupQueue(0, { vector: 1 });
    driver.driverOk();
    const h = new Uint8Array(16);
    q.add({ out: [h], in: [512, 1] });
    q.publish();
    driver.kick(0);
    await new Promise((r) => setImmediate(r));
    driver.w(0x14, 1, 0);
    expect(driver.status()).not.toBe(0); // a driver polling for 0 waits
    gates[0]();
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    expect(driver.status()).toBe(0);
    expect(driver.r(0x10, 2)).toBe(VIRTIO_MSI_NO_VECTOR);
    driver.w(0x16, 2, 0);
    expect(driver.r(0x1a, 2)).toBe(VIRTIO_MSI_NO_VECTOR);
    expect(q.takeUsed()).toEqual([]);
  });

  it("the PCI configuration access capability reaches the registers", () => {
    const { driver, pci, device } = pciRig(new LoopbackDevice(16));
    const cap = driver.cap(5).at;
    // Read num_queues (16 bits at common + 0x12) through the window.
    pci.configWrite(cap + 4, 1, VIRTIO_PCI_REGS_BAR);
    pci.configWrite(cap + 8, 4, 0x12);
    pci.configWrite(cap + 12, 4, 2);
    expect(pci.configRead(cap + 16, 4)).toBe(1);
    // Write device_status = ACKNOWLEDGE through it.
    pci.configWrite(cap + 8, 4, 0x14);
    pci.configWrite(cap + 12, 4, 1);
    pci.configWrite(cap + 16, 4, 1);
    expect(device.status).toBe(1);
    // A window into another BAR or with a bad length does nothing.
    pci.configWrite(cap + 4, 1, 1);
    expect(pci.configRead(cap + 16, 4)).toBe(1); // just the data register's own contents
    pci.configWrite(cap + 4, 1, VIRTIO_PCI_REGS_BAR);
    pci.configWrite(cap + 12, 4, 3);
    pci.configWrite(cap + 16, 4, 0);
    expect(device.status).toBe(1);
  });

  it("machine reset restores the power-on configuration space and resets the device", () => {
    const { driver, transport, pci, device } = pciRig(new LoopbackDevice(16));
    driver.negotiate();
    driver.setupQueue(0);
    driver.driverOk();
    transport.reset();
    expect(pci.resets).toBe(1);
    expect(device.status).toBe(0);
    expect(pci.busMasterEnabled).toBe(false);
  });

  it("saves and restores: configuration space, vectors, queues", () => {
    const a = pciRig(new LoopbackDevice(16));
    a.driver.negotiate();
    a.driver.enableMsix(2);
    a.driver.w(0x10, 2, 1);
    const q = a.driver.setupQueue(0, { vector: 0 });
    a.driver.driverOk();
    const saved = structuredClone(a.transport.saveState());
    const b = pciRig(new LoopbackDevice(16));
    b.mem.bytes.set(a.mem.bytes);
    b.transport.loadState(saved);
    expect(b.pci.msixEnabled).toBe(true);
    expect(b.device.queues[0].msixVector).toBe(0);
    const qb = Object.assign(Object.create(Object.getPrototypeOf(q)), q, { mem: b.mem });
    qb.add({ out: [enc("ok")], in: [2] });
    qb.publish();
    b.driver.kick(0);
    expect(b.pci.messages).toEqual([[0xfee00000, 0x40]]);
    expect(() => b.transport.loadState({ ...saved, isr: 9 })).toThrow(/ISR/);
  });
});
