// MMX, SSE and SSE2 (Intel SDM Vol. 1 ch. 9-11, Vol. 2), FXSAVE/FXRSTOR
// (Vol. 1 §10.5) and MXCSR, as one CpuExtension on the 0F opcode map. MMX
// registers alias the x87 significands (MMn is physical register n); every
// MMX instruction but EMMS puts the x87 into MMX state (TOP = 0, all tags
// valid). Floating-point lanes go through the exact soft-float with MXCSR's
// rounding mode, DAZ and FTZ; NaNs propagate from the first source operand;
// unmasked SIMD exceptions raise #XM (CR4.OSXMMEXCPT = 1) or #UD and leave the
// destination unchanged.
import { StateError, type Snapshottable, type StateValue } from "@typevisor/hv-core";
import * as C from "./constants.js";
import type { Cpu } from "./cpu.js";
import type { CpuExtension } from "./extensions.js";
import type { X87 } from "./x87.js";
import { compareOrdered } from "./x87.js";
import {
  CLS_FINITE,
  CLS_INF,
  CLS_QNAN,
  CLS_SNAN,
  CLS_ZERO,
  FE_DENORMAL,
  FE_INEXACT,
  FE_INVALID,
  FE_OVERFLOW,
  FE_UNDERFLOW,
  FE_ZERO,
  FMT_F32,
  FMT_F64,
  SoftFloat,
  Unpacked,
  fromInt32,
  packF32,
  packF64,
  packOut,
  unpackF32,
  unpackF64,
  type Format,
} from "./x87-float80.js";

/** CPUID.01H:EDX bits of this unit: CLFSH (19), MMX (23), FXSR (24), SSE (25), SSE2 (26). */
export const CPUID_SIMD_EDX = (1 << 19) | (1 << 23) | (1 << 24) | (1 << 25) | (1 << 26);

/** MXCSR bits that may be set (with DAZ): everything below bit 16. */
export const MXCSR_MASK = 0xffff;

const MX_DAZ = 0x40;
const MX_FZ = 0x8000;

// Operation codes of the floating-point lane operations.
const F_ADD = 0;
const F_MUL = 1;
const F_SUB = 4;
const F_DIV = 6;
const F_MIN = 8;
const F_MAX = 9;
const F_SQRT = 10;

/**
 * The MMX/SSE/SSE2 unit. It needs the x87 unit (MMX aliasing, FXSAVE).
 */
export class Simd implements CpuExtension {
  /** Unit name. */
  readonly name = "sse2";
  /** XMM0-XMM7, four dwords each. */
  readonly xmm = new Int32Array(32);
  /** MXCSR. */
  mxcsr = 0x1f80;
  /** Snapshot adapter. */
  readonly state: Snapshottable;

  private readonly sf = new SoftFloat();
  private readonly ua = new Unpacked();
  private readonly ub = new Unpacked();
  // Scratch vectors: destination and source, 16 bytes each, with typed views.
  private readonly dBuf = new ArrayBuffer(16);
  private readonly sBuf = new ArrayBuffer(16);
  private readonly d8 = new Uint8Array(this.dBuf);
  private readonly d16 = new Uint16Array(this.dBuf);
  private readonly d32 = new Int32Array(this.dBuf);
  private readonly s8 = new Uint8Array(this.sBuf);
  private readonly s16 = new Uint16Array(this.sBuf);
  private readonly s32 = new Int32Array(this.sBuf);
  private readonly t32 = new Int32Array(4);

  /**
   * @param x87 - the x87 unit whose registers MMX aliases
   * @param index - the vCPU index (names the snapshot entry)
   */
  constructor(
    readonly x87: X87,
    index = 0,
  ) {
    this.state = new SimdSnapshot(this, `cpu${index}.sse`);
  }

  /** RESET: XMM registers zero, MXCSR 1F80h (INIT keeps them, but we do not model INIT separately). */
  reset(): void {
    this.xmm.fill(0);
    this.mxcsr = 0x1f80;
  }

  /** Adds CLFSH, MMX, FXSR, SSE, SSE2 to CPUID leaf 1 EDX, and the CLFLUSH line size (8 × 8 bytes) to EBX. */
  cpuid(leaf: number, _subleaf: number, out: Int32Array): void {
    if (leaf === 1) {
      out[3] |= CPUID_SIMD_EDX;
      out[1] = (out[1] & ~0xff00) | (8 << 8);
    }
  }

  // ------------------------------------------------------------------ checks

  /** SSE/SSE2 availability: #UD with CR0.EM or without CR4.OSFXSR, #NM with CR0.TS. */
  private checkSse(cpu: Cpu): void {
    if (cpu.cr0 & C.CR0_EM || (cpu.cr4 & C.CR4_OSFXSR) === 0) cpu.raiseUd();
    if (cpu.cr0 & C.CR0_TS) cpu.raise(C.EXC_NM);
  }

  /** MMX availability: #UD with CR0.EM, #NM with CR0.TS, #MF for a pending x87 exception. */
  private checkMmx(cpu: Cpu): void {
    if (cpu.cr0 & C.CR0_EM) cpu.raiseUd();
    if (cpu.cr0 & C.CR0_TS) cpu.raise(C.EXC_NM);
    this.x87.checkPending(cpu);
  }

  /** Enters MMX state: TOP = 0 and every tag valid. */
  private mmxEnter(): void {
    this.x87.top = 0;
    this.x87.valid = 0xff;
  }

  // ------------------------------------------------------------------ operand access

  /** Linear address of the memory operand for `len` bytes; `align` demands 16-byte alignment (#GP). */
  private addr(cpu: Cpu, len: number, write: boolean, align: boolean): number {
    const off = cpu.eaOff;
    if (align && (off & 15) !== 0) cpu.raiseGp(0);
    const la = cpu.lin(cpu.eaSeg, off, len, write);
    if (align && (la & 15) !== 0) cpu.raiseGp(0);
    if (write) cpu.mmu.probeWrite(la, len);
    else cpu.mmu.probeRead(la, len);
    return la;
  }

  /** Reads `len` (4, 8, 16) bytes of the memory operand into s32 (rest zero). */
  private readMem(cpu: Cpu, len: number, align: boolean): void {
    const la = this.addr(cpu, len, false, align);
    const s = this.s32;
    s[0] = s[1] = s[2] = s[3] = 0;
    for (let i = 0; i < len >> 2; i++) s[i] = cpu.mmu.read32((la + 4 * i) | 0);
  }

  /** Writes `len` bytes from `src` (Int32Array) to the memory operand. */
  private writeMem(cpu: Cpu, len: number, align: boolean, src: Int32Array, from = 0): void {
    const la = this.addr(cpu, len, true, align);
    for (let i = 0; i < len >> 2; i++) cpu.mmu.write32((la + 4 * i) | 0, src[from + i]);
  }

  private loadXmm(v: Int32Array, r: number): void {
    const x = this.xmm;
    v[0] = x[r * 4];
    v[1] = x[r * 4 + 1];
    v[2] = x[r * 4 + 2];
    v[3] = x[r * 4 + 3];
  }

  private storeXmm(r: number, v: Int32Array): void {
    const x = this.xmm;
    x[r * 4] = v[0];
    x[r * 4 + 1] = v[1];
    x[r * 4 + 2] = v[2];
    x[r * 4 + 3] = v[3];
  }

  private loadMm(v: Int32Array, r: number): void {
    v[0] = this.x87.lo[r];
    v[1] = this.x87.hi[r];
    v[2] = v[3] = 0;
  }

  /** Writes MMn (the exponent field becomes all ones, Intel SDM Vol. 1 §9.5). */
  private storeMm(r: number, lo: number, hi: number): void {
    this.x87.lo[r] = lo;
    this.x87.hi[r] = hi;
    this.x87.se[r] = 0xffff;
  }

  /** Source operand of an XMM instruction into s32 (`len` bytes from memory). */
  private srcXmm(cpu: Cpu, len: number, align: boolean): void {
    if (cpu.mod === 3) this.loadXmm(this.s32, cpu.rm);
    else this.readMem(cpu, len, align);
  }

  /** Source operand of an MMX instruction into s32. */
  private srcMm(cpu: Cpu): void {
    if (cpu.mod === 3) this.loadMm(this.s32, cpu.rm);
    else this.readMem(cpu, 8, false);
  }

  // ------------------------------------------------------------------ dispatch

