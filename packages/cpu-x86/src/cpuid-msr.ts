// The CPUID model and the MSRs (Intel SDM Vol. 2 CPUID; Vol. 4 MSRs).
// CPUID reports only what this core (plus its extension units) implements.
import * as C from "./constants.js";
import type { Cpu } from "./cpu.js";

/** Family 6, model 3, stepping 3: a P6-class processor without the features we lack. */
export const CPUID_SIGNATURE = 0x633;

/** CPUID.01H:EDX bits the integer core implements. */
export const CORE_FEATURES_EDX =
  (1 << 3) | // PSE: 4 MiB pages
  (1 << 4) | // TSC
  (1 << 5) | // MSR: RDMSR/WRMSR
  (1 << 6) | // PAE
  (1 << 8) | // CX8: CMPXCHG8B
  (1 << 11) | // SEP: SYSENTER/SYSEXIT
  (1 << 12) | // MTRR (registers kept; memory types have no effect)
  (1 << 13) | // PGE: global pages
  (1 << 15) | // CMOV
  (1 << 16); // PAT (MSR kept; memory types have no effect)

/** CPUID.80000001H:EDX: NX (execute-disable with PAE). */
export const CORE_EXT_FEATURES_EDX = 1 << 20;

/** Highest basic CPUID leaf: 16H, the TSC and processor frequency leaves. */
export const CPUID_MAX_BASIC_LEAF = 0x16;

/** CPUID.(EAX=07H,ECX=0):EBX bit 1: the IA32_TSC_ADJUST MSR exists. */
export const CPUID_7_TSC_ADJUST = 1 << 1;

/** CPUID.80000007H:EDX bit 8: invariant TSC (constant rate, runs in every C-state). */
export const CPUID_INVARIANT_TSC = 1 << 8;

/**
 * The TSC rate. The TSC counts the machine's virtual nanoseconds, so it
 * runs at exactly 1 GHz; CPUID 15H reports it as a 1 GHz "crystal" with a
 * 1/1 ratio, and the local APIC timer counts the same clock (SDM Vol. 3
 * 18.7.3: the crystal clock is the APIC timer's base on these parts).
 */
export const TSC_HZ = 1_000_000_000;

const VENDOR = "GenuineIntel";
const BRAND = "typevisor x86 vCPU";

function str4(s: string, i: number): number {
  return s.charCodeAt(i) | (s.charCodeAt(i + 1) << 8) | (s.charCodeAt(i + 2) << 16) | (s.charCodeAt(i + 3) << 24);
}

const cpuidOut = new Int32Array(4);

/** Executes CPUID for `leaf`/`subleaf` into EAX, EBX, ECX, EDX. */
export function readCpuid(cpu: Cpu, leaf: number, subleaf: number): void {
  const out = cpuidOut;
  out.fill(0);
  leaf >>>= 0;
  let known = true;
  switch (leaf) {
    case 0:
      out[0] = CPUID_MAX_BASIC_LEAF;
      out[1] = str4(VENDOR, 0);
      out[3] = str4(VENDOR, 4);
      out[2] = str4(VENDOR, 8);
      break;
    case 1:
      out[0] = CPUID_SIGNATURE;
      out[1] = (cpu.index << 24) | (1 << 16);
      out[3] = CORE_FEATURES_EDX;
      break;
    case 7:
      if (subleaf === 0) out[1] = CPUID_7_TSC_ADJUST;
      break;
    case 0x15:
      // TSC/crystal ratio EBX/EAX and the crystal in Hz (SDM Vol. 2, CPUID
      // leaf 15H). Knowing the rate, a guest needs no calibration loop
      // against the PIT (which a slow or preempted host makes unreliable).
      out[0] = 1;
      out[1] = 1;
      out[2] = TSC_HZ;
      break;
    case 0x16:
      // Base, maximum and bus frequency in MHz.
      out[0] = TSC_HZ / 1e6;
      out[1] = TSC_HZ / 1e6;
      out[2] = TSC_HZ / 1e6;
      break;
    case 0x80000000:
      out[0] = 0x80000008 | 0;
      break;
    case 0x80000001:
      out[3] = CORE_EXT_FEATURES_EDX;
      break;
    case 0x80000002:
    case 0x80000003:
    case 0x80000004: {
      const brand = BRAND.padEnd(48, "\0");
      const base = (leaf - 0x80000002) * 16;
      for (let i = 0; i < 4; i++) out[i] = str4(brand, base + i * 4);
      break;
    }
    case 0x80000007:
      // The TSC is virtual time: constant rate, never stops (with the
      // TSC_ADJUST MSR this lets Linux trust it without a watchdog).
      out[3] = CPUID_INVARIANT_TSC;
      break;
    case 0x80000008:
      out[0] = 0x2024; // 36 physical address bits, 32 linear
      break;
    default:
      // The other leaves up to the highest basic and extended ones exist and
      // report nothing: no cache descriptors or parameters, MONITOR, thermal
      // sensor, PMU, XSAVE or extended topology.
      known = leaf <= CPUID_MAX_BASIC_LEAF || (leaf >= 0x80000000 && leaf <= 0x80000008);
  }
  if (known) {
    for (const e of cpu.extensions) e.cpuid?.(leaf, subleaf, out);
  } else {
    // A leaf the model does not define: a plugin may claim it (trap-and-emulate exit); otherwise zeros.
    for (const h of cpu.cpuidHandlers) if (h(leaf, subleaf, out)) break;
  }
  cpu.regs[0] = out[0];
  cpu.regs[3] = out[1];
  cpu.regs[1] = out[2];
  cpu.regs[2] = out[3];
}

