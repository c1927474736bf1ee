// The x87 FPU (Intel SDM Vol. 1 ch. 8, Vol. 2 D8-DF): eight 80-bit data
// registers addressed as a stack, the control, status and tag words, the
// last-instruction and last-operand pointers, and every escape instruction of
// the Pentium Pro/Pentium 4 class (plus FISTTP). Values stay in the 80-bit
// format bit for bit: arithmetic goes through the exact soft-float of
// x87-float80.ts; transcendental functions go through doubles (see the
// README for the precision contract). Unmasked exceptions set ES/B and are
// reported at the next waiting instruction as #MF (CR0.NE=1) or through the
// FERR# callback (CR0.NE=0, the PC's IRQ 13 path).
import { StateError, type Snapshottable, type StateValue } from "@typevisor/hv-core";
import * as C from "./constants.js";
import type { Cpu } from "./cpu.js";
import type { CpuExtension } from "./extensions.js";
import { below, log2Of, reduceTrig, trig } from "./x87-trans.js";
import {
  CLS_FINITE,
  CLS_INF,
  CLS_QNAN,
  CLS_SNAN,
  CLS_UNSUPPORTED,
  CLS_ZERO,
  FE_DENORMAL,
  FE_INEXACT,
  FE_INVALID,
  FE_OVERFLOW,
  FE_UNDERFLOW,
  FE_ZERO,
  FMT_F32,
  FMT_F64,
  FMT_F80,
  FMT_F80_P24,
  FMT_F80_P53,
  RC_NEAREST,
  RC_ZERO,
  SoftFloat,
  Unpacked,
  fromDouble,
  fromInt32,
  fromInt64,
  packF32,
  packF64,
  packF80,
  packOut,
  toDouble,
  unpackF32,
  unpackF64,
  unpackF80,
  type Format,
} from "./x87-float80.js";

/** FSW bits. */
const SW_SF = 0x40;
const SW_ES = 0x80;
const SW_C0 = 0x100;
const SW_C1 = 0x200;
const SW_C2 = 0x400;
const SW_C3 = 0x4000;
const SW_B = 0x8000;
const SW_CC = SW_C0 | SW_C1 | SW_C2 | SW_C3;

/** The QNaN floating-point indefinite (sign 1, exponent all ones, significand 0xC000...). */
const INDEF_SE = 0xffff;
const INDEF_HI = 0xc0000000 | 0;

/** CPUID.01H:EDX.FPU */
export const CPUID_FPU = 1 << 0;

/** Options of the x87 unit. */
export interface X87Options {
  /**
   * FERR# output, used when CR0.NE = 0 (MS-DOS compatible error reporting):
   * called with true when an unmasked exception is pending at a waiting
   * instruction (a PC routes this to IRQ 13). Without it the instruction
   * proceeds as if IGNNE# were asserted.
   */
  ferr?: (asserted: boolean) => void;
}

/**
 * The x87 floating-point unit as a {@link CpuExtension}: `escape` runs
 * D8-DF, `wait` runs FWAIT. The register file is shared with MMX (the SIMD
 * unit aliases MM0-MM7 onto the significands).
 */
export class X87 implements CpuExtension {
  /** Unit name. */
  readonly name = "x87";
  /** Control word. */
  cw = 0x40;
  /** Status word without TOP (bits 11-13 kept zero here). */
  sw = 0;
  /** Top-of-stack pointer. */
  top = 0;
  /** Bit i set when physical register i is not empty. */
  valid = 0xff;
  /** Physical registers: sign and exponent (16 bits). */
  readonly se = new Int32Array(8);
  /** Physical registers: significand bits 63..32. */
  readonly hi = new Int32Array(8);
  /** Physical registers: significand bits 31..0. */
  readonly lo = new Int32Array(8);
  /** Last instruction pointer (offset), its CS selector and opcode (11 bits). */
  fip = 0;
  /** Last instruction CS. */
  fcs = 0;
  /** Last opcode. */
  fop = 0;
  /** Last data pointer (offset) and its selector. */
  fdp = 0;
  /** Last data selector. */
  fds = 0;
  /** @internal The soft-float engine. */
  readonly sf = new SoftFloat();
  /** FERR# output (CR0.NE = 0). */
  ferr: ((asserted: boolean) => void) | undefined;
  /** Snapshot adapter. */
  readonly state: Snapshottable;

  private readonly ua = new Unpacked();
  private readonly ub = new Unpacked();
  private readonly uc = new Unpacked();
  private readonly buf = new Int32Array(28);

  /** @param index - the vCPU index (names the snapshot entry) */
  constructor(index = 0, options: X87Options = {}) {
    this.ferr = options.ferr;
    this.state = new X87Snapshot(this, `cpu${index}.x87`);
    this.reset();
  }

  /** Power-on state (Intel SDM Vol. 3 table 10-1): CW 0040h, tags valid, registers +0. */
  reset(): void {
    this.cw = 0x40;
    this.sw = 0;
    this.top = 0;
    this.valid = 0xff;
    this.se.fill(0);
    this.hi.fill(0);
    this.lo.fill(0);
    this.fip = this.fcs = this.fop = this.fdp = this.fds = 0;
  }

  /** FNINIT. */
  init(): void {
    this.cw = 0x37f;
    this.sw = 0;
    this.top = 0;
    this.valid = 0;
    this.fip = this.fcs = this.fop = this.fdp = this.fds = 0;
  }

  /** Adds the FPU feature bit to CPUID leaf 1. */
  cpuid(leaf: number, _subleaf: number, out: Int32Array): void {
    if (leaf === 1) out[3] |= CPUID_FPU;
  }

  // ------------------------------------------------------------------ status helpers

  /** The status word as FNSTSW stores it (TOP in bits 11-13). */
  getSw(): number {
    return (this.sw & ~0x3800) | (this.top << 11);
  }

  /** Loads a status word (FLDENV, FRSTOR, FXRSTOR). */
  setSw(v: number): void {
    this.top = (v >> 11) & 7;
    this.sw = v & 0xc7ff;
  }

  /** The full tag word, computed from the register contents (Intel SDM Vol. 1 §8.1.7). */
  getFullTags(): number {
    let tw = 0;
    for (let p = 0; p < 8; p++) {
      let t: number;
      if ((this.valid & (1 << p)) === 0) t = 3;
      else {
        const e = this.se[p] & 0x7fff;
        const hi = this.hi[p];
        if (e === 0x7fff) t = 2;
        else if (e === 0) t = (hi | this.lo[p]) === 0 ? 1 : 2;
        else t = hi & 0x80000000 ? 0 : 2;
      }
      tw |= t << (2 * p);
    }
    return tw;
  }

  /** Loads a full tag word: only "empty" (11b) matters; other tags are recomputed from contents. */
  setFullTags(tw: number): void {
    let v = 0;
    for (let p = 0; p < 8; p++) if (((tw >> (2 * p)) & 3) !== 3) v |= 1 << p;
    this.valid = v;
  }

  /** Physical register of ST(i). */
  phys(i: number): number {
    return (this.top + i) & 7;
  }

  private isEmpty(i: number): boolean {
    return (this.valid & (1 << ((this.top + i) & 7))) === 0;
  }

  private load(u: Unpacked, i: number): void {
    const p = (this.top + i) & 7;
    unpackF80(u, this.se[p], this.hi[p], this.lo[p]);
  }

  private setRaw(i: number, se: number, hi: number, lo: number): void {
    const p = (this.top + i) & 7;
    this.se[p] = se & 0xffff;
    this.hi[p] = hi;
    this.lo[p] = lo;
    this.valid |= 1 << p;
  }

  /** Writes an unpacked result (already rounded) to ST(i). */
  private store(i: number, u: Unpacked): void {
    packF80(u);
    this.setRaw(i, packOut[0], packOut[1], packOut[2]);
  }

  private pop(): void {
    this.valid &= ~(1 << this.top);
    this.top = (this.top + 1) & 7;
  }

  /** Raises FE_ flags `f` in FSW; returns true when one of them is unmasked (ES and B are set). */
  private raise(f: number): boolean {
    f &= 0x3f;
    this.sw |= f;
    if (f & ~this.cw & 0x3f) {
      this.sw |= SW_ES | SW_B;
      return true;
    }
    return false;
  }

  private setC1(v: number): void {
    this.sw = v ? this.sw | SW_C1 : this.sw & ~SW_C1;
  }

  private setCC(c3: number, c2: number, c1: number, c0: number): void {
    this.sw = (this.sw & ~SW_CC) | (c3 ? SW_C3 : 0) | (c2 ? SW_C2 : 0) | (c1 ? SW_C1 : 0) | (c0 ? SW_C0 : 0);
  }

  /** Stack underflow (empty source): IE + SF, C1 = 0. Returns true when masked (the caller writes the indefinite). */
  private underflow(): boolean {
    this.setC1(0);
    this.sw |= SW_SF;
    return !this.raise(FE_INVALID);
  }

  /** Stack overflow (push onto a non-empty register): IE + SF, C1 = 1. Returns true when masked. */
  private overflow(): boolean {
    this.setC1(1);
    this.sw |= SW_SF;
    return !this.raise(FE_INVALID);
  }

  /** Precision format of the control word's PC field for the five basic operations. */
  private precision(): Format {
    const pc = (this.cw >> 8) & 3;
    return pc === 0 ? FMT_F80_P24 : pc === 2 ? FMT_F80_P53 : FMT_F80;
  }

  /** Prepares the soft-float engine for an operation with the current control word. */
  private begin(registerDest: boolean): SoftFloat {
    const sf = this.sf;
    sf.begin((this.cw >> 10) & 3);
    sf.unmaskedOverflow = (this.cw & FE_OVERFLOW) === 0;
    sf.unmaskedUnderflow = (this.cw & FE_UNDERFLOW) === 0;
    sf.biasUnmasked = registerDest;
    sf.ftz = false;
    sf.tinyAfter = true;
    return sf;
  }

  /** Sets `u` to the QNaN indefinite. */
  private static indefinite(u: Unpacked): void {
    u.cls = CLS_QNAN;
    u.sign = 1;
    u.exp = 16384;
    u.hi = 0xc0000000;
    u.lo = 0;
    u.denormal = false;
  }

  /** Quiets a NaN in place. */
  private static quiet(u: Unpacked): void {
    u.cls = CLS_QNAN;
    u.hi = (u.hi | 0xc0000000) >>> 0;
  }

  /**
   * x87 NaN propagation for two operands, at least one a NaN (Intel SDM Vol. 1
   * table 4-7): an SNaN raises IE; two NaNs yield the one with the larger
   * significand, quieted. Result in sf.r.
   */
  private propagateNan(a: Unpacked, b: Unpacked): void {
    const sf = this.sf;
    if (a.cls === CLS_SNAN || b.cls === CLS_SNAN) sf.flags |= FE_INVALID;
    const r = sf.r;
    if (a.isNan && b.isNan && a.cls !== b.cls) r.copy(a.cls === CLS_QNAN ? a : b);
    else if (a.isNan && b.isNan) {
      // Two of a kind: the larger significand (ignoring the quiet bit).
      const ah = (a.hi | 0x40000000) >>> 0;
      const bh = (b.hi | 0x40000000) >>> 0;
      let pickA: boolean;
      if (ah !== bh) pickA = ah > bh;
      else if (a.lo !== b.lo) pickA = a.lo > b.lo;
      else pickA = a.sign <= b.sign;
      r.copy(pickA ? a : b);
    } else r.copy(a.isNan ? a : b);
    X87.quiet(r);
  }