  /** Executes 0F-map opcode `op`; false when it is not an MMX/SSE/SSE2 opcode. */
  op0F(cpu: Cpu, op: number): boolean {
    const p66 = cpu.o32 !== cpu.code32;
    // Mandatory prefix: F3/F2 (the last one) beat 66.
    const pfx = cpu.rep === 1 ? 3 : cpu.rep === 2 ? 2 : p66 ? 1 : 0;
    if (op === 0xae) return this.group15(cpu);
    if (op === 0xc3) {
      // MOVNTI m32, r32
      if (pfx !== 0) return false;
      cpu.decodeModrm();
      if (cpu.mod === 3) cpu.raiseUd();
      cpu.write32(cpu.eaSeg, cpu.eaOff, cpu.regs[cpu.reg]);
      return true;
    }
    if (op >= 0x10 && op <= 0x17) return this.movGroup(cpu, op, pfx);
    if (op >= 0x28 && op <= 0x2f) return this.group28(cpu, op, pfx);
    if (op >= 0x50 && op <= 0x5f) return this.fpGroup(cpu, op, pfx);
    if (op === 0xc2 || op === 0xc6) return this.fpGroup(cpu, op, pfx);
    if (op === 0x77) {
      if (pfx !== 0) return false;
      this.checkMmx(cpu);
      this.x87.valid = 0; // EMMS: every tag empty (and TOP = 0 like every MMX instruction)
      this.x87.top = 0;
      return true;
    }
    if (op === 0xe6) {
      if (pfx === 0) return false;
      cpu.decodeModrm();
      this.checkSse(cpu);
      this.cvtE6(cpu, pfx);
      return true;
    }
    if ((op >= 0x60 && op <= 0x7f) || (op >= 0xc4 && op <= 0xc5) || (op >= 0xd1 && op <= 0xff)) return this.intGroup(cpu, op, pfx);
    return false;
  }

  /** 0F AE: FXSAVE, FXRSTOR, LDMXCSR, STMXCSR, LFENCE, MFENCE, SFENCE, CLFLUSH. */
  private group15(cpu: Cpu): boolean {
    if (cpu.rep !== 0) return false;
    cpu.decodeModrm();
    const reg = cpu.reg;
    if (cpu.mod === 3) {
      // LFENCE, MFENCE, SFENCE: ordering is already sequential here.
      if (reg >= 5) return true;
      return false;
    }
    switch (reg) {
      case 0:
      case 1:
        if (cpu.cr0 & (C.CR0_EM | C.CR0_TS)) cpu.raise(C.EXC_NM);
        if (reg === 0) this.fxsave(cpu);
        else this.fxrstor(cpu);
        return true;
      case 2: {
        this.checkSse(cpu);
        const v = cpu.read32(cpu.eaSeg, cpu.eaOff);
        if (v & ~MXCSR_MASK) cpu.raiseGp(0);
        this.mxcsr = v;
        return true;
      }
      case 3:
        this.checkSse(cpu);
        cpu.write32(cpu.eaSeg, cpu.eaOff, this.mxcsr);
        return true;
      case 7:
        // CLFLUSH: no caches; the access is checked like a byte read.
        cpu.read8(cpu.eaSeg, cpu.eaOff);
        return true;
      default:
        return false;
    }
  }

  /** FXSAVE m512 (Intel SDM Vol. 1 table 10-2, 32-bit format). */
  private fxsave(cpu: Cpu): void {
    const la = this.addr(cpu, 512, true, true);
    const f = this.x87;
    const mmu = cpu.mmu;
    let ftw = f.valid;
    // The abridged tag is by physical register, as stored.
    ftw &= 0xff;
    mmu.write32(la, f.cw | (f.getSw() << 16));
    mmu.write32((la + 4) | 0, ftw | (f.fop << 16));
    mmu.write32((la + 8) | 0, f.fip);
    mmu.write32((la + 12) | 0, f.fcs);
    mmu.write32((la + 16) | 0, f.fdp);
    mmu.write32((la + 20) | 0, f.fds);
    mmu.write32((la + 24) | 0, this.mxcsr);
    mmu.write32((la + 28) | 0, MXCSR_MASK);
    for (let i = 0; i < 8; i++) {
      const p = f.phys(i);
      const o = (la + 32 + i * 16) | 0;
      mmu.write32(o, f.lo[p]);
      mmu.write32((o + 4) | 0, f.hi[p]);
      mmu.write32((o + 8) | 0, f.se[p] & 0xffff);
      mmu.write32((o + 12) | 0, 0);
    }
    for (let i = 0; i < 32; i++) mmu.write32((la + 160 + i * 4) | 0, this.xmm[i]);
  }

  /** FXRSTOR m512: #GP for reserved MXCSR bits; everything is read before state changes. */
  private fxrstor(cpu: Cpu): void {
    const la = this.addr(cpu, 512, false, true);
    const mmu = cpu.mmu;
    const mx = mmu.read32((la + 24) | 0);
    if (mx & ~MXCSR_MASK) cpu.raiseGp(0);
    const w0 = mmu.read32(la);
    const w1 = mmu.read32((la + 4) | 0);
    const f = this.x87;
    const regs = this.t32;
    f.cw = (w0 & 0x1f3f) | 0x40;
    f.setSw(w0 >>> 16);
    f.valid = w1 & 0xff;
    f.fop = (w1 >>> 16) & 0x7ff;
    f.fip = mmu.read32((la + 8) | 0);
    f.fcs = mmu.read32((la + 12) | 0) & 0xffff;
    f.fdp = mmu.read32((la + 16) | 0);
    f.fds = mmu.read32((la + 20) | 0) & 0xffff;
    for (let i = 0; i < 8; i++) {
      const p = f.phys(i);
      const o = (la + 32 + i * 16) | 0;
      regs[0] = mmu.read32(o);
      regs[1] = mmu.read32((o + 4) | 0);
      regs[2] = mmu.read16((o + 8) | 0);
      f.lo[p] = regs[0];
      f.hi[p] = regs[1];
      f.se[p] = regs[2];
    }
    for (let i = 0; i < 32; i++) this.xmm[i] = mmu.read32((la + 160 + i * 4) | 0);
    this.mxcsr = mx;
  }

  // ------------------------------------------------------------------ moves 0F 10-17

  private movGroup(cpu: Cpu, op: number, pfx: number): boolean {
    cpu.decodeModrm();
    this.checkSse(cpu);
    const x = this.xmm;
    const reg = cpu.reg;
    const rm = cpu.rm;
    const mem = cpu.mod !== 3;
    switch (op) {
      case 0x10:
        if (pfx <= 1) {
          // MOVUPS/MOVUPD xmm, xmm/m128
          this.srcXmm(cpu, 16, false);
          this.storeXmm(reg, this.s32);
        } else {
          const n = pfx === 3 ? 1 : 2; // MOVSS / MOVSD
          if (mem) {
            this.readMem(cpu, n * 4, false);
            this.storeXmm(reg, this.s32);
          } else for (let i = 0; i < n; i++) x[reg * 4 + i] = x[rm * 4 + i];
        }
        return true;
      case 0x11:
        if (pfx <= 1) {
          this.loadXmm(this.d32, reg);
          if (mem) this.writeMem(cpu, 16, false, this.d32);
          else this.storeXmm(rm, this.d32);
        } else {
          const n = pfx === 3 ? 1 : 2;
          if (mem) {
            this.loadXmm(this.d32, reg);
            this.writeMem(cpu, n * 4, false, this.d32);
          } else for (let i = 0; i < n; i++) x[rm * 4 + i] = x[reg * 4 + i];
        }
        return true;
      case 0x12:
      case 0x16: {
        if (pfx > 1) cpu.raiseUd(); // MOVSLDUP/MOVSHDUP/MOVDDUP are SSE3
        const high = op === 0x16 ? 2 : 0;
        if (mem) {
          // MOVLPS/MOVLPD/MOVHPS/MOVHPD xmm, m64
          this.readMem(cpu, 8, false);
          x[reg * 4 + high] = this.s32[0];
          x[reg * 4 + high + 1] = this.s32[1];
        } else {
          if (pfx === 1) cpu.raiseUd();
          // MOVHLPS (12): low <- src high; MOVLHPS (16): high <- src low.
          const from = op === 0x12 ? 2 : 0;
          const a = x[rm * 4 + from];
          const b = x[rm * 4 + from + 1];
          x[reg * 4 + high] = a;
          x[reg * 4 + high + 1] = b;
        }
        return true;
      }
      case 0x13:
      case 0x17: {
        if (pfx > 1 || !mem) cpu.raiseUd();
        const high = op === 0x17 ? 2 : 0;
        this.loadXmm(this.d32, reg);
        this.writeMem(cpu, 8, false, this.d32, high);
        return true;
      }
      default: {
        // 14/15: UNPCKLPS/PD, UNPCKHPS/PD
        if (pfx > 1) cpu.raiseUd();
        this.srcXmm(cpu, 16, true);
        this.loadXmm(this.d32, reg);
        const d = this.d32;
        const s = this.s32;
        const t = this.t32;
        if (pfx === 0) {
          const o = op === 0x14 ? 0 : 2;
          t[0] = d[o];
          t[1] = s[o];
          t[2] = d[o + 1];
          t[3] = s[o + 1];
        } else {
          const o = op === 0x14 ? 0 : 2;
          t[0] = d[o];
          t[1] = d[o + 1];
          t[2] = s[o];
          t[3] = s[o + 1];
        }
        this.storeXmm(reg, t);
        return true;
      }
    }
  }

