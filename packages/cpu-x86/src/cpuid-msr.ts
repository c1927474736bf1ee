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
      out[0] = 1;
      out[1] = str4(VENDOR, 0);
      out[3] = str4(VENDOR, 4);
      out[2] = str4(VENDOR, 8);
      break;
    case 1:
      out[0] = CPUID_SIGNATURE;
      out[1] = (cpu.index << 24) | (1 << 16);
      out[3] = CORE_FEATURES_EDX;
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
    case 0x80000008:
      out[0] = 0x2024; // 36 physical address bits, 32 linear
      break;
    default:
      known = false;
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
      cpu.tscOffset = hi * 4294967296 + (lo >>> 0) - (cpu.readTsc() - cpu.tscOffset);
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
