// Seeded random x87/MMX/SSE/SSE2 cases for the differential test against
// the real CPU. Each case loads a complete FPU/SIMD state with FXRSTOR (x87
// stack, TOP, tags, control/status words, MXCSR, XMM registers), general
// registers, EFLAGS and a 128-byte memory window, runs one instruction (or a
// short sequence), and stores FXSAVE, the registers, EFLAGS and the window
// into an output record. The same static ELF runs natively and on our vCPU.

/** One generated case. */
export interface FpuCase {
  /** Assembly under test. */
  asm: string;
  /** The FXRSTOR image (512 bytes). */
  image: Uint8Array;
  /** Initial EAX ECX EDX EBX (ESP ignored) EBP ESI EDI. */
  regs: number[];
  /** Initial EFLAGS. */
  flags: number;
  /** Initial memory window (128 bytes). */
  window: Uint8Array;
  /** FSW bits not compared (architecturally undefined after this instruction). */
  swIgnore: number;
  /** Physical x87 registers compared to about 2^-50 relative (transcendental results). */
  approx: number;
  /** XMM dword lanes (bit 4·reg + lane) compared with tolerance 2^-11 relative (RCPPS/RSQRTPS). */
  approxXmm: number;
  /** Window byte ranges not compared ([start, end)). */
  windowIgnore: [number, number][];
  /** EFLAGS bits not compared. */
  flagsIgnore: number;
}

/** Bytes of one output record: FXSAVE (512), 8 registers and EFLAGS (36), the window (128), padding to 16. */
export const FPU_RECORD = 688;
/** Offset of the registers in a record. */
export const REC_REGS = 512;
/** Offset of the window in a record. */
export const REC_WIN = 548;

type Rng = () => number;

function pick<T>(rng: Rng, a: readonly T[]): T {
  return a[rng() % a.length];
}

function hex(v: number): string {
  return "0x" + (v >>> 0).toString(16);
}

const R32 = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"];

// ------------------------------------------------------------------ values

/** A random 80-bit value as [se, hi, lo]. */
export function randF80(rng: Rng): [number, number, number] {
  const sign = rng() & 1 ? 0x8000 : 0;
  const k = rng() % 40;
  const sig = (): [number, number] => [(rng() | 0x80000000) >>> 0, rng() >>> 0];
  if (k < 10) {
    const [h, l] = sig();
    return [sign | (0x3fff + (rng() % 140) - 70), h, l];
  }
  if (k < 13) {
    // Short significands: results often exact, ties and halfway cases.
    const [h] = sig();
    const keep = rng() % 33;
    return [sign | (0x3fff + (rng() % 40) - 20), keep === 0 ? 0x80000000 : ((h >>> (32 - keep)) << (32 - keep)) >>> 0 || 0x80000000, 0];
  }
  if (k < 15) {
    // Small integers and halves.
    const v = (rng() % 2000) - 1000 + (rng() % 4 === 0 ? 0.5 : 0);
    return fromNumber(v);
  }
  if (k < 17) {
    // An exact double.
    const b = new Float64Array(1);
    const w = new Int32Array(b.buffer);
    w[0] = rng();
    w[1] = (rng() & 0x800fffff) | ((0x3ff + (rng() % 200) - 100) << 20);
    return fromNumber(b[0]);
  }
  if (k < 18) {
    // An exact single.
    const b = new Float32Array(1);
    const w = new Int32Array(b.buffer);
    w[0] = (rng() & 0x807fffff) | ((0x7f + (rng() % 60) - 30) << 23);
    return fromNumber(b[0]);
  }
  if (k < 20) {
    const [h, l] = sig();
    return [sign | (rng() & 1 ? 1 + (rng() % 40) : 0x7ffe - (rng() % 40)), h, l];
  }
  if (k < 22) {
    // Denormal.
    return [sign, rng() & 1 ? rng() >>> (1 + (rng() % 31)) : 0, rng() >>> 0];
  }
  if (k < 24) return [sign, 0, 0];
  if (k < 26) return [sign | 0x7fff, 0x80000000, 0];
  if (k < 28) {
    // QNaN
    return [sign | 0x7fff, (0xc0000000 | (rng() & 0x3fffffff)) >>> 0, rng() % 3 === 0 ? 0 : rng() >>> 0];
  }
  if (k < 30) {
    // SNaN (non-zero fraction)
    return [sign | 0x7fff, (0x80000000 | (rng() & 0x3fffffff) | 1) >>> 0, rng() >>> 0];
  }
  if (k < 31) {
    // Values near the double/single ranges (overflow/underflow on store).
    const [h, l] = sig();
    return [sign | pick(rng, [0x3fff + 1023, 0x3fff + 1024, 0x3fff - 1022, 0x3fff - 1023, 0x3fff - 1074, 0x3fff - 1075, 0x3fff + 127, 0x3fff + 128, 0x3fff - 126, 0x3fff - 149, 0x3fff - 150, 0x3fff - 127]), h, l];
  }
  if (k < 32) {
    // Around the integer limits.
    const e = pick(rng, [14, 15, 30, 31, 62, 63, 64, 59, 60]);
    return [sign | (0x3fff + e), rng() & 1 ? 0x80000000 : (0xffffffff - (rng() & 3)) >>> 0, rng() & 1 ? 0 : rng() >>> 0];
  }
  if (k < 33) {
    // Unsupported encodings (unnormal, pseudo-NaN/infinity) and pseudo-denormals.
    const e = pick(rng, [0x7fff, 0x3fff, 1, 0]);
    if (e === 0) return [sign, (0x80000000 | rng()) >>> 0, rng() >>> 0];
    return [sign | e, rng() & 0x7fffffff, rng() >>> 0];
  }
  if (k < 36) {
    // Trig-friendly: moderate arguments, and multiples of pi/2 nearby.
    const v = (rng() % 100000) / 1000 - 50;
    return fromNumber(v === 0 ? 1 : v);
  }
  const [h, l] = sig();
  return [sign | (0x3fff + (rng() % 8) - 4), h, l];
}

