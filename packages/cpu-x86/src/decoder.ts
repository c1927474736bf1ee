// Decoder from instruction bytes to records (decode-cache.ts) for the
// instruction forms that dominate real code: ALU, MOV, LEA, TEST, INC/DEC,
// PUSH/POP, shifts, MOVZX/MOVSX, IMUL, SETcc/CMOVcc and the near control
// transfers. Everything else (and anything with a LOCK or REP prefix, or
// crossing the end of the fetch window) becomes a generic record, which
// runs the byte-by-byte interpreter for that one instruction.
//
// A block runs until a control transfer; conditional branches do not end it
// (a taken one leaves it), so a loop body with early exits is one block.
//
// Record layout (REC_STRIDE int32 words):
//   word 0: id (bits 0-7) | length (8-11) | size (12-13: 0 byte, 1 word, 2 dword)
//           | sub (16-19: ALU op, condition, shift op...) | A (20-23) | B (24-27)
//           | register-only (bit 31, see REG_ONLY)
//   word 1: memory operand: base (0-3, 8 = none) | index (4-7, 8 = none)
//           | scale (8-9) | 16-bit addressing (bit 10) | segment (12-14)
//   word 2: displacement (or the relative branch offset)
//   word 3: immediate
// A is the ModRM reg field (or the destination register), B the ModRM rm
// register. Nothing in a record depends on state other than the bytes and
// CS.D, so a record stays valid until its page is written.
import * as C from "./constants.js";

