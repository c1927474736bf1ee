import type { AccessSize, LegacyInterruptController } from "@typevisor/hv-core";
import { Mmu, PAGE_FAULT, TLB_SIZE, type PhysicalMemory } from "@typevisor/mmu-ept";
import * as C from "./constants.js";
import { DecodeCache, GENERIC_BLOCK, MAX_BLOCK_RECORDS, MAX_BLOCKS, REC_STRIDE } from "./decode-cache.js";
import { BlockCompiler, blockCompilerAvailable, type JitOptions } from "./jit.js";
import { S_CS_BASE, S_CS_LIMIT, S_SEG_BASE, S_SEG_FAST, S_SLOTS, S_STACK32 } from "./state-block.js";
import { ENDS_BLOCK, H_GENERIC, decodeInstruction, fuseCompareBranch, isFused } from "./decoder.js";
import type { CpuExtension } from "./extensions.js";
import { exec0F } from "./ops-0f.js";
import { runBlocks, runCompiled } from "./record-ops.js";
import * as Sys from "./system.js";

/** Thrown (one preallocated instance) to unwind an instruction that raised an exception; the vector is in {@link Cpu.excVector}. */
export class CpuExceptionSignal {
  /** Marker. */
  readonly isCpuException = true;
}

/** The exception signal the CPU throws internally. */
export const CPU_EXCEPTION = new CpuExceptionSignal();

/** The port-I/O space as the CPU uses it (the machine's `PortIoBus` fits). */
export interface PortAccess {
  /** Reads `size` bytes from `port`. */
  read(port: number, size: AccessSize): number;
  /** Writes the low `size` bytes of `value` to `port`. */
  write(port: number, size: AccessSize, value: number): void;
}

/** Counters of the trap-and-emulate exits a vCPU took. */
export interface ExitCounters {
  /** Port I/O instructions (IN, OUT, INS, OUTS). */
  io: number;
  /** Accesses that went to the MMIO bus. */
  mmio: number;
  /** HLT instructions. */
  hlt: number;
  /** CPUID instructions. */
  cpuid: number;
  /** RDMSR/WRMSR instructions. */
  msr: number;
  /** Shutdowns (triple faults). */
  shutdown: number;
}

/** What a vCPU needs from its machine: port I/O, time, the PIC, and where shutdowns go. */
export interface CpuHost {
  /** The port-I/O bus (trap-and-emulate exit for IN/OUT/INS/OUTS). */
  readonly ports: PortAccess;
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

const PARITY = C.PARITY;
/** Byte offset of each 8-bit register (AL CL DL BL AH CH DH BH) in the register file. */
const REG8 = new Int32Array([0, 4, 8, 12, 1, 5, 9, 13]);
const SIGN = [0x80, 0x8000, 0x80000000 | 0];
const MASK = [0xff, 0xffff, -1];

// Lazy flag operations (record-ops.ts writes these values as literals in its inline ALU code).
const OP_LOGIC = 0;
const OP_ADD = 1;
const OP_ADC = 2;
const OP_SUB = 3;
const OP_SBB = 4;

/** Options of a {@link Cpu}. */
export interface CpuOptions {
  /** vCPU index (APIC ID). */
  index?: number;
  /**
   * The block compiler: `false` interprets only; an object sets when blocks
   * are compiled (see {@link JitOptions}). Default: on, unless the
   * environment variable TYPEVISOR_JIT says `off` or gives a threshold.
   */
  jit?: false | JitOptions;
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
  /**
   * The vCPU whose slice is executing right now (undefined between slices).
   * MMIO and port handlers that are per-CPU, like the local APIC at
   * 0xFEE00000, use it to know which vCPU is accessing them.
   */
  static running: Cpu | undefined;
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
  /** Bases (a view of the state block, where compiled code reads them; re-created when the host memory moves). */
  segBase: Int32Array;
  /** Limits (byte granular, as uint32 stored in int32). */
  readonly segLimit = new Int32Array(6);
  /** Attributes: descriptor bits 40..47 in bits 0..7, bits 52..55 (AVL, L, D/B, G) in bits 12..15; bit 16 = unusable (null). */
  readonly segAttr = new Int32Array(6);
  /** 1 when accesses through the segment need no checks (flat, readable, writable); a view of the state block, like {@link Cpu.segBase}. */
  segFast: Uint8Array;
  /** @internal the state block (state-block.ts), in the host memory; re-created when the host memory moves. */
  state: Int32Array;
  /** @internal byte offset of the state block in the host memory. */
  readonly stateOffset: number;
  /** CS base (cached for instruction fetch). */
  csBase = 0;
  /** CS limit as an unsigned number (cached for instruction fetch). */
  csLimit = 0xffff;
  /** @internal the CS limit as int32 bits (compared as `x >>> 0`, which stays in integer registers) */
  csLimitBits = 0xffff;
  /** EIP wrap mask: 0xFFFF for 16-bit code, -1 for 32-bit. */
  ipMask = 0xffff;
  // Fetch window: the CS offsets [winStart, winStart + winLen] lie in one cached code page and
  // inside the CS limit; their bytes are winMem[eip + winBias]. Valid while winGen equals the MMU's fetchGen.
  /** @internal */ winStart = 0;
  /** @internal */ winLen = -1;
  /** @internal */ winBias = 0;
  /** @internal */ winMem: Uint8Array = new Uint8Array(0);
  /** @internal */ winGen = -1;
  /** @internal guest page number of the fetch window's page */ winGpn = 0;
  /** @internal decoded blocks (the instruction cache; see decode-cache.ts) */
  readonly decoded = new DecodeCache(H_GENERIC);
  /** @internal block map of the fetch window's page (the cache's empty map until looked up) */
  curMap: Uint16Array = this.decoded.empty;
  /** The block compiler (undefined when the CPU only interprets). */
  readonly jit: BlockCompiler | undefined;
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
  /** Set by software interrupts: the single-step trap does not follow INT n (it cleared TF). */
  singleStepSuppressed = false;
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
  get instructions(): number {
    return this.retired[0];
  }
  /** Sets the count (snapshot restore, tests). */
  set instructions(count: number) {
    this.retired[0] = count;
  }
  /** The count behind {@link Cpu.instructions}: a Float64Array slot, since it passes 2^31 within a boot (docs/DESIGN.md, hot-path rules). */
  private readonly retired = new Float64Array(1);
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
  /**
   * EIP at the start of the current instruction, for instructions the
   * byte-by-byte interpreter runs (every instruction an extension unit sees).
   */
  instrStart = 0;
  /** ESP at the start of the current instruction (restored when it faults). */
  instrEsp = 0;
  /** @internal true while the byte-by-byte interpreter runs an instruction ({@link Cpu.step}) */
  inStep = false;
  /** @internal EIP of the first instruction of the decoded block being run */
  blockEip = 0;
  /** @internal first record word of that block */
  blockRec = 0;
  /** @internal `sliceCount` when that block started */
  blockN = 0;
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
  /** Prefix state must be reset before the next instruction. */
  prefixed = true;
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
  /**
   * Exception intercept (like VMX's exception bitmap): called before an
   * exception is delivered, with EIP at the faulting instruction; return
   * true to swallow it (the hook has handled it, e.g. by stopping the vCPU).
   */
  exceptionExit: ((vector: number, code: number) => boolean) | undefined;
  /** Trap-and-emulate exit counters. */
  readonly exits: ExitCounters = { io: 0, mmio: 0, hlt: 0, cpuid: 0, msr: 0, shutdown: 0 };
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
    // The state block first: the segment caches live in it.
    this.stateOffset = memory.host.allocTable(S_SLOTS * 4);
    this.state = new Int32Array(memory.host.buffer, this.stateOffset, S_SLOTS);
    this.segBase = new Int32Array(memory.host.buffer, this.stateOffset + S_SEG_BASE * 4, 6);
    this.segFast = new Uint8Array(memory.host.buffer, this.stateOffset + S_SEG_FAST * 4, 6);
    const jit = options.jit ?? jitFromEnvironment();
    if (jit !== false && blockCompilerAvailable(this)) {
      this.jit = new BlockCompiler(this, MAX_BLOCKS, jit);
      this.decoded.listener = this.jit;
    }
    this.mmu = new Mmu(memory);
    this.mmu.fetchWindow = this; // the MMU closes our fetch window when it drops its fetch cache
    this.mmu.mmioHook = () => {
      this.exits.mmio++;
      this.attention = 1;
    };
    // A write to a page we decoded from drops its blocks; the running block stops after the writing instruction.
    memory.onCodeWrite((gpn) => {
      if (this.decoded.invalidate(gpn)) {
        this.curMap = this.decoded.empty;
        this.attention = 1;
      }
    });
    // Compiled regions hold the host arena's views: a new arena needs new code. The state block moved with it.
    memory.host.onRelocate(() => {
      const buffer = memory.host.buffer;
      this.state = new Int32Array(buffer, this.stateOffset, S_SLOTS);
      this.segBase = new Int32Array(buffer, this.stateOffset + S_SEG_BASE * 4, 6);
      this.segFast = new Uint8Array(buffer, this.stateOffset + S_SEG_FAST * 4, 6);
      this.jit?.droppedAll();
      this.attention = 1;
    });
    memory.ept.onInvalidate(() => {
      this.decoded.flush();
      this.curMap = this.decoded.empty;
      this.attention = 1;
    });
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
    if (seg === C.CS) {
      this.code32 = (attr & 0x4000) !== 0;
      this.updateCsCache();
    } else if (seg === C.SS) this.setStack32((attr & 0x4000) !== 0);
  }

