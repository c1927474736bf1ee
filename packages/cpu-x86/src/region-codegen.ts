// Code generation for the block compiler: a region (jit.ts chooses its
// blocks) becomes one WebAssembly function that reads guest RAM and the TLB
// where they are, in the host memory (mmu-ept keeps both in one WebAssembly
// memory). V8 compiles it at once with its baseline compiler and optimizes
// it in the background once it is hot; there is no type feedback to gather
// and nothing to deoptimize (generated JavaScript was thrown back to V8's
// interpreter whenever a guest path first ran after V8 had optimized it).
//
// Each record's code does what record-ops.ts and the Cpu helpers it calls
// do, with the checks in the same order, so a region agrees with the
// interpreter instruction by instruction:
//
// - Guest registers and the lazy-flag state are locals, loaded from the
//   vCPU's state block (state-block.ts) on entry and stored back on exit;
//   the run loop keeps the state there while it goes from region to region.
// - A region checks what it was compiled under on entry and after every
//   instruction it hands to the interpreter: its pages lie inside the CS
//   limit, the segments it assumed flat still are, and the stack size. The
//   TLB tags it uses are those of the current privilege, read from the
//   MMU's table, so one region serves supervisor and user code.
// - A memory access that misses the TLB, is misaligned (which covers one
//   that crosses a page) or goes to MMIO or a code page (those have no TLB
//   entry) leaves the region before its instruction, which the interpreter
//   then runs on the state before it: an instruction changes registers and
//   flags only after its last memory access, as in QEMU's softmmu fast path
//   whose hit test includes the alignment. ESP moves after the last check.
// - Calls out (the interpreter for one instruction, a #GP for a branch past
//   the CS limit, a segment check that is not flat, RCL/RCR) first store
//   the state and the instruction's place in its block in the state block,
//   so an exception finds what the interpreter would have left
//   (Cpu.faultRestore); the imports copy it to the CPU before the call.
// - Blocks are cases of a loop around a br_table on the block's index;
//   branches to blocks of the region set the index and loop, any other
//   target leaves with EIP there. A block runs only when the slice budget
//   holds all of it (otherwise the interpreter runs it and stops mid-block).
import { ES } from "./constants.js";
import { REC_STRIDE } from "./decode-cache.js";
import * as D from "./decoder.js";
import { overwritesFlags } from "./region-blocks.js";
import { S_BLOCK_EIP, S_BLOCK_N, S_BLOCK_REC, S_CS_BASE, S_CS_LIMIT, S_EIP, S_FLAGS, S_REGS, S_SEG_BASE, S_SEG_FAST, S_SLICE, S_STACK32 } from "./state-block.js";
import { FunctionWriter, I32, ModuleWriter, OP, uleb, type Label } from "./wasm-writer.js";
import { cfFunction, condFunction, flagsFunction } from "./region-runtime.js";
import { EXIT_LIN_SLOW, EXIT_RAISE_GP, EXIT_SHIFT, EXIT_STEP, EXIT_TYPE, REGION_TYPE } from "./region-table.js";
import { add, and, cond3, eq, eqz, evenParity, get, gtU, k, leS, leU, load, ltS, ltU, mul, ne, or, select, shl, shrS, shrU, store, sub, sumAboveU, xor, type X } from "./wasm-expr.js";

const MASKS = [255, 65535, -1];
const SIGNS = [128, 32768, -2147483648];
const SHIFTS = [24, 16, 0];

// Function indices: a region's module imports no function (V8 spends about
// 90 µs more per module that does); it calls out through the imported table.
const F_REGION = 0;
const F_BLOCK_INDEX = 1;
const F_CF = 2;
const F_COND = 3;
const F_FLAGS = 4;
// Type indices, in the order buildRegionModule adds them.
const T_EXIT = 0;

/** A call out through the exit table (region-table.ts): `op` and up to four arguments, one i32 back. */
function exit(op: number, a: X = k(0), b: X = k(0), c: X = k(0), d: X = k(0)): X {
  return [...k(op), ...a, ...b, ...c, ...d, ...k(0), OP.callIndirect, T_EXIT, 0x00];
}

/** What the compiler knows about the lazy-flag locals at a point of a block (-1: unknown). */
interface FlagState {
  op: number;
  s: number;
  lz: number;
}
const UNKNOWN: FlagState = { op: -1, s: -1, lz: -1 };

/** Which registers a region reads and writes, and which segments it addresses. */
interface Usage {
  regs: number;
  written: number;
  segs: number;
  /** Segments assumed flat (checked on entry and after the interpreter ran an instruction). */
  guard: number;
  /** Segments assumed flat with base 0. */
  zeroGuard: number;
}

/** Where the region finds the tables it reads, as byte offsets in the host memory. */
export interface RegionTables {
  /** The MMU's words giving the current read, write and execute tag arrays (mmu-ept TLB_CURRENT_TAGS). */
  currentTags: number;
  /** Host byte offsets of the TLB entries. */
  off: number;
  /** The vCPU's state block (state-block.ts). */
  state: number;
}

/** A region to compile: its blocks by offset from the entry page's start, and what the code may assume. */
export interface RegionPlan {
  /** The entry block's id: names the region to the exit (region-table.ts). */
  id: number;
  rec: Int32Array;
  offs: number[];
  ids: number[];
  bStart: Int32Array;
  bCount: Uint8Array;
  bBytes: Uint16Array;
  /** Page index (0: entry page) per block. */
  pageOf: number[];
  /** The region's pages: offset in pages from the entry page, host byte offset of the page. */
  pages: { delta: number; hostOff: number }[];
  /** EIP span of the pages, relative to the entry page's start. */
  spanLo: number;
  spanHi: number;
  code32: boolean;
  /** Segments (bit per register) that were flat when the region was compiled: it assumes they stay so. */
  fastSegs: number;
  /** Of those, the ones whose base was 0: the region assumes that too, and adds no base. */
  zeroSegs: number;
  stack32: boolean;
}

/**
 * Generates the region function `(eip, n, budget) -> count`: locals for
 * the guest state, expressions for operands and flags, statements per
 * record kind.
 */
class RegionGen {
  readonly f = new FunctionWriter([I32, I32, I32]);
  readonly use: Usage = { regs: 0, written: 0, segs: 0, guard: 0, zeroGuard: 0 };
  // Parameters.
  readonly eip = 0;
  readonly n = 1;
  readonly budget = 2;
  // Locals.
  readonly pb: number;
  readonly r: number[];
  readonly fl: number;
  readonly lz: number;
  readonly fO: number;
  readonly fA: number;
  readonly fB: number;
  readonly fR: number;
  readonly fS: number;
  readonly fC: number;
  readonly sb: number[];
  readonly sf: number[];
  /** Byte offsets of the current read, write and execute tag arrays. */
  readonly tagR: number;
  readonly tagW: number;
  readonly tagX: number;
  readonly att: number;
  readonly o: number;
  readonly k: number;
  readonly q: number;
  readonly csLim: number;
  readonly lp: number;
  private readonly temps: number[] = [];
  private t = 0;
  /** Labels of the dispatch loop and of the exit. */
  loop!: Label;
  done!: Label;
  private fs: FlagState = UNKNOWN;
  private kO = -1;
  private kS = -1;
  kLz = -1;
  private slowK = 0;
  private slowOff = 0;
  private block = { off: 0, rec: 0 };
  private kk = 0;

