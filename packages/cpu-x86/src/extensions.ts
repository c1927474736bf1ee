import type { Snapshottable } from "@typevisor/hv-core";
import type { Cpu } from "./cpu.js";

/** An interrupt source a unit offers (a local APIC): checked at instruction boundaries when IF=1. */
export interface InterruptSource {
  /** True while an interrupt is ready to be delivered. */
  hasInterrupt(): boolean;
  /** Accepts the highest-priority interrupt and returns its vector. */
  acknowledge(): number;
}

/**
 * An optional execution unit plugged into a {@link Cpu}: the x87 FPU,
 * MMX/SSE/SSE2, the local APIC. The integer core dispatches to units at
 * clean seams so they live in their own files and packages:
 *
 * - `escape` gets the x87 escape opcodes D8-DF (with the ModRM byte fetched);
 * - `op0F` gets every 0F-map opcode the integer core does not implement
 *   (MMX/SSE/SSE2, FXSAVE/FXRSTOR, LDMXCSR...), returning false when the
 *   opcode is not its own (then the core raises #UD);
 * - `cpuid` ORs the feature bits it implements into a leaf (CPUID reports
 *   only what exists);
 * - `rdmsr`/`wrmsr` claim MSRs (e.g. the APIC's TSC deadline);
 * - `interrupts` is an interrupt source consulted before the legacy PIC
 *   (the local APIC).
 */
export interface CpuExtension {
  /** Unit name, for messages. */
  readonly name: string;
  /** Executes x87 escape `opcode` (0xD8..0xDF) whose ModRM byte is `modrm`. */
  escape?(cpu: Cpu, opcode: number, modrm: number): void;
  /** FWAIT/WAIT (0x9B): raise a pending x87 exception, if any. */
  wait?(cpu: Cpu): void;
  /** Executes 0F-map opcode `op` (prefixes are in `cpu`); false if not handled. */
  op0F?(cpu: Cpu, op: number): boolean;
  /** Adds this unit's bits to CPUID leaf `leaf`/`subleaf`; `out` holds EAX, EBX, ECX, EDX. */
  cpuid?(leaf: number, subleaf: number, out: Int32Array): void;
  /** Reads MSR `index` into `out` (lo, hi); false if not this unit's. */
  rdmsr?(cpu: Cpu, index: number, out: Int32Array): boolean;
  /** Writes MSR `index`; false if not this unit's. May raise #GP via `cpu.raiseGp`. */
  wrmsr?(cpu: Cpu, index: number, lo: number, hi: number): boolean;
  /** An interrupt source checked before the legacy PIC (local APIC). */
  interrupts?: InterruptSource;
  /** Resets the unit to its power-on state (INIT/RESET). */
  reset?(): void;
  /** The unit's snapshottable state, registered with the machine next to the CPU's. */
  state?: Snapshottable;
}
