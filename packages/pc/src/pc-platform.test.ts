import { GUEST_MEMORY, LEGACY_PIC, PCI_BUS, PciConfigSpace, X86_CPU_CONTROL, createMachine, type Machine, type Plugin, type Vcpu, type X86BootState } from "@typevisor/hv-core";
import { describe, expect, it } from "vitest";
import { BOOT_ZERO_PAGE, PC_PLATFORM } from "./boot-common.js";
import { acpiChecksum } from "./acpi-tables.js";
import { multibootBoot } from "./multiboot-loader.js";
import { pcPlatform, type PcPlatformOptions } from "./pc-platform.js";
import { MemorySerial } from "./serial-backend.js";
import { fakeMemory } from "./test-util.js";
import { SLP_TYP_S5 } from "./acpi-pm.js";
import { pitTicks } from "./pit-8254.js";

/** A stand-in for the x86 CPU: runs a script of guest actions, one per slice (a step returning false runs again next slice), then halts. */
function scriptedCpu(script: ((m: Machine) => void | boolean)[], bootStates: X86BootState[] = []): Plugin {
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
          if (step < script.length) {
            if (script[step](m) !== false) step++;
          } else halted = true;
          return budget;
        },
        requestExit() {},
        reset() {
          halted = false;
        },
      };
      m.addVcpu(cpu);
      m.services.provide(X86_CPU_CONTROL, { vcpuCount: 1, applyBootState: (_i, s) => void bootStates.push(s) });
    },
  };
}

const memoryPlugin = (size: number): Plugin => ({ name: "fake-memory", version: "0.0.0", provides: ["memory"], setup: (m) => m.services.provide(GUEST_MEMORY, fakeMemory(size)) });

async function machineWith(script: ((m: Machine) => void | boolean)[], options: PcPlatformOptions = {}) {
  const pc = pcPlatform(options);
  const states: X86BootState[] = [];
  const vm = await createMachine({ memory: "64M", clock: { mode: "deterministic", nsPerInstruction: 10 }, sliceInstructions: 1000, plugins: [scriptedCpu(script, states), pc, memoryPlugin(64 << 20)] });
  return { vm, pc, states };
}