  constructor(
    readonly plan: RegionPlan,
    readonly tables: RegionTables,
    /** Block index of each region offset (the br_table's case), for direct transfers. */
    readonly indexOf: Map<number, number>,
  ) {
    const f = this.f;
    this.pb = f.local();
    this.r = [0, 1, 2, 3, 4, 5, 6, 7].map(() => f.local());
    this.fl = f.local();
    this.lz = f.local();
    this.fO = f.local();
    this.fA = f.local();
    this.fB = f.local();
    this.fR = f.local();
    this.fS = f.local();
    this.fC = f.local();
    this.sb = [0, 1, 2, 3, 4, 5].map(() => f.local());
    this.sf = [0, 1, 2, 3, 4, 5].map(() => f.local());
    this.tagR = f.local();
    this.tagW = f.local();
    this.tagX = f.local();
    this.att = f.local();
    this.o = f.local();
    this.k = f.local();
    this.q = f.local();
    this.csLim = f.local();
    this.lp = f.local();
  }

  get stack32(): boolean {
    return this.plan.stack32;
  }

  get code32(): boolean {
    return this.plan.code32;
  }

  // ------------------------------------------------------------ basics

  get(l: number): X {
    return get(l);
  }

  set(l: number, v: X): void {
    this.f.emit(v);
    this.f.emit([OP.localSet, ...uleb(l)]);
  }

  /** Code that stores `v` in state slot `slot`. */
  stS(slot: number, v: X): X {
    return store(2, k(0), v, this.tables.state + slot * 4);
  }

  /** State slot `slot`. */
  ldS(slot: number): X {
    return load(2, k(0), this.tables.state + slot * 4);
  }

  /** A temporary for the current instruction. */
  tmp(): number {
    if (this.t === this.temps.length) this.temps.push(this.f.local());
    return this.temps[this.t++];
  }

  resetTemps(): void {
    this.t = 0;
  }

  /** `if (c) { then() } else { otherwise() }` as statements. */
  when(c: X, then: () => void, otherwise?: () => void): void {
    this.f.emit(c);
    this.f.open("if");
    then();
    if (otherwise !== undefined) {
      this.f.else();
      otherwise();
    }
    this.f.end();
  }

  // ------------------------------------------------------------ registers

  reg(s: number, i: number): X {
    if (s === 2) {
      this.use.regs |= 1 << i;
      return this.get(this.r[i]);
    }
    if (s === 1) {
      this.use.regs |= 1 << i;
      return and(this.get(this.r[i]), k(65535));
    }
    if (i < 4) {
      this.use.regs |= 1 << i;
      return and(this.get(this.r[i]), k(255));
    }
    this.use.regs |= 1 << (i - 4);
    return and(shrS(this.get(this.r[i - 4]), k(8)), k(255));
  }

  setReg(s: number, i: number, v: X): void {
    if (s === 2) {
      this.use.regs |= 1 << i;
      this.use.written |= 1 << i;
      this.set(this.r[i], v);
    } else if (s === 1) {
      this.use.regs |= 1 << i;
      this.use.written |= 1 << i;
      this.set(this.r[i], or(and(this.get(this.r[i]), k(-65536)), and(v, k(65535))));
    } else if (i < 4) {
      this.use.regs |= 1 << i;
      this.use.written |= 1 << i;
      this.set(this.r[i], or(and(this.get(this.r[i]), k(-256)), and(v, k(255))));
    } else {
      const j = i - 4;
      this.use.regs |= 1 << j;
      this.use.written |= 1 << j;
      this.set(this.r[j], or(and(this.get(this.r[j]), k(-65281)), shl(and(v, k(255)), k(8))));
    }
  }

  // ------------------------------------------------------------ memory

  ea(r: number): X {
    const rec = this.plan.rec;
    const w = rec[r + 1];
    const base = w & 15;
    const index = (w >> 4) & 15;
    const disp = rec[r + 2];
    if ((w & D.EA16) === 0) {
      let e: X | undefined;
      if (base !== D.NO_REG) e = this.reg(2, base);
      if (index !== D.NO_REG) {
        const sc = (w >> 8) & 3;
        const ix = sc === 0 ? this.reg(2, index) : shl(this.reg(2, index), k(sc));
        e = e === undefined ? ix : add(e, ix);
      }
      if (e === undefined) return k(disp);
      return disp !== 0 ? add(e, k(disp)) : e;
    }
    let e: X = k(disp);
    if (base !== D.NO_REG) e = add(this.reg(1, base), e);
    if (index !== D.NO_REG) e = add(e, this.reg(1, index));
    return and(e, k(65535));
  }

  seg(r: number): number {
    return (this.plan.rec[r + 1] >> 12) & 7;
  }

  /** The linear address of `seg`:`off` (`off` cheap to repeat: a local or constant). */
  linExpr(seg: number, off: X, len: number, write: boolean): X {
    if ((this.plan.zeroSegs >> seg) & 1) {
      // Flat with base 0 (Linux's kernel data and stack): the offset is the linear address.
      this.use.zeroGuard |= 1 << seg;
      return off;
    }
    this.use.segs |= 1 << seg;
    if ((this.plan.fastSegs >> seg) & 1) {
      this.use.guard |= 1 << seg;
      return add(this.get(this.sb[seg]), off);
    }
    const slow = this.spill(this.kk);
    slow.push(exit(EXIT_LIN_SLOW, k(seg), off, k(len), k(write ? 1 : 0)));
    return cond3(eq(this.get(this.sf[seg]), k(1)), add(this.get(this.sb[seg]), off), slow);
  }

  sp(reg: number): X {
    this.use.regs |= 1 << reg;
    return this.stack32 ? this.get(this.r[reg]) : and(this.get(this.r[reg]), k(65535));
  }

  setSp(v32: X): void {
    this.use.regs |= 1 << 4;
    this.use.written |= 1 << 4;
    this.set(this.r[4], this.stack32 ? v32 : or(and(this.get(this.r[4]), k(-65536)), and(v32, k(65535))));
  }

  /** A local holding the linear address of `seg`:`off`. */
  lin(seg: number, off: X, len: number, write: boolean): number {
    this.use.segs |= 1 << seg;
    const o = this.tmp();
    const la = this.tmp();
    this.set(o, off);
    this.set(la, this.linExpr(seg, this.get(o), len, write));
    return la;
  }

  /**
   * The TLB lookup of an access of size `s` at local `la` through the tag
   * array whose byte offset is in local `tags`: the hit test (the tag, and
   * the alignment: a misaligned access leaves, which covers one that
   * crosses a page) and the byte address in the host memory.
   */
  private lookup(tags: number, s: number, la: number): { hit: X; addr: X } {
    const vp = this.tmp();
    const ti = this.tmp();
    this.set(vp, shrU(this.get(la), k(12)));
    this.set(ti, shl(and(this.get(vp), k(16383)), k(2)));
    // One compare for the tag and the alignment: (tag ^ vpn) | (la & (size - 1)) is zero exactly on an aligned hit.
    const tagDiff = xor(load(2, add(this.get(ti), this.get(tags))), this.get(vp));
    return {
      hit: eqz(s === 0 ? tagDiff : or(tagDiff, and(this.get(la), k((1 << s) - 1)))),
      addr: add(load(2, this.get(ti), this.tables.off), and(this.get(la), k(4095))),
    };
  }

