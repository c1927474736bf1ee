import { ServiceKey } from "./services.js";

/**
 * The 8259 PIC pair as the CPU's INTR input sees it (the ExtINT source of
 * local APIC LINT0 in virtual-wire mode). Provided by the platform, used by
 * the CPU at instruction boundaries.
 */
export interface LegacyInterruptController {
  /** True while an unmasked, unserviced request is pending (INTR asserted). */
  hasInterrupt(): boolean;
  /** The INTA cycle: returns the vector and moves the request in service. */
  acknowledge(): number;
}

/** Service key of the legacy PIC. */
export const LEGACY_PIC = new ServiceKey<LegacyInterruptController>("legacy-pic");

/**
 * A segment register's initial hidden state. `access` holds descriptor bits
 * 40..47 (P, DPL, S, type) and `flags` bits 52..55 (AVL, L, D/B, G), as in the
 * Intel SDM Vol. 3 §3.4.5.
 */
export interface X86SegmentInit {
  /** Visible selector. */
  selector: number;
  /** Segment base (linear address). */
  base: number;
  /** Segment limit in bytes minus one, after granularity scaling. */
  limit: number;
  /** Descriptor bits 40..47: P, DPL, S, type. */
  access: number;
  /** Descriptor bits 52..55: AVL (bit 0), L (bit 1), D/B (bit 2), G (bit 3). */
  flags: number;
}

/** A descriptor-table register value. */
export interface X86TableRegister {
  /** Linear base address. */
  base: number;
  /** Limit in bytes minus one. */
  limit: number;
}

/** General-purpose register names of the 32-bit register file. */
export type X86Register32 = "eax" | "ecx" | "edx" | "ebx" | "esp" | "ebp" | "esi" | "edi";

/** Segment register names. */
export type X86SegmentName = "es" | "cs" | "ss" | "ds" | "fs" | "gs";

/**
 * Register state a boot loader hands to a vCPU instead of a BIOS: e.g. the
 * Linux 32-bit boot protocol entry (flat protected mode, `esi` = boot_params)
 * or a multiboot entry (`eax` = 0x2BADB002, `ebx` = info block). Anything not
 * given keeps its power-on value.
 */
export interface X86BootState {
  /** Instruction pointer at entry. */
  eip: number;
  /** EFLAGS at entry; default 0x2 (interrupts off). */
  eflags?: number;
  /** General-purpose registers. */
  regs?: Partial<Record<X86Register32, number>>;
  /** Segment registers with their hidden parts. */
  segments?: Partial<Record<X86SegmentName, X86SegmentInit>>;
  /** GDTR. */
  gdtr?: X86TableRegister;
  /** IDTR. */
  idtr?: X86TableRegister;
  /** CR0 (PE set selects protected mode); default the power-on 0x60000010. */
  cr0?: number;
  /** CR3. */
  cr3?: number;
  /** CR4. */
  cr4?: number;
}

/** What boot loaders need from the x86 CPU plugin. */
export interface X86CpuControl {
  /** Number of vCPUs. */
  readonly vcpuCount: number;
  /** Puts vCPU `index` into `state` (after a reset to power-on values). */
  applyBootState(index: number, state: X86BootState): void;
}

/** Service key of the x86 CPU plugin's control interface. */
export const X86_CPU_CONTROL = new ServiceKey<X86CpuControl>("x86-cpu");
