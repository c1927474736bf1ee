// Executes decoded blocks (decoder.ts records). Each handler does exactly
// what the byte-by-byte interpreter does for the same instruction, in the
// same order of checks, through the same Cpu helpers (segment checks, TLB,
// lazy flags), so the two agree instruction by instruction.
import type { Cpu } from "./cpu.js";
import { GENERIC_BLOCK, REC_STRIDE } from "./decode-cache.js";
import * as D from "./decoder.js";
import { S_EIP, fromStateBlock, toStateBlock } from "./state-block.js";

/** Byte offset of each 8-bit register (AL CL DL BL AH CH DH BH) in the register file. */
const REG8 = new Int32Array([0, 4, 8, 12, 1, 5, 9, 13]);

/** Offset of a record's memory operand (its segment is `(rec[r + 1] >> 12) & 7`). */
function ea(cpu: Cpu, rec: Int32Array, r: number): number {
  const w = rec[r + 1];
  const base = w & 15;
  const index = (w >> 4) & 15;
  let off = rec[r + 2];
  if ((w & D.EA16) === 0) {
    const regs = cpu.regs;
    if (base !== D.NO_REG) off = (off + regs[base]) | 0;
    if (index !== D.NO_REG) off = (off + (regs[index] << ((w >> 8) & 3))) | 0;
    return off;
  }
  const r16 = cpu.r16;
  if (base !== D.NO_REG) off += r16[base << 1];
  if (index !== D.NO_REG) off += r16[index << 1];
  return off & 0xffff;
}

/** Segment of a record's memory operand. */
function seg(rec: Int32Array, r: number): number {
  return (rec[r + 1] >> 12) & 7;
}

/** A near transfer to `t` (16-bit operand size truncates it) after the CS limit check. */
function jumpTo(cpu: Cpu, t: number, size: number): void {
  if (size !== 2) t &= 0xffff;
  if (t >>> 0 > cpu.csLimitBits >>> 0) cpu.raiseGp(0);
  cpu.eip = t;
}

/** Linear address of a read-modify-write memory operand, checked for writing and probed in the TLB. */
function rmw(cpu: Cpu, rec: Int32Array, r: number, s: number): number {
  const len = 1 << s;
  const la = cpu.lin(seg(rec, r), ea(cpu, rec, r), len, true);
  cpu.mmu.probeWrite(la, len);
  return la;
}

function aluRR32(cpu: Cpu, w: number): void {
  const regs = cpu.regs;
  const aop = (w >> 16) & 15;
  const a = (w >> 20) & 15;
  const res = cpu.alu(aop, regs[a], regs[(w >> 24) & 15], 2);
  if (aop !== 7) regs[a] = res;
}

function aluRR(cpu: Cpu, w: number): void {
  const s = (w >> 12) & 3;
  const aop = (w >> 16) & 15;
  const a = (w >> 20) & 15;
  const res = cpu.alu(aop, cpu.getReg(s, a), cpu.getReg(s, (w >> 24) & 15), s);
  if (aop !== 7) cpu.setReg(s, a, res);
}

function aluRI32(cpu: Cpu, rec: Int32Array, r: number, w: number): void {
  const regs = cpu.regs;
  const aop = (w >> 16) & 15;
  const a = (w >> 20) & 15;
  const res = cpu.alu(aop, regs[a], rec[r + 3], 2);
  if (aop !== 7) regs[a] = res;
}

function aluRI(cpu: Cpu, rec: Int32Array, r: number, w: number): void {
  const s = (w >> 12) & 3;
  const aop = (w >> 16) & 15;
  const a = (w >> 20) & 15;
  const res = cpu.alu(aop, cpu.getReg(s, a), rec[r + 3], s);
  if (aop !== 7) cpu.setReg(s, a, res);
}

function aluMR(cpu: Cpu, rec: Int32Array, r: number, w: number): void {
  const s = (w >> 12) & 3;
  const la = rmw(cpu, rec, r, s);
  const res = cpu.alu((w >> 16) & 15, cpu.readLin(s, la), cpu.getReg(s, (w >> 20) & 15), s);
  cpu.writeLin(s, la, res);
}

function aluRM32(cpu: Cpu, rec: Int32Array, r: number, w: number): void {
  const regs = cpu.regs;
  const aop = (w >> 16) & 15;
  const a = (w >> 20) & 15;
  const res = cpu.alu(aop, regs[a], cpu.read32(seg(rec, r), ea(cpu, rec, r)), 2);
  if (aop !== 7) regs[a] = res;
}

function aluRM(cpu: Cpu, rec: Int32Array, r: number, w: number): void {
  const s = (w >> 12) & 3;
  const aop = (w >> 16) & 15;
  const a = (w >> 20) & 15;
  const res = cpu.alu(aop, cpu.getReg(s, a), cpu.read(s, seg(rec, r), ea(cpu, rec, r)), s);
  if (aop !== 7) cpu.setReg(s, a, res);
}

function aluMI(cpu: Cpu, rec: Int32Array, r: number, w: number): void {
  const s = (w >> 12) & 3;
  const la = rmw(cpu, rec, r, s);
  const res = cpu.alu((w >> 16) & 15, cpu.readLin(s, la), rec[r + 3], s);
  cpu.writeLin(s, la, res);
}

function cmpMR(cpu: Cpu, rec: Int32Array, r: number, w: number): void {
  const s = (w >> 12) & 3;
  cpu.alu(7, cpu.read(s, seg(rec, r), ea(cpu, rec, r)), cpu.getReg(s, (w >> 20) & 15), s);
}

function cmpMI(cpu: Cpu, rec: Int32Array, r: number, w: number): void {
  const s = (w >> 12) & 3;
  cpu.alu(7, cpu.read(s, seg(rec, r), ea(cpu, rec, r)), rec[r + 3], s);
}

function testRR(cpu: Cpu, w: number): void {
  const s = (w >> 12) & 3;
  cpu.logic(cpu.getReg(s, (w >> 24) & 15) & cpu.getReg(s, (w >> 20) & 15), s);
}

function testRI(cpu: Cpu, rec: Int32Array, r: number, w: number): void {
  const s = (w >> 12) & 3;
  cpu.logic(cpu.getReg(s, (w >> 20) & 15) & rec[r + 3], s);
}

