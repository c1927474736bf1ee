import {
  GUEST_MEMORY,
  LEGACY_PIC,
  PCI_BUS,
  StateError,
  X86_CPU_CONTROL,
  type Machine,
  type Plugin,
  type Snapshottable,
  type StateValue,
} from "@typevisor/hv-core";
import { AcpiPm, DEFAULT_PM_PORTS } from "./acpi-pm.js";
import { buildAcpiTables, type AcpiTables } from "./acpi-tables.js";
import { PC_PLATFORM, writeBiosDataArea, writeRam, type PcPlatformInfo } from "./boot-common.js";
import { DEBUGCON_PORT, DEBUG_EXIT_PORT, Port92, debugExitHandler, debugconHandler } from "./debug-devices.js";
import { I8042 } from "./i8042.js";
import { PcInterruptRouter, isaIrqToGsi } from "./interrupt-router.js";
import { IOAPIC_BASE, IoApic } from "./ioapic.js";
import { BIOS_AREA, pcMemoryLayout } from "./memory-map.js";
import { DEFAULT_PCI_WINDOWS, ECAM_BASE, ECAM_SIZE, PciHost, type PciResourceWindows } from "./pci-host.js";
import { Pic8259Pair } from "./pic-8259.js";
import { Pit8254 } from "./pit-8254.js";
import { RtcCmos } from "./rtc-cmos.js";
import { streamSerial, type ByteSource, type SerialBackend } from "./serial-backend.js";
import { COM_PORTS, Uart16550 } from "./uart-16550.js";

/** Options of {@link pcPlatform}. */
export interface PcPlatformOptions {
  /** COM1's host side (e.g. `process.stdout`, a {@link MemorySerial}); none discards output. */
  serial?: SerialBackend | null;
  /** Input for COM1 when `serial` is a plain sink (e.g. `process.stdin`). */
  serialInput?: ByteSource;
  /** COM2's host side; COM2 exists only when given. */
  serial2?: SerialBackend;
  /** Where bytes written to the debug console (port 0xE9) go; default discarded. */
  debugcon?: (byte: number) => void;
  /** QEMU's isa-debug-exit at port 0xF4 (default true): a write stops the machine with exit status `(value << 1) | 1`. */
  debugExit?: boolean;
  /** Told when the guest opens or closes the A20 gate (for a memory plugin that masks address bit 20). */
  a20?: (enabled: boolean) => void;
  /** PCI resource windows for firmware-style BAR assignment and the DSDT. */
  pciWindows?: PciResourceWindows;
  /** Assign PCI BARs before boot, as firmware would (default true). */
  assignPciResources?: boolean;
}

/** The platform's devices, for embedders, monitors and tests. */
export interface PcDevices {
  /** The 8259 pair. */
  pic: Pic8259Pair;
  /** The I/O APIC. */
  ioapic: IoApic;
  /** The 8254 PIT. */
  pit: Pit8254;
  /** The RTC and CMOS. */
  rtc: RtcCmos;
  /** COM1 (and COM2 when configured). */
  uarts: Uart16550[];
  /** The keyboard controller. */
  i8042: I8042;
  /** ACPI fixed hardware. */
  pm: AcpiPm;
  /** The PCI host bridge and root bus. */
  pci: PciHost;
  /** The ACPI tables of the last boot, once written. */
  acpi: AcpiTables | undefined;
  /** PCI BARs the last firmware-style assignment could not place. */
  pciUnassigned: string[];
}

/** The plugin {@link pcPlatform} returns: a plugin that also exposes its devices once set up. */
export interface PcPlatformPlugin extends Plugin {
  /** The devices, after setup. */
  readonly devices: PcDevices | undefined;
}

class A20State implements Snapshottable {
  readonly stateId = "port92";
  readonly stateVersion = 1;
  constructor(private readonly port: Port92) {}
  saveState(): StateValue {
    return this.port.register;
  }
  loadState(data: StateValue): void {
    if (typeof data !== "number") throw new StateError("STATE_MALFORMED", "port 0x92: saved state is malformed");
    this.port.register = data;
  }
}

/**
 * The PC platform plugin (`"pc"`): registers the legacy devices (8259 pair
 * with ELCR, 8254 PIT with port 0x61, RTC/CMOS, COM1 16550A, i8042, port
 * 0x92), the I/O APIC, ACPI PM1 block and PM timer, the PCI host bridge
 * (0xCF8/0xCFC, ECAM at 0xB0000000, reset at 0xCF9), isa-debug-exit at 0xF4
 * and the debug console at 0xE9; installs the interrupt router; and provides
 * the `legacy-pic` ({@link LEGACY_PIC}), `pci-bus` ({@link PCI_BUS}) and
 * `pc-platform` ({@link PC_PLATFORM}) services. Loaders call the latter to
 * write the ACPI tables and BIOS data area and assign PCI resources before
 * each boot. Every device is snapshottable and resets with the machine.
 *
 * @example
 * ```ts
 * const vm = await createMachine({ memory: "256M", plugins: [memory(), x86Cpu(), pcPlatform({ serial: process.stdout })] });
 * ```
 */
