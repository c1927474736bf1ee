import {
  PCI_COMMAND_IO,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_DEVICES_PER_BUS,
  PCI_FUNCTIONS_PER_DEVICE,
  PciConfigSpace,
  PciError,
  StateError,
  formatPciAddress,
  type AccessSize,
  type IoHandler,
  type IrqLine,
  type MmioHandler,
  type PciBus,
  type PciConfigHost,
  type PciFunction,
  type PciPlugOptions,
  type PciPluggedFunction,
  type PciSlot,
  type Snapshottable,
  type StateValue,
} from "@typevisor/hv-core";
import { pciIntxGsi } from "./interrupt-router.js";

/** Default ECAM (PCIe MMCONFIG) window: 256 buses × 1 MiB at 0xB0000000, as QEMU's q35 places it. */
export const ECAM_BASE = 0xb0000000;
/** Size of the ECAM window for buses 0..255. */
export const ECAM_SIZE = 0x10000000;

/** Address ranges firmware-style resource assignment hands out. */
export interface PciResourceWindows {
  /** First and last+1 I/O port for I/O BARs. */
  io: [number, number];
  /** First and last+1 address for memory BARs (32-bit and 64-bit alike, below 4 GiB). */
  mem: [number, number];
}

/** Default windows: I/O 0xC000..0xFFFF, memory 0xC0000000..0xFEC00000 (below the I/O APIC). */
export const DEFAULT_PCI_WINDOWS: PciResourceWindows = { io: [0xc000, 0x10000], mem: [0xc0000000, 0xfec00000] };

/** Host-side wiring of the host bridge. */
export interface PciHostWiring {
  /** Buses and interrupt lines. */
  host: PciConfigHost;
  /** The reset control register (port 0xCF9) asked for a system reset. */
  reset(): void;
}

interface Plugged {
  fn: PciFunction;
  slot: PciSlot;
}

/**
 * The PCI host bridge of the PC: configuration mechanism #1 (address port
 * 0xCF8, data ports 0xCFC..0xCFF; PCI Local Bus Spec 3.0 §3.2.2.3.2), the
 * PCIe enhanced configuration mechanism (ECAM, PCIe Base Spec §7.2.2) in an
 * MMIO window, the reset control register at 0xCF9 (byte access, as on
 * Intel chipsets; the FADT reset register points at it), and the root bus
 * (bus 0) that device packages plug functions into through the
 * {@link PciBus} interface. Function 00.0 is the host bridge itself.
 *
 * INTx pins are routed to GSIs 16..23 with the usual swizzle (see
 * `pciIntxGsi`), which the DSDT's `_PRT` reports to the guest.
 */
export class PciHost implements PciBus, Snapshottable {
  /** Snapshot id. */
  readonly stateId = "pci-host";
  /** Snapshot format version. */
  readonly stateVersion = 1;
  /** The host bridge function (00:00.0). */
  readonly bridge: PciConfigSpace;
  private readonly slots: (Plugged | undefined)[] = new Array(PCI_DEVICES_PER_BUS * PCI_FUNCTIONS_PER_DEVICE);
  private readonly lines = new Map<number, IrqLine>();
  /** CF8 as an int32: bit 31 is the enable bit (docs/DESIGN.md, hot-path rules). */
  private address = 0;
  private rcr = 0;

  /** @param wiring - buses, interrupt lines and the reset action */
  constructor(private readonly wiring: PciHostWiring) {
    // Red Hat's QEMU PCIe host bridge IDs: no guest driver or quirk binds to them.
    this.bridge = new PciConfigSpace(wiring.host, { name: "host-bridge", vendorId: 0x1b36, deviceId: 0x0008, classCode: 0x060000 });
    this.plug(this.bridge, { device: 0, function: 0 });
  }

  /** Port handler for 0xCF8..0xCFF. */
  readonly portHandler: IoHandler = {
    read: (offset, size) => {
      if (offset === 0 && size === 4) return this.address >>> 0;
      if (offset === 1 && size === 1) return this.rcr;
      if (offset < 4) return size === 4 ? 0xffffffff : (1 << (size * 8)) - 1;
      if (!(this.address & 0x80000000)) return size === 4 ? 0xffffffff : (1 << (size * 8)) - 1;
      return this.configRead((this.address >> 16) & 0xff, (this.address >> 8) & 0xff, (this.address & 0xfc) + (offset - 4), size);
    },
    write: (offset, size, value) => {
      if (offset === 0 && size === 4) {
        this.address = value & 0x80fffffc;
        return;
      }
      if (offset === 1 && size === 1) {
        // Reset control register: a 0 -> 1 transition of RST_CPU (bit 2) resets the system.
        const before = this.rcr;
        this.rcr = value & 0x0e;
        if (value & 0x04 && !(before & 0x04)) {
          this.rcr &= ~0x04;
          this.wiring.reset();
        }
        return;
      }
      if (offset < 4 || !(this.address & 0x80000000)) return;
      this.configWrite((this.address >> 16) & 0xff, (this.address >> 8) & 0xff, (this.address & 0xfc) + (offset - 4), size, value);
    },
  };

