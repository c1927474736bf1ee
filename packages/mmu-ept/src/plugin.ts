import { GUEST_MEMORY, ServiceKey, type Machine, type Plugin } from "@typevisor/hv-core";
import { PhysicalMemory } from "./physical-memory.js";

/**
 * Service key of the machine's {@link PhysicalMemory}: the full memory
 * model (RAM layout, ROM, EPT, violation handlers, dirty log), for platform
 * code, snapshots and balloons. Devices use the narrower `GUEST_MEMORY`.
 */
export const PHYSICAL_MEMORY = new ServiceKey<PhysicalMemory>("physical-memory");

/**
 * Creates the machine's guest memory (RAM of `machine.ramSize` at 0, MMIO
 * bus for the rest), provides it as `GUEST_MEMORY` and `PHYSICAL_MEMORY`,
 * and registers it for snapshots. Used by the x86 CPU plugin; call it
 * directly only for machines without a CPU plugin (device tests).
 */
export function attachPhysicalMemory(machine: Machine): PhysicalMemory {
  const existing = machine.services.find(PHYSICAL_MEMORY);
  if (existing) return existing;
  const memory = new PhysicalMemory({ ramSize: machine.ramSize, mmio: machine.mmio });
  machine.services.provide(PHYSICAL_MEMORY, memory);
  machine.services.provide(GUEST_MEMORY, memory);
  machine.states.register(memory);
  return memory;
}

/**
 * The guest-memory plugin (capability `"memory"`), for machines without a
 * CPU plugin, e.g. device tests. `x86Cpu()` provides memory itself; do not
 * use both.
 */
export function guestMemory(): Plugin {
  return {
    name: "guest-memory",
    version: "0.1.0",
    provides: ["memory"],
    setup(machine: Machine) {
      attachPhysicalMemory(machine);
    },
    teardown(machine: Machine) {
      const m = machine.services.find(PHYSICAL_MEMORY);
      if (m) {
        machine.services.remove(PHYSICAL_MEMORY);
        machine.services.remove(GUEST_MEMORY);
        machine.states.unregister(m);
      }
    },
  };
}
