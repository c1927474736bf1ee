/**
 * `@typevisor/cpu-x86`: the x86 vCPU of typevisor. An interpreter with lazy
 * flags covering every IA-32 general-purpose instruction; real, protected
 * and virtual-8086 modes with descriptor tables, gates, privilege changes,
 * task switches, exceptions, #DF and triple fault; CPUID, RDTSC, MSRs,
 * SYSENTER/SYSEXIT, RDRAND/RDSEED; port I/O, MMIO, HLT and shutdown as exits to the machine.
 *
 * @packageDocumentation
 */
export {
  Cpu,
  CpuExceptionSignal,
  CPU_EXCEPTION,
  type CpuHost,
  type CpuOptions,
  type CpuidHandler,
  type MsrReadHandler,
  type MsrWriteHandler,
  type PortAccess,
  type ExitCounters,
} from "./cpu.js";
export type { CpuExtension, InterruptSource } from "./extensions.js";
export { applyBootState, saveCpuState, loadCpuState } from "./cpu-state.js";
export { x86Cpu, X86_CPUS, type X86CpuOptions } from "./plugin.js";
export { BlockCompiler, DEFAULT_JIT_THRESHOLD, type CompiledRegion, type JitOptions } from "./jit.js";
export type { DecodeCacheListener } from "./decode-cache.js";
export { LocalApic, APIC_DEFAULT_BASE, APIC_VERSION, APIC_REG, APIC_ESR, APIC_DELIVERY, APIC_BASE_BSP, APIC_BASE_ENABLE, MSR_TSC_DEADLINE } from "./apic.js";
export { ApicBus, LOCAL_APICS } from "./apic-bus.js";
export { X87, CPUID_FPU, type X87Options } from "./x87.js";
export { RandomNumberUnit, hostRandom, CPUID_1_RDRAND, CPUID_7_RDSEED, type RandomFill } from "./rdrand.js";
export { Simd, CPUID_SIMD_EDX, MXCSR_MASK } from "./sse.js";
export { CPUID_SIGNATURE, CORE_FEATURES_EDX, CORE_EXT_FEATURES_EDX } from "./cpuid-msr.js";
export { loadElf32, ElfError, type ElfImage, type ElfSegment } from "./elf.js";
export * as x86 from "./constants.js";