/** The extended encoding of a JS number (exact). */
export function fromNumber(v: number): [number, number, number] {
  if (v === 0) return [Object.is(v, -0) ? 0x8000 : 0, 0, 0];
  const sign = v < 0 ? 0x8000 : 0;
  let a = Math.abs(v);
  let e = 0;
  while (a >= 2) {
    a /= 2;
    e++;
  }
  while (a < 1) {
    a *= 2;
    e--;
  }
  const m = a * 2 ** 63; // exact: at most 53 significant bits
  const hi = Math.floor(m / 2 ** 32);
  const lo = m - hi * 2 ** 32;
  return [sign | (0x3fff + e), hi >>> 0, lo >>> 0];
}

/** Random float32 bits with the interesting classes. */
export function randF32(rng: Rng): number {
  const s = rng() & 1 ? 0x80000000 : 0;
  const k = rng() % 16;
  if (k < 6) return (s | ((0x7f + (rng() % 60) - 30) << 23) | (rng() & 0x7fffff)) >>> 0;
  if (k < 7) return (s | ((rng() % 2 ? 1 + (rng() % 8) : 0xfe - (rng() % 8)) << 23) | (rng() & 0x7fffff)) >>> 0;
  if (k < 8) return (s | (rng() & 0x7fffff) >>> (rng() % 23)) >>> 0; // denormal
  if (k < 9) return s >>> 0;
  if (k < 10) return (s | 0x7f800000) >>> 0;
  if (k < 11) return (s | 0x7fc00000 | (rng() & 0x3fffff)) >>> 0;
  if (k < 12) return (s | 0x7f800000 | ((rng() & 0x3fffff) || 1)) >>> 0;
  if (k < 14) {
    const v = (rng() % 200) - 100 + (rng() % 4 === 0 ? 0.5 : 0);
    return new Uint32Array(new Float32Array([v]).buffer)[0];
  }
  return (s | ((0x7f + (rng() % 6) - 3) << 23) | ((rng() & 0x7fffff) >>> (rng() % 20) << 0)) >>> 0;
}

/** Random float64 bits [lo, hi]. */
export function randF64(rng: Rng): [number, number] {
  const s = rng() & 1 ? 0x80000000 : 0;
  const k = rng() % 16;
  const lo = rng() >>> 0;
  if (k < 6) return [lo, (s | ((0x3ff + (rng() % 200) - 100) << 20) | (rng() & 0xfffff)) >>> 0];
  if (k < 7) return [lo, (s | ((rng() % 2 ? 1 + (rng() % 8) : 0x7fe - (rng() % 8)) << 20) | (rng() & 0xfffff)) >>> 0];
  if (k < 8) return [rng() % 2 ? lo : 1, (s | ((rng() & 0xfffff) >>> (rng() % 21))) >>> 0];
  if (k < 9) return [0, s >>> 0];
  if (k < 10) return [0, (s | 0x7ff00000) >>> 0];
  if (k < 11) return [lo, (s | 0x7ff80000 | (rng() & 0x7ffff)) >>> 0];
  if (k < 12) return [lo | 1, (s | 0x7ff00000 | (rng() & 0x7ffff)) >>> 0];
  if (k < 14) {
    const v = (rng() % 200) - 100 + (rng() % 4 === 0 ? 0.5 : 0);
    const w = new Uint32Array(new Float64Array([v]).buffer);
    return [w[0], w[1]];
  }
  return [rng() % 2 ? lo & 0xffff0000 : lo, (s | ((0x3ff + (rng() % 6) - 3) << 20) | (rng() & 0xfffff)) >>> 0];
}

const INT_EDGES = [0, 1, -1, 2, 0x7f, 0x80, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff, 0x12345678, 100, -100];

function randInt32(rng: Rng): number {
  const k = rng() % 4;
  if (k === 0) return pick(rng, INT_EDGES) | 0;
  if (k === 1) return (rng() % 2001) - 1000;
  return rng() | 0;
}

// ------------------------------------------------------------------ state

function putF80(img: Uint8Array, off: number, v: [number, number, number]): void {
  const dv = new DataView(img.buffer, img.byteOffset);
  dv.setUint32(off, v[2], true);
  dv.setUint32(off + 4, v[1], true);
  dv.setUint16(off + 8, v[0], true);
}

interface StateOpts {
  /** Exceptions all masked (sequences, and anything that must not fault natively). */
  masked?: boolean;
  /** Registers ST0..ST(n-1) valid, the rest empty (else random). */
  valid?: number;
}