  /** MMIO handler for the ECAM window (offset = bus << 20 | device << 15 | function << 12 | register). */
  readonly ecamHandler: MmioHandler = {
    read: (offset, size) => {
      const reg = offset & 0xfff;
      if (reg & (size - 1)) return this.splitRead(offset, size);
      return this.configRead(offset >>> 20, (offset >>> 12) & 0xff, reg, size);
    },
    write: (offset, size, value) => {
      const reg = offset & 0xfff;
      if (reg & (size - 1)) {
        for (let i = 0; i < size; i++) this.ecamHandler.write(offset + i, 1, (value >>> (i * 8)) & 0xff);
        return;
      }
      this.configWrite(offset >>> 20, (offset >>> 12) & 0xff, reg, size, value);
    },
  };

  private splitRead(offset: number, size: number): number {
    let v = 0;
    for (let i = 0; i < size; i++) v |= this.ecamHandler.read(offset + i, 1) << (i * 8);
    return v >>> 0;
  }

  /** Configuration read of bus/devfn/register; absent functions read all-ones (master abort). */
  configRead(bus: number, devfn: number, reg: number, size: AccessSize): number {
    const p = bus === 0 ? this.slots[devfn] : undefined;
    if (!p) return size === 4 ? 0xffffffff : (1 << (size * 8)) - 1;
    let v = p.fn.configRead(reg, size);
    // Header type bit 7 (multi-function) on function 0 when other functions of the device exist.
    if ((devfn & 7) === 0 && reg <= 0x0e && reg + size > 0x0e && this.hasOtherFunctions(devfn >> 3)) v |= 0x80 << ((0x0e - reg) * 8);
    return v >>> 0;
  }

  /** Configuration write of bus/devfn/register; writes to absent functions are dropped. */
  configWrite(bus: number, devfn: number, reg: number, size: AccessSize, value: number): void {
    const p = bus === 0 ? this.slots[devfn] : undefined;
    p?.fn.configWrite(reg, size, value);
  }

  private hasOtherFunctions(device: number): boolean {
    for (let f = 1; f < PCI_FUNCTIONS_PER_DEVICE; f++) if (this.slots[device * 8 + f]) return true;
    return false;
  }

  /** Plugs a function (PciBus). */
  plug(fn: PciFunction, options: PciPlugOptions = {}): PciSlot {
    const func = options.function ?? 0;
    let device = options.device;
    if (!Number.isInteger(func) || func < 0 || func >= PCI_FUNCTIONS_PER_DEVICE) throw new PciError("PCI_RANGE", `${fn.name}: function number ${func} is not 0..7`);
    if (device === undefined) {
      device = -1;
      for (let d = 1; d < PCI_DEVICES_PER_BUS; d++) {
        if (!this.slots[d * 8 + func] && (func !== 0 || !this.hasOtherFunctions(d))) {
          device = d;
          break;
        }
      }
      if (device < 0) throw new PciError("PCI_BUS_FULL", `${fn.name}: no free device number on bus 0`);
    }
    if (!Number.isInteger(device) || device < 0 || device >= PCI_DEVICES_PER_BUS) throw new PciError("PCI_RANGE", `${fn.name}: device number ${device} is not 0..31`);
    const devfn = device * 8 + func;
    const taken = this.slots[devfn];
    if (taken) throw new PciError("PCI_SLOT_TAKEN", `${fn.name}: slot ${formatPciAddress(0, device, func)} is taken by ${taken.fn.name}`);
    if (this.slots.some((p) => p?.fn === fn)) throw new PciError("PCI_SLOT_TAKEN", `${fn.name} is already plugged`);
    const dev = device;
    const slot: PciSlot = {
      bus: 0,
      device: dev,
      function: func,
      address: formatPciAddress(0, dev, func),
      intx: (pin) => this.intxLine(dev, pin),
      gsiOf: (pin) => pciIntxGsi(dev, pin),
    };
    this.slots[devfn] = { fn, slot };
    fn.attach?.(slot);
    return slot;
  }

  private intxLine(device: number, pin: number): IrqLine {
    if (!Number.isInteger(pin) || pin < 1 || pin > 4) throw new PciError("PCI_PIN", `INTx pin ${pin} is not 1..4`);
    // One source per device and pin, so functions sharing it combine by OR like wired INTx.
    const key = device * 4 + pin;
    let line = this.lines.get(key);
    if (!line) {
      line = this.wiring.host.irqs.line(pciIntxGsi(device, pin));
      this.lines.set(key, line);
    }
    return line;
  }

  /** Unplugs a function (PciBus). */
  unplug(fn: PciFunction): void {
    const i = this.slots.findIndex((p) => p?.fn === fn);
    if (i < 0) return;
    this.slots[i] = undefined;
    fn.detach?.();
  }