export function pcPlatform(options: PcPlatformOptions = {}): PcPlatformPlugin {
  let devices: PcDevices | undefined;
  return {
    name: "pc",
    version: "0.1.0",
    requires: ["memory"],
    provides: ["pci-bus", "legacy-pic", "interrupt-router", "pc-platform"],
    get devices() {
      return devices;
    },
    setup(machine: Machine) {
      const layout = pcMemoryLayout(machine.ramSize);
      const line = (isaIrq: number) => machine.irqs.line(isaIrqToGsi(isaIrq));
      const reset = (): void => machine.requestReset();

      const pic = new Pic8259Pair();
      pic.onIntr = () => machine.kick();
      const ioapic = new IoApic(machine.irqs, 0);
      machine.irqs.router = new PcInterruptRouter(pic, ioapic);

      const pit = new Pit8254(machine.clock, line(0));
      const rtc = new RtcCmos(machine.clock, line(8), { lowMemory: layout.lowEnd, highMemory: layout.highSize, cpus: 1 });
      const backend = options.serial && options.serialInput ? streamSerial(options.serial, options.serialInput) : (options.serial ?? undefined);
      const uarts = [new Uart16550("uart@3f8", machine.clock, line(COM_PORTS[0].irq), backend, () => machine.kick())];
      if (options.serial2) uarts.push(new Uart16550("uart@2f8", machine.clock, line(COM_PORTS[1].irq), options.serial2, () => machine.kick()));
      const a20 = (on: boolean): void => options.a20?.(on);
      const i8042 = new I8042({ reset, a20, irq1: line(1), irq12: line(12) });
      const port92 = new Port92(a20, reset);
      const pm = new AcpiPm(machine.clock, { powerOff: () => machine.requestStop({ reason: "poweroff" }), sci: line(9) });
      const pci = new PciHost({ host: machine, reset });

      const p = machine.ports;
      p.register("pic-master", 0x20, 2, pic.portHandler("master"));
      p.register("pic-slave", 0xa0, 2, pic.portHandler("slave"));
      p.register("elcr", 0x4d0, 2, pic.elcrHandler);
      p.register("pit", 0x40, 4, pit.handler);
      p.register("port61", 0x61, 1, pit.port61);
      p.register("i8042-data", 0x60, 1, i8042.dataHandler);
      p.register("i8042-command", 0x64, 1, i8042.commandHandler);
      p.register("rtc", 0x70, 4, rtc.handler);
      p.register("port92", 0x92, 1, port92.handler);
      uarts.forEach((u, i) => p.register(`com${i + 1}`, COM_PORTS[i].base, 8, u.handler));
      p.register("acpi-pm1a-evt", DEFAULT_PM_PORTS.pm1aEvt, 4, pm.evtHandler);
      p.register("acpi-pm1a-cnt", DEFAULT_PM_PORTS.pm1aCnt, 2, pm.cntHandler);
      p.register("acpi-pm-timer", DEFAULT_PM_PORTS.pmTmr, 4, pm.timerHandler);
      p.register("pci-config", 0xcf8, 8, pci.portHandler);
      p.register("debugcon", DEBUGCON_PORT, 1, debugconHandler(options.debugcon ?? (() => {})));
      if (options.debugExit ?? true) {
        p.register("isa-debug-exit", DEBUG_EXIT_PORT, 4, debugExitHandler((status) => machine.requestStop({ reason: "exit", exitCode: status })));
      }
      machine.mmio.register("ioapic", IOAPIC_BASE, 0x1000, ioapic.handler);
      machine.mmio.register("pci-ecam", ECAM_BASE, ECAM_SIZE, pci.ecamHandler);

      for (const s of [pic, ioapic, pit, rtc, ...uarts, i8042, pm, pci, new A20State(port92)]) machine.states.register(s);
      machine.services.provide(LEGACY_PIC, pic);
      machine.services.provide(PCI_BUS, pci);

      const d: PcDevices = { pic, ioapic, pit, rtc, uarts, i8042, pm, pci, acpi: undefined, pciUnassigned: [] };
      devices = d;
      machine.onReset(() => {
        pic.reset();
        ioapic.reset();
        pit.reset();
        rtc.reset();
        for (const u of uarts) u.reset();
        i8042.reset();
        port92.powerOn();
        pm.reset();
        pci.reset();
      });

      const info: PcPlatformInfo = {
        layout,
        prepareBoot() {
          const memory = machine.services.get(GUEST_MEMORY);
          const cpus = Math.max(1, machine.services.find(X86_CPU_CONTROL)?.vcpuCount ?? machine.vcpus.length);
          const ioapicId = Math.min(cpus, 15);
          ioapic.setId(ioapicId);
          rtc.setMemoryInfo({ cpus });
          const tables = buildAcpiTables(BIOS_AREA, { cpus, ioapicId, pciWindows: options.pciWindows ?? DEFAULT_PCI_WINDOWS });
          writeRam(memory, BIOS_AREA, tables.bytes, "the ACPI tables");
          writeBiosDataArea(memory, layout);
          d.acpi = tables;
          d.pciUnassigned = options.assignPciResources === false ? [] : pci.assignResources(options.pciWindows ?? DEFAULT_PCI_WINDOWS);
          return { rsdp: tables.rsdp };
        },
      };
      machine.services.provide(PC_PLATFORM, info);
    },
    teardown() {
      for (const u of devices?.uarts ?? []) u.close();
    },
  };
}