function testMR(cpu: Cpu, rec: Int32Array, r: number, w: number): void {
  const s = (w >> 12) & 3;
  cpu.logic(cpu.read(s, seg(rec, r), ea(cpu, rec, r)) & cpu.getReg(s, (w >> 20) & 15), s);
}

function testMI(cpu: Cpu, rec: Int32Array, r: number, w: number): void {
  const s = (w >> 12) & 3;
  cpu.logic(cpu.read(s, seg(rec, r), ea(cpu, rec, r)) & rec[r + 3], s);
}

function incDecR(cpu: Cpu, w: number, dec: boolean): void {
  const s = (w >> 12) & 3;
  const a = (w >> 20) & 15;
  if (s === 2) {
    const regs = cpu.regs;
    regs[a] = dec ? cpu.dec(regs[a], 2) : cpu.inc(regs[a], 2);
    return;
  }
  const v = cpu.getReg(s, a);
  cpu.setReg(s, a, dec ? cpu.dec(v, s) : cpu.inc(v, s));
}

function incDecM(cpu: Cpu, rec: Int32Array, r: number, w: number, dec: boolean): void {
  const s = (w >> 12) & 3;
  const la = rmw(cpu, rec, r, s);
  const v = cpu.readLin(s, la);
  cpu.writeLin(s, la, dec ? cpu.dec(v, s) : cpu.inc(v, s));
}

function movRM(cpu: Cpu, rec: Int32Array, r: number, w: number): void {
  const s = (w >> 12) & 3;
  const a = (w >> 20) & 15;
  if (s === 2) cpu.regs[a] = cpu.read32(seg(rec, r), ea(cpu, rec, r));
  else cpu.setReg(s, a, cpu.read(s, seg(rec, r), ea(cpu, rec, r)));
}

function movMR(cpu: Cpu, rec: Int32Array, r: number, w: number): void {
  const s = (w >> 12) & 3;
  const a = (w >> 20) & 15;
  if (s === 2) cpu.write32(seg(rec, r), ea(cpu, rec, r), cpu.regs[a]);
  else cpu.write(s, seg(rec, r), ea(cpu, rec, r), cpu.getReg(s, a));
}

function movMI(cpu: Cpu, rec: Int32Array, r: number, w: number): void {
  const s = (w >> 12) & 3;
  if (s === 0) cpu.write8(seg(rec, r), ea(cpu, rec, r), rec[r + 3]);
  else if (s === 2) cpu.write32(seg(rec, r), ea(cpu, rec, r), rec[r + 3]);
  else cpu.write(1, seg(rec, r), ea(cpu, rec, r), rec[r + 3]);
}

function callRel(cpu: Cpu, rec: Int32Array, r: number, w: number): void {
  const s = (w >> 12) & 3;
  let t = (cpu.eip + rec[r + 2]) | 0;
  if (s !== 2) t &= 0xffff;
  // The target is checked before the return address is pushed (Intel SDM Vol. 2 CALL).
  if (t >>> 0 > cpu.csLimitBits >>> 0) cpu.raiseGp(0);
  cpu.push(s, cpu.eip);
  cpu.eip = t;
}

function callTo(cpu: Cpu, t: number, s: number): void {
  if (s !== 2) t &= 0xffff;
  if (t >>> 0 > cpu.csLimitBits >>> 0) cpu.raiseGp(0);
  cpu.push(s, cpu.eip);
  cpu.eip = t;
}

function ret(cpu: Cpu, rec: Int32Array, r: number, w: number): void {
  const s = (w >> 12) & 3;
  // ESP moves only after the target passed the CS limit check (a fault restores nothing).
  jumpTo(cpu, cpu.peek(s, 0), s);
  cpu.addSp((s === 2 ? 4 : 2) + rec[r + 3]);
}

function leave(cpu: Cpu, w: number): void {
  const s = (w >> 12) & 3;
  const regs = cpu.regs;
  const v = cpu.read(s, 2, cpu.stack32 ? regs[5] : regs[5] & 0xffff);
  if (cpu.stack32) regs[4] = (regs[5] + (s === 2 ? 4 : 2)) | 0;
  else cpu.r16[8] = (regs[5] + (s === 2 ? 4 : 2)) & 0xffff;
  cpu.setReg(s, 5, v);
}

function shiftR(cpu: Cpu, rec: Int32Array, r: number, w: number): void {
  const s = (w >> 12) & 3;
  const sub = (w >> 16) & 15;
  const b = (w >> 24) & 15;
  const count = sub & 8 ? cpu.r8[4] : rec[r + 3];
  cpu.setReg(s, b, cpu.shift(sub & 7, cpu.getReg(s, b), count, s));
}

function shiftM(cpu: Cpu, rec: Int32Array, r: number, w: number): void {
  const s = (w >> 12) & 3;
  const sub = (w >> 16) & 15;
  const count = sub & 8 ? cpu.r8[4] : rec[r + 3];
  const la = rmw(cpu, rec, r, s);
  const res = cpu.shift(sub & 7, cpu.readLin(s, la), count, s);
  cpu.writeLin(s, la, res);
}

function extend(v: number, sub: number): number {
  if ((sub & 1) === 0) return v;
  return sub & 2 ? (v << 16) >> 16 : (v << 24) >> 24;
}

function movxR(cpu: Cpu, w: number): void {
  const sub = (w >> 16) & 15;
  const v = cpu.getReg(sub & 2 ? 1 : 0, (w >> 24) & 15);
  cpu.setReg((w >> 12) & 3, (w >> 20) & 15, extend(v, sub));
}

function movxM(cpu: Cpu, rec: Int32Array, r: number, w: number): void {
  const sub = (w >> 16) & 15;
  const v = cpu.read(sub & 2 ? 1 : 0, seg(rec, r), ea(cpu, rec, r));
  cpu.setReg((w >> 12) & 3, (w >> 20) & 15, extend(v, sub));
}

function imulR(cpu: Cpu, rec: Int32Array, r: number, w: number): void {
  const s = (w >> 12) & 3;
  const a = (w >> 20) & 15;
  const b = cpu.getReg(s, (w >> 24) & 15);
  const res = (w >> 16) & 1 ? cpu.imul2(cpu.getReg(s, a), b, s) : cpu.imul2(b, rec[r + 3], s);
  cpu.setReg(s, a, res);
}