  // ------------------------------------------------------------------ arithmetic cores

  /**
   * The basic binary operations (op: 0 add, 1 mul, 4 sub, 5 subr, 6 div,
   * 7 divr) on a (destination operand) and b (source). Result in sf.r.
   * Returns false when an unmasked invalid, denormal or zero-divide
   * exception suppresses the result.
   */
  private binop(op: number, a: Unpacked, b: Unpacked, f: Format): boolean {
    const sf = this.sf;
    let x = a;
    let y = b;
    if (op === 5 || op === 7) {
      x = b;
      y = a;
      op--;
    }
    const r = sf.r;
    if (x.cls === CLS_UNSUPPORTED || y.cls === CLS_UNSUPPORTED) {
      sf.flags |= FE_INVALID;
      X87.indefinite(r);
      return this.preCheck();
    }
    if (x.isNan || y.isNan) {
      this.propagateNan(x, y);
      return this.preCheck();
    }
    // A denormal operand raises DE, except a denormal dividend of a division by zero (ZE alone).
    if ((x.denormal && x.cls === CLS_FINITE && !(op === 6 && y.cls === CLS_ZERO)) || (y.denormal && y.cls === CLS_FINITE)) sf.flags |= FE_DENORMAL;
    switch (op) {
      case 0:
      case 4: {
        const ys = op === 4 ? y.sign ^ 1 : y.sign;
        if (x.cls === CLS_INF || y.cls === CLS_INF) {
          if (x.cls === CLS_INF && y.cls === CLS_INF && x.sign !== ys) {
            sf.flags = (sf.flags & ~FE_DENORMAL) | FE_INVALID;
            X87.indefinite(r);
          } else {
            r.copy(x.cls === CLS_INF ? x : y);
            if (x.cls !== CLS_INF) r.sign = ys;
          }
          return this.preCheck();
        }
        if (!this.preCheck()) return false;
        sf.add(x, y, op === 4, f);
        return true;
      }
      case 1: {
        if ((x.cls === CLS_INF && y.cls === CLS_ZERO) || (x.cls === CLS_ZERO && y.cls === CLS_INF)) {
          sf.flags = (sf.flags & ~FE_DENORMAL) | FE_INVALID;
          X87.indefinite(r);
          return this.preCheck();
        }
        const s = x.sign ^ y.sign;
        if (x.cls === CLS_INF || y.cls === CLS_INF) {
          r.cls = CLS_INF;
          r.sign = s;
          r.exp = 16384;
          r.hi = 0x80000000;
          r.lo = 0;
          return this.preCheck();
        }
        if (x.cls === CLS_ZERO || y.cls === CLS_ZERO) {
          zero(r, s);
          return this.preCheck();
        }
        if (!this.preCheck()) return false;
        sf.mul(x, y, f);
        return true;
      }
      default: {
        // 6: x / y
        const s = x.sign ^ y.sign;
        if ((x.cls === CLS_INF && y.cls === CLS_INF) || (x.cls === CLS_ZERO && y.cls === CLS_ZERO)) {
          sf.flags = (sf.flags & ~FE_DENORMAL) | FE_INVALID;
          X87.indefinite(r);
          return this.preCheck();
        }
        if (x.cls === CLS_INF) {
          inf(r, s);
          return this.preCheck();
        }
        if (y.cls === CLS_INF) {
          zero(r, s);
          return this.preCheck();
        }
        if (y.cls === CLS_ZERO) {
          sf.flags |= FE_ZERO;
          inf(r, s);
          return this.preCheck();
        }
        if (x.cls === CLS_ZERO) {
          zero(r, s);
          return this.preCheck();
        }
        if (!this.preCheck()) return false;
        sf.div(x, y, f);
        return true;
      }
    }
  }

  /** After the pre-computation checks: false when IE, DE or ZE raised so far is unmasked. */
  private preCheck(): boolean {
    return (this.sf.flags & ~this.cw & (FE_INVALID | FE_DENORMAL | FE_ZERO)) === 0;
  }

  /**
   * Commits the flags of an operation that writes ST(i): sets FSW flags and
   * C1 (rounded up), writes the result unless suppressed.
   * Returns false when the result was suppressed.
   */
  private commit(ok: boolean, dest: number): boolean {
    const sf = this.sf;
    const f = sf.flags;
    this.raise(f);
    if (!ok) {
      this.setC1(0);
      return false;
    }
    this.setC1(f & FE_INEXACT ? sf.roundedUp : 0);
    this.store(dest, sf.r);
    return true;
  }

  /**
   * Compares a with b: 0 greater, 1 less, 2 equal, 3 unordered. `quiet`
   * (FUCOM) raises IE only for SNaNs. Sets sf.flags.
   */
  private compare(a: Unpacked, b: Unpacked, quiet: boolean): number {
    const sf = this.sf;
    if (a.cls === CLS_UNSUPPORTED || b.cls === CLS_UNSUPPORTED) {
      sf.flags |= FE_INVALID;
      return 3;
    }
    if (a.isNan || b.isNan) {
      if (!quiet || a.cls === CLS_SNAN || b.cls === CLS_SNAN) sf.flags |= FE_INVALID;
      return 3;
    }
    if ((a.denormal && a.cls === CLS_FINITE) || (b.denormal && b.cls === CLS_FINITE)) sf.flags |= FE_DENORMAL;
    return compareOrdered(a, b);
  }

  // ------------------------------------------------------------------ memory

  private addr(cpu: Cpu, len: number, write: boolean): number {
    const la = cpu.lin(cpu.eaSeg, cpu.eaOff, len, write);
    if (write) cpu.mmu.probeWrite(la, len);
    else cpu.mmu.probeRead(la, len);
    return la;
  }

  // ------------------------------------------------------------------ execution

  /** FWAIT: raises a pending unmasked exception. */
  wait(cpu: Cpu): void {
    this.checkPending(cpu);
  }

  /** Reports a pending unmasked exception: #MF with CR0.NE, else FERR# (then continue, as with IGNNE#). */
  checkPending(cpu: Cpu): void {
    if ((this.sw & SW_ES) === 0) return;
    if (cpu.cr0 & C.CR0_NE) cpu.raise(C.EXC_MF);
    this.ferr?.(true);
  }

  /** Records the last instruction (and data) pointer and the opcode (Intel SDM Vol. 1 §8.1.8, 8.1.9). */
  private note(cpu: Cpu, opcode: number, modrm: number): void {
    this.fip = cpu.instrStart;
    this.fcs = cpu.segSel[C.CS];
    this.fop = ((opcode & 7) << 8) | modrm;
    if (modrm < 0xc0) {
      this.fdp = cpu.eaOff;
      this.fds = cpu.segSel[cpu.eaSeg];
    }
  }

  /** Executes escape opcode D8-DF with its ModRM byte (decoded into the CPU's eaSeg/eaOff). */
  escape(cpu: Cpu, opcode: number, modrm: number): void {
    const reg = (modrm >> 3) & 7;
    const mem = modrm < 0xc0;
    // The non-waiting control instructions skip the pending-exception check and leave FIP/FOP alone.
    if (mem) {
      if (opcode === 0xd9 && reg >= 4) return this.controlMem(cpu, reg, false);
      if (opcode === 0xdd && reg >= 4) {
        if (reg === 5) cpu.raiseUd();
        return this.controlMem(cpu, reg, true);
      }
    } else if (opcode === 0xdb && modrm >= 0xe0 && modrm <= 0xe4) {
      if (modrm === 0xe2) this.sw &= ~(0x3f | SW_SF | SW_ES | SW_B); // FNCLEX
      else if (modrm === 0xe3) this.init(); // FNINIT
      // E0 FNENI, E1 FNDISI, E4 FNSETPM: no-ops on a 387 and later.
      return;
    } else if (opcode === 0xdf && modrm === 0xe0) {
      cpu.regs[0] = (cpu.regs[0] & ~0xffff) | this.getSw(); // FNSTSW AX
      return;
    }
    if (!mem && !this.validReg(opcode, modrm)) cpu.raiseUd();
    if (mem && ((opcode === 0xd9 && reg === 1) || (opcode === 0xdb && (reg === 4 || reg === 6)))) cpu.raiseUd();
    this.checkPending(cpu);
    if (mem) this.execMem(cpu, opcode, reg);
    else this.execReg(cpu, opcode, modrm);
    this.note(cpu, opcode, modrm);
  }

  /** Register forms that exist (the others are #UD). */
  private validReg(opcode: number, modrm: number): boolean {
    switch (opcode) {
      case 0xd9:
        if (modrm >= 0xd1 && modrm <= 0xd7) return false;
        return !(modrm === 0xe2 || modrm === 0xe3 || modrm === 0xe6 || modrm === 0xe7 || modrm === 0xef);
      case 0xda:
        return modrm < 0xe0 || modrm === 0xe9;
      case 0xdb:
        return modrm < 0xe0 || (modrm >= 0xe8 && modrm < 0xf8);
      case 0xdd:
        return modrm < 0xf0;
      case 0xde:
        return modrm < 0xd8 || modrm === 0xd9 || modrm >= 0xe0;
      case 0xdf:
        return modrm < 0xe0 || (modrm >= 0xe8 && modrm < 0xf8);
      default:
        return true;
    }
  }

  // ------------------------------------------------------------------ memory forms