  /** The plugged functions in device/function order (PciBus). */
  functions(): PciPluggedFunction[] {
    return this.slots.filter((p): p is Plugged => p !== undefined).map((p) => ({ slot: p.slot, fn: p.fn }));
  }

  /** Machine reset: every function to power-on state, CF8 cleared. */
  reset(): void {
    this.address = 0;
    this.rcr = 0;
    for (const p of this.slots) p?.fn.reset();
  }

  /**
   * Does what PC firmware does before booting an OS without a BIOS: sizes
   * every BAR of every function on bus 0, assigns addresses from `windows`
   * (largest first, naturally aligned), writes the interrupt line register
   * (the GSI of the function's pin), and enables I/O, memory and bus
   * mastering. BARs that do not fit stay unassigned and are listed.
   * @returns descriptions of BARs that did not fit (empty when all did)
   */
  assignResources(windows: PciResourceWindows = DEFAULT_PCI_WINDOWS): string[] {
    interface Bar {
      devfn: number;
      index: number;
      size: number;
      io: boolean;
      is64: boolean;
    }
    const bars: Bar[] = [];
    const failed: string[] = [];
    for (let devfn = 0; devfn < this.slots.length; devfn++) {
      const p = this.slots[devfn];
      if (!p || p.fn === this.bridge) continue;
      const rd = (r: number): number => p.fn.configRead(r, 4);
      const wr = (r: number, v: number): void => p.fn.configWrite(r, 4, v);
      wr(0x04, rd(0x04) & 0xffff & ~(PCI_COMMAND_IO | PCI_COMMAND_MEMORY));
      for (let i = 0; i < 6; i++) {
        const reg = 0x10 + i * 4;
        const orig = rd(reg);
        wr(reg, 0xffffffff);
        const mask = rd(reg);
        wr(reg, orig);
        if (mask === 0 || mask === 0xffffffff) continue;
        const io = (mask & 1) === 1;
        const is64 = !io && ((mask >> 1) & 3) === 2;
        let size: number;
        if (io) size = (~(mask & 0xfffffffc) & 0xffff) + 1;
        else if (is64) {
          const origHi = rd(reg + 4);
          wr(reg + 4, 0xffffffff);
          const maskHi = rd(reg + 4);
          wr(reg + 4, origHi);
          size = maskHi === 0xffffffff ? ((~(mask & 0xfffffff0) >>> 0) + 1) : 2 ** 32 * ((~maskHi >>> 0) + 1);
        } else size = (~(mask & 0xfffffff0) >>> 0) + 1;
        bars.push({ devfn, index: i, size, io, is64 });
        if (is64) i++;
      }
    }
    bars.sort((a, b) => b.size - a.size || a.devfn - b.devfn || a.index - b.index);
    let ioNext = windows.io[0];
    let memNext = windows.mem[0];
    for (const b of bars) {
      const p = this.slots[b.devfn]!;
      const reg = 0x10 + b.index * 4;
      const align = (v: number, a: number): number => Math.ceil(v / a) * a;
      if (b.io) {
        const at = align(ioNext, b.size);
        if (at + b.size > windows.io[1]) {
          failed.push(`${p.slot.address} BAR${b.index} (I/O, ${b.size} bytes)`);
          continue;
        }
        p.fn.configWrite(reg, 4, at);
        ioNext = at + b.size;
      } else {
        const at = align(memNext, b.size);
        if (at + b.size > windows.mem[1]) {
          failed.push(`${p.slot.address} BAR${b.index} (memory, ${b.size} bytes)`);
          continue;
        }
        p.fn.configWrite(reg, 4, at >>> 0);
        if (b.is64) p.fn.configWrite(reg + 4, 4, 0);
        memNext = at + b.size;
      }
    }
    for (let devfn = 0; devfn < this.slots.length; devfn++) {
      const p = this.slots[devfn];
      if (!p || p.fn === this.bridge) continue;
      const pin = p.fn.configRead(0x3d, 1);
      if (pin >= 1 && pin <= 4) p.fn.configWrite(0x3c, 1, pciIntxGsi(devfn >> 3, pin));
      p.fn.configWrite(0x04, 2, (p.fn.configRead(0x04, 2) | PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER) & 0xffff);
    }
    return failed;
  }

  /** Saves CF8 and the reset control register (functions save their own state). */
  saveState(): StateValue {
    return [this.address >>> 0, this.rcr, this.bridge.saveState()];
  }

  /** Restores CF8, the reset control register and the bridge function. */
  loadState(data: StateValue): void {
    if (!Array.isArray(data) || data.length !== 3 || typeof data[0] !== "number" || typeof data[1] !== "number") {
      throw new StateError("STATE_MALFORMED", "PCI host bridge: saved state is malformed");
    }
    this.address = data[0] & 0x80fffffc;
    this.rcr = data[1] & 0x0e;
    this.bridge.loadState(data[2]);
  }
}
