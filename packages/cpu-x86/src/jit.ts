// The block compiler: hot decoded blocks (decoder.ts records) become
// JavaScript functions built with `new Function`, specialised on each
// record's operands. It sits on top of the decoded-block interpreter
// (record-ops.ts) and agrees with it instruction by instruction:
//
// - A compiled function covers a region: a hot block and the decoded blocks
//   reachable from it by direct branches that the interpreter ran often.
//   Inside it, control moves between blocks through a switch on EIP's
//   offset from the entry page's start, so loops that span blocks stay in
//   one function; any target it does not hold returns to the run loop.
//   With 32-bit code, blocks of a few neighbouring pages may join (a loop
//   or a call that crosses a page boundary: Linux's decompressor spent a
//   fifth of its time going through the run loop for one such loop). A
//   block of another page starts with a check that its linear page still
//   translates, for execution, to the host page it was decoded from (its
//   execute TLB entry); a write to any of the region's pages drops it. Every exit of a block only
//   sets constants and goes back to the loop head: V8 compiles code that
//   never ran before it optimized the function as a deoptimization, so
//   rarely taken exits must need no type feedback.
// - Guest registers and the lazy-flag state live in JavaScript locals while
//   the function runs. They are written back when it returns, and before
//   every call that may throw (the byte-by-byte interpreter running an
//   instruction the compiler does not know, a segment check that is not
//   flat, a #GP for a branch past the CS limit), so an exception sees
//   exactly the state the interpreter would have left.
// - Faults: those same call sites also store `sliceCount`, `blockEip`,
//   `blockRec` and `blockN` (constants but for the count), which is all
//   Cpu.faultRestore needs to rebuild EIP from the block's records. There
//   is no try/catch: a handler reading the locals would keep every one of
//   them alive at every point that might throw. ESP is written only after
//   an instruction's last check, as in the interpreter.
// - A block runs only when the slice budget holds all of it (otherwise the
//   interpreter runs it and stops mid-block).
// - Memory accesses that miss the TLB, are misaligned (so also any that
//   crosses a page) or go to MMIO or a code page leave the function before
//   their instruction, which the interpreter then runs: the slow path is
//   the interpreter's, and the compiled one holds only constants. Like
//   QEMU's softmmu fast path, the hit test includes the alignment: a byte
//   by byte path in every access made regions a third larger, which V8
//   then took longer to optimize (booting Linux was 6% slower).
//   `attention` can then only be set by an instruction the interpreter
//   runs for the region, and is checked after each.
// - A region is specialised on what held when it was compiled and checks it
//   on entry and after every instruction the interpreter runs for it: flat
//   segments, the stack size, and the MMU's TLB tag set (supervisor or user
//   pages). The tag arrays are then constants of the function, which lets V8
//   compile each guest access to one compare against a fixed address.
// - Compiled code belongs to block ids, so it is dropped exactly when the
//   decoded blocks are (a write to the page, a full flush, an EPT change);
//   the cache of functions is bounded in number and in source size.
import type { Cpu } from "./cpu.js";
import { GENERIC_BLOCK, REC_STRIDE, type DecodeCacheListener } from "./decode-cache.js";
import { ES, PARITY } from "./constants.js";
import * as D from "./decoder.js";

/** Options of the block compiler (`x86Cpu({ jit })`, `new Cpu(..., { jit })`). */
export interface JitOptions {
  /**
   * Times a block starts in the interpreter before it is compiled (default
   * {@link DEFAULT_JIT_THRESHOLD}); 0 compiles every block the first time it runs.
   */
  threshold?: number;
}

/**
 * Block starts before a block is compiled, unless configured. High on
 * purpose: V8 parses, interprets and then optimizes each generated function,
 * which only pays off for code that keeps running. Booting Linux
 * (bench/boot-linux, kernel initialisation runs mostly once) took 19.7 s at
 * 1000, 17.2 s at 5000, 15.3 s at 20000 and 14.3 s at 60000, while the
 * decompressor's loops reach any of these within milliseconds.
 */
export const DEFAULT_JIT_THRESHOLD = 60000;

/**
 * A compiled region: runs from EIP with `n` instructions retired in the
 * slice; returns the new count, or its complement (`~count`, negative)
 * when the interpreter must run the instruction at the new EIP (the region
 * cannot run here, or an access took a slow path).
 */
export type RegionFn = (eip: number, n: number, budget: number) => number;

/** Pages a region's blocks come from at most (the entry page included). */
const MAX_REGION_PAGES = 4;
/** Blocks per region at most. */
const MAX_REGION_BLOCKS = 48;
/** Instructions per region at most (keeps functions within what V8's optimizing compiler accepts). */
const MAX_REGION_INSNS = 320;
/** Generated characters of a region's blocks at most (V8 does not optimize functions above 60 KiB of bytecode). */
const MAX_REGION_SOURCE = 40_000;
/** Live regions at most; one more drops them all (like a translation-cache flush). */
const MAX_REGIONS = 4096;
/** Total generated source (characters) at most before everything compiled is dropped. */
const MAX_SOURCE_CHARS = 24 << 20;

/** The factory's views of the host arena by access size (8, 16, 32 bits); the TLB gives each page's byte offset in it. */
const VIEWS = ["M8", "M16", "M32"];

/** CF of a lazy-flag state (mirrors Cpu.getCF). */
export function cfOf(fl: number, lz: number, op: number, a: number, b: number, r: number, s: number, c: number): number {
  if ((lz & 1) === 0) return fl & 1;
  const m = s === 2 ? -1 : s === 1 ? 0xffff : 0xff;
  switch (op) {
    case 1:
      return (r & m) >>> 0 < (a & m) >>> 0 ? 1 : 0;
    case 2:
      return (c !== 0 ? (r & m) >>> 0 <= (a & m) >>> 0 : (r & m) >>> 0 < (a & m) >>> 0) ? 1 : 0;
    case 3:
      return (a & m) >>> 0 < (b & m) >>> 0 ? 1 : 0;
    case 4:
      return (c !== 0 ? (a & m) >>> 0 <= (b & m) >>> 0 : (a & m) >>> 0 < (b & m) >>> 0) ? 1 : 0;
    default:
      return 0;
  }
}

/**
 * Whether the product of two int32 values overflows 32 bits (IMUL's CF and
 * OF): the exact product is a double below 2^53 and differs from the
 * wrapped one exactly when it overflows. Regions call this rather than
 * multiplying inline. V8 compiles a multiply that has only seen small
 * results as an integer multiply that deoptimizes on overflow, and a
 * region's first overflowing product would then deoptimize the whole
 * region. This function's feedback is shared by every region that inlines
 * it, and the call below records a product past 2^31 before any region
 * runs, so V8 compiles it as a double multiply.
 */
export function imulOverflows(a: number, b: number): boolean {
  return a * b !== Math.imul(a, b);
}
imulOverflows(0x10000, 0x10000);

/** Condition `cc` of a lazy-flag state (mirrors Cpu.cond). */
export function condOf(cc: number, fl: number, lz: number, op: number, a: number, b: number, r: number, s: number, c: number): boolean {
  const sign = s === 2 ? -0x80000000 : s === 1 ? 0x8000 : 0x80;
  const m = s === 2 ? -1 : s === 1 ? 0xffff : 0xff;
  let t: boolean;
  const zf = (lz & 0x40) !== 0 ? (r & m) === 0 : (fl & 0x40) !== 0;
  const sf = (lz & 0x80) !== 0 ? (r & sign) !== 0 : (fl & 0x80) !== 0;
  let of: boolean;
  if ((lz & 0x800) === 0) of = (fl & 0x800) !== 0;
  else if (op === 1 || op === 2) of = ((a ^ r) & (b ^ r) & sign) !== 0;
  else if (op === 3 || op === 4) of = ((a ^ b) & (a ^ r) & sign) !== 0;
  else of = false;
  switch (cc >> 1) {
    case 0:
      t = of;
      break;
    case 1:
      t = cfOf(fl, lz, op, a, b, r, s, c) !== 0;
      break;
    case 2:
      t = zf;
      break;
    case 3:
      t = zf || cfOf(fl, lz, op, a, b, r, s, c) !== 0;
      break;
    case 4:
      t = sf;
      break;
    case 5:
      t = (lz & 4) !== 0 ? PARITY[r & 0xff] !== 0 : (fl & 4) !== 0;
      break;
    case 6:
      t = sf !== of;
      break;
    default:
      t = zf || sf !== of;
  }
  return (cc & 1) === 0 ? t : !t;
}

/** What the compiler knows about the lazy-flag locals at a point of a block (-1: unknown). */
interface FlagState {
  op: number;
  s: number;
  lz: number;
}

const UNKNOWN: FlagState = { op: -1, s: -1, lz: -1 };
const MASKS = ["255", "65535", "-1"];
const SIGNS = ["128", "32768", "-2147483648"];
const SHIFTS = [24, 16, 0];

/** Which registers a region reads and writes, and which segments it addresses. */
interface Usage {
  regs: number;
  written: number;
  segs: number;
  /** Segments assumed fast (checked on entry). */
  guard: number;
}

/**
 * Generates the source of one region. Emits code for each record kind in
 * the order of checks of record-ops.ts and the Cpu helpers it calls.
 */
