// Soft-float on the x87 double-extended format (Intel SDM Vol. 1 §4.2.2,
// §4.8, §4.9): a 64-bit significand with an explicit integer bit kept as two
// unsigned 32-bit words, a 15-bit exponent and a sign. Arithmetic is exact:
// every operation produces the true result to 96 significand bits with the
// bits below jammed into the last one ("sticky"), then one rounding routine
// rounds it to 24, 53 or 64 bits in any of the four rounding modes with the
// exponent range of the destination (extended, double or single), raising
// the IEEE flags the way the x87 and SSE units do. The same core serves
// SSE/SSE2 scalar and packed single/double arithmetic (MXCSR rounding, DAZ,
// FTZ). Nothing here allocates: operands and results live in preallocated
// objects and module-level scratch.

/** Flag bits in x87 status-word order (also MXCSR order): invalid, denormal, zero-divide, overflow, underflow, precision. */
export const FE_INVALID = 1;
/** Denormal operand. */
export const FE_DENORMAL = 2;
/** Division by zero. */
export const FE_ZERO = 4;
/** Overflow. */
export const FE_OVERFLOW = 8;
/** Underflow. */
export const FE_UNDERFLOW = 16;
/** Inexact (precision). */
export const FE_INEXACT = 32;

/** Operand classes after unpacking. */
export const CLS_ZERO = 0;
/** Finite, non-zero (normal or denormal; `denormal` tells). */
export const CLS_FINITE = 1;
/** Infinity. */
export const CLS_INF = 2;
/** Quiet NaN. */
export const CLS_QNAN = 3;
/** Signaling NaN. */
export const CLS_SNAN = 4;
/** Unsupported extended encoding (unnormal, pseudo-NaN, pseudo-infinity): an invalid operand since the 80387. */
export const CLS_UNSUPPORTED = 5;

/** Rounding modes (x87 control word RC / MXCSR RC): nearest-even, down, up, toward zero. */
export const RC_NEAREST = 0;
/** Round toward -infinity. */
export const RC_DOWN = 1;
/** Round toward +infinity. */
export const RC_UP = 2;
/** Round toward zero. */
export const RC_ZERO = 3;

/** The exponent bias adjustment for unmasked x87 overflow/underflow results (Intel SDM Vol. 1 §4.9.1.4). */
const X87_BIAS_ADJUST = 24576;

/**
 * An unpacked floating-point value. For finite values the value is
 * `hi:lo × 2^(exp - 63)`: `hi:lo` is normalized (bit 63 set) even for
 * denormals, whose exponent then lies below the format's minimum. NaNs keep
 * their significand in x87 layout (integer bit set, quiet bit 62).
 */
export class Unpacked {
  /** One of the CLS_ constants. */
  cls = CLS_ZERO;
  /** 1 when negative. */
  sign = 0;
  /** Unbiased exponent of bit 63. */
  exp = 0;
  /** Significand bits 63..32 (unsigned). */
  hi = 0;
  /** Significand bits 31..0 (unsigned). */
  lo = 0;
  /** The encoding was a denormal (or an x87 pseudo-denormal). */
  denormal = false;

  /** Copies another value. */
  copy(o: Unpacked): void {
    this.cls = o.cls;
    this.sign = o.sign;
    this.exp = o.exp;
    this.hi = o.hi;
    this.lo = o.lo;
    this.denormal = o.denormal;
  }

  /** True for either kind of NaN. */
  get isNan(): boolean {
    return this.cls === CLS_QNAN || this.cls === CLS_SNAN;
  }
}

/** Leading zeros of a 32-bit word. */
const clz = Math.clz32;

/** Normalizes a non-zero significand held in `u` (shifts until bit 63 is set, adjusting the exponent). */
function normalize(u: Unpacked): void {
  let hi = u.hi;
  let lo = u.lo;
  let e = u.exp;
  if (hi === 0) {
    hi = lo;
    lo = 0;
    e -= 32;
  }
  const s = clz(hi);
  if (s > 0) {
    hi = ((hi << s) | (lo >>> (32 - s))) >>> 0;
    lo = (lo << s) >>> 0;
    e -= s;
  }
  u.hi = hi;
  u.lo = lo;
  u.exp = e;
}