function imulM(cpu: Cpu, rec: Int32Array, r: number, w: number): void {
  const s = (w >> 12) & 3;
  const a = (w >> 20) & 15;
  if ((w >> 16) & 1) {
    const x = cpu.getReg(s, a);
    cpu.setReg(s, a, cpu.imul2(x, cpu.read(s, seg(rec, r), ea(cpu, rec, r)), s));
  } else cpu.setReg(s, a, cpu.imul2(cpu.read(s, seg(rec, r), ea(cpu, rec, r)), rec[r + 3], s));
}

function cwde(cpu: Cpu, w: number): void {
  const regs = cpu.regs;
  const s = (w >> 12) & 3;
  if ((w >> 16) & 1) {
    if (s === 2) regs[2] = regs[0] >> 31;
    else cpu.r16[4] = (regs[0] << 16) >> 31;
  } else if (s === 2) regs[0] = (regs[0] << 16) >> 16;
  else cpu.r16[0] = (regs[0] << 24) >> 24;
}

function notNegR(cpu: Cpu, w: number): void {
  const s = (w >> 12) & 3;
  const b = (w >> 24) & 15;
  if (((w >> 16) & 15) === 2) cpu.setReg(s, b, ~cpu.getReg(s, b));
  else cpu.setReg(s, b, cpu.alu(5, 0, cpu.getReg(s, b), s));
}

function xchgRR(cpu: Cpu, w: number): void {
  const s = (w >> 12) & 3;
  const a = (w >> 20) & 15;
  const b = (w >> 24) & 15;
  const v = cpu.getReg(s, b);
  cpu.setReg(s, b, cpu.getReg(s, a));
  cpu.setReg(s, a, v);
}

/**
 * Condition `cc` (Jcc/SETcc/CMOVcc low nibble), with the cases that follow
 * a 32-bit CMP/SUB, a logic op or INC/DEC computed directly from the lazy
 * operands; anything else asks Cpu.cond.
 */
function condition(cpu: Cpu, cc: number): boolean {
  const lazy = cpu.lazy;
  if ((lazy & 0x8d4) === 0x8d4) {
    // ZF, SF, OF (and PF, AF) are lazy: all but CF come from the operands. Shifting a byte or
    // word operand to the top of the int32 keeps its zero test, sign and (un)signed order.
    const fS = cpu.fS;
    const sh = fS === 2 ? 0 : fS === 1 ? 16 : 24;
    const op = cpu.fOp;
    const res = cpu.fR << sh;
    let t: boolean;
    switch (cc >> 1) {
      case 2: // E
        t = res === 0;
        break;
      case 4: // S
        t = res < 0;
        break;
      case 1: // B
        if ((lazy & 1) === 0) return cpu.cond(cc);
        t = op === 3 ? cpu.fA << sh >>> 0 < cpu.fB << sh >>> 0 : op === 0 ? false : cpu.getCF() !== 0;
        break;
      case 3: // BE
        if ((lazy & 1) === 0) return cpu.cond(cc);
        t = op === 3 ? cpu.fA << sh >>> 0 <= cpu.fB << sh >>> 0 : op === 0 ? res === 0 : cpu.getCF() !== 0 || res === 0;
        break;
      case 6: // L: SF != OF
        if (op === 3) t = cpu.fA << sh < cpu.fB << sh;
        else if (op === 0) t = res < 0;
        else return cpu.cond(cc);
        break;
      case 7: // LE: ZF or SF != OF
        if (op === 3) t = cpu.fA << sh <= cpu.fB << sh;
        else if (op === 0) t = res <= 0;
        else return cpu.cond(cc);
        break;
      default:
        return cpu.cond(cc);
    }
    return (cc & 1) === 0 ? t : !t;
  }
  return cpu.cond(cc);
}

/**
 * The decoded block at `eip`: the fetch window's page map has it when EIP
 * is in the window and the block fits (the window is at most a page, so the
 * offset in it fits an int32 when EIP is inside); otherwise
 * Cpu.lookupBlock finds or decodes it. Small enough for V8 to inline.
 */
function blockAt(cpu: Cpu, eip: number, bBytes: Uint16Array): number {
  const d = (eip - cpu.winStart) | 0;
  const winLen = cpu.winLen;
  if (d >= 0 && d <= winLen) {
    const b = cpu.curMap[(cpu.csBase + eip) & 0xfff];
    if (b !== 0 && ((d + bBytes[b]) | 0) <= ((winLen + 1) | 0)) return b;
  }
  return cpu.lookupBlock();
}

/**
 * Runs decoded blocks until the slice budget is used up or an instruction
 * needs the run loop's attention (exits, interrupts, a write to decoded
 * code, single-stepping), with `n` instructions already retired in the
 * slice. Exceptions propagate to the run loop with `instrStart`, `instrEsp`
 * and `sliceCount` describing the faulting instruction.
 *
 * The hottest handlers are written out here rather than called: V8 inlines
 * only a limited amount of code into one function, and a call per
 * instruction costs as much as the instruction. Each does what the
 * byte-by-byte interpreter does for the same bytes.
 *
 * With the block compiler, it also counts block starts, compiles hot
 * blocks, and returns (with cpu.eip at the block) when it reaches a
 * compiled block, unless `interpretFirst` asks it to run the first block
 * itself (the compiled code could not run it).
 * @returns the instructions retired in the slice
 */