/** Runs the interpreter for one instruction (always ends its block). */
export const H_GENERIC = 0;
/** ALU op `sub` reg32 A, reg32 B (writes A unless CMP). */
export const H_ALU_RR32 = 1;
/** ALU op on registers of size `size`. */
export const H_ALU_RR = 2;
/** ALU op reg32 A, imm. */
export const H_ALU_RI32 = 3;
/** ALU op reg A (size), imm. */
export const H_ALU_RI = 4;
/** ALU op [mem32], reg A (read-modify-write; not CMP). */
export const H_ALU_MR32 = 5;
/** ALU op [mem], reg A of size `size` (read-modify-write; not CMP). */
export const H_ALU_MR = 6;
/** ALU op reg32 A, [mem32] (CMP included). */
export const H_ALU_RM32 = 7;
/** ALU op reg A, [mem] of size `size`. */
export const H_ALU_RM = 8;
/** ALU op [mem32], imm (read-modify-write; not CMP). */
export const H_ALU_MI32 = 9;
/** ALU op [mem], imm of size `size` (read-modify-write; not CMP). */
export const H_ALU_MI = 10;
/** CMP [mem], reg A. */
export const H_CMP_MR = 11;
/** CMP [mem], imm. */
export const H_CMP_MI = 12;
/** TEST reg B, reg A. */
export const H_TEST_RR = 13;
/** TEST reg A, imm. */
export const H_TEST_RI = 14;
/** TEST [mem], reg A. */
export const H_TEST_MR = 15;
/** TEST [mem], imm. */
export const H_TEST_MI = 16;
/** INC reg A. */
export const H_INC_R = 17;
/** DEC reg A. */
export const H_DEC_R = 18;
/** INC [mem]. */
export const H_INC_M = 19;
/** DEC [mem]. */
export const H_DEC_M = 20;
/** PUSH reg A. */
export const H_PUSH_R = 21;
/** POP reg A. */
export const H_POP_R = 22;
/** PUSH imm. */
export const H_PUSH_I = 23;
/** PUSH [mem]. */
export const H_PUSH_M = 24;
/** MOV reg A, reg B. */
export const H_MOV_RR = 25;
/** MOV reg A, imm. */
export const H_MOV_RI = 26;
/** MOV reg A, [mem]. */
export const H_MOV_RM = 27;
/** MOV [mem], reg A. */
export const H_MOV_MR = 28;
/** MOV [mem], imm. */
export const H_MOV_MI = 29;
/** LEA reg A, mem. */
export const H_LEA = 30;
/** Jcc rel (condition `sub`); a taken branch ends the block, a not-taken one goes on in it. */
export const H_JCC = 31;
/** JMP rel. */
export const H_JMP = 32;
/** CALL rel. */
export const H_CALL = 33;
/** RET (imm = bytes to release). */
export const H_RET = 34;
/** JMP reg B. */
export const H_JMP_R = 35;
/** JMP [mem]. */
export const H_JMP_M = 36;
/** CALL reg B. */
export const H_CALL_R = 37;
/** CALL [mem]. */
export const H_CALL_M = 38;
/** LEAVE. */
export const H_LEAVE = 39;
/** Shift/rotate `sub & 7` of reg B by imm (or CL when sub bit 3). */
export const H_SHIFT_R = 40;
/** Shift/rotate of [mem]. */
export const H_SHIFT_M = 41;
/** MOVZX/MOVSX reg A, reg B (sub bit 0: sign-extend, bit 1: 16-bit source). */
export const H_MOVX_R = 42;
/** MOVZX/MOVSX reg A, [mem]. */
export const H_MOVX_M = 43;
/** IMUL reg A, reg B, imm (sub 0) or IMUL reg A, reg B (sub 1). */
export const H_IMUL_R = 44;
/** IMUL with a memory source. */
export const H_IMUL_M = 45;
/** SETcc reg8 B. */
export const H_SETCC_R = 46;
/** SETcc [mem8]. */
export const H_SETCC_M = 47;
/** CMOVcc reg A, reg B. */
export const H_CMOV_R = 48;
/** CMOVcc reg A, [mem]. */
export const H_CMOV_M = 49;
/** CBW/CWDE (sub 0) and CWD/CDQ (sub 1). */
export const H_CWDE = 50;
/** NOP (90, 0F 1F). */
export const H_NOP = 51;
/** NOT/NEG reg B (sub 2/3). */
export const H_NOTNEG_R = 52;
/** XCHG reg A, reg B. */
export const H_XCHG_RR = 53;
/** ADD reg32 A, reg32 B. */
export const H_ADD_RR32 = 54;
/** OR reg32 A, reg32 B. */
export const H_OR_RR32 = 55;
/** AND reg32 A, reg32 B. */
export const H_AND_RR32 = 56;
/** SUB reg32 A, reg32 B. */
export const H_SUB_RR32 = 57;
/** XOR reg32 A, reg32 B. */
export const H_XOR_RR32 = 58;
/** CMP reg32 A, reg32 B. */
export const H_CMP_RR32 = 59;
/** ADD reg32 A, imm. */
export const H_ADD_RI32 = 60;
/** OR reg32 A, imm. */
export const H_OR_RI32 = 61;
/** AND reg32 A, imm. */
export const H_AND_RI32 = 62;
/** SUB reg32 A, imm. */
export const H_SUB_RI32 = 63;
/** XOR reg32 A, imm. */
export const H_XOR_RI32 = 64;
/** CMP reg32 A, imm. */
export const H_CMP_RI32 = 65;
/** TEST reg32 B, reg32 A. */
export const H_TEST_RR32 = 66;
/** CMP reg32 A, reg32 B fused with the Jcc after it (condition `sub`, displacement word 2, CMP length word 1). */
export const H_CMPJ_RR32 = 67;
/** CMP reg32 A, imm fused with the Jcc after it. */
export const H_CMPJ_RI32 = 68;
/** TEST reg32 B, reg32 A fused with the Jcc after it. */
export const H_TESTJ_RR32 = 69;
/** INC reg32 A fused with the Jcc after it. */
export const H_INCJ_R32 = 70;
/** DEC reg32 A fused with the Jcc after it. */
export const H_DECJ_R32 = 71;
/**
 * MOVS, CMPS, STOS, LODS or SCAS without a REP prefix (sub: 0..4 in that
 * order); word 1: the source segment, bit 3 set for 32-bit addressing.
 */