  // ------------------------------------------------------------------ 0F 28-2F

  private group28(cpu: Cpu, op: number, pfx: number): boolean {
    cpu.decodeModrm();
    const reg = cpu.reg;
    const mem = cpu.mod !== 3;
    switch (op) {
      case 0x28:
      case 0x29:
        if (pfx > 1) return false;
        this.checkSse(cpu);
        if (op === 0x28) {
          this.srcXmm(cpu, 16, true);
          this.storeXmm(reg, this.s32);
        } else {
          this.loadXmm(this.d32, reg);
          if (mem) this.writeMem(cpu, 16, true, this.d32);
          else this.storeXmm(cpu.rm, this.d32);
        }
        return true;
      case 0x2b:
        // MOVNTPS/MOVNTPD m128, xmm
        if (pfx > 1) return false;
        this.checkSse(cpu);
        if (!mem) cpu.raiseUd();
        this.loadXmm(this.d32, reg);
        this.writeMem(cpu, 16, true, this.d32);
        return true;
      case 0x2a:
        this.cvt2a(cpu, pfx);
        return true;
      case 0x2c:
      case 0x2d:
        this.cvt2c(cpu, pfx, op === 0x2c);
        return true;
      default: {
        // 2E UCOMISS/UCOMISD, 2F COMISS/COMISD
        if (pfx > 1) return false;
        this.checkSse(cpu);
        const dbl = pfx === 1;
        this.srcXmm(cpu, dbl ? 8 : 4, false);
        const sf = this.begin();
        const a = this.ua;
        const b = this.ub;
        this.unpackLane(a, this.xmm, reg * 4, dbl);
        this.unpackLane(b, this.s32, 0, dbl);
        const r = this.compareLanes(a, b, op === 0x2e);
        this.finish(cpu, sf.flags);
        const fl = r === 0 ? 0 : r === 1 ? C.CF : r === 2 ? C.ZF : C.ZF | C.PF | C.CF;
        cpu.setArith(fl, C.ARITH);
        return true;
      }
    }
  }

  // ------------------------------------------------------------------ floating-point helpers

  /** Starts an SSE floating-point operation with MXCSR's rounding environment. */
  private begin(): SoftFloat {
    const sf = this.sf;
    const mx = this.mxcsr;
    sf.begin((mx >> 13) & 3);
    sf.unmaskedOverflow = (mx & (FE_OVERFLOW << 7)) === 0;
    sf.unmaskedUnderflow = (mx & (FE_UNDERFLOW << 7)) === 0;
    sf.biasUnmasked = false;
    sf.ftz = (mx & MX_FZ) !== 0;
    sf.tinyAfter = true;
    return sf;
  }

  /** Records flags in MXCSR; raises #XM/#UD if one is unmasked (the caller has not written yet). */
  private finish(cpu: Cpu, flags: number): void {
    flags &= 0x3f;
    this.mxcsr |= flags;
    if (flags & ~(this.mxcsr >> 7) & 0x3f) {
      if (cpu.cr4 & C.CR4_OSXMMEXCPT) cpu.raise(C.EXC_XM);
      cpu.raiseUd();
    }
  }

  /** Unpacks lane `i` (dword index) of `v` as single or double, applying DAZ and flagging denormals. */
  private unpackLane(u: Unpacked, v: Int32Array, i: number, dbl: boolean): void {
    const daz = (this.mxcsr & MX_DAZ) !== 0;
    if (dbl) unpackF64(u, v[i], v[i + 1], daz);
    else unpackF32(u, v[i], daz);
  }

  /** Packs sf.r (or a given value) into lane `i` of `v`. */
  private packLane(v: Int32Array, i: number, u: Unpacked, dbl: boolean): void {
    if (dbl) {
      packF64(u);
      v[i] = packOut[0];
      v[i + 1] = packOut[1];
    } else v[i] = packF32(u);
  }

  /** Sets `u` to the default NaN (negative quiet NaN). */
  private static defaultNan(u: Unpacked): void {
    u.cls = CLS_QNAN;
    u.sign = 1;
    u.exp = 16384;
    u.hi = 0xc0000000;
    u.lo = 0;
    u.denormal = false;
  }

  /** Lane comparison: 0 greater, 1 less, 2 equal, 3 unordered; `quiet` raises IE only for SNaN. */
  private compareLanes(a: Unpacked, b: Unpacked, quiet: boolean): number {
    const sf = this.sf;
    if (a.isNan || b.isNan) {
      if (!quiet || a.cls === CLS_SNAN || b.cls === CLS_SNAN) sf.flags |= FE_INVALID;
      return 3;
    }
    if (a.denormal || b.denormal) sf.flags |= FE_DENORMAL;
    return compareOrdered(a, b);
  }

  /**
   * One lane of an arithmetic operation into `out` at dword `i`: a op b, or
   * sqrt(b) (F_SQRT), min/max. Flags accumulate in the engine.
   */
  private laneOp(op: number, a: Unpacked, b: Unpacked, dbl: boolean, out: Int32Array, i: number, src: Int32Array): void {
    const sf = this.sf;
    const f: Format = dbl ? FMT_F64 : FMT_F32;
    const r = sf.r;
    if (op === F_MIN || op === F_MAX) {
      // MIN/MAX: the second operand whenever either is a NaN or both are zero; IE for any NaN.
      let pickB: boolean;
      if (a.isNan || b.isNan) {
        sf.flags |= FE_INVALID;
        pickB = true;
      } else {
        if (a.denormal || b.denormal) sf.flags |= FE_DENORMAL;
        const c = compareOrdered(a, b);
        pickB = op === F_MIN ? c !== 1 : c !== 0;
      }
      // The chosen operand's bits are copied as they are (a denormal flushed by DAZ becomes a signed zero).
      const chosen = pickB ? b : a;
      if (chosen.cls === CLS_ZERO) this.packLane(out, i, chosen, dbl);
      else if (pickB) {
        out[i] = src[i];
        if (dbl) out[i + 1] = src[i + 1];
      }
      return;
    }
    if (op === F_SQRT) {
      if (b.isNan) {
        if (b.cls === CLS_SNAN) sf.flags |= FE_INVALID;
        r.copy(b);
        r.cls = CLS_QNAN;
        r.hi = (r.hi | 0x40000000) >>> 0;
      } else if (b.cls === CLS_ZERO) r.copy(b);
      else if (b.sign) {
        sf.flags |= FE_INVALID;
        Simd.defaultNan(r);
      } else if (b.cls === CLS_INF) r.copy(b);
      else {
        if (b.denormal) sf.flags |= FE_DENORMAL;
        sf.sqrt(b, f);
      }
      this.packLane(out, i, r, dbl);
      return;
    }
    if (a.isNan || b.isNan) {
      if (a.cls === CLS_SNAN || b.cls === CLS_SNAN) sf.flags |= FE_INVALID;
      r.copy(a.isNan ? a : b);
      r.cls = CLS_QNAN;
      r.hi = (r.hi | 0x40000000) >>> 0;
      this.packLane(out, i, r, dbl);
      return;
    }
    const den = a.denormal || b.denormal;
    switch (op) {
      case F_ADD:
      case F_SUB: {
        const bs = op === F_SUB ? b.sign ^ 1 : b.sign;
        if (a.cls === CLS_INF || b.cls === CLS_INF) {
          if (a.cls === CLS_INF && b.cls === CLS_INF && a.sign !== bs) {
            sf.flags |= FE_INVALID;
            Simd.defaultNan(r);
          } else {
            if (den) sf.flags |= FE_DENORMAL;
            r.copy(a.cls === CLS_INF ? a : b);
            if (a.cls !== CLS_INF) r.sign = bs;
          }
        } else {
          if (den) sf.flags |= FE_DENORMAL;
          sf.add(a, b, op === F_SUB, f);
        }
        break;
      }
      case F_MUL:
        if ((a.cls === CLS_INF && b.cls === CLS_ZERO) || (a.cls === CLS_ZERO && b.cls === CLS_INF)) {
          sf.flags |= FE_INVALID;
          Simd.defaultNan(r);
        } else {
          if (den) sf.flags |= FE_DENORMAL;
          if (a.cls === CLS_INF || b.cls === CLS_INF) setInf(r, a.sign ^ b.sign);
          else if (a.cls === CLS_ZERO || b.cls === CLS_ZERO) setZero(r, a.sign ^ b.sign);
          else sf.mul(a, b, f);
        }
        break;
      default: {
        const s = a.sign ^ b.sign;
        if ((a.cls === CLS_INF && b.cls === CLS_INF) || (a.cls === CLS_ZERO && b.cls === CLS_ZERO)) {
          sf.flags |= FE_INVALID;
          Simd.defaultNan(r);
        } else {
          // A denormal dividend of a division by zero raises ZE alone.
          if (b.denormal || (a.denormal && b.cls !== CLS_ZERO)) sf.flags |= FE_DENORMAL;
          if (a.cls === CLS_INF) setInf(r, s);
          else if (b.cls === CLS_INF) setZero(r, s);
          else if (b.cls === CLS_ZERO) {
            sf.flags |= FE_ZERO;
            setInf(r, s);
          } else if (a.cls === CLS_ZERO) setZero(r, s);
          else sf.div(a, b, f);
        }
      }
    }
    this.packLane(out, i, r, dbl);
  }