/** Number of variable-range MTRR pairs reported by IA32_MTRRCAP. */
const MTRR_VARIABLE = 8;

function isMtrr(index: number): boolean {
  return (
    (index >= 0x200 && index < 0x200 + 2 * MTRR_VARIABLE) ||
    index === 0x250 ||
    index === 0x258 ||
    index === 0x259 ||
    (index >= 0x268 && index <= 0x26f) ||
    index === C.MSR_MTRR_DEF_TYPE
  );
}

/** RDMSR: value into cpu.tmp64 (lo, hi); #GP(0) for an MSR nobody implements. */
export function readMsr(cpu: Cpu, index: number): void {
  const out = cpu.tmp64;
  out[0] = 0;
  out[1] = 0;
  for (const e of cpu.extensions) if (e.rdmsr && e.rdmsr(cpu, index, out)) return;
  switch (index) {
    case C.MSR_TSC: {
      const t = cpu.readTsc();
      out[0] = t % 4294967296;
      out[1] = Math.floor(t / 4294967296);
      return;
    }
    case C.MSR_TSC_ADJUST: {
      // What software added to the TSC (SDM Vol. 3 18.17.3): exactly our offset.
      const a = cpu.tscOffset;
      out[0] = a % 4294967296 | 0;
      out[1] = Math.floor(a / 4294967296) | 0;
      return;
    }
    case C.MSR_APIC_BASE:
      out[0] = cpu.apicBase;
      return;
    case C.MSR_SYSENTER_CS:
      out[0] = cpu.sysenterCs;
      return;
    case C.MSR_SYSENTER_ESP:
      out[0] = cpu.sysenterEsp;
      return;
    case C.MSR_SYSENTER_EIP:
      out[0] = cpu.sysenterEip;
      return;
    case C.MSR_PAT:
      out[0] = cpu.pat[0];
      out[1] = cpu.pat[1];
      return;
    case C.MSR_EFER:
      out[0] = cpu.efer;
      return;
    case C.MSR_MTRRCAP:
      out[0] = 0x500 | MTRR_VARIABLE; // fixed ranges supported, write-combining, 8 variable ranges
      return;
    default:
      if (isMtrr(index)) {
        const v = cpu.mtrr.get(index);
        if (v) {
          out[0] = v[0];
          out[1] = v[1];
        }
        return;
      }
      for (const h of cpu.msrReadHandlers) if (h(index, out)) return;
      cpu.raiseGp(0);
  }
}

/** WRMSR with the reserved-bit checks real processors apply. */
export function writeMsr(cpu: Cpu, index: number, lo: number, hi: number): void {
  for (const e of cpu.extensions) if (e.wrmsr && e.wrmsr(cpu, index, lo, hi)) return;
  switch (index) {
    case C.MSR_TSC:
      // A TSC write changes TSC_ADJUST by the same amount (SDM Vol. 3 18.17.3).
      cpu.tscOffset = hi * 4294967296 + (lo >>> 0) - (cpu.readTsc() - cpu.tscOffset);
      return;
    case C.MSR_TSC_ADJUST:
      // Signed 64-bit; the TSC moves by the change.
      cpu.tscOffset = (hi | 0) * 4294967296 + (lo >>> 0);
      return;
    case C.MSR_APIC_BASE:
      if (hi & ~0xf || lo & 0x6ff) cpu.raiseGp(0);
      cpu.apicBase = (lo & ~0x100) | (cpu.apicBase & 0x100);
      return;
    case C.MSR_SYSENTER_CS:
      cpu.sysenterCs = lo & 0xffff;
      return;
    case C.MSR_SYSENTER_ESP:
      cpu.sysenterEsp = lo;
      return;
    case C.MSR_SYSENTER_EIP:
      cpu.sysenterEip = lo;
      return;
    case C.MSR_PAT:
      // Each of the 8 entries must be a valid memory type (0, 1, 4, 5, 6, 7).
      for (let i = 0; i < 8; i++) {
        const t = ((i < 4 ? lo : hi) >>> ((i & 3) * 8)) & 0xff;
        if (t === 2 || t === 3 || t > 7) cpu.raiseGp(0);
      }
      cpu.pat[0] = lo;
      cpu.pat[1] = hi;
      return;
    case C.MSR_EFER:
      // Only NXE (bit 11) exists on this CPU (no long mode or SYSCALL yet).
      if (lo & ~0x800 || hi) cpu.raiseGp(0);
      cpu.efer = lo;
      cpu.updatePaging();
      return;
    default:
      if (isMtrr(index)) {
        cpu.mtrr.set(index, [lo, hi & 0xf]);
        return;
      }
      for (const h of cpu.msrWriteHandlers) if (h(index, lo, hi)) return;
      cpu.raiseGp(0);
  }
}