/** Unpacks the extended value with sign/exponent word `se` and significand `hi:lo`. */
export function unpackF80(u: Unpacked, se: number, hi: number, lo: number): void {
  hi >>>= 0;
  lo >>>= 0;
  const e = se & 0x7fff;
  u.sign = (se >>> 15) & 1;
  u.hi = hi;
  u.lo = lo;
  u.denormal = false;
  if (e === 0) {
    if (hi === 0 && lo === 0) {
      u.cls = CLS_ZERO;
      u.exp = 0;
      return;
    }
    // Denormal, or pseudo-denormal (integer bit set): both have the weight of exponent 1.
    u.cls = CLS_FINITE;
    u.denormal = true;
    u.exp = -16382;
    normalize(u);
    return;
  }
  if ((hi & 0x80000000) === 0) {
    // Unnormal, pseudo-infinity, pseudo-NaN.
    u.cls = CLS_UNSUPPORTED;
    u.exp = e - 16383;
    return;
  }
  if (e === 0x7fff) {
    if ((hi & 0x7fffffff) === 0 && lo === 0) u.cls = CLS_INF;
    else u.cls = hi & 0x40000000 ? CLS_QNAN : CLS_SNAN;
    u.exp = 16384;
    return;
  }
  u.cls = CLS_FINITE;
  u.exp = e - 16383;
}

/** Unpacks an IEEE double given as its two 32-bit halves. */
export function unpackF64(u: Unpacked, lo: number, hi: number, daz = false): void {
  const e = (hi >>> 20) & 0x7ff;
  u.sign = hi >>> 31;
  const fhi = hi & 0xfffff;
  lo >>>= 0;
  u.denormal = false;
  if (e === 0x7ff) {
    u.hi = (0x80000000 | (fhi << 11) | (lo >>> 21)) >>> 0;
    u.lo = (lo << 11) >>> 0;
    u.exp = 16384;
    if (fhi === 0 && lo === 0) u.cls = CLS_INF;
    else u.cls = fhi & 0x80000 ? CLS_QNAN : CLS_SNAN;
    return;
  }
  u.hi = ((fhi << 11) | (lo >>> 21)) >>> 0;
  u.lo = (lo << 11) >>> 0;
  if (e === 0) {
    if ((fhi === 0 && lo === 0) || daz) {
      u.cls = CLS_ZERO;
      u.exp = 0;
      u.hi = u.lo = 0;
      return;
    }
    u.cls = CLS_FINITE;
    u.denormal = true;
    u.exp = -1022;
    normalize(u);
    return;
  }
  u.hi = (u.hi | 0x80000000) >>> 0;
  u.cls = CLS_FINITE;
  u.exp = e - 1023;
}

/** Unpacks an IEEE single. */
export function unpackF32(u: Unpacked, bits: number, daz = false): void {
  const e = (bits >>> 23) & 0xff;
  u.sign = bits >>> 31;
  const f = bits & 0x7fffff;
  u.lo = 0;
  u.denormal = false;
  if (e === 0xff) {
    u.hi = (0x80000000 | (f << 8)) >>> 0;
    u.exp = 16384;
    if (f === 0) u.cls = CLS_INF;
    else u.cls = f & 0x400000 ? CLS_QNAN : CLS_SNAN;
    return;
  }
  u.hi = (f << 8) >>> 0;
  if (e === 0) {
    if (f === 0 || daz) {
      u.cls = CLS_ZERO;
      u.exp = 0;
      u.hi = 0;
      return;
    }
    u.cls = CLS_FINITE;
    u.denormal = true;
    u.exp = -126;
    normalize(u);
    return;
  }
  u.hi = (u.hi | 0x80000000) >>> 0;
  u.cls = CLS_FINITE;
  u.exp = e - 127;
}

/** Sets `u` to a signed 64-bit integer given as halves (exact, no rounding needed at 64 bits). */
export function fromInt64(u: Unpacked, lo: number, hi: number): void {
  u.denormal = false;
  u.sign = hi < 0 ? 1 : 0;
  lo >>>= 0;
  hi >>>= 0;
  if (u.sign) {
    // Two's complement negate of hi:lo.
    lo = (~lo + 1) >>> 0;
    hi = (~hi + (lo === 0 ? 1 : 0)) >>> 0;
  }
  if (hi === 0 && lo === 0) {
    u.cls = CLS_ZERO;
    u.exp = 0;
    u.hi = u.lo = 0;
    return;
  }
  u.cls = CLS_FINITE;
  u.hi = hi;
  u.lo = lo;
  u.exp = 63;
  normalize(u);
}

/** Sets `u` to a signed 32-bit integer. */
export function fromInt32(u: Unpacked, v: number): void {
  fromInt64(u, v | 0, (v | 0) < 0 ? -1 : 0);
}

/** Destination formats for rounding. */
export interface Format {
  /** Significand bits (24, 53 or 64). */
  readonly p: number;
  /** Exponent of the smallest normal. */
  readonly emin: number;
  /** Exponent of the largest finite. */
  readonly emax: number;
}
/** Double extended. */
export const FMT_F80: Format = { p: 64, emin: -16382, emax: 16383 };
/** Double. */
export const FMT_F64: Format = { p: 53, emin: -1022, emax: 1023 };
/** Single. */
export const FMT_F32: Format = { p: 24, emin: -126, emax: 127 };
/** Extended exponent range with double precision (x87 PC = 10b). */
export const FMT_F80_P53: Format = { p: 53, emin: -16382, emax: 16383 };
/** Extended exponent range with single precision (x87 PC = 00b). */
export const FMT_F80_P24: Format = { p: 24, emin: -16382, emax: 16383 };