class RegionGen {
  private readonly out: string[] = [];
  private t = 0;
  /** The flag state the code emitted so far leaves (within the current block). */
  private fs: FlagState = UNKNOWN;
  readonly use: Usage = { regs: 0, written: 0, segs: 0, guard: 0 };
  /**
   * The exit a slow memory path takes: back to the run loop before the
   * current instruction (block-relative count, page offset), which the
   * interpreter then runs. Set by compileBlock for each instruction.
   */
  private slowExit = "";

  constructor(
    private readonly rec: Int32Array,
    private readonly code32: boolean,
    /** Segments (bit per register) that were flat and checked-free at compile time. */
    private readonly fastSegs: number,
    /** SS.B at compile time. */
    readonly stack32: boolean,
    /** EIP span (relative to the entry page's start) of the region's pages, which the prologue checked against the CS limit. */
    readonly spanLo = 0,
    readonly spanHi = 4095,
  ) {}

  /** Expression: whether EIP `t` (a local) lies outside the region's pages, so a transfer there needs the CS limit check. */
  outsideSpan(t: string): string {
    return this.spanLo === 0 ? `((${t} - pb) >>> 0) > ${this.spanHi}` : `((${t} - pb + ${-this.spanLo}) >>> 0) > ${this.spanHi - this.spanLo}`;
  }

  /** Most temporaries one instruction used (the function declares that many). */
  maxTemps = 0;

  /**
   * A temporary for the current instruction. Temporaries are function-level
   * locals reused by every instruction: V8's interpreter gives each declared
   * variable its own frame slot, and big frames make every call slow.
   */
  tmp(): string {
    const name = `t${this.t++}`;
    if (this.t > this.maxTemps) this.maxTemps = this.t;
    return name;
  }

  /** Starts an instruction: its temporaries start over. */
  resetTemps(): void {
    this.t = 0;
  }

  emit(s: string): void {
    this.out.push(s);
    this.size += s.length + 1;
  }

  source(): string {
    return this.out.join("\n");
  }

  /** Characters emitted so far. */
  size = 0;

  /** A point to {@link RegionGen.rewind} to. */
  mark(): number {
    return this.out.length;
  }

  /** Drops what was emitted after `mark`. */
  rewind(mark: number): void {
    for (let i = mark; i < this.out.length; i++) this.size -= this.out[i].length + 1;
    this.out.length = mark;
  }

  // ------------------------------------------------------------ registers

  /** Expression: register `i` of size `s` (8-bit: AL..BH). */
  reg(s: number, i: number): string {
    if (s === 2) {
      this.use.regs |= 1 << i;
      return `r${i}`;
    }
    if (s === 1) {
      this.use.regs |= 1 << i;
      return `(r${i} & 65535)`;
    }
    if (i < 4) {
      this.use.regs |= 1 << i;
      return `(r${i} & 255)`;
    }
    this.use.regs |= 1 << (i - 4);
    return `((r${i - 4} >> 8) & 255)`;
  }

  /** Statement: register `i` of size `s` = `v` (truncated as Cpu.setReg does). */
  setReg(s: number, i: number, v: string): string {
    if (s === 2) {
      this.use.regs |= 1 << i;
      this.use.written |= 1 << i;
      return `r${i} = ${v};`;
    }
    if (s === 1) {
      this.use.regs |= 1 << i;
      this.use.written |= 1 << i;
      return `r${i} = (r${i} & -65536) | ((${v}) & 65535);`;
    }
    if (i < 4) {
      this.use.regs |= 1 << i;
      this.use.written |= 1 << i;
      return `r${i} = (r${i} & -256) | ((${v}) & 255);`;
    }
    const j = i - 4;
    this.use.regs |= 1 << j;
    this.use.written |= 1 << j;
    return `r${j} = (r${j} & -65281) | (((${v}) & 255) << 8);`;
  }

  // ------------------------------------------------------------ memory

  /** Expression: the offset of record `r`'s memory operand (decode-cache word 1 and 2). */
  ea(r: number): string {
    const w = this.rec[r + 1];
    const base = w & 15;
    const index = (w >> 4) & 15;
    const disp = this.rec[r + 2];
    if ((w & D.EA16) === 0) {
      const parts: string[] = [];
      if (base !== D.NO_REG) parts.push(this.reg(2, base));
      if (index !== D.NO_REG) {
        const sc = (w >> 8) & 3;
        parts.push(sc === 0 ? this.reg(2, index) : `(${this.reg(2, index)} << ${sc})`);
      }
      if (parts.length === 0) return `${disp | 0}`;
      if (disp !== 0) parts.push(`${disp}`);
      return parts.length === 1 ? parts[0] : `((${parts.join(" + ")}) | 0)`;
    }
    const parts: string[] = [];
    if (base !== D.NO_REG) parts.push(this.reg(1, base));
    if (index !== D.NO_REG) parts.push(this.reg(1, index));
    if (parts.length === 0) return `${disp & 0xffff}`;
    parts.push(`${disp}`);
    return `((${parts.join(" + ")}) & 65535)`;
  }

  /** Segment of record `r`'s memory operand. */
  seg(r: number): number {
    return (this.rec[r + 1] >> 12) & 7;
  }

  /**
   * Expression: the linear address of `seg`:`off` (`off` a local). A
   * segment that was flat and checked-free (Cpu.segFast) when the region
   * was compiled is assumed to stay so: the function checks that on entry
   * and after the interpreter ran an instruction, and leaves otherwise.
   */
  linExpr(seg: number, off: string, len: number, write: boolean): string {
    this.use.segs |= 1 << seg;
    if ((this.fastSegs >> seg) & 1) {
      this.use.guard |= 1 << seg;
      return `(sb${seg} + ${off}) | 0`;
    }
    return `sf${seg} === 1 ? (sb${seg} + ${off}) | 0 : (${this.beforeThrowExpr()}, cpu.linSlow(${seg}, ${off}, ${len}, ${write}))`;
  }

  /** Expression: the stack pointer as the stack size sees it (SS.B, assumed as at compile time). */
  sp(reg: number): string {
    this.use.regs |= 1 << reg;
    return this.stack32 ? `r${reg}` : `(r${reg} & 65535)`;
  }

  /** Statement: ESP = `v32` (the new 32-bit value; a 16-bit stack keeps ESP's upper half). */
  setSp(v32: string): string {
    this.use.regs |= 1 << 4;
    this.use.written |= 1 << 4;
    return this.stack32 ? `r4 = ${v32};` : `r4 = (r4 & -65536) | ((${v32}) & 65535);`;
  }

  /** Emits `const la = linear address of seg:off` for an access of `len` bytes, with the segment checks. */
  lin(seg: number, off: string, len: number, write: boolean): string {
    this.use.segs |= 1 << seg;
    const o = this.tmp();
    const la = this.tmp();
    this.emit(`${o} = ${off};`);
    this.emit(`${la} = ${this.linExpr(seg, o, len, write)};`);
    return la;
  }

  /**
   * Emits the TLB lookup of an access of size `s` at linear `la` through
   * the tag array `tags` ("TR" or "TW") and returns its pieces: the test of
   * an aligned hit, and the element it reads or writes (its view and index).
   */
  private lookup(tags: string, s: number, la: string): { aligned: string; elem: string; index: string; view: string } {
    const vp = this.tmp();
    const ti = this.tmp();
    this.emit(`${vp} = ${la} >>> 12; ${ti} = ${vp} & 16383;`);
    const byte = `OFS[${ti}] + (${la} & 4095)`;
    const view = VIEWS[s];
    const index = s === 0 ? byte : `(${byte}) >> ${s}`;
    return {
      aligned: s === 0 ? `${tags}[${ti}] === ${vp}` : `${tags}[${ti}] === ${vp} && (${la} & ${(1 << s) - 1}) === 0`,
      elem: `${view}[${index}]`,
      index,
      view,
    };
  }

  /** Emits a read of size `s` at linear `la` into a new local; returns its name. */
  read(s: number, la: string): string {
    const v = this.tmp();
    const a = this.lookup("TR", s, la);
    this.emit(`if (${a.aligned}) ${v} = ${a.elem}; else ${this.slowExit}`);
    return v;
  }

  /** Emits a write of size `s` of `v` at linear `la`. */
  write(s: number, la: string, v: string): void {
    const a = this.lookup("TW", s, la);
    this.emit(`if (${a.aligned}) ${a.elem} = ${v}; else ${this.slowExit}`);
  }

  /**
   * Read-modify-write of size `s` at `la` (checked for writing): emits the
   * read, calls `compute(value)` for the statements and the result
   * expression, then the write. The TLB entry is checked for writing
   * before the read, so the write needs no check of its own.
   */
  rmw(s: number, la: string, compute: (x: string) => string): void {
    const x = this.tmp();
    const ix = this.tmp();
    const a = this.lookup("TW", s, la);
    this.emit(`if (${a.aligned}) { ${ix} = ${a.index}; ${x} = ${a.view}[${ix}]; } else ${this.slowExit}`);
    this.emit(`${a.view}[${ix}] = ${compute(x)};`);
  }

  // ------------------------------------------------------------ flags