export const H_STRING = 72;

// The 32-bit register forms of each ALU op (ADC and SBB use the generic one).
const RR32 = [H_ADD_RR32, H_OR_RR32, H_ALU_RR32, H_ALU_RR32, H_AND_RR32, H_SUB_RR32, H_XOR_RR32, H_CMP_RR32];
const RI32 = [H_ADD_RI32, H_OR_RI32, H_ALU_RI32, H_ALU_RI32, H_AND_RI32, H_SUB_RI32, H_XOR_RI32, H_CMP_RI32];

/**
 * Word-0 bit 31 of handlers that touch only registers and flags: they
 * cannot fault (a jump's CS limit check records its own position before
 * raising #GP) and nothing outside the CPU can observe them, so the run loop
 * skips the per-instruction bookkeeping (sliceCount, attention) for them.
 */
export const REG_ONLY = 1 << 31;

/** Word-0 flag of the decoder's result: the instruction ends its block. */
export const ENDS_BLOCK = 0x100;

/** No base or index register. */
export const NO_REG = 8;
/** Word-1 bit: 16-bit addressing. */
export const EA16 = 0x400;

// 16-bit addressing: base and index register of each ModRM rm (BX=3 BP=5 SI=6 DI=7).
const EA16_BASE = [3, 3, 5, 5, 6, 7, 5, 3];
const EA16_INDEX = [6, 7, 6, 7, NO_REG, NO_REG, NO_REG, NO_REG];

// ModRM decode results (the decoder is not re-entrant and not hot).
let mMod = 0;
let mReg = 0;
let mRm = 0;

/**
 * Decodes the ModRM byte (and SIB, displacement) at `m[p + i]` into word 1
 * and word 2 of record `r`.
 * @returns the index after them, or -1 if they run past `avail`
 */
function modrm(rec: Int32Array, r: number, m: Uint8Array, p: number, i: number, avail: number, a32: boolean, segOvr: number): number {
  if (i >= avail) return -1;
  const b = m[p + i++];
  const mod = b >> 6;
  const rm = b & 7;
  mMod = mod;
  mReg = (b >> 3) & 7;
  mRm = rm;
  if (mod === 3) return i;
  let base = NO_REG;
  let index = NO_REG;
  let scale = 0;
  let seg = C.DS;
  let disp = 0;
  let flags = 0;
  if (a32) {
    if (rm === 4) {
      if (i >= avail) return -1;
      const sib = m[p + i++];
      const sb = sib & 7;
      const si = (sib >> 3) & 7;
      scale = sib >> 6;
      if (si !== 4) index = si;
      if (sb === 5 && mod === 0) {
        if (i + 4 > avail) return -1;
        disp = m[p + i] | (m[p + i + 1] << 8) | (m[p + i + 2] << 16) | (m[p + i + 3] << 24);
        i += 4;
      } else {
        base = sb;
        if (sb === 4 || sb === 5) seg = C.SS;
      }
    } else if (rm === 5 && mod === 0) {
      if (i + 4 > avail) return -1;
      disp = m[p + i] | (m[p + i + 1] << 8) | (m[p + i + 2] << 16) | (m[p + i + 3] << 24);
      i += 4;
    } else {
      base = rm;
      if (rm === 5) seg = C.SS;
    }
    if (mod === 1) {
      if (i >= avail) return -1;
      disp = (m[p + i++] << 24) >> 24;
    } else if (mod === 2) {
      if (i + 4 > avail) return -1;
      disp = m[p + i] | (m[p + i + 1] << 8) | (m[p + i + 2] << 16) | (m[p + i + 3] << 24);
      i += 4;
    }
  } else {
    flags = EA16;
    if (rm === 6 && mod === 0) {
      if (i + 2 > avail) return -1;
      disp = m[p + i] | (m[p + i + 1] << 8);
      i += 2;
    } else {
      base = EA16_BASE[rm];
      index = EA16_INDEX[rm];
      if (rm === 2 || rm === 3 || rm === 6) seg = C.SS;
    }
    if (mod === 1) {
      if (i >= avail) return -1;
      disp = (m[p + i++] << 24) >> 24;
    } else if (mod === 2) {
      if (i + 2 > avail) return -1;
      disp = m[p + i] | (m[p + i + 1] << 8);
      i += 2;
    }
  }
  if (segOvr >= 0) seg = segOvr;
  rec[r + 1] = base | (index << 4) | (scale << 8) | flags | (seg << 12);
  rec[r + 2] = disp;
  return i;
}

