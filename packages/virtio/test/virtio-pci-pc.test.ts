// virtio-pci on the real PC platform: the device is plugged by the virtio
// plugin (no options besides transport "pci") into the PC host bridge, and
// the test acts as the guest OS and driver, reaching the function only
// through configuration mechanism #1 (ports 0xCF8/0xCFC), its BARs on the
// MMIO bus, guest RAM and the interrupt wiring.
import { createMachine, GUEST_MEMORY, X86_CPU_CONTROL, type Machine, type Plugin, type Vcpu } from "@typevisor/hv-core";
import { pcPlatform, pciIntxGsi } from "@typevisor/pc";
import { seeded } from "@typevisor/test-support";
import { describe, expect, it } from "vitest";
import { FlatGuestMemory } from "../src/flat-guest-memory.js";
import { MemoryBlockBackend } from "../src/block-backend.js";
import { virtioBlk, virtioRng } from "../src/plugin-devices.js";
import { GuestAllocator } from "./guest-driver.js";
import { cf8Config, enumerateBus0, PciGuestDriver } from "./pci-driver.js";

const RAM = 32 << 20;
/** Inside the PC's PCI memory window (0xC0000000..0xFEC00000), where firmware would put BARs. */
const MEM_BASE = 0xc000_0000;

const ramPlugin = (mem: FlatGuestMemory): Plugin => ({ name: "ram", version: "0.0.0", provides: ["memory"], setup: (m) => m.services.provide(GUEST_MEMORY, mem) });

/** A stand-in for the CPU: runs one guest action per slice, then halts. */
function scriptedCpu(script: ((m: Machine) => void)[]): Plugin {
  return {
    name: "scripted-cpu",
    version: "0.0.0",
    provides: ["x86-cpu"],
    setup(m) {
      let step = 0;
      let halted = false;
      const cpu: Vcpu = {
        index: 0,
        get halted() {
          return halted;
        },
        runSlice(budget) {
          if (step < script.length) script[step++](m);
          else halted = true;
          return budget;
        },
        requestExit() {},
        reset() {
          halted = false;
        },
      };
      m.addVcpu(cpu);
      m.services.provide(X86_CPU_CONTROL, { vcpuCount: 1, applyBootState: () => {} });
    },
  };
}

function blkHeader(type: number, sector: number): Uint8Array {
  const h = new Uint8Array(16);
  const v = new DataView(h.buffer);
  v.setUint32(0, type, true);
  v.setUint32(8, sector, true);
  return h;
}

async function pcWithVirtio(script: ((m: Machine) => void)[] = []) {
  const mem = new FlatGuestMemory(RAM);
  const contents = new Uint8Array(1 << 20);
  const rand = seeded(42);
  for (let i = 0; i < contents.length; i++) contents[i] = rand() & 0xff;
  const blk = virtioBlk({ disk: new MemoryBlockBackend(contents.slice()), transport: "pci" });
  const rng = virtioRng({ transport: "pci" });
  const pc = pcPlatform();
  const vm = await createMachine({ memory: RAM, clock: { mode: "deterministic", nsPerInstruction: 10 }, sliceInstructions: 1000, plugins: [scriptedCpu(script), ramPlugin(mem), pc, blk, rng] });
  const messages: [number, number][] = [];
  vm.irqs.msiSink = { deliverMsi: (address, data) => void messages.push([address, data]) };
  return { vm, mem, pc, blk, rng, contents, messages };
}

/** Lets the disk's asynchronous read complete and its interrupt go out. */
async function settle(vm: Machine): Promise<void> {
  for (let i = 0; i < 1000 && vm.pendingIo > 0; i++) await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
}