  /** Expression: CF (0 or 1) from the current flag state. */
  cf(): string {
    const f = this.fs;
    if (f.lz < 0) return `cfOf(fl, lz, fO, fA, fB, fR, fS, fC)`;
    if ((f.lz & 1) === 0) return `(fl & 1)`;
    const m = MASKS[f.s];
    const u = (v: string): string => (f.s === 2 ? `(${v} >>> 0)` : `((${v} & ${m}) >>> 0)`);
    switch (f.op) {
      case 1:
        return `(${u("fR")} < ${u("fA")} ? 1 : 0)`;
      case 2:
        return `((fC !== 0 ? ${u("fR")} <= ${u("fA")} : ${u("fR")} < ${u("fA")}) ? 1 : 0)`;
      case 3:
        return `(${u("fA")} < ${u("fB")} ? 1 : 0)`;
      case 4:
        return `((fC !== 0 ? ${u("fA")} <= ${u("fB")} : ${u("fA")} < ${u("fB")}) ? 1 : 0)`;
      default:
        return "0";
    }
  }

  /** Expression: condition `cc` (boolean) from the current flag state. */
  cond(cc: number): string {
    const f = this.fs;
    if (f.lz < 0) return `condOf(${cc}, fl, lz, fO, fA, fB, fR, fS, fC)`;
    const neg = (cc & 1) !== 0;
    const m = MASKS[f.s];
    const sign = SIGNS[f.s];
    const sh = SHIFTS[f.s];
    const shl = (v: string): string => (sh === 0 ? v : `(${v} << ${sh})`);
    const zf = (f.lz & 0x40) !== 0 ? (f.s === 2 ? `(fR === 0)` : `((fR & ${m}) === 0)`) : `((fl & 64) !== 0)`;
    const sf = (f.lz & 0x80) !== 0 ? `(${shl("fR")} < 0)` : `((fl & 128) !== 0)`;
    let of: string;
    if ((f.lz & 0x800) === 0) of = `((fl & 2048) !== 0)`;
    else if (f.op === 1 || f.op === 2) of = `(((fA ^ fR) & (fB ^ fR) & ${sign}) !== 0)`;
    else if (f.op === 3 || f.op === 4) of = `(((fA ^ fB) & (fA ^ fR) & ${sign}) !== 0)`;
    else of = "false";
    const cf = `(${this.cf()} !== 0)`;
    // A full SUB/CMP state: the orders come straight from the operands (as record-ops.ts condition()).
    const sub = f.op === 3 && (f.lz & 0x8c1) === 0x8c1;
    const logic = f.op === 0 && (f.lz & 0x8c1) === 0x8c1;
    let t: string;
    switch (cc >> 1) {
      case 0:
        t = of;
        break;
      case 1:
        t = sub ? `(${shl("fA")} >>> 0 < ${shl("fB")} >>> 0)` : logic ? "false" : cf;
        break;
      case 2:
        t = zf;
        break;
      case 3:
        t = sub ? `(${shl("fA")} >>> 0 <= ${shl("fB")} >>> 0)` : logic ? zf : `(${cf} || ${zf})`;
        break;
      case 4:
        t = sf;
        break;
      case 5:
        t = (f.lz & 4) !== 0 ? `(PAR[fR & 255] !== 0)` : `((fl & 4) !== 0)`;
        break;
      case 6:
        t = sub ? `(${shl("fA")} < ${shl("fB")})` : logic ? sf : `(${sf} !== ${of})`;
        break;
      default:
        t = sub ? `(${shl("fA")} <= ${shl("fB")})` : logic ? `(${shl("fR")} <= 0)` : `(${zf} || ${sf} !== ${of})`;
    }
    return neg ? `!${t}` : t;
  }

  /** Emits ALU op `aop` (ADD OR ADC SBB AND SUB XOR CMP) on expressions `a`, `b` of size `s`; returns the result's local (as Cpu.alu). */
  alu(aop: number, a: string, b: string, s: number): string {
    const x = this.tmp();
    const y = this.tmp();
    const r = this.tmp();
    this.emit(`${x} = ${a}; ${y} = ${b};`);
    let op: number;
    switch (aop) {
      case 0:
        this.emit(`${r} = (${x} + ${y}) | 0;`);
        op = 1;
        break;
      case 1:
        this.emit(`${r} = ${x} | ${y};`);
        op = 0;
        break;
      case 2: {
        const c = this.tmp();
        this.emit(`${c} = ${this.cf()}; ${r} = (${x} + ${y} + ${c}) | 0; fC = ${c};`);
        op = 2;
        break;
      }
      case 3: {
        const c = this.tmp();
        this.emit(`${c} = ${this.cf()}; ${r} = (${x} - ${y} - ${c}) | 0; fC = ${c};`);
        op = 4;
        break;
      }
      case 4:
        this.emit(`${r} = ${x} & ${y};`);
        op = 0;
        break;
      case 6:
        this.emit(`${r} = ${x} ^ ${y};`);
        op = 0;
        break;
      default:
        this.emit(`${r} = (${x} - ${y}) | 0;`);
        op = 3;
    }
    this.emit(`${this.kOp(op)}fA = ${x}; fB = ${y}; fR = ${r}; ${this.kSL(s, 0x8d5)}`);
    this.fs = { op, s, lz: 0x8d5 };
    return r;
  }

  /** Flags of a logical result (Cpu.logic). */
  logic(r: string, s: number): void {
    this.emit(`${this.kOp(0)}fR = ${r}; ${this.kSL(s, 0x8d5)}`);
    this.fs = { op: 0, s, lz: 0x8d5 };
  }

  /** INC/DEC of the value `x` of size `s`: keeps CF (Cpu.keepCF), returns the result's local. */
  incDec(x: string, s: number, dec: boolean): string {
    const f = this.fs;
    if (f.lz < 0) this.emit(`if ((lz & 1) !== 0) fl = (fl & -2) | cfOf(fl, lz, fO, fA, fB, fR, fS, fC);`);
    else if ((f.lz & 1) !== 0) this.emit(`fl = (fl & -2) | ${this.cf()};`);
    const a = this.tmp();
    const r = this.tmp();
    this.emit(`${a} = ${x}; ${r} = (${a} ${dec ? "-" : "+"} 1) | 0;`);
    this.emit(`${this.kOp(dec ? 3 : 1)}fA = ${a}; fB = 1; fR = ${r}; ${this.kSL(s, 0x8d4)}`);
    this.fs = { op: dec ? 3 : 1, s, lz: 0x8d4 };
    return r;
  }

  /** Cpu.resultFlags: SF/ZF/PF lazy from `r`, CF/OF/AF from the expression `direct`. */
  resultFlags(r: string, s: number, direct: string): void {
    this.emit(`fl = (fl & -2262) | ${direct}; ${this.kOp(0)}fR = ${r}; ${this.kSL(s, 0xc4)}`);
    this.fs = { op: 0, s, lz: 0xc4 };
  }

  /** Writes the flag locals to the CPU (before a helper that reads or changes them). */
  flagsOut(): string {
    return "cpu.flags = fl; cpu.lazy = lz; cpu.fOp = fO; cpu.fA = fA; cpu.fB = fB; cpu.fR = fR; cpu.fS = fS; cpu.fC = fC;";
  }

  /** Reads the flag locals back from the CPU. */
  flagsIn(): string {
    return "fl = cpu.flags; lz = cpu.lazy; fO = cpu.fOp; fA = cpu.fA; fB = cpu.fB; fR = cpu.fR; fS = cpu.fS; fC = cpu.fC;";
  }

  // ------------------------------------------------------------ instructions

