// Architectural constants (Intel SDM Vol. 1 §3.4.3 EFLAGS, Vol. 3 §2.5 CRs, Vol. 3 §6.3 vectors).

/** EFLAGS.CF */
export const CF = 0x1;
/** EFLAGS.PF */
export const PF = 0x4;
/** EFLAGS.AF */
export const AF = 0x10;
/** EFLAGS.ZF */
export const ZF = 0x40;
/** EFLAGS.SF */
export const SF = 0x80;
/** EFLAGS.TF */
export const TF = 0x100;
/** EFLAGS.IF */
export const IF = 0x200;
/** EFLAGS.DF */
export const DF = 0x400;
/** EFLAGS.OF */
export const OF = 0x800;
/** EFLAGS.IOPL (two bits) */
export const IOPL = 0x3000;
/** EFLAGS.NT */
export const NT = 0x4000;
/** EFLAGS.RF */
export const RF = 0x10000;
/** EFLAGS.VM */
export const VM = 0x20000;
/** EFLAGS.AC */
export const AC = 0x40000;
/** EFLAGS.VIF */
export const VIF = 0x80000;
/** EFLAGS.VIP */
export const VIP = 0x100000;
/** EFLAGS.ID */
export const ID = 0x200000;
/** The six arithmetic flags. */
export const ARITH = CF | PF | AF | ZF | SF | OF;

/** CR0.PE */
export const CR0_PE = 1;
/** CR0.MP */
export const CR0_MP = 2;
/** CR0.EM */
export const CR0_EM = 4;
/** CR0.TS */
export const CR0_TS = 8;
/** CR0.ET (hardwired 1 on a CPU with an integrated FPU; we report it as written on reset) */
export const CR0_ET = 0x10;
/** CR0.NE */
export const CR0_NE = 0x20;
/** CR0.WP */
export const CR0_WP = 0x10000;
/** CR0.AM */
export const CR0_AM = 0x40000;
/** CR0.NW */
export const CR0_NW = 0x20000000;
/** CR0.CD */
export const CR0_CD = 0x40000000;
/** CR0.PG */
export const CR0_PG = 0x80000000 | 0;

/** CR4.VME */
export const CR4_VME = 1;
/** CR4.PVI */
export const CR4_PVI = 2;
/** CR4.TSD */
export const CR4_TSD = 4;
/** CR4.DE */
export const CR4_DE = 8;
/** CR4.PSE */
export const CR4_PSE = 0x10;
/** CR4.PAE */
export const CR4_PAE = 0x20;
/** CR4.MCE */
export const CR4_MCE = 0x40;
/** CR4.PGE */
export const CR4_PGE = 0x80;
/** CR4.PCE */
export const CR4_PCE = 0x100;
/** CR4.OSFXSR */
export const CR4_OSFXSR = 0x200;
/** CR4.OSXMMEXCPT */
export const CR4_OSXMMEXCPT = 0x400;

/** Exception vectors. */
export const EXC_DE = 0;
/** Debug */
export const EXC_DB = 1;
/** NMI */
export const EXC_NMI = 2;
/** Breakpoint */
export const EXC_BP = 3;
/** Overflow */
export const EXC_OF = 4;
/** BOUND range exceeded */
export const EXC_BR = 5;
/** Invalid opcode */
export const EXC_UD = 6;
/** Device not available */
export const EXC_NM = 7;
/** Double fault */
export const EXC_DF = 8;
/** Invalid TSS */
export const EXC_TS = 10;
/** Segment not present */
export const EXC_NP = 11;
/** Stack-segment fault */
export const EXC_SS = 12;
/** General protection */
export const EXC_GP = 13;
/** Page fault */
export const EXC_PF = 14;
/** x87 floating-point error */
export const EXC_MF = 16;
/** Alignment check */
export const EXC_AC = 17;
/** Machine check */
export const EXC_MC = 18;
/** SIMD floating-point */
export const EXC_XM = 19;

/** Segment register numbers as encoded in instructions. */
export const ES = 0;
/** CS */
export const CS = 1;
/** SS */
export const SS = 2;
/** DS */
export const DS = 3;
/** FS */
export const FS = 4;
/** GS */
export const GS = 5;

/** MSR numbers (Intel SDM Vol. 4). */
export const MSR_TSC = 0x10;
/** IA32_TSC_ADJUST (SDM Vol. 4 table 2-2, address 3BH). */
export const MSR_TSC_ADJUST = 0x3b;
/** IA32_APIC_BASE */
export const MSR_APIC_BASE = 0x1b;
/** IA32_SYSENTER_CS */
export const MSR_SYSENTER_CS = 0x174;
/** IA32_SYSENTER_ESP */
export const MSR_SYSENTER_ESP = 0x175;
/** IA32_SYSENTER_EIP */
export const MSR_SYSENTER_EIP = 0x176;
/** IA32_MISC_ENABLE */
export const MSR_MISC_ENABLE = 0x1a0;
/** IA32_PAT */
export const MSR_PAT = 0x277;
/** IA32_EFER */
export const MSR_EFER = 0xc0000080 | 0;
/** IA32_MTRRCAP */
export const MSR_MTRRCAP = 0xfe;
/** IA32_MTRR_DEF_TYPE */
export const MSR_MTRR_DEF_TYPE = 0x2ff;

/** Parity of each byte value: PF's bit when the byte has an even number of set bits (the interpreter and the block compiler). */
export const PARITY = new Uint8Array(256);
for (let i = 0; i < 256; i++) {
  let b = i;
  b ^= b >> 4;
  b ^= b >> 2;
  b ^= b >> 1;
  PARITY[i] = (b & 1) === 0 ? PF : 0;
}
