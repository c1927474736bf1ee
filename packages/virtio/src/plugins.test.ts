import { describe, expect, it } from "vitest";
import { createMachine, GUEST_MEMORY, PCI_BUS, formatPciAddress, type Machine, type PciFunction, type PciSlot, type Plugin } from "@typevisor/hv-core";
import { MemoryBlockBackend } from "./block-backend.js";
import { MemoryCharBackend } from "./char-backend.js";
import { FlatGuestMemory } from "./flat-guest-memory.js";
import { virtioBlk, virtioConsole, virtioNet, virtioRng } from "./plugin-devices.js";
import { PcapWriter } from "./net-pcap.js";
import { VirtualSwitch } from "./net-switch.js";
import { virtioMmioKernelParams } from "./plugins.js";
import { PciGuestDriver, type ConfigAccess } from "../test/pci-driver.js";
import { GuestAllocator } from "../test/guest-driver.js";

/** A minimal PCI bus (the PC platform provides the real one): plugs, attaches, wires every pin to GSI 16. */
const fakeBus = (plugged: { fn: PciFunction; slot: PciSlot }[]): Plugin => ({
  name: "fake-pci",
  version: "1.0.0",
  provides: ["pci-bus"],
  setup: (m: Machine) =>
    m.services.provide(PCI_BUS, {
      plug(fn, options) {
        const device = options?.device ?? 2 + plugged.length;
        const slot: PciSlot = { bus: 0, device, function: 0, address: formatPciAddress(0, device, 0), intx: () => m.irqs.line(16), gsiOf: () => 16 };
        plugged.push({ fn, slot });
        fn.attach?.(slot);
        return slot;
      },
      unplug() {},
      functions: () => plugged.map(({ fn, slot }) => ({ fn, slot })),
    }),
});

const memoryPlugin = (mem: FlatGuestMemory): Plugin => ({
  name: "flat-memory",
  version: "1.0.0",
  provides: ["memory"],
  setup: (m) => m.services.provide(GUEST_MEMORY, mem),
});