  private execMem(cpu: Cpu, opcode: number, reg: number): void {
    const a = this.ua;
    const b = this.ub;
    switch (opcode) {
      case 0xd8:
      case 0xdc: {
        const la = this.addr(cpu, opcode === 0xd8 ? 4 : 8, false);
        if (opcode === 0xd8) unpackF32(b, cpu.mmu.read32(la));
        else unpackF64(b, cpu.mmu.read32(la), cpu.mmu.read32((la + 4) | 0));
        this.arithOrCompare(reg, b);
        return;
      }
      case 0xda:
      case 0xde: {
        const la = this.addr(cpu, opcode === 0xda ? 4 : 2, false);
        const v = opcode === 0xda ? cpu.mmu.read32(la) : (cpu.mmu.read16(la) << 16) >> 16;
        fromInt32(b, v);
        this.arithOrCompare(reg, b);
        return;
      }
      case 0xd9:
        if (reg === 0) {
          const la = this.addr(cpu, 4, false);
          unpackF32(a, cpu.mmu.read32(la));
          this.loadConverted(a);
        } else {
          this.storeFloat(cpu, 4, reg === 3);
        }
        return;
      case 0xdd:
        if (reg === 0) {
          const la = this.addr(cpu, 8, false);
          unpackF64(a, cpu.mmu.read32(la), cpu.mmu.read32((la + 4) | 0));
          this.loadConverted(a);
        } else if (reg === 1) this.storeInt(cpu, 8, true, true);
        else this.storeFloat(cpu, 8, reg === 3);
        return;
      case 0xdb:
        switch (reg) {
          case 0: {
            const la = this.addr(cpu, 4, false);
            fromInt32(a, cpu.mmu.read32(la));
            this.pushValue(a);
            return;
          }
          case 1:
            this.storeInt(cpu, 4, true, true);
            return;
          case 2:
          case 3:
            this.storeInt(cpu, 4, reg === 3, false);
            return;
          case 5: {
            const la = this.addr(cpu, 10, false);
            const lo = cpu.mmu.read32(la);
            const hi = cpu.mmu.read32((la + 4) | 0);
            const se = cpu.mmu.read16((la + 8) | 0);
            this.pushRaw(se, hi, lo);
            return;
          }
          default:
            this.storeExtended(cpu);
            return;
        }
      default: // 0xdf
        switch (reg) {
          case 0: {
            const la = this.addr(cpu, 2, false);
            fromInt32(a, (cpu.mmu.read16(la) << 16) >> 16);
            this.pushValue(a);
            return;
          }
          case 1:
            this.storeInt(cpu, 2, true, true);
            return;
          case 2:
          case 3:
            this.storeInt(cpu, 2, reg === 3, false);
            return;
          case 4:
            this.loadBcd(cpu);
            return;
          case 5: {
            const la = this.addr(cpu, 8, false);
            fromInt64(a, cpu.mmu.read32(la), cpu.mmu.read32((la + 4) | 0));
            this.pushValue(a);
            return;
          }
          case 6:
            this.storeBcd(cpu);
            return;
          default:
            this.storeInt(cpu, 8, true, false);
        }
    }
  }

  /** D8/DC/DA/DE memory forms: ST0 = ST0 op src, or FCOM/FCOMP (reg 2, 3). */
  private arithOrCompare(reg: number, src: Unpacked): void {
    if (reg === 2 || reg === 3) {
      this.fcom(src, false, reg === 3 ? 1 : 0);
      return;
    }
    const a = this.ua;
    this.begin(true);
    if (this.isEmpty(0)) {
      if (this.underflow()) this.setRaw(0, INDEF_SE, INDEF_HI, 0);
      return;
    }
    this.load(a, 0);
    const ok = this.binop(reg, a, src, this.precision());
    this.commit(ok, 0);
  }

  /** Pushes a value converted from a narrower format (FLD m32/m64): SNaN raises IE, denormals DE. */
  private loadConverted(a: Unpacked): void {
    const sf = this.begin(true);
    if (a.cls === CLS_SNAN) {
      sf.flags |= FE_INVALID;
      X87.quiet(a);
    } else if (a.cls === CLS_FINITE && a.denormal) sf.flags |= FE_DENORMAL;
    if (!this.isEmpty(-1)) {
      if (this.overflow()) {
        this.top = (this.top - 1) & 7;
        this.setRaw(0, INDEF_SE, INDEF_HI, 0);
      }
      return;
    }
    this.setC1(0);
    // An unmasked invalid operand (SNaN) suppresses the load; an unmasked denormal does not.
    if (this.raise(sf.flags) && sf.flags & FE_INVALID & ~this.cw) return;
    this.top = (this.top - 1) & 7;
    a.denormal = false;
    this.store(0, a);
  }

  /** Pushes an exact value (integer loads, constants): no exceptions besides stack overflow. */
  private pushValue(a: Unpacked): void {
    if (!this.isEmpty(-1)) {
      if (this.overflow()) {
        this.top = (this.top - 1) & 7;
        this.setRaw(0, INDEF_SE, INDEF_HI, 0);
      }
      return;
    }
    this.setC1(0);
    this.top = (this.top - 1) & 7;
    this.store(0, a);
  }

  /** Pushes raw 80-bit contents (FLD m80, FLD ST(i)). */
  private pushRaw(se: number, hi: number, lo: number): void {
    if (!this.isEmpty(-1)) {
      if (this.overflow()) {
        this.top = (this.top - 1) & 7;
        this.setRaw(0, INDEF_SE, INDEF_HI, 0);
      }
      return;
    }
    this.setC1(0);
    this.top = (this.top - 1) & 7;
    this.setRaw(0, se, hi, lo);
  }

  /** FST/FSTP m32/m64. */
  private storeFloat(cpu: Cpu, size: number, popAfter: boolean): void {
    const la = this.addr(cpu, size, true);
    const sf = this.begin(false);
    const a = this.ua;
    let w0 = 0;
    let w1 = 0;
    if (this.isEmpty(0)) {
      if (!this.underflow()) return;
      if (size === 4) w0 = 0xffc00000 | 0;
      else w1 = 0xfff80000 | 0;
    } else {
      this.load(a, 0);
      const f = size === 4 ? FMT_F32 : FMT_F64;
      const r = sf.r;
      if (a.cls === CLS_UNSUPPORTED) {
        sf.flags |= FE_INVALID;
        X87.indefinite(r);
      } else if (a.isNan) {
        if (a.cls === CLS_SNAN) sf.flags |= FE_INVALID;
        r.copy(a);
        X87.quiet(r);
      } else sf.roundValue(a, f);
      if (size === 4) w0 = packF32(r);
      else {
        packF64(r);
        w0 = packOut[0];
        w1 = packOut[1];
      }
      let flags = sf.flags;
      const unmasked = flags & ~this.cw & 0x3f;
      // An unmasked overflow or underflow on a memory store faults before rounding: no PE.
      if (unmasked & (FE_OVERFLOW | FE_UNDERFLOW)) flags &= ~FE_INEXACT;
      this.raise(flags);
      this.setC1(flags & FE_INEXACT ? sf.roundedUp : 0);
      // A memory destination is not written when IE, OE or UE is unmasked.
      if (unmasked & (FE_INVALID | FE_OVERFLOW | FE_UNDERFLOW)) return;
    }
    if (size === 4) cpu.mmu.write32(la, w0);
    else {
      cpu.mmu.write32(la, w0);
      cpu.mmu.write32((la + 4) | 0, w1);
    }
    if (popAfter) this.pop();
  }

  /** FSTP m80. */
  private storeExtended(cpu: Cpu): void {
    const la = this.addr(cpu, 10, true);
    let se = INDEF_SE;
    let hi = INDEF_HI;
    let lo = 0;
    if (this.isEmpty(0)) {
      if (!this.underflow()) return;
    } else {
      const p = this.phys(0);
      se = this.se[p];
      hi = this.hi[p];
      lo = this.lo[p];
      this.setC1(0);
    }
    cpu.mmu.write32(la, lo);
    cpu.mmu.write32((la + 4) | 0, hi);
    cpu.mmu.write16((la + 8) | 0, se);
    this.pop();
  }

  /**
   * Rounds finite `a` to an integer magnitude in the engine's work words (w0:w1) with the
   * engine's rounding mode. Returns false if the magnitude needs more than 64 bits.
   */
  private roundToInt(a: Unpacked): boolean {
    const sf = this.sf;
    if (a.exp > 63) return false;
    sf.ws = a.sign;
    sf.w0 = a.hi;
    sf.w1 = a.lo;
    sf.w2 = 0;
    sfShrJam(sf, 63 - a.exp);
    const c = sfRound64(sf);
    if (c === 2) return false;
    sf.roundedUp = c;
    return true;
  }

  /** FIST/FISTP/FISTTP m16/m32/m64. */
  private storeInt(cpu: Cpu, size: number, popAfter: boolean, truncate: boolean): void {
    const la = this.addr(cpu, size, true);
    const sf = this.begin(false);
    if (truncate) sf.rc = RC_ZERO;
    const a = this.ua;
    let lo = 0;
    let hi = 0;
    let invalid = false;
    if (this.isEmpty(0)) {
      if (!this.underflow()) return;
      invalid = true;
    } else {
      this.load(a, 0);
      if (a.cls === CLS_ZERO) {
        lo = hi = 0;
      } else if (a.cls !== CLS_FINITE) invalid = true;
      else if (!this.roundToInt(a)) invalid = true;
      else {
        // Magnitude in w0:w1; range check for the destination size.
        const m0 = sf.w0;
        const m1 = sf.w1;
        const neg = a.sign === 1;
        if (size === 8) {
          if (m0 > 0x80000000 || (m0 === 0x80000000 && (m1 !== 0 || !neg))) invalid = true;
        } else if (m0 !== 0) invalid = true;
        else {
          const lim = size === 4 ? 0x80000000 : 0x8000;
          if (m1 > lim || (m1 === lim && !neg)) invalid = true;
        }
        if (!invalid) {
          if (neg) {
            lo = (~m1 + 1) | 0;
            hi = (~m0 + (lo === 0 ? 1 : 0)) | 0;
          } else {
            lo = m1 | 0;
            hi = m0 | 0;
          }
        }
      }
      if (invalid) {
        sf.flags = FE_INVALID;
        if (this.raise(FE_INVALID)) {
          this.setC1(0);
          return;
        }
      } else {
        this.raise(sf.flags);
        this.setC1(sf.flags & FE_INEXACT ? sf.roundedUp : 0);
      }
    }
    if (invalid) {
      // Integer indefinite.
      lo = size === 2 ? 0x8000 : size === 4 ? 0x80000000 | 0 : 0;
      hi = 0x80000000 | 0;
      this.setC1(0);
    }
    if (size === 2) cpu.mmu.write16(la, lo);
    else if (size === 4) cpu.mmu.write32(la, lo);
    else {
      cpu.mmu.write32(la, lo);
      cpu.mmu.write32((la + 4) | 0, hi);
    }
    if (popAfter) this.pop();
  }

  /** FBLD m80: 18 packed BCD digits and a sign byte. */
  private loadBcd(cpu: Cpu): void {
    const la = this.addr(cpu, 10, false);
    let lo = 0;
    let hi = 0;
    for (let i = 8; i >= 0; i--) {
      const byte = cpu.mmu.read8((la + i) | 0);
      for (let k = 0; k < 2; k++) {
        const d = k === 0 ? byte >> 4 : byte & 15;
        const t = lo * 10 + d;
        lo = t % 4294967296;
        hi = hi * 10 + Math.floor(t / 4294967296);
      }
    }
    const sign = cpu.mmu.read8((la + 9) | 0) & 0x80;
    const a = this.ua;
    a.denormal = false;
    a.sign = sign ? 1 : 0;
    if (hi === 0 && lo === 0) {
      a.cls = CLS_ZERO;
      a.exp = 0;
      a.hi = a.lo = 0;
    } else {
      // Invalid digits can exceed 64 bits; hardware results are undefined there, we keep the low 64.
      hi = hi % 4294967296;
      fromInt64(a, lo | 0, hi | 0);
      a.sign = sign ? 1 : 0;
      if (a.cls === CLS_FINITE && hi >= 0x80000000) {
        // fromInt64 treated it as negative: redo as unsigned magnitude.
        a.hi = hi >>> 0;
        a.lo = lo >>> 0;
        a.exp = 63;
      }
    }
    this.pushValue(a);
  }