/**
 * The soft-float engine: exception flags, the rounding environment and the
 * 96-bit working significand of the operation in progress.
 */
export class SoftFloat {
  /** Accumulated FE_ flags of the current operation. */
  flags = 0;
  /** Set when the last rounding increased the magnitude (x87 C1). */
  roundedUp = 0;
  /** Rounding mode (RC_). */
  rc = RC_NEAREST;
  /** Tininess is detected after rounding (true) or before (false). */
  tinyAfter = true;
  /** Underflow is unmasked: x87 register destinations get a biased result. */
  unmaskedUnderflow = false;
  /** Overflow is unmasked. */
  unmaskedOverflow = false;
  /** Apply the x87 ±24576 exponent bias for unmasked overflow/underflow (register destinations). */
  biasUnmasked = false;
  /** Flush tiny results to zero (MXCSR.FTZ, only with underflow masked). */
  ftz = false;

  // Working value: sign, exponent of bit 95 of w0:w1:w2, and the 96-bit significand.
  /** @internal */ ws = 0;
  /** @internal */ we = 0;
  /** @internal */ w0 = 0;
  /** @internal */ w1 = 0;
  /** @internal */ w2 = 0;

  /** Scratch operands. */
  readonly a = new Unpacked();
  /** Scratch operand. */
  readonly b = new Unpacked();
  /** Result of the last operation (class, sign, exp, hi, lo). */
  readonly r = new Unpacked();
  /** Multiword scratch. */
  private readonly m = new Uint32Array(16);

  /** Clears the flags before an operation. */
  begin(rc: number): void {
    this.flags = 0;
    this.roundedUp = 0;
    this.rc = rc;
  }

  // ------------------------------------------------------------------ rounding