/** Reads an immediate of size `s` (0, 1, 2) at m[p + i] (the caller checked it fits). */
function imm(m: Uint8Array, at: number, s: number): number {
  if (s === 0) return m[at];
  if (s === 1) return m[at] | (m[at + 1] << 8);
  return m[at] | (m[at + 1] << 8) | (m[at + 2] << 16) | (m[at + 3] << 24);
}

/** Word 0 of a record. */
// Handlers that are register-only (REG_ONLY).
const PURE = new Uint8Array(256);
for (const id of [
  H_ALU_RR32, H_ALU_RR, H_ALU_RI32, H_ALU_RI, H_TEST_RR, H_TEST_RI, H_INC_R, H_DEC_R, H_MOV_RR, H_MOV_RI, H_LEA, H_JCC, H_JMP,
  H_SHIFT_R, H_MOVX_R, H_IMUL_R, H_SETCC_R, H_CMOV_R, H_CWDE, H_NOP, H_NOTNEG_R, H_XCHG_RR,
  H_ADD_RR32, H_OR_RR32, H_AND_RR32, H_SUB_RR32, H_XOR_RR32, H_CMP_RR32,
  H_ADD_RI32, H_OR_RI32, H_AND_RI32, H_SUB_RI32, H_XOR_RI32, H_CMP_RI32, H_TEST_RR32,
  H_CMPJ_RR32, H_CMPJ_RI32, H_TESTJ_RR32, H_INCJ_R32, H_DECJ_R32,
]) PURE[id] = 1;

function w0(id: number, len: number, size: number, sub: number, a: number, b: number): number {
  return id | (len << 8) | (size << 12) | (sub << 16) | (a << 20) | (b << 24) | (PURE[id] << 31);
}

/**
 * Decodes the instruction at `m[p]` (`avail` bytes of it are in the fetch
 * window) with CS.D = `code32` into record `r` of `rec`.
 * @returns its length, with {@link ENDS_BLOCK} set for control transfers; 0 when it is not one of the forms decoded here
 */
