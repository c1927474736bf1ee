import type { AccessSize, LegacyInterruptController } from "@typevisor/hv-core";
import { Mmu, PAGE_FAULT, type PhysicalMemory } from "@typevisor/mmu-ept";
import * as C from "./constants.js";
import type { CpuExtension } from "./extensions.js";
import { exec0F } from "./ops-0f.js";
import * as Sys from "./system.js";

/** Thrown (one preallocated instance) to unwind an instruction that raised an exception; the vector is in {@link Cpu.excVector}. */
export class CpuExceptionSignal {
  /** Marker. */
  readonly isCpuException = true;
}

/** The exception signal the CPU throws internally. */
export const CPU_EXCEPTION = new CpuExceptionSignal();

/** What a vCPU needs from its machine: port I/O, time, the PIC, and where shutdowns go. */
export interface CpuHost {
  /** The port-I/O bus (trap-and-emulate exit for IN/OUT/INS/OUTS). */
  readonly ports: { read(port: number, size: AccessSize): number; write(port: number, size: AccessSize, value: number): void };
  /** Virtual time in ns (RDTSC), excluding instructions retired in the current slice. */
  now(): number;
  /** Virtual ns per instruction when time is deterministic (RDTSC adds in-slice progress), else 0. */
  readonly nsPerInstruction: number;
  /** The legacy PIC (INTR source), looked up when needed because the platform may attach after the CPU. */
  legacyPic(): LegacyInterruptController | undefined;
  /** A triple fault happened (shutdown cycle): the machine stops or resets. */
  shutdown(reason: string): void;
}

/** A CPUID leaf a plugin claims (trap-and-emulate exit for leaves the model does not define). */
export type CpuidHandler = (leaf: number, subleaf: number, out: Int32Array) => boolean;
/** An MSR read a plugin claims; writes `out[0]` (lo) and `out[1]` (hi). */
export type MsrReadHandler = (index: number, out: Int32Array) => boolean;
/** An MSR write a plugin claims. */
export type MsrWriteHandler = (index: number, lo: number, hi: number) => boolean;

/** Byte offset of each 8-bit register (AL CL DL BL AH CH DH BH) in the register file. */
const REG8 = new Int32Array([0, 4, 8, 12, 1, 5, 9, 13]);
/** Parity of each byte value (PF = 1 for an even number of set bits). */
const PARITY = new Uint8Array(256);
for (let i = 0; i < 256; i++) {
  let b = i;
  b ^= b >> 4;
  b ^= b >> 2;
  b ^= b >> 1;
  PARITY[i] = (b & 1) === 0 ? C.PF : 0;
}
const SIGN = [0x80, 0x8000, 0x80000000 | 0];
const MASK = [0xff, 0xffff, -1];

// Lazy flag operations.
const OP_LOGIC = 0;
const OP_ADD = 1;
const OP_ADC = 2;
const OP_SUB = 3;
const OP_SBB = 4;

/** Options of a {@link Cpu}. */
export interface CpuOptions {
  /** vCPU index (APIC ID). */
  index?: number;
  /** What to do on a triple fault: stop the machine with reason `shutdown` (default) or reset it. */
  onTripleFault?: "shutdown" | "reset";
}

/**
 * One x86 vCPU: the interpreter. Registers live in an Int32Array (16
 * entries so REX registers fit; 64-bit registers will be hi/lo pairs in
 * `regsHi`), flags are computed lazily from the last arithmetic operation,
 * dispatch is a switch per opcode map, and nothing allocates per instruction.
 *
 * Exceptions unwind with a preallocated signal and are delivered at the
 * instruction boundary with the architectural double-fault and triple-fault
 * rules. Instructions check every destination before they change state, so
 * a faulting instruction restarts cleanly.
 */
export class Cpu {
  /** vCPU index. */
  readonly index: number;
  /** The memory management unit (paging + EPT + TLB). */
  readonly mmu: Mmu;
  /** General-purpose registers (low 32 bits): EAX ECX EDX EBX ESP EBP ESI EDI, R8-R15. */
  readonly regs = new Int32Array(16);
  /** High halves of the 64-bit registers (long mode). */
  readonly regsHi = new Int32Array(16);
  /** Byte view of {@link Cpu.regs}. */
  readonly r8 = new Uint8Array(this.regs.buffer);
  /** 16-bit view of {@link Cpu.regs}. */
  readonly r16 = new Uint16Array(this.regs.buffer);
  /** Instruction pointer (offset in CS). */
  eip = 0;

  // EFLAGS: `flags` holds every bit except the arithmetic ones listed in `lazy`,
  // which are computed from the last operation (fOp, fA, fB, fR, fS, fC) on demand.
  /** Materialized EFLAGS bits. */
  flags = 2;
  /** Arithmetic flags to compute lazily. */
  lazy = 0;
  /** @internal */ fOp = 0;
  /** @internal */ fA = 0;
  /** @internal */ fB = 0;
  /** @internal */ fR = 0;
  /** @internal */ fS = 2;
  /** @internal */ fC = 0;

  // Segment registers ES CS SS DS FS GS: visible selector and hidden cache.
  /** Selectors. */
  readonly segSel = new Int32Array(6);
  /** Bases. */
  readonly segBase = new Int32Array(6);
  /** Limits (byte granular, as uint32 stored in int32). */
  readonly segLimit = new Int32Array(6);
  /** Attributes: descriptor bits 40..47 in bits 0..7, bits 52..55 (AVL, L, D/B, G) in bits 12..15; bit 16 = unusable (null). */
  readonly segAttr = new Int32Array(6);
  /** 1 when accesses through the segment need no checks (flat, readable, writable). */
  readonly segFast = new Uint8Array(6);
  /** LDTR selector/base/limit/attributes. */
  ldtrSel = 0;
  /** LDTR base. */
  ldtrBase = 0;
  /** LDTR limit. */
  ldtrLimit = 0xffff;
  /** LDTR attributes. */
  ldtrAttr = 0x82;
  /** TR selector. */
  trSel = 0;
  /** TR base. */
  trBase = 0;
  /** TR limit. */
  trLimit = 0xffff;
  /** TR attributes (type 11 busy 32-bit TSS by default). */
  trAttr = 0x8b;
  /** GDTR base. */
  gdtBase = 0;
  /** GDTR limit. */
  gdtLimit = 0xffff;
  /** IDTR base. */
  idtBase = 0;
  /** IDTR limit. */
  idtLimit = 0x3ff;

  /** CR0. */
  cr0 = 0x60000010;
  /** CR2 (page-fault address). */
  cr2 = 0;
  /** CR3. */
  cr3 = 0;
  /** CR4. */
  cr4 = 0;
  /** Debug registers DR0-DR7. */
  readonly dr = new Int32Array(8);
  /** IA32_EFER (low half). */
  efer = 0;
  /** Current privilege level. */
  cpl = 0;
  /** CS.D: default 32-bit operands and addresses. */
  code32 = false;
  /** SS.B: 32-bit stack pointer. */
  stack32 = false;

  // MSR state.
  /** IA32_SYSENTER_CS. */
  sysenterCs = 0;
  /** IA32_SYSENTER_ESP. */
  sysenterEsp = 0;
  /** IA32_SYSENTER_EIP. */
  sysenterEip = 0;
  /** IA32_PAT (lo, hi). */
  readonly pat = new Int32Array([0x00070406, 0x00070406]);
  /** IA32_APIC_BASE low half (BSP flag, enable, base 0xFEE00000). */
  apicBase = 0;
  /** MTRR MSRs by index (fixed and variable ranges, default type). */
  readonly mtrr = new Map<number, [number, number]>();
  /** TSC offset in TSC ticks (IA32_TSC writes). */
  tscOffset = 0;

  /** True while halted (HLT), waiting for an interrupt. */
  halted = false;
  /** An application processor waiting for a startup IPI. */
  waitingForSipi = false;
  /** Non-zero when the run loop must look at interrupts, exits or single-step before the next instruction. */
  attention = 1;
  /** @internal an exit was requested */
  exitRequested = false;
  /** Interrupt shadow (MOV SS, POP SS, STI): the next instruction runs before interrupts are taken. */
  shadow = 0;
  /** NMI pending. */
  nmiPending = false;
  /** NMIs blocked until the next IRET. */
  nmiBlocked = false;
  /** Instructions retired since reset. */
  instructions = 0;
  /** Instructions retired in the current slice (RDTSC in deterministic mode). */
  sliceCount = 0;

  // Exception being raised.
  /** Vector of the exception being raised. */
  excVector = 0;
  /** Its error code. */
  excCode = 0;
  /** Whether it pushes an error code. */
  excHasCode = false;
  /** @internal vector being delivered (for #DF), -1 when none */
  delivering = -1;

  // Per-instruction decode state.
  /** EIP at the start of the current instruction. */
  instrStart = 0;
  /** ESP at the start of the current instruction (restored when it faults). */
  instrEsp = 0;
  /** Operand size is 32 bits. */
  o32 = false;
  /** Address size is 32 bits. */
  a32 = false;
  /** Segment override, or -1. */
  segOvr = -1;
  /** REP prefix: 0 none, 1 REP/REPE (F3), 2 REPNE (F2). */
  rep = 0;
  /** LOCK prefix present. */
  lock = false;
  /** REX prefix (long mode; always 0 in legacy modes). */
  rex = 0;
  /** ModRM byte of the current instruction. */
  modrm = 0;
  /** ModRM.mod. */
  mod = 0;
  /** ModRM.reg (with REX.R). */
  reg = 0;
  /** ModRM.rm (with REX.B). */
  rm = 0;
  /** Segment of the memory operand. */
  eaSeg = 0;
  /** Offset of the memory operand. */
  eaOff = 0;

  /** Extension units (FPU, SIMD, APIC). */
  readonly extensions: CpuExtension[] = [];
  /** The unit handling x87 escapes, if any. */
  x87: CpuExtension | undefined;
  /** CPUID leaves claimed by plugins. */
  readonly cpuidHandlers: CpuidHandler[] = [];
  /** MSR reads claimed by plugins. */
  readonly msrReadHandlers: MsrReadHandler[] = [];
  /** MSR writes claimed by plugins. */
  readonly msrWriteHandlers: MsrWriteHandler[] = [];
  /**
   * Intercepts INT n before delivery (an exit for user-mode emulation, e.g.
   * Linux `int 0x80` system calls in tests); return true when handled.
   */
  softIntHook: ((vector: number) => boolean) | undefined;
  /** Trap-and-emulate exit counters. */
  readonly exits = { io: 0, mmio: 0, hlt: 0, cpuid: 0, msr: 0, shutdown: 0 };
  /** Scratch for 64-bit values (lo, hi). */
  readonly tmp64 = new Int32Array(2);
  /** @internal */
  readonly onTripleFault: "shutdown" | "reset";