  /** Leaves the region before the current instruction (the interpreter runs it). */
  slowExit(): void {
    this.set(this.k, k(this.slowK));
    this.set(this.o, k(this.slowOff));
    this.set(this.att, k(-1));
    this.f.br(this.loop);
  }

  read(s: number, la: number): number {
    const v = this.tmp();
    const a = this.lookup(this.tagR, s, la);
    this.when(
      a.hit,
      () => this.set(v, load(s, a.addr)),
      () => this.slowExit(),
    );
    return v;
  }

  write(s: number, la: number, v: X): void {
    const a = this.lookup(this.tagW, s, la);
    this.when(
      a.hit,
      () => this.f.emit(store(s, a.addr, v)),
      () => this.slowExit(),
    );
  }

  rmw(s: number, la: number, compute: (x: X) => X): void {
    const x = this.tmp();
    const ix = this.tmp();
    const a = this.lookup(this.tagW, s, la);
    this.when(
      a.hit,
      () => {
        this.set(ix, a.addr);
        this.set(x, load(s, this.get(ix)));
      },
      () => this.slowExit(),
    );
    const v = compute(this.get(x));
    this.f.emit(store(s, this.get(ix), v));
  }

  // ------------------------------------------------------------ flags

  private flagArgs(): X {
    return [...this.get(this.fl), ...this.get(this.lz), ...this.get(this.fO), ...this.get(this.fA), ...this.get(this.fB), ...this.get(this.fR), ...this.get(this.fS), ...this.get(this.fC)];
  }

  cf(): X {
    const f = this.fs;
    if (f.lz < 0) return [...this.flagArgs(), OP.call, F_CF];
    if ((f.lz & 1) === 0) return and(this.get(this.fl), k(1));
    const u = (l: number): X => (f.s === 2 ? this.get(l) : and(this.get(l), k(MASKS[f.s])));
    const carry = eqz(eqz(this.get(this.fC)));
    switch (f.op) {
      case 1:
        return ltU(u(this.fR), u(this.fA));
      case 2:
        return select(carry, leU(u(this.fR), u(this.fA)), ltU(u(this.fR), u(this.fA)));
      case 3:
        return ltU(u(this.fA), u(this.fB));
      case 4:
        return select(carry, leU(u(this.fA), u(this.fB)), ltU(u(this.fA), u(this.fB)));
      default:
        return k(0);
    }
  }

  cond(cc: number): X {
    const f = this.fs;
    if (f.lz < 0) return [...k(cc), ...this.flagArgs(), OP.call, F_COND];
    const neg = (cc & 1) !== 0;
    const m = MASKS[f.s];
    const sign = SIGNS[f.s];
    const sh = SHIFTS[f.s];
    const shv = (l: number): X => (sh === 0 ? this.get(l) : shl(this.get(l), k(sh)));
    const flag = (bit: number): X => ne(and(this.get(this.fl), k(bit)), k(0));
    const zf = (f.lz & 0x40) !== 0 ? (f.s === 2 ? eqz(this.get(this.fR)) : eqz(and(this.get(this.fR), k(m)))) : flag(64);
    const sf = (f.lz & 0x80) !== 0 ? ltS(shv(this.fR), k(0)) : flag(128);
    let of: X;
    if ((f.lz & 0x800) === 0) of = flag(2048);
    else if (f.op === 1 || f.op === 2) of = ne(and(and(xor(this.get(this.fA), this.get(this.fR)), xor(this.get(this.fB), this.get(this.fR))), k(sign)), k(0));
    else if (f.op === 3 || f.op === 4) of = ne(and(and(xor(this.get(this.fA), this.get(this.fB)), xor(this.get(this.fA), this.get(this.fR))), k(sign)), k(0));
    else of = k(0);
    const subState = f.op === 3 && (f.lz & 0x8c1) === 0x8c1;
    const logic = f.op === 0 && (f.lz & 0x8c1) === 0x8c1;
    let t: X;
    switch (cc >> 1) {
      case 0:
        t = of;
        break;
      case 1:
        t = subState ? ltU(shv(this.fA), shv(this.fB)) : logic ? k(0) : this.cf();
        break;
      case 2:
        t = zf;
        break;
      case 3:
        t = subState ? leU(shv(this.fA), shv(this.fB)) : logic ? zf : or(this.cf(), zf);
        break;
      case 4:
        t = sf;
        break;
      case 5:
        t = (f.lz & 4) !== 0 ? evenParity(this.get(this.fR)) : flag(4);
        break;
      case 6:
        t = subState ? ltS(shv(this.fA), shv(this.fB)) : logic ? sf : ne(sf, of);
        break;
      default:
        t = subState ? leS(shv(this.fA), shv(this.fB)) : logic ? leS(shv(this.fR), k(0)) : or(zf, ne(sf, of));
    }
    return neg ? eqz(t) : t;
  }

  private kOp(op: number): void {
    if (this.kO === op) return;
    this.kO = op;
    this.set(this.fO, k(op));
  }

  private kSL(s: number, lazy: number): void {
    if (this.kS !== s) this.set(this.fS, k(s));
    if (this.kLz !== lazy) this.set(this.lz, k(lazy));
    this.kS = s;
    this.kLz = lazy;
  }

  forget(): void {
    this.kO = this.kS = this.kLz = -1;
  }

  resetFlags(): void {
    this.fs = UNKNOWN;
    this.forget();
  }

  alu(aop: number, a: X, b: X, s: number): number {
    const x = this.tmp();
    const y = this.tmp();
    const r = this.tmp();
    this.set(x, a);
    this.set(y, b);
    let op: number;
    switch (aop) {
      case 0:
        this.set(r, add(this.get(x), this.get(y)));
        op = 1;
        break;
      case 1:
        this.set(r, or(this.get(x), this.get(y)));
        op = 0;
        break;
      case 2: {
        const c = this.tmp();
        this.set(c, this.cf());
        this.set(r, add(add(this.get(x), this.get(y)), this.get(c)));
        this.set(this.fC, this.get(c));
        op = 2;
        break;
      }
      case 3: {
        const c = this.tmp();
        this.set(c, this.cf());
        this.set(r, sub(sub(this.get(x), this.get(y)), this.get(c)));
        this.set(this.fC, this.get(c));
        op = 4;
        break;
      }
      case 4:
        this.set(r, and(this.get(x), this.get(y)));
        op = 0;
        break;
      case 6:
        this.set(r, xor(this.get(x), this.get(y)));
        op = 0;
        break;
      default:
        this.set(r, sub(this.get(x), this.get(y)));
        op = 3;
    }
    this.kOp(op);
    this.set(this.fA, this.get(x));
    this.set(this.fB, this.get(y));
    this.set(this.fR, this.get(r));
    this.kSL(s, 0x8d5);
    this.fs = { op, s, lz: 0x8d5 };
    return r;
  }

  logic(r: number, s: number): void {
    this.kOp(0);
    this.set(this.fR, this.get(r));
    this.kSL(s, 0x8d5);
    this.fs = { op: 0, s, lz: 0x8d5 };
  }

