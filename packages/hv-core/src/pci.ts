import { TypevisorError } from "./errors.js";
import type { AccessSize } from "./io-handler.js";
import type { IrqLine } from "./irq.js";
import { ServiceKey } from "./services.js";

/** Raised for PCI composition errors: slot taken, address out of range, bad BAR or capability layout. */
export class PciError extends TypevisorError {}

/** Devices per PCI bus (PCI Local Bus Spec 3.0 §3.2.2.3.2: 5-bit device number). */
export const PCI_DEVICES_PER_BUS = 32;
/** Functions per PCI device (3-bit function number). */
export const PCI_FUNCTIONS_PER_DEVICE = 8;

/**
 * One PCI function as its bus sees it: a configuration space and a reset.
 * Implemented by device packages (virtio-pci, VFIO passthrough) or by
 * {@link PciConfigSpace}, and plugged into the platform's host bridge
 * through the {@link PCI_BUS} service, so device packages never import the
 * platform.
 *
 * The bus only calls `configRead`/`configWrite` with naturally aligned
 * accesses that stay inside the function's 4 KiB (PCIe) configuration space;
 * what lies past the function's own size (256 bytes for conventional PCI) is
 * the function's choice (reading zero is what Linux expects).
 */
export interface PciFunction {
  /** Name for messages and BAR region names, e.g. `"virtio-blk"`. */
  readonly name: string;
  /** Reads `size` bytes of configuration space at `offset` (0..4095). */
  configRead(offset: number, size: AccessSize): number;
  /** Writes the low `size` bytes of `value` at configuration `offset`. */
  configWrite(offset: number, size: AccessSize, value: number): void;
  /** Puts the function into its power-on state (machine reset, bus reset). */
  reset(): void;
  /** Called once when plugged: where the function sits and how its INTx pins are wired. */
  attach?(slot: PciSlot): void;
  /** Called when unplugged: release BAR mappings and lower interrupt lines. */
  detach?(): void;
}

/** A function's place on the bus, given to it by {@link PciBus.plug}. */
export interface PciSlot {
  /** Bus number (0 for the root bus). */
  readonly bus: number;
  /** Device number, 0..31. */
  readonly device: number;
  /** Function number, 0..7. */
  readonly function: number;
  /** Conventional address text, `"0000:00:03.0"` (segment:bus:device.function). */
  readonly address: string;
  /**
   * The interrupt line that pin `pin` (1 = INTA# .. 4 = INTD#) of this function
   * drives, per the platform's INTx routing (the DSDT `_PRT` tells the guest
   * the same). Lines of different functions may share a GSI; the machine ORs
   * their levels.
   */
  intx(pin: number): IrqLine;
  /** The GSI that pin `pin` is routed to (what the guest's `_PRT` says). */
  gsiOf(pin: number): number;
}

/** Where to put a function; anything left out is chosen by the bus. */
export interface PciPlugOptions {
  /** Device number (0..31); default the first free device with no function 0. */
  device?: number;
  /** Function number (0..7); default 0. */
  function?: number;
}

/** One plugged function, as listed by {@link PciBus.functions}. */
export interface PciPluggedFunction {
  /** Where it sits. */
  readonly slot: PciSlot;
  /** The function. */
  readonly fn: PciFunction;
}

/**
 * The platform's PCI bus (provided by the PC platform's host bridge). Device
 * plugins require the `"pci-bus"` capability and look the bus up with
 * `machine.services.get(PCI_BUS)`.
 *
 * The bus owns its functions' resets: on machine reset it calls
 * {@link PciFunction.reset} of every plugged function, so a device plugin
 * registers no reset handler of its own for a plugged function.
 */
export interface PciBus {
  /**
   * Plugs `fn` in and calls its `attach`.
   * @throws PciError `PCI_SLOT_TAKEN` when the slot is occupied, `PCI_BUS_FULL`
   *   when no device number is free, `PCI_RANGE` for a bad device/function number
   */
  plug(fn: PciFunction, options?: PciPlugOptions): PciSlot;
  /** Unplugs `fn` (calling its `detach`); no effect if it is not plugged. */
  unplug(fn: PciFunction): void;
  /** The plugged functions, ordered by device then function number. */
  functions(): PciPluggedFunction[];
}

/** Service key of the PCI bus. */
export const PCI_BUS = new ServiceKey<PciBus>("pci-bus");

/** Formats a PCI address as `"0000:00:03.0"`. */
export function formatPciAddress(bus: number, device: number, fn: number, segment = 0): string {
  const hex = (v: number, n: number): string => v.toString(16).padStart(n, "0");
  return `${hex(segment, 4)}:${hex(bus, 2)}:${hex(device, 2)}.${fn}`;
}