  /** FBSTP m80. */
  private storeBcd(cpu: Cpu): void {
    const la = this.addr(cpu, 10, true);
    const sf = this.begin(false);
    const a = this.ua;
    const out = this.buf;
    let invalid = false;
    let sign = 0;
    let m0 = 0;
    let m1 = 0;
    if (this.isEmpty(0)) {
      if (!this.underflow()) return;
      invalid = true;
    } else {
      this.load(a, 0);
      sign = a.sign;
      if (a.cls === CLS_ZERO) {
        m0 = m1 = 0;
      } else if (a.cls !== CLS_FINITE || !this.roundToInt(a)) invalid = true;
      else {
        m0 = sf.w0;
        m1 = sf.w1;
        // 10^18 - 1 = 0x0DE0B6B3A763FFFF
        if (m0 > 0x0de0b6b3 || (m0 === 0x0de0b6b3 && m1 > 0xa763ffff)) invalid = true;
      }
      if (invalid) {
        if (this.raise(FE_INVALID)) {
          this.setC1(0);
          return;
        }
      } else {
        this.raise(sf.flags);
        this.setC1(sf.flags & FE_INEXACT ? sf.roundedUp : 0);
      }
    }
    if (invalid) {
      for (let i = 0; i < 7; i++) out[i] = 0;
      out[7] = 0xc0;
      out[8] = 0xff;
      out[9] = 0xff;
      this.setC1(0);
    } else {
      let h = m0;
      let l = m1;
      for (let i = 0; i < 9; i++) {
        let byte = 0;
        for (let k = 0; k < 2; k++) {
          const qh = Math.floor(h / 10);
          const rh = h % 10;
          const t = rh * 4294967296 + l;
          const ql = Math.floor(t / 10);
          const d = t % 10;
          h = qh;
          l = ql;
          byte |= d << (4 * k);
        }
        out[i] = byte;
      }
      out[9] = sign ? 0x80 : 0;
    }
    for (let i = 0; i < 10; i++) cpu.mmu.write8((la + i) | 0, out[i]);
    this.pop();
  }

  // ------------------------------------------------------------------ control memory forms

  /** FLDENV, FLDCW, FNSTENV, FNSTCW (D9 /4-/7) and FRSTOR, FNSAVE, FNSTSW m16 (DD /4, /6, /7). */
  private controlMem(cpu: Cpu, reg: number, dd: boolean): void {
    if (!dd) {
      switch (reg) {
        case 4:
          this.checkPending(cpu);
          this.loadEnv(cpu, false);
          return;
        case 5: {
          this.checkPending(cpu);
          const la = this.addr(cpu, 2, false);
          this.setCw(cpu.mmu.read16(la));
          return;
        }
        case 6:
          this.storeEnv(cpu, false);
          return;
        default: {
          const la = this.addr(cpu, 2, true);
          cpu.mmu.write16(la, this.cw);
          return;
        }
      }
    }
    switch (reg) {
      case 4:
        this.checkPending(cpu);
        this.loadEnv(cpu, true);
        return;
      case 6:
        this.storeEnv(cpu, true);
        return;
      default: {
        const la = this.addr(cpu, 2, true);
        cpu.mmu.write16(la, this.getSw());
      }
    }
  }

  /** Loads the control word; ES/B follow whether a set flag is now unmasked. */
  setCw(v: number): void {
    this.cw = (v & 0x1f3f) | 0x40;
    this.updateEs();
  }

  /** Recomputes ES and B from the flags and masks (FLDCW, FLDENV, FRSTOR, FXRSTOR). */
  updateEs(): void {
    if (this.sw & ~this.cw & 0x3f) this.sw |= SW_ES | SW_B;
    else this.sw &= ~(SW_ES | SW_B);
  }

  /** Size in bytes of the environment image (14 or 28). */
  private envSize(cpu: Cpu): number {
    return cpu.o32 ? 28 : 14;
  }

  /** FNSTENV / FNSAVE (Intel SDM Vol. 1 §8.1.10, figures 8-9 to 8-12). */
  private storeEnv(cpu: Cpu, save: boolean): void {
    const es = this.envSize(cpu);
    const total = save ? es + 80 : es;
    const la = this.addr(cpu, total, true);
    const mmu = cpu.mmu;
    const pm = cpu.protectedMode;
    const tw = this.getFullTags();
    const sw = this.getSw();
    if (cpu.o32) {
      mmu.write32(la, this.cw | 0xffff0000);
      mmu.write32((la + 4) | 0, sw | 0xffff0000);
      mmu.write32((la + 8) | 0, tw | 0xffff0000);
      if (pm) {
        mmu.write32((la + 12) | 0, this.fip);
        mmu.write32((la + 16) | 0, this.fcs | (this.fop << 16));
        mmu.write32((la + 20) | 0, this.fdp);
        mmu.write32((la + 24) | 0, this.fds | 0xffff0000);
      } else {
        const ip = (this.fcs * 16 + this.fip) >>> 0;
        const dp = (this.fds * 16 + this.fdp) >>> 0;
        mmu.write32((la + 12) | 0, (ip & 0xffff) | 0xffff0000);
        mmu.write32((la + 16) | 0, ((ip >>> 16) << 12) | this.fop);
        mmu.write32((la + 20) | 0, (dp & 0xffff) | 0xffff0000);
        mmu.write32((la + 24) | 0, (dp >>> 16) << 12);
      }
    } else {
      mmu.write16(la, this.cw);
      mmu.write16((la + 2) | 0, sw);
      mmu.write16((la + 4) | 0, tw);
      if (pm) {
        mmu.write16((la + 6) | 0, this.fip);
        mmu.write16((la + 8) | 0, this.fcs);
        mmu.write16((la + 10) | 0, this.fdp);
        mmu.write16((la + 12) | 0, this.fds);
      } else {
        const ip = (this.fcs * 16 + this.fip) >>> 0;
        const dp = (this.fds * 16 + this.fdp) >>> 0;
        mmu.write16((la + 6) | 0, ip);
        mmu.write16((la + 8) | 0, ((ip >>> 16) << 12) | this.fop);
        mmu.write16((la + 10) | 0, dp);
        mmu.write16((la + 12) | 0, (dp >>> 16) << 12);
      }
    }
    if (save) {
      for (let i = 0; i < 8; i++) {
        const p = this.phys(i);
        const o = (la + es + i * 10) | 0;
        mmu.write32(o, this.lo[p]);
        mmu.write32((o + 4) | 0, this.hi[p]);
        mmu.write16((o + 8) | 0, this.se[p]);
      }
      this.init();
    } else {
      // FNSTENV masks all exceptions after storing (Intel SDM Vol. 2 FSTENV); nothing is pending then.
      this.cw |= 0x3f;
      this.updateEs();
    }
  }

  /** FLDENV / FRSTOR. Everything is read before any state changes. */
  private loadEnv(cpu: Cpu, restore: boolean): void {
    const es = this.envSize(cpu);
    const total = restore ? es + 80 : es;
    const la = this.addr(cpu, total, false);
    const mmu = cpu.mmu;
    const pm = cpu.protectedMode;
    let cw: number, sw: number, tw: number, ip: number, cs: number, op: number, dp: number, ds: number;
    if (cpu.o32) {
      cw = mmu.read16(la);
      sw = mmu.read16((la + 4) | 0);
      tw = mmu.read16((la + 8) | 0);
      if (pm) {
        ip = mmu.read32((la + 12) | 0);
        const w = mmu.read32((la + 16) | 0);
        cs = w & 0xffff;
        op = (w >>> 16) & 0x7ff;
        dp = mmu.read32((la + 20) | 0);
        ds = mmu.read16((la + 24) | 0);
      } else {
        const w = mmu.read32((la + 16) | 0);
        ip = (mmu.read16((la + 12) | 0) | ((w >>> 12) << 16)) >>> 0;
        op = w & 0x7ff;
        dp = (mmu.read16((la + 20) | 0) | ((mmu.read32((la + 24) | 0) >>> 12) << 16)) >>> 0;
        cs = 0;
        ds = 0;
      }
    } else {
      cw = mmu.read16(la);
      sw = mmu.read16((la + 2) | 0);
      tw = mmu.read16((la + 4) | 0);
      if (pm) {
        ip = mmu.read16((la + 6) | 0);
        cs = mmu.read16((la + 8) | 0);
        op = 0;
        dp = mmu.read16((la + 10) | 0);
        ds = mmu.read16((la + 12) | 0);
      } else {
        const w = mmu.read16((la + 8) | 0);
        ip = mmu.read16((la + 6) | 0) | ((w >>> 12) << 16);
        op = w & 0x7ff;
        dp = mmu.read16((la + 10) | 0) | ((mmu.read16((la + 12) | 0) >>> 12) << 16);
        cs = 0;
        ds = 0;
      }
    }
    const regs = this.buf;
    if (restore) {
      for (let i = 0; i < 8; i++) {
        const o = (la + es + i * 10) | 0;
        regs[i * 3] = mmu.read32(o);
        regs[i * 3 + 1] = mmu.read32((o + 4) | 0);
        regs[i * 3 + 2] = mmu.read16((o + 8) | 0);
      }
    }
    this.cw = (cw & 0x1f3f) | 0x40;
    this.setSw(sw);
    this.setFullTags(tw);
    this.fip = ip;
    this.fcs = cs;
    this.fop = op;
    this.fdp = dp;
    this.fds = ds;
    if (restore) {
      for (let i = 0; i < 8; i++) {
        const p = this.phys(i);
        this.lo[p] = regs[i * 3];
        this.hi[p] = regs[i * 3 + 1];
        this.se[p] = regs[i * 3 + 2];
      }
    }
    this.updateEs();
  }

  // ------------------------------------------------------------------ register forms

  private execReg(cpu: Cpu, opcode: number, modrm: number): void {
    const i = modrm & 7;
    const reg = (modrm >> 3) & 7;
    switch (opcode) {
      case 0xd8:
        if (reg === 2 || reg === 3) return this.fcomReg(i, reg === 3 ? 1 : 0, false);
        return this.arithReg(reg, 0, i, false);
      case 0xdc:
        if (reg === 2 || reg === 3) return this.fcomReg(i, reg === 3 ? 1 : 0, false);
        return this.arithReg(reg >= 4 ? reg ^ 1 : reg, i, 0, false);
      case 0xde:
        if (reg === 2) return this.fcomReg(i, 1, false);
        if (reg === 3) return this.fcomReg(1, 2, false); // DE D9 FCOMPP
        return this.arithReg(reg >= 4 ? reg ^ 1 : reg, i, 0, true);
      case 0xd9:
        return this.execD9(cpu, modrm);
      case 0xda:
        if (modrm === 0xe9) return this.fcomReg(1, 2, true); // FUCOMPP
        return this.fcmov(cpu, reg, i, false);
      case 0xdb:
        if (reg < 4) return this.fcmov(cpu, reg, i, true);
        return this.fcomi(cpu, i, reg === 5, false);
      case 0xdd:
        switch (reg) {
          case 0: // FFREE
            this.valid &= ~(1 << this.phys(i));
            this.setC1(0);
            return;
          case 1: // FXCH4 alias
            return this.fxch(i);
          case 2:
          case 3:
            return this.fstReg(i, reg === 3);
          default:
            return this.fcomReg(i, reg === 5 ? 1 : 0, true);
        }
      default: // 0xdf
        switch (reg) {
          case 0: // FFREEP
            this.valid &= ~(1 << this.phys(i));
            this.pop();
            this.setC1(0);
            return;
          case 1: // FXCH7 alias
            return this.fxch(i);
          case 2:
          case 3: // FSTP8/FSTP9 aliases
            return this.fstReg(i, true);
          default:
            return this.fcomi(cpu, i, reg === 5, true);
        }
    }
  }