  incDec(x: X, s: number, dec: boolean): number {
    const f = this.fs;
    if (f.lz < 0) {
      this.when(ne(and(this.get(this.lz), k(1)), k(0)), () => this.set(this.fl, or(and(this.get(this.fl), k(-2)), [...this.flagArgs(), OP.call, F_CF])));
    } else if ((f.lz & 1) !== 0) this.set(this.fl, or(and(this.get(this.fl), k(-2)), this.cf()));
    const a = this.tmp();
    const r = this.tmp();
    this.set(a, x);
    this.set(r, dec ? sub(this.get(a), k(1)) : add(this.get(a), k(1)));
    this.kOp(dec ? 3 : 1);
    this.set(this.fA, this.get(a));
    this.set(this.fB, k(1));
    this.set(this.fR, this.get(r));
    this.kSL(s, 0x8d4);
    this.fs = { op: dec ? 3 : 1, s, lz: 0x8d4 };
    return r;
  }

  resultFlags(r: number, s: number, direct: X): void {
    this.set(this.fl, or(and(this.get(this.fl), k(-2262)), direct));
    this.kOp(0);
    this.set(this.fR, this.get(r));
    this.kSL(s, 0xc4);
    this.fs = { op: 0, s, lz: 0xc4 };
  }

  /** Stores the flag locals in the state block. */
  flagsOut(): X {
    const out: X = [];
    [this.fl, this.lz, this.fO, this.fA, this.fB, this.fR, this.fS, this.fC].forEach((l, i) => out.push(this.stS(S_FLAGS + i, this.get(l))));
    return out;
  }

  /** Loads the flag locals from the state block. */
  flagsIn(): X {
    const out: X = [];
    [this.fl, this.lz, this.fO, this.fA, this.fB, this.fR, this.fS, this.fC].forEach((l, i) => out.push([...this.ldS(S_FLAGS + i), OP.localSet, ...uleb(l)]));
    return out;
  }

  /** Shift/rotate `op` of the value `v` (size `s`) by `count` (masked to 0..31); returns the result's local. */
  shift(op: number, v: X, count: X, s: number, constCount: number): number {
    const bits = 8 << s;
    const m = MASKS[s];
    const r = this.tmp();
    const x = this.tmp();
    const c = this.tmp();
    const cf = this.tmp();
    const of = this.tmp();
    const kk = this.tmp();
    const g = (l: number): X => this.get(l);
    this.set(x, s === 2 ? v : and(v, k(m)));
    this.set(c, count);
    this.set(r, g(x));
    if (constCount === 0) return x;
    const setFlags = (withOf: boolean): void => {
      this.set(this.fl, or(or(and(g(this.fl), k(-2262)), g(cf)), withOf ? shl(g(of), k(11)) : k(0)));
      this.kOp(0);
      this.set(this.fR, g(r));
      this.kSL(s, 0xc4);
    };
    const body = (): void => {
      if (op === 4 || op === 6) {
        if (s === 2) {
          this.set(r, shl(g(x), g(c)));
          this.set(cf, and(shrU(g(x), sub(k(32), g(c))), k(1)));
        } else {
          this.when(
            ltS(g(c), k(bits)),
            () => {
              this.set(r, and(shl(g(x), g(c)), k(m)));
              this.set(cf, and(shrU(g(x), sub(k(bits), g(c))), k(1)));
            },
            () => {
              this.set(r, k(0));
              this.set(cf, select(eq(g(c), k(bits)), and(g(x), k(1)), k(0)));
            },
          );
        }
        this.set(of, xor(and(shrU(g(r), k(bits - 1)), k(1)), g(cf)));
        setFlags(true);
      } else if (op === 5) {
        if (s === 2) {
          this.set(r, shrU(g(x), g(c)));
          this.set(cf, and(shrU(g(x), sub(g(c), k(1))), k(1)));
        } else {
          this.when(
            ltS(g(c), k(bits)),
            () => {
              this.set(r, shrU(g(x), g(c)));
              this.set(cf, and(shrU(g(x), sub(g(c), k(1))), k(1)));
            },
            () => {
              this.set(r, k(0));
              this.set(cf, select(eq(g(c), k(bits)), and(shrU(g(x), k(bits - 1)), k(1)), k(0)));
            },
          );
        }
        this.set(of, select(eq(g(c), k(1)), and(shrU(g(x), k(bits - 1)), k(1)), k(0)));
        setFlags(true);
      } else if (op === 7) {
        const sv = of; // SAR has no OF: its temporary holds the sign-extended value
        this.set(sv, s === 2 ? g(x) : shrS(shl(g(x), k(32 - bits)), k(32 - bits)));
        this.set(kk, select(ltS(g(c), k(bits)), g(c), k(bits - 1)));
        this.set(r, and(shrS(g(sv), g(kk)), k(m)));
        this.set(cf, select(ltS(g(c), k(bits)), and(shrS(g(sv), sub(g(c), k(1))), k(1)), select(ltS(g(sv), k(0)), k(1), k(0))));
        setFlags(false);
      } else if (op === 0 || op === 1) {
        this.set(kk, and(g(c), k(bits - 1)));
        const rot =
          op === 0
            ? and(or(shl(g(x), g(kk)), shrU(g(x), sub(k(bits), g(kk)))), k(m))
            : and(or(shrU(g(x), g(kk)), shl(g(x), sub(k(bits), g(kk)))), k(m));
        this.set(r, cond3(eqz(g(kk)), g(x), rot));
        if (op === 0) {
          this.set(cf, and(g(r), k(1)));
          this.set(of, xor(and(shrU(g(r), k(bits - 1)), k(1)), g(cf)));
        } else {
          this.set(cf, and(shrU(g(r), k(bits - 1)), k(1)));
          this.set(of, xor(g(cf), and(shrU(g(r), k(bits - 2)), k(1))));
        }
        this.when(ne(g(this.lz), k(0)), () => this.set(this.fl, [...this.flagArgs(), OP.call, F_FLAGS]));
        this.set(this.fl, or(or(and(g(this.fl), k(-2050)), g(cf)), shl(g(of), k(11))));
        this.set(this.lz, k(0));
        this.kLz = 0;
      } else {
        // RCL/RCR: the interpreter's own code, with the flag locals synchronised around it.
        this.f.emit(this.flagsOut());
        this.set(r, exit(EXIT_SHIFT, k(op), g(x), g(c), k(s)));
        this.f.emit(this.flagsIn());
        this.forget();
      }
    };
    if (constCount >= 0) body();
    else {
      this.when(ne(g(c), k(0)), body);
      this.forget();
    }
    if (constCount < 0 || op === 2 || op === 3) this.fs = UNKNOWN;
    else if (op === 0 || op === 1) this.fs = { op: -1, s: 2, lz: 0 };
    else this.fs = { op: 0, s, lz: 0xc4 };
    return r;
  }

  // ------------------------------------------------------------ positions and exits

  /** Starts instruction `k` of a block (at region offset `off`): its slow memory paths leave the region before it. */
  startInstruction(k: number, off: number): void {
    this.slowK = k;
    this.slowOff = off;
    this.kk = k;
  }

  startBlock(off: number, rec: number): void {
    this.block = { off, rec };
  }

  /** Stores the registers (all eight: the prologue loaded them all) and the flags in the state block. */
  storeState(): X {
    const out: X = [];
    for (let i = 0; i < 8; i++) out.push(this.stS(S_REGS + i, this.get(this.r[i])));
    out.push(this.flagsOut());
    return out;
  }

