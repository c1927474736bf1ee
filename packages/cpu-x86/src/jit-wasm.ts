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
// - Guest registers and the lazy-flag state are locals. A small JavaScript
//   wrapper per region checks what the region was compiled under, copies
//   the CPU's registers and flags into the vCPU's state block (a table in
//   the host memory, layout S_*) and back; the region loads them from there
//   on entry and stores the ones it wrote on exit.
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
import { FunctionWriter, I32, I64, ModuleWriter, OP, append, sleb, uleb, type Label } from "./wasm-writer.js";

// ---------------------------------------------------------------- state block

/** State block slots (int32 each): the eight general registers. */
export const S_REGS = 0;
/** Lazy-flag state: flags, lazy, fOp, fA, fB, fR, fS, fC. */
export const S_FLAGS = 8;
/** EIP after the region ran (or of the instruction it hands to the interpreter). */
export const S_EIP = 16;
/** Cpu.sliceCount, Cpu.blockEip, Cpu.blockRec, Cpu.blockN: where an exception finds the instruction. */
export const S_SLICE = 17;
export const S_BLOCK_EIP = 18;
export const S_BLOCK_REC = 19;
export const S_BLOCK_N = 20;
/** CS base and limit (int32 bits). */
export const S_CS_BASE = 21;
export const S_CS_LIMIT = 22;
/** Segment bases (6). */
export const S_SEG_BASE = 24;
/** Segment fast flags (6). */
export const S_SEG_FAST = 30;
/** Slots in the state block. */
export const S_SLOTS = 40;

// ---------------------------------------------------------------- expressions

/** WebAssembly code that leaves one i32 on the stack. */
type X = number[];

const k = (v: number): X => [OP.i32Const, ...sleb(v)];
const bin =
  (op: number) =>
  (a: X, b: X): X => {
    const out = a.slice();
    append(out, b);
    out.push(op);
    return out;
  };
const add = bin(OP.i32Add);
const sub = bin(OP.i32Sub);
const and = bin(OP.i32And);
const or = bin(OP.i32Or);
const xor = bin(OP.i32Xor);
const shl = bin(OP.i32Shl);
const shrS = bin(OP.i32ShrS);
const shrU = bin(OP.i32ShrU);
const mul = bin(OP.i32Mul);
const eq = bin(OP.i32Eq);
const ne = bin(OP.i32Ne);
const ltS = bin(OP.i32LtS);
const ltU = bin(OP.i32LtU);
const gtU = bin(OP.i32GtU);
const leS = bin(OP.i32LeS);
const leU = bin(OP.i32LeU);
const eqz = (a: X): X => [...a, OP.i32Eqz];
/** `c ? a : b`, both evaluated (cheap operands only). */
const select = (c: X, a: X, b: X): X => [...a, ...b, ...c, OP.select];
/** `c ? a : b`, only one evaluated. */
const cond3 = (c: X, a: X, b: X): X => [...c, OP.if, I32, ...a, OP.else, ...b, OP.end];
/** The parity flag's condition: an even number of ones in the low byte. */
const evenParity = (r: X): X => eqz(and([...and(r, k(255)), OP.i32Popcnt], k(1)));
const LOADS = [OP.i32Load8U, OP.i32Load16U, OP.i32Load];
const STORES = [OP.i32Store8, OP.i32Store16, OP.i32Store];
const load = (s: number, addr: X, offset = 0): X => [...addr, LOADS[s], s, ...uleb(offset)];
const MASKS = [255, 65535, -1];
const SIGNS = [128, 32768, -2147483648];
const SHIFTS = [24, 16, 0];

// Function indices: the imports, then the region and its helpers.
const F_STEP = 0;
const F_RAISE_GP = 1;
const F_LIN_SLOW = 2;
const F_SHIFT = 3;
const F_REGION = 4;
const F_BLOCK_INDEX = 5;
const F_CF = 6;
const F_COND = 7;
const F_FLAGS = 8;

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
  /** Segments assumed fast (checked by the wrapper on entry and after the interpreter ran an instruction). */
  guard: number;
}