  // ------------------------------------------------------------------ 0F 50-5F, C2, C6

  private fpGroup(cpu: Cpu, op: number, pfx: number): boolean {
    cpu.decodeModrm();
    const reg = cpu.reg;
    const x = this.xmm;
    const dbl = pfx === 1 || pfx === 2;
    const scalar = pfx >= 2;
    switch (op) {
      case 0x50: {
        // MOVMSKPS/MOVMSKPD r32, xmm
        if (pfx > 1 || cpu.mod !== 3) return false;
        this.checkSse(cpu);
        const b = cpu.rm * 4;
        cpu.regs[reg] = dbl ? (x[b + 1] >>> 31) | ((x[b + 3] >>> 31) << 1) : (x[b] >>> 31) | ((x[b + 1] >>> 31) << 1) | ((x[b + 2] >>> 31) << 2) | ((x[b + 3] >>> 31) << 3);
        return true;
      }
      case 0x52:
      case 0x53:
        if (pfx === 1 || pfx === 2) return false;
        this.checkSse(cpu);
        this.approx(cpu, op === 0x52, pfx === 3);
        return true;
      case 0x54:
      case 0x55:
      case 0x56:
      case 0x57: {
        if (pfx > 1) return false;
        this.checkSse(cpu);
        this.srcXmm(cpu, 16, true);
        const s = this.s32;
        for (let i = 0; i < 4; i++) {
          const d = x[reg * 4 + i];
          x[reg * 4 + i] = op === 0x54 ? d & s[i] : op === 0x55 ? ~d & s[i] : op === 0x56 ? d | s[i] : d ^ s[i];
        }
        return true;
      }
      case 0x5a:
        this.checkSse(cpu);
        this.cvt5a(cpu, pfx);
        return true;
      case 0x5b:
        if (pfx === 2) return false;
        this.checkSse(cpu);
        this.cvt5b(cpu, pfx);
        return true;
      case 0xc6: {
        // SHUFPS / SHUFPD
        if (pfx > 1) return false;
        this.checkSse(cpu);
        this.srcXmm(cpu, 16, true);
        const imm = cpu.fetch8();
        const d = this.d32;
        const s = this.s32;
        const t = this.t32;
        this.loadXmm(d, reg);
        if (pfx === 0) {
          t[0] = d[imm & 3];
          t[1] = d[(imm >> 2) & 3];
          t[2] = s[(imm >> 4) & 3];
          t[3] = s[(imm >> 6) & 3];
        } else {
          const i0 = (imm & 1) * 2;
          const i1 = ((imm >> 1) & 1) * 2;
          t[0] = d[i0];
          t[1] = d[i0 + 1];
          t[2] = s[i1];
          t[3] = s[i1 + 1];
        }
        this.storeXmm(reg, t);
        return true;
      }
      case 0xc2: {
        // CMPccPS/PD/SS/SD
        this.checkSse(cpu);
        this.srcXmm(cpu, scalar ? (dbl ? 8 : 4) : 16, !scalar);
        const imm = cpu.fetch8() & 7;
        const sf = this.begin();
        const d = this.d32;
        this.loadXmm(d, reg);
        const step = dbl ? 2 : 1;
        const lanes = scalar ? step : 4;
        for (let i = 0; i < lanes; i += step) {
          this.unpackLane(this.ua, d, i, dbl);
          this.unpackLane(this.ub, this.s32, i, dbl);
          const quiet = imm === 0 || imm === 3 || imm === 4 || imm === 7;
          const c = this.compareLanes(this.ua, this.ub, quiet);
          let t: boolean;
          switch (imm) {
            case 0:
              t = c === 2;
              break;
            case 1:
              t = c === 1;
              break;
            case 2:
              t = c === 1 || c === 2;
              break;
            case 3:
              t = c === 3;
              break;
            case 4:
              t = c !== 2;
              break;
            case 5:
              t = c !== 1;
              break;
            case 6:
              t = c === 0 || c === 3;
              break;
            default:
              t = c !== 3;
          }
          d[i] = t ? -1 : 0;
          if (dbl) d[i + 1] = t ? -1 : 0;
        }
        this.finish(cpu, sf.flags);
        this.storeXmm(reg, d);
        return true;
      }
      default: {
        // 51 SQRT, 58 ADD, 59 MUL, 5C SUB, 5D MIN, 5E DIV, 5F MAX
        const code = op === 0x51 ? F_SQRT : op === 0x58 ? F_ADD : op === 0x59 ? F_MUL : op === 0x5c ? F_SUB : op === 0x5d ? F_MIN : op === 0x5e ? F_DIV : F_MAX;
        this.checkSse(cpu);
        this.srcXmm(cpu, scalar ? (dbl ? 8 : 4) : 16, !scalar);
        const sf = this.begin();
        const d = this.d32;
        this.loadXmm(d, reg);
        const step = dbl ? 2 : 1;
        const lanes = scalar ? step : 4;
        for (let i = 0; i < lanes; i += step) {
          this.unpackLane(this.ua, d, i, dbl);
          this.unpackLane(this.ub, this.s32, i, dbl);
          this.laneOp(code, this.ua, this.ub, dbl, d, i, this.s32);
        }
        this.finish(cpu, sf.flags);
        this.storeXmm(reg, d);
        return true;
      }
    }
  }

  /** RSQRTPS/RSQRTSS/RCPPS/RCPSS: the correctly rounded single result (within the architectural 1.5·2^-12). */
  private approx(cpu: Cpu, rsqrt: boolean, scalar: boolean): void {
    const reg = cpu.reg;
    this.srcXmm(cpu, scalar ? 4 : 16, !scalar);
    const d = this.d32;
    this.loadXmm(d, reg);
    const s = this.s32;
    const n = scalar ? 1 : 4;
    const f = this.f32;
    for (let i = 0; i < n; i++) {
      const bits = s[i];
      const e = (bits >>> 23) & 0xff;
      const neg = bits < 0;
      let out: number;
      if (e === 0xff) {
        if (bits & 0x7fffff) out = bits | 0x400000; // NaN, quieted
        else if (rsqrt) out = neg ? 0xffc00000 | 0 : 0;
        else out = neg ? 0x80000000 | 0 : 0;
      } else if (e === 0) {
        // Zero and denormals behave as zero: infinity of the same sign.
        out = neg ? 0xff800000 | 0 : 0x7f800000;
      } else if (rsqrt && neg) out = 0xffc00000 | 0;
      else {
        f[0] = 0;
        this.i32v[0] = bits;
        const v = f[0];
        f[0] = rsqrt ? 1 / Math.sqrt(v) : 1 / v;
        out = this.i32v[0];
        // Results in the single denormal range are flushed to zero (sign kept), as the hardware does.
        if (((out >>> 23) & 0xff) === 0) out &= 0x80000000;
      }
      d[i] = out;
    }
    this.storeXmm(reg, d);
  }

  private readonly f32 = new Float32Array(1);
  private readonly i32v = new Int32Array(this.f32.buffer);

  // ------------------------------------------------------------------ conversions