export function decodeInstruction(rec: Int32Array, r: number, m: Uint8Array, p: number, avail: number, code32: boolean): number {
  let o32 = code32;
  let a32 = code32;
  let segOvr = -1;
  let i = 0;
  let op = 0;
  for (;;) {
    if (i >= avail || i > 3) return 0;
    op = m[p + i++];
    if (op === 0x66) o32 = !code32;
    else if (op === 0x67) a32 = !code32;
    else if ((op & 0xe7) === 0x26) segOvr = (op >> 3) & 3;
    else if (op === 0x64 || op === 0x65) segOvr = op - 0x60;
    else break;
  }
  const vs = o32 ? 2 : 1;
  rec[r + 1] = 0;
  rec[r + 2] = 0;
  rec[r + 3] = 0;
  if (op === 0x0f) return decode0F(rec, r, m, p, i, avail, vs, a32, segOvr);
  if (op < 0x40) {
    const form = op & 7;
    if (form > 5) return 0; // segment pushes/pops, prefixes, BCD
    const aop = (op >> 3) & 7;
    const s = form & 1 ? vs : 0;
    if (form >= 4) {
      const n = 1 << s;
      if (i + n > avail) return 0;
      rec[r + 3] = imm(m, p + i, s);
      i += n;
      rec[r] = w0(s === 2 ? RI32[aop] : H_ALU_RI, i, s, aop, 0, 0);
      return i;
    }
    i = modrm(rec, r, m, p, i, avail, a32, segOvr);
    if (i < 0) return 0;
    if (mMod === 3) {
      const dst = form < 2 ? mRm : mReg;
      const src = form < 2 ? mReg : mRm;
      rec[r] = w0(s === 2 ? RR32[aop] : H_ALU_RR, i, s, aop, dst, src);
    } else if (form < 2) {
      const id = aop === 7 ? H_CMP_MR : s === 2 ? H_ALU_MR32 : H_ALU_MR;
      rec[r] = w0(id, i, s, aop, mReg, 0);
    } else rec[r] = w0(s === 2 ? H_ALU_RM32 : H_ALU_RM, i, s, aop, mReg, 0);
    return i;
  }
  if (op < 0x50) {
    rec[r] = w0(op < 0x48 ? H_INC_R : H_DEC_R, i, vs, 0, op & 7, 0);
    return i;
  }
  if (op < 0x58) {
    rec[r] = w0(H_PUSH_R, i, vs, 0, op & 7, 0);
    return i;
  }
  if (op < 0x60) {
    rec[r] = w0(H_POP_R, i, vs, 0, op & 7, 0);
    return i;
  }
  if (op >= 0x70 && op < 0x80) {
    if (i >= avail) return 0;
    rec[r + 2] = (m[p + i++] << 24) >> 24;
    rec[r] = w0(H_JCC, i, vs, op & 15, 0, 0);
    return i; // the block goes on along the not-taken path
  }
  if (op >= 0xb0 && op < 0xc0) {
    const s = op < 0xb8 ? 0 : vs;
    const n = 1 << s;
    if (i + n > avail) return 0;
    rec[r + 3] = imm(m, p + i, s);
    i += n;
    rec[r] = w0(H_MOV_RI, i, s, 0, op & 7, 0);
    return i;
  }
  switch (op) {
    case 0x68:
    case 0x6a: {
      const s = op === 0x68 ? vs : 0;
      const n = 1 << s;
      if (i + n > avail) return 0;
      rec[r + 3] = s === 0 ? (m[p + i] << 24) >> 24 : imm(m, p + i, s);
      i += n;
      rec[r] = w0(H_PUSH_I, i, vs, 0, 0, 0);
      return i;
    }
    case 0x69:
    case 0x6b: {
      i = modrm(rec, r, m, p, i, avail, a32, segOvr);
      if (i < 0) return 0;
      const s = op === 0x69 ? vs : 0;
      const n = 1 << s;
      if (i + n > avail) return 0;
      rec[r + 3] = s === 0 ? (m[p + i] << 24) >> 24 : imm(m, p + i, s);
      i += n;
      rec[r] = w0(mMod === 3 ? H_IMUL_R : H_IMUL_M, i, vs, 0, mReg, mRm);
      return i;
    }
    case 0x80:
    case 0x81:
    case 0x82:
    case 0x83: {
      const s = op & 1 ? vs : 0;
      i = modrm(rec, r, m, p, i, avail, a32, segOvr);
      if (i < 0) return 0;
      const n = op === 0x81 ? 1 << s : 1;
      if (i + n > avail) return 0;
      rec[r + 3] = op === 0x83 ? (m[p + i] << 24) >> 24 : imm(m, p + i, s);
      i += n;
      const aop = mReg;
      if (mMod === 3) rec[r] = w0(s === 2 ? RI32[aop] : H_ALU_RI, i, s, aop, mRm, 0);
      else rec[r] = w0(aop === 7 ? H_CMP_MI : s === 2 ? H_ALU_MI32 : H_ALU_MI, i, s, aop, 0, 0);
      return i;
    }
    case 0x84:
    case 0x85: {
      const s = op & 1 ? vs : 0;
      i = modrm(rec, r, m, p, i, avail, a32, segOvr);
      if (i < 0) return 0;
      rec[r] = w0(mMod === 3 ? (s === 2 ? H_TEST_RR32 : H_TEST_RR) : H_TEST_MR, i, s, 0, mReg, mRm);
      return i;
    }
    case 0x87: {
      i = modrm(rec, r, m, p, i, avail, a32, segOvr);
      if (i < 0 || mMod !== 3) return 0; // a memory XCHG is locked: the interpreter does it
      rec[r] = w0(H_XCHG_RR, i, vs, 0, mReg, mRm);
      return i;
    }
    case 0x88:
    case 0x89:
    case 0x8a:
    case 0x8b: {
      const s = op & 1 ? vs : 0;
      i = modrm(rec, r, m, p, i, avail, a32, segOvr);
      if (i < 0) return 0;
      if (mMod === 3) rec[r] = op < 0x8a ? w0(H_MOV_RR, i, s, 0, mRm, mReg) : w0(H_MOV_RR, i, s, 0, mReg, mRm);
      else rec[r] = w0(op < 0x8a ? H_MOV_MR : H_MOV_RM, i, s, 0, mReg, 0);
      return i;
    }
    case 0x8d: {
      i = modrm(rec, r, m, p, i, avail, a32, segOvr);
      if (i < 0 || mMod === 3) return 0;
      rec[r] = w0(H_LEA, i, vs, 0, mReg, 0);
      return i;
    }
    case 0x90:
      rec[r] = w0(H_NOP, i, 0, 0, 0, 0);
      return i;
    case 0x98:
    case 0x99:
      rec[r] = w0(H_CWDE, i, vs, op & 1, 0, 0);
      return i;
    case 0xa0:
    case 0xa1:
    case 0xa2:
    case 0xa3: {
      const s = op & 1 ? vs : 0;
      const n = a32 ? 4 : 2;
      if (i + n > avail) return 0;
      rec[r + 1] = NO_REG | (NO_REG << 4) | (a32 ? 0 : EA16) | ((segOvr >= 0 ? segOvr : C.DS) << 12);
      rec[r + 2] = imm(m, p + i, a32 ? 2 : 1);
      i += n;
      rec[r] = w0(op < 0xa2 ? H_MOV_RM : H_MOV_MR, i, s, 0, 0, 0);
      return i;
    }
    case 0xa4:
    case 0xa5:
    case 0xa6:
    case 0xa7:
    case 0xaa:
    case 0xab:
    case 0xac:
    case 0xad:
    case 0xae:
    case 0xaf:
      // REP prefixes end the prefix loop above unparsed, so these run once.
      rec[r + 1] = (segOvr >= 0 ? segOvr : C.DS) | (a32 ? 8 : 0);
      rec[r] = w0(H_STRING, i, op & 1 ? vs : 0, op < 0xa8 ? (op - 0xa4) >> 1 : ((op - 0xa8) >> 1) + 1, 0, 0);
      return i;
    case 0xa8:
    case 0xa9: {
      const s = op & 1 ? vs : 0;
      const n = 1 << s;
      if (i + n > avail) return 0;
      rec[r + 3] = imm(m, p + i, s);
      i += n;
      rec[r] = w0(H_TEST_RI, i, s, 0, 0, 0);
      return i;
    }
    case 0xc0:
    case 0xc1:
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: {
      const s = op & 1 ? vs : 0;
      i = modrm(rec, r, m, p, i, avail, a32, segOvr);
      if (i < 0) return 0;
      let sub = mReg;
      if (op < 0xd0) {
        if (i >= avail) return 0;
        rec[r + 3] = m[p + i++];
      } else if (op < 0xd2) rec[r + 3] = 1;
      else sub |= 8;
      rec[r] = w0(mMod === 3 ? H_SHIFT_R : H_SHIFT_M, i, s, sub, 0, mRm);
      return i;
    }
    case 0xc2:
    case 0xc3:
      if (op === 0xc2) {
        if (i + 2 > avail) return 0;
        rec[r + 3] = m[p + i] | (m[p + i + 1] << 8);
        i += 2;
      }
      rec[r] = w0(H_RET, i, vs, 0, 0, 0);
      return i | ENDS_BLOCK;
    case 0xc6:
    case 0xc7: {
      const s = op & 1 ? vs : 0;
      i = modrm(rec, r, m, p, i, avail, a32, segOvr);
      if (i < 0 || mReg !== 0) return 0;
      const n = 1 << s;
      if (i + n > avail) return 0;
      rec[r + 3] = imm(m, p + i, s);
      i += n;
      rec[r] = mMod === 3 ? w0(H_MOV_RI, i, s, 0, mRm, 0) : w0(H_MOV_MI, i, s, 0, 0, 0);
      return i;
    }
    case 0xc9:
      rec[r] = w0(H_LEAVE, i, vs, 0, 0, 0);
      return i;
    case 0xe8:
    case 0xe9:
    case 0xeb: {
      const s = op === 0xeb ? 0 : vs;
      const n = 1 << s;
      if (i + n > avail) return 0;
      rec[r + 2] = s === 0 ? (m[p + i] << 24) >> 24 : imm(m, p + i, s);
      i += n;
      rec[r] = w0(op === 0xe8 ? H_CALL : H_JMP, i, vs, 0, 0, 0);
      return i | ENDS_BLOCK;
    }
    case 0xf6:
    case 0xf7: {
      const s = op & 1 ? vs : 0;
      i = modrm(rec, r, m, p, i, avail, a32, segOvr);
      if (i < 0) return 0;
      if (mReg < 2) {
        const n = 1 << s;
        if (i + n > avail) return 0;
        rec[r + 3] = imm(m, p + i, s);
        i += n;
        rec[r] = mMod === 3 ? w0(H_TEST_RI, i, s, 0, mRm, 0) : w0(H_TEST_MI, i, s, 0, 0, 0);
        return i;
      }
      if ((mReg === 2 || mReg === 3) && mMod === 3) {
        rec[r] = w0(H_NOTNEG_R, i, s, mReg, 0, mRm);
        return i;
      }
      return 0;
    }
    case 0xfe:
    case 0xff: {
      const s = op & 1 ? vs : 0;
      i = modrm(rec, r, m, p, i, avail, a32, segOvr);
      if (i < 0) return 0;
      const reg = mReg;
      const mem = mMod !== 3;
      if (reg < 2) {
        rec[r] = w0(mem ? (reg === 0 ? H_INC_M : H_DEC_M) : reg === 0 ? H_INC_R : H_DEC_R, i, s, 0, mRm, 0);
        return i;
      }
      if (op === 0xfe) return 0;
      if (reg === 2) {
        rec[r] = w0(mem ? H_CALL_M : H_CALL_R, i, vs, 0, 0, mRm);
        return i | ENDS_BLOCK;
      }
      if (reg === 4) {
        rec[r] = w0(mem ? H_JMP_M : H_JMP_R, i, vs, 0, 0, mRm);
        return i | ENDS_BLOCK;
      }
      if (reg === 6 && mem) {
        rec[r] = w0(H_PUSH_M, i, vs, 0, 0, 0);
        return i;
      }
      return 0;
    }
    default:
      return 0;
  }
}