describe("virtio-pci behind the PC host bridge", () => {
  it("is found by enumeration, programmed through 0xCF8/0xCFC and serves a disk read with an MSI-X message", async () => {
    const { vm, mem, blk, rng, contents, messages } = await pcWithVirtio();
    // Enumerate bus 0: the host bridge, then the two virtio functions the bus placed.
    const found = enumerateBus0(vm.ports);
    expect(found.map((f) => [f.device, f.vendorId, f.deviceId, f.classCode])).toEqual([
      [0, 0x1b36, 0x0008, 0x060000],
      [1, 0x1af4, 0x1042, 0x010000],
      [2, 0x1af4, 0x1044, 0x00ff00],
    ]);
    expect(blk.pciAddress).toBe("0000:00:01.0");
    expect(rng.pciAddress).toBe("0000:00:02.0");

    const cfg = cf8Config(vm.ports, 0, 1, 0);
    const driver = new PciGuestDriver(cfg, vm.mmio, mem, new GuestAllocator(0x10000, RAM)).probe(MEM_BASE);
    expect(driver.bars.map((b) => [b.index, b.kind, b.size])).toEqual([
      [1, "mem32", 0x1000],
      [4, "mem64", 0x4000],
    ]);
    expect(vm.mmio.ownerOf(driver.bar(4).address)).toBe("virtio-blk BAR4");
    expect(driver.caps.map((c) => c.type).sort()).toEqual([1, 2, 3, 4, 5]);
    expect(driver.msix).toMatchObject({ vectors: 2, tableBar: 1 });

    driver.negotiate(); // sets bus master, as pci_set_master does
    expect(cfg.read(4, 2) & 0x6).toBe(0x6);
    expect(driver.config(0, 4)).toBe((1 << 20) / 512); // capacity in sectors (low half)
    driver.enableMsix(2);
    driver.w(0x10, 2, 1); // configuration changes on vector 1
    const q = driver.setupQueue(0, { vector: 0 });
    driver.driverOk();

    const id = q.add({ out: [blkHeader(0, 3)], in: [512, 1] });
    q.publish();
    driver.kick(0);
    await settle(vm);
    const used = q.takeUsed();
    expect(used).toEqual([{ id, len: 513 }]);
    const written = q.written(id, 513);
    expect(written.subarray(0, 512)).toEqual(contents.subarray(3 * 512, 4 * 512));
    expect(written[512]).toBe(0); // VIRTIO_BLK_S_OK
    expect(messages).toEqual([[0xfee00000, 0x40]]);
    // No INTx while MSI-X is on.
    expect(vm.irqs.level(pciIntxGsi(1, 1))).toBe(false);
  });

  it("falls back to INTx on the GSI the host bridge routes INTA# to, cleared by reading ISR", async () => {
    const { vm, mem, messages } = await pcWithVirtio();
    const driver = new PciGuestDriver(cf8Config(vm.ports, 0, 2, 0), vm.mmio, mem, new GuestAllocator(0x10000, RAM)).probe(MEM_BASE);
    driver.negotiate();
    const q = driver.setupQueue(0);
    driver.driverOk();
    const gsi = pciIntxGsi(2, 1);
    const id = q.add({ in: [32] });
    q.publish();
    driver.kick(0);
    expect(q.takeUsed()).toEqual([{ id, len: 32 }]);
    expect(vm.irqs.level(gsi)).toBe(true);
    expect(cf8Config(vm.ports, 0, 2, 0).read(6, 2) & 0x08).toBe(0x08); // status: interrupt pending
    expect(driver.isr()).toBe(1);
    expect(vm.irqs.level(gsi)).toBe(false);
    expect(messages).toEqual([]);
  });

  it("a machine reset through the chipset (port 0xCF9) returns the function and the device to power-on state", async () => {
    const { vm, mem, blk } = await pcWithVirtio([(m) => m.ports.write(0xcf9, 1, 0x06), (m) => m.ports.write(0xf4, 1, 0)]);
    const cfg = cf8Config(vm.ports, 0, 1, 0);
    const driver = new PciGuestDriver(cfg, vm.mmio, mem, new GuestAllocator(0x10000, RAM)).probe(MEM_BASE);
    driver.negotiate();
    driver.enableMsix(2);
    driver.setupQueue(0, { vector: 0 });
    driver.driverOk();
    const regs = driver.bar(4).address;
    expect(blk.device.status).toBe(15);
    const stop = await vm.run();
    expect(stop.reason).toBe("exit");
    expect(blk.device.status).toBe(0);
    expect(blk.device.queues[0].ready).toBe(false);
    expect(cfg.read(4, 2)).toBe(0);
    expect(cfg.read(0x20, 4)).toBe(0x0c);
    expect(vm.mmio.ownerOf(regs)).toBeUndefined();
    expect(blk.pci!.pci.msixEnabled).toBe(false);
  });
});