  /** Converts finite/special `u` to int32 with the engine's rounding; returns the integer indefinite on overflow/NaN (IE). */
  private toInt32(u: Unpacked): number {
    const sf = this.sf;
    if (u.cls === CLS_ZERO) return 0;
    if (u.cls !== CLS_FINITE) {
      sf.flags |= FE_INVALID;
      return 0x80000000 | 0;
    }
    if (u.exp > 31) {
      sf.flags |= FE_INVALID;
      return 0x80000000 | 0;
    }
    // Integer part and rounding through the 96-bit work: value = sig × 2^(exp-63).
    const before = sf.flags;
    sf.ws = u.sign;
    sf.w0 = u.hi;
    sf.w1 = u.lo;
    sf.w2 = 0;
    const n = 63 - u.exp;
    // Shift right by n with jamming, then round at the integer boundary (w1 bit 0).
    shrJamWork(sf, n);
    const up = round64(sf);
    const m0 = sf.w0;
    const m1 = sf.w1;
    void up;
    if (m0 !== 0 || m1 > 0x80000000 || (m1 === 0x80000000 && !u.sign)) {
      // Out of range: invalid, and this lane is not also inexact (other lanes keep their flags).
      sf.flags = before | FE_INVALID;
      return 0x80000000 | 0;
    }
    return u.sign ? -m1 | 0 : m1 | 0;
  }

  /** 0F 2A: CVTPI2PS, CVTPI2PD, CVTSI2SS, CVTSI2SD. */
  private cvt2a(cpu: Cpu, pfx: number): void {
    this.checkSse(cpu);
    const reg = cpu.reg;
    const d = this.d32;
    this.loadXmm(d, reg);
    const sf = this.begin();
    const a = this.ua;
    if (pfx >= 2) {
      const v = cpu.mod === 3 ? cpu.regs[cpu.rm] : cpu.read32(cpu.eaSeg, cpu.eaOff);
      fromInt32(a, v);
      const dbl = pfx === 2;
      sf.roundValue(a, dbl ? FMT_F64 : FMT_F32);
      this.finish(cpu, sf.flags);
      this.packLane(d, 0, sf.r, dbl);
    } else {
      // From MM/m64: two int32s.
      if (cpu.mod === 3) {
        this.checkMmx(cpu);
        this.loadMm(this.s32, cpu.rm);
        this.mmxEnter();
      } else this.readMem(cpu, 8, false);
      const s0 = this.s32[0];
      const s1 = this.s32[1];
      if (pfx === 0) {
        fromInt32(a, s0);
        sf.roundValue(a, FMT_F32);
        d[0] = packF32(sf.r);
        fromInt32(a, s1);
        sf.roundValue(a, FMT_F32);
        d[1] = packF32(sf.r);
        this.finish(cpu, sf.flags);
      } else {
        fromInt32(a, s0);
        this.packLane(d, 0, a, true);
        fromInt32(a, s1);
        this.packLane(d, 2, a, true);
      }
    }
    this.storeXmm(reg, d);
  }

  /** 0F 2C/2D: CVT(T)PS2PI, CVT(T)PD2PI, CVT(T)SS2SI, CVT(T)SD2SI. */
  private cvt2c(cpu: Cpu, pfx: number, truncate: boolean): void {
    this.checkSse(cpu);
    const dbl = pfx === 1 || pfx === 2;
    const scalar = pfx >= 2;
    const sf = this.begin();
    if (truncate) sf.rc = 3;
    const a = this.ua;
    if (scalar) {
      this.srcXmm(cpu, dbl ? 8 : 4, false);
      this.unpackLane(a, this.s32, 0, dbl);
      const v = this.toInt32(a);
      this.finish(cpu, sf.flags);
      cpu.regs[cpu.reg] = v;
      return;
    }
    // To MMX: two lanes.
    this.srcXmm(cpu, dbl ? 16 : 8, dbl);
    this.checkMmx(cpu);
    const step = dbl ? 2 : 1;
    this.unpackLane(a, this.s32, 0, dbl);
    const v0 = this.toInt32(a);
    this.unpackLane(a, this.s32, step, dbl);
    const v1 = this.toInt32(a);
    this.finish(cpu, sf.flags);
    this.mmxEnter();
    this.storeMm(cpu.reg & 7, v0, v1);
  }

  /** 0F 5A: CVTPS2PD, CVTPD2PS, CVTSS2SD, CVTSD2SS. */
  private cvt5a(cpu: Cpu, pfx: number): void {
    const reg = cpu.reg;
    const fromDbl = pfx === 1 || pfx === 2;
    const scalar = pfx >= 2;
    const len = scalar ? (fromDbl ? 8 : 4) : fromDbl ? 16 : 8;
    this.srcXmm(cpu, len, !scalar && fromDbl);
    const sf = this.begin();
    const d = this.d32;
    this.loadXmm(d, reg);
    const a = this.ua;
    const n = scalar ? 1 : 2;
    const t = this.t32;
    t[0] = d[0];
    t[1] = d[1];
    t[2] = d[2];
    t[3] = d[3];
    if (!scalar && fromDbl) t[2] = t[3] = 0;
    for (let i = 0; i < n; i++) {
      this.unpackLane(a, this.s32, fromDbl ? i * 2 : i, fromDbl);
      const r = sf.r;
      if (a.isNan) {
        if (a.cls === CLS_SNAN) sf.flags |= FE_INVALID;
        r.copy(a);
        r.cls = CLS_QNAN;
        r.hi = (r.hi | 0x40000000) >>> 0;
      } else {
        if (a.denormal) sf.flags |= FE_DENORMAL;
        if (a.cls === CLS_FINITE) sf.roundValue(a, fromDbl ? FMT_F32 : FMT_F64);
        else r.copy(a);
      }
      if (fromDbl) t[i] = packF32(r);
      else this.packLane(t, i * 2, r, true);
    }
    this.finish(cpu, sf.flags);
    this.storeXmm(reg, t);
  }

  /** 0F 5B: CVTDQ2PS, CVTPS2DQ (66), CVTTPS2DQ (F3). */
  private cvt5b(cpu: Cpu, pfx: number): void {
    const reg = cpu.reg;
    this.srcXmm(cpu, 16, true);
    const sf = this.begin();
    if (pfx === 3) sf.rc = 3;
    const a = this.ua;
    const t = this.t32;
    for (let i = 0; i < 4; i++) {
      if (pfx === 0) {
        fromInt32(a, this.s32[i]);
        sf.roundValue(a, FMT_F32);
        t[i] = packF32(sf.r);
      } else {
        this.unpackLane(a, this.s32, i, false);
        t[i] = this.toInt32(a);
      }
    }
    this.finish(cpu, sf.flags);
    this.storeXmm(reg, t);
  }

  /** 0F E6: CVTTPD2DQ (66), CVTDQ2PD (F3), CVTPD2DQ (F2). */
  private cvtE6(cpu: Cpu, pfx: number): void {
    const reg = cpu.reg;
    const sf = this.begin();
    const a = this.ua;
    const t = this.t32;
    if (pfx === 3) {
      this.srcXmm(cpu, 8, false);
      fromInt32(a, this.s32[0]);
      this.packLane(t, 0, a, true);
      fromInt32(a, this.s32[1]);
      this.packLane(t, 2, a, true);
    } else {
      this.srcXmm(cpu, 16, true);
      if (pfx === 1) sf.rc = 3;
      this.unpackLane(a, this.s32, 0, true);
      t[0] = this.toInt32(a);
      this.unpackLane(a, this.s32, 2, true);
      t[1] = this.toInt32(a);
      t[2] = t[3] = 0;
      this.finish(cpu, sf.flags);
    }
    this.storeXmm(reg, t);
  }

  // ------------------------------------------------------------------ integer SIMD