  /** Shift/rotate `sub & 7` of the value `v` (size `s`) by `count` (an expression already masked to 0..31); returns the result's local. */
  shift(op: number, v: string, count: string, s: number, constCount: number): string {
    const bits = 8 << s;
    const m = MASKS[s];
    const r = this.tmp();
    const x = this.tmp();
    const c = this.tmp();
    const cf = this.tmp();
    const of = this.tmp();
    const k = this.tmp();
    this.emit(`${x} = ${s === 2 ? v : `(${v}) & ${m}`}; ${c} = ${count}; ${r} = ${x};`);
    if (constCount === 0) return x; // no operation: the value and the flags stay
    const body: string[] = [];
    if (op === 4 || op === 6) {
      if (s === 2) body.push(`${r} = ${x} << ${c}; ${cf} = (${x} >>> (32 - ${c})) & 1;`);
      else body.push(`if (${c} < ${bits}) { ${r} = (${x} << ${c}) & ${m}; ${cf} = (${x} >>> (${bits} - ${c})) & 1; } else { ${r} = 0; ${cf} = ${c} === ${bits} ? ${x} & 1 : 0; }`);
      body.push(`${of} = ((${r} >>> ${bits - 1}) & 1) ^ ${cf};`);
      body.push(`fl = (fl & -2262) | ${cf} | (${of} << 11); ${this.kOp(0)}fR = ${r}; ${this.kSL(s, 0xc4)}`);
    } else if (op === 5) {
      if (s === 2) body.push(`${r} = ${x} >>> ${c}; ${cf} = (${x} >>> (${c} - 1)) & 1;`);
      else body.push(`if (${c} < ${bits}) { ${r} = ${x} >>> ${c}; ${cf} = (${x} >>> (${c} - 1)) & 1; } else { ${r} = 0; ${cf} = ${c} === ${bits} ? (${x} >>> ${bits - 1}) & 1 : 0; }`);
      body.push(`${of} = ${c} === 1 ? (${x} >>> ${bits - 1}) & 1 : 0;`);
      // The 32-bit SHR result is stored as int32 (as Cpu.shift's `& m` with m = -1 does).
      body.push(`${s === 2 ? `${r} = ${r} | 0; ` : ""}fl = (fl & -2262) | ${cf} | (${of} << 11); ${this.kOp(0)}fR = ${r}; ${this.kSL(s, 0xc4)}`);
    } else if (op === 7) {
      const sv = of; // SAR has no OF to compute: its temporary holds the sign-extended value
      body.push(`${sv} = ${s === 2 ? x : `(${x} << ${32 - bits}) >> ${32 - bits}`};`);
      body.push(`${k} = ${c} < ${bits} ? ${c} : ${bits - 1};`);
      body.push(`${r} = (${sv} >> ${k}) & ${m};`);
      body.push(`${cf} = ${c} < ${bits} ? (${sv} >> (${c} - 1)) & 1 : ${sv} < 0 ? 1 : 0;`);
      body.push(`fl = (fl & -2262) | ${cf}; ${this.kOp(0)}fR = ${r}; ${this.kSL(s, 0xc4)}`);
    } else if (op === 0 || op === 1) {
      // ROL/ROR: CF and OF replace the materialized flags (Cpu.setArith), the others stay as they are.
      body.push(`${k} = ${c} & ${bits - 1};`);
      if (op === 0) body.push(`${r} = ${k} === 0 ? ${x} : ((${x} << ${k}) | (${x} >>> (${bits} - ${k}))) & ${m};`);
      else body.push(`${r} = ${k} === 0 ? ${x} : ((${x} >>> ${k}) | (${x} << (${bits} - ${k}))) & ${m};`);
      if (op === 0) body.push(`${cf} = ${r} & 1; ${of} = ((${r} >>> ${bits - 1}) & 1) ^ ${cf};`);
      else body.push(`${cf} = (${r} >>> ${bits - 1}) & 1; ${of} = ${cf} ^ ((${r} >>> ${bits - 2}) & 1);`);
      body.push(`if (lz !== 0) fl = flagsOf(fl, lz, fO, fA, fB, fR, fS, fC);`);
      body.push(`fl = (fl & -2050) | ${cf} | (${of} << 11); lz = 0;`);
      this.kLz = 0;
    } else {
      // RCL/RCR: the interpreter's own code, with the flag locals synchronised around it.
      body.push(this.flagsOut());
      body.push(`${r} = cpu.shift(${op}, ${x}, ${c}, ${s});`);
      body.push(this.flagsIn());
      this.forget();
    }
    if (constCount >= 0) {
      this.emit(`{ ${body.join(" ")} }`);
    } else {
      this.emit(`if (${c} !== 0) { ${body.join(" ")} }`);
      this.forget(); // the locals were set or not, depending on the count
    }
    if (constCount < 0 || op === 2 || op === 3) this.fs = UNKNOWN; // a count of 0 leaves the previous state
    else if (op === 0 || op === 1) this.fs = { op: -1, s: 2, lz: 0 };
    else this.fs = { op: 0, s, lz: 0xc4 };
    return r;
  }

  /** The static part of the flag state after a block's code so far (for tests and diagnostics). */
  get flagState(): FlagState {
    return this.fs;
  }

  resetFlags(): void {
    this.fs = UNKNOWN;
    this.forget();
  }

  // Constant values the locals fO, fS and lz are known to hold (-1: unknown), so repeated stores are left out.
  private kO = -1;
  private kS = -1;
  kLz = -1;

  /** Forgets what the flag locals hold (after code that may or may not have set them). */
  forget(): void {
    this.kO = this.kS = this.kLz = -1;
  }

  /** `fO = op;` unless it holds `op` already. */
  private kOp(op: number): string {
    if (this.kO === op) return "";
    this.kO = op;
    return `fO = ${op}; `;
  }

  /** `fS = s; lz = lazy;` without the stores the locals do not need. */
  private kSL(s: number, lazy: number): string {
    let out = "";
    if (this.kS !== s) out += `fS = ${s}; `;
    if (this.kLz !== lazy) out += `lz = ${lazy};`;
    this.kS = s;
    this.kLz = lazy;
    return out;
  }

  /**
   * Starts instruction `k` of a block (at page offset `off`): its slow
   * memory paths leave the region before it. They hold only constants, so
   * V8 needs no type feedback for them: a TLB miss, an MMIO access or one
   * that crosses a page never deoptimizes the region, however late it first
   * happens. The interpreter then runs the instruction (and its block) on
   * the CPU's state, which is the state before the instruction: the code
   * emitted for an instruction changes registers and flags only after its
   * last memory access.
   */
  startInstruction(k: number, off: number): void {
    this.slowExit = `{ k = ${k}; o = ${off}; att = -1; continue L; }`;
    this.k = k;
  }

  /** The block being emitted: its page offset, first record and instruction count so far (startInstruction). */
  private block = { off: 0, rec: 0 };
  private k = 0;

  /** Starts a block at page offset `off` whose records start at `rec`. */
  startBlock(off: number, rec: number): void {
    this.block = { off, rec };
  }

  /**
   * Statements that put everything the CPU needs where an exception from the
   * call after them finds it (Cpu.faultRestore): the guest registers and
   * flags, and the block and instruction being run. Regions have no
   * try/catch, because a handler that reads the locals keeps every one of
   * them alive (and spilled) at every point that might throw; only these
   * rare call sites pay instead. `k` is the instruction's index in the
   * block (the current one by default).
   */
  beforeThrow(k = this.k): string {
    return `/*SPILL*/ ${this.position(k)}`;
  }

  /** {@link RegionGen.beforeThrow} as one expression (for a call inside an expression). */
  beforeThrowExpr(k = this.k): string {
    return `/*SPILLX*/, ${this.position(k).replace(/;(?=.)/g, ",").replace(/;$/, "")}`;
  }

  private position(k: number): string {
    const mask = this.code32 ? "-1" : "65535";
    return `cpu.sliceCount = (n + ${k}) | 0; cpu.blockEip = (pb + ${this.block.off}) & ${mask}; cpu.blockRec = ${this.block.rec}; cpu.blockN = n;`;
  }
}

/** A compiled region: its function, the block ids it is the code of, and its generated size. */
interface Region {
  fn: RegionFn;
  ids: number[];
  chars: number;
  live: boolean;
}

/** The compiled code that depends on one page: regions holding its blocks, and its blocks found not compilable. */
interface PageCode {
  regions: Region[];
  failed: number[];
}

/** A page whose blocks a region holds, by its offset in pages from the entry page. */
interface RegionPage {
  delta: number;
  map: Uint16Array;
  /** Byte offset of its host page in the arena, as the TLB has it. */
  hostOff: number;
  gpn: number;
}

/** Result of compiling one region. */
interface Compiled {
  fn: RegionFn;
  blocks: number[];
  chars: number;
  /** Guest pages of the blocks beyond the entry page. */
  foreign: number[];
}

/**
 * The block compiler of one vCPU: use counts per decoded block, the table
 * of compiled functions by block id, and the code generator.
 */
export class BlockCompiler implements DecodeCacheListener {
  /** Compiled function per block id (undefined: not compiled yet). */
  readonly fns: (RegionFn | undefined)[];
  /** Starts of each block in the interpreter since it was decoded. */
  readonly hits: Uint16Array;
  /** Per block id: 0 not compiled, 1 compiled ({@link BlockCompiler.fns} holds its function), 2 not compilable. */
  readonly states: Uint8Array;
  /** Block starts before compiling. */
  readonly threshold: number;
  /** @internal the run loop's counts: dispatches, times it ran the interpreter instead, instructions retired by compiled code (Float64Array slots: they pass 2^31; docs/DESIGN.md, hot-path rules). */
  readonly counts = new Float64Array(3);
  /** Times the run loop looked for compiled code (statistics). */
  get dispatches(): number {
    return this.counts[0];
  }
  /** Times it ran the interpreter instead (statistics). */
  get interpreted(): number {
    return this.counts[1];
  }
  /** Instructions retired by compiled code (statistics). */
  get compiledInstructions(): number {
    return this.counts[2];
  }
  /** Regions compiled (statistics). */
  compiled = 0;
  /** Regions dropped with their page or by a flush (statistics). */
  dropped = 0;
  /** Full drops of the compiled-code cache because it hit its bounds (statistics). */
  evictions = 0;
  /** Compilations that failed (the generated code did not build: a bug; the block stays interpreted). */
  failures = 0;
  /** Called with the source of each generated function (diagnostics: dumping what the compiler makes of a guest). */
  onCompile: ((source: string) => void) | undefined;
  /** Why the last compilation failed (diagnostics). */
  lastFailure: unknown;
  private liveRegions = 0;
  private liveChars = 0;
  /** Compiled code per page key (gpn * 2 + code32): the block ids holding it, so a page's code can be dropped. */
  private readonly byPage = new Map<number, PageCode>();