export function runBlocks(cpu: Cpu, n: number, budget: number, interpretFirst = false): number {
  const dc = cpu.decoded;
  const rec = dc.rec;
  const bBytes = dc.bBytes;
  const bStart = dc.bStart;
  const bCount = dc.bCount;
  const regs = cpu.regs;
  const jit = cpu.jit;
  const states = jit !== undefined ? jit.states : undefined;
  const hits = jit !== undefined ? jit.hits : undefined;
  const threshold = jit !== undefined ? jit.threshold : 0;
  let eip = cpu.eip;
  if (cpu.attention !== 0) {
    // Single-stepping and interrupt shadows: exactly one instruction, through the interpreter.
    cpu.step();
    cpu.sliceCount = n = (n + 1) | 0;
    return n;
  }
  for (;;) {
    // Where a fault finds its instruction (Cpu.faultRestore); the lookup itself may fault on the fetch.
    cpu.blockEip = eip;
    cpu.blockN = n;
    const b = blockAt(cpu, eip, bBytes);
    const start = eip;
    const map = cpu.curMap;
    const mask = cpu.ipMask;
    // A block that branches back to its own start runs again without a lookup while the
    // window (same page map, same CS) stays open and nothing needs attention.
    for (;;) {
      if (states !== undefined && b > GENERIC_BLOCK) {
        // Every start counts toward compiling, the first one too (a block only ever entered
        // through the dispatcher, such as a call target on another page, must become hot).
        let st = states[b];
        if (st === 0 && ++hits![b] > threshold) {
          jit!.compile(b, eip, cpu.curMap, cpu.winGpn);
          st = states[b];
        }
        // Compiled blocks run from runCompiled's loop: return to it, unless it asked us to run this one.
        if (interpretFirst) interpretFirst = false;
        else if (st === 1) {
          cpu.eip = eip;
          cpu.sliceCount = n;
          return n;
        }
      }
      // k: instructions to run (a fused record is two).
      let k = bCount[b];
      if (k > ((budget - n) | 0)) k = (budget - n) | 0;
      let r = bStart[b];
      cpu.blockRec = r;
      // EIP lives in `eip` (the instruction's start) and `next` while the block runs; cpu.eip is
      // written when the block ends and before handlers that read it.
      for (;;) {
        const w = rec[r];
        let next = (eip + ((w >> 8) & 15)) & mask;
        // Anything that may fault or be seen from outside (memory, MMIO, the interpreter) finds the
        // instructions retired so far in sliceCount; register-only records (w < 0) skip it.
        if (w >= 0) cpu.sliceCount = n;
        // Literal case labels (the decoder's H_ ids, checked by record-ops.test.ts) make this a jump table.
        switch (w & 0xff) {
          case 0: // H_GENERIC
            cpu.eip = eip;
            cpu.step();
            next = cpu.eip;
            break;
          case 54: { // H_ADD_RR32
            const a = (w >> 20) & 15;
            const x = regs[a];
            const y = regs[(w >> 24) & 15];
            const res = (x + y) | 0;
            regs[a] = res;
            cpu.fOp = 1;
            cpu.fA = x;
            cpu.fB = y;
            cpu.fR = res;
            cpu.fS = 2;
            cpu.lazy = 0x8d5;
            break;
          }
          case 55: { // H_OR_RR32
            const a = (w >> 20) & 15;
            const res = regs[a] | regs[(w >> 24) & 15];
            regs[a] = res;
            cpu.fOp = 0;
            cpu.fR = res;
            cpu.fS = 2;
            cpu.lazy = 0x8d5;
            break;
          }
          case 56: { // H_AND_RR32
            const a = (w >> 20) & 15;
            const res = regs[a] & regs[(w >> 24) & 15];
            regs[a] = res;
            cpu.fOp = 0;
            cpu.fR = res;
            cpu.fS = 2;
            cpu.lazy = 0x8d5;
            break;
          }
          case 57: { // H_SUB_RR32
            const a = (w >> 20) & 15;
            const x = regs[a];
            const y = regs[(w >> 24) & 15];
            const res = (x - y) | 0;
            regs[a] = res;
            cpu.fOp = 3;
            cpu.fA = x;
            cpu.fB = y;
            cpu.fR = res;
            cpu.fS = 2;
            cpu.lazy = 0x8d5;
            break;
          }
          case 58: { // H_XOR_RR32
            const a = (w >> 20) & 15;
            const res = regs[a] ^ regs[(w >> 24) & 15];
            regs[a] = res;
            cpu.fOp = 0;
            cpu.fR = res;
            cpu.fS = 2;
            cpu.lazy = 0x8d5;
            break;
          }
          case 59: { // H_CMP_RR32
            const x = regs[(w >> 20) & 15];
            const y = regs[(w >> 24) & 15];
            cpu.fOp = 3;
            cpu.fA = x;
            cpu.fB = y;
            cpu.fR = (x - y) | 0;
            cpu.fS = 2;
            cpu.lazy = 0x8d5;
            break;
          }
          case 60: { // H_ADD_RI32
            const a = (w >> 20) & 15;
            const x = regs[a];
            const y = rec[r + 3];
            const res = (x + y) | 0;
            regs[a] = res;
            cpu.fOp = 1;
            cpu.fA = x;
            cpu.fB = y;
            cpu.fR = res;
            cpu.fS = 2;
            cpu.lazy = 0x8d5;
            break;
          }
          case 61: { // H_OR_RI32
            const a = (w >> 20) & 15;
            const res = regs[a] | rec[r + 3];
            regs[a] = res;
            cpu.fOp = 0;
            cpu.fR = res;
            cpu.fS = 2;
            cpu.lazy = 0x8d5;
            break;
          }
          case 62: { // H_AND_RI32
            const a = (w >> 20) & 15;
            const res = regs[a] & rec[r + 3];
            regs[a] = res;
            cpu.fOp = 0;
            cpu.fR = res;
            cpu.fS = 2;
            cpu.lazy = 0x8d5;
            break;
          }
          case 63: { // H_SUB_RI32
            const a = (w >> 20) & 15;
            const x = regs[a];
            const y = rec[r + 3];
            const res = (x - y) | 0;
            regs[a] = res;
            cpu.fOp = 3;
            cpu.fA = x;
            cpu.fB = y;
            cpu.fR = res;
            cpu.fS = 2;
            cpu.lazy = 0x8d5;
            break;
          }
          case 64: { // H_XOR_RI32
            const a = (w >> 20) & 15;
            const res = regs[a] ^ rec[r + 3];
            regs[a] = res;
            cpu.fOp = 0;
            cpu.fR = res;
            cpu.fS = 2;
            cpu.lazy = 0x8d5;
            break;
          }
          case 65: { // H_CMP_RI32
            const x = regs[(w >> 20) & 15];
            const y = rec[r + 3];
            cpu.fOp = 3;
            cpu.fA = x;
            cpu.fB = y;
            cpu.fR = (x - y) | 0;
            cpu.fS = 2;
            cpu.lazy = 0x8d5;
            break;
          }
          case 67: // H_CMPJ_RR32
          case 68: // H_CMPJ_RI32
          case 69: { // H_TESTJ_RR32
            // A compare and the Jcc after it in one dispatch. Flags are set as the compare sets them.
            const id = w & 0xff;
            const x = regs[(w >> 20) & 15];
            const y = id === 68 ? rec[r + 3] : regs[(w >> 24) & 15];
            let res: number;
            if (id === 69) {
              res = x & y;
              cpu.fOp = 0;
            } else {
              res = (x - y) | 0;
              cpu.fOp = 3;
              cpu.fA = x;
              cpu.fB = y;
            }
            cpu.fR = res;
            cpu.fS = 2;
            cpu.lazy = 0x8d5;
            if (k === 1) {
              // The slice ends after the compare: the Jcc runs next time, as its own block.
              next = (eip + rec[r + 1]) & mask;
              break;
            }
            n = (n + 1) | 0;
            k--;
            const cc = (w >> 16) & 15;
            let t: boolean;
            switch (cc >> 1) {
              case 1: // B
                t = id === 69 ? false : x >>> 0 < y >>> 0;
                break;
              case 2: // E
                t = res === 0;
                break;
              case 3: // BE
                t = id === 69 ? res === 0 : x >>> 0 <= y >>> 0;
                break;
              case 4: // S
                t = res < 0;
                break;
              case 6: // L
                t = id === 69 ? res < 0 : x < y;
                break;
              case 7: // LE
                t = id === 69 ? res <= 0 : x <= y;
                break;
              default: // O, P
                t = cpu.cond(cc & 14);
            }
            if ((cc & 1) === 0 ? !t : t) break;
            k = 1; // taken: the block ends here
            let target = (next + rec[r + 2]) | 0;
            if (((w >> 12) & 3) !== 2) target &= 0xffff;
            if (target >>> 0 > cpu.csLimitBits >>> 0) {
              cpu.sliceCount = n; // the compare retired; the fault is the Jcc's
              cpu.raiseGp(0);
            }
            next = target;
            break;
          }
          case 66: // H_TEST_RR32
            cpu.fOp = 0;
            cpu.fR = regs[(w >> 24) & 15] & regs[(w >> 20) & 15];
            cpu.fS = 2;
            cpu.lazy = 0x8d5;
            break;
          case 17: // H_INC_R
          case 18: { // H_DEC_R
            const a = (w >> 20) & 15;
            if (((w >> 12) & 3) !== 2) {
              incDecR(cpu, w, (w & 0xff) === 18);
              break;
            }
            // CF is kept: materialize it before the lazy state is replaced (the common cases inline).
            if (cpu.lazy & 1) {
              const op = cpu.fOp;
              let cf: number;
              if (cpu.fS === 2 && op === 3) cf = cpu.fA >>> 0 < cpu.fB >>> 0 ? 1 : 0;
              else if (cpu.fS === 2 && op === 1) cf = cpu.fR >>> 0 < cpu.fA >>> 0 ? 1 : 0;
              else if (op === 0) cf = 0;
              else cf = cpu.getCF();
              cpu.flags = (cpu.flags & ~1) | cf;
            }
            const x = regs[a];
            const dec = (w & 0xff) === 18;
            const res = dec ? (x - 1) | 0 : (x + 1) | 0;
            regs[a] = res;
            cpu.fOp = dec ? 3 : 1;
            cpu.fA = x;
            cpu.fB = 1;
            cpu.fR = res;
            cpu.fS = 2;
            cpu.lazy = 0x8d4;
            break;
          }
          case 70: // H_INCJ_R32
          case 71: { // H_DECJ_R32
            // INC/DEC of a register and the Jcc after it in one dispatch (loop counters).
            const a = (w >> 20) & 15;
            if (cpu.lazy & 1) {
              const op = cpu.fOp;
              let cf: number;
              if (cpu.fS === 2 && op === 3) cf = cpu.fA >>> 0 < cpu.fB >>> 0 ? 1 : 0;
              else if (cpu.fS === 2 && op === 1) cf = cpu.fR >>> 0 < cpu.fA >>> 0 ? 1 : 0;
              else if (op === 0) cf = 0;
              else cf = cpu.getCF();
              cpu.flags = (cpu.flags & ~1) | cf;
            }
            const x = regs[a];
            const dec = (w & 0xff) === 71;
            const res = dec ? (x - 1) | 0 : (x + 1) | 0;
            regs[a] = res;
            cpu.fOp = dec ? 3 : 1;
            cpu.fA = x;
            cpu.fB = 1;
            cpu.fR = res;
            cpu.fS = 2;
            cpu.lazy = 0x8d4;
            if (k === 1) {
              next = (eip + rec[r + 1]) & mask;
              break;
            }
            n = (n + 1) | 0;
            k--;
            const cc = (w >> 16) & 15;
            let t: boolean;
            const c2 = cc >> 1;
            if (c2 === 2) t = res === 0; // E
            else if (c2 === 4) t = res < 0; // S
            else if (c2 === 6 && dec) t = x < 1; // L after DEC: SF != OF
            else if (c2 === 7 && dec) t = x <= 1; // LE
            else t = cpu.cond(cc & 14);
            if ((cc & 1) === 0 ? !t : t) break;
            k = 1;
            let target = (next + rec[r + 2]) | 0;
            if (((w >> 12) & 3) !== 2) target &= 0xffff;
            if (target >>> 0 > cpu.csLimitBits >>> 0) {
              cpu.sliceCount = n;
              cpu.raiseGp(0);
            }
            next = target;
            break;
          }
          case 72: { // H_STRING
            // MOVS/CMPS/STOS/LODS/SCAS without REP: one element (string loops such as i386 strcmp run these).
            const e = rec[r + 1];
            cpu.stringElement((w >> 16) & 15, (w >> 12) & 3, e & 7, (e & 8) !== 0);
            break;
          }
          case 31: // H_JCC
          case 32: { // H_JMP
            if ((w & 0xff) === 31) {
              if (!condition(cpu, (w >> 16) & 15)) break;
              k = 1; // taken: the block ends here
            }
            let t = (next + rec[r + 2]) | 0;
            if (((w >> 12) & 3) !== 2) t &= 0xffff;
            if (t >>> 0 > cpu.csLimitBits >>> 0) {
              cpu.sliceCount = n; // register-only records record their position only when they fault
              cpu.raiseGp(0);
            }
            next = t;
            break;
          }
          case 1: // H_ALU_RR32
            aluRR32(cpu, w);
            break;
          case 2: // H_ALU_RR
            aluRR(cpu, w);
            break;
          case 3: // H_ALU_RI32
            aluRI32(cpu, rec, r, w);
            break;
          case 4: // H_ALU_RI
            aluRI(cpu, rec, r, w);
            break;
          case 5: // H_ALU_MR32
          case 9: { // H_ALU_MI32
            const e = rec[r + 1];
            let off = rec[r + 2];
            if ((e & 0x400) === 0) {
              if ((e & 15) !== 8) off = (off + regs[e & 15]) | 0;
              if (((e >> 4) & 15) !== 8) off = (off + (regs[(e >> 4) & 15] << ((e >> 8) & 3))) | 0;
            } else off = ea(cpu, rec, r);
            const sg = (e >> 12) & 7;
            const la = cpu.segFast[sg] === 1 ? (cpu.segBase[sg] + off) | 0 : cpu.linSlow(sg, off, 4, true);
            const y = (w & 0xff) === 5 ? regs[(w >> 20) & 15] : rec[r + 3];
            const mmu = cpu.mmu;
            const vpn = la >>> 12;
            const i = vpn & 16383; // TLB_SIZE - 1
            if (mmu.tagW[i] === vpn && (la & 3) === 0) {
              // Aligned dword in a cached writable page: one TLB lookup for the read and the write.
              const m = mmu.words32;
              const a = (mmu.off[i] + (la & 0xfff)) >> 2;
              m[a] = cpu.alu((w >> 16) & 15, m[a], y, 2);
            } else {
              mmu.probeWrite(la, 4);
              mmu.write32(la, cpu.alu((w >> 16) & 15, mmu.read32(la), y, 2));
            }
            break;
          }
          case 6: // H_ALU_MR
            aluMR(cpu, rec, r, w);
            break;
          case 7: // H_ALU_RM32
            aluRM32(cpu, rec, r, w);
            break;
          case 8: // H_ALU_RM
            aluRM(cpu, rec, r, w);
            break;
          case 10: // H_ALU_MI
            aluMI(cpu, rec, r, w);
            break;
          case 11: // H_CMP_MR
            cmpMR(cpu, rec, r, w);
            break;
          case 12: { // H_CMP_MI
            const s = (w >> 12) & 3;
            if (s === 1) {
              cmpMI(cpu, rec, r, w);
              break;
            }
            const e = rec[r + 1];
            let off = rec[r + 2];
            if ((e & 0x400) === 0) {
              if ((e & 15) !== 8) off = (off + regs[e & 15]) | 0;
              if (((e >> 4) & 15) !== 8) off = (off + (regs[(e >> 4) & 15] << ((e >> 8) & 3))) | 0;
            } else off = ea(cpu, rec, r);
            const sg = (e >> 12) & 7;
            const la = cpu.segFast[sg] === 1 ? (cpu.segBase[sg] + off) | 0 : cpu.linSlow(sg, off, 1 << s, false);
            const mmu = cpu.mmu;
            const vpn = la >>> 12;
            const i = vpn & 16383; // TLB_SIZE - 1
            let x: number;
            if (s === 0) x = mmu.tagR[i] === vpn ? mmu.bytes[mmu.off[i] + (la & 0xfff)] : mmu.read8(la);
            else x = mmu.tagR[i] === vpn && (la & 3) === 0 ? mmu.words32[(mmu.off[i] + (la & 0xfff)) >> 2] : mmu.read32(la);
            const y = rec[r + 3];
            cpu.fOp = 3;
            cpu.fA = x;
            cpu.fB = y;
            cpu.fR = (x - y) | 0;
            cpu.fS = s;
            cpu.lazy = 0x8d5;
            break;
          }
          case 13: // H_TEST_RR
            testRR(cpu, w);
            break;
          case 14: // H_TEST_RI
            testRI(cpu, rec, r, w);
            break;
          case 15: // H_TEST_MR
            testMR(cpu, rec, r, w);
            break;
          case 16: // H_TEST_MI
            testMI(cpu, rec, r, w);
            break;
          case 19: // H_INC_M
            incDecM(cpu, rec, r, w, false);
            break;
          case 20: // H_DEC_M
            incDecM(cpu, rec, r, w, true);
            break;
          case 21: { // H_PUSH_R
            const s = (w >> 12) & 3;
            if (s === 2 && cpu.stack32 && cpu.segFast[2] === 1) {
              // Flat 32-bit stack: the store goes straight to the TLB entry.
              const v = regs[(w >> 20) & 15];
              const esp = (regs[4] - 4) | 0;
              const la = (cpu.segBase[2] + esp) | 0;
              const mmu = cpu.mmu;
              const vpn = la >>> 12;
              const i = vpn & 16383; // TLB_SIZE - 1
              if (mmu.tagW[i] === vpn && (la & 3) === 0) mmu.words32[(mmu.off[i] + (la & 0xfff)) >> 2] = v;
              else mmu.write32(la, v);
              regs[4] = esp;
            } else cpu.push(s, cpu.getReg(s, (w >> 20) & 15));
            break;
          }
          case 22: { // H_POP_R
            const s = (w >> 12) & 3;
            if (s === 2 && cpu.stack32 && cpu.segFast[2] === 1) {
              const esp = regs[4];
              const la = (cpu.segBase[2] + esp) | 0;
              const mmu = cpu.mmu;
              const vpn = la >>> 12;
              const i = vpn & 16383; // TLB_SIZE - 1
              const v = mmu.tagR[i] === vpn && (la & 3) === 0 ? mmu.words32[(mmu.off[i] + (la & 0xfff)) >> 2] : mmu.read32(la);
              regs[4] = (esp + 4) | 0;
              regs[(w >> 20) & 15] = v;
            } else {
              const v = cpu.pop(s);
              cpu.setReg(s, (w >> 20) & 15, v);
            }
            break;
          }
          case 23: // H_PUSH_I
            cpu.push((w >> 12) & 3, rec[r + 3]);
            break;
          case 24: { // H_PUSH_M
            const s = (w >> 12) & 3;
            cpu.push(s, cpu.read(s, seg(rec, r), ea(cpu, rec, r)));
            break;
          }
          case 25: { // H_MOV_RR
            const s = (w >> 12) & 3;
            if (s === 2) regs[(w >> 20) & 15] = regs[(w >> 24) & 15];
            else cpu.setReg(s, (w >> 20) & 15, cpu.getReg(s, (w >> 24) & 15));
            break;
          }
          case 26: // H_MOV_RI
            cpu.setReg((w >> 12) & 3, (w >> 20) & 15, rec[r + 3]);
            break;
          case 27: { // H_MOV_RM
            if (((w >> 12) & 3) !== 2) {
              movRM(cpu, rec, r, w);
              break;
            }
            const e = rec[r + 1];
            let off = rec[r + 2];
            if ((e & 0x400) === 0) {
              if ((e & 15) !== 8) off = (off + regs[e & 15]) | 0;
              if (((e >> 4) & 15) !== 8) off = (off + (regs[(e >> 4) & 15] << ((e >> 8) & 3))) | 0;
            } else off = ea(cpu, rec, r);
            const sg = (e >> 12) & 7;
            const la = cpu.segFast[sg] === 1 ? (cpu.segBase[sg] + off) | 0 : cpu.linSlow(sg, off, 4, false);
            const mmu = cpu.mmu;
            const vpn = la >>> 12;
            const i = vpn & 16383; // TLB_SIZE - 1
            regs[(w >> 20) & 15] = mmu.tagR[i] === vpn && (la & 3) === 0 ? mmu.words32[(mmu.off[i] + (la & 0xfff)) >> 2] : mmu.read32(la);
            break;
          }
          case 28: // H_MOV_MR
          case 29: { // H_MOV_MI
            const s = (w >> 12) & 3;
            if (s === 1) {
              if ((w & 0xff) === 28) movMR(cpu, rec, r, w);
              else movMI(cpu, rec, r, w);
              break;
            }
            const e = rec[r + 1];
            let off = rec[r + 2];
            if ((e & 0x400) === 0) {
              if ((e & 15) !== 8) off = (off + regs[e & 15]) | 0;
              if (((e >> 4) & 15) !== 8) off = (off + (regs[(e >> 4) & 15] << ((e >> 8) & 3))) | 0;
            } else off = ea(cpu, rec, r);
            const sg = (e >> 12) & 7;
            const la = cpu.segFast[sg] === 1 ? (cpu.segBase[sg] + off) | 0 : cpu.linSlow(sg, off, 1 << s, true);
            const v = (w & 0xff) === 29 ? rec[r + 3] : s === 2 ? regs[(w >> 20) & 15] : cpu.r8[REG8[(w >> 20) & 15]];
            const mmu = cpu.mmu;
            const vpn = la >>> 12;
            const i = vpn & 16383; // TLB_SIZE - 1
            if (s === 0) {
              if (mmu.tagW[i] === vpn) mmu.bytes[mmu.off[i] + (la & 0xfff)] = v;
              else mmu.write8(la, v);
            } else if (mmu.tagW[i] === vpn && (la & 3) === 0) mmu.words32[(mmu.off[i] + (la & 0xfff)) >> 2] = v;
            else mmu.write32(la, v);
            break;
          }
          case 30: { // H_LEA
            const e = rec[r + 1];
            if (((w >> 12) & 3) !== 2 || (e & 0x400) !== 0) {
              cpu.setReg((w >> 12) & 3, (w >> 20) & 15, ea(cpu, rec, r));
              break;
            }
            let off = rec[r + 2];
            if ((e & 15) !== 8) off = (off + regs[e & 15]) | 0;
            if (((e >> 4) & 15) !== 8) off = (off + (regs[(e >> 4) & 15] << ((e >> 8) & 3))) | 0;
            regs[(w >> 20) & 15] = off;
            break;
          }
          case 33: { // H_CALL
            if (((w >> 12) & 3) === 2 && cpu.stack32 && cpu.segFast[2] === 1) {
              // 32-bit call on a flat 32-bit stack: limit check, then the push straight to the TLB entry.
              const t = (next + rec[r + 2]) | 0;
              if (t >>> 0 > cpu.csLimitBits >>> 0) cpu.raiseGp(0);
              const esp = (regs[4] - 4) | 0;
              const la = (cpu.segBase[2] + esp) | 0;
              const mmu = cpu.mmu;
              const vpn = la >>> 12;
              const i = vpn & 16383; // TLB_SIZE - 1
              if (mmu.tagW[i] === vpn && (la & 3) === 0) mmu.words32[(mmu.off[i] + (la & 0xfff)) >> 2] = next;
              else mmu.write32(la, next);
              regs[4] = esp;
              next = t;
              break;
            }
            cpu.eip = next;
            callRel(cpu, rec, r, w);
            next = cpu.eip;
            break;
          }
          case 34: { // H_RET
            if (((w >> 12) & 3) === 2 && cpu.stack32 && cpu.segFast[2] === 1) {
              const esp = regs[4];
              const la = (cpu.segBase[2] + esp) | 0;
              const mmu = cpu.mmu;
              const vpn = la >>> 12;
              const i = vpn & 16383; // TLB_SIZE - 1
              const t = mmu.tagR[i] === vpn && (la & 3) === 0 ? mmu.words32[(mmu.off[i] + (la & 0xfff)) >> 2] : mmu.read32(la);
              // ESP moves only after the target passed the CS limit check.
              if (t >>> 0 > cpu.csLimitBits >>> 0) cpu.raiseGp(0);
              regs[4] = (esp + 4 + rec[r + 3]) | 0;
              next = t;
              break;
            }
            cpu.eip = next;
            ret(cpu, rec, r, w);
            next = cpu.eip;
            break;
          }
          case 35: { // H_JMP_R
            const s = (w >> 12) & 3;
            jumpTo(cpu, cpu.getReg(s, (w >> 24) & 15), s);
            next = cpu.eip;
            break;
          }
          case 36: { // H_JMP_M
            const s = (w >> 12) & 3;
            jumpTo(cpu, cpu.read(s, seg(rec, r), ea(cpu, rec, r)), s);
            next = cpu.eip;
            break;
          }
          case 37: { // H_CALL_R
            const s = (w >> 12) & 3;
            cpu.eip = next;
            callTo(cpu, cpu.getReg(s, (w >> 24) & 15), s);
            next = cpu.eip;
            break;
          }
          case 38: { // H_CALL_M
            const s = (w >> 12) & 3;
            cpu.eip = next;
            callTo(cpu, cpu.read(s, seg(rec, r), ea(cpu, rec, r)), s);
            next = cpu.eip;
            break;
          }
          case 39: // H_LEAVE
            leave(cpu, w);
            break;
          case 40: // H_SHIFT_R
            shiftR(cpu, rec, r, w);
            break;
          case 41: // H_SHIFT_M
            shiftM(cpu, rec, r, w);
            break;
          case 42: // H_MOVX_R
            movxR(cpu, w);
            break;
          case 43: // H_MOVX_M
            movxM(cpu, rec, r, w);
            break;
          case 44: // H_IMUL_R
            imulR(cpu, rec, r, w);
            break;
          case 45: // H_IMUL_M
            imulM(cpu, rec, r, w);
            break;
          case 46: // H_SETCC_R
            cpu.r8[REG8[(w >> 24) & 15]] = condition(cpu, (w >> 16) & 15) ? 1 : 0;
            break;
          case 47: // H_SETCC_M
            cpu.write(0, seg(rec, r), ea(cpu, rec, r), condition(cpu, (w >> 16) & 15) ? 1 : 0);
            break;
          case 48: { // H_CMOV_R
            const s = (w >> 12) & 3;
            const v = cpu.getReg(s, (w >> 24) & 15);
            if (condition(cpu, (w >> 16) & 15)) cpu.setReg(s, (w >> 20) & 15, v);
            break;
          }
          case 49: { // H_CMOV_M
            const s = (w >> 12) & 3;
            const v = cpu.read(s, seg(rec, r), ea(cpu, rec, r));
            if (condition(cpu, (w >> 16) & 15)) cpu.setReg(s, (w >> 20) & 15, v);
            break;
          }
          case 50: // H_CWDE
            cwde(cpu, w);
            break;
          case 51: // H_NOP
            break;
          case 52: // H_NOTNEG_R
            notNegR(cpu, w);
            break;
          case 53: // H_XCHG_RR
            xchgRR(cpu, w);
            break;
        }
        n = (n + 1) | 0;
        eip = next;
        if (--k === 0 || (w >= 0 && cpu.attention !== 0)) break;
        r = (r + REC_STRIDE) | 0;
      }
      cpu.sliceCount = n;
      if (cpu.attention !== 0 || n >= budget) {
        cpu.eip = eip;
        return n;
      }
      if (eip !== start || cpu.curMap !== map || cpu.winLen < 0) break;
      cpu.blockN = n;
    }
    cpu.eip = eip;
  }
}