/** A random FXRSTOR image. */
function randomImage(rng: Rng, o: StateOpts): Uint8Array {
  const img = new Uint8Array(512);
  const dv = new DataView(img.buffer);
  const pc = pick(rng, [3, 3, 3, 2, 2, 0, 1]);
  const rc = rng() & 3;
  let masks = 0x3f;
  if (!o.masked && rng() % 3 === 0) masks = rng() & 0x3f;
  const cw = masks | 0x40 | (pc << 8) | (rc << 10);
  // Status flags only among masked exceptions (so nothing is pending), random condition codes.
  const top = rng() & 7;
  const sw = (rng() & masks & 0x3f) | (rng() & 0x4700) | (top << 11);
  // Valid registers: the first `n` stack slots.
  const n = o.valid ?? (rng() % 4 === 0 ? rng() % 9 : 8 - (rng() % 3));
  let ftw = 0;
  for (let i = 0; i < n; i++) ftw |= 1 << ((top + i) & 7);
  dv.setUint16(0, cw, true);
  dv.setUint16(2, sw, true);
  img[4] = ftw;
  const mxRc = rng() & 3;
  const mx = 0x1f80 | (rng() & 0x3f) | (mxRc << 13) | (rng() % 4 === 0 ? 0x40 : 0) | (rng() % 4 === 0 ? 0x8000 : 0);
  dv.setUint32(24, mx, true);
  dv.setUint32(28, 0xffff, true);
  for (let i = 0; i < 8; i++) putF80(img, 32 + i * 16, randF80(rng));
  for (let i = 0; i < 8; i++) {
    for (let k = 0; k < 4; k++) {
      const kind = rng() % 3;
      if (kind === 0) dv.setUint32(160 + i * 16 + k * 4, randF32(rng), true);
      else if (kind === 1 && (k & 1) === 0) {
        const [lo, hi] = randF64(rng);
        dv.setUint32(160 + i * 16 + k * 4, lo, true);
        dv.setUint32(160 + i * 16 + k * 4 + 4, hi, true);
        k++;
      } else dv.setUint32(160 + i * 16 + k * 4, randInt32(rng), true);
    }
  }
  return img;
}

function baseCase(rng: Rng, o: StateOpts = {}): FpuCase {
  const regs = Array.from({ length: 8 }, () => randInt32(rng));
  const window = new Uint8Array(128);
  for (let i = 0; i < 128; i++) window[i] = rng() & 0xff;
  const flags = (rng() & (1 | 4 | 0x10 | 0x40 | 0x80 | 0x800)) | 2;
  return { asm: "", image: randomImage(rng, o), regs, flags, window, swIgnore: 0, approx: 0, approxXmm: 0, windowIgnore: [], flagsIgnore: 0 };
}

function setMem(c: FpuCase, off: number, bytes: ArrayLike<number>): void {
  for (let i = 0; i < bytes.length; i++) c.window[off + i] = bytes[i];
}