describe("virtio plugins", () => {
  it("place devices on virtio-mmio slots and list them for the kernel command line", async () => {
    const mem = new FlatGuestMemory(1 << 20);
    const disk0 = new MemoryBlockBackend(1 << 20);
    let closed = 0;
    disk0.close = async () => void closed++;
    const blk0 = virtioBlk({ disk: disk0, id: "0" });
    const blk1 = virtioBlk({ disk: new MemoryBlockBackend(4096), id: "1", readOnly: true, mmio: { base: 0xd000_0000, irq: 7 } });
    const con = virtioConsole({ backend: new MemoryCharBackend() });
    const rng = virtioRng();
    const vm = await createMachine({ memory: 1 << 20, plugins: [blk0, blk1, con, rng, memoryPlugin(mem)] });
    expect(vm.plugins.all.map((p) => p.name)).toEqual(["virtio-blk-0", "virtio-blk-1", "virtio-console", "virtio-rng", "flat-memory"]);
    expect(virtioMmioKernelParams(vm)).toBe(
      "virtio_mmio.device=0x200@0xfec10000:5 virtio_mmio.device=0x200@0xd0000000:7 virtio_mmio.device=0x200@0xfec10200:10 virtio_mmio.device=0x200@0xfec10400:11",
    );
    expect(vm.mmio.read(0xfec10000 + 8, 4)).toBe(2);
    expect(vm.mmio.read(0xd0000000 + 8, 4)).toBe(2);
    expect(vm.mmio.read(0xfec10200 + 8, 4)).toBe(3);
    expect(vm.mmio.read(0xfec10400 + 8, 4)).toBe(4);
    expect(blk0.mmio?.base).toBe(0xfec10000);
    expect(vm.states.ids).toEqual(["virtio-mmio@0xfec10000", "virtio-mmio@0xd0000000", "virtio-mmio@0xfec10200", "virtio-mmio@0xfec10400"]);
    await vm.plugins.teardown(vm);
    expect(closed).toBe(1);
  });

  it("needs a memory provider, and for transport pci a PCI bus", async () => {
    await expect(createMachine({ plugins: [virtioRng()] })).rejects.toThrow(/memory/);
    await expect(createMachine({ plugins: [virtioRng({ transport: "pci" }), memoryPlugin(new FlatGuestMemory(4096))] })).rejects.toThrow(/pci-bus/);
  });

  it("plugs devices into the machine's PCI bus with transport pci and no other options", async () => {
    const plugged: { fn: PciFunction; slot: PciSlot }[] = [];
    const blk = virtioBlk({ disk: new MemoryBlockBackend(1 << 16), transport: "pci", pci: { device: 5 } });
    const rng = virtioRng({ transport: "pci" });
    const mem = new FlatGuestMemory(1 << 20);
    const vm = await createMachine({ plugins: [memoryPlugin(mem), fakeBus(plugged), blk, rng] });
    expect(plugged.map((p) => p.slot.device)).toEqual([5, 3]);
    expect(blk.pciAddress).toBe("0000:00:05.0");
    expect(rng.pciAddress).toBe("0000:00:03.0");
    expect(blk.pci).toBe(plugged[0].fn);
    expect(blk.pci?.pci.slot).toBe(plugged[0].slot);
    expect(vm.states.ids).toEqual(["virtio-pci:virtio-blk", "virtio-pci:virtio-rng"]);
    expect(plugged[0].fn.configRead(2, 2)).toBe(0x1042);
    // The function works through the machine's buses: a guest driver reads random bytes via the rng function.
    const fn = plugged[1].fn;
    const cfg: ConfigAccess = { read: (o, s) => fn.configRead(o, s), write: (o, s, v) => fn.configWrite(o, s, v) };
    const driver = new PciGuestDriver(cfg, vm.mmio, mem, new GuestAllocator(0x1000, 1 << 20)).probe(0xe000_0000);
    driver.negotiate();
    const q = driver.setupQueue(0);
    driver.driverOk();
    const id = q.add({ in: [16] });
    q.publish();
    driver.kick(0);
    expect(q.takeUsed()).toEqual([{ id, len: 16 }]);
    expect(vm.irqs.level(16)).toBe(true); // INTx through the bus's line (no MSI-X enabled)
  });

  it("runs out of default interrupts with a clear error", async () => {
    const plugins = Array.from({ length: 8 }, (_, i) => virtioRng({ id: String(i) }));
    await expect(createMachine({ plugins: [...plugins, memoryPlugin(new FlatGuestMemory(4096))] })).rejects.toThrow(/no free default virtio-mmio interrupt/);
  });

  it("joins NICs of two machines to one named switch, records one of them, and leaves at teardown", async () => {
    const chunks: Uint8Array[] = [];
    let ended = 0;
    const pcap = new PcapWriter({ write: (c) => chunks.push(c), end: () => ended++ });
    const nicA = virtioNet({ switch: "plugin-test-lan", mac: "52:54:00:00:00:01", pcap });
    const nicB = virtioNet({ switch: "plugin-test-lan", mac: "52:54:00:00:00:02" });
    const vmA = await createMachine({ plugins: [nicA, memoryPlugin(new FlatGuestMemory(1 << 16))] });
    const vmB = await createMachine({ plugins: [nicB, memoryPlugin(new FlatGuestMemory(1 << 16))] });
    const sw = VirtualSwitch.named("plugin-test-lan");
    expect(sw.portCount).toBe(2);
    expect(vmA.mmio.read(0xfec10000 + 8, 4)).toBe(1);
    await vmA.plugins.teardown(vmA);
    await vmB.plugins.teardown(vmB);
    expect(sw.portCount).toBe(0);
    expect(ended).toBe(1);
    VirtualSwitch.forget("plugin-test-lan");
  });
});