  /**
   * @param memory - guest-physical memory
   * @param host - ports, time, PIC and shutdown of the machine
   * @param options - index and triple-fault policy
   */
  constructor(
    readonly memory: PhysicalMemory,
    readonly host: CpuHost,
    options: CpuOptions = {},
  ) {
    this.index = options.index ?? 0;
    this.onTripleFault = options.onTripleFault ?? "shutdown";
    this.mmu = new Mmu(memory);
    this.mmu.mmioHook = () => {
      this.exits.mmio++;
      this.attention = 1;
    };
    this.reset();
  }

  /** Adds an extension unit (FPU, SIMD, APIC). */
  addExtension(ext: CpuExtension): void {
    this.extensions.push(ext);
    if (ext.escape) this.x87 = ext;
  }

  // ---------------------------------------------------------------- reset

  /** Power-on/RESET state (Intel SDM Vol. 3 §10.1.1, table 10-1). */
  reset(): void {
    this.regs.fill(0);
    this.regsHi.fill(0);
    this.regs[2] = 0x00000600 | 0x63; // EDX: family 6, model 6 (the signature CPUID leaf 1 reports)
    this.flags = 2;
    this.lazy = 0;
    this.eip = 0xfff0;
    for (let s = 0; s < 6; s++) this.setSegCache(s, 0, 0, 0xffff, 0x93);
    this.setSegCache(C.CS, 0xf000, 0xffff0000 | 0, 0xffff, 0x9b);
    this.gdtBase = 0;
    this.gdtLimit = 0xffff;
    this.idtBase = 0;
    this.idtLimit = 0x3ff;
    this.ldtrSel = 0;
    this.ldtrBase = 0;
    this.ldtrLimit = 0xffff;
    this.ldtrAttr = 0x82;
    this.trSel = 0;
    this.trBase = 0;
    this.trLimit = 0xffff;
    this.trAttr = 0x8b;
    this.cr0 = 0x60000010;
    this.cr2 = 0;
    this.cr3 = 0;
    this.cr4 = 0;
    this.efer = 0;
    this.dr.fill(0);
    this.dr[6] = 0xffff0ff0 | 0;
    this.dr[7] = 0x400;
    this.cpl = 0;
    this.sysenterCs = this.sysenterEsp = this.sysenterEip = 0;
    this.pat[0] = this.pat[1] = 0x00070406;
    this.apicBase = 0xfee00000 | 0x800 | (this.index === 0 ? 0x100 : 0);
    this.mtrr.clear();
    this.tscOffset = 0;
    // Application processors wait for a startup IPI after RESET/INIT.
    this.halted = this.index > 0;
    this.waitingForSipi = this.index > 0;
    this.shadow = 0;
    this.nmiPending = false;
    this.nmiBlocked = false;
    this.delivering = -1;
    this.attention = 1;
    this.updatePaging();
    this.updateCpl();
    for (const e of this.extensions) e.reset?.();
  }

  // ---------------------------------------------------------------- segments

  /**
   * Loads a segment register's hidden cache. `attr` holds descriptor bits
   * 40..47 in bits 0..7 and bits 52..55 in bits 12..15 (as {@link Cpu.segAttr}).
   */
  setSegCache(seg: number, sel: number, base: number, limit: number, attr: number): void {
    this.segSel[seg] = sel & 0xffff;
    this.segBase[seg] = base | 0;
    this.segLimit[seg] = limit | 0;
    this.segAttr[seg] = attr;
    this.updateSegFast(seg);
    if (seg === C.CS) this.code32 = (attr & 0x4000) !== 0;
    else if (seg === C.SS) this.stack32 = (attr & 0x4000) !== 0;
  }

  /** @internal */
  updateSegFast(seg: number): void {
    const a = this.segAttr[seg];
    // Fast: usable, data (or, in real/V86 mode, anything), writable, expand-up, 4 GiB limit.
    const usable = (a & 0x10000) === 0;
    const data = (a & 0x18) === 0x10;
    const writable = (a & 2) !== 0;
    const expandUp = (a & 4) === 0;
    this.segFast[seg] = usable && data && writable && expandUp && this.segLimit[seg] === -1 ? 1 : 0;
  }

  /** Real-mode / V86 segment load: base = selector * 16, other cache fields kept (unreal mode) in real mode. */
  loadSegReal(seg: number, sel: number): void {
    sel &= 0xffff;
    this.segSel[seg] = sel;
    this.segBase[seg] = sel << 4;
    if (this.flags & C.VM) {
      // Virtual-8086 segments: 64 KiB, DPL 3, 16-bit (Intel SDM Vol. 3 §20.1.1).
      this.segLimit[seg] = 0xffff;
      this.segAttr[seg] = 0xf3 | (seg === C.CS ? 0x8 : 0);
      if (seg === C.CS) this.code32 = false;
    } else if (seg === C.CS) {
      // Real mode far transfers keep CS a 16-bit, readable/writable data-like segment.
      this.segAttr[seg] = (this.segAttr[seg] & ~0x4000 & ~0x10000) | 0x93;
      this.code32 = false;
    } else {
      this.segAttr[seg] &= ~0x10000;
    }
    if (seg === C.SS) this.stack32 = (this.segAttr[seg] & 0x4000) !== 0;
    this.updateSegFast(seg);
  }

  /** Whether the CPU is in protected mode (CR0.PE) and not virtual-8086. */
  get protectedMode(): boolean {
    return (this.cr0 & C.CR0_PE) !== 0 && (this.flags & C.VM) === 0;
  }

  /** @internal recomputes CPL-dependent state (TLB user/supervisor tags). */
  updateCpl(): void {
    this.mmu.setUser(this.cpl === 3);
  }

  /** @internal pushes CR0/CR3/CR4/EFER into the MMU. */
  updatePaging(): void {
    this.mmu.setPaging(this.cr0, this.cr3, this.cr4, (this.efer & 0x800) !== 0);
  }

  // ---------------------------------------------------------------- exceptions

  /** Raises exception `vector` (no error code). */
  raise(vector: number): never {
    this.excVector = vector;
    this.excHasCode = false;
    this.excCode = 0;
    throw CPU_EXCEPTION;
  }

  /** Raises exception `vector` with error code `code`. */
  raiseCode(vector: number, code: number): never {
    this.excVector = vector;
    this.excHasCode = true;
    this.excCode = code & 0xffff;
    throw CPU_EXCEPTION;
  }

  /** Raises #GP(code). */
  raiseGp(code = 0): never {
    return this.raiseCode(C.EXC_GP, code);
  }

  /** Raises #UD. */
  raiseUd(): never {
    return this.raise(C.EXC_UD);
  }

  // ---------------------------------------------------------------- memory

  /**
   * Linear address of `off` in segment `seg` for an access of `len` bytes,
   * after the segment's type and limit checks (Intel SDM Vol. 3 §5.3).
   */
  lin(seg: number, off: number, len: number, write: boolean): number {
    if (this.segFast[seg] === 1) return (this.segBase[seg] + off) | 0;
    return this.linSlow(seg, off, len, write);
  }

  /** @internal */
  linSlow(seg: number, off: number, len: number, write: boolean): number {
    const a = this.segAttr[seg];
    const vec = seg === C.SS ? C.EXC_SS : C.EXC_GP;
    if (a & 0x10000) this.raiseCode(vec, 0);
    if (this.protectedMode) {
      if (write) {
        if ((a & 0x1a) !== 0x12) this.raiseCode(vec, 0); // not a writable data segment
      } else if ((a & 0x1a) === 0x18) this.raiseCode(vec, 0); // execute-only code
    }
    const o = off >>> 0;
    const end = o + len - 1;
    const limit = this.segLimit[seg] >>> 0;
    if ((a & 0x1c) === 0x14) {
      // Expand-down data: valid offsets are limit+1 .. 0xFFFF (or 0xFFFFFFFF with B set).
      const upper = a & 0x4000 ? 0xffffffff : 0xffff;
      if (o <= limit || end > upper) this.raiseCode(vec, 0);
    } else if (end > limit) this.raiseCode(vec, 0);
    return (this.segBase[seg] + off) | 0;
  }

  /** Reads 1 << size bytes (size 0, 1, 2) at `seg:off`. */
  read(size: number, seg: number, off: number): number {
    if (size === 2) return this.mmu.read32(this.lin(seg, off, 4, false));
    if (size === 1) return this.mmu.read16(this.lin(seg, off, 2, false));
    return this.mmu.read8(this.lin(seg, off, 1, false));
  }

  /** Writes 1 << size bytes at `seg:off`. */
  write(size: number, seg: number, off: number, v: number): void {
    if (size === 2) this.mmu.write32(this.lin(seg, off, 4, true), v);
    else if (size === 1) this.mmu.write16(this.lin(seg, off, 2, true), v);
    else this.mmu.write8(this.lin(seg, off, 1, true), v);
  }

  /** Reads at a linear address. */
  readLin(size: number, la: number): number {
    if (size === 2) return this.mmu.read32(la);
    if (size === 1) return this.mmu.read16(la);
    return this.mmu.read8(la);
  }

  /** Writes at a linear address. */
  writeLin(size: number, la: number, v: number): void {
    if (size === 2) this.mmu.write32(la, v);
    else if (size === 1) this.mmu.write16(la, v);
    else this.mmu.write8(la, v);
  }

  /** Supervisor-mode (implicit) read of a system structure at linear `la` (GDT, IDT, TSS). */
  sysRead32(la: number): number {
    const user = this.cpl === 3;
    if (user) this.mmu.setUser(false);
    try {
      return this.mmu.read32(la);
    } finally {
      if (user) this.mmu.setUser(true);
    }
  }

  /** Supervisor-mode 16-bit read. */
  sysRead16(la: number): number {
    const user = this.cpl === 3;
    if (user) this.mmu.setUser(false);
    try {
      return this.mmu.read16(la);
    } finally {
      if (user) this.mmu.setUser(true);
    }
  }

  /** Supervisor-mode 8-bit read. */
  sysRead8(la: number): number {
    const user = this.cpl === 3;
    if (user) this.mmu.setUser(false);
    try {
      return this.mmu.read8(la);
    } finally {
      if (user) this.mmu.setUser(true);
    }
  }