  /** Loads the registers, the flags and the segments in `segs` from the state block, and the MMU's current tag arrays. */
  loadState(segs: number): X {
    const out: X = [];
    for (let i = 0; i < 8; i++) out.push([...this.ldS(S_REGS + i), OP.localSet, ...uleb(this.r[i])]);
    out.push(this.flagsIn());
    for (let i = 0; i < 6; i++)
      if ((segs >> i) & 1) {
        out.push([...this.ldS(S_SEG_BASE + i), OP.localSet, ...uleb(this.sb[i])]);
        out.push([...load(0, k(0), this.tables.state + S_SEG_FAST * 4 + i), OP.localSet, ...uleb(this.sf[i])]);
      }
    [this.tagR, this.tagW, this.tagX].forEach((l, i) => out.push([...load(2, k(0), this.tables.currentTags + i * 4), OP.localSet, ...uleb(l)]));
    return out;
  }

  /**
   * Whether what the region assumed no longer holds: a segment it treats
   * as flat is not, or the stack size changed (checked on entry and after
   * the interpreter ran an instruction for it). `guard` is the set of
   * segments assumed flat, `zero` of those assumed flat with base 0.
   */
  assumptionsBroken(guard: number, zero: number): X {
    let e: X = xor(this.ldS(S_STACK32), k(this.stack32 ? 1 : 0));
    for (let i = 0; i < 6; i++) {
      if (((guard | zero) >> i) & 1) e = or(e, xor(load(0, k(0), this.tables.state + S_SEG_FAST * 4 + i), k(1)));
      if ((zero >> i) & 1) e = or(e, this.ldS(S_SEG_BASE + i));
    }
    return ne(e, k(0));
  }

  /**
   * Code that puts everything an exception from the call after it needs in
   * the state block: the guest state and the instruction's place (its
   * index `kIdx` in the block).
   */
  spill(kIdx = this.kk): X {
    const mask = this.code32 ? -1 : 0xffff;
    const out = this.storeState();
    out.push(this.stS(S_SLICE, add(this.get(this.n), k(kIdx))));
    out.push(this.stS(S_BLOCK_EIP, and(add(this.get(this.pb), k(this.block.off)), k(mask))));
    out.push(this.stS(S_BLOCK_REC, k(this.block.rec)));
    out.push(this.stS(S_BLOCK_N, this.get(this.n)));
    return out;
  }

  /** Reloads what the interpreter may have changed: the registers, the flags, every segment, the privilege's tag arrays. */
  fill(): X {
    return this.loadState(0x3f);
  }

  outsideSpan(t: X): X {
    const { spanLo, spanHi } = this.plan;
    return spanLo === 0 ? gtU(sub(t, this.get(this.pb)), k(spanHi)) : gtU(add(sub(t, this.get(this.pb)), k(-spanLo)), k(spanHi - spanLo));
  }

  /** Continues at region offset `to` (a constant) after `kIdx` instructions of the block. */
  goTo(kIdx: number, to: number): void {
    this.set(this.k, k(kIdx));
    this.set(this.o, k(to));
    this.set(this.q, k(this.indexOf.get(to) ?? this.indexOf.size));
    this.f.br(this.loop);
  }

  /** Continues at the region offset in local `ol` after `kIdx` instructions. */
  goToDynamic(kIdx: number): void {
    this.set(this.k, k(kIdx));
    this.set(this.q, [...this.get(this.o), OP.call, F_BLOCK_INDEX]);
    this.f.br(this.loop);
  }
}