  /** ST(dst) = ST(dst) op ST(src) (op in D8 numbering), popping for DE. */
  private arithReg(op: number, dst: number, src: number, popAfter: boolean): void {
    const a = this.ua;
    const b = this.ub;
    this.begin(true);
    if (this.isEmpty(dst) || this.isEmpty(src)) {
      if (this.underflow()) {
        this.setRaw(dst, INDEF_SE, INDEF_HI, 0);
        if (popAfter) this.pop();
      }
      return;
    }
    this.load(a, dst);
    this.load(b, src);
    const ok = this.binop(op, a, b, this.precision());
    if (this.commit(ok, dst) && popAfter) this.pop();
  }

  /** FCOM/FCOMP/FCOMPP/FUCOM* with ST(i); pops `pops` times. */
  private fcomReg(i: number, pops: number, quiet: boolean): void {
    if (this.isEmpty(i)) {
      this.begin(false);
      this.setCC(1, 1, 0, 1);
      if (this.underflow()) for (let k = 0; k < pops; k++) this.pop();
      return;
    }
    this.load(this.ub, i);
    this.fcom(this.ub, quiet, pops);
  }

  /** Compares ST0 with `src` into C3/C2/C0; the codes are written even when an unmasked exception suppresses the pop. */
  private fcom(src: Unpacked, quiet: boolean, pops: number): void {
    const sf = this.begin(false);
    if (this.isEmpty(0)) {
      this.setCC(1, 1, 0, 1);
      if (this.underflow()) for (let k = 0; k < pops; k++) this.pop();
      return;
    }
    const a = this.ua;
    this.load(a, 0);
    const r = this.compare(a, src, quiet);
    this.setCC(r >= 2 ? 1 : 0, r === 3 ? 1 : 0, 0, r & 1);
    if (this.raise(sf.flags) && sf.flags & ~this.cw & (FE_INVALID | FE_DENORMAL)) return;
    for (let k = 0; k < pops; k++) this.pop();
  }

  /** FCOMI/FUCOMI(P): compare ST0 with ST(i) into ZF, PF, CF (OF, SF, AF cleared). */
  private fcomi(cpu: Cpu, i: number, quiet: boolean, popAfter: boolean): void {
    const sf = this.begin(false);
    let r: number;
    if (this.isEmpty(0) || this.isEmpty(i)) {
      cpu.setArith(C.ZF | C.PF | C.CF, C.ARITH);
      if (!this.underflow()) return;
      r = 3;
    } else {
      this.load(this.ua, 0);
      this.load(this.ub, i);
      r = this.compare(this.ua, this.ub, quiet);
    }
    // EFLAGS are written even when an unmasked exception suppresses the pop.
    const fl = r === 0 ? 0 : r === 1 ? C.CF : r === 2 ? C.ZF : C.ZF | C.PF | C.CF;
    cpu.setArith(fl, C.ARITH);
    if (this.raise(sf.flags) && sf.flags & ~this.cw & (FE_INVALID | FE_DENORMAL)) return;
    if (popAfter) this.pop();
  }

  /** FCMOVcc (DA: B, E, BE, U; DB: the negations). */
  private fcmov(cpu: Cpu, cc: number, i: number, negate: boolean): void {
    if (this.isEmpty(0) || this.isEmpty(i)) {
      this.begin(false);
      if (this.underflow()) this.setRaw(0, INDEF_SE, INDEF_HI, 0);
      return;
    }
    let t: boolean;
    switch (cc) {
      case 0:
        t = cpu.getCF() !== 0;
        break;
      case 1:
        t = cpu.getZF();
        break;
      case 2:
        t = cpu.getCF() !== 0 || cpu.getZF();
        break;
      default:
        t = cpu.getPF();
    }
    if (negate) t = !t;
    if (t) {
      const p = this.phys(i);
      this.setRaw(0, this.se[p], this.hi[p], this.lo[p]);
    }
  }

  private fxch(i: number): void {
    const p0 = this.phys(0);
    const pi = this.phys(i);
    if (this.isEmpty(0) || this.isEmpty(i)) {
      this.begin(false);
      if (!this.underflow()) return;
      // Masked: empty registers are treated as holding the indefinite.
      if (this.isEmpty(0)) this.setRaw(0, INDEF_SE, INDEF_HI, 0);
      if (this.isEmpty(i)) this.setRaw(i, INDEF_SE, INDEF_HI, 0);
    } else this.setC1(0);
    const se = this.se[p0];
    const hi = this.hi[p0];
    const lo = this.lo[p0];
    this.se[p0] = this.se[pi];
    this.hi[p0] = this.hi[pi];
    this.lo[p0] = this.lo[pi];
    this.se[pi] = se;
    this.hi[pi] = hi;
    this.lo[pi] = lo;
  }

  /** FST/FSTP ST(i). */
  private fstReg(i: number, popAfter: boolean): void {
    if (this.isEmpty(0)) {
      this.begin(false);
      if (!this.underflow()) return;
      this.setRaw(i, INDEF_SE, INDEF_HI, 0);
    } else {
      this.setC1(0);
      const p = this.phys(0);
      this.setRaw(i, this.se[p], this.hi[p], this.lo[p]);
    }
    if (popAfter) this.pop();
  }

  private execD9(cpu: Cpu, modrm: number): void {
    const i = modrm & 7;
    if (modrm < 0xc8) {
      // FLD ST(i)
      if (this.isEmpty(i)) {
        this.begin(false);
        if (this.isEmpty(-1)) {
          if (this.underflow()) this.pushRaw(INDEF_SE, INDEF_HI, 0);
        } else if (this.overflow()) {
          this.top = (this.top - 1) & 7;
          this.setRaw(0, INDEF_SE, INDEF_HI, 0);
        }
        return;
      }
      const p = this.phys(i);
      this.pushRaw(this.se[p], this.hi[p], this.lo[p]);
      return;
    }
    if (modrm < 0xd0) return this.fxch(i);
    if (modrm === 0xd0) return; // FNOP
    if (modrm >= 0xd8 && modrm < 0xe0) return this.fstReg(i, true); // FSTP1 alias
    switch (modrm) {
      case 0xe0: // FCHS
      case 0xe1: {
        // FABS
        if (this.isEmpty(0)) {
          this.begin(false);
          if (this.underflow()) this.setRaw(0, INDEF_SE, INDEF_HI, 0);
          return;
        }
        const p = this.phys(0);
        this.se[p] = modrm === 0xe0 ? this.se[p] ^ 0x8000 : this.se[p] & 0x7fff;
        this.setC1(0);
        return;
      }
      case 0xe4: {
        // FTST
        const z = this.uc;
        zero(z, 0);
        this.fcom(z, false, 0);
        return;
      }
      case 0xe5:
        this.fxam();
        return;
      case 0xe8:
      case 0xe9:
      case 0xea:
      case 0xeb:
      case 0xec:
      case 0xed:
      case 0xee:
        this.loadConstant(modrm - 0xe8);
        return;
      case 0xf6:
        this.top = (this.top - 1) & 7;
        this.setC1(0);
        return;
      case 0xf7:
        this.top = (this.top + 1) & 7;
        this.setC1(0);
        return;
      case 0xfa:
        this.fsqrt();
        return;
      case 0xfc:
        this.frndint();
        return;
      case 0xf4:
        this.fxtract();
        return;
      case 0xfd:
        this.fscale();
        return;
      case 0xf8:
      case 0xf5:
        this.fprem(modrm === 0xf5);
        return;
      default:
        // F0 F2XM1, F1 FYL2X, F2 FPTAN, F3 FPATAN, F9 FYL2XP1, FB FSINCOS, FE FSIN, FF FCOS
        if (modrm === 0xf1 || modrm === 0xf3 || modrm === 0xf9) this.transcendental2(modrm);
        else this.transcendental1(modrm);
    }
  }

  /** Writes the double `v` as the (inexact) result into `u`. */
  private fromDoubleResult(u: Unpacked, v: number): void {
    fromDouble(u, v);
    u.denormal = false;
    if (v !== 0 && Number.isFinite(v)) this.sf.flags |= FE_INEXACT;
  }