  constructor(
    private readonly cpu: Cpu,
    maxBlocks: number,
    options: JitOptions,
  ) {
    this.fns = new Array<RegionFn | undefined>(maxBlocks + 1).fill(undefined);
    this.hits = new Uint16Array(maxBlocks + 1);
    this.states = new Uint8Array(maxBlocks + 1);
    this.threshold = Math.max(0, Math.min(0xfffe, Math.floor(options.threshold ?? DEFAULT_JIT_THRESHOLD)));
  }

  /** Regions alive now (statistics). */
  get regions(): number {
    return this.liveRegions;
  }

  /** Generated source alive now, in characters (statistics). */
  get sourceChars(): number {
    return this.liveChars;
  }

  /** Drops the compiled code of page `gpn` (its blocks were dropped), and every region holding a block of it. */
  droppedPage(gpn: number): void {
    for (let k = 0; k < 2; k++) {
      const key = gpn * 2 + k;
      const pc = this.byPage.get(key);
      if (pc === undefined) continue;
      for (const r of pc.regions) this.kill(r);
      for (const id of pc.failed) if (this.states[id] === 2) this.states[id] = 0;
      this.byPage.delete(key);
    }
  }

  /** Drops every compiled function (the decoded blocks were flushed, or the cache is full). */
  droppedAll(): void {
    for (const pc of this.byPage.values()) {
      for (const r of pc.regions) this.kill(r);
      for (const id of pc.failed) if (this.states[id] === 2) this.states[id] = 0;
    }
    this.byPage.clear();
  }

  /** Takes a live region out of the table (its blocks run interpreted, and count toward compiling again). */
  private kill(r: Region): void {
    if (!r.live) return;
    r.live = false;
    for (const id of r.ids)
      if (this.fns[id] === r.fn) {
        this.fns[id] = undefined;
        this.states[id] = 0;
      }
    this.liveRegions--;
    this.liveChars -= r.chars;
    this.dropped++;
  }

  /** The code registry of page key `key`, created when missing. */
  private pageCode(key: number): PageCode {
    let pc = this.byPage.get(key);
    if (pc === undefined) {
      pc = { regions: [], failed: [] };
      this.byPage.set(key, pc);
    }
    return pc;
  }

  /** A block id was (re)assigned by the decode cache: it starts cold. */
  assigned(id: number): void {
    this.hits[id] = 0;
    this.fns[id] = undefined;
    this.states[id] = 0;
  }

  /**
   * Compiles the region entered at block `b` (at EIP `eip`, in the page map
   * `map` of guest page `gpn`) and enters it in the table.
   */
  compile(b: number, eip: number, map: Uint16Array, gpn: number): void {
    const cpu = this.cpu;
    if (this.liveRegions >= MAX_REGIONS || this.liveChars >= MAX_SOURCE_CHARS) {
      this.droppedAll();
      this.evictions++;
    }
    const off = (cpu.csBase + eip) & 0xfff;
    let res: Compiled | undefined;
    try {
      res = this.build(b, off, map, cpu.code32, gpn, ((cpu.csBase + eip) >>> 12) & 0xfffff);
    } catch (e) {
      this.failures++;
      this.lastFailure = e;
      res = undefined;
    }
    const code32 = cpu.code32 ? 1 : 0;
    if (res === undefined) {
      this.states[b] = 2;
      this.pageCode(gpn * 2 + code32).failed.push(b);
      return;
    }
    this.compiled++;
    this.liveRegions++;
    this.liveChars += res.chars;
    const region: Region = { fn: res.fn, ids: [], chars: res.chars, live: true };
    // Only the entry page's blocks enter the region: its code is laid out relative to that page.
    for (const id of res.blocks) {
      if (id === b || this.states[id] === 0) {
        this.fns[id] = res.fn;
        this.states[id] = 1;
        region.ids.push(id);
      }
    }
    this.pageCode(gpn * 2 + code32).regions.push(region);
    for (const f of res.foreign) this.pageCode(f * 2 + code32).regions.push(region);
  }