function u32le(v: number): number[] {
  return [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
}

/** Puts a random memory operand of `kind` at window offset `off`; returns the nasm size keyword. */
function memOperand(rng: Rng, c: FpuCase, kind: "m16i" | "m32i" | "m64i" | "m32" | "m64" | "m80" | "bcd", off: number): string {
  switch (kind) {
    case "m16i": {
      const v = randInt32(rng);
      setMem(c, off, [v & 0xff, (v >>> 8) & 0xff]);
      return "word";
    }
    case "m32i":
      setMem(c, off, u32le(randInt32(rng)));
      return "dword";
    case "m64i": {
      const k = rng() % 4;
      const hi = k === 0 ? pick(rng, [0, -1, 0x7fffffff, 0x80000000 | 0, 0x00200000, 0x001fffff]) : k === 1 ? (rng() % 3) - 1 : rng() | 0;
      setMem(c, off, [...u32le(rng() >>> 0), ...u32le(hi)]);
      return "qword";
    }
    case "m32":
      setMem(c, off, u32le(randF32(rng)));
      return "dword";
    case "m64": {
      const [lo, hi] = randF64(rng);
      setMem(c, off, [...u32le(lo), ...u32le(hi)]);
      return "qword";
    }
    case "m80": {
      const v = randF80(rng);
      setMem(c, off, [...u32le(v[2]), ...u32le(v[1]), v[0] & 0xff, v[0] >> 8]);
      return "tword";
    }
    default: {
      // Packed BCD: mostly valid digits.
      const b: number[] = [];
      for (let i = 0; i < 9; i++) b.push(rng() % 8 === 0 ? rng() & 0xff : (rng() % 10) | ((rng() % 10) << 4));
      b.push(rng() & 1 ? 0x80 : 0);
      setMem(c, off, b);
      return "tword";
    }
  }
}

// ------------------------------------------------------------------ x87 cases

const ARITH = ["fadd", "fmul", "fsub", "fsubr", "fdiv", "fdivr"];
/** C0, C2, C3: undefined after arithmetic. */
const CC_UNDEF = 0x4500;
/** C1 and PE: not compared for transcendental results (rounding direction unknown). */
const TRANS_IGNORE = 0x0200 | 0x20 | 0x10;

function st(i: number): string {
  return `st${i}`;
}

function x87Case(rng: Rng): FpuCase {
  const kind = rng() % 24;
  const c = baseCase(rng);
  const off = 8 * (rng() % 12);
  const m = `[win+${off}]`;
  switch (kind) {
    case 0:
    case 1:
    case 2: {
      const op = pick(rng, ARITH);
      const i = rng() % 8;
      const f = rng() % 3;
      c.asm = f === 0 ? `${op} st0, ${st(i)}` : f === 1 ? `${op} ${st(i)}, st0` : `${op}p ${st(i)}, st0`;
      c.swIgnore = CC_UNDEF;
      return c;
    }
    case 3:
    case 4: {
      const op = pick(rng, ARITH);
      const k = pick(rng, ["m32", "m64", "m16i", "m32i"] as const);
      const sz = memOperand(rng, c, k, off);
      c.asm = `${k.endsWith("i") ? op.replace("f", "fi") : op} ${sz} ${m}`;
      c.swIgnore = CC_UNDEF;
      return c;
    }
    case 5: {
      const i = rng() % 8;
      c.asm = pick(rng, [`fcom ${st(i)}`, `fcomp ${st(i)}`, `fucom ${st(i)}`, `fucomp ${st(i)}`, "fcompp", "fucompp", "ftst", "fxam"]);
      return c;
    }
    case 6: {
      const k = pick(rng, ["m32", "m64", "m16i", "m32i"] as const);
      const sz = memOperand(rng, c, k, off);
      const p = rng() & 1 ? "p" : "";
      c.asm = k.endsWith("i") ? `ficom${p} ${sz} ${m}` : `fcom${p} ${sz} ${m}`;
      return c;
    }
    case 7: {
      const i = rng() % 8;
      c.asm = `${pick(rng, ["fcomi", "fucomi", "fcomip", "fucomip"])} st0, ${st(i)}`;
      return c;
    }
    case 8:
    case 9: {
      const k = pick(rng, ["m32", "m64", "m80", "m16i", "m32i", "m64i", "bcd"] as const);
      const sz = memOperand(rng, c, k, off);
      c.asm = k === "bcd" ? `fbld ${m}` : k.endsWith("i") ? `fild ${sz} ${m}` : `fld ${sz} ${m}`;
      if (rng() % 4 === 0) c.asm = `fld ${st(rng() % 8)}`;
      return c;
    }
    case 10:
    case 11: {
      const k = pick(rng, ["m32", "m64", "m80", "m16i", "m32i", "m64i", "bcd", "t16", "t32", "t64"] as const);
      const p = rng() & 1 ? "p" : "";
      switch (k) {
        case "m32":
          c.asm = `fst${p} dword ${m}`;
          break;
        case "m64":
          c.asm = `fst${p} qword ${m}`;
          break;
        case "m80":
          c.asm = `fstp tword ${m}`;
          break;
        case "m16i":
          c.asm = `fist${p} word ${m}`;
          break;
        case "m32i":
          c.asm = `fist${p} dword ${m}`;
          break;
        case "m64i":
          c.asm = `fistp qword ${m}`;
          break;
        case "bcd":
          c.asm = `fbstp ${m}`;
          break;
        default:
          c.asm = `fisttp ${k === "t16" ? "word" : k === "t32" ? "dword" : "qword"} ${m}`;
      }
      if (rng() % 5 === 0) c.asm = `fst${p} ${st(rng() % 8)}`;
      return c;
    }
    case 12:
      c.asm = pick(rng, ["fchs", "fabs", `fxch ${st(rng() % 8)}`, `ffree ${st(rng() % 8)}`, "fincstp", "fdecstp", "fnop", "fld1", "fldl2t", "fldl2e", "fldpi", "fldlg2", "fldln2", "fldz", "fnclex", "fninit", `db 0xdf, ${hex(0xc0 + (rng() % 8))} ; ffreep`]);
      return c;
    case 13:
    case 14:
      c.asm = pick(rng, ["fsqrt", "frndint", "fxtract", "fscale", "fprem", "fprem1"]);
      c.swIgnore = c.asm.startsWith("fprem") ? 0 : CC_UNDEF;
      if (c.asm === "fscale") scaleFriendly(rng, c);
      if (c.asm.startsWith("fprem")) remFriendly(rng, c);
      return c;
    case 15:
    case 16: {
      c.asm = pick(rng, ["fsin", "fcos", "fsincos", "fptan", "fpatan", "f2xm1", "fyl2x", "fyl2xp1"]);
      c.swIgnore = CC_UNDEF | TRANS_IGNORE;
      c.approx = 0xff;
      transFriendly(rng, c);
      return c;
    }
    case 17: {
      const cc = pick(rng, ["b", "e", "be", "u", "nb", "ne", "nbe", "nu"]);
      c.asm = `fcmov${cc} st0, ${st(rng() % 8)}`;
      return c;
    }
    case 18: {
      // Control and environment.
      const f = rng() % 12;
      if (f >= 8) {
        if (f === 8) {
          c.asm = "o16 fnstenv [win+16]";
          c.windowIgnore = [[16 + 8, 16 + 14]];
        } else if (f === 9) {
          c.asm = "o16 fnsave [win+8]";
          c.windowIgnore = [[8 + 8, 8 + 14]];
        } else if (f === 10) {
          c.asm = "o16 fnsave [win+8]\n  fld1\n  o16 frstor [win+8]";
          c.windowIgnore = [[8 + 8, 8 + 14]];
        } else {
          // FLDCW that unmasks flags already set: ES and B follow at once (FNSTSW does not wait).
          const cw = (rng() & 0x3f) | ((rng() & 0x1f) << 8);
          setMem(c, off, [cw & 0xff, cw >> 8]);
          c.asm = `fldcw ${m}\n  fnstsw ax\n  fnclex`;
        }
        return c;
      }
      if (f === 0) {
        // FLDCW of a valid control word (no newly unmasked pending flags: status has only masked flags, so keep masks).
        const cw = 0x3f | ((rng() & 0x1f) << 8) | (rng() & 0x40);
        setMem(c, off, [cw & 0xff, cw >> 8]);
        c.asm = `fldcw ${m}`;
      } else if (f === 1) c.asm = `fnstcw ${m}`;
      else if (f === 2) c.asm = `fnstsw ${m}`;
      else if (f === 3) c.asm = "fnstsw ax";
      else if (f === 4) {
        c.asm = `fnstenv [win+16]`;
        c.windowIgnore = [[16 + 16, 16 + 28]];
      } else if (f === 5) {
        c.asm = `fnsave [win+8]`;
        c.windowIgnore = [[8 + 16, 8 + 28]];
      } else if (f === 6) {
        c.asm = `fnstenv [win+16]\n  fninit\n  fldenv [win+16]`;
        c.windowIgnore = [[16 + 16, 16 + 28]];
      } else {
        c.asm = `fnsave [win+8]\n  fld1\n  frstor [win+8]`;
        c.windowIgnore = [[8 + 16, 8 + 28]];
      }
      return c;
    }
    case 19: {
      // FIST and friends on integer-boundary values.
      const p = rng() & 1 ? "p" : "";
      c.asm = pick(rng, [`fist${p} word ${m}`, `fist${p} dword ${m}`, `fistp qword ${m}`, `fisttp qword ${m}`, `fisttp dword ${m}`, `fbstp ${m}`, "frndint"]);
      return c;
    }
    case 20: {
      // Load/store round trips of every format.
      const k = pick(rng, ["m32", "m64", "m80", "m16i", "m32i", "m64i", "bcd"] as const);
      const sz = memOperand(rng, c, k, off);
      const ld = k === "bcd" ? `fbld ${m}` : k.endsWith("i") ? `fild ${sz} ${m}` : `fld ${sz} ${m}`;
      const stI = k === "bcd" ? `fbstp [win+96]` : k.endsWith("i") ? `fistp ${sz} [win+96]` : `fstp ${sz} [win+96]`;
      c.asm = `${ld}\n  ${stI}`;
      c.image = randomImage(rng, { masked: true, valid: rng() % 8 });
      return c;
    }
    default: {
      // Short computations, all exceptions masked.
      c.image = randomImage(rng, { masked: true, valid: 2 + (rng() % 3) });
      const seq: string[] = [];
      for (let i = 0, n = 2 + (rng() % 4); i < n; i++) {
        seq.push(
          pick(rng, [
            `${pick(rng, ARITH)} st0, st1`,
            `${pick(rng, ARITH)}p st1, st0`,
            "fld st1",
            "fxch st1",
            "fsqrt",
            "fchs",
            "fabs",
            "fld1",
            "fldpi",
            "frndint",
            "fucomi st0, st1",
            "fcom st1",
          ]),
        );
      }
      c.asm = seq.join("\n  ");
      c.swIgnore = CC_UNDEF;
      return c;
    }
  }
}

function getST(c: FpuCase, i: number): number {
  return 32 + i * 16;
}

/** Makes ST1 a moderate integer for FSCALE most of the time. */
function scaleFriendly(rng: Rng, c: FpuCase): void {
  if (rng() % 4 === 0) return;
  putF80(c.image, getST(c, 1), fromNumber((rng() % 200) - 100 + (rng() % 3 === 0 ? 0.75 : 0)));
}

/** Keeps FPREM exponent differences mixed between complete and partial reductions. */
function remFriendly(rng: Rng, c: FpuCase): void {
  if (rng() % 3 === 0) return;
  const a = randF80(rng);
  const b = randF80(rng);
  if ((a[0] & 0x7fff) > 0 && (a[0] & 0x7fff) < 0x7fff && (b[0] & 0x7fff) > 0 && (b[0] & 0x7fff) < 0x7fff) {
    const bexp = b[0] & 0x7fff;
    const d = pick(rng, [0, 1, 2, 5, 20, 62, 63, 64, 65, 90, 200, -1, -2]);
    const e = Math.min(0x7ffe, Math.max(1, bexp + d));
    a[0] = (a[0] & 0x8000) | e;
  }
  putF80(c.image, getST(c, 0), a);
  putF80(c.image, getST(c, 1), b);
}

/** Moves transcendental arguments into their domains most of the time. */
function transFriendly(rng: Rng, c: FpuCase): void {
  if (rng() % 5 === 0) return;
  const op = c.asm;
  let x: number;
  if (op === "f2xm1") x = (rng() % 20001) / 10000 - 1;
  else if (op === "fyl2xp1") x = ((rng() % 20001) / 10000 - 1) * 0.29;
  else if (op === "fyl2x") x = (rng() % 100000) / 100 + 0.001;
  else if (op === "fpatan") x = (rng() % 20001) / 100 - 100;
  else x = pick(rng, [(rng() % 200001) / 1000 - 100, (rng() % 2001) / 1000 - 1, (rng() % 1000000) * 1234.5678]);
  if (rng() % 3 === 0 && (op === "fsin" || op === "fcos" || op === "fsincos" || op === "fptan")) {
    // A random 64-bit significand near the argument keeps all bits of the input significant.
    const v = randF80(rng);
    const e = fromNumber(x)[0] & 0x7fff;
    v[0] = (rng() & 1 ? 0x8000 : 0) | (e === 0 ? 0x3fff : e);
    putF80(c.image, getST(c, 0), v);
  } else putF80(c.image, getST(c, 0), fromNumber(x));
  if (op === "fyl2x" || op === "fyl2xp1" || op === "fpatan") putF80(c.image, getST(c, 1), fromNumber((rng() % 2001) / 100 - 10));
  // The destination must be valid for the pushing forms: make ST0/ST1 valid and ST7 empty.
  const top = (c.image[3] >> 3) & 7;
  c.image[4] |= (1 << top) | (1 << ((top + 1) & 7));
  if (op === "fsincos" || op === "fptan") c.image[4] &= ~(1 << ((top + 7) & 7));
}

// ------------------------------------------------------------------ SSE/SSE2/MMX cases

const XMM = ["xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7"];
const MM = ["mm0", "mm1", "mm2", "mm3", "mm4", "mm5", "mm6", "mm7"];

/** An SSE case: MXCSR exceptions stay masked so nothing faults natively. */
function sseCase(rng: Rng): FpuCase {
  const c = baseCase(rng, { masked: true });
  const x = (): string => pick(rng, XMM);
  const off = 16 * (rng() % 6);
  const m128 = `[win+${off}]`;
  const mOff = 4 * (rng() % 24);
  const k = rng() % 21;
  // Memory contents: floats or doubles to match.
  const fillF32 = (): void => {
    for (let i = 0; i < 32; i++) setMem(c, i * 4, u32le(randF32(rng)));
  };
  const fillF64 = (): void => {
    for (let i = 0; i < 16; i++) {
      const [lo, hi] = randF64(rng);
      setMem(c, i * 8, [...u32le(lo), ...u32le(hi)]);
    }
  };
  const src = (len: number): string => (rng() % 3 === 0 ? (len === 16 ? m128 : `${len === 8 ? "qword" : "dword"} [win+${len === 8 ? 8 * (rng() % 12) : mOff}]`) : x());
  switch (k) {
    case 0:
    case 1:
    case 2:
    case 3: {
      const op = pick(rng, ["add", "sub", "mul", "div", "min", "max", "sqrt"]);
      const t = pick(rng, ["ps", "ss", "pd", "sd"]);
      if (t[1] === "s") fillF32();
      else fillF64();
      c.asm = `${op}${t} ${x()}, ${src(t[0] === "p" ? 16 : t === "ss" ? 4 : 8)}`;
      return c;
    }
    case 4: {
      const t = pick(rng, ["ps", "ss", "pd", "sd"]);
      if (t[1] === "s") fillF32();
      else fillF64();
      c.asm = `cmp${t} ${x()}, ${src(t[0] === "p" ? 16 : t === "ss" ? 4 : 8).replace(/^(q|d)word /, "")}, ${rng() % 8}`;
      return c;
    }
    case 5: {
      const t = pick(rng, ["ucomiss", "comiss", "ucomisd", "comisd"]);
      if (t.endsWith("ss")) fillF32();
      else fillF64();
      c.asm = `${t} ${x()}, ${src(t.endsWith("ss") ? 4 : 8)}`;
      return c;
    }
    case 6:
    case 7: {
      const f = rng() % 14;
      fillF64();
      if (rng() & 1) fillF32();
      const r = pick(rng, R32.filter((q) => q !== "esp"));
      switch (f) {
        case 0:
          c.asm = `cvtsi2ss ${x()}, ${rng() & 1 ? r : `dword [win+${mOff}]`}`;
          break;
        case 1:
          c.asm = `cvtsi2sd ${x()}, ${rng() & 1 ? r : `dword [win+${mOff}]`}`;
          break;
        case 2:
          c.asm = `cvtss2si ${r}, ${src(4)}`;
          break;
        case 3:
          c.asm = `cvttss2si ${r}, ${src(4)}`;
          break;
        case 4:
          c.asm = `cvtsd2si ${r}, ${src(8)}`;
          break;
        case 5:
          c.asm = `cvttsd2si ${r}, ${src(8)}`;
          break;
        case 6:
          c.asm = `cvtps2pd ${x()}, ${src(8)}`;
          break;
        case 7:
          c.asm = `cvtpd2ps ${x()}, ${src(16)}`;
          break;
        case 8:
          c.asm = `cvtss2sd ${x()}, ${src(4)}`;
          break;
        case 9:
          c.asm = `cvtsd2ss ${x()}, ${src(8)}`;
          break;
        case 10:
          c.asm = `${pick(rng, ["cvtdq2ps", "cvtps2dq", "cvttps2dq"])} ${x()}, ${src(16)}`;
          break;
        case 11:
          c.asm = `${pick(rng, ["cvtpd2dq", "cvttpd2dq"])} ${x()}, ${src(16)}`;
          break;
        case 12:
          c.asm = `cvtdq2pd ${x()}, ${src(8)}`;
          break;
        default:
          c.asm = `${pick(rng, ["cvtpi2ps", "cvtpi2pd"])} ${x()}, ${rng() & 1 ? pick(rng, MM) : `qword [win+${8 * (rng() % 12)}]`}`;
      }
      return c;
    }
    case 8: {
      c.asm = `${pick(rng, ["andps", "andnps", "orps", "xorps", "andpd", "andnpd", "orpd", "xorpd", "unpcklps", "unpckhps", "unpcklpd", "unpckhpd"])} ${x()}, ${src(16)}`;
      if (rng() % 3 === 0) c.asm = `${pick(rng, ["shufps", "shufpd"])} ${x()}, ${src(16)}, ${rng() & 0xff}`;
      return c;
    }
    case 9: {
      const r = pick(rng, R32.filter((q) => q !== "esp"));
      const f = rng() % 12;
      const q = 8 * (rng() % 12);
      c.asm = [
        `movaps ${x()}, ${src(16)}`,
        `movups ${x()}, [win+${1 + (rng() % 60)}]`,
        `movss ${x()}, ${src(4)}`,
        `movsd ${x()}, ${src(8)}`,
        `movss dword [win+${mOff}], ${x()}`,
        `movsd qword [win+${q}], ${x()}`,
        `movlps ${x()}, [win+${q}]`,
        `movhps ${x()}, [win+${q}]`,
        `${pick(rng, ["movlhps", "movhlps"])} ${x()}, ${x()}`,
        `${pick(rng, ["movlpd", "movhpd"])} [win+${q}], ${x()}`,
        `${pick(rng, ["movmskps", "movmskpd", "pmovmskb"])} ${r}, ${x()}`,
        `${pick(rng, ["movups", "movdqu"])} [win+${1 + (rng() % 60)}], ${x()}`,
      ][f];
      return c;
    }
    case 11: {
      const r = pick(rng, R32.filter((q) => q !== "esp"));
      const q = 8 * (rng() % 12);
      fillF32();
      const mx = 0x1f80 | (rng() & 0x3f) | ((rng() & 3) << 13) | (rng() & 1 ? 0x40 : 0) | (rng() & 1 ? 0x8000 : 0);
      setMem(c, 120, u32le(mx));
      c.asm = pick(rng, [
        `ldmxcsr [win+120]\n  stmxcsr [win+${mOff}]`,
        `stmxcsr [win+${mOff}]`,
        `movnti [win+${mOff}], ${r}`,
        "sfence\n  lfence\n  mfence",
        `clflush [win+${mOff}]`,
        `${pick(rng, ["prefetchnta", "prefetcht0", "prefetcht1", "prefetcht2"])} [win+${mOff}]`,
        `${pick(rng, ["cvtps2pi", "cvttps2pi"])} ${pick(rng, MM)}, ${src(8)}`,
        `${pick(rng, ["cvtpd2pi", "cvttpd2pi"])} ${pick(rng, MM)}, ${src(16)}`,
        `${pick(rng, ["movntps", "movntpd", "movntdq"])} [win+${16 * (rng() % 7)}], ${x()}`,
        `movntq [win+${q}], ${pick(rng, MM)}`,
        `${pick(rng, ["movapd", "movupd", "movdqa"])} ${x()}, ${src(16)}`,
        `${pick(rng, ["movapd", "movdqa", "movaps"])} [win+${16 * (rng() % 7)}], ${x()}`,
        `ldmxcsr [win+120]\n  ${pick(rng, ["addps", "mulpd", "divss", "subsd", "sqrtps", "cvtpd2ps", "cvtsd2ss", "cvtps2dq", "cvtsi2ss"])} ${x()}, ${x()}`,
      ]);
      if (c.asm.includes("cvtsi2ss")) c.asm = c.asm.replace(/cvtsi2ss (xmm\d), xmm\d/, `cvtsi2ss $1, ${r}`);
      if (c.asm.includes("cvtpd2pi") || c.asm.includes("cvttpd2pi")) fillF64();
      return c;
    }
    case 10: {
      fillF32();
      c.asm = `${pick(rng, ["rcpps", "rsqrtps", "rcpss", "rsqrtss"])} ${x()}, ${src(16)}`;
      if (c.asm.includes("ss") && c.asm.includes("[")) c.asm = c.asm.replace(/\[win\+\d+\]/, `dword [win+${mOff}]`);
      const reg = XMM.indexOf(c.asm.split(" ")[1].replace(",", ""));
      c.approxXmm = 0xf << (4 * reg);
      return c;
    }
    case 12:
    case 13:
    case 14:
    case 15:
    case 16:
    case 17:
    case 18:
    case 19:
    case 20:
    default: {
      // Integer SIMD on XMM.
      const op = pick(rng, INT_OPS);
      if (op.startsWith("ps") && op.endsWith("i")) {
        const name = op.slice(0, -1);
        const maxCount = name.endsWith("dq") ? 20 : name.endsWith("q") ? 70 : name.endsWith("d") ? 36 : 18;
        c.asm = `${name} ${x()}, ${rng() % maxCount}`;
      } else if (op === "pshufd" || op === "pshufhw" || op === "pshuflw") c.asm = `${op} ${x()}, ${src(16)}, ${rng() & 0xff}`;
      else if (op === "pextrw") c.asm = `pextrw ${pick(rng, ["eax", "ecx", "edx", "ebx", "esi", "edi"])}, ${x()}, ${rng() & 0xff}`;
      else if (op === "pinsrw") c.asm = `pinsrw ${x()}, ${rng() & 1 ? "eax" : `word [win+${2 * (rng() % 60)}]`}, ${rng() & 0xff}`;
      else if (op === "movd") c.asm = rng() & 1 ? `movd ${x()}, ${rng() & 1 ? "ecx" : `[win+${mOff}]`}` : `movd ${rng() & 1 ? "ecx" : `[win+${mOff}]`}, ${x()}`;
      else if (op === "movq") c.asm = rng() & 1 ? `movq ${x()}, ${src(8)}` : `movq qword [win+${8 * (rng() % 12)}], ${x()}`;
      else if (op === "maskmovdqu") {
        c.asm = `mov edi, win+${16 * (rng() % 7)}\n  maskmovdqu ${x()}, ${x()}`;
      } else if (/^ps(ll|rl|ra)[wdq]$/.test(op) && rng() % 2 === 0) {
        // Count from a register or memory: mostly small counts.
        const cnt = rng() % 4 === 0 ? rng() >>> 0 : rng() % 70;
        setMem(c, off, [...u32le(cnt), ...u32le(rng() % 8 === 0 ? 1 : 0)]);
        c.asm = `${op} ${x()}, ${m128}`;
      } else c.asm = `${op} ${x()}, ${src(16)}`;
      return c;
    }
  }
}

const INT_OPS = [
  "paddb", "paddw", "paddd", "paddq", "psubb", "psubw", "psubd", "psubq",
  "paddsb", "paddsw", "paddusb", "paddusw", "psubsb", "psubsw", "psubusb", "psubusw",
  "pmullw", "pmulhw", "pmulhuw", "pmuludq", "pmaddwd", "pavgb", "pavgw", "psadbw",
  "pminub", "pmaxub", "pminsw", "pmaxsw", "pcmpeqb", "pcmpeqw", "pcmpeqd", "pcmpgtb", "pcmpgtw", "pcmpgtd",
  "pand", "pandn", "por", "pxor", "packsswb", "packssdw", "packuswb",
  "punpcklbw", "punpcklwd", "punpckldq", "punpcklqdq", "punpckhbw", "punpckhwd", "punpckhdq", "punpckhqdq",
  "psllw", "pslld", "psllq", "psrlw", "psrld", "psrlq", "psraw", "psrad",
  "psllwi", "pslldi", "psllqi", "psrlwi", "psrldi", "psrlqi", "psrawi", "psradi", "pslldqi", "psrldqi",
  "pshufd", "pshufhw", "pshuflw", "pextrw", "pinsrw", "movd", "movq", "movdqa", "movdqu", "maskmovdqu",
];

/** MMX cases (the x87 register file and tag word change with them). */
function mmxCase(rng: Rng): FpuCase {
  const c = baseCase(rng, { masked: true });
  const mm = (): string => pick(rng, MM);
  const q = 8 * (rng() % 14);
  const src = (): string => (rng() % 3 === 0 ? `[win+${q}]` : mm());
  const k = rng() % 10;
  const mmxOps = INT_OPS.filter((o) => !["punpcklqdq", "punpckhqdq", "pshufd", "pshufhw", "pshuflw", "pslldqi", "psrldqi", "movdqa", "movdqu", "maskmovdqu", "movd", "movq", "pextrw", "pinsrw"].includes(o));
  if (k === 0) c.asm = "emms";
  else if (k === 1) c.asm = rng() & 1 ? `movd ${mm()}, ${rng() & 1 ? "ecx" : `[win+${q}]`}` : `movd ${rng() & 1 ? "ecx" : `[win+${q}]`}, ${mm()}`;
  else if (k === 2) c.asm = rng() & 1 ? `movq ${mm()}, ${src()}` : `movq [win+${q}], ${mm()}`;
  else if (k === 3) c.asm = `pshufw ${mm()}, ${src()}, ${rng() & 0xff}`;
  else if (k === 4) c.asm = `${pick(rng, ["pextrw eax", "pmovmskb edx"])}, ${mm()}${c.asm.length ? "" : ""}` + (rng() & 1 ? "" : "");
  else if (k === 5) c.asm = `mov edi, win+${8 * (rng() % 14)}\n  maskmovq ${mm()}, ${mm()}`;
  else if (k === 6) c.asm = `${pick(rng, ["movq2dq", "movdq2q"])} ${"X"}`;
  else {
    const op = pick(rng, mmxOps);
    if (op.endsWith("i")) c.asm = `${op.slice(0, -1)} ${mm()}, ${rng() % 70}`;
    else c.asm = `${op} ${mm()}, ${src()}`;
  }
  if (c.asm.startsWith("pextrw eax")) c.asm += `, ${rng() & 0xff}`;
  if (c.asm.includes("X")) c.asm = rng() & 1 ? `movq2dq ${pick(rng, XMM)}, ${mm()}` : `movdq2q ${mm()}, ${pick(rng, XMM)}`;
  if (rng() % 4 === 0) c.asm += "\n  emms";
  return c;
}

/** Generates `count` cases: x87, SSE/SSE2 and MMX mixed. */
export function generateFpuCases(rng: Rng, count: number, mix: "all" | "x87" | "sse" | "mmx" = "all"): FpuCase[] {
  const out: FpuCase[] = [];
  for (let i = 0; i < count; i++) {
    const r = rng() % 10;
    const which = mix !== "all" ? mix : r < 5 ? "x87" : r < 8 ? "sse" : "mmx";
    out.push(which === "x87" ? x87Case(rng) : which === "sse" ? sseCase(rng) : mmxCase(rng));
  }
  return out;
}

/** The nasm source of a batch. */
export function assembleFpu(cases: FpuCase[]): string {
  const lines: string[] = [];
  lines.push("bits 32", "global _start", "section .bss", "alignb 16", "win: resb 128", "alignb 16", `out: resb ${cases.length * FPU_RECORD}`, "stack: resb 4096", "stacktop:");
  lines.push("section .data", "align 16", "imgs:");
  for (const c of cases) {
    const words: string[] = [];
    for (let i = 0; i < 512; i += 4) words.push(hex(c.image[i] | (c.image[i + 1] << 8) | (c.image[i + 2] << 16) | (c.image[i + 3] << 24)));
    lines.push(`  dd ${words.join(",")}`);
  }
  lines.push("inits:");
  for (const c of cases) {
    const words: string[] = [];
    for (let i = 0; i < 128; i += 4) words.push(hex(c.window[i] | (c.window[i + 1] << 8) | (c.window[i + 2] << 16) | (c.window[i + 3] << 24)));
    lines.push(`  dd ${words.join(",")}`);
  }
  lines.push("section .text", "_start:");
  cases.forEach((c, i) => {
    const rec = `out+${i * FPU_RECORD}`;
    lines.push(`case${i}:`);
    lines.push("  cld", `  mov esi, inits+${i * 128}`, "  mov edi, win", "  mov ecx, 32", "  rep movsd");
    lines.push(`  fxrstor [imgs+${i * 512}]`);
    lines.push("  mov esp, stacktop-64", `  push dword ${hex(c.flags)}`, "  popfd");
    for (const r of [0, 1, 2, 3, 5, 6, 7]) lines.push(`  mov ${R32[r]}, ${hex(c.regs[r])}`);
    lines.push(`  ${c.asm}`);
    lines.push(`  fxsave [${rec}]`);
    lines.push("  pushfd", `  pop dword [${rec}+${REC_REGS + 32}]`);
    for (let r = 0; r < 8; r++) lines.push(`  mov [${rec}+${REC_REGS + r * 4}], ${R32[r]}`);
    lines.push("  cld", "  mov esi, win", `  mov edi, ${rec}+${REC_WIN}`, "  mov ecx, 32", "  rep movsd");
  });
  lines.push("  mov eax, 4", "  mov ebx, 1", "  mov ecx, out", `  mov edx, ${cases.length * FPU_RECORD}`, "  int 0x80", "  mov eax, 1", "  xor ebx, ebx", "  int 0x80");
  return lines.join("\n") + "\n";
}