  /** Supervisor-mode 32-bit write (accessed/busy bits, TSS). */
  sysWrite32(la: number, v: number): void {
    const user = this.cpl === 3;
    if (user) this.mmu.setUser(false);
    try {
      this.mmu.write32(la, v);
    } finally {
      if (user) this.mmu.setUser(true);
    }
  }

  /** Supervisor-mode 16-bit write. */
  sysWrite16(la: number, v: number): void {
    const user = this.cpl === 3;
    if (user) this.mmu.setUser(false);
    try {
      this.mmu.write16(la, v);
    } finally {
      if (user) this.mmu.setUser(true);
    }
  }

  /** Supervisor-mode 8-bit write. */
  sysWrite8(la: number, v: number): void {
    const user = this.cpl === 3;
    if (user) this.mmu.setUser(false);
    try {
      this.mmu.write8(la, v);
    } finally {
      if (user) this.mmu.setUser(true);
    }
  }

  // ---------------------------------------------------------------- fetch

  /** Fetches the next instruction byte. */
  fetch8(): number {
    const eip = this.eip;
    if (this.segFast[C.CS] === 0 && eip >>> 0 > this.segLimit[C.CS] >>> 0) this.raiseGp(0);
    const v = this.mmu.fetch8((this.segBase[C.CS] + eip) | 0);
    this.eip = this.code32 ? (eip + 1) | 0 : (eip + 1) & 0xffff;
    return v;
  }

  /** Fetches a sign-extended byte. */
  fetchS8(): number {
    return (this.fetch8() << 24) >> 24;
  }

  /** Fetches a 16-bit immediate. */
  fetch16(): number {
    return this.fetch8() | (this.fetch8() << 8);
  }

  /** Fetches a 32-bit immediate. */
  fetch32(): number {
    return this.fetch8() | (this.fetch8() << 8) | (this.fetch8() << 16) | (this.fetch8() << 24);
  }

  /** Fetches an immediate of operand size (16 or 32 bits). */
  fetchImmV(): number {
    return this.o32 ? this.fetch32() : this.fetch16();
  }

  /** Fetches an immediate of size `size` (0, 1, 2). */
  fetchImm(size: number): number {
    return size === 2 ? this.fetch32() : size === 1 ? this.fetch16() : this.fetch8();
  }

  // ---------------------------------------------------------------- registers

  /** Reads register `idx` of size `size` (0 = 8-bit, 1 = 16-bit, 2 = 32-bit). */
  getReg(size: number, idx: number): number {
    if (size === 2) return this.regs[idx];
    if (size === 1) return this.r16[idx << 1];
    return this.r8[REG8[idx]];
  }

  /** Writes register `idx` of size `size`. */
  setReg(size: number, idx: number, v: number): void {
    if (size === 2) this.regs[idx] = v;
    else if (size === 1) this.r16[idx << 1] = v;
    else this.r8[REG8[idx]] = v;
  }

  // ---------------------------------------------------------------- ModRM

  /** Fetches a ModRM byte and decodes its memory operand (if any) into eaSeg/eaOff. */
  decodeModrm(): void {
    const m = this.fetch8();
    this.modrm = m;
    this.mod = m >> 6;
    this.reg = (m >> 3) & 7;
    this.rm = m & 7;
    if (this.mod !== 3) this.decodeEa();
  }

  /** @internal */
  decodeEa(): void {
    const mod = this.mod;
    const rm = this.rm;
    const regs = this.regs;
    let seg = C.DS;
    let off: number;
    if (this.a32) {
      if (rm === 4) {
        const sib = this.fetch8();
        const base = sib & 7;
        const idx = (sib >> 3) & 7;
        if (base === 5 && mod === 0) off = this.fetch32();
        else {
          off = regs[base];
          if (base === 4 || base === 5) seg = C.SS;
        }
        if (idx !== 4) off = (off + (regs[idx] << (sib >> 6))) | 0;
      } else if (rm === 5 && mod === 0) {
        off = this.fetch32();
      } else {
        off = regs[rm];
        if (rm === 5) seg = C.SS;
      }
      if (mod === 1) off = (off + this.fetchS8()) | 0;
      else if (mod === 2) off = (off + this.fetch32()) | 0;
    } else {
      const r16 = this.r16;
      switch (rm) {
        case 0:
          off = r16[6] + r16[12];
          break;
        case 1:
          off = r16[6] + r16[14];
          break;
        case 2:
          off = r16[10] + r16[12];
          seg = C.SS;
          break;
        case 3:
          off = r16[10] + r16[14];
          seg = C.SS;
          break;
        case 4:
          off = r16[12];
          break;
        case 5:
          off = r16[14];
          break;
        case 6:
          if (mod === 0) off = this.fetch16();
          else {
            off = r16[10];
            seg = C.SS;
          }
          break;
        default:
          off = r16[6];
      }
      if (mod === 1) off += this.fetchS8();
      else if (mod === 2) off += this.fetch16();
      off &= 0xffff;
    }
    this.eaSeg = this.segOvr >= 0 ? this.segOvr : seg;
    this.eaOff = off;
  }

  /** Reads the ModRM r/m operand. */
  readRm(size: number): number {
    if (this.mod === 3) return this.getReg(size, this.rm);
    return this.read(size, this.eaSeg, this.eaOff);
  }

  /** Writes the ModRM r/m operand. */
  writeRm(size: number, v: number): void {
    if (this.mod === 3) this.setReg(size, this.rm, v);
    else this.write(size, this.eaSeg, this.eaOff, v);
  }

  /** Linear address of the memory operand, checked for a write of `len` bytes and probed in the TLB (read-modify-write). */
  rmwLin(size: number): number {
    const len = 1 << size;
    const la = this.lin(this.eaSeg, this.eaOff, len, true);
    this.mmu.probeWrite(la, len);
    return la;
  }

  // ---------------------------------------------------------------- flags

  /** @internal */
  getCF(): number {
    if ((this.lazy & C.CF) === 0) return this.flags & C.CF;
    const m = MASK[this.fS];
    switch (this.fOp) {
      case OP_ADD:
        return (this.fR & m) >>> 0 < (this.fA & m) >>> 0 ? 1 : 0;
      case OP_ADC: {
        const r = (this.fR & m) >>> 0;
        const a = (this.fA & m) >>> 0;
        return (this.fC ? r <= a : r < a) ? 1 : 0;
      }
      case OP_SUB:
        return (this.fA & m) >>> 0 < (this.fB & m) >>> 0 ? 1 : 0;
      case OP_SBB: {
        const a = (this.fA & m) >>> 0;
        const b = (this.fB & m) >>> 0;
        return (this.fC ? a <= b : a < b) ? 1 : 0;
      }
      default:
        return 0;
    }
  }

  /** @internal */
  getOF(): boolean {
    if ((this.lazy & C.OF) === 0) return (this.flags & C.OF) !== 0;
    const s = SIGN[this.fS];
    switch (this.fOp) {
      case OP_ADD:
      case OP_ADC:
        return ((this.fA ^ this.fR) & (this.fB ^ this.fR) & s) !== 0;
      case OP_SUB:
      case OP_SBB:
        return ((this.fA ^ this.fB) & (this.fA ^ this.fR) & s) !== 0;
      default:
        return false;
    }
  }

  /** @internal */
  getZF(): boolean {
    if ((this.lazy & C.ZF) === 0) return (this.flags & C.ZF) !== 0;
    return (this.fR & MASK[this.fS]) === 0;
  }

  /** @internal */
  getSF(): boolean {
    if ((this.lazy & C.SF) === 0) return (this.flags & C.SF) !== 0;
    return (this.fR & SIGN[this.fS]) !== 0;
  }

  /** @internal */
  getPF(): boolean {
    if ((this.lazy & C.PF) === 0) return (this.flags & C.PF) !== 0;
    return PARITY[this.fR & 0xff] !== 0;
  }

  /** @internal */
  getAF(): boolean {
    if ((this.lazy & C.AF) === 0) return (this.flags & C.AF) !== 0;
    if (this.fOp === OP_LOGIC) return false;
    return ((this.fA ^ this.fB ^ this.fR) & 0x10) !== 0;
  }

  /** The full EFLAGS value. */
  getFlags(): number {
    if (this.lazy === 0) return this.flags;
    let f = this.flags & ~this.lazy;
    const l = this.lazy;
    if (l & C.CF) f |= this.getCF();
    if (l & C.PF && this.getPF()) f |= C.PF;
    if (l & C.AF && this.getAF()) f |= C.AF;
    if (l & C.ZF && this.getZF()) f |= C.ZF;
    if (l & C.SF && this.getSF()) f |= C.SF;
    if (l & C.OF && this.getOF()) f |= C.OF;
    return f;
  }

  /** Replaces the arithmetic flags selected by `mask` with those of `value`. */
  setArith(value: number, mask: number): void {
    this.flags = (this.getFlags() & ~mask) | (value & mask);
    this.lazy = 0;
  }

  /** Sets all EFLAGS bits (callers mask what the instruction may change). */
  setFlagsRaw(value: number): void {
    this.flags = (value & 0x3f7fd5) | 2;
    this.lazy = 0;
  }

  /** @internal materializes CF so an operation that keeps it (INC, DEC) can reuse the lazy state. */
  keepCF(): void {
    if (this.lazy & C.CF) {
      this.flags = (this.flags & ~C.CF) | this.getCF();
    }
  }

  /** Evaluates condition code `cc` (Jcc/SETcc/CMOVcc low nibble). */
  cond(cc: number): boolean {
    let r: boolean;
    switch (cc >> 1) {
      case 0:
        r = this.getOF();
        break;
      case 1:
        r = this.getCF() !== 0;
        break;
      case 2:
        r = this.getZF();
        break;
      case 3:
        r = this.getCF() !== 0 || this.getZF();
        break;
      case 4:
        r = this.getSF();
        break;
      case 5:
        r = this.getPF();
        break;
      case 6:
        r = this.getSF() !== this.getOF();
        break;
      default:
        r = this.getZF() || this.getSF() !== this.getOF();
    }
    return (cc & 1) === 0 ? r : !r;
  }

  // ---------------------------------------------------------------- ALU

