import { LEGACY_PIC, ServiceKey, X86_CPU_CONTROL, type Machine, type Plugin, type Snapshottable, type StateValue } from "@typevisor/hv-core";
import { attachPhysicalMemory } from "@typevisor/mmu-ept";
import { ApicBus } from "./apic-bus.js";
import { applyBootState, loadCpuState, saveCpuState } from "./cpu-state.js";
import { Cpu } from "./cpu.js";
import type { JitOptions } from "./jit.js";
import { hostRandom, RandomNumberUnit, type RandomFill } from "./rdrand.js";
import { Simd } from "./sse.js";
import { X87 } from "./x87.js";

/** Service key of the machine's x86 vCPUs (extension plugins such as an FPU or local APIC attach through it). */
export const X86_CPUS = new ServiceKey<readonly Cpu[]>("x86-cpus");

/** Options of {@link x86Cpu}. */
export interface X86CpuOptions {
  /** Number of vCPUs; default 1. vCPUs other than 0 wait for a startup IPI. */
  vcpus?: number;
  /** Triple fault: stop the machine with reason `shutdown` (default) or reset it (as a PC with reboot enabled). */
  onTripleFault?: "shutdown" | "reset";
  /**
   * Give each vCPU a local APIC (default true): the xAPIC page at
   * 0xFEE00000, the machine's MSI sink, IPIs and INIT/SIPI start-up of the
   * other vCPUs. Without it the vCPUs take INTR from the legacy PIC only and
   * vCPUs other than 0 never start.
   */
  apic?: boolean;
  /**
   * Floating-point units: `"sse2"` (default: x87 FPU, MMX, SSE, SSE2, FXSAVE),
   * `"x87"` (the FPU alone), or `"none"` (no FPU: escapes raise #NM/#UD, as
   * on a 386 without a coprocessor; CPUID reports none of them).
   */
  fpu?: "sse2" | "x87" | "none";
  /**
   * RDRAND and RDSEED: `true` draws from the host's cryptographic generator,
   * a function draws from it instead, `false` leaves them out (CPUID reports
   * neither and they raise #UD). Default: on, except with a deterministic
   * clock, whose runs must replay exactly.
   */
  rdrand?: boolean | RandomFill;
  /**
   * The block compiler (hot x86 blocks become JavaScript functions): `false`
   * interprets only; `{ threshold }` sets how many times a block runs before
   * it is compiled. Default: on (TYPEVISOR_JIT=off or =<threshold> in the
   * environment changes the default).
   */
  jit?: false | JitOptions;
}

/** Snapshot adapter of one vCPU. */
class CpuSnapshot implements Snapshottable {
  readonly stateVersion = 1;
  readonly stateId: string;
  constructor(private readonly cpu: Cpu) {
    this.stateId = `cpu${cpu.index}`;
  }
  saveState(): StateValue {
    return saveCpuState(this.cpu);
  }
  loadState(data: StateValue): void {
    loadCpuState(this.cpu, data);
  }
}

/**
 * The x86 CPU plugin. Creates the machine's guest memory (RAM of the
 * machine's size; provided as `GUEST_MEMORY` and `PHYSICAL_MEMORY`), the
 * vCPUs (added to the machine, registered for snapshots as `cpu0`, `cpu1`,
 * ...), and provides `X86_CPU_CONTROL` for boot loaders and `X86_CPUS` for
 * extension units. Capabilities: `cpu`, `x86-cpu`, `memory`.
 *
 * With `apic` (the default) each vCPU gets a `LocalApic` (state
 * `apic0`, `apic1`, ...); their `ApicBus` becomes the machine's
 * `irqs.msiSink`, maps the register page on `machine.mmio` and is provided
 * as `LOCAL_APICS`.
 *
 * The CPU takes INTR from the `LEGACY_PIC` service when a platform provides
 * one, port I/O from `machine.ports`, MMIO from `machine.mmio`, and time from
 * the machine's clock.
 */
export function x86Cpu(options: X86CpuOptions = {}): Plugin {
  const count = options.vcpus ?? 1;
  if (!Number.isInteger(count) || count < 1 || count > 255) throw new RangeError(`x86Cpu: vcpus must be 1..255, got ${count}`);
  let cpus: Cpu[] = [];
  let snaps: CpuSnapshot[] = [];
  let apics: ApicBus | undefined;
  let unitStates: Snapshottable[] = [];
  return {
    name: "x86-cpu",
    version: "0.1.0",
    provides: ["cpu", "memory"],
    setup(machine: Machine) {
      const memory = attachPhysicalMemory(machine);
      const clock = machine.clock;
      const host = {
        ports: machine.ports,
        now: () => clock.now(),
        nsPerInstruction: clock.mode === "deterministic" ? clock.nsPerInstruction : 0,
        legacyPic: () => machine.services.find(LEGACY_PIC),
        shutdown: (reason: string) => {
          if (options.onTripleFault === "reset") machine.requestReset();
          else machine.requestStop({ reason: "shutdown", message: `vCPU ${reason}` });
        },
      };
      cpus = [];
      apics = options.apic === false ? undefined : new ApicBus(machine);
      const units: Snapshottable[] = [];
      const fpu = options.fpu ?? "sse2";
      const rdrand = options.rdrand ?? clock.mode !== "deterministic";
      for (let i = 0; i < count; i++) {
        const cpu = new Cpu(memory, apics ? apics.hostFor(i, host) : host, { index: i, onTripleFault: options.onTripleFault, jit: options.jit });
        apics?.attach(cpu);
        if (fpu !== "none") {
          const x87 = new X87(i);
          cpu.addExtension(x87);
          units.push(x87.state);
          if (fpu === "sse2") {
            const simd = new Simd(x87, i);
            cpu.addExtension(simd);
            units.push(simd.state);
          }
        }
        if (rdrand !== false) cpu.addExtension(new RandomNumberUnit(rdrand === true ? hostRandom : rdrand));
        cpus.push(cpu);
        machine.addVcpu(cpu);
      }
      snaps = cpus.map((c) => new CpuSnapshot(c));
      for (const s of snaps) machine.states.register(s);
      for (const u of units) machine.states.register(u);
      unitStates = units;
      machine.services.provide(X86_CPUS, cpus);
      machine.services.provide(X86_CPU_CONTROL, {
        vcpuCount: count,
        applyBootState(index, state) {
          const cpu = cpus[index];
          if (!cpu) throw new RangeError(`no vCPU ${index} (the machine has ${count})`);
          applyBootState(cpu, state);
        },
      });
    },
    teardown(machine: Machine) {
      apics?.detach();
      for (const s of snaps) machine.states.unregister(s);
      for (const u of unitStates) machine.states.unregister(u);
      machine.services.remove(X86_CPUS);
      machine.services.remove(X86_CPU_CONTROL);
    },
  };
}
