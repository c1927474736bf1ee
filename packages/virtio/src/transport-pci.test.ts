import { describe, expect, it } from "vitest";
import { GUEST_MEMORY, Machine, type PciSlot } from "@typevisor/hv-core";
import { FlatGuestMemory } from "./flat-guest-memory.js";
import { MemoryBlockBackend, type BlockBackend } from "./block-backend.js";
import { VirtioBlkDevice } from "./device-blk.js";
import { VirtioRngDevice } from "./device-rng.js";
import { VirtioNetDevice } from "./device-net.js";
import type { VirtioDevice } from "./virtio-device.js";
import { VirtioPciTransport, VIRTIO_MSI_NO_VECTOR, VIRTIO_PCI_REGS_BAR } from "./transport-pci.js";
import { PciGuestDriver, type ConfigAccess } from "../test/pci-driver.js";
import { GuestAllocator } from "../test/guest-driver.js";
import { LoopbackDevice } from "../test/loopback-device.js";

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

/** GSI the rig's one-slot bus wires INTA# to. */
const GSI = 18;
/** Where the rig's guest places the BARs. */
const MEM_BASE = 0xe000_0000;

/** A one-slot stand-in for the platform's bus: INTA# of device 3 drives GSI 18. */
function slotOf(machine: Machine): PciSlot {
  return { bus: 0, device: 3, function: 0, address: "0000:00:03.0", intx: () => machine.irqs.line(GSI), gsiOf: () => GSI };
}

/**
 * A machine with flat RAM and the transport (on hv-core's real PciConfigSpace)
 * attached to a slot; the guest driver reaches it only through configuration
 * cycles and BARs on the machine's MMIO bus. MSI messages are captured.
 */
function pciRig<D extends VirtioDevice>(device: D, options: { probe?: boolean } = {}) {
  const machine = new Machine({ memory: 1 << 20 });
  const mem = new FlatGuestMemory(1 << 20);
  machine.services.provide(GUEST_MEMORY, mem);
  const messages: [number, number][] = [];
  machine.irqs.msiSink = { deliverMsi: (address, data) => void messages.push([address, data]) };
  const transport = new VirtioPciTransport(device, { host: machine });
  transport.attach(slotOf(machine));
  const cfg: ConfigAccess = { read: (o, s) => transport.configRead(o, s), write: (o, s, v) => transport.configWrite(o, s, v) };
  const driver = new PciGuestDriver(cfg, machine.mmio, mem, new GuestAllocator(0x1000, 1 << 20));
  if (options.probe ?? true) driver.probe(MEM_BASE);
  return { machine, mem, pci: transport.pci, cfg, transport, driver, device, messages, intx: () => machine.irqs.level(GSI) };
}