  /** FSIN, FCOS, FSINCOS, FPTAN, F2XM1: one operand in ST0. */
  private transcendental1(modrm: number): void {
    const sf = this.begin(true);
    const pushes = modrm === 0xf2 || modrm === 0xfb;
    if (this.isEmpty(0)) {
      if (this.underflow()) {
        this.setRaw(0, INDEF_SE, INDEF_HI, 0);
        if (pushes && this.isEmpty(-1)) this.pushRaw(INDEF_SE, INDEF_HI, 0);
      }
      return;
    }
    if (pushes && !this.isEmpty(-1)) {
      if (this.overflow()) {
        this.setRaw(0, INDEF_SE, INDEF_HI, 0);
        this.top = (this.top - 1) & 7;
        this.setRaw(0, INDEF_SE, INDEF_HI, 0);
      }
      return;
    }
    const a = this.ua;
    const r1 = this.ub; // ST0 result (or sin)
    const r2 = this.uc; // pushed result (cos, or 1.0)
    this.load(a, 0);
    const trigOp = modrm !== 0xf0;
    if (a.cls === CLS_UNSUPPORTED || (trigOp && a.cls === CLS_INF)) {
      sf.flags |= FE_INVALID;
      X87.indefinite(r1);
      r2.copy(r1);
    } else if (a.isNan) {
      this.propagateNan(a, a);
      r1.copy(sf.r);
      r2.copy(sf.r);
    } else if (trigOp && a.cls === CLS_FINITE && a.exp >= 63) {
      // Out of range: C2 = 1, operand unchanged.
      this.sw = (this.sw & ~(SW_C1 | SW_C2)) | SW_C2;
      if (a.denormal) sf.flags |= FE_DENORMAL;
      this.raise(sf.flags);
      return;
    } else {
      if (a.cls === CLS_FINITE && a.denormal) sf.flags |= FE_DENORMAL;
      if (!this.preCheck()) {
        this.raise(sf.flags);
        return;
      }
      if (modrm === 0xf0) {
        // F2XM1: 2^x - 1.
        if (a.cls === CLS_ZERO) r1.copy(a);
        else if (a.cls === CLS_INF) {
          if (a.sign) fromInt32(r1, -1);
          else r1.copy(a);
        } else if (a.exp >= 0 && !(a.exp === 0 && a.hi === 0x80000000 && a.lo === 0)) {
          // |x| > 1 is outside the domain: the operand stays as it is.
          r1.copy(a);
          sf.flags |= FE_INEXACT;
        } else if (below(a, -60)) {
          // 2^x - 1 = x·ln 2 (1 + O(x)): exact product, rounded once.
          const l = this.uc;
          l.cls = CLS_FINITE;
          l.sign = 0;
          l.exp = -1;
          l.hi = 0xb17217f7;
          l.lo = 0xd1cf79ac;
          l.denormal = false;
          sf.mul(a, l, FMT_F80);
          r1.copy(sf.r);
        } else this.fromDoubleResult(r1, Math.expm1(toDouble(a) * Math.LN2));
      } else if (a.cls === CLS_ZERO) {
        r1.copy(a); // sin, tan
        fromInt32(r2, 1); // cos, the pushed 1.0
        if (modrm === 0xff) fromInt32(r1, 1);
      } else if (below(a, -32)) {
        // sin x = tan x = x and cos x = 1 to within half an ulp.
        r1.copy(a);
        r1.denormal = false;
        fromInt32(r2, 1);
        if (modrm === 0xff) fromInt32(r1, 1);
        sf.flags |= FE_INEXACT;
        if (a.exp < -16382) sf.flags |= FE_UNDERFLOW;
      } else {
        reduceTrig(sf, a);
        const x = trig.r;
        const k = trig.quadrant;
        const s = trig.complement ? Math.cos(x) : Math.sin(x);
        const c = trig.complement ? Math.sin(x) : Math.cos(x);
        // sin(x + k·pi/2), cos(x + k·pi/2)
        let sinv = k === 0 ? s : k === 1 ? c : k === 2 ? -s : -c;
        const cosv = k === 0 ? c : k === 1 ? -s : k === 2 ? -c : s;
        if (a.sign) sinv = -sinv;
        if (modrm === 0xf2) {
          const t = trig.complement ? 1 / Math.tan(x) : Math.tan(x);
          this.fromDoubleResult(r1, (k & 1) === 0 ? (a.sign ? -1 : 1) * t : (a.sign ? 1 : -1) / t);
          fromInt32(r2, 1);
        } else {
          this.fromDoubleResult(r1, modrm === 0xff ? cosv : sinv);
          this.fromDoubleResult(r2, cosv);
        }
      }
    }
    if (this.raise(sf.flags) && sf.flags & ~this.cw & (FE_INVALID | FE_DENORMAL)) {
      this.setC1(0);
      return;
    }
    this.sw &= ~(SW_C1 | SW_C2);
    this.store(0, r1);
    if (pushes) {
      this.top = (this.top - 1) & 7;
      this.store(0, r2);
    }
  }

  /** FYL2X, FYL2XP1, FPATAN: ST1 = f(ST1, ST0), then pop. */
  private transcendental2(modrm: number): void {
    const sf = this.begin(true);
    if (this.isEmpty(0) || this.isEmpty(1)) {
      if (this.underflow()) {
        this.setRaw(1, INDEF_SE, INDEF_HI, 0);
        this.pop();
      }
      return;
    }
    const x = this.ua;
    const y = this.ub;
    const r = this.uc;
    this.load(x, 0);
    this.load(y, 1);
    let ok = true;
    if (x.cls === CLS_UNSUPPORTED || y.cls === CLS_UNSUPPORTED) {
      sf.flags |= FE_INVALID;
      X87.indefinite(r);
    } else if (x.isNan || y.isNan) {
      this.propagateNan(x, y);
      r.copy(sf.r);
    } else {
      if ((x.cls === CLS_FINITE && x.denormal) || (y.cls === CLS_FINITE && y.denormal)) sf.flags |= FE_DENORMAL;
      if (modrm === 0xf3) this.fpatan(x, y, r);
      else this.fyl2x(x, y, r, modrm === 0xf9);
      if (sf.flags & FE_INVALID) sf.flags &= ~FE_DENORMAL; // invalid operands take priority over denormal ones
      ok = this.preCheck();
    }
    if (ok) ok = this.preCheck();
    this.raise(sf.flags);
    if (!ok) {
      this.setC1(0);
      return;
    }
    this.setC1(0);
    this.store(1, r);
    this.pop();
  }

  /** r = y × log2(x) (or log2(x + 1)), with the special cases of Intel SDM Vol. 2 FYL2X/FYL2XP1. */
  private fyl2x(x: Unpacked, y: Unpacked, r: Unpacked, plus1: boolean): void {
    const sf = this.sf;
    const l = this.uc;
    // l = log2(x) (or log2(1 + x)) with its class.
    if (!plus1) {
      if (x.sign && x.cls !== CLS_ZERO) {
        sf.flags |= FE_INVALID;
        X87.indefinite(r);
        return;
      }
      if (x.cls === CLS_ZERO) {
        if (y.cls === CLS_ZERO) {
          sf.flags |= FE_INVALID;
          X87.indefinite(r);
          return;
        }
        if (y.cls === CLS_FINITE) sf.flags |= FE_ZERO;
        inf(r, y.sign ^ 1);
        return;
      }
      if (x.cls === CLS_INF) {
        if (y.cls === CLS_ZERO) {
          sf.flags |= FE_INVALID;
          X87.indefinite(r);
        } else inf(r, y.sign);
        return;
      }
      if (x.exp === 0 && x.hi === 0x80000000 && x.lo === 0) {
        // log2(1) = +0 exactly.
        if (y.cls === CLS_INF) {
          sf.flags |= FE_INVALID;
          X87.indefinite(r);
        } else zero(r, y.sign);
        return;
      }
      const lv = log2Of(x);
      if (y.cls === CLS_INF) {
        inf(r, y.sign ^ (lv < 0 ? 1 : 0));
        return;
      }
      if (y.cls === CLS_ZERO) {
        zero(r, y.sign ^ (lv < 0 ? 1 : 0));
        return;
      }
      fromDouble(l, lv);
    } else {
      if (x.cls === CLS_ZERO) {
        if (y.cls === CLS_INF) {
          sf.flags |= FE_INVALID;
          X87.indefinite(r);
        } else zero(r, x.sign ^ y.sign);
        return;
      }
      const xd = toDouble(x);
      if (x.cls === CLS_INF && x.sign) {
        sf.flags |= FE_INVALID;
        X87.indefinite(r);
        return;
      }
      // log2(1 + x) has the sign of x.
      if (y.cls === CLS_ZERO && x.cls !== CLS_INF) {
        zero(r, y.sign ^ x.sign);
        return;
      }
      if (y.cls === CLS_INF) {
        if (x.cls === CLS_ZERO) {
          sf.flags |= FE_INVALID;
          X87.indefinite(r);
        } else inf(r, y.sign ^ x.sign);
        return;
      }
      if (x.cls === CLS_FINITE && x.sign && xd < -1) {
        // Below -1 the hardware passes x through unchanged.
        r.copy(x);
        r.denormal = false;
        sf.flags |= FE_INEXACT;
        return;
      }
      if (x.cls === CLS_INF) {
        if (y.cls === CLS_ZERO) {
          sf.flags |= FE_INVALID;
          X87.indefinite(r);
        } else inf(r, y.sign);
        return;
      }
      if (below(x, -60)) {
        // log2(1 + x) = x·log2(e) to within half an ulp.
        l.cls = CLS_FINITE;
        l.sign = 0;
        l.exp = 0;
        l.hi = 0xb8aa3b29;
        l.lo = 0x5c17f0bc;
        l.denormal = false;
        sf.mul(x, l, FMT_WIDE);
        l.copy(sf.r);
      } else {
        // Past 2^60, 1 + x rounds to x: the exact exponent split keeps huge arguments in range.
        const lv = x.exp > 60 ? log2Of(x) : Math.log1p(xd) / Math.LN2;
        if (lv === -Infinity) {
          if (y.cls === CLS_ZERO) {
            sf.flags |= FE_INVALID;
            X87.indefinite(r);
          } else {
            if (y.cls === CLS_FINITE) sf.flags |= FE_ZERO;
            inf(r, y.sign ^ 1);
          }
          return;
        }
        fromDouble(l, lv);
      }
      if (y.cls === CLS_INF) {
        inf(r, y.sign ^ l.sign);
        return;
      }
      if (y.cls === CLS_ZERO) {
        zero(r, y.sign ^ l.sign);
        return;
      }
    }
    sf.mul(y, l, FMT_F80);
    r.copy(sf.r);
    sf.flags |= FE_INEXACT;
  }

  /** r = arctan(y / x) with the quadrant of (x, y) (Intel SDM Vol. 2 FPATAN). */
  private fpatan(x: Unpacked, y: Unpacked, r: Unpacked): void {
    const sf = this.sf;
    const ys = y.sign;
    // Exact special cases: zeros and infinities give 0, pi/4, pi/2, 3pi/4 or pi (rounded per RC).
    if (y.cls === CLS_ZERO) {
      if (x.sign) this.piMultiple(r, PI, ys);
      else zero(r, ys);
      return;
    }
    if (y.cls === CLS_INF) {
      if (x.cls === CLS_INF) this.piMultiple(r, x.sign ? PI_3_4 : PI_4, ys);
      else this.piMultiple(r, PI_2, ys);
      return;
    }
    if (x.cls === CLS_ZERO) {
      this.piMultiple(r, PI_2, ys);
      return;
    }
    if (x.cls === CLS_INF) {
      if (x.sign) this.piMultiple(r, PI, ys);
      else zero(r, ys);
      return;
    }
    // Both finite, non-zero: atan2 depends on the ratio only; scale both by the same power of two.
    const ex = x.exp;
    const ey = y.exp;
    if (ey - ex < -1000) {
      if (x.sign === 0) {
        // Tiny ratio: atan(y/x) = y/x.
        sf.div(y, x, FMT_F80);
        r.copy(sf.r);
        sf.flags |= FE_INEXACT;
      } else this.piMultiple(r, PI, ys);
      return;
    }
    if (ey - ex > 1000) {
      this.piMultiple(r, PI_2, ys);
      return;
    }
    const m = Math.max(ex, ey);
    x.exp -= m;
    y.exp -= m;
    const xd = toDouble(x);
    const yd = toDouble(y);
    x.exp = ex;
    y.exp = ey;
    this.fromDoubleResult(r, Math.atan2(yd, xd));
  }

  /** r = ±c for one of the pi constants, rounded to 64 bits per RC; sets PE. */
  private piMultiple(r: Unpacked, c: readonly number[], sign: number): void {
    const sf = this.sf;
    const saveFlags = sf.flags;
    sf.ws = sign;
    sf.we = c[0];
    sf.w0 = c[1] >>> 0;
    sf.w1 = c[2] >>> 0;
    sf.w2 = c[3] >>> 0;
    sf.roundPack(FMT_F80);
    r.copy(sf.r);
    sf.flags = saveFlags | FE_INEXACT;
  }

