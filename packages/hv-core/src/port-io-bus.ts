import { TypevisorError } from "./errors.js";
import { maskToSize, type AccessSize, type IoHandler, type IoRegion, type UnclaimedAccessHook } from "./io-handler.js";

/** Raised when a region cannot be registered: overlap, bad range. */
export class BusError extends TypevisorError {}

interface PortSlot {
  readonly name: string;
  readonly base: number;
  readonly length: number;
  readonly handler: IoHandler;
}

/**
 * The x86 I/O port space (64 KiB of ports). Dispatch is one typed-array
 * lookup: a 65536-entry table maps each port to the slot of the device that
 * claimed it. Accesses that straddle two devices (or an unclaimed gap) are
 * split into byte accesses, as the ISA bus would do.
 */
export class PortIoBus {
  private readonly map = new Uint16Array(0x10000);
  private readonly slots: (PortSlot | undefined)[] = [undefined];
  private readonly freeSlots: number[] = [];
  /** Optional tracer for accesses to unclaimed ports. */
  onUnclaimed: UnclaimedAccessHook | undefined;

  /**
   * Claims ports `base .. base+length-1` for `handler`.
   * @throws BusError `BUS_OVERLAP` naming both devices when a port is taken,
   *   `BUS_RANGE` when the range leaves the 16-bit port space
   */
  register(name: string, base: number, length: number, handler: IoHandler): IoRegion {
    if (!Number.isInteger(base) || !Number.isInteger(length) || base < 0 || length <= 0 || base + length > 0x10000) {
      throw new BusError("BUS_RANGE", `port range for "${name}" (base 0x${base.toString(16)}, length ${length}) is outside 0x0000-0xffff`);
    }
    for (let p = base; p < base + length; p++) {
      const s = this.map[p];
      if (s !== 0) {
        const other = this.slots[s]!;
        throw new BusError("BUS_OVERLAP", `ports of "${name}" (0x${base.toString(16)}-0x${(base + length - 1).toString(16)}) overlap "${other.name}" (0x${other.base.toString(16)}-0x${(other.base + other.length - 1).toString(16)}) at port 0x${p.toString(16)}`);
      }
    }
    const index = this.freeSlots.pop() ?? this.slots.length;
    if (index > 0xffff) throw new BusError("BUS_RANGE", "too many port regions");
    const slot: PortSlot = { name, base, length, handler };
    this.slots[index] = slot;
    this.map.fill(index, base, base + length);
    let live = true;
    return {
      name,
      base,
      length,
      unregister: () => {
        if (!live) return;
        live = false;
        this.map.fill(0, base, base + length);
        this.slots[index] = undefined;
        this.freeSlots.push(index);
      },
    };
  }

  /** Name of the device claiming `port`, or `undefined`. */
  ownerOf(port: number): string | undefined {
    return this.slots[this.map[port & 0xffff]]?.name;
  }

  /** Reads `size` bytes from `port`; unclaimed bytes read as all-ones. */
  read(port: number, size: AccessSize): number {
    port &= 0xffff;
    const s = this.map[port];
    if (s !== 0 && (size === 1 || (port + size <= 0x10000 && this.map[port + size - 1] === s))) {
      const slot = this.slots[s]!;
      return maskToSize(slot.handler.read(port - slot.base, size), size);
    }
    if (size === 1) {
      this.onUnclaimed?.(port, 1, false, 0xff);
      return 0xff;
    }
    // Straddles devices or a gap: assemble from single bytes, little-endian.
    let v = 0;
    for (let i = 0; i < size; i++) v |= this.read((port + i) & 0xffff, 1) << (i * 8);
    return maskToSize(v, size);
  }

  /** Writes the low `size` bytes of `value` to `port`; unclaimed bytes are dropped. */
  write(port: number, size: AccessSize, value: number): void {
    port &= 0xffff;
    const s = this.map[port];
    if (s !== 0 && (size === 1 || (port + size <= 0x10000 && this.map[port + size - 1] === s))) {
      const slot = this.slots[s]!;
      slot.handler.write(port - slot.base, size, maskToSize(value, size));
      return;
    }
    if (size === 1) {
      this.onUnclaimed?.(port, 1, true, value & 0xff);
      return;
    }
    for (let i = 0; i < size; i++) this.write((port + i) & 0xffff, 1, (value >>> (i * 8)) & 0xff);
  }
}
