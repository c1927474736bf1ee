// Numerical kernels of the x87 transcendental instructions (FSIN, FCOS,
// FSINCOS, FPTAN, F2XM1, FYL2X, FYL2XP1). The argument handling is exact:
// trigonometric arguments are reduced modulo the 66-bit approximation of pi
// the x87 itself uses (Intel SDM Vol. 1 §8.3.10), by exact multiword long
// division, so large arguments land where the hardware's do; logarithms split
// the exponent off exactly. The final function value is evaluated in double
// precision (Math.sin, Math.log1p...), so results agree with the hardware to
// about 2^-52 relative, not to the last of the 64 bits (see the README).
import { CLS_FINITE, FMT_F64, SoftFloat, Unpacked, toDouble } from "./x87-float80.js";

/** pi/2 as the x87 holds it: 0xC90FDAA22168C234C × 2^-67 (68-bit integer, 66 significant bits). */
const P2 = 0x0000000c; // bits 67..64
const P1 = 0x90fdaa22; // bits 63..32
const P0 = 0x168c234c; // bits 31..0

/**
 * Result of {@link reduceTrig}: |a| = quadrant·pi/2 + r with r in [0, pi/2).
 * `r` holds r, or pi/2 - r when `complement` (r > pi/4), so that the double
 * evaluated is never close to a zero of the function being approximated.
 */
export const trig = { r: 0, quadrant: 0, complement: false };

const tmp = new Unpacked();

/**
 * Reduces finite |a| (exponent below 63) modulo pi/2: |a| = k·pi/2 + r.
 * Sets trig.r (a double) and trig.quadrant (k mod 4).
 */
export function reduceTrig(sf: SoftFloat, a: Unpacked): void {
  const e = a.exp;
  if (e < -4) {
    // |a| < 1/16 < pi/2: no reduction.
    tmp.copy(a);
    tmp.sign = 0;
    trig.r = toDouble(tmp);
    trig.quadrant = 0;
    trig.complement = false;
    return;
  }
  // Dividend X·2^(e+4) bit by bit (64 + e + 4 bits, most significant first); remainder R < 2^68.
  const X0 = a.hi >>> 0;
  const X1 = a.lo >>> 0;
  const nbits = 64 + e + 4;
  let r2 = 0;
  let r1 = 0;
  let r0 = 0;
  let q = 0;
  for (let i = 0; i < nbits; i++) {
    const bitIndex = 63 - i; // bits of X, then zeros
    const bit = bitIndex >= 32 ? (X0 >>> (bitIndex - 32)) & 1 : bitIndex >= 0 ? (X1 >>> bitIndex) & 1 : 0;
    r2 = ((r2 << 1) | (r1 >>> 31)) >>> 0;
    r1 = ((r1 << 1) | (r0 >>> 31)) >>> 0;
    r0 = ((r0 << 1) | bit) >>> 0;
    const ge = r2 > P2 || (r2 === P2 && (r1 > P1 || (r1 === P1 && r0 >= P0)));
    if (ge) {
      let d0 = r0 - P0;
      let b = 0;
      if (d0 < 0) {
        d0 += 0x100000000;
        b = 1;
      }
      let d1 = r1 - P1 - b;
      b = 0;
      if (d1 < 0) {
        d1 += 0x100000000;
        b = 1;
      }
      r2 = (r2 - P2 - b) >>> 0;
      r1 = d1;
      r0 = d0;
    }
    q = ((q << 1) | (ge ? 1 : 0)) & 3;
  }
  // r = R × 2^-67, rounded once to double through the soft-float. Past pi/4, use pi/2 - r (exact).
  trig.quadrant = q;
  trig.complement = false;
  {
    const t2 = ((r2 << 1) | (r1 >>> 31)) >>> 0;
    const t1 = ((r1 << 1) | (r0 >>> 31)) >>> 0;
    const t0 = (r0 << 1) >>> 0;
    if (t2 > P2 || (t2 === P2 && (t1 > P1 || (t1 === P1 && t0 > P0)))) {
      let d0 = P0 - r0;
      let b = 0;
      if (d0 < 0) {
        d0 += 0x100000000;
        b = 1;
      }
      let d1 = P1 - r1 - b;
      b = 0;
      if (d1 < 0) {
        d1 += 0x100000000;
        b = 1;
      }
      r2 = (P2 - r2 - b) >>> 0;
      r1 = d1;
      r0 = d0;
      trig.complement = true;
    }
  }
  if ((r2 | r1 | r0) === 0) {
    trig.r = 0;
    return;
  }
  let e2 = -67 + 95; // exponent of bit 95 when R sits in w0:w1:w2 = r2:r1:r0
  let w0 = r2;
  let w1 = r1;
  let w2 = r0;
  while (w0 === 0) {
    w0 = w1;
    w1 = w2;
    w2 = 0;
    e2 -= 32;
  }
  const s = Math.clz32(w0);
  if (s > 0) {
    w0 = ((w0 << s) | (w1 >>> (32 - s))) >>> 0;
    w1 = ((w1 << s) | (w2 >>> (32 - s))) >>> 0;
    w2 = (w2 << s) >>> 0;
    e2 -= s;
  }
  const saveRc = sf.rc;
  const saveFlags = sf.flags;
  sf.rc = 0;
  sf.ws = 0;
  sf.we = e2;
  sf.w0 = w0;
  sf.w1 = w1;
  sf.w2 = w2;
  sf.roundPack(FMT_F64);
  tmp.copy(sf.r);
  sf.rc = saveRc;
  sf.flags = saveFlags;
  trig.r = toDouble(tmp);
}

/** log2 of finite positive `a`, computed as exponent + log1p(m - 1)/ln 2 with m - 1 formed exactly. */
export function log2Of(a: Unpacked): number {
  let e = a.exp;
  // m = sig / 2^63 in [1, 2); use m/2 for m > sqrt(2) so that t = m - 1 is small near 1.
  const hi = a.hi >>> 0;
  const lo = a.lo >>> 0;
  let t: number;
  if (hi > 0xb504f333) {
    // m/2 - 1 = (sig - 2^64) / 2^64 (negative)
    t = ((hi - 4294967296) * 4294967296 + lo) / 2 ** 64;
    e += 1;
  } else {
    t = ((hi - 0x80000000) * 4294967296 + lo) / 2 ** 63;
  }
  return e + Math.log1p(t) / Math.LN2;
}

/** True when `a` is finite with |a| < 2^e. */
export function below(a: Unpacked, e: number): boolean {
  return a.cls === CLS_FINITE && a.exp < e;
}