  private fxam(): void {
    const p = this.phys(0);
    const sign = (this.se[p] >> 15) & 1;
    if (this.isEmpty(0)) {
      this.setCC(1, 0, sign, 1);
      return;
    }
    const a = this.ua;
    this.load(a, 0);
    switch (a.cls) {
      case CLS_UNSUPPORTED:
        this.setCC(0, 0, sign, 0);
        return;
      case CLS_QNAN:
      case CLS_SNAN:
        this.setCC(0, 0, sign, 1);
        return;
      case CLS_INF:
        this.setCC(0, 1, sign, 1);
        return;
      case CLS_ZERO:
        this.setCC(1, 0, sign, 0);
        return;
      default:
        if (a.denormal) this.setCC(1, 1, sign, 0);
        else this.setCC(0, 1, sign, 0);
    }
  }

  /** FLD1, FLDL2T, FLDL2E, FLDPI, FLDLG2, FLDLN2, FLDZ: 66-bit internal constants rounded per RC. */
  private loadConstant(k: number): void {
    const a = this.ua;
    a.denormal = false;
    a.sign = 0;
    if (k === 0) {
      a.cls = CLS_FINITE;
      a.exp = 0;
      a.hi = 0x80000000;
      a.lo = 0;
    } else if (k === 6) {
      zero(a, 0);
    } else {
      const c = CONSTANTS[k];
      const sf = this.begin(true);
      sf.ws = 0;
      sf.we = c[0];
      sf.w0 = c[1] >>> 0;
      sf.w1 = c[2] >>> 0;
      sf.w2 = c[3] >>> 0;
      sf.roundPack(FMT_F80);
      a.copy(sf.r);
    }
    this.pushValue(a);
  }

  private fsqrt(): void {
    const sf = this.begin(true);
    if (this.isEmpty(0)) {
      if (this.underflow()) this.setRaw(0, INDEF_SE, INDEF_HI, 0);
      return;
    }
    const a = this.ua;
    this.load(a, 0);
    const r = sf.r;
    let ok = true;
    if (a.cls === CLS_UNSUPPORTED) {
      sf.flags |= FE_INVALID;
      X87.indefinite(r);
      ok = this.preCheck();
    } else if (a.isNan) {
      this.propagateNan(a, a);
      ok = this.preCheck();
    } else if (a.cls === CLS_ZERO) r.copy(a);
    else if (a.sign) {
      sf.flags |= FE_INVALID;
      X87.indefinite(r);
      ok = this.preCheck();
    } else if (a.cls === CLS_INF) r.copy(a);
    else {
      if (a.denormal) sf.flags |= FE_DENORMAL;
      ok = this.preCheck();
      if (ok) sf.sqrt(a, this.precision());
    }
    this.commit(ok, 0);
  }

  /** Rounds ST0 to an integer in place (FRNDINT), exactly, per RC. */
  private frndint(): void {
    const sf = this.begin(true);
    if (this.isEmpty(0)) {
      if (this.underflow()) this.setRaw(0, INDEF_SE, INDEF_HI, 0);
      return;
    }
    const a = this.ua;
    this.load(a, 0);
    const r = sf.r;
    let ok = true;
    if (a.cls === CLS_UNSUPPORTED) {
      sf.flags |= FE_INVALID;
      X87.indefinite(r);
      ok = this.preCheck();
    } else if (a.isNan) {
      this.propagateNan(a, a);
      ok = this.preCheck();
    } else if (a.cls !== CLS_FINITE || a.exp >= 63) r.copy(a);
    else {
      if (a.denormal) sf.flags |= FE_DENORMAL;
      ok = this.preCheck();
      if (ok) {
        this.roundToInt(a);
        const up = sf.roundedUp;
        const m0 = sf.w0;
        const m1 = sf.w1;
        if (m0 === 0 && m1 === 0) zero(r, a.sign);
        else {
          fromInt64(r, m1 | 0, m0 | 0);
          if (m0 >= 0x80000000) {
            r.cls = CLS_FINITE;
            r.hi = m0;
            r.lo = m1;
            r.exp = 63;
          }
          r.sign = a.sign;
        }
        r.denormal = false;
        sf.roundedUp = up;
      }
    }
    this.commit(ok, 0);
  }

  /** FXTRACT: ST0 = exponent, then push the significand (Intel SDM Vol. 2 FXTRACT). */
  private fxtract(): void {
    const sf = this.begin(true);
    if (this.isEmpty(0)) {
      if (this.underflow()) {
        this.setRaw(0, INDEF_SE, INDEF_HI, 0);
        if (this.isEmpty(-1)) this.pushRaw(INDEF_SE, INDEF_HI, 0);
      }
      return;
    }
    if (!this.isEmpty(-1)) {
      if (this.overflow()) {
        this.setRaw(0, INDEF_SE, INDEF_HI, 0);
        this.top = (this.top - 1) & 7;
        this.setRaw(0, INDEF_SE, INDEF_HI, 0);
      }
      return;
    }
    const a = this.ua;
    const e = this.ub;
    const s = this.uc;
    this.load(a, 0);
    if (a.cls === CLS_UNSUPPORTED || a.isNan) {
      if (a.cls === CLS_UNSUPPORTED) {
        sf.flags |= FE_INVALID;
        X87.indefinite(sf.r);
      } else this.propagateNan(a, a);
      e.copy(sf.r);
      s.copy(sf.r);
    } else if (a.cls === CLS_ZERO) {
      sf.flags |= FE_ZERO;
      inf(e, 1);
      zero(s, a.sign);
    } else if (a.cls === CLS_INF) {
      inf(e, 0);
      s.copy(a);
    } else {
      if (a.denormal) sf.flags |= FE_DENORMAL;
      fromInt32(e, a.exp);
      s.copy(a);
      s.exp = 0;
      s.denormal = false;
    }
    this.setC1(0);
    if (this.raise(sf.flags) && sf.flags & ~this.cw & (FE_INVALID | FE_DENORMAL | FE_ZERO)) return;
    this.store(0, e);
    this.top = (this.top - 1) & 7;
    this.store(0, s);
  }

  /** FSCALE: ST0 × 2^trunc(ST1). */
  private fscale(): void {
    const sf = this.begin(true);
    if (this.isEmpty(0) || this.isEmpty(1)) {
      if (this.underflow()) this.setRaw(0, INDEF_SE, INDEF_HI, 0);
      return;
    }
    const a = this.ua;
    const b = this.ub;
    this.load(a, 0);
    this.load(b, 1);
    const r = sf.r;
    let ok = true;
    if (a.cls === CLS_UNSUPPORTED || b.cls === CLS_UNSUPPORTED) {
      sf.flags |= FE_INVALID;
      X87.indefinite(r);
    } else if (a.isNan || b.isNan) {
      this.propagateNan(a, b);
    } else {
      if ((a.cls === CLS_FINITE && a.denormal) || (b.cls === CLS_FINITE && b.denormal)) sf.flags |= FE_DENORMAL;
      if (b.cls === CLS_INF) {
        if (b.sign === 0) {
          if (a.cls === CLS_ZERO) {
            sf.flags |= FE_INVALID;
            X87.indefinite(r);
          } else inf(r, a.sign);
        } else if (a.cls === CLS_INF) {
          sf.flags |= FE_INVALID;
          X87.indefinite(r);
        } else zero(r, a.sign);
      } else if (a.cls !== CLS_FINITE) r.copy(a);
      else {
        ok = this.preCheck();
        if (ok) {
          // trunc(ST1), clamped: anything beyond ±2^17 over- or underflows anyway.
          let n = 0;
          if (b.cls === CLS_FINITE && b.exp >= 0) n = b.exp > 20 ? 1 << 20 : Math.floor((b.hi >>> 0) / 2 ** (31 - b.exp));
          if (b.sign) n = -n;
          sf.setWork(a);
          sf.we = a.exp + n;
          sf.roundPack(FMT_F80);
        }
      }
    }
    if (ok) ok = this.preCheck();
    this.commit(ok, 0);
  }

  /** FPREM (truncating) / FPREM1 (IEEE, round to nearest) with partial remainders (Intel SDM Vol. 2 FPREM). */
  private fprem(ieee: boolean): void {
    const sf = this.begin(true);
    if (this.isEmpty(0) || this.isEmpty(1)) {
      this.sw &= ~SW_C2;
      if (this.underflow()) this.setRaw(0, INDEF_SE, INDEF_HI, 0);
      return;
    }
    const a = this.ua;
    const b = this.ub;
    this.load(a, 0);
    this.load(b, 1);
    const r = sf.r;
    let ok = true;
    let q = 0;
    let partial = false;
    if (a.cls === CLS_UNSUPPORTED || b.cls === CLS_UNSUPPORTED) {
      sf.flags |= FE_INVALID;
      X87.indefinite(r);
    } else if (a.isNan || b.isNan) this.propagateNan(a, b);
    else if (a.cls === CLS_INF || b.cls === CLS_ZERO) {
      sf.flags |= FE_INVALID;
      X87.indefinite(r);
    } else {
      if ((a.cls === CLS_FINITE && a.denormal) || (b.cls === CLS_FINITE && b.denormal)) sf.flags |= FE_DENORMAL;
      if (a.cls === CLS_ZERO || b.cls === CLS_INF) r.copy(a);
      else {
        ok = this.preCheck();
        if (ok) {
          const d = a.exp - b.exp;
          if (d >= 64) {
            // Partial remainder: the exponent drops by N in 32..63 (Intel SDM Vol. 2 FPREM).
            partial = true;
            remainder(sf, a, b, false, 32 + ((d - 32) & 31));
          } else q = remainder(sf, a, b, ieee, -1);
          if (sf.r.cls === CLS_FINITE) {
            // The remainder is exact; it may still be tiny (denormal or, unmasked, biased) in the destination.
            sf.setWork(sf.r);
            sf.roundPack(FMT_F80);
          }
        }
      }
    }
    if (ok) ok = this.preCheck();
    this.raise(sf.flags);
    if (!ok) {
      this.sw &= ~(SW_C1 | SW_C2);
      return;
    }
    this.store(0, sf.r);
    if (sf.r.isNan) this.sw &= ~(SW_C1 | SW_C2); // C0 and C3 keep their values
    else this.setCC((q >> 1) & 1, partial ? 1 : 0, q & 1, (q >> 2) & 1); // C0 = Q2, C3 = Q1, C1 = Q0
  }
}

// ------------------------------------------------------------------ helpers

function zero(u: Unpacked, sign: number): void {
  u.cls = CLS_ZERO;
  u.sign = sign;
  u.exp = 0;
  u.hi = u.lo = 0;
  u.denormal = false;
}

function inf(u: Unpacked, sign: number): void {
  u.cls = CLS_INF;
  u.sign = sign;
  u.exp = 16384;
  u.hi = 0x80000000;
  u.lo = 0;
  u.denormal = false;
}