/**
 * The run loop with the block compiler: calls the compiled region of the
 * block at EIP when there is one and the slice budget holds the block, and
 * lets runBlocks interpret (and count, and compile) everything else. While
 * it goes from region to region, the registers and flags stay in the
 * vCPU's state block, where the regions read and write them; they come back
 * to the CPU before anything else may look at them (the interpreter, a
 * block lookup that may fault, the return). A region's calls out copy them
 * back themselves before anything can throw.
 * @returns the instructions retired in the slice
 */
export function runCompiled(cpu: Cpu, n: number, budget: number): number {
  if (cpu.attention !== 0) return runBlocks(cpu, n, budget);
  const jit = cpu.jit!;
  const slots = jit.slots;
  const enter = jit.table.enter;
  const states = jit.states;
  const bCount = cpu.decoded.bCount;
  const bBytes = cpu.decoded.bBytes;
  // The state block of the memory the regions run on (a new one after the host memory moved: regions are dropped then).
  const S = cpu.state;
  let inState = false;
  // Statistics stay in locals while the loop runs (stores to the compiler's
  // fields on every dispatch showed up in profiles).
  let dispatches = 0;
  let interpreted = 0;
  let compiled = 0;
  for (;;) {
    const eip = cpu.eip;
    cpu.blockEip = eip;
    cpu.blockN = n;
    // The block at EIP: from the fetch window's page map (blockAt), else through a lookup that may fault.
    let b = 0;
    const d = (eip - cpu.winStart) | 0;
    const winLen = cpu.winLen;
    if (d >= 0 && d <= winLen) {
      b = cpu.curMap[(cpu.csBase + eip) & 0xfff];
      if (b !== 0 && ((d + bBytes[b]) | 0) > ((winLen + 1) | 0)) b = 0;
    }
    if (b === 0) {
      if (inState) {
        fromStateBlock(cpu, S);
        inState = false;
      }
      b = cpu.lookupBlock();
    }
    dispatches++;
    const st = states[b];
    let m = ~n;
    if (st === 1 && bCount[b] <= ((budget - n) | 0)) {
      if (!inState) {
        toStateBlock(cpu, S);
        inState = true;
      }
      m = enter(slots[b], eip, n, budget);
      cpu.eip = S[S_EIP];
    }
    if (m >= 0) {
      compiled = (compiled + m - n) | 0;
      n = m;
    } else {
      // The region stopped before an instruction only the interpreter runs (RegionFn), or
      // the block has no code yet: runBlocks counts it (and may compile it, then returns at once).
      if (inState) {
        fromStateBlock(cpu, S);
        inState = false;
      }
      compiled = (compiled + ~m - n) | 0;
      interpreted++;
      n = runBlocks(cpu, ~m, budget, st === 1);
    }
    if (cpu.attention !== 0 || n >= budget) {
      if (inState) fromStateBlock(cpu, S);
      cpu.sliceCount = n;
      const counts = jit.counts;
      counts[0] += dispatches;
      counts[1] += interpreted;
      counts[2] += compiled;
      return n;
    }
  }
}