  /** ALU operation `op` (ADD OR ADC SBB AND SUB XOR CMP) on `a`, `b` of size `s`; sets flags, returns the result. */
  alu(op: number, a: number, b: number, s: number): number {
    let r: number;
    switch (op) {
      case 0:
        r = (a + b) | 0;
        this.fOp = OP_ADD;
        break;
      case 1:
        r = a | b;
        this.fOp = OP_LOGIC;
        break;
      case 2: {
        const c = this.getCF();
        r = (a + b + c) | 0;
        this.fC = c;
        this.fOp = OP_ADC;
        break;
      }
      case 3: {
        const c = this.getCF();
        r = (a - b - c) | 0;
        this.fC = c;
        this.fOp = OP_SBB;
        break;
      }
      case 4:
        r = a & b;
        this.fOp = OP_LOGIC;
        break;
      case 6:
        r = a ^ b;
        this.fOp = OP_LOGIC;
        break;
      default: // 5 SUB, 7 CMP
        r = (a - b) | 0;
        this.fOp = OP_SUB;
    }
    this.fA = a;
    this.fB = b;
    this.fR = r;
    this.fS = s;
    this.lazy = C.ARITH;
    return r;
  }

  /** Sets flags for a logical result `r` of size `s` (CF = OF = 0). */
  logic(r: number, s: number): void {
    this.fOp = OP_LOGIC;
    this.fA = 0;
    this.fB = 0;
    this.fR = r;
    this.fS = s;
    this.lazy = C.ARITH;
  }

  /** INC: CF unchanged. */
  inc(a: number, s: number): number {
    this.keepCF();
    const r = (a + 1) | 0;
    this.fOp = OP_ADD;
    this.fA = a;
    this.fB = 1;
    this.fR = r;
    this.fS = s;
    this.lazy = C.ARITH & ~C.CF;
    return r;
  }

  /** DEC: CF unchanged. */
  dec(a: number, s: number): number {
    this.keepCF();
    const r = (a - 1) | 0;
    this.fOp = OP_SUB;
    this.fA = a;
    this.fB = 1;
    this.fR = r;
    this.fS = s;
    this.lazy = C.ARITH & ~C.CF;
    return r;
  }

  /** Sets SF/ZF/PF lazily from `r` and the given CF/OF/AF bits directly (shifts, multiplies, BCD). */
  resultFlags(r: number, s: number, direct: number): void {
    this.flags = (this.flags & ~(C.CF | C.OF | C.AF | C.ZF | C.SF | C.PF)) | direct;
    this.fOp = OP_LOGIC;
    this.fR = r;
    this.fS = s;
    this.lazy = C.ZF | C.SF | C.PF;
  }

  /** Shift/rotate group 2: operation `op` (ROL ROR RCL RCR SHL SHR SAL SAR) of `v` by `count`. */
  shift(op: number, v: number, count: number, s: number): number {
    count &= 0x1f;
    if (count === 0) return v;
    const bits = 8 << s;
    const m = MASK[s];
    v &= m;
    let r: number;
    let cf: number;
    let of: number;
    switch (op) {
      case 0: {
        // ROL
        const c = count & (bits - 1);
        r = c === 0 ? v : ((v << c) | (v >>> (bits - c))) & m;
        cf = r & 1;
        of = ((r >>> (bits - 1)) & 1) ^ cf;
        this.setArith((cf ? C.CF : 0) | (of ? C.OF : 0), C.CF | C.OF);
        return r;
      }
      case 1: {
        // ROR
        const c = count & (bits - 1);
        r = c === 0 ? v : ((v >>> c) | (v << (bits - c))) & m;
        cf = (r >>> (bits - 1)) & 1;
        of = cf ^ ((r >>> (bits - 2)) & 1);
        this.setArith((cf ? C.CF : 0) | (of ? C.OF : 0), C.CF | C.OF);
        return r;
      }
      case 2: {
        // RCL through CF: a (bits+1)-bit rotation.
        const c = s === 2 ? count : count % (bits + 1);
        cf = this.getCF();
        r = v;
        for (let i = 0; i < c; i++) {
          const out = (r >>> (bits - 1)) & 1;
          r = ((r << 1) | cf) & m;
          cf = out;
        }
        of = ((r >>> (bits - 1)) & 1) ^ cf;
        this.setArith((cf ? C.CF : 0) | (of ? C.OF : 0), C.CF | C.OF);
        return r;
      }
      case 3: {
        // RCR
        const c = s === 2 ? count : count % (bits + 1);
        cf = this.getCF();
        r = v;
        of = ((r >>> (bits - 1)) & 1) ^ cf; // defined for count 1: MSB(dest) XOR CF, before rotating
        for (let i = 0; i < c; i++) {
          const out = r & 1;
          r = ((r >>> 1) | (cf << (bits - 1))) & m;
          cf = out;
        }
        this.setArith((cf ? C.CF : 0) | (of ? C.OF : 0), C.CF | C.OF);
        return r;
      }
      case 4:
      case 6: {
        // SHL/SAL
        if (count < bits) {
          r = (v << count) & m;
          cf = (v >>> (bits - count)) & 1;
        } else {
          r = 0;
          cf = count === bits ? v & 1 : 0;
        }
        of = ((r >>> (bits - 1)) & 1) ^ cf;
        this.resultFlags(r, s, (cf ? C.CF : 0) | (of ? C.OF : 0));
        return r;
      }
      case 5: {
        // SHR
        if (count < bits) {
          r = v >>> count;
          cf = (v >>> (count - 1)) & 1;
        } else {
          r = 0;
          cf = count === bits ? (v >>> (bits - 1)) & 1 : 0;
        }
        of = count === 1 ? (v >>> (bits - 1)) & 1 : 0;
        this.resultFlags(r, s, (cf ? C.CF : 0) | (of ? C.OF : 0));
        return r;
      }
      default: {
        // SAR
        const sv = (v << (32 - bits)) >> (32 - bits);
        const c = count < bits ? count : bits - 1;
        r = (sv >> c) & m;
        cf = count < bits ? (sv >> (count - 1)) & 1 : sv < 0 ? 1 : 0;
        this.resultFlags(r, s, cf ? C.CF : 0);
        return r;
      }
    }
  }

  /** SHLD/SHRD: double-precision shift of `dst` with bits from `src`. */
  shiftDouble(left: boolean, dst: number, src: number, count: number, s: number): number {
    count &= 0x1f;
    if (count === 0) return dst;
    const bits = 8 << s;
    const m = MASK[s];
    dst &= m;
    src &= m;
    let r: number;
    let cf: number;
    if (s === 2) {
      if (left) {
        r = (dst << count) | (src >>> (32 - count));
        cf = (dst >>> (32 - count)) & 1;
      } else {
        r = (dst >>> count) | (src << (32 - count));
        cf = (dst >>> (count - 1)) & 1;
      }
    } else if (count <= 16) {
      if (left) {
        r = (dst << count) | (src >>> (16 - count));
        cf = (dst >>> (16 - count)) & 1;
      } else {
        r = (dst >>> count) | (src << (16 - count));
        cf = (dst >>> (count - 1)) & 1;
      }
    } else {
      // 16-bit count 17..31: the result is undefined; we rotate through the 32-bit value src:dst like common hardware.
      const c = count - 16;
      if (left) {
        r = (src << c) | (dst >>> (16 - c));
        cf = (src >>> (16 - c)) & 1;
      } else {
        r = (src >>> c) | (dst << (16 - c));
        cf = (src >>> (c - 1)) & 1;
      }
    }
    r &= m;
    const of = ((r ^ dst) >>> (bits - 1)) & 1;
    this.resultFlags(r, s, (cf ? C.CF : 0) | (of ? C.OF : 0));
    return r;
  }

  // ---------------------------------------------------------------- stack

  /** Pushes a value of size `size` (1 = 16-bit, 2 = 32-bit). */
  push(size: number, v: number): void {
    const esp = this.regs[4];
    const n = size === 2 ? 4 : 2;
    if (this.stack32) {
      const ne = (esp - n) | 0;
      this.write(size, C.SS, ne, v);
      this.regs[4] = ne;
    } else {
      const ne = (esp - n) & 0xffff;
      this.write(size, C.SS, ne, v);
      this.r16[8] = ne;
    }
  }

  /** Pops a value of size `size` (1 or 2). */
  pop(size: number): number {
    const esp = this.regs[4];
    const n = size === 2 ? 4 : 2;
    if (this.stack32) {
      const v = this.read(size, C.SS, esp);
      this.regs[4] = (esp + n) | 0;
      return v;
    }
    const v = this.read(size, C.SS, esp & 0xffff);
    this.r16[8] = (esp + n) & 0xffff;
    return v;
  }

  /** Reads the stack `depth` bytes above the top without popping. */
  peek(size: number, depth: number): number {
    const esp = this.regs[4];
    return this.read(size, C.SS, this.stack32 ? (esp + depth) | 0 : (esp + depth) & 0xffff);
  }

  /** The stack pointer as the stack size sees it. */
  get sp(): number {
    return this.stack32 ? this.regs[4] : this.regs[4] & 0xffff;
  }

  /** Adds `n` to the stack pointer respecting the stack size. */
  addSp(n: number): void {
    if (this.stack32) this.regs[4] = (this.regs[4] + n) | 0;
    else this.r16[8] = (this.regs[4] + n) & 0xffff;
  }

  // ---------------------------------------------------------------- I/O

  /** Port read with the protected-mode I/O permission check (Intel SDM Vol. 1 §19.5). */
  portIn(port: number, size: number): number {
    this.checkIo(port, 1 << size);
    this.exits.io++;
    this.attention = 1;
    return this.host.ports.read(port, (1 << size) as AccessSize);
  }

  /** Port write with the I/O permission check. */
  portOut(port: number, size: number, v: number): void {
    this.checkIo(port, 1 << size);
    this.exits.io++;
    this.attention = 1;
    this.host.ports.write(port, (1 << size) as AccessSize, size === 2 ? v >>> 0 : v & MASK[size]);
  }

  /** @internal #GP(0) unless CPL <= IOPL or the TSS I/O bitmap allows every byte of the access. */
  checkIo(port: number, len: number): void {
    if ((this.cr0 & C.CR0_PE) === 0) return;
    const vm = (this.flags & C.VM) !== 0;
    if (!vm && this.cpl <= (this.flags & C.IOPL) >> 12) return;
    Sys.checkIoBitmap(this, port, len);
  }

  // ---------------------------------------------------------------- execution