  private intGroup(cpu: Cpu, op: number, pfx: number): boolean {
    // Not MMX/SSE2 (SSE3's HADD/HSUB/LDDQU, VMX's VMREAD/VMWRITE, reserved): #UD before any operand is touched.
    if ((op >= 0x78 && op <= 0x7d) || op === 0xf0 || op === 0xff) return false;
    // Legal prefixes: none (MMX) or 66 (XMM); F3/F2 only for a few moves.
    const xmmForm = pfx === 1;
    if (pfx >= 2) {
      if (op === 0x6f || op === 0x7f) {
        if (pfx !== 3) return false; // MOVDQU
      } else if (op === 0x7e) {
        if (pfx !== 3) return false; // MOVQ xmm, xmm/m64
      } else if (op === 0x70) {
        // PSHUFHW / PSHUFLW
      } else if (op === 0xd6) {
        // MOVQ2DQ / MOVDQ2Q
      } else return false;
    }
    if (!xmmForm && pfx === 0 && (op === 0x6c || op === 0x6d || op === 0xd6)) return false;
    cpu.decodeModrm();
    const reg = cpu.reg;
    const mem = cpu.mod !== 3;
    // Moves and special forms first.
    switch (op) {
      case 0x6e: // MOVD mm/xmm, r/m32
      case 0x7e: {
        if (op === 0x7e && pfx === 3) {
          // MOVQ xmm, xmm/m64
          this.checkSse(cpu);
          this.srcXmm(cpu, 8, false);
          const s = this.s32;
          s[2] = s[3] = 0;
          this.storeXmm(reg, s);
          return true;
        }
        if (xmmForm) this.checkSse(cpu);
        else this.checkMmx(cpu);
        if (op === 0x6e) {
          const v = mem ? cpu.read32(cpu.eaSeg, cpu.eaOff) : cpu.regs[cpu.rm];
          if (xmmForm) {
            const x = this.xmm;
            x[reg * 4] = v;
            x[reg * 4 + 1] = x[reg * 4 + 2] = x[reg * 4 + 3] = 0;
          } else {
            this.mmxEnter();
            this.storeMm(reg, v, 0);
          }
        } else {
          const v = xmmForm ? this.xmm[reg * 4] : this.x87.lo[reg];
          if (mem) cpu.write32(cpu.eaSeg, cpu.eaOff, v);
          else cpu.regs[cpu.rm] = v;
          if (!xmmForm) this.mmxEnter();
        }
        return true;
      }
      case 0x6f:
      case 0x7f: {
        if (pfx === 0) {
          // MOVQ mm, mm/m64 and MOVQ mm/m64, mm
          this.checkMmx(cpu);
          if (op === 0x6f) {
            this.srcMm(cpu);
            this.mmxEnter();
            this.storeMm(reg, this.s32[0], this.s32[1]);
          } else {
            this.loadMm(this.d32, reg);
            if (mem) this.writeMem(cpu, 8, false, this.d32);
            this.mmxEnter();
            if (!mem) this.storeMm(cpu.rm, this.d32[0], this.d32[1]);
          }
          return true;
        }
        this.checkSse(cpu);
        const align = pfx === 1;
        if (op === 0x6f) {
          this.srcXmm(cpu, 16, align);
          this.storeXmm(reg, this.s32);
        } else {
          this.loadXmm(this.d32, reg);
          if (mem) this.writeMem(cpu, 16, align, this.d32);
          else this.storeXmm(cpu.rm, this.d32);
        }
        return true;
      }
      case 0xd6: {
        this.checkSse(cpu);
        if (pfx === 1) {
          // MOVQ xmm/m64, xmm
          this.loadXmm(this.d32, reg);
          if (mem) this.writeMem(cpu, 8, false, this.d32);
          else {
            const x = this.xmm;
            x[cpu.rm * 4] = this.d32[0];
            x[cpu.rm * 4 + 1] = this.d32[1];
            x[cpu.rm * 4 + 2] = x[cpu.rm * 4 + 3] = 0;
          }
          return true;
        }
        if (mem) cpu.raiseUd();
        this.checkMmx(cpu);
        if (pfx === 3) {
          // MOVQ2DQ xmm, mm
          const x = this.xmm;
          x[reg * 4] = this.x87.lo[cpu.rm];
          x[reg * 4 + 1] = this.x87.hi[cpu.rm];
          x[reg * 4 + 2] = x[reg * 4 + 3] = 0;
        } else {
          // MOVDQ2Q mm, xmm
          this.storeMm(reg, this.xmm[cpu.rm * 4], this.xmm[cpu.rm * 4 + 1]);
        }
        this.mmxEnter();
        return true;
      }
      case 0xe7: {
        // MOVNTQ m64, mm / MOVNTDQ m128, xmm
        if (!mem) cpu.raiseUd();
        if (xmmForm) {
          this.checkSse(cpu);
          this.loadXmm(this.d32, reg);
          this.writeMem(cpu, 16, true, this.d32);
        } else {
          this.checkMmx(cpu);
          this.loadMm(this.d32, reg);
          this.writeMem(cpu, 8, false, this.d32);
          this.mmxEnter();
        }
        return true;
      }
      case 0xf7: {
        // MASKMOVQ / MASKMOVDQU: byte stores to DS:(E)DI where the mask byte's top bit is set.
        if (mem) cpu.raiseUd();
        if (xmmForm) {
          this.checkSse(cpu);
          this.loadXmm(this.d32, reg);
          this.loadXmm(this.s32, cpu.rm);
        } else {
          this.checkMmx(cpu);
          this.loadMm(this.d32, reg);
          this.loadMm(this.s32, cpu.rm);
        }
        const n = xmmForm ? 16 : 8;
        const seg = cpu.segOvr >= 0 ? cpu.segOvr : C.DS;
        const base = cpu.a32 ? cpu.regs[7] : cpu.regs[7] & 0xffff;
        for (let i = 0; i < n; i++) {
          if (this.s8[i] & 0x80) {
            const off = cpu.a32 ? (base + i) | 0 : (base + i) & 0xffff;
            cpu.write8(seg, off, this.d8[i]);
          }
        }
        if (!xmmForm) this.mmxEnter();
        return true;
      }
      case 0xc5: {
        // PEXTRW r32, mm/xmm, imm8
        if (!mem) {
          if (xmmForm) this.checkSse(cpu);
          else this.checkMmx(cpu);
          const imm = cpu.fetch8();
          if (xmmForm) {
            this.loadXmm(this.s32, cpu.rm);
            cpu.regs[reg] = this.s16[imm & 7];
          } else {
            this.loadMm(this.s32, cpu.rm);
            cpu.regs[reg] = this.s16[imm & 3];
            this.mmxEnter();
          }
          return true;
        }
        cpu.raiseUd();
        return true;
      }
      case 0xc4: {
        // PINSRW mm/xmm, r32/m16, imm8
        if (xmmForm) this.checkSse(cpu);
        else this.checkMmx(cpu);
        const v = mem ? cpu.read(1, cpu.eaSeg, cpu.eaOff) : cpu.regs[cpu.rm];
        const imm = cpu.fetch8();
        if (xmmForm) {
          this.loadXmm(this.d32, reg);
          this.d16[imm & 7] = v;
          this.storeXmm(reg, this.d32);
        } else {
          this.loadMm(this.d32, reg);
          this.d16[imm & 3] = v;
          this.mmxEnter();
          this.storeMm(reg, this.d32[0], this.d32[1]);
        }
        return true;
      }
      case 0xd7: {
        // PMOVMSKB r32, mm/xmm (the hot half of every SSE2 string function)
        if (mem) cpu.raiseUd();
        if (xmmForm) {
          this.checkSse(cpu);
          const x = this.xmm;
          const b = cpu.rm * 4;
          cpu.regs[reg] = movmsk4(x[b]) | (movmsk4(x[b + 1]) << 4) | (movmsk4(x[b + 2]) << 8) | (movmsk4(x[b + 3]) << 12);
          return true;
        } else {
          this.checkMmx(cpu);
          this.loadMm(this.s32, cpu.rm);
          this.mmxEnter();
        }
        const n = xmmForm ? 16 : 8;
        let m = 0;
        for (let i = 0; i < n; i++) m |= (this.s8[i] >> 7) << i;
        cpu.regs[reg] = m;
        return true;
      }
      case 0x71:
      case 0x72:
      case 0x73: {
        if (!mem) {
          const kind = reg;
          const valid = op === 0x73 ? kind === 2 || kind === 6 || (xmmForm && (kind === 3 || kind === 7)) : kind === 2 || kind === 4 || kind === 6;
          if (!valid) return false;
          if (xmmForm) this.checkSse(cpu);
          else this.checkMmx(cpu);
          const imm = cpu.fetch8();
          const n = xmmForm ? 16 : 8;
          const r = cpu.rm;
          if (xmmForm) this.loadXmm(this.d32, r);
          else this.loadMm(this.d32, r);
          if (op === 0x73 && (kind === 3 || kind === 7)) this.byteShift(kind === 7, imm);
          else {
            const size = op === 0x71 ? 2 : op === 0x72 ? 4 : 8;
            const type = kind === 2 ? 0 : kind === 4 ? 1 : 2; // 0 logical right, 1 arithmetic right, 2 left
            this.shiftLanes(size, type, imm, 0, n);
          }
          if (xmmForm) this.storeXmm(r, this.d32);
          else {
            this.mmxEnter();
            this.storeMm(r, this.d32[0], this.d32[1]);
          }
          return true;
        }
        return false;
      }
      default:
        break;
    }
    if (op === 0x70) {
      // PSHUFW (none), PSHUFD (66), PSHUFHW (F3), PSHUFLW (F2)
      if (pfx === 0) {
        this.checkMmx(cpu);
        this.srcMm(cpu);
      } else {
        this.checkSse(cpu);
        this.srcXmm(cpu, 16, true);
      }
      const imm = cpu.fetch8();
      const s16 = this.s16;
      const d16 = this.d16;
      const d32 = this.d32;
      if (pfx === 0) {
        for (let i = 0; i < 4; i++) d16[i] = s16[(imm >> (2 * i)) & 3];
        this.mmxEnter();
        this.storeMm(reg, d32[0], d32[1]);
        return true;
      }
      if (pfx === 1) for (let i = 0; i < 4; i++) d32[i] = this.s32[(imm >> (2 * i)) & 3];
      else if (pfx === 3) {
        d32[0] = this.s32[0];
        d32[1] = this.s32[1];
        for (let i = 0; i < 4; i++) d16[4 + i] = s16[4 + ((imm >> (2 * i)) & 3)];
      } else {
        d32[2] = this.s32[2];
        d32[3] = this.s32[3];
        for (let i = 0; i < 4; i++) d16[i] = s16[(imm >> (2 * i)) & 3];
      }
      this.storeXmm(reg, d32);
      return true;
    }
    // Two-operand integer operations: dst = dst op src.
    if (xmmForm) {
      this.checkSse(cpu);
      this.srcXmm(cpu, 16, true);
      this.loadXmm(this.d32, reg);
    } else {
      this.checkMmx(cpu);
      this.srcMm(cpu);
      this.loadMm(this.d32, reg);
    }
    const n = xmmForm ? 16 : 8;
    if (!this.intOp(op, n)) return false;
    if (xmmForm) this.storeXmm(reg, this.d32);
    else {
      this.mmxEnter();
      this.storeMm(reg, this.d32[0], this.d32[1]);
    }
    return true;
  }