/** Emits one block's records (`count` instructions from record word `start`, `bytes` long at region offset `off`). */
function compileBlock(g: RegionGen, start: number, count: number, bytes: number, off: number): void {
  const rec = g.plan.rec;
  const code32 = g.code32;
  let r = start;
  let i = 0;
  let pos = 0;
  while (i < count) {
    const w = rec[r];
    const id = w & 0xff;
    const len = (w >> 8) & 15;
    const s = (w >> 12) & 3;
    const sub4 = (w >> 16) & 15;
    const a = (w >> 20) & 15;
    const b = (w >> 24) & 15;
    const fused = D.isFused(w);
    const next = pos + len;
    const nextExpr = (): X => (code32 ? add(g.get(g.pb), k(off + next)) : and(add(g.get(g.pb), k(off + next)), k(65535)));
    g.startInstruction(i, off + pos);
    g.resetTemps();
    let ended = false;
    const transfer = (t: X, kIdx: number, sizeBits: number, afterCheck?: () => void): void => {
      const tt = g.tmp();
      g.set(tt, sizeBits !== 2 ? and(t, k(65535)) : t);
      g.when(and(g.outsideSpan(g.get(tt)), gtU(g.get(tt), g.get(g.csLim))), () => g.f.emit([...g.spill(kIdx - 1), ...exit(EXIT_RAISE_GP), OP.drop, OP.unreachable]));
      afterCheck?.();
      g.set(g.o, sub(g.get(tt), g.get(g.pb)));
      g.goToDynamic(kIdx);
    };
    const relTransfer = (disp: number, kIdx: number, sizeBits: number): void => {
      const to = off + next + disp;
      if (code32 && sizeBits === 2 && to >= g.plan.spanLo && to <= g.plan.spanHi) g.goTo(kIdx, to);
      else transfer(add(nextExpr(), k(disp)), kIdx, sizeBits);
    };
    const interpret = (): void => {
      const mask = code32 ? -1 : 0xffff;
      g.f.emit(g.spill(i));
      g.f.emit(g.stS(S_EIP, and(add(g.get(g.pb), k(off + pos)), k(mask))));
      g.set(g.att, exit(EXIT_STEP, k(g.plan.id)));
      g.f.emit(g.fill());
      // The segments that were flat at compile time (a superset of those the region assumes flat, which are only known at its end).
      g.set(g.att, or(g.get(g.att), g.assumptionsBroken(g.plan.fastSegs, g.plan.zeroSegs)));
      g.set(g.o, sub(g.ldS(S_EIP), g.get(g.pb)));
      g.goToDynamic(i + 1);
      g.resetFlags();
    };
    switch (id) {
      case D.H_STRING:
        if ((rec[r + 1] & 8) !== 0) stringElement(g, sub4, s, rec[r + 1] & 7);
        else {
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
        const aop = id === D.H_ALU_RR32 || id === D.H_ALU_RR ? sub4 : [0, 1, 4, 5, 6, 7][id - D.H_ADD_RR32];
        const res = g.alu(aop, g.reg(s, a), g.reg(s, b), s);
        if (aop !== 7) g.setReg(s, a, g.get(res));
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
        const aop = id === D.H_ALU_RI32 || id === D.H_ALU_RI ? sub4 : [0, 1, 4, 5, 6, 7][id - D.H_ADD_RI32];
        const res = g.alu(aop, g.reg(s, a), k(rec[r + 3]), s);
        if (aop !== 7) g.setReg(s, a, g.get(res));
        break;
      }
      case D.H_ALU_MR32:
      case D.H_ALU_MR:
      case D.H_ALU_MI32:
      case D.H_ALU_MI: {
        const la = g.lin(g.seg(r), g.ea(r), 1 << s, true);
        const y = id === D.H_ALU_MR32 || id === D.H_ALU_MR ? g.reg(s, a) : k(rec[r + 3]);
        g.rmw(s, la, (x) => g.get(g.alu(sub4, x, y, s)));
        break;
      }
      case D.H_ALU_RM32:
      case D.H_ALU_RM: {
        const la = g.lin(g.seg(r), g.ea(r), 1 << s, false);
        const v = g.read(s, la);
        const res = g.alu(sub4, g.reg(s, a), g.get(v), s);
        if (sub4 !== 7) g.setReg(s, a, g.get(res));
        break;
      }
      case D.H_CMP_MR:
      case D.H_CMP_MI: {
        const la = g.lin(g.seg(r), g.ea(r), 1 << s, false);
        const v = g.read(s, la);
        g.alu(7, g.get(v), id === D.H_CMP_MR ? g.reg(s, a) : k(rec[r + 3]), s);
        break;
      }
      case D.H_TEST_RR:
      case D.H_TEST_RR32: {
        const t = g.tmp();
        g.set(t, and(g.reg(s, b), g.reg(s, a)));
        g.logic(t, s);
        break;
      }
      case D.H_TEST_RI: {
        const t = g.tmp();
        g.set(t, and(g.reg(s, a), k(rec[r + 3])));
        g.logic(t, s);
        break;
      }
      case D.H_TEST_MR:
      case D.H_TEST_MI: {
        const la = g.lin(g.seg(r), g.ea(r), 1 << s, false);
        const v = g.read(s, la);
        const t = g.tmp();
        g.set(t, and(g.get(v), id === D.H_TEST_MR ? g.reg(s, a) : k(rec[r + 3])));
        g.logic(t, s);
        break;
      }
      case D.H_INC_R:
      case D.H_DEC_R: {
        const res = g.incDec(g.reg(s, a), s, id === D.H_DEC_R);
        g.setReg(s, a, g.get(res));
        break;
      }
      case D.H_INC_M:
      case D.H_DEC_M: {
        const la = g.lin(g.seg(r), g.ea(r), 1 << s, true);
        g.rmw(s, la, (x) => g.get(g.incDec(x, s, id === D.H_DEC_M)));
        break;
      }
      case D.H_PUSH_R:
      case D.H_PUSH_I:
      case D.H_PUSH_M: {
        let v: X;
        if (id === D.H_PUSH_R) v = g.reg(s, a);
        else if (id === D.H_PUSH_I) v = k(rec[r + 3]);
        else v = g.get(g.read(s, g.lin(g.seg(r), g.ea(r), 1 << s, false)));
        const pv = g.tmp();
        g.set(pv, v);
        push(g, s, g.get(pv));
        break;
      }
      case D.H_POP_R: {
        const n = s === 2 ? 4 : 2;
        const v = popRead(g, s, 4);
        g.setSp(add(g.get(g.r[4]), k(n)));
        g.setReg(s, a, g.get(v));
        break;
      }
      case D.H_MOV_RR:
        g.setReg(s, a, g.reg(s, b));
        break;
      case D.H_MOV_RI:
        g.setReg(s, a, k(rec[r + 3]));
        break;
      case D.H_MOV_RM: {
        const v = g.read(s, g.lin(g.seg(r), g.ea(r), 1 << s, false));
        g.setReg(s, a, g.get(v));
        break;
      }
      case D.H_MOV_MR:
      case D.H_MOV_MI: {
        const la = g.lin(g.seg(r), g.ea(r), 1 << s, true);
        g.write(s, la, id === D.H_MOV_MR ? g.reg(s, a) : k(rec[r + 3]));
        break;
      }
      case D.H_LEA:
        g.setReg(s, a, g.ea(r));
        break;
      case D.H_JCC:
        g.when(g.cond(sub4), () => relTransfer(rec[r + 2], i + 1, s));
        break;
      case D.H_CMPJ_RR32:
      case D.H_CMPJ_RI32:
      case D.H_TESTJ_RR32:
      case D.H_INCJ_R32:
      case D.H_DECJ_R32: {
        if (id === D.H_TESTJ_RR32) {
          const t = g.tmp();
          g.set(t, and(g.reg(2, b), g.reg(2, a)));
          g.logic(t, 2);
        } else if (id === D.H_INCJ_R32 || id === D.H_DECJ_R32) {
          g.setReg(2, a, g.get(g.incDec(g.reg(2, a), 2, id === D.H_DECJ_R32)));
        } else g.alu(7, g.reg(2, a), id === D.H_CMPJ_RI32 ? k(rec[r + 3]) : g.reg(2, b), 2);
        g.when(g.cond(sub4), () => relTransfer(rec[r + 2], i + 2, s));
        break;
      }
      case D.H_JMP:
        relTransfer(rec[r + 2], i + 1, s);
        ended = true;
        break;
      case D.H_CALL: {
        const t = g.tmp();
        const target = add(nextExpr(), k(rec[r + 2]));
        g.set(t, s !== 2 ? and(target, k(65535)) : target);
        g.when(and(g.outsideSpan(g.get(t)), gtU(g.get(t), g.get(g.csLim))), () => g.f.emit([...g.spill(i), ...exit(EXIT_RAISE_GP), OP.drop, OP.unreachable]));
        push(g, s, nextExpr());
        transfer(g.get(t), i + 1, 2);
        ended = true;
        break;
      }
      case D.H_CALL_R:
      case D.H_CALL_M: {
        const t = g.tmp();
        const v = id === D.H_CALL_R ? g.reg(s, b) : g.get(g.read(s, g.lin(g.seg(r), g.ea(r), 1 << s, false)));
        g.set(t, s !== 2 ? and(v, k(65535)) : v);
        g.when(and(g.outsideSpan(g.get(t)), gtU(g.get(t), g.get(g.csLim))), () => g.f.emit([...g.spill(i), ...exit(EXIT_RAISE_GP), OP.drop, OP.unreachable]));
        push(g, s, nextExpr());
        transfer(g.get(t), i + 1, 2);
        ended = true;
        break;
      }
      case D.H_JMP_R:
      case D.H_JMP_M: {
        const v = id === D.H_JMP_R ? g.reg(s, b) : g.get(g.read(s, g.lin(g.seg(r), g.ea(r), 1 << s, false)));
        transfer(v, i + 1, s);
        ended = true;
        break;
      }
      case D.H_RET: {
        const n = s === 2 ? 4 : 2;
        const v = popRead(g, s, 4);
        const rel = n + rec[r + 3];
        transfer(g.get(v), i + 1, s, () => g.setSp(add(g.get(g.r[4]), k(rel))));
        ended = true;
        break;
      }
      case D.H_LEAVE: {
        g.use.written |= 1 << 5;
        const v = popRead(g, s, 5);
        const n = s === 2 ? 4 : 2;
        g.setSp(add(g.get(g.r[5]), k(n)));
        g.setReg(s, 5, g.get(v));
        break;
      }
      case D.H_SHIFT_R:
      case D.H_SHIFT_M: {
        const op = sub4 & 7;
        const byCl = (sub4 & 8) !== 0;
        const cnt = byCl ? and(g.reg(0, 1), k(31)) : k(rec[r + 3] & 31);
        const cc = byCl ? -1 : rec[r + 3] & 31;
        if (id === D.H_SHIFT_R) {
          const res = g.shift(op, g.reg(s, b), cnt, s, cc);
          if (cc !== 0) g.setReg(s, b, g.get(res));
        } else {
          const c = g.tmp();
          g.set(c, cnt);
          const la = g.lin(g.seg(r), g.ea(r), 1 << s, true);
          g.rmw(s, la, (x) => g.get(g.shift(op, x, g.get(c), s, cc)));
        }
        break;
      }
      case D.H_MOVX_R:
      case D.H_MOVX_M: {
        const ss = sub4 & 2 ? 1 : 0;
        const v = id === D.H_MOVX_R ? g.reg(ss, b) : g.get(g.read(ss, g.lin(g.seg(r), g.ea(r), 1 << ss, false)));
        const ext = (sub4 & 1) === 0 ? v : ss === 1 ? shrS(shl(v, k(16)), k(16)) : shrS(shl(v, k(24)), k(24));
        g.setReg(s, a, ext);
        break;
      }
      case D.H_IMUL_R:
      case D.H_IMUL_M: {
        const src = id === D.H_IMUL_R ? g.reg(s, b) : g.get(g.read(s, g.lin(g.seg(r), g.ea(r), 1 << s, false)));
        const x = sub4 & 1 ? g.reg(s, a) : src;
        const y = sub4 & 1 ? src : k(rec[r + 3]);
        const p = g.tmp();
        const q = g.tmp();
        const rr = g.tmp();
        if (i + 1 < count && overwritesFlags(rec[r + REC_STRIDE])) {
          // Nothing can see CF/OF: the product alone.
          g.set(rr, s === 1 ? and(mul(x, y), k(65535)) : mul(x, y));
          g.setReg(s, a, g.get(rr));
          break;
        }
        if (s === 1) {
          g.set(p, mul(shrS(shl(x, k(16)), k(16)), shrS(shl(y, k(16)), k(16))));
          g.set(rr, and(g.get(p), k(65535)));
          g.set(q, select(ne(g.get(p), shrS(shl(g.get(p), k(16)), k(16))), k(2049), k(0)));
        } else {
          g.set(p, x);
          g.set(q, y);
          g.set(rr, mul(g.get(p), g.get(q)));
          // The exact product in 64 bits differs from the sign-extended 32-bit one exactly on overflow.
          const wide = [...g.get(p), OP.i64ExtendI32S, ...g.get(q), OP.i64ExtendI32S, OP.i64Mul];
          g.set(q, select([...wide, ...g.get(rr), OP.i64ExtendI32S, OP.i64Ne], k(2049), k(0)));
        }
        g.resultFlags(rr, s, g.get(q));
        g.setReg(s, a, g.get(rr));
        break;
      }
      case D.H_SETCC_R:
        g.setReg(0, b, g.cond(sub4));
        break;
      case D.H_SETCC_M: {
        const la = g.lin(g.seg(r), g.ea(r), 1, true);
        g.write(0, la, g.cond(sub4));
        break;
      }
      case D.H_CMOV_R:
        g.when(g.cond(sub4), () => g.setReg(s, a, g.reg(s, b)));
        break;
      case D.H_CMOV_M: {
        const v = g.read(s, g.lin(g.seg(r), g.ea(r), 1 << s, false));
        g.when(g.cond(sub4), () => g.setReg(s, a, g.get(v)));
        break;
      }
      case D.H_CWDE:
        if (sub4 & 1) {
          if (s === 2) g.setReg(2, 2, shrS(g.reg(2, 0), k(31)));
          else g.setReg(1, 2, shrS(shl(g.reg(2, 0), k(16)), k(31)));
        } else if (s === 2) g.setReg(2, 0, shrS(shl(g.reg(2, 0), k(16)), k(16)));
        else g.setReg(1, 0, shrS(shl(g.reg(2, 0), k(24)), k(24)));
        break;
      case D.H_NOP:
        break;
      case D.H_NOTNEG_R:
        if (sub4 === 2) g.setReg(s, b, xor(g.reg(s, b), k(-1)));
        else g.setReg(s, b, g.get(g.alu(5, k(0), g.reg(s, b), s)));
        break;
      case D.H_XCHG_RR: {
        const t = g.tmp();
        g.set(t, g.reg(s, b));
        g.setReg(s, b, g.reg(s, a));
        g.setReg(s, a, g.get(t));
        break;
      }
      default:
        throw new Error(`block compiler: no code for record ${id}`);
    }
    if (ended) return;
    i += fused ? 2 : 1;
    pos = next;
    r += REC_STRIDE;
  }
  // Fall-through: the block ended without a transfer (length or window limit).
  g.goTo(count, off + bytes);
}