describe("virtio-pci: identity and capabilities", () => {
  it("is a modern virtio function: vendor 0x1af4, device 0x1040 + id, revision 1, INTA#", () => {
    const { cfg, driver } = pciRig(new VirtioBlkDevice({ disk: new MemoryBlockBackend(4096) }));
    expect(cfg.read(0, 2)).toBe(0x1af4);
    expect(cfg.read(2, 2)).toBe(0x1042);
    expect(cfg.read(8, 1)).toBe(1);
    expect(cfg.read(8, 4) >>> 8).toBe(0x010000); // class code above the revision
    expect(cfg.read(0x2c, 2)).toBe(0x1af4);
    expect(cfg.read(0x2e, 2)).toBeGreaterThanOrEqual(0x40);
    expect(cfg.read(0x3d, 1)).toBe(1);
    // Sized by the guest: the MSI-X BAR and the 64-bit prefetchable registers BAR, nothing else.
    expect(driver.bars).toEqual([
      { index: 1, kind: "mem32", prefetchable: false, size: 0x1000, address: MEM_BASE },
      { index: 4, kind: "mem64", prefetchable: true, size: 0x4000, address: MEM_BASE + 0x4000 },
    ]);
    expect(pciRig(new VirtioNetDevice()).cfg.read(2, 2)).toBe(0x1041);
    expect(pciRig(new VirtioNetDevice()).cfg.read(0x0b, 1)).toBe(0x02);
    expect(pciRig(new VirtioRngDevice()).cfg.read(2, 2)).toBe(0x1044);
  });

  it("lists common, ISR, device, notify and PCI-access capabilities, plus MSI-X with a vector per queue", () => {
    const { driver, cfg, transport } = pciRig(new VirtioNetDevice());
    const byType = Object.fromEntries(driver.caps.map((c) => [c.type, c]));
    expect(byType[1]).toMatchObject({ bar: VIRTIO_PCI_REGS_BAR, offset: 0, length: 0x40, capLen: 16 });
    expect(byType[3]).toMatchObject({ bar: VIRTIO_PCI_REGS_BAR, offset: 0x1000, length: 1 });
    expect(byType[4]).toMatchObject({ bar: VIRTIO_PCI_REGS_BAR, offset: 0x2000, length: 12 });
    expect(byType[2]).toMatchObject({ bar: VIRTIO_PCI_REGS_BAR, offset: 0x3000, length: 8, capLen: 20 });
    expect(byType[5]).toMatchObject({ capLen: 20 });
    expect(driver.multiplier).toBe(4);
    expect(cfg.read(6, 2) & 0x10).toBe(0x10); // capability list present
    expect(transport.msixVectors).toBe(3);
    expect(driver.msix).toMatchObject({ vectors: 3, tableBar: 1, tableOffset: 0, pbaBar: 1, pbaOffset: 0x800 });
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
      const { driver, intx } = pciRig(new LoopbackDevice(16));
      driver.negotiate({ packed });
      const q = driver.setupQueue(0);
      driver.driverOk();
      const id = q.add({ out: [enc("pci")], in: [8] });
      q.publish();
      driver.kick(0);
      expect(intx()).toBe(true);
      expect(driver.isr()).toBe(1);
      expect(intx()).toBe(false);
      expect(driver.isr()).toBe(0);
      const [u] = q.takeUsed();
      expect(u).toEqual({ id, len: 3 });
      expect(dec(q.written(id, 3))).toBe("icp");
    });
  }

  it("MSI-X: each queue signals its vector, configuration changes the config vector", () => {
    const { driver, messages, intx, device } = pciRig(new LoopbackDevice(16));
    driver.negotiate();
    driver.enableMsix(2);
    driver.w(0x10, 2, 1);
    const q = driver.setupQueue(0, { vector: 0 });
    driver.driverOk();
    q.add({ out: [enc("x")], in: [1] });
    q.publish();
    driver.kick(0);
    expect(messages).toEqual([[0xfee00000, 0x40]]);
    expect(intx()).toBe(false);
    device.bumpConfig(5);
    expect(messages[1]).toEqual([0xfee00000, 0x41]);
    expect(driver.isr() & 2).toBe(2); // the configuration bit is set in ISR in both modes
    // NO_VECTOR: the queue has no interrupt at all.
    driver.w(0x16, 2, 0);
    driver.w(0x1a, 2, VIRTIO_MSI_NO_VECTOR);
    q.add({ out: [enc("y")], in: [1] });
    q.publish();
    driver.kick(0);
    expect(messages.length).toBe(2);
    expect(q.takeUsed().length).toBe(2);
  });

  it("ignores notifications while bus mastering is off (no DMA)", () => {
    const { driver, cfg } = pciRig(new LoopbackDevice(16));
    driver.negotiate();
    const q = driver.setupQueue(0);
    driver.driverOk();
    cfg.write(4, 2, 0x2); // memory decoding on, bus mastering off
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
    const { driver, cfg, device } = pciRig(new LoopbackDevice(16));
    const cap = driver.cap(5).at;
    // Read num_queues (16 bits at common + 0x12) through the window.
    cfg.write(cap + 4, 1, VIRTIO_PCI_REGS_BAR);
    cfg.write(cap + 8, 4, 0x12);
    cfg.write(cap + 12, 4, 2);
    expect(cfg.read(cap + 16, 4)).toBe(1);
    // Write device_status = ACKNOWLEDGE through it.
    cfg.write(cap + 8, 4, 0x14);
    cfg.write(cap + 12, 4, 1);
    cfg.write(cap + 16, 4, 1);
    expect(device.status).toBe(1);
    // A window into another BAR or with a bad length does nothing.
    cfg.write(cap + 4, 1, 1);
    expect(cfg.read(cap + 16, 4)).toBe(1); // just the data register's own contents
    cfg.write(cap + 4, 1, VIRTIO_PCI_REGS_BAR);
    cfg.write(cap + 12, 4, 3);
    cfg.write(cap + 16, 4, 0);
    expect(device.status).toBe(1);
  });

  it("machine reset restores the power-on configuration space, unmaps the BARs and resets the device", () => {
    const { driver, transport, cfg, machine, device, pci } = pciRig(new LoopbackDevice(16));
    driver.negotiate();
    driver.enableMsix(2);
    driver.setupQueue(0, { vector: 0 });
    driver.driverOk();
    const regs = driver.bar(VIRTIO_PCI_REGS_BAR).address;
    expect(machine.mmio.ownerOf(regs)).toBe("loopback BAR4");
    transport.reset();
    expect(device.status).toBe(0);
    expect(device.resets).toBeGreaterThan(0);
    expect(cfg.read(4, 2)).toBe(0); // no decoding, no bus mastering
    expect(cfg.read(0x20, 4)).toBe(0x0c); // BAR 4 unassigned: 64-bit prefetchable, address 0
    expect(machine.mmio.ownerOf(regs)).toBeUndefined();
    expect(pci.msixEnabled).toBe(false);
  });

  it("the registers follow the guest's BAR programming and memory decoding", () => {
    const { driver, cfg, machine } = pciRig(new LoopbackDevice(16));
    const old = driver.bar(VIRTIO_PCI_REGS_BAR).address;
    expect(driver.r(0x12, 2)).toBe(1); // num_queues
    cfg.write(0x20, 4, 0xd000_0000); // move BAR 4 while decoding is on
    driver.bar(VIRTIO_PCI_REGS_BAR).address = 0xd000_0000;
    expect(machine.mmio.ownerOf(old)).toBeUndefined();
    expect(driver.r(0x12, 2)).toBe(1);
    cfg.write(4, 2, 0); // memory decoding off: the registers disappear
    expect(machine.mmio.read(0xd000_0000 + 0x12, 2)).toBe(0xffff);
    cfg.write(4, 2, 2);
    expect(driver.r(0x12, 2)).toBe(1);
  });

  it("MSI-X: a masked vector leaves its message pending in the PBA until unmasked", () => {
    const { driver, machine, messages } = pciRig(new LoopbackDevice(16));
    driver.negotiate();
    driver.enableMsix(2);
    const q = driver.setupQueue(0, { vector: 1 });
    driver.driverOk();
    machine.mmio.write(driver.tableAddress(1) + 12, 4, 1); // mask vector 1
    q.add({ out: [enc("m")], in: [1] });
    q.publish();
    driver.kick(0);
    expect(q.takeUsed().length).toBe(1);
    expect(messages).toEqual([]);
    expect(driver.pending(1)).toBe(true);
    machine.mmio.write(driver.tableAddress(1) + 12, 4, 0);
    expect(messages).toEqual([[0xfee00000, 0x41]]);
    expect(driver.pending(1)).toBe(false);
  });

  it("detach unmaps the BARs and lowers INTx", () => {
    const { driver, transport, machine, intx } = pciRig(new LoopbackDevice(16));
    driver.negotiate();
    const q = driver.setupQueue(0);
    driver.driverOk();
    q.add({ out: [enc("d")], in: [1] });
    q.publish();
    driver.kick(0);
    expect(intx()).toBe(true);
    transport.detach();
    expect(intx()).toBe(false);
    expect(machine.mmio.ownerOf(driver.bar(VIRTIO_PCI_REGS_BAR).address)).toBeUndefined();
  });

  it("saves and restores: configuration space with BAR placement, MSI-X table, vectors, queues", () => {
    const a = pciRig(new LoopbackDevice(16));
    a.driver.negotiate();
    a.driver.enableMsix(2);
    a.driver.w(0x10, 2, 1);
    const q = a.driver.setupQueue(0, { vector: 0 });
    a.driver.driverOk();
    const saved = structuredClone(a.transport.saveState());
    // A fresh machine whose guest never programmed the function: everything comes from the snapshot.
    const b = pciRig(new LoopbackDevice(16), { probe: false });
    b.mem.bytes.set(a.mem.bytes);
    b.transport.loadState(saved);
    expect(b.pci.msixEnabled).toBe(true);
    expect(b.pci.busMasterEnabled).toBe(true);
    expect(b.machine.mmio.ownerOf(a.driver.bar(VIRTIO_PCI_REGS_BAR).address)).toBe("loopback BAR4");
    expect(b.device.queues[0].msixVector).toBe(0);
    Object.assign(b.driver, { bars: a.driver.bars, caps: a.driver.caps, msix: a.driver.msix, multiplier: a.driver.multiplier, features: a.driver.features });
    expect(b.driver.r(0x10, 2)).toBe(1);
    const qb = Object.assign(Object.create(Object.getPrototypeOf(q)), q, { mem: b.mem });
    qb.add({ out: [enc("ok")], in: [2] });
    qb.publish();
    b.driver.kick(0);
    expect(b.messages).toEqual([[0xfee00000, 0x40]]);
    expect(() => b.transport.loadState({ ...saved, isr: 9 })).toThrow(/ISR/);
    // Another kind of device's state does not load: its identity bytes differ.
    const rng = pciRig(new VirtioRngDevice());
    expect(() => rng.transport.loadState({ ...saved, device: rng.transport.saveState().device })).toThrow(/read-only byte/);
  });
});