  /** PSRLDQ / PSLLDQ on d8 (16 bytes). */
  private byteShift(left: boolean, count: number): void {
    const d = this.d8;
    const t = this.s8;
    for (let i = 0; i < 16; i++) t[i] = d[i];
    for (let i = 0; i < 16; i++) {
      const j = left ? i - count : i + count;
      d[i] = j >= 0 && j < 16 ? t[j] : 0;
    }
  }

  /** Shifts lanes of `size` bytes in d by `lo`/`hi` (64-bit count); type 0 logical right, 1 arithmetic right, 2 left. */
  private shiftLanes(size: number, type: number, lo: number, hi: number, n: number): void {
    const bits = size * 8;
    const big = hi !== 0 || lo >>> 0 >= bits;
    const c = big ? bits : lo;
    const d16 = this.d16;
    const d32 = this.d32;
    if (size === 2) {
      for (let i = 0; i < n >> 1; i++) {
        const v = d16[i];
        if (type === 0) d16[i] = c >= 16 ? 0 : v >>> c;
        else if (type === 1) d16[i] = ((v << 16) >> 16) >> (c >= 16 ? 15 : c);
        else d16[i] = c >= 16 ? 0 : v << c;
      }
    } else if (size === 4) {
      for (let i = 0; i < n >> 2; i++) {
        const v = d32[i];
        if (type === 0) d32[i] = c >= 32 ? 0 : v >>> c;
        else if (type === 1) d32[i] = v >> (c >= 32 ? 31 : c);
        else d32[i] = c >= 32 ? 0 : v << c;
      }
    } else {
      for (let i = 0; i < n >> 2; i += 2) {
        const l = d32[i];
        const h = d32[i + 1];
        if (c >= 64) {
          d32[i] = d32[i + 1] = 0;
        } else if (type === 0) {
          if (c === 0) continue;
          if (c >= 32) {
            d32[i] = h >>> (c - 32);
            d32[i + 1] = 0;
          } else {
            d32[i] = (l >>> c) | (h << (32 - c));
            d32[i + 1] = h >>> c;
          }
        } else {
          if (c === 0) continue;
          if (c >= 32) {
            d32[i + 1] = l << (c - 32);
            d32[i] = 0;
          } else {
            d32[i + 1] = (h << c) | (l >>> (32 - c));
            d32[i] = l << c;
          }
        }
      }
    }
  }