describe("pcPlatform plugin", () => {
  it("claims the PC's ports and MMIO ranges and provides its services", async () => {
    const { vm } = await machineWith([]);
    const owners = Object.fromEntries([0x20, 0xa0, 0x40, 0x61, 0x60, 0x64, 0x70, 0x92, 0x3f8, 0x4d0, 0x600, 0x604, 0x608, 0xcf8, 0xcf9, 0xcfc, 0xe9, 0xf4].map((port) => [port.toString(16), vm.ports.ownerOf(port)]));
    expect(owners).toEqual({
      "20": "pic-master",
      a0: "pic-slave",
      "40": "pit",
      "61": "port61",
      "60": "i8042-data",
      "64": "i8042-command",
      "70": "rtc",
      "92": "port92",
      "3f8": "com1",
      "4d0": "elcr",
      "600": "acpi-pm1a-evt",
      "604": "acpi-pm1a-cnt",
      "608": "acpi-pm-timer",
      cf8: "pci-config",
      cf9: "pci-config",
      cfc: "pci-config",
      e9: "debugcon",
      f4: "isa-debug-exit",
    });
    expect(vm.mmio.ownerOf(0xfec00000)).toBe("ioapic");
    expect(vm.mmio.ownerOf(0xb0000000)).toBe("pci-ecam");
    expect(vm.services.get(LEGACY_PIC)).toBeDefined();
    expect(vm.services.get(PCI_BUS).functions().map((f) => f.slot.address)).toEqual(["0000:00:00.0"]);
    expect(vm.states.ids).toEqual(["pic", "ioapic", "pit", "rtc", "uart@3f8", "i8042", "acpi-pm", "pci-host", "port92"]);
  });

  it("isa-debug-exit stops the run with (value << 1) | 1; debugcon and COM1 print", async () => {
    const serial = new MemorySerial();
    const con: number[] = [];
    const { vm } = await machineWith(
      [
        (m) => [..."hi\n"].forEach((c) => m.ports.write(0x3f8, 1, c.charCodeAt(0))),
        (m) => m.ports.write(0xe9, 1, 0x41),
        (m) => m.ports.write(0xf4, 1, 21),
      ],
      { serial, debugcon: (b) => con.push(b) },
    );
    expect(await vm.run()).toEqual({ reason: "exit", exitCode: 43 });
    expect(serial.text).toBe("hi\n");
    expect(con).toEqual([0x41]);
  });

  it("powers off through ACPI S5 (SLP_TYP | SLP_EN on PM1a_CNT), as Linux's poweroff does", async () => {
    const { vm } = await machineWith([(m) => m.ports.write(0x604, 2, (SLP_TYP_S5 << 10) | 0x2000)]);
    expect(await vm.run()).toEqual({ reason: "poweroff" });
  });

  it("reboots through the FADT reset register (0xCF9), the i8042 and port 0x92, resetting devices", async () => {
    let resets = 0;
    const { vm, pc } = await machineWith([
      (m) => m.ports.write(0x21, 1, 0x5a), // leave a mark in the PIC's IMR
      (m) => m.ports.write(0xcf9, 1, 0x06),
      (m) => {
        expect(m.ports.read(0x21, 1)).toBe(0); // reset to power-on
        m.ports.write(0x64, 1, 0xfe);
      },
      (m) => m.ports.write(0x92, 1, 0x03),
      (m) => m.ports.write(0xf4, 1, 0),
    ]);
    vm.events.on("reset", () => resets++);
    const stop = await vm.run();
    expect(stop).toEqual({ reason: "exit", exitCode: 1 });
    expect(resets).toBe(3);
    expect(pc.devices?.pic.registers().imr).toBe(0);
  });

  it("wires the PIT to the 8259 (IRQ 0) and to I/O APIC pin 2 as MSI messages", async () => {
    const msis: [number, number][] = [];
    let vector = -1;
    const { vm } = await machineWith([
      (m) => {
        m.irqs.msiSink = { deliverMsi: (a, d) => void msis.push([a, d]) };
        for (const [port, v] of [[0x20, 0x11], [0x21, 0x20], [0x21, 0x04], [0x21, 0x01], [0x21, 0xfe]] as const) m.ports.write(port, 1, v);
        m.mmio.write(0xfec00000, 4, 0x14); // redirection entry 2, low
        m.mmio.write(0xfec00010, 4, 0x30);
        m.ports.write(0x43, 1, 0x34);
        m.ports.write(0x40, 1, 1193 & 0xff);
        m.ports.write(0x40, 1, 1193 >> 8);
      },
      (m) => {
        // Poll INTR at "instruction boundaries" until the PIT's first period has passed.
        const pic = m.services.get(LEGACY_PIC);
        if (!pic.hasInterrupt() || m.clock.now() < 1e6) return false;
        vector = pic.acknowledge();
        m.requestStop({ reason: "user" });
      },
    ]);
    await vm.run();
    expect(vector).toBe(0x20);
    expect(vm.clock.now()).toBeGreaterThanOrEqual(1e6);
    // One message at load (OUT rises) and one per elapsed 1193-tick period since.
    expect(msis.length).toBe(1 + Math.floor(pitTicks(vm.clock.now()) / 1193));
    expect(msis[0]).toEqual([0xfee00000, 0x4030]);
  });

  it("prepares firmware for a boot: ACPI tables in the BIOS area, BDA, PCI resources", async () => {
    const { vm, pc, states } = await machineWith([]);
    const dev = new PciConfigSpace(vm, { name: "test", vendorId: 0x1af4, deviceId: 0x1041, classCode: 0x020000, interruptPin: 1, bars: [{ index: 0, kind: "mem32", size: 0x1000, handler: { read: () => 0x1234, write: () => {} } }] });
    vm.services.get(PCI_BUS).plug(dev, { device: 2 });
    const mb = new Uint8Array(64);
    const dv = new DataView(mb.buffer);
    dv.setUint32(0, 0x1badb002, true);
    dv.setUint32(4, 0x10000, true);
    dv.setUint32(8, (-(0x1badb002 + 0x10000)) >>> 0, true);
    for (const [o, v] of [[12, 0x200000], [16, 0x200000], [20, 0x200040], [24, 0], [28, 0x200020]]) dv.setUint32(o, v, true);
    await vm.boot(multibootBoot({ kernel: mb }));
    await vm.stop();
    const mem = vm.services.get(GUEST_MEMORY);
    const rsdp = new Uint8Array(36);
    mem.read(0xe0000, rsdp);
    expect(new TextDecoder().decode(rsdp.subarray(0, 8))).toBe("RSD PTR ");
    expect(acpiChecksum(rsdp)).toBe(0);
    expect(pc.devices?.acpi?.tables.APIC).toBeDefined();
    expect(mem.readU16(0x413)).toBe(639);
    expect(dev.barAddress(0)).toBe(0xc0000000);
    expect(vm.mmio.read(0xc0000000, 4)).toBe(0x1234);
    expect(dev.configRead(0x3c, 1)).toBe(18);
    expect(pc.devices?.pciUnassigned).toEqual([]);
    expect(states[0]).toMatchObject({ eip: 0x200020, regs: { eax: 0x2badb002 } });
    expect(vm.services.get(PC_PLATFORM).layout.lowEnd).toBe(64 << 20);
    expect(BOOT_ZERO_PAGE).toBe(0x7000);
  });

  it("saves and restores every device", async () => {
    const serial = new MemorySerial();
    const { vm } = await machineWith([], { serial });
    vm.ports.write(0x21, 1, 0x3c);
    vm.ports.write(0x3fb, 1, 0x03);
    vm.ports.write(0x3ff, 1, 0x77);
    const saved = vm.saveState();
    const other = await machineWith([]);
    other.vm.loadState(saved);
    expect(other.vm.ports.read(0x21, 1)).toBe(0x3c);
    expect(other.vm.ports.read(0x3ff, 1)).toBe(0x77);
  });
});