/** Where the TLB and the state block are, as byte offsets in the host memory. */
export interface WasmTables {
  /** Tags of the current privilege: read, write, execute. */
  tagR: number;
  tagW: number;
  tagX: number;
  /** Host byte offsets of the TLB entries. */
  off: number;
  /** The vCPU's state block (S_* slots). */
  state: number;
}

/** A region to compile: its blocks by offset from the entry page's start, and what the code may assume. */
export interface WasmRegionPlan {
  rec: Int32Array;
  offs: number[];
  ids: number[];
  bStart: Int32Array;
  bCount: Uint8Array;
  bBytes: Uint16Array;
  /** Page index (0: entry page) per block; per foreign page its delta and host page offset. */
  pageOf: number[];
  pages: { delta: number; hostOff: number }[];
  spanLo: number;
  spanHi: number;
  code32: boolean;
  fastSegs: number;
  stack32: boolean;
}

/**
 * Generates the region function: locals for the guest state, expressions
 * for operands and flags, and statements per record kind.
 */
class WasmRegionGen {
  readonly f = new FunctionWriter([I32, I32, I32, I32]);
  readonly use: Usage = { regs: 0, written: 0, segs: 0, guard: 0 };
  // Parameters.
  readonly pb = 0;
  readonly o0 = 1;
  readonly n = 2;
  readonly budget = 3;
  // Locals.
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
  readonly att: number;
  readonly o: number;
  readonly k: number;
  readonly q: number;
  readonly csLim: number;
  readonly lp: number;
  readonly i64tmp: number;
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
    readonly plan: WasmRegionPlan,
    readonly tables: WasmTables,
    /** Block index of each region offset (the br_table's case), for direct transfers. */
    readonly indexOf: Map<number, number>,
    /** The registers and segments the region uses, from a first pass (spills and reloads cover them); undefined in that pass. */
    private readonly known: Usage | undefined,
  ) {
    const f = this.f;
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
    this.att = f.local();
    this.o = f.local();
    this.k = f.local();
    this.q = f.local();
    this.csLim = f.local();
    this.lp = f.local();
    this.i64tmp = f.local(I64);
  }

  get stack32(): boolean {
    return this.plan.stack32;
  }

  get code32(): boolean {
    return this.plan.code32;
  }

  // ------------------------------------------------------------ basics

  get(l: number): X {
    return [OP.localGet, ...uleb(l)];
  }

  set(l: number, v: X): void {
    this.f.emit(v);
    this.f.emit([OP.localSet, ...uleb(l)]);
  }

  /** Code that stores `v` in state slot `slot`. */
  stS(slot: number, v: X): X {
    return [OP.i32Const, 0, ...v, OP.i32Store, 2, ...uleb(this.tables.state + slot * 4)];
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
    this.use.segs |= 1 << seg;
    if ((this.plan.fastSegs >> seg) & 1) {
      this.use.guard |= 1 << seg;
      return add(this.get(this.sb[seg]), off);
    }
    const slow = this.spill(this.kk);
    append(slow, [...k(seg), ...off, ...k(len), ...k(write ? 1 : 0), OP.call, F_LIN_SLOW]);
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

  /** The TLB lookup of an access of size `s` at local `la` through the tags at `tags`: the aligned-hit test and the byte address. */
  private lookup(tags: number, s: number, la: number): { hit: X; addr: X } {
    const vp = this.tmp();
    const ti = this.tmp();
    this.set(vp, shrU(this.get(la), k(12)));
    this.set(ti, shl(and(this.get(vp), k(16383)), k(2)));
    const tagHit = eq(load(2, this.get(ti), tags), this.get(vp));
    return {
      hit: s === 0 ? tagHit : and(tagHit, eqz(and(this.get(la), k((1 << s) - 1)))),
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
    const a = this.lookup(this.tables.tagR, s, la);
    this.when(
      a.hit,
      () => this.set(v, load(s, a.addr)),
      () => this.slowExit(),
    );
    return v;
  }

  write(s: number, la: number, v: X): void {
    const a = this.lookup(this.tables.tagW, s, la);
    this.when(
      a.hit,
      () => this.f.emit([...a.addr, ...v, STORES[s], s, 0]),
      () => this.slowExit(),
    );
  }

  rmw(s: number, la: number, compute: (x: X) => X): void {
    const x = this.tmp();
    const ix = this.tmp();
    const a = this.lookup(this.tables.tagW, s, la);
    this.when(
      a.hit,
      () => {
        this.set(ix, a.addr);
        this.set(x, load(s, this.get(ix)));
      },
      () => this.slowExit(),
    );
    const v = compute(this.get(x));
    this.f.emit([...this.get(ix), ...v, STORES[s], s, 0]);
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
    [this.fl, this.lz, this.fO, this.fA, this.fB, this.fR, this.fS, this.fC].forEach((l, i) => append(out, this.stS(S_FLAGS + i, this.get(l))));
    return out;
  }

  /** Loads the flag locals from the state block. */
  flagsIn(): X {
    const out: X = [];
    [this.fl, this.lz, this.fO, this.fA, this.fB, this.fR, this.fS, this.fC].forEach((l, i) => append(out, [...this.ldS(S_FLAGS + i), OP.localSet, ...uleb(l)]));
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
        this.set(r, [...k(op), ...g(x), ...g(c), ...k(s), OP.call, F_SHIFT]);
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

  /** Stores the written registers and the flags in the state block. */
  storeState(written = this.use.written): X {
    const out: X = [];
    for (let i = 0; i < 8; i++) if ((written >> i) & 1) append(out, this.stS(S_REGS + i, this.get(this.r[i])));
    append(out, this.flagsOut());
    return out;
  }

  /** Loads the registers the region uses (`regs`), the flags and the segments (`segs`) from the state block. */
  loadState(regs: number, segs: number): X {
    const out: X = [];
    for (let i = 0; i < 8; i++) if ((regs >> i) & 1) append(out, [...this.ldS(S_REGS + i), OP.localSet, ...uleb(this.r[i])]);
    append(out, this.flagsIn());
    for (let i = 0; i < 6; i++)
      if ((segs >> i) & 1) {
        append(out, [...this.ldS(S_SEG_BASE + i), OP.localSet, ...uleb(this.sb[i])]);
        append(out, [...this.ldS(S_SEG_FAST + i), OP.localSet, ...uleb(this.sf[i])]);
      }
    return out;
  }

  /**
   * Code that puts everything an exception from the call after it needs in
   * the state block: the guest state and the instruction's place (its
   * index `kIdx` in the block).
   */
  spill(kIdx = this.kk): X {
    const mask = this.code32 ? -1 : 0xffff;
    const out = this.storeState(this.known?.written ?? 0);
    append(out, this.stS(S_SLICE, add(this.get(this.n), k(kIdx))));
    append(out, this.stS(S_BLOCK_EIP, and(add(this.get(this.pb), k(this.block.off)), k(mask))));
    append(out, this.stS(S_BLOCK_REC, k(this.block.rec)));
    append(out, this.stS(S_BLOCK_N, this.get(this.n)));
    return out;
  }

  /** Reloads what the interpreter may have changed: the registers the region uses, the flags and the segments. */
  fill(): X {
    return this.loadState(this.known?.regs ?? 0, this.known?.segs ?? 0);
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
function compileBlock(g: WasmRegionGen, start: number, count: number, bytes: number, off: number): void {
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
      g.when(and(g.outsideSpan(g.get(tt)), gtU(g.get(tt), g.get(g.csLim))), () => g.f.emit([...g.spill(kIdx - 1), OP.call, F_RAISE_GP, OP.unreachable]));
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
      g.set(g.att, [OP.call, F_STEP]);
      g.f.emit(g.fill());
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
        g.when(and(g.outsideSpan(g.get(t)), gtU(g.get(t), g.get(g.csLim))), () => g.f.emit([...g.spill(i), OP.call, F_RAISE_GP, OP.unreachable]));
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
        g.when(and(g.outsideSpan(g.get(t)), gtU(g.get(t), g.get(g.csLim))), () => g.f.emit([...g.spill(i), OP.call, F_RAISE_GP, OP.unreachable]));
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
function stringElement(g: WasmRegionGen, kind: number, s: number, seg: number): void {
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
function popRead(g: WasmRegionGen, s: number, spReg: number): number {
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
function push(g: WasmRegionGen, s: number, v: X): void {
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

// ---------------------------------------------------------------- helpers in every module

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

const P = (i: number): X => [OP.localGet, ...uleb(i)];

/** `cfOf(fl, lz, op, a, b, r, s, c)`: CF of a lazy-flag state (as Cpu.getCF), for code that does not know the state statically. */
function cfFunction(): FunctionWriter {
  const f = new FunctionWriter([I32, I32, I32, I32, I32, I32, I32, I32]);
  const [fl, lz, op, a, b, r, s, c] = [0, 1, 2, 3, 4, 5, 6, 7].map(P);
  const m = f.local();
  f.emit([...eqz(and(lz, k(1))), OP.if, 0x40, ...and(fl, k(1)), OP.return, OP.end]);
  f.emit([...select(eq(s, k(2)), k(-1), select(eq(s, k(1)), k(65535), k(255))), OP.localSet, m]);
  const u = (x: X): X => and(x, P(m));
  const carry = ne(c, k(0));
  const res = select(
    eq(op, k(1)),
    ltU(u(r), u(a)),
    select(eq(op, k(2)), select(carry, leU(u(r), u(a)), ltU(u(r), u(a))), select(eq(op, k(3)), ltU(u(a), u(b)), select(eq(op, k(4)), select(carry, leU(u(a), u(b)), ltU(u(a), u(b))), k(0)))),
  );
  f.emit(res);
  return f;
}

/** The overflow flag of a lazy state (as Cpu), given the sign mask local. */
function overflowOf(lz: X, fl: X, op: X, a: X, b: X, r: X, sign: X): X {
  const add1 = ne(and(and(xor(a, r), xor(b, r)), sign), k(0));
  const sub1 = ne(and(and(xor(a, b), xor(a, r)), sign), k(0));
  const lazyOf = select(or(eq(op, k(1)), eq(op, k(2))), add1, select(or(eq(op, k(3)), eq(op, k(4))), sub1, k(0)));
  return select(eqz(and(lz, k(0x800))), ne(and(fl, k(0x800)), k(0)), lazyOf);
}

/** `condOf(cc, fl, lz, op, a, b, r, s, c)`: condition `cc` of a lazy-flag state (as Cpu.cond). */
function condFunction(): FunctionWriter {
  const f = new FunctionWriter([I32, I32, I32, I32, I32, I32, I32, I32, I32]);
  const [cc, fl, lz, op, a, b, r, s, c] = [0, 1, 2, 3, 4, 5, 6, 7, 8].map(P);
  const sign = f.local();
  const m = f.local();
  const zf = f.local();
  const sf = f.local();
  const of = f.local();
  const t = f.local();
  const set = (l: number, v: X): void => f.emit([...v, OP.localSet, ...uleb(l)]);
  set(sign, select(eq(s, k(2)), k(-2147483648), select(eq(s, k(1)), k(32768), k(128))));
  set(m, select(eq(s, k(2)), k(-1), select(eq(s, k(1)), k(65535), k(255))));
  set(zf, select(ne(and(lz, k(0x40)), k(0)), eqz(and(r, P(m))), ne(and(fl, k(0x40)), k(0))));
  set(sf, select(ne(and(lz, k(0x80)), k(0)), ne(and(r, P(sign)), k(0)), ne(and(fl, k(0x80)), k(0))));
  set(of, overflowOf(lz, fl, op, a, b, r, P(sign)));
  const cf = [...fl, ...lz, ...op, ...a, ...b, ...r, ...s, ...c, OP.call, F_CF];
  const pf = select(ne(and(lz, k(4)), k(0)), evenParity(r), ne(and(fl, k(4)), k(0)));
  const cases: X[] = [P(of), cf, P(zf), or(P(zf), cf), P(sf), pf, ne(P(sf), P(of)), or(P(zf), ne(P(sf), P(of)))];
  // t = cases[cc >> 1], through a chain of ifs.
  const kind = shrU(cc, k(1));
  let e: X = cases[7];
  for (let j = 6; j >= 0; j--) e = cond3(eq(kind, k(j)), cases[j], e);
  set(t, e);
  f.emit(select(and(cc, k(1)), eqz(P(t)), P(t)));
  return f;
}

/** `flagsOf(fl, lz, op, a, b, r, s, c)`: the arithmetic EFLAGS bits of a lazy-flag state (as Cpu.getFlags). */
function flagsFunction(): FunctionWriter {
  const f = new FunctionWriter([I32, I32, I32, I32, I32, I32, I32, I32]);
  const [fl, lz, op, a, b, r, s, c] = [0, 1, 2, 3, 4, 5, 6, 7].map(P);
  const fr = f.local();
  const sign = f.local();
  const m = f.local();
  const set = (l: number, v: X): void => f.emit([...v, OP.localSet, ...uleb(l)]);
  f.emit([...eqz(lz), OP.if, 0x40, ...fl, OP.return, OP.end]);
  set(fr, and(fl, xor(lz, k(-1))));
  set(m, select(eq(s, k(2)), k(-1), select(eq(s, k(1)), k(65535), k(255))));
  set(sign, select(eq(s, k(2)), k(-2147483648), select(eq(s, k(1)), k(32768), k(128))));
  const bit = (on: X, v: number): void => set(fr, or(P(fr), select(on, k(v), k(0))));
  const has = (x: number): X => ne(and(lz, k(x)), k(0));
  f.emit([...has(1), OP.if, 0x40, ...or(P(fr), [...fl, ...lz, ...op, ...a, ...b, ...r, ...s, ...c, OP.call, F_CF]), OP.localSet, ...uleb(fr), OP.end]);
  bit(and(has(4), evenParity(r)), 4);
  bit(and(and(has(0x10), ne(op, k(0))), ne(and(xor(xor(a, b), r), k(0x10)), k(0))), 0x10);
  bit(and(has(0x40), eqz(and(r, P(m)))), 0x40);
  bit(and(has(0x80), ne(and(r, P(sign)), k(0))), 0x80);
  bit(and(has(0x800), overflowOf(lz, fl, op, a, b, r, P(sign))), 0x800);
  f.emit(P(fr));
  return f;
}

// ---------------------------------------------------------------- the module

/** The compiled module of a region: its binary, and what the JavaScript glue needs. */
export interface WasmRegionModule {
  bytes: Uint8Array;
  use: Usage;
}

/**
 * Generates the WebAssembly module of a region: the region function
 * `(pb, o0, n, budget) -> count` (the count's complement when the
 * interpreter must run the instruction at the new EIP) and its helpers.
 */
export function buildWasmRegion(plan: WasmRegionPlan, tables: WasmTables, memoryPages: number): WasmRegionModule {
  const indexOf = new Map<number, number>();
  plan.offs.forEach((o, q) => indexOf.set(o, q));
  // Two passes: the first finds the registers and segments the region uses, which the second's spills and reloads cover.
  const first = generateRegion(plan, tables, indexOf, undefined);
  const g = generateRegion(plan, tables, indexOf, first.use);
  const u = g.use;
  if (u.regs !== first.use.regs || u.written !== first.use.written || u.segs !== first.use.segs) throw new Error("block compiler: passes disagree");
  const mw = new ModuleWriter();
  const tRegion = mw.type([I32, I32, I32, I32], [I32]);
  mw.importFunction("e", "step", mw.type([], [I32]));
  mw.importFunction("e", "raiseGp", mw.type([], []));
  mw.importFunction("e", "linSlow", mw.type([I32, I32, I32, I32], [I32]));
  mw.importFunction("e", "shift", mw.type([I32, I32, I32, I32], [I32]));
  mw.importMemory("e", "m", memoryPages);
  if (mw.nextFunction !== F_REGION) throw new Error("block compiler: function indices out of order");
  mw.addFunction(tRegion, g.f);
  mw.addFunction(mw.type([I32], [I32]), blockIndexFunction(plan.offs, indexOf));
  mw.addFunction(mw.type([I32, I32, I32, I32, I32, I32, I32, I32], [I32]), cfFunction());
  mw.addFunction(mw.type([I32, I32, I32, I32, I32, I32, I32, I32, I32], [I32]), condFunction());
  mw.addFunction(mw.type([I32, I32, I32, I32, I32, I32, I32, I32], [I32]), flagsFunction());
  mw.exportFunction("run", F_REGION);
  return { bytes: mw.bytes(), use: u };
}

/** Generates the region function's code (prologue, dispatch loop with the blocks, epilogue). */
function generateRegion(plan: WasmRegionPlan, tables: WasmTables, indexOf: Map<number, number>, known: Usage | undefined): WasmRegionGen {
  const g = new WasmRegionGen(plan, tables, indexOf, known);
  const f = g.f;
  const nBlocks = plan.offs.length;
  // Prologue: the state the region uses, its CS limit and page, and the entry block.
  f.emit(g.loadState(known?.regs ?? 0, known?.segs ?? 0));
  g.set(g.csLim, g.ldS(S_CS_LIMIT));
  g.set(g.lp, shrU(add(g.ldS(S_CS_BASE), g.get(g.pb)), k(12)));
  g.set(g.o, g.get(g.o0));
  g.set(g.q, [...g.get(g.o0), OP.call, F_BLOCK_INDEX]);
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
      // A block of another page runs only while that page still translates to what it was decoded from.
      const pg = plan.pages[pi];
      const v = and(add(g.get(g.lp), k(pg.delta)), k(0xfffff));
      const x = shl(and(v, k(16383)), k(2));
      f.emit(or(ne(load(2, x, tables.tagX), v), ne(load(2, x, tables.off), k(pg.hostOff))));
      f.brIf(g.done);
    }
    f.emit(lt(sub(g.get(g.budget), g.get(g.n)), plan.bCount[id]));
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
  f.emit(g.storeState(known?.written ?? 0));
  f.emit(g.stS(S_EIP, and(add(g.get(g.pb), g.get(g.o)), k(mask))));
  f.emit(g.stS(S_SLICE, g.get(g.n)));
  f.emit(select(ltS(g.get(g.att), k(0)), xor(g.get(g.n), k(-1)), g.get(g.n)));
  return g;
}

/** Code: `x < c` (signed), with `c` a constant. */
function lt(x: X, c: number): X {
  return ltS(x, k(c));
}

// ---------------------------------------------------------------- instantiation

/** The WebAssembly JS API as far as regions use it (TypeScript's ES libraries do not declare it). */
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: { run: (pb: number, o0: number, n: number, budget: number) => number } };
}
const wasmApi = (globalThis as { WebAssembly?: WasmApi }).WebAssembly;

/** Whether this platform can run WebAssembly regions. */
export const WASM_REGIONS = wasmApi !== undefined;

/** What the glue of a region checks and copies. */
export interface WasmGlueInputs {
  /** The compiled module. */
  module: WasmRegionModule;
  /** The host memory (imported by the module) and the state block's byte offset in it. */
  memory: object;
  buffer: ArrayBuffer;
  state: number;
  /** The entry page's block map (the interpreter must still be on it after it ran an instruction). */
  map: Uint16Array;
  /** The MMU's read tags at compile time (the privilege the TLB offsets were chosen for). */
  tagR: Int32Array;
  stack32: boolean;
  code32: boolean;
  spanLo: number;
  spanHi: number;
  /** Name of the wrapper (profiles show it). */
  name: string;
}

/**
 * Instantiates a region's module with its JavaScript glue and returns the
 * region function the run loop calls. The glue is generated per region, so
 * it copies only what the region uses and checks only what it assumed.
 */
export function instantiateWasmRegion(cpu: object, inp: WasmGlueInputs): { fn: (eip: number, n: number, budget: number) => number; glue: string } {
  if (wasmApi === undefined) throw new Error("block compiler: no WebAssembly on this platform");
  const u = inp.module.use;
  const segList = [0, 1, 2, 3, 4, 5].filter((i) => (u.segs >> i) & 1);
  const guardList = segList.filter((i) => (u.guard >> i) & 1);
  const guardOk = [...guardList.map((i) => `cpu.segFast[${i}] === 1`), `cpu.stack32 === ${inp.stack32}`, "cpu.mmu.tagR === TR"].join(" && ");
  const flagNames = ["flags", "lazy", "fOp", "fA", "fB", "fR", "fS", "fC"];
  const regsIn = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => `S[${S_REGS + i}] = regs[${i}];`).join(" ");
  const regsBack = [0, 1, 2, 3, 4, 5, 6, 7].map((i) => `regs[${i}] = S[${S_REGS + i}];`).join(" ");
  const writtenBack = [0, 1, 2, 3, 4, 5, 6, 7].filter((i) => (u.written >> i) & 1).map((i) => `regs[${i}] = S[${S_REGS + i}];`).join(" ");
  const flagsIn = flagNames.map((f, i) => `S[${S_FLAGS + i}] = cpu.${f};`).join(" ");
  const flagsBack = flagNames.map((f, i) => `cpu.${f} = S[${S_FLAGS + i}];`).join(" ");
  const segsIn = segList.map((i) => `S[${S_SEG_BASE + i}] = cpu.segBase[${i}]; S[${S_SEG_FAST + i}] = cpu.segFast[${i}];`).join(" ");
  const allSegsIn = [0, 1, 2, 3, 4, 5].map((i) => `S[${S_SEG_BASE + i}] = cpu.segBase[${i}]; S[${S_SEG_FAST + i}] = cpu.segFast[${i}];`).join(" ");
  const mask = inp.code32 ? "-1" : "65535";
  const src = `
"use strict";
const regs = cpu.regs;
// The state block to the CPU, before a call that may throw (Cpu.faultRestore reads the position).
function syncIn() {
  ${regsBack} ${flagsBack}
  cpu.sliceCount = S[${S_SLICE}]; cpu.blockEip = S[${S_BLOCK_EIP}]; cpu.blockRec = S[${S_BLOCK_REC}]; cpu.blockN = S[${S_BLOCK_N}];
}
const imports = { e: {
  m: memory,
  step() {
    syncIn();
    cpu.eip = S[${S_EIP}];
    cpu.step();
    ${regsIn} ${flagsIn} ${allSegsIn}
    S[${S_EIP}] = cpu.eip; S[${S_CS_BASE}] = cpu.csBase; S[${S_CS_LIMIT}] = cpu.csLimitBits;
    return cpu.attention !== 0 || cpu.winLen < 0 || cpu.curMap !== MAP || !(${guardOk}) ? 1 : 0;
  },
  raiseGp() { syncIn(); cpu.raiseGp(0); },
  linSlow(seg, off, len, write) { syncIn(); return cpu.linSlow(seg, off, len, write !== 0); },
  shift(op, x, c, s) { ${flagsBack} const r = cpu.shift(op, x, c, s); ${flagsIn} return r; },
} };
return { imports, wrap(W) {
  return function ${inp.name}(eip, n, budget) {
    const o0 = (cpu.csBase + eip) & 4095;
    const pb = (eip - o0) | 0;
    // The region's pages must lie inside the CS limit and the EIP range: then every block in them fits and targets in them need no limit check.
    if ((pb >>> 0) > (eip >>> 0) || (pb >>> 0) + ${inp.spanLo} < 0 || (pb >>> 0) + ${inp.spanHi} > cpu.csLimit || (pb >>> 0) + ${inp.spanHi} > (cpu.ipMask >>> 0)) return ~n;
    if (!(${guardOk})) return ~n;
    ${regsIn} ${flagsIn} ${segsIn}
    S[${S_CS_BASE}] = cpu.csBase; S[${S_CS_LIMIT}] = cpu.csLimitBits;
    const m = W(pb, o0, n, budget);
    ${writtenBack} ${flagsBack}
    cpu.eip = S[${S_EIP}] & ${mask}; cpu.sliceCount = S[${S_SLICE}];
    return m;
  };
} };`;
  const S = new Int32Array(inp.buffer, inp.state, S_SLOTS);
  const glue = new Function("cpu", "memory", "S", "MAP", "TR", src)(cpu, inp.memory, S, inp.map, inp.tagR) as {
    imports: object;
    wrap: (w: (pb: number, o0: number, n: number, budget: number) => number) => (eip: number, n: number, budget: number) => number;
  };
  const instance = new wasmApi.Instance(new wasmApi.Module(inp.module.bytes), glue.imports);
  return { fn: glue.wrap(instance.exports.run), glue: src };
}