/** Ordered comparison of two non-NaN values: 0 a > b, 1 a < b, 2 equal. */
export function compareOrdered(a: Unpacked, b: Unpacked): number {
  if (a.cls === CLS_ZERO && b.cls === CLS_ZERO) return 2;
  // Map each to (sign, magnitude) ordering.
  const sa = a.cls === CLS_ZERO ? 0 : a.sign ? -1 : 1;
  const sb = b.cls === CLS_ZERO ? 0 : b.sign ? -1 : 1;
  if (sa !== sb) return sa > sb ? 0 : 1;
  // Same sign, both non-zero.
  let c: number;
  if (a.cls === CLS_INF || b.cls === CLS_INF) c = a.cls === b.cls ? 0 : a.cls === CLS_INF ? 1 : -1;
  else if (a.exp !== b.exp) c = a.exp > b.exp ? 1 : -1;
  else if (a.hi !== b.hi) c = a.hi > b.hi ? 1 : -1;
  else if (a.lo !== b.lo) c = a.lo > b.lo ? 1 : -1;
  else c = 0;
  if (c === 0) return 2;
  if (sa < 0) c = -c;
  return c > 0 ? 0 : 1;
}

/** Shift-right-with-jamming on the engine's work words (module-level access to the private routine). */
function sfShrJam(sf: SoftFloat, n: number): void {
  if (n <= 0) return;
  let w0 = sf.w0;
  let w1 = sf.w1;
  let w2 = sf.w2;
  if (n >= 96) {
    const any = (w0 | w1 | w2) !== 0;
    sf.w0 = sf.w1 = 0;
    sf.w2 = any ? 1 : 0;
    return;
  }
  while (n >= 32) {
    w2 = (w1 | (w2 !== 0 ? 1 : 0)) >>> 0;
    w1 = w0;
    w0 = 0;
    n -= 32;
  }
  if (n > 0) {
    const lost = (w2 << (32 - n)) !== 0 ? 1 : 0;
    w2 = ((w2 >>> n) | (w1 << (32 - n)) | lost) >>> 0;
    w1 = ((w1 >>> n) | (w0 << (32 - n))) >>> 0;
    w0 = w0 >>> n;
  }
  sf.w0 = w0;
  sf.w1 = w1;
  sf.w2 = w2;
}

/** Rounds w0:w1:w2 at the w1/w2 boundary (an integer in w0:w1); 0 down, 1 up, 2 carry out of 64 bits. */
function sfRound64(sf: SoftFloat): number {
  const w2 = sf.w2;
  if (w2 === 0) return 0;
  sf.flags |= FE_INEXACT;
  let up: boolean;
  switch (sf.rc) {
    case RC_NEAREST:
      up = w2 > 0x80000000 || (w2 === 0x80000000 && (sf.w1 & 1) === 1);
      break;
    case 1:
      up = sf.ws === 1;
      break;
    case 2:
      up = sf.ws === 0;
      break;
    default:
      up = false;
  }
  sf.w2 = 0;
  if (!up) return 0;
  sf.w1 = (sf.w1 + 1) >>> 0;
  if (sf.w1 === 0) {
    sf.w0 = (sf.w0 + 1) >>> 0;
    if (sf.w0 === 0) return 2;
  }
  return 1;
}

/**
 * Exact remainder of finite non-zero a by b into sf.r (unrounded, normalized):
 * a - q·b with q = a/b truncated, or rounded to nearest-even when `ieee`.
 * With `partialN` >= 0 the divisor is b·2^(d - partialN), d the exponent
 * difference (FPREM's partial reduction). Returns the low three quotient bits.
 */
function remainder(sf: SoftFloat, a: Unpacked, b: Unpacked, ieee: boolean, partialN: number): number {
  const r = sf.r;
  let d = a.exp - b.exp;
  let bexp = b.exp;
  if (partialN >= 0) {
    bexp = a.exp - partialN;
    d = partialN;
    ieee = false;
  }
  const A0 = a.hi >>> 0;
  const A1 = a.lo >>> 0;
  const B0 = b.hi >>> 0;
  const B1 = b.lo >>> 0;
  if (d < 0) {
    if (!ieee || d < -1 || !(A0 > B0 || (A0 === B0 && A1 > B1))) {
      r.copy(a);
      r.denormal = false;
      return 0;
    }
    // d == -1 and |a| > |b|/2: remainder a - sign(a)|b| = -sign(a)·(2B - A) at a's weight.
    let s1 = ((B1 << 1) >>> 0) - A1;
    let s0 = ((B0 << 1) | (B1 >>> 31)) - A0; // the 65th bit of 2B cancels against the borrow
    if (s1 < 0) {
      s1 += 0x100000000;
      s0--;
    }
    setWorkInt(sf, a.sign ^ 1, s0 >>> 0, s1 >>> 0);
    normalizeRem(sf, a.exp);
    return 1;
  }
  let r0 = A0;
  let r1 = A1;
  let rc = 0;
  let q = 0;
  for (let i = 0; i <= d; i++) {
    const ge = rc !== 0 || r0 > B0 || (r0 === B0 && r1 >= B1);
    if (ge) {
      let n1 = r1 - B1;
      let borrow = 0;
      if (n1 < 0) {
        n1 += 0x100000000;
        borrow = 1;
      }
      let n0 = r0 - B0 - borrow;
      if (n0 < 0) n0 += 0x100000000;
      r0 = n0;
      r1 = n1;
      rc = 0;
    }
    q = ((q << 1) | (ge ? 1 : 0)) & 7;
    if (i < d) {
      rc = r0 >>> 31;
      r0 = ((r0 << 1) | (r1 >>> 31)) >>> 0;
      r1 = (r1 << 1) >>> 0;
    }
  }
  let sign = a.sign;
  if (ieee) {
    // Round the quotient to nearest: compare 2R with B.
    const t2 = r0 >>> 31;
    const t0 = ((r0 << 1) | (r1 >>> 31)) >>> 0;
    const t1 = (r1 << 1) >>> 0;
    const cmp = t2 !== 0 || t0 > B0 || (t0 === B0 && t1 > B1) ? 1 : t0 === B0 && t1 === B1 ? 0 : -1;
    if (cmp > 0 || (cmp === 0 && (q & 1) === 1)) {
      let s1 = B1 - r1;
      let s0 = B0 - r0;
      if (s1 < 0) {
        s1 += 0x100000000;
        s0--;
      }
      r0 = s0 >>> 0;
      r1 = s1 >>> 0;
      sign ^= 1;
      q = (q + 1) & 7;
    }
  }
  setWorkInt(sf, sign, r0, r1);
  normalizeRem(sf, bexp);
  return q;
}

function setWorkInt(sf: SoftFloat, sign: number, w0: number, w1: number): void {
  sf.ws = sign;
  sf.w0 = w0;
  sf.w1 = w1;
  sf.w2 = 0;
}

/** Normalizes the exact remainder in the work words (weight of bit 63 = 2^e) into sf.r. */
function normalizeRem(sf: SoftFloat, e: number): void {
  const r = sf.r;
  r.sign = sf.ws;
  r.denormal = false;
  let w0 = sf.w0;
  let w1 = sf.w1;
  if ((w0 | w1) === 0) {
    r.cls = CLS_ZERO;
    r.exp = 0;
    r.hi = r.lo = 0;
    return;
  }
  if (w0 === 0) {
    w0 = w1;
    w1 = 0;
    e -= 32;
  }
  const s = Math.clz32(w0);
  if (s > 0) {
    w0 = ((w0 << s) | (w1 >>> (32 - s))) >>> 0;
    w1 = (w1 << s) >>> 0;
    e -= s;
  }
  r.cls = CLS_FINITE;
  r.exp = e;
  r.hi = w0;
  r.lo = w1;
}

/**
 * The x87 constants with 96 significand bits (exponent of bit 95, then three
 * words): index 1 log2(10), 2 log2(e), 3 pi, 4 log10(2), 5 ln(2).
 */
const CONSTANTS: number[][] = [
  [],
  [1, 0xd49a784b, 0xcd1b8afe, 0x492bf6ff],
  [0, 0xb8aa3b29, 0x5c17f0bb, 0xbe87fed0],
  [1, 0xc90fdaa2, 0x2168c234, 0xc4c6628b],
  [-2, 0x9a209a84, 0xfbcff798, 0x8f8959ac],
  [-1, 0xb17217f7, 0xd1cf79ab, 0xc9e3b398],
];

/** pi, pi/2, pi/4 and 3pi/4 with 96 significand bits (exponent, three words). */
const PI: readonly number[] = [1, 0xc90fdaa2, 0x2168c234, 0xc4c6628b];
const PI_2: readonly number[] = [0, 0xc90fdaa2, 0x2168c234, 0xc4c6628b];
const PI_4: readonly number[] = [-1, 0xc90fdaa2, 0x2168c234, 0xc4c6628b];
const PI_3_4: readonly number[] = [1, 0x96cbe3f9, 0x990e91a7, 0x9394c9e8];

/** Extended precision with an unbounded exponent: intermediate products that must not underflow. */
const FMT_WIDE = { p: 64, emin: -(1 << 30), emax: 1 << 30 };

/** Snapshot adapter of the x87 state. */
class X87Snapshot implements Snapshottable {
  readonly stateVersion = 1;
  constructor(
    private readonly f: X87,
    readonly stateId: string,
  ) {}
  saveState(): StateValue {
    const f = this.f;
    return {
      cw: f.cw,
      sw: f.getSw(),
      valid: f.valid,
      regs: [Array.from(f.se), Array.from(f.hi), Array.from(f.lo)],
      ptr: [f.fip, f.fcs, f.fop, f.fdp, f.fds],
    };
  }
  loadState(data: StateValue): void {
    if (typeof data !== "object" || data === null || Array.isArray(data) || data instanceof Uint8Array) {
      throw new StateError("X87_STATE", "x87 state is not an object");
    }
    const d = data as Record<string, StateValue>;
    const num = (k: string): number => {
      const v = d[k];
      if (typeof v !== "number" || !Number.isInteger(v)) throw new StateError("X87_STATE", `x87 state field "${k}" must be an integer`);
      return v;
    };
    const regs = d.regs;
    if (!Array.isArray(regs) || regs.length !== 3) throw new StateError("X87_STATE", 'x87 state field "regs" must hold 3 arrays');
    const arrs = regs.map((a, i) => {
      if (!Array.isArray(a) || a.length !== 8 || a.some((x) => typeof x !== "number" || !Number.isInteger(x))) {
        throw new StateError("X87_STATE", `x87 state field "regs[${i}]" must be 8 integers`);
      }
      return a as number[];
    });
    const ptr = d.ptr;
    if (!Array.isArray(ptr) || ptr.length !== 5 || ptr.some((x) => typeof x !== "number" || !Number.isInteger(x))) {
      throw new StateError("X87_STATE", 'x87 state field "ptr" must be 5 integers');
    }
    const f = this.f;
    f.cw = num("cw") & 0x1f7f;
    f.setSw(num("sw"));
    f.valid = num("valid") & 0xff;
    f.se.set(arrs[0].map((x) => x & 0xffff));
    f.hi.set(arrs[1].map((x) => x | 0));
    f.lo.set(arrs[2].map((x) => x | 0));
    const p = ptr as number[];
    f.fip = p[0] | 0;
    f.fcs = p[1] & 0xffff;
    f.fop = p[2] & 0x7ff;
    f.fdp = p[3] | 0;
    f.fds = p[4] & 0xffff;
  }
}