  /** The two-operand integer instructions on d (n bytes) with source s; false if `op` is not one. */
  private intOp(op: number, n: number): boolean {
    const d8 = this.d8;
    const s8 = this.s8;
    const d16 = this.d16;
    const s16 = this.s16;
    const d32 = this.d32;
    const s32 = this.s32;
    const t = this.t32;
    const t8 = this.t8;
    const t16 = this.t16;
    switch (op) {
      case 0x60:
      case 0x61:
      case 0x62:
      case 0x68:
      case 0x69:
      case 0x6a:
      case 0x6c:
      case 0x6d: {
        // PUNPCKL/H BW, WD, DQ, QDQ
        const high = (op >= 0x68 && op <= 0x6a) || op === 0x6d;
        const size = op === 0x60 || op === 0x68 ? 1 : op === 0x61 || op === 0x69 ? 2 : op === 0x62 || op === 0x6a ? 4 : 8;
        const half = n >> 1;
        const base = high ? half : 0;
        for (let i = 0; i < n; i++) t8[i] = d8[i];
        for (let k = 0; k < half / size; k++) {
          for (let b = 0; b < size; b++) {
            d8[2 * k * size + b] = t8[base + k * size + b];
            d8[(2 * k + 1) * size + b] = s8[base + k * size + b];
          }
        }
        return true;
      }
      case 0x63:
      case 0x67:
      case 0x6b: {
        // PACKSSWB, PACKUSWB, PACKSSDW
        if (op === 0x6b) {
          const m = n >> 2;
          for (let i = 0; i < m; i++) t16[i] = satS16(d32[i]);
          for (let i = 0; i < m; i++) t16[m + i] = satS16(s32[i]);
          for (let i = 0; i < n >> 1; i++) d16[i] = t16[i];
        } else {
          const m = n >> 1;
          const f = op === 0x63 ? satS8 : satU8;
          for (let i = 0; i < m; i++) t8[i] = f((d16[i] << 16) >> 16);
          for (let i = 0; i < m; i++) t8[m + i] = f((s16[i] << 16) >> 16);
          for (let i = 0; i < n; i++) d8[i] = t8[i];
        }
        return true;
      }
      case 0x64:
        for (let i = 0; i < n; i++) d8[i] = (d8[i] << 24) >> 24 > (s8[i] << 24) >> 24 ? 0xff : 0;
        return true;
      case 0x65:
        for (let i = 0; i < n >> 1; i++) d16[i] = (d16[i] << 16) >> 16 > (s16[i] << 16) >> 16 ? 0xffff : 0;
        return true;
      case 0x66:
        for (let i = 0; i < n >> 2; i++) d32[i] = d32[i] > s32[i] ? -1 : 0;
        return true;
      case 0x74:
        // PCMPEQB, four bytes per step: a byte of a ^ b is zero exactly where they are equal.
        for (let i = 0; i < n >> 2; i++) {
          const t = d32[i] ^ s32[i];
          const z = ((((t & 0x7f7f7f7f) + 0x7f7f7f7f) | t) & 0x80808080) ^ 0x80808080;
          d32[i] = z | (z - (z >>> 7));
        }
        return true;
      case 0x75:
        for (let i = 0; i < n >> 1; i++) d16[i] = d16[i] === s16[i] ? 0xffff : 0;
        return true;
      case 0x76:
        for (let i = 0; i < n >> 2; i++) d32[i] = d32[i] === s32[i] ? -1 : 0;
        return true;
      case 0xd1:
      case 0xd2:
      case 0xd3:
      case 0xe1:
      case 0xe2:
      case 0xf1:
      case 0xf2:
      case 0xf3: {
        const size = (op & 3) === 1 ? 2 : (op & 3) === 2 ? 4 : 8;
        const type = op >= 0xf0 ? 2 : op >= 0xe0 ? 1 : 0;
        this.shiftLanes(size, type, s32[0], s32[1], n);
        return true;
      }
      case 0xd4:
      case 0xfb:
        // PADDQ / PSUBQ
        for (let i = 0; i < n >> 2; i += 2) {
          const sub = op === 0xfb;
          const al = d32[i] >>> 0;
          const bl = s32[i] >>> 0;
          const lo = sub ? al - bl : al + bl;
          const carry = sub ? (lo < 0 ? -1 : 0) : lo > 0xffffffff ? 1 : 0;
          d32[i] = lo | 0;
          d32[i + 1] = (sub ? d32[i + 1] - s32[i + 1] + carry : d32[i + 1] + s32[i + 1] + carry) | 0;
        }
        return true;
      case 0xd5:
        for (let i = 0; i < n >> 1; i++) d16[i] = Math.imul(d16[i], s16[i]);
        return true;
      case 0xe5:
        for (let i = 0; i < n >> 1; i++) d16[i] = Math.imul((d16[i] << 16) >> 16, (s16[i] << 16) >> 16) >> 16;
        return true;
      case 0xe4:
        for (let i = 0; i < n >> 1; i++) d16[i] = (d16[i] * s16[i]) >>> 16;
        return true;
      case 0xf4:
        // PMULUDQ: low dword of each qword, unsigned, 64-bit product.
        for (let i = 0; i < n >> 2; i += 2) {
          mulU32(d32[i], s32[i], t);
          d32[i] = t[0];
          d32[i + 1] = t[1];
        }
        return true;
      case 0xf5:
        // PMADDWD
        for (let i = 0; i < n >> 2; i++) {
          const a0 = (d16[2 * i] << 16) >> 16;
          const a1 = (d16[2 * i + 1] << 16) >> 16;
          const b0 = (s16[2 * i] << 16) >> 16;
          const b1 = (s16[2 * i + 1] << 16) >> 16;
          d32[i] = (a0 * b0 + a1 * b1) | 0;
        }
        return true;
      case 0xf6:
        // PSADBW
        for (let q = 0; q < n >> 3; q++) {
          let sum = 0;
          for (let i = 0; i < 8; i++) sum += Math.abs(d8[q * 8 + i] - s8[q * 8 + i]);
          d32[q * 2] = sum;
          d32[q * 2 + 1] = 0;
        }
        return true;
      case 0xd8:
        for (let i = 0; i < n; i++) d8[i] = Math.max(0, d8[i] - s8[i]);
        return true;
      case 0xd9:
        for (let i = 0; i < n >> 1; i++) d16[i] = Math.max(0, d16[i] - s16[i]);
        return true;
      case 0xdc:
        for (let i = 0; i < n; i++) d8[i] = Math.min(255, d8[i] + s8[i]);
        return true;
      case 0xdd:
        for (let i = 0; i < n >> 1; i++) d16[i] = Math.min(65535, d16[i] + s16[i]);
        return true;
      case 0xda:
        for (let i = 0; i < n; i++) d8[i] = Math.min(d8[i], s8[i]);
        return true;
      case 0xde:
        for (let i = 0; i < n; i++) d8[i] = Math.max(d8[i], s8[i]);
        return true;
      case 0xea:
        for (let i = 0; i < n >> 1; i++) d16[i] = Math.min((d16[i] << 16) >> 16, (s16[i] << 16) >> 16);
        return true;
      case 0xee:
        for (let i = 0; i < n >> 1; i++) d16[i] = Math.max((d16[i] << 16) >> 16, (s16[i] << 16) >> 16);
        return true;
      case 0xdb:
        for (let i = 0; i < n >> 2; i++) d32[i] &= s32[i];
        return true;
      case 0xdf:
        for (let i = 0; i < n >> 2; i++) d32[i] = ~d32[i] & s32[i];
        return true;
      case 0xeb:
        for (let i = 0; i < n >> 2; i++) d32[i] |= s32[i];
        return true;
      case 0xef:
        for (let i = 0; i < n >> 2; i++) d32[i] ^= s32[i];
        return true;
      case 0xe0:
        for (let i = 0; i < n; i++) d8[i] = (d8[i] + s8[i] + 1) >> 1;
        return true;
      case 0xe3:
        for (let i = 0; i < n >> 1; i++) d16[i] = (d16[i] + s16[i] + 1) >> 1;
        return true;
      case 0xe8:
        for (let i = 0; i < n; i++) d8[i] = satS8(((d8[i] << 24) >> 24) - ((s8[i] << 24) >> 24));
        return true;
      case 0xe9:
        for (let i = 0; i < n >> 1; i++) d16[i] = satS16(((d16[i] << 16) >> 16) - ((s16[i] << 16) >> 16));
        return true;
      case 0xec:
        for (let i = 0; i < n; i++) d8[i] = satS8(((d8[i] << 24) >> 24) + ((s8[i] << 24) >> 24));
        return true;
      case 0xed:
        for (let i = 0; i < n >> 1; i++) d16[i] = satS16(((d16[i] << 16) >> 16) + ((s16[i] << 16) >> 16));
        return true;
      case 0xf8:
        for (let i = 0; i < n; i++) d8[i] = d8[i] - s8[i];
        return true;
      case 0xf9:
        for (let i = 0; i < n >> 1; i++) d16[i] = d16[i] - s16[i];
        return true;
      case 0xfa:
        for (let i = 0; i < n >> 2; i++) d32[i] = (d32[i] - s32[i]) | 0;
        return true;
      case 0xfc:
        for (let i = 0; i < n; i++) d8[i] = d8[i] + s8[i];
        return true;
      case 0xfd:
        for (let i = 0; i < n >> 1; i++) d16[i] = d16[i] + s16[i];
        return true;
      case 0xfe:
        for (let i = 0; i < n >> 2; i++) d32[i] = (d32[i] + s32[i]) | 0;
        return true;
      default:
        return false;
    }
  }

  private readonly tBuf = new ArrayBuffer(16);
  private readonly t8 = new Uint8Array(this.tBuf);
  private readonly t16 = new Uint16Array(this.tBuf);
}

/** The sign bits of the four bytes of `w`, as bits 0-3. */
function movmsk4(w: number): number {
  return ((w >>> 7) & 1) | ((w >>> 14) & 2) | ((w >>> 21) & 4) | ((w >>> 28) & 8);
}

function satS8(v: number): number {
  return v > 127 ? 127 : v < -128 ? -128 : v;
}
function satU8(v: number): number {
  return v > 255 ? 255 : v < 0 ? 0 : v;
}
function satS16(v: number): number {
  return v > 32767 ? 32767 : v < -32768 ? -32768 : v;
}

/** Unsigned 32×32 → 64 into out[0] (lo), out[1] (hi). */
function mulU32(a: number, b: number, out: Int32Array): void {
  const a0 = a & 0xffff;
  const a1 = a >>> 16;
  const b0 = b & 0xffff;
  const b1 = b >>> 16;
  const p00 = a0 * b0;
  const p01 = a0 * b1;
  const p10 = a1 * b0;
  const p11 = a1 * b1;
  const mid = (p00 >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
  out[0] = (p00 & 0xffff) | (mid << 16);
  out[1] = p11 + (p01 >>> 16) + (p10 >>> 16) + (mid >>> 16);
}

function setInf(u: Unpacked, sign: number): void {
  u.cls = CLS_INF;
  u.sign = sign;
  u.exp = 16384;
  u.hi = 0x80000000;
  u.lo = 0;
  u.denormal = false;
}

function setZero(u: Unpacked, sign: number): void {
  u.cls = CLS_ZERO;
  u.sign = sign;
  u.exp = 0;
  u.hi = u.lo = 0;
  u.denormal = false;
}

/** Shift-right-with-jamming of the engine's work words. */
function shrJamWork(sf: SoftFloat, n: number): void {
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

/** Rounds w0:w1:w2 at the w1/w2 boundary with the engine's mode; sets FE_INEXACT. Returns 1 if incremented. */
function round64(sf: SoftFloat): number {
  const w2 = sf.w2;
  if (w2 === 0) return 0;
  sf.flags |= FE_INEXACT;
  let up: boolean;
  switch (sf.rc) {
    case 0:
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
  if (sf.w1 === 0) sf.w0 = (sf.w0 + 1) >>> 0;
  return 1;
}

/** Snapshot adapter of the SIMD state. */
class SimdSnapshot implements Snapshottable {
  readonly stateVersion = 1;
  constructor(
    private readonly s: Simd,
    readonly stateId: string,
  ) {}
  saveState(): StateValue {
    return { mxcsr: this.s.mxcsr, xmm: Array.from(this.s.xmm) };
  }
  loadState(data: StateValue): void {
    if (typeof data !== "object" || data === null || Array.isArray(data) || data instanceof Uint8Array) {
      throw new StateError("SSE_STATE", "SSE state is not an object");
    }
    const d = data as Record<string, StateValue>;
    const mx = d.mxcsr;
    if (typeof mx !== "number" || !Number.isInteger(mx) || mx & ~MXCSR_MASK) throw new StateError("SSE_STATE", 'SSE state field "mxcsr" is not a valid MXCSR');
    const xmm = d.xmm;
    if (!Array.isArray(xmm) || xmm.length !== 32 || xmm.some((v) => typeof v !== "number" || !Number.isInteger(v))) {
      throw new StateError("SSE_STATE", 'SSE state field "xmm" must be 32 integers');
    }
    this.s.mxcsr = mx;
    this.s.xmm.set((xmm as number[]).map((v) => v | 0));
  }
}
