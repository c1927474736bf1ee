import { PCI_BUS, type Machine, type Plugin } from "@typevisor/hv-core";
import { VirtioConfigError } from "./errors.js";
import { attachVirtioMmio, type VirtioMmioTransport } from "./transport-mmio.js";
import { VirtioPciTransport, type VirtioPciHost } from "./transport-pci.js";
import type { VirtioDevice } from "./virtio-device.js";

/** Where a virtio plugin puts its device. */
export interface VirtioPlacementOptions {
  /**
   * The transport: `"mmio"` (virtio-mmio; Linux finds it through
   * {@link virtioMmioKernelParams}) or `"pci"` (virtio-pci on the platform's
   * PCI bus, the `"pci-bus"` service that the PC platform provides; the guest
   * finds it by enumerating the bus). Default `"mmio"`.
   */
  transport?: "mmio" | "pci";
  /** virtio-pci placement. */
  pci?: {
    /** Device number on the bus (default: the bus picks a free one). */
    device?: number;
    /** Function number (default 0). */
    function?: number;
  };
  /** virtio-mmio placement; defaults come from {@link VIRTIO_MMIO_DEFAULT_SLOTS}. */
  mmio?: {
    /** Guest-physical base of the register window. */
    base?: number;
    /** GSI of the interrupt line. */
    irq?: number;
    /** Window size (default 0x200). */
    size?: number;
  };
  /** Distinguishes several devices of one kind: the plugin is named `<kind>-<id>`. */
  id?: string;
}

/**
 * Default virtio-mmio placement, in order of use: register windows at
 * 0xfec10000 + n x 0x200 (above the I/O APIC page and outside the PC's PCI
 * memory window 0xc0000000-0xfebfffff, so no BAR is ever placed over them)
 * and the ISA interrupts a PC leaves free.
 */
export const VIRTIO_MMIO_DEFAULT_SLOTS = {
  /** Base of the first window. */
  base: 0xfec1_0000,
  /** Distance between windows. */
  stride: 0x200,
  /**
   * Interrupt lines, one per device: ISA IRQs a PC leaves free (0-2, 4, 8 and
   * 12 are taken by its legacy devices, 3 by a second UART, 9 by the ACPI SCI;
   * PCI INTx uses GSIs 16-23).
   */
  irqs: [5, 10, 11, 14, 15, 6, 7] as readonly number[],
};

const mmioTransports = new WeakMap<Machine, VirtioMmioTransport[]>();
const autoSlots = new WeakMap<Machine, number>();

/**
 * The Linux kernel command-line parameters declaring every virtio-mmio
 * device of `machine` (`virtio_mmio.device=...`, space separated), to append
 * to the guest's command line.
 */
export function virtioMmioKernelParams(machine: Machine): string {
  return (mmioTransports.get(machine) ?? []).map((t) => t.kernelParam).join(" ");
}

/** A virtio device as a machine plugin; `device` is usable before setup (events, statistics). */
export interface VirtioPlugin<D extends VirtioDevice> extends Plugin {
  /** The device. */
  readonly device: D;
  /** The virtio-mmio transport once set up with `transport: "mmio"`. */
  readonly mmio: VirtioMmioTransport | undefined;
  /** The virtio-pci transport once set up with `transport: "pci"`. */
  readonly pci: VirtioPciTransport | undefined;
  /** The PCI address once plugged (`"0000:00:03.0"`). */
  readonly pciAddress: string | undefined;
}

/**
 * Wraps a device into a plugin that places it on the chosen transport.
 * `release` runs at teardown (close the disk, the console backend).
 */
export function virtioPlugin<D extends VirtioDevice>(kind: string, device: D, placement: VirtioPlacementOptions, release?: () => void | Promise<void>): VirtioPlugin<D> {
  const transport = placement.transport ?? "mmio";
  const name = placement.id !== undefined ? `${kind}-${placement.id}` : kind;
  let mmio: VirtioMmioTransport | undefined;
  let pci: VirtioPciTransport | undefined;
  let pciAddress: string | undefined;
  return {
    name,
    version: "0.1.0",
    requires: transport === "pci" ? ["memory", "pci-bus"] : ["memory"],
    device,
    get mmio() {
      return mmio;
    },
    get pci() {
      return pci;
    },
    get pciAddress() {
      return pciAddress;
    },
    setup(machine: Machine) {
      if (transport === "pci") {
        const o = placement.pci ?? {};
        const bus = machine.services.get(PCI_BUS);
        // Memory is looked up once here, not per DMA access through the machine's getter.
        const host: VirtioPciHost = { memory: machine.memory, trackIo: (work) => machine.trackIo(work), ports: machine.ports, mmio: machine.mmio, irqs: machine.irqs };
        pci = new VirtioPciTransport(device, { host, name });
        pciAddress = bus.plug(pci, { device: o.device, function: o.function }).address;
        machine.states.register(pci);
        // No reset handler: the PCI bus resets its functions on machine reset.
        return;
      }
      const o = placement.mmio ?? {};
      let base = o.base;
      let irq = o.irq;
      if (base === undefined || irq === undefined) {
        const n = autoSlots.get(machine) ?? 0;
        autoSlots.set(machine, n + 1);
        const slots = VIRTIO_MMIO_DEFAULT_SLOTS;
        base ??= slots.base + n * slots.stride;
        if (irq === undefined) {
          if (n >= slots.irqs.length) throw new VirtioConfigError("VIRTIO_MMIO_SLOTS", `${kind}: no free default virtio-mmio interrupt (${slots.irqs.length} in use); pass mmio.irq`);
          irq = slots.irqs[n];
        }
      }
      mmio = attachVirtioMmio(machine, device, { base, irq, size: o.size });
      const list = mmioTransports.get(machine) ?? [];
      list.push(mmio);
      mmioTransports.set(machine, list);
    },
    async teardown() {
      await release?.();
    },
  };
}