  /** Executes one instruction (prefixes included). */
  step(): void {
    this.instrStart = this.eip;
    this.instrEsp = this.regs[4];
    this.o32 = this.code32;
    this.a32 = this.code32;
    this.segOvr = -1;
    this.rep = 0;
    this.lock = false;
    let prefixes = 0;
    for (;;) {
      const op = this.fetch8();
      switch (op) {
        case 0x26:
        case 0x2e:
        case 0x36:
        case 0x3e:
          this.segOvr = (op >> 3) & 3;
          break;
        case 0x64:
        case 0x65:
          this.segOvr = op - 0x60;
          break;
        case 0x66:
          this.o32 = !this.code32;
          break;
        case 0x67:
          this.a32 = !this.code32;
          break;
        case 0xf0:
          this.lock = true;
          break;
        case 0xf2:
          this.rep = 2;
          break;
        case 0xf3:
          this.rep = 1;
          break;
        default:
          if (this.lock) this.checkLockable(op);
          this.execute(op);
          return;
      }
      if (++prefixes >= 14) this.raiseGp(0); // instruction longer than 15 bytes
    }
  }

  /** @internal executes one-byte opcode `op` after its prefixes. */
  execute(op: number): void {
    const regs = this.regs;
    const vs = this.o32 ? 2 : 1; // operand size index
    switch (op) {
      // ALU ops 00-3D: op & 7 selects the form.
      case 0x00: case 0x01: case 0x02: case 0x03: case 0x04: case 0x05:
      case 0x08: case 0x09: case 0x0a: case 0x0b: case 0x0c: case 0x0d:
      case 0x10: case 0x11: case 0x12: case 0x13: case 0x14: case 0x15:
      case 0x18: case 0x19: case 0x1a: case 0x1b: case 0x1c: case 0x1d:
      case 0x20: case 0x21: case 0x22: case 0x23: case 0x24: case 0x25:
      case 0x28: case 0x29: case 0x2a: case 0x2b: case 0x2c: case 0x2d:
      case 0x30: case 0x31: case 0x32: case 0x33: case 0x34: case 0x35:
      case 0x38: case 0x39: case 0x3a: case 0x3b: case 0x3c: case 0x3d: {
        const aop = (op >> 3) & 7;
        const form = op & 7;
        const s = form & 1 ? vs : 0;
        if (form >= 4) {
          const imm = this.fetchImm(s);
          const r = this.alu(aop, this.getReg(s, 0), imm, s);
          if (aop !== 7) this.setReg(s, 0, r);
          return;
        }
        this.decodeModrm();
        if (form < 2) {
          // Eb/Ev op= Gb/Gv
          if (this.mod === 3) {
            const r = this.alu(aop, this.getReg(s, this.rm), this.getReg(s, this.reg), s);
            if (aop !== 7) this.setReg(s, this.rm, r);
          } else if (aop === 7) {
            this.alu(7, this.read(s, this.eaSeg, this.eaOff), this.getReg(s, this.reg), s);
          } else {
            const la = this.rmwLin(s);
            const r = this.alu(aop, this.readLin(s, la), this.getReg(s, this.reg), s);
            this.writeLin(s, la, r);
          }
        } else {
          const r = this.alu(aop, this.getReg(s, this.reg), this.readRm(s), s);
          if (aop !== 7) this.setReg(s, this.reg, r);
        }
        return;
      }
      case 0x06: case 0x0e: case 0x16: case 0x1e:
        this.push(vs, this.segSel[op >> 3]);
        return;
      case 0x07: case 0x17: case 0x1f: {
        const seg = op >> 3;
        const sel = this.peek(vs, 0) & 0xffff;
        Sys.loadSeg(this, seg, sel);
        this.addSp(vs === 2 ? 4 : 2);
        if (seg === C.SS) this.shadow = 2;
        return;
      }
      case 0x0f:
        exec0F(this);
        return;
      case 0x27:
        this.daa();
        return;
      case 0x2f:
        this.das();
        return;
      case 0x37:
        this.aaa();
        return;
      case 0x3f:
        this.aas();
        return;
      case 0x40: case 0x41: case 0x42: case 0x43: case 0x44: case 0x45: case 0x46: case 0x47:
        this.setReg(vs, op & 7, this.inc(this.getReg(vs, op & 7), vs));
        return;
      case 0x48: case 0x49: case 0x4a: case 0x4b: case 0x4c: case 0x4d: case 0x4e: case 0x4f:
        this.setReg(vs, op & 7, this.dec(this.getReg(vs, op & 7), vs));
        return;
      case 0x50: case 0x51: case 0x52: case 0x53: case 0x54: case 0x55: case 0x56: case 0x57:
        this.push(vs, this.getReg(vs, op & 7));
        return;
      case 0x58: case 0x59: case 0x5a: case 0x5b: case 0x5c: case 0x5d: case 0x5e: case 0x5f: {
        const v = this.pop(vs);
        this.setReg(vs, op & 7, v);
        return;
      }
      case 0x60: {
        // PUSHA: check the whole destination first so a fault leaves ESP intact.
        const n = vs === 2 ? 4 : 2;
        const orig = regs[4];
        const sp = this.sp;
        const base = this.stack32 ? (sp - 8 * n) | 0 : (sp - 8 * n) & 0xffff;
        this.mmu.probeWrite(this.lin(C.SS, base, 8 * n, true), 8 * n);
        for (let i = 0; i < 8; i++) this.push(vs, i === 4 ? orig : this.getReg(vs, i));
        return;
      }
      case 0x61: {
        const n = vs === 2 ? 4 : 2;
        this.mmu.probeRead(this.lin(C.SS, this.sp, 8 * n, false), 8 * n);
        for (let i = 7; i >= 0; i--) {
          const v = this.pop(vs);
          if (i !== 4) this.setReg(vs, i, v);
        }
        return;
      }
      case 0x62:
        Sys.bound(this);
        return;
      case 0x63:
        Sys.arpl(this);
        return;
      case 0x68:
        this.push(vs, this.fetchImmV());
        return;
      case 0x6a:
        this.push(vs, this.fetchS8());
        return;
      case 0x69:
      case 0x6b: {
        this.decodeModrm();
        const a = this.readRm(vs);
        const b = op === 0x69 ? this.fetchImmV() : this.fetchS8();
        this.setReg(vs, this.reg, this.imul2(a, b, vs));
        return;
      }
      case 0x6c: case 0x6d: case 0x6e: case 0x6f:
      case 0xa4: case 0xa5: case 0xa6: case 0xa7: case 0xaa: case 0xab: case 0xac: case 0xad: case 0xae: case 0xaf:
        this.stringOp(op);
        return;
      case 0x70: case 0x71: case 0x72: case 0x73: case 0x74: case 0x75: case 0x76: case 0x77:
      case 0x78: case 0x79: case 0x7a: case 0x7b: case 0x7c: case 0x7d: case 0x7e: case 0x7f: {
        const d = this.fetchS8();
        if (this.cond(op & 15)) this.jumpRel(d);
        return;
      }
      case 0x80: case 0x81: case 0x82: case 0x83: {
        const s = op & 1 ? vs : 0;
        this.decodeModrm();
        const aop = this.reg;
        if (this.mod === 3) {
          const imm = op === 0x83 ? this.fetchS8() : this.fetchImm(s);
          const r = this.alu(aop, this.getReg(s, this.rm), imm, s);
          if (aop !== 7) this.setReg(s, this.rm, r);
        } else if (aop === 7) {
          const imm = op === 0x83 ? this.fetchS8() : this.fetchImm(s);
          this.alu(7, this.read(s, this.eaSeg, this.eaOff), imm, s);
        } else {
          const imm = op === 0x83 ? this.fetchS8() : this.fetchImm(s);
          const la = this.rmwLin(s);
          const r = this.alu(aop, this.readLin(s, la), imm, s);
          this.writeLin(s, la, r);
        }
        return;
      }
      case 0x84: case 0x85: {
        const s = op & 1 ? vs : 0;
        this.decodeModrm();
        this.logic(this.readRm(s) & this.getReg(s, this.reg), s);
        return;
      }
      case 0x86: case 0x87: {
        const s = op & 1 ? vs : 0;
        this.decodeModrm();
        if (this.mod === 3) {
          const a = this.getReg(s, this.rm);
          this.setReg(s, this.rm, this.getReg(s, this.reg));
          this.setReg(s, this.reg, a);
        } else {
          const la = this.rmwLin(s);
          const a = this.readLin(s, la);
          this.writeLin(s, la, this.getReg(s, this.reg));
          this.setReg(s, this.reg, a);
        }
        return;
      }
      case 0x88:
        this.decodeModrm();
        this.writeRm(0, this.r8[REG8[this.reg]]);
        return;
      case 0x89:
        this.decodeModrm();
        if (this.mod === 3) this.setReg(vs, this.rm, this.getReg(vs, this.reg));
        else this.write(vs, this.eaSeg, this.eaOff, this.getReg(vs, this.reg));
        return;
      case 0x8a:
        this.decodeModrm();
        this.r8[REG8[this.reg]] = this.readRm(0);
        return;
      case 0x8b:
        this.decodeModrm();
        if (vs === 2) regs[this.reg] = this.mod === 3 ? regs[this.rm] : this.read(2, this.eaSeg, this.eaOff);
        else this.setReg(1, this.reg, this.readRm(1));
        return;
      case 0x8c: {
        this.decodeModrm();
        if (this.reg > 5) this.raiseUd();
        const v = this.segSel[this.reg];
        // To a register with 32-bit operand size the upper half is zeroed (modern processors).
        if (this.mod === 3) this.setReg(vs, this.rm, v);
        else this.write(1, this.eaSeg, this.eaOff, v);
        return;
      }
      case 0x8d:
        this.decodeModrm();
        if (this.mod === 3) this.raiseUd();
        this.setReg(vs, this.reg, this.eaOff);
        return;
      case 0x8e: {
        this.decodeModrm();
        if (this.reg === C.CS || this.reg > 5) this.raiseUd();
        const sel = this.readRm(1);
        Sys.loadSeg(this, this.reg, sel);
        if (this.reg === C.SS) this.shadow = 2;
        return;
      }
      case 0x8f: {
        // POP Ev: an ESP-based address uses ESP after the pop (Intel SDM POP), so decode after moving ESP.
        const v = this.peek(vs, 0);
        this.addSp(vs === 2 ? 4 : 2);
        this.decodeModrm();
        if (this.reg !== 0) this.raiseUd();
        this.writeRm(vs, v);
        return;
      }
      case 0x90:
        if (this.rep === 1) this.pauseHint();
        return;
      case 0x91: case 0x92: case 0x93: case 0x94: case 0x95: case 0x96: case 0x97: {
        const a = this.getReg(vs, 0);
        this.setReg(vs, 0, this.getReg(vs, op & 7));
        this.setReg(vs, op & 7, a);
        return;
      }
      case 0x98:
        if (vs === 2) regs[0] = (regs[0] << 16) >> 16;
        else this.r16[0] = (regs[0] << 24) >> 24;
        return;
      case 0x99:
        if (vs === 2) regs[2] = regs[0] >> 31;
        else this.r16[4] = (regs[0] << 16) >> 31;
        return;
      case 0x9a: {
        const off = this.fetchImmV();
        const sel = this.fetch16();
        Sys.farCall(this, sel, off, vs);
        return;
      }
      case 0x9b:
        if ((this.cr0 & (C.CR0_MP | C.CR0_TS)) === (C.CR0_MP | C.CR0_TS)) this.raise(C.EXC_NM);
        this.x87?.wait?.(this);
        return;
      case 0x9c:
        Sys.pushf(this, vs);
        return;
      case 0x9d:
        Sys.popf(this, vs);
        return;
      case 0x9e:
        this.setArith(this.r8[1], C.SF | C.ZF | C.AF | C.PF | C.CF);
        return;
      case 0x9f:
        this.r8[1] = (this.getFlags() & 0xd5) | 2;
        return;
      case 0xa0: case 0xa1: case 0xa2: case 0xa3: {
        const s = op & 1 ? vs : 0;
        const off = this.a32 ? this.fetch32() : this.fetch16();
        const seg = this.segOvr >= 0 ? this.segOvr : C.DS;
        if (op < 0xa2) this.setReg(s, 0, this.read(s, seg, off));
        else this.write(s, seg, off, this.getReg(s, 0));
        return;
      }
      case 0xa8:
        this.logic(this.r8[0] & this.fetch8(), 0);
        return;
      case 0xa9:
        this.logic(this.getReg(vs, 0) & this.fetchImmV(), vs);
        return;
      case 0xb0: case 0xb1: case 0xb2: case 0xb3: case 0xb4: case 0xb5: case 0xb6: case 0xb7:
        this.r8[REG8[op & 7]] = this.fetch8();
        return;
      case 0xb8: case 0xb9: case 0xba: case 0xbb: case 0xbc: case 0xbd: case 0xbe: case 0xbf:
        this.setReg(vs, op & 7, this.fetchImmV());
        return;
      case 0xc0: case 0xc1: case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        const s = op & 1 ? vs : 0;
        this.decodeModrm();
        const count = op < 0xd0 ? this.fetch8() : op < 0xd2 ? 1 : this.r8[4];
        if (this.mod === 3) this.setReg(s, this.rm, this.shift(this.reg, this.getReg(s, this.rm), count, s));
        else {
          const la = this.rmwLin(s);
          const r = this.shift(this.reg, this.readLin(s, la), count, s);
          this.writeLin(s, la, r);
        }
        return;
      }
      case 0xc2: {
        const n = this.fetch16();
        const ip = this.pop(vs);
        this.jumpNear(ip);
        this.addSp(n);
        return;
      }
      case 0xc3:
        this.jumpNear(this.pop(vs));
        return;
      case 0xc4:
      case 0xc5: {
        this.decodeModrm();
        if (this.mod === 3) this.raiseUd();
        const off = this.read(vs, this.eaSeg, this.eaOff);
        const sel = this.read(1, this.eaSeg, (this.eaOff + (vs === 2 ? 4 : 2)) | 0);
        Sys.loadSeg(this, op === 0xc4 ? C.ES : C.DS, sel);
        this.setReg(vs, this.reg, off);
        return;
      }
      case 0xc6:
      case 0xc7: {
        const s = op & 1 ? vs : 0;
        this.decodeModrm();
        if (this.reg !== 0) this.raiseUd();
        this.writeRm(s, this.fetchImm(s));
        return;
      }
      case 0xc8:
        Sys.enter(this, this.fetch16(), this.fetch8() & 31, vs);
        return;
      case 0xc9: {
        // LEAVE: ESP = EBP, pop EBP.
        const v = this.read(vs, C.SS, this.stack32 ? regs[5] : regs[5] & 0xffff);
        if (this.stack32) regs[4] = (regs[5] + (vs === 2 ? 4 : 2)) | 0;
        else this.r16[8] = (regs[5] + (vs === 2 ? 4 : 2)) & 0xffff;
        this.setReg(vs, 5, v);
        return;
      }
      case 0xca:
        Sys.farReturn(this, vs, this.fetch16());
        return;
      case 0xcb:
        Sys.farReturn(this, vs, 0);
        return;
      case 0xcc:
        Sys.softwareInterrupt(this, 3, true);
        return;
      case 0xcd:
        Sys.softwareInterrupt(this, this.fetch8(), false);
        return;
      case 0xce:
        if (this.getOF()) Sys.softwareInterrupt(this, 4, true);
        return;
      case 0xcf:
        Sys.iret(this, vs);
        return;
      case 0xd4: {
        const imm = this.fetch8();
        if (imm === 0) this.raise(C.EXC_DE);
        const al = this.r8[0];
        this.r8[1] = (al / imm) | 0;
        this.r8[0] = al % imm;
        this.resultFlags(this.r8[0], 0, 0);
        return;
      }
      case 0xd5: {
        const imm = this.fetch8();
        const r = (this.r8[0] + this.r8[1] * imm) & 0xff;
        this.r16[0] = r;
        this.resultFlags(r, 0, 0);
        return;
      }
      case 0xd6:
        // SALC (undocumented, present on every IA-32 processor): AL = CF ? 0xFF : 0.
        this.r8[0] = this.getCF() ? 0xff : 0;
        return;
      case 0xd7: {
        const seg = this.segOvr >= 0 ? this.segOvr : C.DS;
        const off = this.a32 ? (regs[3] + this.r8[0]) | 0 : (regs[3] + this.r8[0]) & 0xffff;
        this.r8[0] = this.read(0, seg, off);
        return;
      }
      case 0xd8: case 0xd9: case 0xda: case 0xdb: case 0xdc: case 0xdd: case 0xde: case 0xdf: {
        this.decodeModrm();
        if (this.cr0 & (C.CR0_EM | C.CR0_TS)) this.raise(C.EXC_NM);
        const x87 = this.x87;
        if (!x87 || !x87.escape) this.raiseUd();
        x87.escape(this, op, this.modrm);
        return;
      }
      case 0xe0: case 0xe1: case 0xe2: {
        const d = this.fetchS8();
        let c: number;
        if (this.a32) c = regs[1] = (regs[1] - 1) | 0;
        else c = this.r16[2] = (regs[1] - 1) & 0xffff;
        const zf = op === 0xe2 ? true : this.getZF() === (op === 0xe1);
        if (c !== 0 && zf) this.jumpRel(d);
        return;
      }
      case 0xe3: {
        const d = this.fetchS8();
        if ((this.a32 ? regs[1] : regs[1] & 0xffff) === 0) this.jumpRel(d);
        return;
      }
      case 0xe4: case 0xe5: {
        const s = op & 1 ? vs : 0;
        const port = this.fetch8();
        this.setReg(s, 0, this.portIn(port, s));
        return;
      }
      case 0xe6: case 0xe7: {
        const s = op & 1 ? vs : 0;
        const port = this.fetch8();
        this.portOut(port, s, this.getReg(s, 0));
        return;
      }
      case 0xe8: {
        const d = this.fetchImmV();
        this.push(vs, this.eip);
        this.jumpRel(d);
        return;
      }
      case 0xe9:
        this.jumpRel(this.fetchImmV());
        return;
      case 0xea: {
        const off = this.fetchImmV();
        const sel = this.fetch16();
        Sys.farJump(this, sel, off, vs);
        return;
      }
      case 0xeb:
        this.jumpRel(this.fetchS8());
        return;
      case 0xec: case 0xed: {
        const s = op & 1 ? vs : 0;
        this.setReg(s, 0, this.portIn(this.r16[4], s));
        return;
      }
      case 0xee: case 0xef: {
        const s = op & 1 ? vs : 0;
        this.portOut(this.r16[4], s, this.getReg(s, 0));
        return;
      }
      case 0xf1:
        // INT1/ICEBP: a #DB delivered like an external event (no DPL check).
        Sys.deliverInterrupt(this, C.EXC_DB, false, 0, true, true);
        return;
      case 0xf4:
        if (this.cpl !== 0 && this.protectedModeOrVm()) this.raiseGp(0);
        this.halted = true;
        this.exits.hlt++;
        this.attention = 1;
        return;
      case 0xf5:
        this.setArith(this.getFlags() ^ C.CF, C.CF);
        return;
      case 0xf6:
      case 0xf7:
        this.group3(op & 1 ? vs : 0);
        return;
      case 0xf8:
        this.setArith(0, C.CF);
        return;
      case 0xf9:
        this.setArith(C.CF, C.CF);
        return;
      case 0xfa:
        Sys.cli(this);
        return;
      case 0xfb:
        Sys.sti(this);
        return;
      case 0xfc:
        this.flags &= ~C.DF;
        return;
      case 0xfd:
        this.flags |= C.DF;
        return;
      case 0xfe:
      case 0xff:
        this.group45(op === 0xff ? vs : 0);
        return;
      default:
        // 0x82 is handled above; 0xd6 SALC; anything else here is invalid.
        this.raiseUd();
    }
  }

  /** @internal true in protected mode, including V86. */
  protectedModeOrVm(): boolean {
    return (this.cr0 & C.CR0_PE) !== 0;
  }

  /**
   * LOCK prefix check before execution (Intel SDM Vol. 2 LOCK): #UD unless
   * the instruction is one of the read-modify-write instructions with a
   * memory destination. Peeks the opcode bytes without consuming them.
   */
  checkLockable(op: number): void {
    const start = this.eip;
    let reg = -1;
    let ok = false;
    if (op === 0x0f) {
      const op2 = this.fetch8();
      const m = this.fetch8();
      reg = (m >> 3) & 7;
      ok = m < 0xc0 && ([0xab, 0xb3, 0xbb, 0xb0, 0xb1, 0xc0, 0xc1].includes(op2) || (op2 === 0xba && reg >= 5) || (op2 === 0xc7 && reg === 1));
    } else {
      const m = this.fetch8();
      reg = (m >> 3) & 7;
      if (m < 0xc0) {
        if (op < 0x40) ok = (op & 7) < 2 && op >> 3 !== 7; // ALU Eb/Ev,G except CMP
        else if (op >= 0x80 && op <= 0x83) ok = reg !== 7;
        else if (op === 0x86 || op === 0x87) ok = true;
        else if (op === 0xf6 || op === 0xf7) ok = reg === 2 || reg === 3;
        else if (op === 0xfe || op === 0xff) ok = reg < 2;
      }
    }
    this.eip = start;
    if (!ok) this.raiseUd();
  }

  /** @internal F3 90 (PAUSE): a spin-wait hint; ends the slice early so other vCPUs run. */
  pauseHint(): void {
    // Nothing architectural.
  }

  /** Sets EIP to `eip` (truncated to 16 bits for 16-bit operand size) after the CS limit check. */
  jumpNear(eip: number): void {
    if (!this.o32) eip &= 0xffff;
    if (eip >>> 0 > this.segLimit[C.CS] >>> 0) this.raiseGp(0);
    this.eip = eip;
  }

  /** Relative jump by `d` from the current EIP. */
  jumpRel(d: number): void {
    this.jumpNear((this.eip + d) | 0);
  }

  // ---------------------------------------------------------------- groups

  /** @internal TEST/NOT/NEG/MUL/IMUL/DIV/IDIV (F6/F7). */
  group3(s: number): void {
    this.decodeModrm();
    const op = this.reg;
    switch (op) {
      case 0:
      case 1: {
        const v = this.readRm(s);
        this.logic(v & this.fetchImm(s), s);
        return;
      }
      case 2: {
        if (this.mod === 3) this.setReg(s, this.rm, ~this.getReg(s, this.rm));
        else {
          const la = this.rmwLin(s);
          this.writeLin(s, la, ~this.readLin(s, la));
        }
        return;
      }
      case 3: {
        if (this.mod === 3) this.setReg(s, this.rm, this.alu(5, 0, this.getReg(s, this.rm), s));
        else {
          const la = this.rmwLin(s);
          this.writeLin(s, la, this.alu(5, 0, this.readLin(s, la), s));
        }
        return;
      }
      case 4:
        this.mul(this.readRm(s), s);
        return;
      case 5:
        this.imul1(this.readRm(s), s);
        return;
      case 6:
        this.div(this.readRm(s), s);
        return;
      default:
        this.idiv(this.readRm(s), s);
    }
  }

  /** @internal INC/DEC (FE), and for FF also CALL/JMP near/far and PUSH. */
  group45(s: number): void {
    this.decodeModrm();
    const op = this.reg;
    if (op < 2) {
      if (this.mod === 3) this.setReg(s, this.rm, op === 0 ? this.inc(this.getReg(s, this.rm), s) : this.dec(this.getReg(s, this.rm), s));
      else {
        const la = this.rmwLin(s);
        const v = this.readLin(s, la);
        this.writeLin(s, la, op === 0 ? this.inc(v, s) : this.dec(v, s));
      }
      return;
    }
    if (s === 0) this.raiseUd();
    switch (op) {
      case 2: {
        const t = this.readRm(s);
        this.push(s, this.eip);
        this.jumpNear(t);
        return;
      }
      case 3:
      case 5: {
        if (this.mod === 3) this.raiseUd();
        const off = this.read(s, this.eaSeg, this.eaOff);
        const sel = this.read(1, this.eaSeg, (this.eaOff + (s === 2 ? 4 : 2)) | 0);
        if (op === 3) Sys.farCall(this, sel, off, s);
        else Sys.farJump(this, sel, off, s);
        return;
      }
      case 4:
        this.jumpNear(this.readRm(s));
        return;
      case 6:
        this.push(s, this.readRm(s));
        return;
      default:
        this.raiseUd();
    }
  }

  // ---------------------------------------------------------------- multiply / divide

  /** Unsigned 32x32 -> 64 product into tmp64 (lo, hi). */
  mulU32(a: number, b: number): void {
    const a0 = a & 0xffff;
    const a1 = a >>> 16;
    const b0 = b & 0xffff;
    const b1 = b >>> 16;
    const p00 = a0 * b0;
    const p01 = a0 * b1;
    const p10 = a1 * b0;
    const p11 = a1 * b1;
    const mid = (p00 >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
    this.tmp64[0] = (p00 & 0xffff) | (mid << 16);
    this.tmp64[1] = p11 + (p01 >>> 16) + (p10 >>> 16) + (mid >>> 16);
  }

  /** @internal MUL (F6/F7 /4). */
  mul(v: number, s: number): void {
    let cf: boolean;
    let low: number;
    if (s === 0) {
      const r = this.r8[0] * (v & 0xff);
      this.r16[0] = r;
      cf = r > 0xff;
      low = r;
    } else if (s === 1) {
      const r = (this.regs[0] & 0xffff) * (v & 0xffff);
      this.r16[0] = r;
      this.r16[4] = r >>> 16;
      cf = r > 0xffff;
      low = r;
    } else {
      this.mulU32(this.regs[0], v);
      this.regs[0] = this.tmp64[0];
      this.regs[2] = this.tmp64[1];
      cf = this.tmp64[1] !== 0;
      low = this.tmp64[0];
    }
    this.resultFlags(low, s, cf ? C.CF | C.OF : 0);
  }

  /** @internal IMUL one-operand form (F6/F7 /5). */
  imul1(v: number, s: number): void {
    let cf: boolean;
    let low: number;
    if (s === 0) {
      const r = ((this.regs[0] << 24) >> 24) * ((v << 24) >> 24);
      this.r16[0] = r;
      cf = r !== (r << 24) >> 24;
      low = r;
    } else if (s === 1) {
      const r = ((this.regs[0] << 16) >> 16) * ((v << 16) >> 16);
      this.r16[0] = r;
      this.r16[4] = r >> 16;
      cf = r !== (r << 16) >> 16;
      low = r;
    } else {
      this.imul64(this.regs[0], v);
      this.regs[0] = this.tmp64[0];
      this.regs[2] = this.tmp64[1];
      cf = this.tmp64[1] !== this.tmp64[0] >> 31;
      low = this.tmp64[0];
    }
    this.resultFlags(low, s, cf ? C.CF | C.OF : 0);
  }

  /** Signed 32x32 -> 64 product into tmp64. */
  imul64(a: number, b: number): void {
    this.mulU32(a, b);
    // Signed correction: subtract b<<32 if a < 0, a<<32 if b < 0.
    let hi = this.tmp64[1];
    if (a < 0) hi = (hi - b) | 0;
    if (b < 0) hi = (hi - a) | 0;
    this.tmp64[1] = hi;
  }

  /** @internal IMUL two/three-operand forms: truncated product, CF=OF on overflow. */
  imul2(a: number, b: number, s: number): number {
    let r: number;
    let cf: boolean;
    if (s === 1) {
      const p = ((a << 16) >> 16) * ((b << 16) >> 16);
      r = p & 0xffff;
      cf = p !== (p << 16) >> 16;
    } else {
      this.imul64(a, b);
      r = this.tmp64[0];
      cf = this.tmp64[1] !== r >> 31;
    }
    this.resultFlags(r, s, cf ? C.CF | C.OF : 0);
    return r;
  }

  /** @internal DIV (F6/F7 /6); #DE on zero divisor or quotient overflow. */
  div(v: number, s: number): void {
    if (s === 0) {
      const d = v & 0xff;
      if (d === 0) this.raise(C.EXC_DE);
      const n = this.regs[0] & 0xffff;
      const q = (n / d) >>> 0;
      if (q > 0xff) this.raise(C.EXC_DE);
      this.r8[0] = q;
      this.r8[1] = n % d;
    } else if (s === 1) {
      const d = v & 0xffff;
      if (d === 0) this.raise(C.EXC_DE);
      const n = ((this.regs[2] & 0xffff) << 16 | (this.regs[0] & 0xffff)) >>> 0;
      const q = Math.floor(n / d);
      if (q > 0xffff) this.raise(C.EXC_DE);
      this.r16[0] = q;
      this.r16[4] = n % d;
    } else {
      const d = v >>> 0;
      if (d === 0) this.raise(C.EXC_DE);
      const hi = this.regs[2] >>> 0;
      const lo = this.regs[0] >>> 0;
      if (hi >= d) this.raise(C.EXC_DE);
      this.divU64(hi, lo, d);
      this.regs[0] = this.tmp64[0];
      this.regs[2] = this.tmp64[1];
    }
  }

  /** Unsigned (hi:lo) / d with hi < d: quotient in tmp64[0], remainder in tmp64[1]. */
  divU64(hi: number, lo: number, d: number): void {
    if (hi === 0) {
      this.tmp64[0] = Math.floor(lo / d);
      this.tmp64[1] = lo % d;
      return;
    }
    // Dividend below 2^53: doubles are exact.
    if (hi < 0x200000) {
      const n = hi * 4294967296 + lo;
      const q = Math.floor(n / d);
      this.tmp64[0] = q;
      this.tmp64[1] = n - q * d;
      return;
    }
    let rem = hi;
    let q = 0;
    for (let i = 31; i >= 0; i--) {
      rem = rem * 2 + ((lo >>> i) & 1);
      if (rem >= d) {
        rem -= d;
        q |= 1 << i;
      }
    }
    this.tmp64[0] = q;
    this.tmp64[1] = rem;
  }

  /** @internal IDIV (F6/F7 /7). */
  idiv(v: number, s: number): void {
    if (s === 0) {
      const d = (v << 24) >> 24;
      if (d === 0) this.raise(C.EXC_DE);
      const n = (this.regs[0] << 16) >> 16;
      const q = Math.trunc(n / d);
      if (q > 127 || q < -128) this.raise(C.EXC_DE);
      this.r8[0] = q;
      this.r8[1] = n % d;
    } else if (s === 1) {
      const d = (v << 16) >> 16;
      if (d === 0) this.raise(C.EXC_DE);
      const n = (this.regs[2] << 16) | (this.regs[0] & 0xffff);
      const q = Math.trunc(n / d);
      if (q > 32767 || q < -32768) this.raise(C.EXC_DE);
      this.r16[0] = q;
      this.r16[4] = n % d;
    } else {
      const d = v | 0;
      if (d === 0) this.raise(C.EXC_DE);
      let hi = this.regs[2];
      let lo = this.regs[0] >>> 0;
      const neg = hi < 0;
      if (neg) {
        // Two's complement negate of hi:lo.
        lo = (~lo + 1) >>> 0;
        hi = (~hi + (lo === 0 ? 1 : 0)) >>> 0;
      } else hi >>>= 0;
      const ad = Math.abs(d);
      // |quotient| must fit in 31 bits (or be exactly 2^31 when negative).
      if (hi >= ad) this.raise(C.EXC_DE);
      this.divU64(hi, lo, ad);
      const qAbs = this.tmp64[0] >>> 0;
      const rAbs = this.tmp64[1] >>> 0;
      const qNeg = neg !== d < 0;
      if (qNeg ? qAbs > 0x80000000 : qAbs > 0x7fffffff) this.raise(C.EXC_DE);
      this.regs[0] = qNeg ? -qAbs : qAbs;
      this.regs[2] = neg ? -rAbs : rAbs;
    }
  }

  // ---------------------------------------------------------------- BCD

  /** @internal */
  daa(): void {
    const oldAl = this.r8[0];
    const oldCf = this.getCF();
    const af = this.getAF();
    let al = oldAl;
    let cf = 0;
    let newAf = 0;
    if ((al & 0xf) > 9 || af) {
      al = (al + 6) & 0xff;
      cf = oldCf || (oldAl + 6 > 0xff ? 1 : 0);
      newAf = C.AF;
    }
    if (oldAl > 0x99 || oldCf) {
      al = (al + 0x60) & 0xff;
      cf = 1;
    } else cf = 0;
    this.r8[0] = al;
    this.resultFlags(al, 0, (cf ? C.CF : 0) | newAf);
  }

  /** @internal */
  das(): void {
    const oldAl = this.r8[0];
    const oldCf = this.getCF();
    const af = this.getAF();
    let al = oldAl;
    let cf = 0;
    let newAf = 0;
    if ((al & 0xf) > 9 || af) {
      al = (al - 6) & 0xff;
      cf = oldCf || (oldAl < 6 ? 1 : 0);
      newAf = C.AF;
    }
    if (oldAl > 0x99 || oldCf) {
      al = (al - 0x60) & 0xff;
      cf = 1;
    }
    this.r8[0] = al;
    this.resultFlags(al, 0, (cf ? C.CF : 0) | newAf);
  }

  /** @internal */
  aaa(): void {
    if ((this.r8[0] & 0xf) > 9 || this.getAF()) {
      this.r16[0] = (this.r16[0] + 0x106) & 0xffff;
      this.r8[0] &= 0xf;
      this.resultFlags(this.r8[0], 0, C.AF | C.CF);
    } else {
      this.r8[0] &= 0xf;
      this.resultFlags(this.r8[0], 0, 0);
    }
  }

  /** @internal */
  aas(): void {
    if ((this.r8[0] & 0xf) > 9 || this.getAF()) {
      this.r16[0] = (this.r16[0] - 6) & 0xffff;
      this.r8[1] = (this.r8[1] - 1) & 0xff;
      this.r8[0] &= 0xf;
      this.resultFlags(this.r8[0], 0, C.AF | C.CF);
    } else {
      this.r8[0] &= 0xf;
      this.resultFlags(this.r8[0], 0, 0);
    }
  }

  // ---------------------------------------------------------------- strings

  /**
   * MOVS/CMPS/STOS/LODS/SCAS/INS/OUTS with REP/REPE/REPNE (Intel SDM Vol. 2
   * "REP/REPE/REPZ/REPNE/REPNZ"). Each iteration commits its registers, so a
   * fault in the middle leaves a restartable state; long REPs yield to the
   * run loop every few thousand iterations by re-executing the instruction.
   */
  stringOp(op: number): void {
    const s = op & 1 ? (this.o32 ? 2 : 1) : 0;
    const n = 1 << s;
    const delta = this.flags & C.DF ? -n : n;
    const a32 = this.a32;
    const regs = this.regs;
    const srcSeg = this.segOvr >= 0 ? this.segOvr : C.DS;
    const rep = this.rep;
    // k: 0 movs (A4/A5), 1 cmps (A6/A7), 2 stos (AA/AB), 3 lods (AC/AD), 4 scas (AE/AF), 5 ins (6C/6D), 6 outs (6E/6F).
    const k = op >= 0xa4 ? (op < 0xa6 ? 0 : op < 0xa8 ? 1 : op < 0xac ? 2 : op < 0xae ? 3 : 4) : op < 0x6e ? 5 : 6;
    let budget = 4096;
    for (;;) {
      if (rep !== 0) {
        const c = a32 ? regs[1] : regs[1] & 0xffff;
        if (c === 0) return;
      }
      const si = a32 ? regs[6] : regs[6] & 0xffff;
      const di = a32 ? regs[7] : regs[7] & 0xffff;
      let advSi = false;
      let advDi = false;
      switch (k) {
        case 0:
          this.write(s, C.ES, di, this.read(s, srcSeg, si));
          advSi = advDi = true;
          break;
        case 1: {
          const a = this.read(s, srcSeg, si);
          const b = this.read(s, C.ES, di);
          this.alu(7, a, b, s);
          advSi = advDi = true;
          break;
        }
        case 2:
          this.write(s, C.ES, di, this.getReg(s, 0));
          advDi = true;
          break;
        case 3:
          this.setReg(s, 0, this.read(s, srcSeg, si));
          advSi = true;
          break;
        case 4:
          this.alu(7, this.getReg(s, 0), this.read(s, C.ES, di), s);
          advDi = true;
          break;
        case 5: {
          // INS: check the destination before the port read (the read may have side effects).
          this.checkIo(this.r16[4], n);
          const la = this.lin(C.ES, di, n, true);
          this.mmu.probeWrite(la, n);
          this.writeLin(s, la, this.portIn(this.r16[4], s));
          advDi = true;
          break;
        }
        default:
          this.portOut(this.r16[4], s, this.read(s, srcSeg, si));
          advSi = true;
      }
      if (advSi) {
        if (a32) regs[6] = (regs[6] + delta) | 0;
        else this.r16[12] = (regs[6] + delta) & 0xffff;
      }
      if (advDi) {
        if (a32) regs[7] = (regs[7] + delta) | 0;
        else this.r16[14] = (regs[7] + delta) & 0xffff;
      }
      if (rep === 0) return;
      const c = a32 ? (regs[1] = (regs[1] - 1) | 0) : (this.r16[2] = (regs[1] - 1) & 0xffff);
      if (c === 0) return;
      if (k === 1 || k === 4) {
        // REPE stops on ZF=0, REPNE on ZF=1.
        const zf = this.getZF();
        if (rep === 1 ? !zf : zf) return;
      }
      if (--budget === 0 || this.attention !== 0) {
        // Re-execute later: lets interrupts and other work in between iterations.
        this.eip = this.instrStart;
        return;
      }
    }
  }

  // ---------------------------------------------------------------- run loop

  /**
   * Runs up to `budget` instructions. Returns early on HLT with nothing to
   * wake it, a requested exit, or a shutdown.
   * @returns instructions retired
   */
  runSlice(budget: number): number {
    let n = 0;
    this.sliceCount = 0;
    this.exitRequested = false;
    this.attention = 1;
    while (n < budget) {
      if (this.attention !== 0) {
        this.attention = 0;
        if (this.exitRequested) break;
        if (!this.checkEvents()) break; // halted with nothing to do
      }
      try {
        // The inner loop runs without per-instruction bookkeeping beyond the counter.
        while (n < budget) {
          this.step();
          n++;
          this.sliceCount = n;
          if (this.shadow !== 0) {
            if (--this.shadow === 0) this.attention = 1;
          }
          if (this.attention !== 0) break;
        }
      } catch (e) {
        if (e === CPU_EXCEPTION) {
          n++;
          this.faultRestore();
          Sys.deliverException(this);
        } else if (e === PAGE_FAULT) {
          n++;
          this.faultRestore();
          this.cr2 = this.mmu.faultAddress;
          this.excVector = C.EXC_PF;
          this.excCode = this.mmu.faultCode;
          this.excHasCode = true;
          Sys.deliverException(this);
        } else throw e;
        this.sliceCount = n;
      }
    }
    this.instructions += n;
    return n;
  }

  /** @internal a faulting instruction leaves EIP at its start and ESP as it was. */
  faultRestore(): void {
    this.eip = this.instrStart;
    this.regs[4] = this.instrEsp;
  }

  /**
   * Interrupt window check at an instruction boundary: NMI, then INTR (APIC
   * units first, then the legacy PIC) when IF=1 and no interrupt shadow.
   * @returns false when the CPU is halted and nothing woke it
   */
  checkEvents(): boolean {
    if (this.waitingForSipi) return false;
    if (this.shadow !== 0) return !this.halted;
    try {
      if (this.nmiPending && !this.nmiBlocked) {
        this.nmiPending = false;
        this.nmiBlocked = true;
        this.halted = false;
        Sys.deliverInterrupt(this, C.EXC_NMI, false, 0, true, false);
        return true;
      }
      if (this.flags & C.IF) {
        for (const e of this.extensions) {
          const src = e.interrupts;
          if (src && src.hasInterrupt()) {
            this.halted = false;
            Sys.deliverInterrupt(this, src.acknowledge() & 0xff, false, 0, true, false);
            return true;
          }
        }
        const pic = this.host.legacyPic();
        if (pic && pic.hasInterrupt()) {
          this.halted = false;
          Sys.deliverInterrupt(this, pic.acknowledge() & 0xff, false, 0, true, false);
          return true;
        }
      }
    } catch (e) {
      if (e === CPU_EXCEPTION || e === PAGE_FAULT) {
        if (e === PAGE_FAULT) {
          this.cr2 = this.mmu.faultAddress;
          this.excVector = C.EXC_PF;
          this.excCode = this.mmu.faultCode;
          this.excHasCode = true;
        }
        Sys.deliverException(this);
        return true;
      }
      throw e;
    }
    return !this.halted;
  }

  /** Application processors start in wait-for-SIPI: halted, ignoring INTR until {@link Cpu.startup}. */
  waitForStartup(): void {
    this.halted = true;
    this.waitingForSipi = true;
  }

  /** Startup IPI: real mode at `vector` << 12 (Intel SDM Vol. 3 §10.4.4). */
  startup(vector: number): void {
    if (!this.waitingForSipi) return;
    this.waitingForSipi = false;
    this.halted = false;
    this.setSegCache(C.CS, (vector & 0xff) << 8, (vector & 0xff) << 12, 0xffff, 0x9b);
    this.eip = 0;
    this.attention = 1;
  }

  /** Makes the current slice return at the next instruction boundary. */
  requestExit(): void {
    this.exitRequested = true;
    this.attention = 1;
  }

  /** Raises a non-maskable interrupt. */
  raiseNmi(): void {
    this.nmiPending = true;
    this.attention = 1;
  }

  /** Wakes the CPU to re-check interrupt inputs (a device raised a line). */
  interruptPending(): void {
    this.attention = 1;
  }

  /** The TSC value now (virtual time in ns at 1 GHz, plus in-slice progress and the IA32_TSC offset). */
  readTsc(): number {
    return Math.floor(this.host.now() + this.sliceCount * this.host.nsPerInstruction) + this.tscOffset;
  }
}