  /**
   * Chooses the region's blocks and generates its function. `vpn0` is the
   * linear page of the entry block; with 32-bit code the region may also
   * take hot blocks of other pages (a loop or a call that crosses a page
   * boundary), each entered only after a check that its linear page still
   * translates, for execution, to the host page it was decoded from.
   */
  private build(b: number, off0: number, map: Uint16Array, code32: boolean, gpn: number, vpn0: number): Compiled | undefined {
    // The function's name says where its code comes from (profiles show it).
    const gpnHex = gpn.toString(16);
    const cpu = this.cpu;
    const mmu = cpu.mmu;
    const dc = cpu.decoded;
    const rec = dc.rec;
    // Pages of the region by offset from the entry page (index 0): page delta, block map, host page offset, guest page.
    const pages: RegionPage[] = [{ delta: 0, map, hostOff: 0, gpn }];
    const crossPages = code32 && cpu.ipMask === -1;
    const tlbMask = mmu.tagX.length - 1;
    /** The region's page for page delta `d` (entered in `pages` when `add`), or undefined when its blocks cannot be used. */
    const pageAt = (d: number, add: boolean): RegionPage | undefined => {
      for (const p of pages) if (p.delta === d) return p;
      if (!crossPages || pages.length >= MAX_REGION_PAGES) return undefined;
      const v = vpn0 + d;
      if (v < 0 || v > 0xfffff || mmu.tagX[v & tlbMask] !== v) return undefined;
      const pg = mmu.gpnOf[v & tlbMask];
      const m = dc.peekMap(pg, code32);
      if (m === undefined || m === dc.uncached) return undefined;
      const p = { delta: d, map: m, hostOff: mmu.off[v & tlbMask], gpn: pg };
      if (add) pages.push(p);
      return p;
    };
    // The region: block b, then blocks reachable by direct branches and fall-through, breadth first.
    const offs: number[] = [off0];
    const ids: number[] = [b];
    const seen = new Set<number>([off0]);
    let insns = dc.bCount[b];
    // Successors must have run often in the interpreter (1/64 of the compile threshold): V8 compiles a path that never ran as a deoptimization, which the path's first run then takes.
    const minHits = this.threshold >> 6;
    for (let q = 0; q < offs.length; q++) {
      const succ = successors(rec, dc.bStart[ids[q]], dc.bCount[ids[q]], offs[q], dc.bBytes[ids[q]]);
      for (const so of succ) {
        if (seen.has(so)) continue;
        seen.add(so);
        const page = pageAt(so >> 12, false);
        if (page === undefined) continue;
        const id = page.map[so & 0xfff];
        if (id <= GENERIC_BLOCK || this.hits[id] < minHits) continue;
        if (offs.length >= MAX_REGION_BLOCKS || insns + dc.bCount[id] > MAX_REGION_INSNS) continue;
        pageAt(so >> 12, true);
        offs.push(so);
        ids.push(id);
        insns += dc.bCount[id];
      }
    }
    let fastSegs = 0;
    for (let i = 0; i < 6; i++) if (this.cpu.segFast[i] === 1) fastSegs |= 1 << i;
    // The span of EIP the region's pages cover, relative to the entry page's start: the prologue checks it against the CS limit once.
    const deltas = pages.map((p) => p.delta);
    const spanLo = Math.min(...deltas) * 4096;
    const spanHi = Math.max(...deltas) * 4096 + 4095;
    const g = new RegionGen(rec, code32, fastSegs, cpu.stack32, spanLo, spanHi);
    const mask = code32 ? "-1" : "65535";
    let included = 0;
    for (let q = 0; q < ids.length; q++) {
      const id = ids[q];
      // A block whose first record is the generic one gains nothing from compiling (it is also what an uncached page uses).
      if (q === 0 && (rec[dc.bStart[id]] & 0xff) === D.H_GENERIC) return undefined;
      const mark = g.mark();
      g.emit(`case ${offs[q]}: {`);
      const pi = pages.findIndex((p) => p.delta === offs[q] >> 12);
      // A block of another page runs only while that page still translates to what it was decoded from.
      if (pi > 0) g.emit(`if (TX[x${pi}] !== v${pi} || OFS[x${pi}] !== ${pages[pi].hostOff}) break L;`);
      g.emit(`if (((budget - n) | 0) < ${dc.bCount[id]}) break L;`);
      g.startBlock(offs[q], dc.bStart[id]);
      g.resetFlags();
      compileBlock(g, rec, dc.bStart[id], dc.bCount[id], dc.bBytes[id], offs[q], mask);
      g.emit(`}`);
      // V8 optimizes functions only up to a bytecode size (about 0.8 byte per character here): stop before it.
      if (q > 0 && g.size > MAX_REGION_SOURCE) {
        g.rewind(mark);
        break;
      }
      included++;
    }
    ids.length = included;
    const entryIds = ids.filter((_, q) => offs[q] >> 12 === 0);
    const usedPages = pages.filter((p, i) => i > 0 && offs.some((o) => o >> 12 === p.delta));
    const pageVars = pages
      .map((p, i) => (i > 0 && usedPages.includes(p) ? `const v${i} = (lp + ${p.delta}) & 1048575, x${i} = v${i} & ${tlbMask};` : ""))
      .join(" ");
    const body = g.source();
    const u = g.use;
    const regList = [0, 1, 2, 3, 4, 5, 6, 7].filter((i) => (u.regs >> i) & 1);
    const wrList = regList.filter((i) => (u.written >> i) & 1);
    const segList = [0, 1, 2, 3, 4, 5].filter((i) => (u.segs >> i) & 1);
    const load = regList.map((i) => `let r${i} = regs[${i}];`).join(" ");
    const store = wrList.map((i) => `regs[${i}] = r${i};`).join(" ");
    const reload = regList.map((i) => `r${i} = regs[${i}];`).join(" ");
    const segLoad = segList.map((i) => `sf${i} = cpu.segFast[${i}]; sb${i} = cpu.segBase[${i}];`).join(" ");
    const segDecl = segList.map((i) => `let sf${i} = 0, sb${i} = 0;`).join(" ");
    const guardList = segList.filter((i) => (u.guard >> i) & 1);
    // The assumptions the code was compiled under: flat segments and the stack size.
    // The TLB tag set (supervisor or user) is a constant of the function: V8 then drops the checks it makes on a typed array it cannot see.
    const guardOk = [...guardList.map((i) => `cpu.segFast[${i}] === 1`), `cpu.stack32 === ${g.stack32}`, "mmu.tagR === TR"].join(" && ");
    const temps = g.maxTemps > 0 ? `let ${Array.from({ length: g.maxTemps }, (_, i) => `t${i} = 0`).join(", ")};` : "";
    const flagsOut = g.flagsOut();
    const spillExpr = `${store} ${flagsOut}`.split(";").map((x) => x.trim()).filter((x) => x !== "").join(", ");
    const flagsIn = g.flagsIn();
    const src = `
"use strict";
return function region_${gpnHex}_${off0.toString(16)}(eip, n, budget) {
  // The complement is computed on every call, so V8 has seen it by the time a rare exit returns it.
  const notN = ~n;
  const o0 = (cpu.csBase + eip) & 4095;
  const pb = (eip - o0) | 0;
  // The region's pages must lie inside the CS limit and the EIP range: then every block in them fits and targets in them need no limit check.
  if ((pb >>> 0) > (eip >>> 0) || (pb >>> 0) + ${spanLo} < 0 || (pb >>> 0) + ${spanHi} > cpu.csLimit || (pb >>> 0) + ${spanHi} > (cpu.ipMask >>> 0)) return notN;
  if (!(${guardOk})) return notN;
  const csLim = cpu.csLimit;
  ${pageVars === "" ? "" : `const lp = (cpu.csBase + pb) >>> 12; ${pageVars}`}
  ${load}
  let fl = cpu.flags, lz = cpu.lazy, fO = cpu.fOp, fA = cpu.fA, fB = cpu.fB, fR = cpu.fR, fS = cpu.fS, fC = cpu.fC;
  ${segDecl} ${segLoad}
  let att = 0, o = o0, k = 0;
  ${temps}
  // Every exit sets o (the next page offset) and k (instructions the block ran) and continues here: an exit then holds only constants, so it needs no V8 type feedback (code that never ran before V8 optimized the region would deoptimize it on its first run). EIP is pb + o.
  L: for (;;) {
    n = (n + k) | 0;
    k = 0;
    if (att !== 0) break;
    switch (o) {
${body}
    }
    break;
  }
  ${store} ${flagsOut}
  cpu.eip = (pb + o) & ${mask}; cpu.sliceCount = n;
  const notCount = ~n;
  return att < 0 ? notCount : n;
};`.replace(/\/\*SPILL\*\//g, `${store} ${flagsOut}`).replace(/\/\*SPILLX\*\//g, spillExpr).replace(/\/\*FILL\*\//g, `${reload} ${flagsIn} ${segLoad}`).replace(/\/\*GUARD\*\//g, `!(${guardOk})`);
    this.onCompile?.(src);
    const factory = new Function("cpu", "mmu", "regs", "M8", "M16", "M32", "OFS", "PAR", "cfOf", "condOf", "flagsOf", "imulOverflows", "MAP", "TR", "TW", "TX", src) as (...a: unknown[]) => RegionFn;
    const fn = factory(cpu, mmu, cpu.regs, mmu.bytes, mmu.words16, mmu.words32, mmu.off, PARITY, cfOf, condOf, flagsOf, imulOverflows, map, mmu.tagR, mmu.tagW, mmu.tagX);
    return { fn, blocks: entryIds, chars: src.length, foreign: usedPages.map((p) => p.gpn) };
  }
}

/** Full EFLAGS arithmetic bits of a lazy state (mirrors Cpu.getFlags). */
export function flagsOf(fl: number, lz: number, op: number, a: number, b: number, r: number, s: number, c: number): number {
  if (lz === 0) return fl;
  let f = fl & ~lz;
  const m = s === 2 ? -1 : s === 1 ? 0xffff : 0xff;
  const sign = s === 2 ? -0x80000000 : s === 1 ? 0x8000 : 0x80;
  if (lz & 1) f |= cfOf(fl, lz, op, a, b, r, s, c);
  if (lz & 4 && PARITY[r & 0xff] !== 0) f |= 4;
  if (lz & 0x10 && op !== 0 && ((a ^ b ^ r) & 0x10) !== 0) f |= 0x10;
  if (lz & 0x40 && (r & m) === 0) f |= 0x40;
  if (lz & 0x80 && (r & sign) !== 0) f |= 0x80;
  if (lz & 0x800) {
    let of = false;
    if (op === 1 || op === 2) of = ((a ^ r) & (b ^ r) & sign) !== 0;
    else if (op === 3 || op === 4) of = ((a ^ b) & (a ^ r) & sign) !== 0;
    if (of) f |= 0x800;
  }
  return f;
}

/** Page offsets a block may continue at: taken branches, the fall-through, and a call's return address. */
function successors(rec: Int32Array, start: number, count: number, off: number, bytes: number): number[] {
  const out: number[] = [];
  let r = start;
  let pos = off;
  let last = 0;
  for (let k = 0; k < count; ) {
    const w = rec[r];
    const id = w & 0xff;
    const len = (w >> 8) & 15;
    const fused = D.isFused(w);
    k += fused ? 2 : 1;
    const next = pos + len;
    if (id === D.H_JCC || id === D.H_JMP || id === D.H_CALL || fused) out.push(next + rec[r + 2]);
    last = id;
    pos = next;
    r += REC_STRIDE;
  }
  if (last !== D.H_JMP && last !== D.H_RET && last !== D.H_JMP_R && last !== D.H_JMP_M) out.push(off + bytes);
  return out;
}

/**
 * Whether the instruction of record word `w` sets CF, PF, AF, ZF, SF and OF
 * without reading them, and has only register and immediate operands, so
 * it cannot leave the region before it writes them: then the flags of the
 * instruction before it in the block are dead. (ADC and SBB read CF.)
 */
function overwritesFlags(w: number): boolean {
  const id = w & 0xff;
  const aop = (w >> 16) & 15;
  switch (id) {
    case D.H_ALU_RR32:
    case D.H_ALU_RR:
    case D.H_ALU_RI32:
    case D.H_ALU_RI:
      return aop !== 2 && aop !== 3;
    case D.H_ADD_RR32:
    case D.H_OR_RR32:
    case D.H_AND_RR32:
    case D.H_SUB_RR32:
    case D.H_XOR_RR32:
    case D.H_CMP_RR32:
    case D.H_ADD_RI32:
    case D.H_OR_RI32:
    case D.H_AND_RI32:
    case D.H_SUB_RI32:
    case D.H_XOR_RI32:
    case D.H_CMP_RI32:
    case D.H_TEST_RR:
    case D.H_TEST_RI:
    case D.H_TEST_RR32:
    case D.H_CMPJ_RR32:
    case D.H_CMPJ_RI32:
    case D.H_TESTJ_RR32:
      return true;
    default:
      return false;
  }
}

/** Emits a block's records (`count` instructions from record word `start`, `bytes` long at page offset `off`). */
function compileBlock(g: RegionGen, rec: Int32Array, start: number, count: number, bytes: number, off: number, mask: string): void {
  let r = start;
  let i = 0; // instructions before this record in the block
  let pos = 0; // byte offset of this record in the block
  while (i < count) {
    const w = rec[r];
    const id = w & 0xff;
    const len = (w >> 8) & 15;
    const s = (w >> 12) & 3;
    const sub = (w >> 16) & 15;
    const a = (w >> 20) & 15;
    const b = (w >> 24) & 15;
    const fused = D.isFused(w);
    const next = pos + len; // offset of the next instruction in the block
    const nextExpr = `((pb + ${off + next}) & ${mask})`;
    g.startInstruction(i, off + pos);
    g.resetTemps();
    let ended = false;
    // Each instruction in its own scope, so its temporaries share registers with the next one's.
    g.emit("{");
    /** Leaves the block for target `t` (an expression evaluated once) after `k` instructions; checks the CS limit for targets outside the page. */
    /**
     * A relative transfer by `disp` from the next instruction: with 32-bit
     * code the target's page offset is known here, and a target in this page
     * needs no limit check (the prologue checked the whole page).
     */
    const relTransfer = (disp: number, k: number, sizeBits: number): void => {
      const to = off + next + disp;
      if (mask === "-1" && sizeBits === 2 && to >= g.spanLo && to <= g.spanHi) {
        g.emit(`k = ${k}; o = ${to}; continue L;`);
        return;
      }
      transfer(`(${nextExpr} + ${disp}) | 0`, k, sizeBits);
    };
    const transfer = (t: string, k: number, sizeBits: number, afterCheck = ""): void => {
      const tt = g.tmp();
      g.emit(`{ ${tt} = ${t};${sizeBits !== 2 ? ` ${tt} &= 65535;` : ""}`);
      g.emit(`if (${g.outsideSpan(tt)} && (${tt} >>> 0) > csLim) { ${g.beforeThrow(k - 1)} cpu.raiseGp(0); }`);
      g.emit(`${afterCheck} k = ${k}; o = (${tt} - pb) | 0; continue L; }`);
    };
    /** The interpreter runs this one instruction on the CPU's own state. */
    const interpret = (): void => {
      g.emit(`${g.beforeThrow(i)} cpu.eip = (pb + ${off + pos}) & ${mask};`);
      g.emit(`cpu.step(); /*FILL*/`);
      g.emit(`k = ${i + 1}; o = (cpu.eip - pb) | 0;`);
      g.emit(`if (cpu.attention !== 0 || cpu.winLen < 0 || cpu.curMap !== MAP || /*GUARD*/) att = 1;`);
      g.emit(`continue L;`);
      g.resetFlags();
    };
    switch (id) {
      case D.H_STRING:
        if ((rec[r + 1] & 8) !== 0) {
          stringElement(g, sub, s, rec[r + 1] & 7);
        } else {
          // 16-bit addressing: the interpreter runs it.
          interpret();
          ended = true;
        }
        break;
      case D.H_GENERIC:
        interpret();
        ended = true;
        break;
      case D.H_ALU_RR32:
      case D.H_ALU_RR:
      case D.H_ADD_RR32:
      case D.H_OR_RR32:
      case D.H_AND_RR32:
      case D.H_SUB_RR32:
      case D.H_XOR_RR32:
      case D.H_CMP_RR32: {
        const aop = id === D.H_ALU_RR32 || id === D.H_ALU_RR ? sub : [0, 1, 4, 5, 6, 7][id - D.H_ADD_RR32];
        const res = g.alu(aop, g.reg(s, a), g.reg(s, b), s);
        if (aop !== 7) g.emit(g.setReg(s, a, res));
        break;
      }
      case D.H_ALU_RI32:
      case D.H_ALU_RI:
      case D.H_ADD_RI32:
      case D.H_OR_RI32:
      case D.H_AND_RI32:
      case D.H_SUB_RI32:
      case D.H_XOR_RI32:
      case D.H_CMP_RI32: {
        const aop = id === D.H_ALU_RI32 || id === D.H_ALU_RI ? sub : [0, 1, 4, 5, 6, 7][id - D.H_ADD_RI32];
        const res = g.alu(aop, g.reg(s, a), `${rec[r + 3]}`, s);
        if (aop !== 7) g.emit(g.setReg(s, a, res));
        break;
      }
      case D.H_ALU_MR32:
      case D.H_ALU_MR:
      case D.H_ALU_MI32:
      case D.H_ALU_MI: {
        const la = g.lin(g.seg(r), g.ea(r), 1 << s, true);
        const y = id === D.H_ALU_MR32 || id === D.H_ALU_MR ? g.reg(s, a) : `${rec[r + 3]}`;
        g.rmw(s, la, (x) => g.alu(sub, x, y, s));
        break;
      }
      case D.H_ALU_RM32:
      case D.H_ALU_RM: {
        const la = g.lin(g.seg(r), g.ea(r), 1 << s, false);
        const v = g.read(s, la);
        const res = g.alu(sub, g.reg(s, a), v, s);
        if (sub !== 7) g.emit(g.setReg(s, a, res));
        break;
      }
      case D.H_CMP_MR:
      case D.H_CMP_MI: {
        const la = g.lin(g.seg(r), g.ea(r), 1 << s, false);
        const v = g.read(s, la);
        g.alu(7, v, id === D.H_CMP_MR ? g.reg(s, a) : `${rec[r + 3]}`, s);
        break;
      }
      case D.H_TEST_RR:
      case D.H_TEST_RR32: {
        const t = g.tmp();
        g.emit(`${t} = ${g.reg(s, b)} & ${g.reg(s, a)};`);
        g.logic(t, s);
        break;
      }
      case D.H_TEST_RI: {
        const t = g.tmp();
        g.emit(`${t} = ${g.reg(s, a)} & ${rec[r + 3]};`);
        g.logic(t, s);
        break;
      }
      case D.H_TEST_MR:
      case D.H_TEST_MI: {
        const la = g.lin(g.seg(r), g.ea(r), 1 << s, false);
        const v = g.read(s, la);
        const t = g.tmp();
        g.emit(`${t} = ${v} & ${id === D.H_TEST_MR ? g.reg(s, a) : `${rec[r + 3]}`};`);
        g.logic(t, s);
        break;
      }
      case D.H_INC_R:
      case D.H_DEC_R: {
        const res = g.incDec(g.reg(s, a), s, id === D.H_DEC_R);
        g.emit(g.setReg(s, a, res));
        break;
      }
      case D.H_INC_M:
      case D.H_DEC_M: {
        const la = g.lin(g.seg(r), g.ea(r), 1 << s, true);
        g.rmw(s, la, (x) => g.incDec(x, s, id === D.H_DEC_M));
        break;
      }
      case D.H_PUSH_R:
      case D.H_PUSH_I:
      case D.H_PUSH_M: {
        let v: string;
        if (id === D.H_PUSH_R) v = g.reg(s, a);
        else if (id === D.H_PUSH_I) v = `${rec[r + 3]}`;
        else v = g.read(s, g.lin(g.seg(r), g.ea(r), 1 << s, false));
        const pv = g.tmp();
        g.emit(`${pv} = ${v};`);
        push(g, s, pv);
        break;
      }
      case D.H_POP_R: {
        const n = s === 2 ? 4 : 2;
        const v = popRead(g, s, 4);
        g.emit(g.setSp(`(r4 + ${n}) | 0`));
        g.emit(g.setReg(s, a, v));
        break;
      }
      case D.H_MOV_RR:
        g.emit(g.setReg(s, a, g.reg(s, b)));
        break;
      case D.H_MOV_RI:
        g.emit(g.setReg(s, a, `${rec[r + 3]}`));
        break;
      case D.H_MOV_RM: {
        const v = g.read(s, g.lin(g.seg(r), g.ea(r), 1 << s, false));
        g.emit(g.setReg(s, a, v));
        break;
      }
      case D.H_MOV_MR:
      case D.H_MOV_MI: {
        const la = g.lin(g.seg(r), g.ea(r), 1 << s, true);
        const v = id === D.H_MOV_MR ? g.reg(s, a) : `${rec[r + 3]}`;
        g.write(s, la, v);
        break;
      }
      case D.H_LEA:
        g.emit(g.setReg(s, a, g.ea(r)));
        break;
      case D.H_JCC: {
        // A taken branch leaves the block; a not-taken one goes on in it.
        g.emit(`if (${g.cond(sub)}) {`);
        relTransfer(rec[r + 2], i + 1, s);
        g.emit(`}`);
        break;
      }
      case D.H_CMPJ_RR32:
      case D.H_CMPJ_RI32:
      case D.H_TESTJ_RR32:
      case D.H_INCJ_R32:
      case D.H_DECJ_R32: {
        // A compare and its Jcc: two instructions, the compare's flags as it sets them.
        if (id === D.H_TESTJ_RR32) {
          const t = g.tmp();
          g.emit(`${t} = ${g.reg(2, b)} & ${g.reg(2, a)};`);
          g.logic(t, 2);
        } else if (id === D.H_INCJ_R32 || id === D.H_DECJ_R32) {
          g.emit(g.setReg(2, a, g.incDec(g.reg(2, a), 2, id === D.H_DECJ_R32)));
        } else g.alu(7, g.reg(2, a), id === D.H_CMPJ_RI32 ? `${rec[r + 3]}` : g.reg(2, b), 2);
        g.emit(`if (${g.cond(sub)}) {`);
        relTransfer(rec[r + 2], i + 2, s);
        g.emit(`}`);
        break;
      }
      case D.H_JMP:
        relTransfer(rec[r + 2], i + 1, s);
        ended = true;
        break;
      case D.H_CALL: {
        // The target is checked before the return address is pushed (Intel SDM Vol. 2 CALL).
        const t = g.tmp();
        g.emit(`${t} = ((${nextExpr} + ${rec[r + 2]}) | 0)${s !== 2 ? " & 65535" : ""};`);
        g.emit(`if (${g.outsideSpan(t)} && (${t} >>> 0) > csLim) { ${g.beforeThrow(i)} cpu.raiseGp(0); }`);
        push(g, s, nextExpr);
        transfer(t, i + 1, 2);
        ended = true;
        break;
      }
      case D.H_CALL_R:
      case D.H_CALL_M: {
        const t = g.tmp();
        const v = id === D.H_CALL_R ? g.reg(s, b) : g.read(s, g.lin(g.seg(r), g.ea(r), 1 << s, false));
        g.emit(`${t} = ${v}${s !== 2 ? " & 65535" : ""};`);
        g.emit(`if (${g.outsideSpan(t)} && (${t} >>> 0) > csLim) { ${g.beforeThrow(i)} cpu.raiseGp(0); }`);
        push(g, s, nextExpr);
        transfer(t, i + 1, 2);
        ended = true;
        break;
      }
      case D.H_JMP_R:
      case D.H_JMP_M: {
        const v = id === D.H_JMP_R ? g.reg(s, b) : g.read(s, g.lin(g.seg(r), g.ea(r), 1 << s, false));
        transfer(v, i + 1, s);
        ended = true;
        break;
      }
      case D.H_RET: {
        const n = s === 2 ? 4 : 2;
        const v = popRead(g, s, 4);
        const rel = n + rec[r + 3];
        // ESP moves only after the target passed the CS limit check (transfer's check comes first).
        transfer(v, i + 1, s, g.setSp(`(r4 + ${rel}) | 0`));
        ended = true;
        break;
      }
      case D.H_LEAVE: {
        g.use.written |= 1 << 5;
        const v = popRead(g, s, 5);
        const n = s === 2 ? 4 : 2;
        g.emit(g.setSp(`(r5 + ${n}) | 0`));
        g.emit(g.setReg(s, 5, v));
        break;
      }
      case D.H_SHIFT_R:
      case D.H_SHIFT_M: {
        const op = sub & 7;
        const byCl = (sub & 8) !== 0;
        const cnt = byCl ? `(${g.reg(0, 1)} & 31)` : `${rec[r + 3] & 31}`;
        const cc = byCl ? -1 : rec[r + 3] & 31;
        if (id === D.H_SHIFT_R) {
          const res = g.shift(op, g.reg(s, b), cnt, s, cc);
          if (cc !== 0) g.emit(g.setReg(s, b, res));
        } else {
          const c = g.tmp();
          g.emit(`${c} = ${cnt};`);
          const la = g.lin(g.seg(r), g.ea(r), 1 << s, true);
          g.rmw(s, la, (x) => g.shift(op, x, c, s, cc));
        }
        break;
      }
      case D.H_MOVX_R:
      case D.H_MOVX_M: {
        const ss = sub & 2 ? 1 : 0;
        let v: string;
        if (id === D.H_MOVX_R) v = g.reg(ss, b);
        else {
          v = g.read(ss, g.lin(g.seg(r), g.ea(r), 1 << ss, false));
        }
        const ext = (sub & 1) === 0 ? v : ss === 1 ? `((${v} << 16) >> 16)` : `((${v} << 24) >> 24)`;
        g.emit(g.setReg(s, a, ext));
        break;
      }
      case D.H_IMUL_R:
      case D.H_IMUL_M: {
        let x: string;
        let y: string;
        let src: string;
        if (id === D.H_IMUL_R) src = g.reg(s, b);
        else {
          src = g.read(s, g.lin(g.seg(r), g.ea(r), 1 << s, false));
        }
        if (sub & 1) {
          x = g.reg(s, a);
          y = src;
        } else {
          x = src;
          y = `${rec[r + 3]}`;
        }
        const p = g.tmp();
        const q = g.tmp();
        const rr = g.tmp();
        if (i + 1 < count && overwritesFlags(rec[r + REC_STRIDE])) {
          // Nothing can see CF/OF: the product alone (the overflow test is a double multiply).
          g.emit(s === 1 ? `${rr} = Math.imul(${x}, ${y}) & 65535;` : `${rr} = Math.imul(${x}, ${y});`);
          g.emit(g.setReg(s, a, rr));
          break;
        }
        if (s === 1) {
          g.emit(`${p} = ((${x}) << 16 >> 16) * ((${y}) << 16 >> 16); ${rr} = ${p} & 65535; ${q} = ${p} !== ((${p} << 16) >> 16) ? 2049 : 0;`);
        } else {
          g.emit(`${p} = ${x}; ${q} = ${y}; ${rr} = Math.imul(${p}, ${q}); ${q} = imulOverflows(${p}, ${q}) ? 2049 : 0;`);
        }
        g.resultFlags(rr, s, q);
        g.emit(g.setReg(s, a, rr));
        break;
      }
      case D.H_SETCC_R:
        g.emit(g.setReg(0, b, `(${g.cond(sub)} ? 1 : 0)`));
        break;
      case D.H_SETCC_M: {
        const la = g.lin(g.seg(r), g.ea(r), 1, true);
        g.write(0, la, `(${g.cond(sub)} ? 1 : 0)`);
        break;
      }
      case D.H_CMOV_R:
        g.emit(`if (${g.cond(sub)}) { ${g.setReg(s, a, g.reg(s, b))} }`);
        break;
      case D.H_CMOV_M: {
        const v = g.read(s, g.lin(g.seg(r), g.ea(r), 1 << s, false));
        g.emit(`if (${g.cond(sub)}) { ${g.setReg(s, a, v)} }`);
        break;
      }
      case D.H_CWDE:
        if (sub & 1) g.emit(s === 2 ? g.setReg(2, 2, `${g.reg(2, 0)} >> 31`) : g.setReg(1, 2, `(${g.reg(2, 0)} << 16) >> 31`));
        else g.emit(s === 2 ? g.setReg(2, 0, `(${g.reg(2, 0)} << 16) >> 16`) : g.setReg(1, 0, `(${g.reg(2, 0)} << 24) >> 24`));
        break;
      case D.H_NOP:
        break;
      case D.H_NOTNEG_R:
        if (sub === 2) g.emit(g.setReg(s, b, `~${g.reg(s, b)}`));
        else g.emit(g.setReg(s, b, g.alu(5, "0", g.reg(s, b), s)));
        break;
      case D.H_XCHG_RR: {
        const t = g.tmp();
        g.emit(`${t} = ${g.reg(s, b)};`);
        g.emit(g.setReg(s, b, g.reg(s, a)));
        g.emit(g.setReg(s, a, t));
        break;
      }
      default:
        throw new Error(`block compiler: no code for record ${id}`);
    }
    g.emit("}");
    if (ended) return;
    i += fused ? 2 : 1;
    pos = next;
    r += REC_STRIDE;
  }
  // Fall-through: the block ended without a transfer (length or window limit).
  g.emit(`k = ${count}; o = ${off + bytes}; continue L;`);
}

/**
 * Emits one element of MOVS, CMPS, STOS, LODS or SCAS (`k` 0..4, as
 * Cpu.stringElement) with 32-bit addressing: the accesses (source in
 * `seg`, destination in ES), then ESI/EDI move by the element size, down
 * when DF=1.
 */
function stringElement(g: RegionGen, k: number, s: number, seg: number): void {
  const n = 1 << s;
  g.use.regs |= (1 << 6) | (1 << 7);
  const src = (): string => g.read(s, g.lin(seg, "r6", n, false));
  const dst = (): string => g.read(s, g.lin(ES, "r7", n, false));
  switch (k) {
    case 0: {
      // The source is read (and checked) before the destination is, as the interpreter does.
      const v = src();
      g.write(s, g.lin(ES, "r7", n, true), v);
      break;
    }
    case 1: {
      const a = src();
      g.alu(7, a, dst(), s);
      break;
    }
    case 2:
      g.write(s, g.lin(ES, "r7", n, true), g.reg(s, 0));
      break;
    case 3:
      g.emit(g.setReg(s, 0, src()));
      break;
    default:
      g.alu(7, g.reg(s, 0), dst(), s);
  }
  // DF lives in fl: only CLD/STD/POPF/IRET change it, and they run in the interpreter, which reloads fl.
  const d = `((fl & 1024) !== 0 ? ${-n} : ${n})`;
  if (k !== 2 && k !== 4) g.emit(g.setReg(2, 6, `(r6 + ${d}) | 0`));
  if (k !== 3) g.emit(g.setReg(2, 7, `(r7 + ${d}) | 0`));
}

/**
 * Emits the read of a value of size `s` from the top of the stack, with the
 * stack pointer taken from register `spReg` (ESP, or EBP for LEAVE); returns
 * the value's expression. ESP is left for the caller to move, after its
 * last check.
 */
function popRead(g: RegionGen, s: number, spReg: number): string {
  g.use.regs |= (1 << 4) | (1 << spReg);
  g.use.written |= 1 << 4;
  g.use.segs |= 1 << 2;
  const sp = g.tmp();
  const la = g.tmp();
  g.emit(`${sp} = ${g.sp(spReg)}; ${la} = ${g.linExpr(2, sp, 1 << s, false)};`);
  return g.read(s, la);
}

/** Emits a push of `v` (an expression) of size `s` (Cpu.push: the store, then ESP). */
function push(g: RegionGen, s: number, v: string): void {
  const n = s === 2 ? 4 : 2;
  g.use.regs |= 1 << 4;
  g.use.written |= 1 << 4;
  g.use.segs |= 1 << 2;
  const sp = g.tmp();
  const la = g.tmp();
  g.emit(`${sp} = ${g.stack32 ? `(r4 - ${n}) | 0` : `(r4 - ${n}) & 65535`}; ${la} = ${g.linExpr(2, sp, n, true)};`);
  g.write(s, la, v);
  g.emit(g.stack32 ? `r4 = ${sp};` : `r4 = (r4 & -65536) | ${sp};`);
}