/**
 * One element of MOVS, CMPS, STOS, LODS or SCAS (`kind` 0..4, as
 * Cpu.stringElement) with 32-bit addressing: the accesses (source in `seg`,
 * destination in ES), then ESI/EDI move by the element size, down when
 * DF=1 (only instructions the interpreter runs change DF, and it reloads fl).
 */
function stringElement(g: RegionGen, kind: number, s: number, seg: number): void {
  const n = 1 << s;
  g.use.regs |= (1 << 6) | (1 << 7);
  const src = (): X => g.get(g.read(s, g.lin(seg, g.get(g.r[6]), n, false)));
  const dst = (): X => g.get(g.read(s, g.lin(ES, g.get(g.r[7]), n, false)));
  switch (kind) {
    case 0: {
      const v = src();
      g.write(s, g.lin(ES, g.get(g.r[7]), n, true), v);
      break;
    }
    case 1: {
      const a = src();
      g.alu(7, a, dst(), s);
      break;
    }
    case 2:
      g.write(s, g.lin(ES, g.get(g.r[7]), n, true), g.reg(s, 0));
      break;
    case 3:
      g.setReg(s, 0, src());
      break;
    default:
      g.alu(7, g.reg(s, 0), dst(), s);
  }
  const d = select(ne(and(g.get(g.fl), k(1024)), k(0)), k(-n), k(n));
  if (kind !== 2 && kind !== 4) g.setReg(2, 6, add(g.get(g.r[6]), d));
  if (kind !== 3) g.setReg(2, 7, add(g.get(g.r[7]), d));
}

/** The read of a value of size `s` from the top of the stack (stack pointer in register `spReg`); returns its local. */
function popRead(g: RegionGen, s: number, spReg: number): number {
  g.use.regs |= (1 << 4) | (1 << spReg);
  g.use.written |= 1 << 4;
  g.use.segs |= 1 << 2;
  const sp = g.tmp();
  const la = g.tmp();
  g.set(sp, g.sp(spReg));
  g.set(la, g.linExpr(2, g.get(sp), 1 << s, false));
  return g.read(s, la);
}

/** A push of `v` of size `s`: the store, then ESP. */
function push(g: RegionGen, s: number, v: X): void {
  const n = s === 2 ? 4 : 2;
  g.use.regs |= 1 << 4;
  g.use.written |= 1 << 4;
  g.use.segs |= 1 << 2;
  const sp = g.tmp();
  const la = g.tmp();
  g.set(sp, g.stack32 ? sub(g.get(g.r[4]), k(n)) : and(sub(g.get(g.r[4]), k(n)), k(65535)));
  g.set(la, g.linExpr(2, g.get(sp), n, true));
  g.write(s, la, v);
  g.set(g.r[4], g.stack32 ? g.get(sp) : or(and(g.get(g.r[4]), k(-65536)), g.get(sp)));
}