function decode0F(rec: Int32Array, r: number, m: Uint8Array, p: number, i: number, avail: number, vs: number, a32: boolean, segOvr: number): number {
  if (i >= avail) return 0;
  const op = m[p + i++];
  if (op >= 0x80 && op < 0x90) {
    const n = vs === 2 ? 4 : 2;
    if (i + n > avail) return 0;
    rec[r + 2] = vs === 2 ? imm(m, p + i, 2) : ((m[p + i] | (m[p + i + 1] << 8)) << 16) >> 16;
    i += n;
    rec[r] = w0(H_JCC, i, vs, op & 15, 0, 0);
    return i;
  }
  if (op >= 0x90 && op < 0xa0) {
    i = modrm(rec, r, m, p, i, avail, a32, segOvr);
    if (i < 0) return 0;
    rec[r] = w0(mMod === 3 ? H_SETCC_R : H_SETCC_M, i, 0, op & 15, 0, mRm);
    return i;
  }
  if (op >= 0x40 && op < 0x50) {
    i = modrm(rec, r, m, p, i, avail, a32, segOvr);
    if (i < 0) return 0;
    rec[r] = w0(mMod === 3 ? H_CMOV_R : H_CMOV_M, i, vs, op & 15, mReg, mRm);
    return i;
  }
  switch (op) {
    case 0x1f:
      i = modrm(rec, r, m, p, i, avail, a32, segOvr);
      if (i < 0) return 0;
      rec[r] = w0(H_NOP, i, 0, 0, 0, 0);
      return i;
    case 0xaf:
      i = modrm(rec, r, m, p, i, avail, a32, segOvr);
      if (i < 0) return 0;
      rec[r] = w0(mMod === 3 ? H_IMUL_R : H_IMUL_M, i, vs, 1, mReg, mRm);
      return i;
    case 0xb6:
    case 0xb7:
    case 0xbe:
    case 0xbf:
      i = modrm(rec, r, m, p, i, avail, a32, segOvr);
      if (i < 0) return 0;
      rec[r] = w0(mMod === 3 ? H_MOVX_R : H_MOVX_M, i, vs, (op >= 0xbe ? 1 : 0) | (op & 1 ? 2 : 0), mReg, mRm);
      return i;
    default:
      return 0;
  }
}