  /** Sets SS.B (and its copy in the state block). */
  private setStack32(big: boolean): void {
    this.stack32 = big;
    this.state[S_STACK32] = big ? 1 : 0;
  }

  /** @internal refreshes the fetch-path copies of CS. */
  updateCsCache(): void {
    this.csBase = this.segBase[C.CS];
    this.csLimit = this.segLimit[C.CS] >>> 0;
    this.csLimitBits = this.segLimit[C.CS];
    this.ipMask = this.code32 ? -1 : 0xffff;
    this.state[S_CS_BASE] = this.csBase;
    this.state[S_CS_LIMIT] = this.csLimitBits;
    this.winGen = -1;
    this.winLen = -1;
    this.prefixed = true; // operand/address size defaults follow CS.D from the next instruction on
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
    if (seg === C.SS) this.setStack32((this.segAttr[seg] & 0x4000) !== 0);
    this.updateSegFast(seg);
    if (seg === C.CS) this.updateCsCache();
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

  /** Reads a dword at `seg:off`. */
  read32(seg: number, off: number): number {
    const la = this.segFast[seg] === 1 ? (this.segBase[seg] + off) | 0 : this.linSlow(seg, off, 4, false);
    return this.mmu.read32(la);
  }

  /** Writes a dword at `seg:off`. */
  write32(seg: number, off: number, v: number): void {
    const la = this.segFast[seg] === 1 ? (this.segBase[seg] + off) | 0 : this.linSlow(seg, off, 4, true);
    this.mmu.write32(la, v);
  }

  /** Reads a byte at `seg:off`. */
  read8(seg: number, off: number): number {
    const la = this.segFast[seg] === 1 ? (this.segBase[seg] + off) | 0 : this.linSlow(seg, off, 1, false);
    return this.mmu.read8(la);
  }

  /** Writes a byte at `seg:off`. */
  write8(seg: number, off: number, v: number): void {
    const la = this.segFast[seg] === 1 ? (this.segBase[seg] + off) | 0 : this.linSlow(seg, off, 1, true);
    this.mmu.write8(la, v);
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
    // The window never spans an EIP wrap, so `| 0` is the right increment inside it.
    if ((eip - this.winStart) >>> 0 <= this.winLen) {
      this.eip = (eip + 1) | 0;
      return this.winMem[eip + this.winBias];
    }
    return this.fetch8Slow();
  }

  /** @internal fetch outside the window: checks, fills the MMU's fetch cache, and opens a new window. */
  fetch8Slow(): number {
    const eip = this.eip;
    if (eip >>> 0 > this.csLimit) this.raiseGp(0);
    const la = (this.csBase + eip) | 0;
    const mmu = this.mmu;
    const v = la >>> 12 === mmu.fetchVpn ? mmu.fetchMem[mmu.fetchOff + (la & 0xfff)] : mmu.fetch8(la);
    if (la >>> 12 === mmu.fetchVpn) this.setWindow(eip, la);
    this.eip = (eip + 1) & this.ipMask;
    return v;
  }

  /** @internal opens the fetch window at `eip` (linear `la`) on the MMU's fetch page. */
  setWindow(eip: number, la: number): void {
    const mmu = this.mmu;
    // Window: from eip to the end of this page or the CS limit, without wrapping past the EIP size.
    const inPage = 0xfff - (la & 0xfff);
    const toLimit = this.csLimit - (eip >>> 0);
    const toWrap = (this.ipMask >>> 0) - (eip >>> 0);
    this.winStart = eip;
    this.winLen = Math.min(inPage, toLimit, toWrap);
    this.winBias = mmu.fetchOff + (la & 0xfff) - eip;
    this.winMem = mmu.fetchMem;
    this.winGen = mmu.fetchGen;
    this.winGpn = mmu.fetchGpn;
    this.curMap = this.decoded.empty;
  }

  /** Fetches a sign-extended byte. */
  fetchS8(): number {
    return (this.fetch8() << 24) >> 24;
  }

  /** Fetches a 16-bit immediate. */
  fetch16(): number {
    const eip = this.eip;
    if ((eip - this.winStart) >>> 0 < this.winLen) {
      const m = this.winMem;
      const o = eip + this.winBias;
      this.eip = (eip + 2) | 0;
      return m[o] | (m[o + 1] << 8);
    }
    return this.fetch8() | (this.fetch8() << 8);
  }

  /** Fetches a 32-bit immediate. */
  fetch32(): number {
    const eip = this.eip;
    if ((eip - this.winStart) >>> 0 < this.winLen - 2) {
      const m = this.winMem;
      const o = eip + this.winBias;
      this.eip = (eip + 4) | 0;
      return m[o] | (m[o + 1] << 8) | (m[o + 2] << 16) | (m[o + 3] << 24);
    }
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
    if (this.a32) this.decodeEa32();
    else this.decodeEa16();
  }

  /** @internal 32-bit addressing: [base + index*scale + disp] with SIB (Intel SDM Vol. 2 §2.1.5). */
  decodeEa32(): void {
    const mod = this.mod;
    const rm = this.rm;
    const regs = this.regs;
    let seg = C.DS;
    let off: number;
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
    this.eaSeg = this.segOvr >= 0 ? this.segOvr : seg;
    this.eaOff = off;
  }

  /** @internal 16-bit addressing: BX/BP + SI/DI + disp. */
  decodeEa16(): void {
    const mod = this.mod;
    const r16 = this.r16;
    let seg = C.DS;
    let off: number;
    switch (this.rm) {
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
    this.eaSeg = this.segOvr >= 0 ? this.segOvr : seg;
    this.eaOff = off & 0xffff;
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
    if (value & C.TF) this.attention = 1; // single-stepping runs through the slow path
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
    this.inStep = true;
    if (this.prefixed) {
      // Only instructions after a prefixed one (or a CS change) pay for resetting the prefix state.
      this.prefixed = false;
      const c32 = this.code32;
      this.o32 = c32;
      this.a32 = c32;
      this.segOvr = -1;
      this.rep = 0;
      this.lock = false;
    }
    const op = this.fetch8();
    OPS[op](this, op);
    this.inStep = false;
  }

  /** Blocks interrupts until after the next instruction (STI, MOV SS, POP SS: Intel SDM Vol. 3 §6.8.3). */
  setShadow(): void {
    this.shadow = 1;
    this.attention = 1;
  }

  /** @internal a prefix byte was consumed: enforce the 15-byte instruction limit, then continue with the next byte. */
  afterPrefix(): void {
    this.prefixed = true;
    if (((this.eip - this.instrStart) & this.ipMask) >= 15) this.raiseGp(0);
    const op = this.fetch8();
    if (this.lock && op !== 0xf0 && op !== 0xf2 && op !== 0xf3 && op !== 0x66 && op !== 0x67 && (op & 0xe7) !== 0x26 && op !== 0x64 && op !== 0x65) this.checkLockable(op);
    this.execute(op);
  }

  /** @internal executes one-byte opcode `op` after its prefixes. */
  execute(op: number): void {
    OPS[op](this, op);
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
    if (eip >>> 0 > this.csLimit) this.raiseGp(0);
    this.eip = eip;
  }

  /** Near call to `eip`: the target is checked against the CS limit before the return address is pushed (Intel SDM Vol. 2 CALL). */
  callNear(eip: number): void {
    if (!this.o32) eip &= 0xffff;
    if (eip >>> 0 > this.csLimit) this.raiseGp(0);
    this.push(this.o32 ? 2 : 1, this.eip);
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
      case 2:
        this.callNear(this.readRm(s));
        return;
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
    const a32 = this.a32;
    const regs = this.regs;
    const srcSeg = this.segOvr >= 0 ? this.segOvr : C.DS;
    const rep = this.rep;
    // k: 0 movs (A4/A5), 1 cmps (A6/A7), 2 stos (AA/AB), 3 lods (AC/AD), 4 scas (AE/AF), 5 ins (6C/6D), 6 outs (6E/6F).
    const k = op >= 0xa4 ? (op < 0xa6 ? 0 : op < 0xa8 ? 1 : op < 0xac ? 2 : op < 0xae ? 3 : 4) : op < 0x6e ? 5 : 6;
    let budget = 4096;
    let bulk = rep !== 0 && a32 && (k === 0 || k === 2);
    for (;;) {
      if (rep !== 0) {
        const c = a32 ? regs[1] : regs[1] & 0xffff;
        if (c === 0) return;
        if (bulk && c !== 1) {
          const done = this.repBulk(k === 0, s, srcSeg, c);
          // -1: never for this instruction (what blocks it does not change as it goes on).
          if (done < 0) bulk = false;
          else if (done > 0) {
            budget -= done;
            if ((regs[1] = (c - done) | 0) === 0) return;
            if (budget <= 0 || this.attention !== 0) {
              this.eip = this.instrStart;
              return;
            }
            continue;
          }
        }
      }
      this.stringElement(k, s, srcSeg, a32);
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

  /**
   * One element of string instruction `k` (as {@link Cpu.stringOp} numbers
   * them) of size `s`: the accesses, then ESI/EDI (SI/DI with 16-bit
   * addressing) move by the element size, down when DF=1. Nothing changes
   * before the last access that may fault. Decoded blocks run MOVS, CMPS,
   * STOS, LODS and SCAS without REP through it.
   */
  stringElement(k: number, s: number, srcSeg: number, a32: boolean): void {
    const regs = this.regs;
    const n = 1 << s;
    const delta = this.flags & C.DF ? -n : n;
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
  }

  /**
   * REP MOVS / REP STOS with 32-bit addressing, many elements at once: as
   * far as the destination (and source) pages go in the direction DF gives,
   * when the segments are flat and the TLB already holds the pages with the
   * access rights needed, so no element can fault, reach MMIO or write
   * decoded code (write entries never exist for code pages). Element by
   * element a MOVS whose destination starts inside its source, ahead of it
   * in the direction of the copy, repeats a pattern; that case is left to
   * the loop.
   * @returns the elements done (ESI/EDI moved); 0 when the loop must do
   *   the next one (a page not in the TLB yet, an element across a page
   *   end); -1 when no run of this instruction can go in bulk (segments not
   *   flat, a misaligned STOS, a MOVS repeating a pattern)
   */
  private repBulk(movs: boolean, s: number, srcSeg: number, count: number): number {
    const regs = this.regs;
    const mmu = this.mmu;
    const sh = s === 2 ? 2 : s;
    const size = 1 << sh;
    const down = (this.flags & C.DF) !== 0;
    if (this.segFast[C.ES] !== 1 || (movs && this.segFast[srcSeg] !== 1)) return -1;
    const ld = (this.segBase[C.ES] + regs[7]) | 0;
    const vd = ld >>> 12;
    const id = vd & (TLB_SIZE - 1);
    if (mmu.tagW[id] !== vd) return 0;
    let n = elementsInPage(ld, sh, down);
    if ((count >>> 0) < n) n = count >>> 0;
    const od = mmu.off[id] + (ld & 0xfff);
    const mem = mmu.bytes;
    if (movs) {
      const ls = (this.segBase[srcSeg] + regs[6]) | 0;
      const vs = ls >>> 12;
      const is = vs & (TLB_SIZE - 1);
      if (mmu.tagR[is] !== vs) return 0;
      const m = elementsInPage(ls, sh, down);
      if (m < n) n = m;
      if (n < 2) return 0;
      const os = mmu.off[is] + (ls & 0xfff);
      const bytes = n << sh;
      // The runs' lowest bytes: going down, the first element is the highest.
      const dLo = down ? od + size - bytes : od;
      const sLo = down ? os + size - bytes : os;
      if (down ? dLo < sLo && dLo + bytes > sLo : dLo > sLo && dLo < sLo + bytes) return -1;
      mem.copyWithin(dLo, sLo, sLo + bytes);
      regs[6] = (regs[6] + (down ? -bytes : bytes)) | 0;
    } else {
      if ((od & (size - 1)) !== 0) return -1;
      if (n < 2) return 0;
      const lo = (down ? od + size - (n << sh) : od) >> sh;
      if (s === 0) mem.fill(regs[0] & 0xff, lo, lo + n);
      else if (s === 1) mmu.words16.fill(regs[0] & 0xffff, lo, lo + n);
      else mmu.words32.fill(regs[0], lo, lo + n);
    }
    regs[7] = (regs[7] + (down ? -(n << sh) : n << sh)) | 0;
    return n;
  }

  // ---------------------------------------------------------------- run loop

  /**
   * Runs up to `budget` instructions. Returns early on HLT with nothing to
   * wake it, a requested exit, or a shutdown.
   * @returns instructions retired
   */
  runSlice(budget: number): number {
    Cpu.running = this;
    try {
      return this.runSliceInner(budget);
    } finally {
      Cpu.running = undefined;
    }
  }

  private runSliceInner(budget: number): number {
    let n = 0;
    this.sliceCount = 0;
    this.inStep = false;
    this.exitRequested = false;
    this.attention = 1;
    while (n < budget) {
      let singleStep = false;
      if (this.attention !== 0) {
        this.attention = 0;
        if (this.exitRequested) break;
        if (this.shadow !== 0) {
          // Interrupt shadow: run exactly one instruction before looking at interrupts again.
          this.shadow = 0;
          this.attention = 1;
        } else if (!this.checkEvents()) break; // halted with nothing to do
        if (this.flags & C.TF) {
          // TF set before the instruction: a single-step #DB trap follows it (Intel SDM Vol. 3 §18.3.1.4).
          singleStep = true;
          this.attention = 1;
        }
      }
      try {
        n = this.runInner(n, budget);
        if (singleStep && !this.halted) this.singleStepTrap();
      } catch (e) {
        n = this.sliceCount;
        if (e === CPU_EXCEPTION) {
          this.faultRestore();
          this.sliceCount = ++n;
          Sys.deliverException(this);
        } else if (e === PAGE_FAULT) {
          this.faultRestore();
          this.sliceCount = ++n;
          this.cr2 = this.mmu.faultAddress;
          this.excVector = C.EXC_PF;
          this.excCode = this.mmu.faultCode;
          this.excHasCode = true;
          Sys.deliverException(this);
        } else throw e;
      }
    }
    this.instructions += n;
    return n;
  }

  /**
   * @internal The hot loop, kept free of try/catch so V8 optimizes it
   * fully; `sliceCount` always holds the instructions completed, which the
   * caller's handler uses when an instruction throws.
   */
  runInner(n: number, budget: number): number {
    return this.jit !== undefined ? runCompiled(this, n, budget) : runBlocks(this, n, budget);
  }

  /**
   * @internal The block at EIP, decoding it if needed: opens the fetch
   * window (faulting as the instruction's fetch would), finds the page's
   * block map (write-protecting the page), and checks the block lies in the
   * window. Returns the generic block when EIP's bytes cannot be cached
   * (MMIO, beyond the CS limit, a page that keeps being written).
   */
  lookupBlock(): number {
    const eip = this.eip;
    if ((eip - this.winStart) >>> 0 > this.winLen) {
      if (eip >>> 0 > this.csLimit) return GENERIC_BLOCK; // the interpreter raises #GP
      const la = (this.csBase + eip) | 0;
      if (!this.mmu.fetchPage(la)) return GENERIC_BLOCK;
      this.setWindow(eip, la);
    }
    const dc = this.decoded;
    let map = this.curMap;
    if (map === dc.empty) {
      map = dc.pageMap(this.winGpn, this.code32);
      if (map !== dc.uncached) this.memory.protectCodePage(this.winGpn);
      this.curMap = map;
    }
    const off = (this.csBase + eip) & 0xfff;
    let b = map[off];
    if (b === 0) {
      if (dc.reserve()) {
        // The pool was full and everything was dropped, this map included.
        this.curMap = dc.empty;
        return this.lookupBlock();
      }
      b = this.decodeBlock(map, off);
    }
    if (((eip - this.winStart) >>> 0) + dc.bBytes[b] > this.winLen + 1) return GENERIC_BLOCK;
    return b;
  }

  /** @internal decodes the block at EIP (inside the window) into the cache and enters it in `map` at `off`. */
  decodeBlock(map: Uint16Array, off: number): number {
    const dc = this.decoded;
    const rec = dc.rec;
    const start = dc.recTop;
    let r = start;
    let d = (this.eip - this.winStart) >>> 0;
    let bytes = 0;
    let count = 0;
    let prev = -1; // the previous record, while it may fuse with a Jcc
    while (count < MAX_BLOCK_RECORDS) {
      const res = decodeInstruction(rec, r, this.winMem, this.winStart + d + this.winBias, this.winLen - d + 1, this.code32);
      count++;
      if (res === 0) {
        // Not a form the decoder knows, or it crosses the window: the interpreter runs it, and the block ends.
        rec[r] = H_GENERIC;
        r += REC_STRIDE;
        bytes += 1;
        break;
      }
      const len = res & 0xff;
      bytes += len;
      d += len;
      if (prev >= 0 && fuseCompareBranch(rec, prev, r)) prev = -1;
      else {
        prev = r;
        r += REC_STRIDE;
      }
      if (res & ENDS_BLOCK || d > this.winLen) break;
    }
    dc.recTop = r;
    return dc.commit(map, off, start, count, bytes);
  }

  /** @internal delivers the single-step trap after an instruction that ran with TF=1 (not after INT n, which cleared TF). */
  singleStepTrap(): void {
    if (this.singleStepSuppressed) {
      this.singleStepSuppressed = false;
      return;
    }
    this.dr[6] |= 0x4000; // DR6.BS
    this.excVector = C.EXC_DB;
    this.excHasCode = false;
    this.excCode = 0;
    Sys.deliverException(this);
  }

  /**
   * @internal A faulting instruction leaves EIP at its start and ESP as it
   * was. Decoded blocks keep EIP in a local and store only `sliceCount` per
   * instruction, so the faulting instruction's EIP is found by walking the
   * block's records; their handlers never change ESP before their last
   * check, so ESP needs no restoring.
   */
  faultRestore(): void {
    if (this.inStep) {
      this.inStep = false;
      this.eip = this.instrStart;
      this.regs[4] = this.instrEsp;
      return;
    }
    const rec = this.decoded.rec;
    let eip = this.blockEip;
    let r = this.blockRec;
    for (let i = this.blockN; i < this.sliceCount; i++) {
      const w = rec[r];
      // A fused compare-and-branch is two instructions: a fault after the first is in the Jcc.
      if (isFused(w) && i + 1 === this.sliceCount) eip = (eip + rec[r + 1]) & this.ipMask;
      else {
        eip = (eip + ((w >> 8) & 15)) & this.ipMask;
        if (isFused(w)) i++;
      }
      r += REC_STRIDE;
    }
    this.eip = eip;
  }

  /**
   * Interrupt window check at an instruction boundary: NMI, then INTR (APIC
   * units first, then the legacy PIC) when IF=1 and no interrupt shadow.
   * @returns false when the CPU is halted and nothing woke it
   */
  checkEvents(): boolean {
    if (this.waitingForSipi) return false;
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

  /** The A20 gate (port 0x92 / 8042 output port): disabled, physical address bit 20 reads as 0. */
  setA20(enabled: boolean): void {
    this.mmu.setA20(enabled);
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

/**
 * How many elements of size `1 << sh` a string instruction at linear `la`
 * can do inside `la`'s page: up to the page end going up, down to the page
 * start going down; 0 when the element at `la` itself crosses the page end.
 */
function elementsInPage(la: number, sh: number, down: boolean): number {
  const off = la & 0xfff;
  if (!down) return (4096 - off) >> sh;
  return off + (1 << sh) > 4096 ? 0 : (off >> sh) + 1;
}

/**
 * The block compiler's default configuration from the environment
 * (TYPEVISOR_JIT=off, or a threshold such as TYPEVISOR_JIT=0 to compile
 * every block at once; test suites run both ways). Browsers have no
 * process: the compiler is on with its default threshold there.
 */
function jitFromEnvironment(): false | JitOptions {
  const v = typeof process !== "undefined" ? process.env?.TYPEVISOR_JIT : undefined;
  if (v === undefined || v === "") return {};
  if (v === "off" || v === "false") return false;
  const t = Number(v);
  return Number.isFinite(t) && t >= 0 ? { threshold: t } : {};
}

// ---------------------------------------------------------------- one-byte opcode handlers

function op_26(cpu: Cpu, op: number): void {
  cpu.segOvr = (op >> 3) & 3;
  cpu.afterPrefix();
  return;
}

function op_64(cpu: Cpu, op: number): void {
  cpu.segOvr = op - 0x60;
  cpu.afterPrefix();
  return;
}

function op_66(cpu: Cpu, _op: number): void {
  cpu.o32 = !cpu.code32;
  cpu.afterPrefix();
  return;
}

function op_67(cpu: Cpu, _op: number): void {
  cpu.a32 = !cpu.code32;
  cpu.afterPrefix();
  return;
}

function op_f0(cpu: Cpu, _op: number): void {
  cpu.lock = true;
  cpu.afterPrefix();
  return;
}

function op_f2(cpu: Cpu, _op: number): void {
  cpu.rep = 2;
  cpu.afterPrefix();
  return;
}

function op_f3(cpu: Cpu, _op: number): void {
  cpu.rep = 1;
  cpu.afterPrefix();
}

// ALU ops 00-3D: op & 7 selects the form.
function op_00(cpu: Cpu, op: number): void {
  const regs = cpu.regs;
  const vs = cpu.o32 ? 2 : 1;
  const aop = (op >> 3) & 7;
  const form = op & 7;
  const s = form & 1 ? vs : 0;
  if (form >= 4) {
    const imm = cpu.fetchImm(s);
    const r = cpu.alu(aop, cpu.getReg(s, 0), imm, s);
    if (aop !== 7) cpu.setReg(s, 0, r);
    return;
  }
  cpu.decodeModrm();
  if (form < 2) {
    // Eb/Ev op= Gb/Gv
    if (cpu.mod === 3) {
      if (s === 2) {
        const r = cpu.alu(aop, regs[cpu.rm], regs[cpu.reg], 2);
        if (aop !== 7) regs[cpu.rm] = r;
        return;
      }
      const r = cpu.alu(aop, cpu.getReg(s, cpu.rm), cpu.getReg(s, cpu.reg), s);
      if (aop !== 7) cpu.setReg(s, cpu.rm, r);
    } else if (aop === 7) {
      cpu.alu(7, cpu.read(s, cpu.eaSeg, cpu.eaOff), cpu.getReg(s, cpu.reg), s);
    } else if (s === 2) {
      const la = cpu.lin(cpu.eaSeg, cpu.eaOff, 4, true);
      const mmu = cpu.mmu;
      const vpn = la >>> 12;
      const i = vpn & (TLB_SIZE - 1);
      if (mmu.tagW[i] === vpn && (la & 3) === 0) {
        // Aligned dword in a cached writable page: one TLB lookup for the read and the write.
        const m = mmu.words32;
        const a = (mmu.off[i] + (la & 0xfff)) >> 2;
        m[a] = cpu.alu(aop, m[a], regs[cpu.reg], 2);
        return;
      }
      mmu.probeWrite(la, 4);
      mmu.write32(la, cpu.alu(aop, mmu.read32(la), regs[cpu.reg], 2));
    } else {
      const la = cpu.rmwLin(s);
      const r = cpu.alu(aop, cpu.readLin(s, la), cpu.getReg(s, cpu.reg), s);
      cpu.writeLin(s, la, r);
    }
  } else if (s === 2) {
    const r = cpu.alu(aop, regs[cpu.reg], cpu.mod === 3 ? regs[cpu.rm] : cpu.read32(cpu.eaSeg, cpu.eaOff), 2);
    if (aop !== 7) regs[cpu.reg] = r;
  } else {
    const r = cpu.alu(aop, cpu.getReg(s, cpu.reg), cpu.readRm(s), s);
    if (aop !== 7) cpu.setReg(s, cpu.reg, r);
  }
  return;
}

function op_06(cpu: Cpu, op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  cpu.push(vs, cpu.segSel[op >> 3]);
  return;
}

function op_07(cpu: Cpu, op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  const seg = op >> 3;
  const sel = cpu.peek(vs, 0) & 0xffff;
  Sys.loadSeg(cpu, seg, sel);
  cpu.addSp(vs === 2 ? 4 : 2);
  if (seg === C.SS) cpu.setShadow();
  return;
}

function op_0f(cpu: Cpu, _op: number): void {
  exec0F(cpu);
  return;
}

function op_27(cpu: Cpu, _op: number): void {
  cpu.daa();
  return;
}

function op_2f(cpu: Cpu, _op: number): void {
  cpu.das();
  return;
}

function op_37(cpu: Cpu, _op: number): void {
  cpu.aaa();
  return;
}

function op_3f(cpu: Cpu, _op: number): void {
  cpu.aas();
  return;
}

function op_40(cpu: Cpu, op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  cpu.setReg(vs, op & 7, cpu.inc(cpu.getReg(vs, op & 7), vs));
  return;
}

function op_48(cpu: Cpu, op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  cpu.setReg(vs, op & 7, cpu.dec(cpu.getReg(vs, op & 7), vs));
  return;
}

function op_50(cpu: Cpu, op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  cpu.push(vs, cpu.getReg(vs, op & 7));
  return;
}

function op_58(cpu: Cpu, op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  const v = cpu.pop(vs);
  cpu.setReg(vs, op & 7, v);
  return;
}

function op_60(cpu: Cpu, _op: number): void {
  const regs = cpu.regs;
  const vs = cpu.o32 ? 2 : 1;
  // PUSHA: check the whole destination first so a fault leaves ESP intact.
  const n = vs === 2 ? 4 : 2;
  const orig = regs[4];
  const sp = cpu.sp;
  const base = cpu.stack32 ? (sp - 8 * n) | 0 : (sp - 8 * n) & 0xffff;
  cpu.mmu.probeWrite(cpu.lin(C.SS, base, 8 * n, true), 8 * n);
  for (let i = 0; i < 8; i++) cpu.push(vs, i === 4 ? orig : cpu.getReg(vs, i));
  return;
}

function op_61(cpu: Cpu, _op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  const n = vs === 2 ? 4 : 2;
  cpu.mmu.probeRead(cpu.lin(C.SS, cpu.sp, 8 * n, false), 8 * n);
  for (let i = 7; i >= 0; i--) {
    const v = cpu.pop(vs);
    if (i !== 4) cpu.setReg(vs, i, v);
  }
  return;
}

function op_62(cpu: Cpu, _op: number): void {
  Sys.bound(cpu);
  return;
}

function op_63(cpu: Cpu, _op: number): void {
  Sys.arpl(cpu);
  return;
}

function op_68(cpu: Cpu, _op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  cpu.push(vs, cpu.fetchImmV());
  return;
}

function op_6a(cpu: Cpu, _op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  cpu.push(vs, cpu.fetchS8());
  return;
}

function op_69(cpu: Cpu, op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  cpu.decodeModrm();
  const a = cpu.readRm(vs);
  const b = op === 0x69 ? cpu.fetchImmV() : cpu.fetchS8();
  cpu.setReg(vs, cpu.reg, cpu.imul2(a, b, vs));
  return;
}

function op_6c(cpu: Cpu, op: number): void {
  cpu.stringOp(op);
  return;
}


function op_80(cpu: Cpu, op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  const s = op & 1 ? vs : 0;
  cpu.decodeModrm();
  const aop = cpu.reg;
  if (cpu.mod === 3) {
    const imm = op === 0x83 ? cpu.fetchS8() : cpu.fetchImm(s);
    if (s === 2) {
      const regs = cpu.regs;
      const r = cpu.alu(aop, regs[cpu.rm], imm, 2);
      if (aop !== 7) regs[cpu.rm] = r;
      return;
    }
    const r = cpu.alu(aop, cpu.getReg(s, cpu.rm), imm, s);
    if (aop !== 7) cpu.setReg(s, cpu.rm, r);
  } else if (aop === 7) {
    const imm = op === 0x83 ? cpu.fetchS8() : cpu.fetchImm(s);
    cpu.alu(7, cpu.read(s, cpu.eaSeg, cpu.eaOff), imm, s);
  } else {
    const imm = op === 0x83 ? cpu.fetchS8() : cpu.fetchImm(s);
    const la = cpu.rmwLin(s);
    const r = cpu.alu(aop, cpu.readLin(s, la), imm, s);
    cpu.writeLin(s, la, r);
  }
  return;
}

function op_84(cpu: Cpu, op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  const s = op & 1 ? vs : 0;
  cpu.decodeModrm();
  cpu.logic(cpu.readRm(s) & cpu.getReg(s, cpu.reg), s);
  return;
}

function op_86(cpu: Cpu, op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  const s = op & 1 ? vs : 0;
  cpu.decodeModrm();
  if (cpu.mod === 3) {
    const a = cpu.getReg(s, cpu.rm);
    cpu.setReg(s, cpu.rm, cpu.getReg(s, cpu.reg));
    cpu.setReg(s, cpu.reg, a);
  } else {
    const la = cpu.rmwLin(s);
    const a = cpu.readLin(s, la);
    cpu.writeLin(s, la, cpu.getReg(s, cpu.reg));
    cpu.setReg(s, cpu.reg, a);
  }
  return;
}

function op_88(cpu: Cpu, _op: number): void {
  cpu.decodeModrm();
  cpu.writeRm(0, cpu.r8[REG8[cpu.reg]]);
  return;
}

function op_89(cpu: Cpu, _op: number): void {
  const regs = cpu.regs;
  const vs = cpu.o32 ? 2 : 1;
  cpu.decodeModrm();
  if (vs === 2) {
    if (cpu.mod === 3) regs[cpu.rm] = regs[cpu.reg];
    else cpu.write32(cpu.eaSeg, cpu.eaOff, regs[cpu.reg]);
  } else if (cpu.mod === 3) cpu.setReg(vs, cpu.rm, cpu.getReg(vs, cpu.reg));
  else cpu.write(vs, cpu.eaSeg, cpu.eaOff, cpu.getReg(vs, cpu.reg));
  return;
}

function op_8a(cpu: Cpu, _op: number): void {
  cpu.decodeModrm();
  cpu.r8[REG8[cpu.reg]] = cpu.readRm(0);
  return;
}

function op_8b(cpu: Cpu, _op: number): void {
  const regs = cpu.regs;
  const vs = cpu.o32 ? 2 : 1;
  cpu.decodeModrm();
  if (vs === 2) regs[cpu.reg] = cpu.mod === 3 ? regs[cpu.rm] : cpu.read32(cpu.eaSeg, cpu.eaOff);
  else cpu.setReg(1, cpu.reg, cpu.readRm(1));
  return;
}

function op_8c(cpu: Cpu, _op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  cpu.decodeModrm();
  if (cpu.reg > 5) cpu.raiseUd();
  const v = cpu.segSel[cpu.reg];
  // To a register with 32-bit operand size the upper half is zeroed (modern processors).
  if (cpu.mod === 3) cpu.setReg(vs, cpu.rm, v);
  else cpu.write(1, cpu.eaSeg, cpu.eaOff, v);
  return;
}

function op_8d(cpu: Cpu, _op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  cpu.decodeModrm();
  if (cpu.mod === 3) cpu.raiseUd();
  cpu.setReg(vs, cpu.reg, cpu.eaOff);
  return;
}

function op_8e(cpu: Cpu, _op: number): void {
  cpu.decodeModrm();
  if (cpu.reg === C.CS || cpu.reg > 5) cpu.raiseUd();
  const sel = cpu.readRm(1);
  Sys.loadSeg(cpu, cpu.reg, sel);
  if (cpu.reg === C.SS) cpu.setShadow();
  return;
}

function op_8f(cpu: Cpu, _op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  // POP Ev: an ESP-based address uses ESP after the pop (Intel SDM POP), so decode after moving ESP.
  const v = cpu.peek(vs, 0);
  cpu.addSp(vs === 2 ? 4 : 2);
  cpu.decodeModrm();
  if (cpu.reg !== 0) cpu.raiseUd();
  cpu.writeRm(vs, v);
  return;
}

function op_90(cpu: Cpu, _op: number): void {
  if (cpu.rep === 1) cpu.pauseHint();
  return;
}

function op_91(cpu: Cpu, op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  const a = cpu.getReg(vs, 0);
  cpu.setReg(vs, 0, cpu.getReg(vs, op & 7));
  cpu.setReg(vs, op & 7, a);
  return;
}

function op_98(cpu: Cpu, _op: number): void {
  const regs = cpu.regs;
  const vs = cpu.o32 ? 2 : 1;
  if (vs === 2) regs[0] = (regs[0] << 16) >> 16;
  else cpu.r16[0] = (regs[0] << 24) >> 24;
  return;
}

function op_99(cpu: Cpu, _op: number): void {
  const regs = cpu.regs;
  const vs = cpu.o32 ? 2 : 1;
  if (vs === 2) regs[2] = regs[0] >> 31;
  else cpu.r16[4] = (regs[0] << 16) >> 31;
  return;
}

function op_9a(cpu: Cpu, _op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  const off = cpu.fetchImmV();
  const sel = cpu.fetch16();
  Sys.farCall(cpu, sel, off, vs);
  return;
}

function op_9b(cpu: Cpu, _op: number): void {
  if ((cpu.cr0 & (C.CR0_MP | C.CR0_TS)) === (C.CR0_MP | C.CR0_TS)) cpu.raise(C.EXC_NM);
  cpu.x87?.wait?.(cpu);
  return;
}

function op_9c(cpu: Cpu, _op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  Sys.pushf(cpu, vs);
  return;
}

function op_9d(cpu: Cpu, _op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  Sys.popf(cpu, vs);
  return;
}

function op_9e(cpu: Cpu, _op: number): void {
  cpu.setArith(cpu.r8[1], C.SF | C.ZF | C.AF | C.PF | C.CF);
  return;
}

function op_9f(cpu: Cpu, _op: number): void {
  cpu.r8[1] = (cpu.getFlags() & 0xd5) | 2;
  return;
}

function op_a0(cpu: Cpu, op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  const s = op & 1 ? vs : 0;
  const off = cpu.a32 ? cpu.fetch32() : cpu.fetch16();
  const seg = cpu.segOvr >= 0 ? cpu.segOvr : C.DS;
  if (op < 0xa2) cpu.setReg(s, 0, cpu.read(s, seg, off));
  else cpu.write(s, seg, off, cpu.getReg(s, 0));
  return;
}

function op_a8(cpu: Cpu, _op: number): void {
  cpu.logic(cpu.r8[0] & cpu.fetch8(), 0);
  return;
}

function op_a9(cpu: Cpu, _op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  cpu.logic(cpu.getReg(vs, 0) & cpu.fetchImmV(), vs);
  return;
}

function op_b0(cpu: Cpu, op: number): void {
  cpu.r8[REG8[op & 7]] = cpu.fetch8();
  return;
}

function op_b8(cpu: Cpu, op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  cpu.setReg(vs, op & 7, cpu.fetchImmV());
  return;
}

function op_c0(cpu: Cpu, op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  const s = op & 1 ? vs : 0;
  cpu.decodeModrm();
  const count = op < 0xd0 ? cpu.fetch8() : op < 0xd2 ? 1 : cpu.r8[4];
  if (cpu.mod === 3) cpu.setReg(s, cpu.rm, cpu.shift(cpu.reg, cpu.getReg(s, cpu.rm), count, s));
  else {
    const la = cpu.rmwLin(s);
    const r = cpu.shift(cpu.reg, cpu.readLin(s, la), count, s);
    cpu.writeLin(s, la, r);
  }
  return;
}

function op_c2(cpu: Cpu, _op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  const n = cpu.fetch16();
  const ip = cpu.pop(vs);
  cpu.jumpNear(ip);
  cpu.addSp(n);
  return;
}

function op_c3(cpu: Cpu, _op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  cpu.jumpNear(cpu.pop(vs));
  return;
}

function op_c4(cpu: Cpu, op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  cpu.decodeModrm();
  if (cpu.mod === 3) cpu.raiseUd();
  const off = cpu.read(vs, cpu.eaSeg, cpu.eaOff);
  const sel = cpu.read(1, cpu.eaSeg, (cpu.eaOff + (vs === 2 ? 4 : 2)) | 0);
  Sys.loadSeg(cpu, op === 0xc4 ? C.ES : C.DS, sel);
  cpu.setReg(vs, cpu.reg, off);
  return;
}

function op_c6(cpu: Cpu, op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  const s = op & 1 ? vs : 0;
  cpu.decodeModrm();
  if (cpu.reg !== 0) cpu.raiseUd();
  if (cpu.mod !== 3) {
    // The immediate follows the displacement: fetch it before the write.
    if (s === 0) cpu.write8(cpu.eaSeg, cpu.eaOff, cpu.fetch8());
    else if (s === 2) cpu.write32(cpu.eaSeg, cpu.eaOff, cpu.fetch32());
    else cpu.write(1, cpu.eaSeg, cpu.eaOff, cpu.fetch16());
    return;
  }
  cpu.setReg(s, cpu.rm, cpu.fetchImm(s));
}

function op_c8(cpu: Cpu, _op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  Sys.enter(cpu, cpu.fetch16(), cpu.fetch8() & 31, vs);
  return;
}

function op_c9(cpu: Cpu, _op: number): void {
  const regs = cpu.regs;
  const vs = cpu.o32 ? 2 : 1;
  // LEAVE: ESP = EBP, pop EBP.
  const v = cpu.read(vs, C.SS, cpu.stack32 ? regs[5] : regs[5] & 0xffff);
  if (cpu.stack32) regs[4] = (regs[5] + (vs === 2 ? 4 : 2)) | 0;
  else cpu.r16[8] = (regs[5] + (vs === 2 ? 4 : 2)) & 0xffff;
  cpu.setReg(vs, 5, v);
  return;
}

function op_ca(cpu: Cpu, _op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  Sys.farReturn(cpu, vs, cpu.fetch16());
  return;
}

function op_cb(cpu: Cpu, _op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  Sys.farReturn(cpu, vs, 0);
  return;
}

function op_cc(cpu: Cpu, _op: number): void {
  Sys.softwareInterrupt(cpu, 3, true);
  return;
}

function op_cd(cpu: Cpu, _op: number): void {
  Sys.softwareInterrupt(cpu, cpu.fetch8(), false);
  return;
}

function op_ce(cpu: Cpu, _op: number): void {
  if (cpu.getOF()) Sys.softwareInterrupt(cpu, 4, true);
  return;
}

function op_cf(cpu: Cpu, _op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  Sys.iret(cpu, vs);
  return;
}

function op_d4(cpu: Cpu, _op: number): void {
  const imm = cpu.fetch8();
  if (imm === 0) cpu.raise(C.EXC_DE);
  const al = cpu.r8[0];
  cpu.r8[1] = (al / imm) | 0;
  cpu.r8[0] = al % imm;
  cpu.resultFlags(cpu.r8[0], 0, 0);
  return;
}

function op_d5(cpu: Cpu, _op: number): void {
  const imm = cpu.fetch8();
  const r = (cpu.r8[0] + cpu.r8[1] * imm) & 0xff;
  cpu.r16[0] = r;
  cpu.resultFlags(r, 0, 0);
  return;
}

function op_d6(cpu: Cpu, _op: number): void {
  // SALC (undocumented, present on every IA-32 processor): AL = CF ? 0xFF : 0.
  cpu.r8[0] = cpu.getCF() ? 0xff : 0;
  return;
}

function op_d7(cpu: Cpu, _op: number): void {
  const regs = cpu.regs;
  const seg = cpu.segOvr >= 0 ? cpu.segOvr : C.DS;
  const off = cpu.a32 ? (regs[3] + cpu.r8[0]) | 0 : (regs[3] + cpu.r8[0]) & 0xffff;
  cpu.r8[0] = cpu.read(0, seg, off);
  return;
}

function op_d8(cpu: Cpu, op: number): void {
  cpu.decodeModrm();
  if (cpu.cr0 & (C.CR0_EM | C.CR0_TS)) cpu.raise(C.EXC_NM);
  const x87 = cpu.x87;
  if (!x87 || !x87.escape) cpu.raiseUd();
  x87.escape(cpu, op, cpu.modrm);
  return;
}

function op_e0(cpu: Cpu, op: number): void {
  const regs = cpu.regs;
  const d = cpu.fetchS8();
  let c: number;
  if (cpu.a32) c = regs[1] = (regs[1] - 1) | 0;
  else c = cpu.r16[2] = (regs[1] - 1) & 0xffff;
  const zf = op === 0xe2 ? true : cpu.getZF() === (op === 0xe1);
  if (c !== 0 && zf) cpu.jumpRel(d);
  return;
}

function op_e3(cpu: Cpu, _op: number): void {
  const regs = cpu.regs;
  const d = cpu.fetchS8();
  if ((cpu.a32 ? regs[1] : regs[1] & 0xffff) === 0) cpu.jumpRel(d);
  return;
}

function op_e4(cpu: Cpu, op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  const s = op & 1 ? vs : 0;
  const port = cpu.fetch8();
  cpu.setReg(s, 0, cpu.portIn(port, s));
  return;
}

function op_e6(cpu: Cpu, op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  const s = op & 1 ? vs : 0;
  const port = cpu.fetch8();
  cpu.portOut(port, s, cpu.getReg(s, 0));
  return;
}

function op_e8(cpu: Cpu, _op: number): void {
  const d = cpu.fetchImmV();
  cpu.callNear((cpu.eip + d) | 0);
  return;
}

function op_e9(cpu: Cpu, _op: number): void {
  cpu.jumpRel(cpu.fetchImmV());
  return;
}

function op_ea(cpu: Cpu, _op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  const off = cpu.fetchImmV();
  const sel = cpu.fetch16();
  Sys.farJump(cpu, sel, off, vs);
  return;
}

function op_eb(cpu: Cpu, _op: number): void {
  cpu.jumpRel(cpu.fetchS8());
  return;
}

function op_ec(cpu: Cpu, op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  const s = op & 1 ? vs : 0;
  cpu.setReg(s, 0, cpu.portIn(cpu.r16[4], s));
  return;
}

function op_ee(cpu: Cpu, op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  const s = op & 1 ? vs : 0;
  cpu.portOut(cpu.r16[4], s, cpu.getReg(s, 0));
  return;
}

function op_f1(cpu: Cpu, _op: number): void {
  // INT1/ICEBP: a #DB delivered like an external event (no DPL check).
  Sys.deliverInterrupt(cpu, C.EXC_DB, false, 0, true, true);
  return;
}

function op_f4(cpu: Cpu, _op: number): void {
  if (cpu.cpl !== 0 && cpu.protectedModeOrVm()) cpu.raiseGp(0);
  cpu.halted = true;
  cpu.exits.hlt++;
  cpu.attention = 1;
  return;
}

function op_f5(cpu: Cpu, _op: number): void {
  cpu.setArith(cpu.getFlags() ^ C.CF, C.CF);
  return;
}

function op_f6(cpu: Cpu, op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  cpu.group3(op & 1 ? vs : 0);
  return;
}

function op_f8(cpu: Cpu, _op: number): void {
  cpu.setArith(0, C.CF);
  return;
}

function op_f9(cpu: Cpu, _op: number): void {
  cpu.setArith(C.CF, C.CF);
  return;
}

function op_fa(cpu: Cpu, _op: number): void {
  Sys.cli(cpu);
  return;
}

function op_fb(cpu: Cpu, _op: number): void {
  Sys.sti(cpu);
  return;
}

function op_fc(cpu: Cpu, _op: number): void {
  cpu.flags &= ~C.DF;
  return;
}

function op_fd(cpu: Cpu, _op: number): void {
  cpu.flags |= C.DF;
  return;
}

function op_fe(cpu: Cpu, op: number): void {
  const vs = cpu.o32 ? 2 : 1;
  cpu.group45(op === 0xff ? vs : 0);
  return;
}


function jcc8_0(cpu: Cpu, _op: number): void {
  const d = cpu.fetchS8();
  if (cpu.getOF()) cpu.jumpRel(d);
}

function jcc8_1(cpu: Cpu, _op: number): void {
  const d = cpu.fetchS8();
  if (!cpu.getOF()) cpu.jumpRel(d);
}

function jcc8_2(cpu: Cpu, _op: number): void {
  const d = cpu.fetchS8();
  if (cpu.getCF() !== 0) cpu.jumpRel(d);
}

function jcc8_3(cpu: Cpu, _op: number): void {
  const d = cpu.fetchS8();
  if (cpu.getCF() === 0) cpu.jumpRel(d);
}

function jcc8_4(cpu: Cpu, _op: number): void {
  const d = cpu.fetchS8();
  if (cpu.getZF()) cpu.jumpRel(d);
}

function jcc8_5(cpu: Cpu, _op: number): void {
  const d = cpu.fetchS8();
  if (!cpu.getZF()) cpu.jumpRel(d);
}

function jcc8_6(cpu: Cpu, _op: number): void {
  const d = cpu.fetchS8();
  if (cpu.getCF() !== 0 || cpu.getZF()) cpu.jumpRel(d);
}

function jcc8_7(cpu: Cpu, _op: number): void {
  const d = cpu.fetchS8();
  if (cpu.getCF() === 0 && !cpu.getZF()) cpu.jumpRel(d);
}

function jcc8_8(cpu: Cpu, _op: number): void {
  const d = cpu.fetchS8();
  if (cpu.getSF()) cpu.jumpRel(d);
}

function jcc8_9(cpu: Cpu, _op: number): void {
  const d = cpu.fetchS8();
  if (!cpu.getSF()) cpu.jumpRel(d);
}

function jcc8_a(cpu: Cpu, _op: number): void {
  const d = cpu.fetchS8();
  if (cpu.getPF()) cpu.jumpRel(d);
}

function jcc8_b(cpu: Cpu, _op: number): void {
  const d = cpu.fetchS8();
  if (!cpu.getPF()) cpu.jumpRel(d);
}

function jcc8_c(cpu: Cpu, _op: number): void {
  const d = cpu.fetchS8();
  if (cpu.getSF() !== cpu.getOF()) cpu.jumpRel(d);
}

function jcc8_d(cpu: Cpu, _op: number): void {
  const d = cpu.fetchS8();
  if (cpu.getSF() === cpu.getOF()) cpu.jumpRel(d);
}

function jcc8_e(cpu: Cpu, _op: number): void {
  const d = cpu.fetchS8();
  if (cpu.getZF() || cpu.getSF() !== cpu.getOF()) cpu.jumpRel(d);
}

function jcc8_f(cpu: Cpu, _op: number): void {
  const d = cpu.fetchS8();
  if (!cpu.getZF() && cpu.getSF() === cpu.getOF()) cpu.jumpRel(d);
}

/** INC r32 (40+r with 32-bit operands) without the size dispatch. */
function incReg(cpu: Cpu, op: number): void {
  if (!cpu.o32) {
    op_40(cpu, op);
    return;
  }
  const r = op & 7;
  cpu.regs[r] = cpu.inc(cpu.regs[r], 2);
}

/** DEC r32 (48+r). */
function decReg(cpu: Cpu, op: number): void {
  if (!cpu.o32) {
    op_48(cpu, op);
    return;
  }
  const r = op & 7;
  cpu.regs[r] = cpu.dec(cpu.regs[r], 2);
}


/** One-byte opcode map: a handler per opcode (each small enough for V8 to inline its helpers). */
const OPS: ((cpu: Cpu, op: number) => void)[] = [
  op_00, op_00, op_00, op_00, op_00, op_00, op_06, op_07,
  op_00, op_00, op_00, op_00, op_00, op_00, op_06, op_0f,
  op_00, op_00, op_00, op_00, op_00, op_00, op_06, op_07,
  op_00, op_00, op_00, op_00, op_00, op_00, op_06, op_07,
  op_00, op_00, op_00, op_00, op_00, op_00, op_26, op_27,
  op_00, op_00, op_00, op_00, op_00, op_00, op_26, op_2f,
  op_00, op_00, op_00, op_00, op_00, op_00, op_26, op_37,
  op_00, op_00, op_00, op_00, op_00, op_00, op_26, op_3f,
  incReg, incReg, incReg, incReg, incReg, incReg, incReg, incReg,
  decReg, decReg, decReg, decReg, decReg, decReg, decReg, decReg,
  op_50, op_50, op_50, op_50, op_50, op_50, op_50, op_50,
  op_58, op_58, op_58, op_58, op_58, op_58, op_58, op_58,
  op_60, op_61, op_62, op_63, op_64, op_64, op_66, op_67,
  op_68, op_69, op_6a, op_69, op_6c, op_6c, op_6c, op_6c,
  jcc8_0, jcc8_1, jcc8_2, jcc8_3, jcc8_4, jcc8_5, jcc8_6, jcc8_7,
  jcc8_8, jcc8_9, jcc8_a, jcc8_b, jcc8_c, jcc8_d, jcc8_e, jcc8_f,
  op_80, op_80, op_80, op_80, op_84, op_84, op_86, op_86,
  op_88, op_89, op_8a, op_8b, op_8c, op_8d, op_8e, op_8f,
  op_90, op_91, op_91, op_91, op_91, op_91, op_91, op_91,
  op_98, op_99, op_9a, op_9b, op_9c, op_9d, op_9e, op_9f,
  op_a0, op_a0, op_a0, op_a0, op_6c, op_6c, op_6c, op_6c,
  op_a8, op_a9, op_6c, op_6c, op_6c, op_6c, op_6c, op_6c,
  op_b0, op_b0, op_b0, op_b0, op_b0, op_b0, op_b0, op_b0,
  op_b8, op_b8, op_b8, op_b8, op_b8, op_b8, op_b8, op_b8,
  op_c0, op_c0, op_c2, op_c3, op_c4, op_c4, op_c6, op_c6,
  op_c8, op_c9, op_ca, op_cb, op_cc, op_cd, op_ce, op_cf,
  op_c0, op_c0, op_c0, op_c0, op_d4, op_d5, op_d6, op_d7,
  op_d8, op_d8, op_d8, op_d8, op_d8, op_d8, op_d8, op_d8,
  op_e0, op_e0, op_e0, op_e3, op_e4, op_e4, op_e6, op_e6,
  op_e8, op_e9, op_ea, op_eb, op_ec, op_ec, op_ee, op_ee,
  op_f0, op_f1, op_f2, op_f3, op_f4, op_f5, op_f6, op_f6,
  op_f8, op_f9, op_fa, op_fb, op_fc, op_fd, op_fe, op_fe,
];