  /** Shifts the working significand right by `n`, OR-ing lost bits into bit 0 of w2. */
  private shrJam(n: number): void {
    if (n <= 0) return;
    let w0 = this.w0;
    let w1 = this.w1;
    let w2 = this.w2;
    if (n >= 96) {
      const any = (w0 | w1 | w2) !== 0;
      this.w0 = this.w1 = 0;
      this.w2 = any ? 1 : 0;
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
    this.w0 = w0;
    this.w1 = w1;
    this.w2 = w2;
  }

  /**
   * Rounds the working significand (w0:w1:w2) at precision `p` in place.
   * Returns 1 if the magnitude was incremented, and sets `inexact`.
   * A carry out of bit 95 leaves w0 = 0x80000000 and returns 2.
   */
  private roundSig(p: number, sign: number): number {
    const w0 = this.w0;
    const w1 = this.w1;
    const w2 = this.w2;
    // Position of the last kept bit; `cmp` compares the discarded part with half an ulp.
    let cmp: number;
    let lsb: number;
    let inexact: boolean;
    if (p === 64) {
      lsb = w1 & 1;
      inexact = w2 !== 0;
      cmp = w2 > 0x80000000 ? 1 : w2 === 0x80000000 ? 0 : -1;
    } else if (p === 53) {
      const rest = w1 & 0x7ff;
      lsb = (w1 >>> 11) & 1;
      inexact = rest !== 0 || w2 !== 0;
      cmp = rest > 0x400 ? 1 : rest < 0x400 ? -1 : w2 !== 0 ? 1 : 0;
    } else {
      const rest = w0 & 0xff;
      lsb = (w0 >>> 8) & 1;
      inexact = rest !== 0 || w1 !== 0 || w2 !== 0;
      cmp = rest > 0x80 ? 1 : rest < 0x80 ? -1 : w1 !== 0 || w2 !== 0 ? 1 : 0;
    }
    if (inexact) this.flags |= FE_INEXACT;
    let up = false;
    if (inexact) {
      switch (this.rc) {
        case RC_NEAREST:
          up = cmp > 0 || (cmp === 0 && lsb === 1);
          break;
        case RC_DOWN:
          up = sign === 1;
          break;
        case RC_UP:
          up = sign === 0;
          break;
        default:
          up = false;
      }
    }
    // Truncate to p bits, then add one ulp if rounding up.
    let n0 = w0;
    let n1 = w1;
    if (p === 64) {
      // keep w0:w1
    } else if (p === 53) n1 = (n1 & ~0x7ff) >>> 0;
    else {
      n0 = (n0 & ~0xff) >>> 0;
      n1 = 0;
    }
    let carry = 0;
    if (up) {
      if (p === 64) {
        n1 = (n1 + 1) >>> 0;
        if (n1 === 0) {
          n0 = (n0 + 1) >>> 0;
          if (n0 === 0) carry = 1;
        }
      } else if (p === 53) {
        const s = n1 + 0x800;
        n1 = s >>> 0;
        if (s > 0xffffffff) {
          n0 = (n0 + 1) >>> 0;
          if (n0 === 0) carry = 1;
        }
      } else {
        const s = n0 + 0x100;
        n0 = s >>> 0;
        if (s > 0xffffffff) carry = 1;
      }
    }
    this.w2 = 0;
    if (carry) {
      this.w0 = 0x80000000;
      this.w1 = 0;
      return 2;
    }
    this.w0 = n0;
    this.w1 = n1;
    return up ? 1 : 0;
  }

  /**
   * Rounds the working value (sign ws, exponent we of bit 95, significand
   * w0:w1:w2 normalized or zero) to format `f` and leaves it in `r`.
   * Handles overflow, underflow (tininess before or after rounding),
   * denormal results, FTZ and the x87 biased responses.
   */
  roundPack(f: Format): void {
    const r = this.r;
    r.sign = this.ws;
    r.denormal = false;
    if ((this.w0 | this.w1 | this.w2) === 0) {
      r.cls = CLS_ZERO;
      r.exp = 0;
      r.hi = r.lo = 0;
      return;
    }
    let e = this.we;
    const s0 = this.w0;
    const s1 = this.w1;
    const s2 = this.w2;
    if (e < f.emin) {
      // Tiny before rounding. Decide tininess after rounding (unbounded exponent) if asked.
      let tiny = true;
      if (this.tinyAfter && e === f.emin - 1) {
        const saveFlags = this.flags;
        const c = this.roundSig(f.p, this.ws);
        if (c === 2) tiny = false;
        this.flags = saveFlags;
        this.w0 = s0;
        this.w1 = s1;
        this.w2 = s2;
      }
      if (tiny && this.unmaskedUnderflow) {
        this.flags |= FE_UNDERFLOW;
        if (this.biasUnmasked) {
          if (e + X87_BIAS_ADJUST >= f.emin) {
            this.we = e + X87_BIAS_ADJUST;
            this.roundNormal(f);
            return;
          }
          // Still tiny after biasing (FSCALE): a signed zero.
          this.flags |= FE_INEXACT;
          r.cls = CLS_ZERO;
          r.exp = 0;
          r.hi = r.lo = 0;
          this.roundedUp = 0;
          return;
        }
        // SSE: the instruction faults (#XM); the caller discards the result. Produce the masked one anyway.
      }
      if (tiny && this.ftz && !this.unmaskedUnderflow) {
        this.flags |= FE_UNDERFLOW | FE_INEXACT;
        r.cls = CLS_ZERO;
        r.exp = 0;
        r.hi = r.lo = 0;
        return;
      }
      this.shrJam(f.emin - e);
      const before = this.flags & FE_INEXACT;
      this.flags &= ~FE_INEXACT;
      const c = this.roundSig(f.p, this.ws);
      const inexact = this.flags & FE_INEXACT;
      this.flags |= before;
      if (tiny && inexact) this.flags |= FE_UNDERFLOW;
      this.roundedUp = c !== 0 ? 1 : 0;
      e = f.emin;
      if ((this.w0 | this.w1) === 0) {
        r.cls = CLS_ZERO;
        r.exp = 0;
        r.hi = r.lo = 0;
        return;
      }
      r.cls = CLS_FINITE;
      r.exp = e;
      r.hi = this.w0;
      r.lo = this.w1;
      r.denormal = (this.w0 & 0x80000000) === 0;
      return;
    }
    this.roundNormal(f);
  }

  /** Rounding of a value whose exponent is at least emin (or biased back into range). */
  private roundNormal(f: Format): void {
    const r = this.r;
    let e = this.we;
    const c = this.roundSig(f.p, this.ws);
    if (c === 2) e++;
    this.roundedUp = c !== 0 ? 1 : 0;
    if (e > f.emax) {
      this.flags |= FE_OVERFLOW;
      const biased = this.unmaskedOverflow && this.biasUnmasked;
      if (biased && e - X87_BIAS_ADJUST <= f.emax) {
        // The rounded value with the exponent scaled down (inexact only if the rounding was).
        r.cls = CLS_FINITE;
        r.sign = this.ws;
        r.exp = e - X87_BIAS_ADJUST;
        r.hi = this.w0;
        r.lo = this.w1;
        r.denormal = false;
        return;
      }
      this.flags |= FE_INEXACT;
      // Beyond even the biased range (FSCALE) the unmasked response is an infinity.
      const toInf =
        biased || this.rc === RC_NEAREST || (this.rc === RC_UP && this.ws === 0) || (this.rc === RC_DOWN && this.ws === 1);
      r.sign = this.ws;
      r.denormal = false;
      if (toInf) {
        r.cls = CLS_INF;
        r.exp = 16384;
        r.hi = 0x80000000;
        r.lo = 0;
        this.roundedUp = 1;
      } else {
        r.cls = CLS_FINITE;
        r.exp = f.emax;
        maxSig(r, f.p);
        this.roundedUp = 0;
      }
      return;
    }
    r.cls = CLS_FINITE;
    r.sign = this.ws;
    r.exp = e;
    r.hi = this.w0;
    r.lo = this.w1;
    r.denormal = false;
  }

  /** Loads the working value from an unpacked finite value (exact). */
  setWork(u: Unpacked): void {
    this.ws = u.sign;
    this.we = u.exp;
    this.w0 = u.hi;
    this.w1 = u.lo;
    this.w2 = 0;
  }

  /** Rounds a finite unpacked value to format `f` into `r` (conversions, FRNDINT-free precision changes). */
  roundValue(u: Unpacked, f: Format): void {
    if (u.cls !== CLS_FINITE) {
      this.r.copy(u);
      return;
    }
    this.setWork(u);
    this.roundPack(f);
  }

  // ------------------------------------------------------------------ arithmetic on finite values

  /** a + b (or a - b when `negB`) of two finite or zero operands into the working value, then rounds to `f`. */
  add(a: Unpacked, b: Unpacked, negB: boolean, f: Format): void {
    const bs = b.sign ^ (negB ? 1 : 0);
    if (a.cls === CLS_ZERO && b.cls === CLS_ZERO) {
      const r = this.r;
      r.cls = CLS_ZERO;
      r.exp = 0;
      r.hi = r.lo = 0;
      r.denormal = false;
      r.sign = a.sign === bs ? a.sign : this.rc === RC_DOWN ? 1 : 0;
      return;
    }
    if (b.cls === CLS_ZERO) {
      this.setWork(a);
      this.roundPack(f);
      return;
    }
    if (a.cls === CLS_ZERO) {
      this.setWork(b);
      this.ws = bs;
      this.roundPack(f);
      return;
    }
    // Order by magnitude: x is the larger.
    let x = a;
    let y = b;
    let xs = a.sign;
    let ys = bs;
    if (a.exp < b.exp || (a.exp === b.exp && (a.hi < b.hi || (a.hi === b.hi && a.lo < b.lo)))) {
      x = b;
      y = a;
      xs = bs;
      ys = a.sign;
    }
    // y shifted right to x's exponent, into w0:w1:w2 with jamming.
    this.w0 = y.hi;
    this.w1 = y.lo;
    this.w2 = 0;
    this.shrJam(x.exp - y.exp);
    const y0 = this.w0;
    const y1 = this.w1;
    const y2 = this.w2;
    let e = x.exp;
    if (xs === ys) {
      let s2 = y2;
      let s1 = x.lo + y1;
      let s0 = x.hi + y0;
      if (s1 > 0xffffffff) {
        s1 -= 0x100000000;
        s0++;
      }
      if (s0 > 0xffffffff) {
        // Carry: shift right by one with jamming.
        s0 -= 0x100000000;
        s2 = ((s2 >>> 1) | ((s1 & 1) << 31) | (s2 & 1)) >>> 0;
        s1 = ((s1 >>> 1) | ((s0 & 1) << 31)) >>> 0;
        s0 = ((s0 >>> 1) | 0x80000000) >>> 0;
        e++;
      }
      this.w0 = s0;
      this.w1 = s1;
      this.w2 = s2;
    } else {
      // x - y, x >= y.
      let d2 = 0 - y2;
      let borrow = 0;
      if (d2 < 0) {
        d2 += 0x100000000;
        borrow = 1;
      }
      let d1 = x.lo - y1 - borrow;
      borrow = 0;
      if (d1 < 0) {
        d1 += 0x100000000;
        borrow = 1;
      }
      const d0 = x.hi - y0 - borrow;
      this.w0 = d0 >>> 0;
      this.w1 = d1 >>> 0;
      this.w2 = d2 >>> 0;
      if ((this.w0 | this.w1 | this.w2) === 0) {
        const r = this.r;
        r.cls = CLS_ZERO;
        r.exp = 0;
        r.hi = r.lo = 0;
        r.denormal = false;
        r.sign = this.rc === RC_DOWN ? 1 : 0;
        return;
      }
      e = this.normalizeWork(e);
    }
    this.ws = xs;
    this.we = e;
    this.roundPack(f);
  }

  /** Shifts the working significand left until bit 95 is set; returns the adjusted exponent. */
  private normalizeWork(e: number): number {
    while (this.w0 === 0) {
      this.w0 = this.w1;
      this.w1 = this.w2;
      this.w2 = 0;
      e -= 32;
    }
    const s = clz(this.w0);
    if (s > 0) {
      this.w0 = ((this.w0 << s) | (this.w1 >>> (32 - s))) >>> 0;
      this.w1 = ((this.w1 << s) | (this.w2 >>> (32 - s))) >>> 0;
      this.w2 = (this.w2 << s) >>> 0;
      e -= s;
    }
    return e;
  }

  /** a × b of two finite non-zero operands, rounded to `f`. */
  mul(a: Unpacked, b: Unpacked, f: Format): void {
    const m = this.m;
    // 16-bit limbs, little-endian; column sums stay below 2^53.
    const a0 = a.lo & 0xffff, a1 = a.lo >>> 16, a2 = a.hi & 0xffff, a3 = a.hi >>> 16;
    const b0 = b.lo & 0xffff, b1 = b.lo >>> 16, b2 = b.hi & 0xffff, b3 = b.hi >>> 16;
    let s = a0 * b0;
    m[0] = s % 65536;
    s = Math.floor(s / 65536) + a0 * b1 + a1 * b0;
    m[1] = s % 65536;
    s = Math.floor(s / 65536) + a0 * b2 + a1 * b1 + a2 * b0;
    m[2] = s % 65536;
    s = Math.floor(s / 65536) + a0 * b3 + a1 * b2 + a2 * b1 + a3 * b0;
    m[3] = s % 65536;
    s = Math.floor(s / 65536) + a1 * b3 + a2 * b2 + a3 * b1;
    m[4] = s % 65536;
    s = Math.floor(s / 65536) + a2 * b3 + a3 * b2;
    m[5] = s % 65536;
    s = Math.floor(s / 65536) + a3 * b3;
    m[6] = s % 65536;
    m[7] = Math.floor(s / 65536);
    let w0 = ((m[7] << 16) | m[6]) >>> 0;
    let w1 = ((m[5] << 16) | m[4]) >>> 0;
    let w2 = ((m[3] << 16) | m[2]) >>> 0;
    const low = (m[1] | m[0]) !== 0 ? 1 : 0;
    let e = a.exp + b.exp + 1;
    if ((w0 & 0x80000000) === 0) {
      w0 = ((w0 << 1) | (w1 >>> 31)) >>> 0;
      w1 = ((w1 << 1) | (w2 >>> 31)) >>> 0;
      w2 = (w2 << 1) >>> 0;
      e--;
    }
    this.w0 = w0;
    this.w1 = w1;
    this.w2 = (w2 | low) >>> 0;
    this.ws = a.sign ^ b.sign;
    this.we = e;
    this.roundPack(f);
  }

  /**
   * a / b of two finite non-zero operands, rounded to `f`. Restoring division
   * for 67 quotient bits (the first may be 0): with the remainder as a sticky
   * bit that is enough for every precision, since an exact quotient of two
   * 64-bit significands never needs 65 bits (no ties beyond 64).
   */
  div(a: Unpacked, b: Unpacked, f: Format): void {
    let r0 = a.hi >>> 0;
    let r1 = a.lo >>> 0;
    let rc = 0;
    const d0 = b.hi >>> 0;
    const d1 = b.lo >>> 0;
    let q0 = 0;
    let q1 = 0;
    let q2 = 0;
    for (let i = 0; i < 67; i++) {
      const ge = rc !== 0 || r0 > d0 || (r0 === d0 && r1 >= d1);
      if (ge) {
        let n1 = r1 - d1;
        let n0 = r0 - d0;
        if (n1 < 0) {
          n1 += 0x100000000;
          n0--;
        }
        r0 = n0 >>> 0;
        r1 = n1;
      }
      q0 = ((q0 << 1) | (q1 >>> 31)) >>> 0;
      q1 = ((q1 << 1) | (q2 >>> 31)) >>> 0;
      q2 = ((q2 << 1) | (ge ? 1 : 0)) >>> 0;
      rc = r0 >>> 31;
      r0 = ((r0 << 1) | (r1 >>> 31)) >>> 0;
      r1 = (r1 << 1) >>> 0;
    }
    // 67 bits: q0 holds bits 66..64. The first quotient bit has weight 2^0.
    let e = a.exp - b.exp;
    let w0 = ((q0 << 29) | (q1 >>> 3)) >>> 0;
    let w1 = ((q1 << 29) | (q2 >>> 3)) >>> 0;
    let w2 = (q2 << 29) >>> 0;
    if ((w0 & 0x80000000) === 0) {
      w0 = ((w0 << 1) | (w1 >>> 31)) >>> 0;
      w1 = ((w1 << 1) | (w2 >>> 31)) >>> 0;
      w2 = (w2 << 1) >>> 0;
      e--;
    }
    this.w0 = w0;
    this.w1 = w1;
    this.w2 = (w2 | ((r0 | r1 | rc) !== 0 ? 1 : 0)) >>> 0;
    this.ws = a.sign ^ b.sign;
    this.we = e;
    this.roundPack(f);
  }

  /**
   * Square root of a finite positive operand, rounded to `f`: digit by digit,
   * two radicand bits per step, 66 root bits and the remainder as a sticky
   * bit (an exact root of a 64-bit significand never has 65 significant bits).
   */
  sqrt(a: Unpacked, f: Format): void {
    // value = sig/2^63 × 2^exp; with an odd exponent the radicand is 2·sig (one more leading bit).
    const odd = (a.exp & 1) !== 0;
    const hi = a.hi >>> 0;
    const lo = a.lo >>> 0;
    // The radicand bit stream, most significant first, in x0:x1:x2.
    let x0 = odd ? hi : hi >>> 1;
    let x1 = odd ? lo : ((hi << 31) | (lo >>> 1)) >>> 0;
    let x2 = odd ? 0 : (lo << 31) >>> 0;
    let q0 = 0, q1 = 0, q2 = 0; // root
    let r0 = 0, r1 = 0, r2 = 0; // remainder (< 2^68)
    for (let i = 0; i < 66; i++) {
      const two = x0 >>> 30;
      x0 = ((x0 << 2) | (x1 >>> 30)) >>> 0;
      x1 = ((x1 << 2) | (x2 >>> 30)) >>> 0;
      x2 = (x2 << 2) >>> 0;
      r0 = ((r0 << 2) | (r1 >>> 30)) >>> 0;
      r1 = ((r1 << 2) | (r2 >>> 30)) >>> 0;
      r2 = ((r2 << 2) | two) >>> 0;
      // trial t = 4q + 1
      const t0 = ((q0 << 2) | (q1 >>> 30)) >>> 0;
      const t1 = ((q1 << 2) | (q2 >>> 30)) >>> 0;
      const t2 = ((q2 << 2) | 1) >>> 0;
      const ge = r0 > t0 || (r0 === t0 && (r1 > t1 || (r1 === t1 && r2 >= t2)));
      if (ge) {
        let d2 = r2 - t2;
        let d1 = r1 - t1;
        let d0 = r0 - t0;
        if (d2 < 0) {
          d2 += 0x100000000;
          d1--;
        }
        if (d1 < 0) {
          d1 += 0x100000000;
          d0--;
        }
        r0 = d0 >>> 0;
        r1 = d1;
        r2 = d2;
      }
      q0 = ((q0 << 1) | (q1 >>> 31)) >>> 0;
      q1 = ((q1 << 1) | (q2 >>> 31)) >>> 0;
      q2 = ((q2 << 1) | (ge ? 1 : 0)) >>> 0;
    }
    // 66 root bits (q0 holds bits 65..64, the top one set) -> bits 95..30.
    this.w0 = ((q0 << 30) | (q1 >>> 2)) >>> 0;
    this.w1 = ((q1 << 30) | (q2 >>> 2)) >>> 0;
    this.w2 = ((q2 << 30) | ((r0 | r1 | r2) !== 0 ? 1 : 0)) >>> 0;
    this.ws = 0;
    this.we = odd ? (a.exp - 1) / 2 : a.exp / 2;
    this.roundPack(f);
  }
}

/** Sets the significand of `r` to the largest p-bit value. */
function maxSig(r: Unpacked, p: number): void {
  if (p === 64) {
    r.hi = 0xffffffff;
    r.lo = 0xffffffff;
  } else if (p === 53) {
    r.hi = 0xffffffff;
    r.lo = 0xfffff800;
  } else {
    r.hi = 0xffffff00;
    r.lo = 0;
  }
}

// ------------------------------------------------------------------ packing

/** Output of the pack functions: sign/exponent word and significand (extended), or the two halves of a double. */
export const packOut = new Int32Array(3);

/** Packs a value (any class) into extended: packOut = [se, hi, lo]. NaN significands are kept as is. */
export function packF80(u: Unpacked): void {
  const s = u.sign << 15;
  switch (u.cls) {
    case CLS_ZERO:
      packOut[0] = s;
      packOut[1] = 0;
      packOut[2] = 0;
      return;
    case CLS_INF:
      packOut[0] = s | 0x7fff;
      packOut[1] = 0x80000000 | 0;
      packOut[2] = 0;
      return;
    case CLS_QNAN:
    case CLS_SNAN:
      packOut[0] = s | 0x7fff;
      packOut[1] = u.hi | 0;
      packOut[2] = u.lo | 0;
      return;
    default: {
      // Finite: a denormal result has exp == emin with bit 63 clear; an unpacked
      // denormal operand (normalized, exponent below emin) is shifted back exactly.
      if ((u.hi & 0x80000000) !== 0 && u.exp < -16382) {
        const n = -16382 - u.exp;
        let hi = u.hi >>> 0;
        let lo = u.lo >>> 0;
        if (n >= 64) hi = lo = 0;
        else if (n >= 32) {
          lo = hi >>> (n - 32);
          hi = 0;
        } else {
          lo = ((lo >>> n) | (hi << (32 - n))) >>> 0;
          hi = hi >>> n;
        }
        packOut[0] = s;
        packOut[1] = hi | 0;
        packOut[2] = lo | 0;
        return;
      }
      const biased = (u.hi & 0x80000000) === 0 ? 0 : u.exp + 16383;
      packOut[0] = s | (biased & 0x7fff);
      packOut[1] = u.hi | 0;
      packOut[2] = u.lo | 0;
    }
  }
}

/** Packs a value already rounded to double into packOut = [lo, hi]. */
export function packF64(u: Unpacked): void {
  const s = u.sign << 31;
  switch (u.cls) {
    case CLS_ZERO:
      packOut[0] = 0;
      packOut[1] = s;
      return;
    case CLS_INF:
      packOut[0] = 0;
      packOut[1] = s | 0x7ff00000;
      return;
    case CLS_QNAN:
    case CLS_SNAN:
      packOut[0] = (u.lo >>> 11) | (u.hi << 21);
      packOut[1] = s | 0x7ff00000 | ((u.hi >>> 11) & 0xfffff);
      return;
    default: {
      let hi = u.hi >>> 0;
      let lo = u.lo >>> 0;
      let biased = (hi & 0x80000000) === 0 ? 0 : u.exp + 1023;
      if (biased < 0 || (biased === 0 && hi & 0x80000000)) {
        // An unpacked denormal operand (normalized): shift back exactly.
        const n = -1022 - u.exp;
        shiftRight(hi, lo, n);
        hi = shifted[0];
        lo = shifted[1];
        biased = 0;
      }
      packOut[0] = (lo >>> 11) | (hi << 21);
      packOut[1] = s | (biased << 20) | ((hi >>> 11) & 0xfffff);
    }
  }
}

/** Packs a value already rounded to single; returns the 32-bit pattern. */
export function packF32(u: Unpacked): number {
  const s = u.sign << 31;
  switch (u.cls) {
    case CLS_ZERO:
      return s;
    case CLS_INF:
      return s | 0x7f800000;
    case CLS_QNAN:
    case CLS_SNAN:
      return s | 0x7f800000 | ((u.hi >>> 8) & 0x7fffff);
    default: {
      let hi = u.hi >>> 0;
      let biased = (hi & 0x80000000) === 0 ? 0 : u.exp + 127;
      if (biased < 0 || (biased === 0 && hi & 0x80000000)) {
        shiftRight(hi, u.lo >>> 0, -126 - u.exp);
        hi = shifted[0];
        biased = 0;
      }
      return s | (biased << 23) | ((hi >>> 8) & 0x7fffff);
    }
  }
}

const shifted = [0, 0];

/** hi:lo >>> n (truncating) into `shifted`. */
function shiftRight(hi: number, lo: number, n: number): void {
  if (n <= 0) {
    shifted[0] = hi;
    shifted[1] = lo;
  } else if (n >= 64) {
    shifted[0] = shifted[1] = 0;
  } else if (n >= 32) {
    shifted[1] = hi >>> (n - 32);
    shifted[0] = 0;
  } else {
    shifted[1] = ((lo >>> n) | (hi << (32 - n))) >>> 0;
    shifted[0] = hi >>> n;
  }
}

// ------------------------------------------------------------------ doubles (transcendental helpers)

const f64 = new Float64Array(1);
const f64w = new Int32Array(f64.buffer);

/** The finite or special value `u` as the nearest JS double (round to nearest). */
export function toDouble(u: Unpacked): number {
  switch (u.cls) {
    case CLS_ZERO:
      return u.sign ? -0 : 0;
    case CLS_INF:
      return u.sign ? -Infinity : Infinity;
    case CLS_QNAN:
    case CLS_SNAN:
    case CLS_UNSUPPORTED:
      return NaN;
  }
  const e = u.exp;
  if (e > 1100) return u.sign ? -Infinity : Infinity;
  if (e < -1200) return u.sign ? -0 : 0;
  // hi × 2^32 is exact; adding lo rounds once, to nearest even. Results in the double
  // denormal range are rounded a second time by the scaling (helpers only).
  const m = u.hi * 4294967296 + u.lo;
  const v = scale2(m, e - 63);
  return u.sign ? -v : v;
}

/** v × 2^n without intermediate overflow/underflow for |n| up to a few thousand. */
function scale2(v: number, n: number): number {
  while (n > 1000) {
    v *= 2 ** 1000;
    n -= 1000;
  }
  while (n < -1000) {
    v *= 2 ** -1000;
    n += 1000;
  }
  return v * 2 ** n;
}

/** Sets `u` to the double `v` exactly (as an extended value). */
export function fromDouble(u: Unpacked, v: number): void {
  f64[0] = v;
  unpackF64(u, f64w[0], f64w[1]);
}