// ---------------------------------------------------------------- the module

/** `blockIndex(o)`: the case of region offset `o`, or the number of cases (leave). A binary search over the sorted offsets. */
function blockIndexFunction(offs: number[], indexOf: Map<number, number>): FunctionWriter {
  const f = new FunctionWriter([I32]);
  const sorted = [...offs].sort((x, y) => x - y);
  const none = indexOf.size;
  const search = (lo: number, hi: number): X => {
    if (hi - lo <= 2) {
      let e: X = k(none);
      for (let j = hi - 1; j >= lo; j--) e = select(eq([OP.localGet, 0], k(sorted[j])), k(indexOf.get(sorted[j])!), e);
      return e;
    }
    const mid = (lo + hi) >> 1;
    return cond3(ltS([OP.localGet, 0], k(sorted[mid])), search(lo, mid), search(mid, hi));
  };
  f.emit(search(0, sorted.length));
  return f;
}


/** The lazy-flag helpers' bodies (the same in every module), written once. */
let RUNTIME_BODIES: Uint8Array[] | undefined;

/** The compiled module of a region: its binary, and the registers and segments its code uses. */
export interface RegionModule {
  bytes: Uint8Array;
  use: Usage;
}

/**
 * Generates the WebAssembly module of a region: the region function
 * `(eip, n, budget) -> count` (the count's complement when the interpreter
 * must run the instruction at the new EIP, or when the region cannot run
 * here), its block index and the lazy-flag helpers (region-runtime.ts).
 * It imports the host memory (at least `memoryPages` 64 KiB pages) and the
 * vCPU's exit table (region-table.ts).
 */
export function buildRegionModule(plan: RegionPlan, tables: RegionTables, memoryPages: number): RegionModule {
  const indexOf = new Map<number, number>();
  plan.offs.forEach((o, q) => indexOf.set(o, q));
  const g = generateRegion(plan, tables, indexOf);
  const mw = new ModuleWriter();
  if (mw.type(EXIT_TYPE, [I32]) !== T_EXIT) throw new Error("block compiler: type indices out of order");
  const t8 = mw.type([I32, I32, I32, I32, I32, I32, I32, I32], [I32]);
  mw.importMemory("e", "m", memoryPages);
  mw.importTable("e", "t", 1);
  mw.addFunction(mw.type(REGION_TYPE, [I32]), g.f);
  mw.addFunction(mw.type([I32], [I32]), blockIndexFunction(plan.offs, indexOf));
  RUNTIME_BODIES ??= [cfFunction().body(), condFunction(F_CF).body(), flagsFunction(F_CF).body()];
  mw.addFunction(t8, RUNTIME_BODIES[0]);
  mw.addFunction(mw.type([I32, I32, I32, I32, I32, I32, I32, I32, I32], [I32]), RUNTIME_BODIES[1]);
  if (mw.addFunction(t8, RUNTIME_BODIES[2]) !== F_FLAGS) throw new Error("block compiler: function indices out of order");
  mw.exportFunction("run", F_REGION);
  return { bytes: mw.bytes(), use: g.use };
}

/** Generates the region function's code: the blocks in a dispatch loop, then the prologue (which needs to know what they use) and the epilogue around them. */
function generateRegion(plan: RegionPlan, tables: RegionTables, indexOf: Map<number, number>): RegionGen {
  const g = new RegionGen(plan, tables, indexOf);
  const f = g.f;
  const nBlocks = plan.offs.length;
  // The dispatch loop: each iteration adds the instructions the last block ran, then goes to block q.
  g.done = f.open("block");
  g.loop = f.open("loop");
  g.set(g.n, add(g.get(g.n), g.get(g.k)));
  g.set(g.k, k(0));
  f.emit(g.get(g.att));
  f.brIf(g.done);
  const caseLabels: Label[] = [];
  for (let q = nBlocks - 1; q >= 0; q--) caseLabels[q] = f.open("block");
  f.emit(g.get(g.q));
  f.brTable(caseLabels, g.done);
  for (let q = 0; q < nBlocks; q++) {
    f.end();
    const id = plan.ids[q];
    const off = plan.offs[q];
    const pi = plan.pageOf[q];
    if (pi > 0) {
      // A block of another page runs only while that page still translates, for execution, to what it was decoded from.
      const pg = plan.pages[pi];
      const v = and(add(g.get(g.lp), k(pg.delta)), k(0xfffff));
      const x = shl(and(v, k(16383)), k(2));
      f.emit(or(xor(load(2, add(x, g.get(g.tagX))), v), xor(load(2, x, tables.off), k(pg.hostOff))));
      f.brIf(g.done);
    }
    f.emit(ltS(sub(g.get(g.budget), g.get(g.n)), k(plan.bCount[id])));
    f.brIf(g.done);
    g.startBlock(off, plan.bStart[id]);
    g.resetFlags();
    compileBlock(g, plan.bStart[id], plan.bCount[id], plan.bBytes[id], off);
  }
  f.emit([OP.unreachable]);
  f.end(); // loop
  f.end(); // done
  // Epilogue: the state back to the state block, EIP and the count.
  const mask = plan.code32 ? -1 : 0xffff;
  f.emit(g.storeState());
  f.emit(g.stS(S_EIP, and(add(g.get(g.pb), g.get(g.o)), k(mask))));
  f.emit(g.stS(S_SLICE, g.get(g.n)));
  f.emit(select(ltS(g.get(g.att), k(0)), xor(g.get(g.n), k(-1)), g.get(g.n)));
  const body = f.code.take();
  // Prologue: where the region runs, whether it may, then the state it uses and the entry block.
  const o0 = g.tmp();
  g.set(o0, and(add(g.ldS(S_CS_BASE), g.get(g.eip)), k(4095)));
  g.set(g.pb, sub(g.get(g.eip), g.get(o0)));
  // Its pages must lie inside the CS limit and the EIP range (then targets in them need no limit check), and what it assumed must hold.
  let refuse = gtU(g.get(g.pb), g.get(g.eip));
  if (plan.spanLo < 0) refuse = or(refuse, ltU(g.get(g.pb), k(-plan.spanLo)));
  refuse = or(refuse, sumAboveU(g.get(g.pb), plan.spanHi, g.ldS(S_CS_LIMIT)));
  refuse = or(refuse, sumAboveU(g.get(g.pb), plan.spanHi, k(plan.code32 ? -1 : 0xffff)));
  refuse = or(refuse, g.assumptionsBroken(g.use.guard, g.use.zeroGuard));
  f.emit(refuse);
  f.open("if");
  f.emit(g.stS(S_EIP, g.get(g.eip)));
  f.emit(g.stS(S_SLICE, g.get(g.n)));
  f.emit([...xor(g.get(g.n), k(-1)), OP.return]);
  f.end();
  f.emit(g.loadState(g.use.segs));
  g.set(g.csLim, g.ldS(S_CS_LIMIT));
  g.set(g.lp, shrU(add(g.ldS(S_CS_BASE), g.get(g.pb)), k(12)));
  g.set(g.o, g.get(o0));
  g.set(g.q, [...g.get(o0), OP.call, F_BLOCK_INDEX]);
  f.code.bytes(body);
  return g;
}