/** Whether record word 0 `w` is a fused compare-and-branch (two instructions in one record). */
export function isFused(w: number): boolean {
  const id = w & 0xff;
  return id >= H_CMPJ_RR32 && id <= H_DECJ_R32;
}

/**
 * Fuses record `r` (a 32-bit CMP or TEST of registers, or INC/DEC of a
 * 32-bit register) with record `j`, the
 * Jcc right after it, into record `r` (macro-op fusion: the pair is one
 * dispatch; the record still counts as two instructions, and the run loop
 * can retire the compare alone).
 * @returns whether they were fused
 */
export function fuseCompareBranch(rec: Int32Array, r: number, j: number): boolean {
  const w = rec[r];
  const id = w & 0xff;
  const r32 = ((w >> 12) & 3) === 2;
  const fused =
    id === H_CMP_RR32 ? H_CMPJ_RR32 : id === H_CMP_RI32 ? H_CMPJ_RI32 : id === H_TEST_RR32 ? H_TESTJ_RR32 : id === H_INC_R && r32 ? H_INCJ_R32 : id === H_DEC_R && r32 ? H_DECJ_R32 : -1;
  const wj = rec[j];
  if (fused < 0 || (wj & 0xff) !== H_JCC) return false;
  const lenCmp = (w >> 8) & 15;
  const len = lenCmp + ((wj >> 8) & 15);
  if (len > 15) return false;
  // Word 0: the pair's id and length, the Jcc's operand size and condition, the compare's registers.
  rec[r] = fused | (len << 8) | (wj & 0x3000) | (wj & 0xf0000) | (w & 0x0ff00000) | REG_ONLY;
  rec[r + 1] = lenCmp;
  rec[r + 2] = rec[j + 2];
  return true;
}
