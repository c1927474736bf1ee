// The two-byte opcode map (0F xx) for the integer and system instructions.
// Opcodes the core does not implement (MMX, SSE, SSE2, FXSAVE...) go to the
// extension units; if none claims them they raise #UD.
import { readCpuid, readMsr, writeMsr } from "./cpuid-msr.js";
import * as C from "./constants.js";
import type { Cpu } from "./cpu.js";
import * as Sys from "./system.js";

/** Executes the 0F-map instruction whose second byte follows in the stream. */
export function exec0F(cpu: Cpu): void {
  const op = cpu.fetch8();
  const vs = cpu.o32 ? 2 : 1;
  const regs = cpu.regs;
  switch (op) {
    case 0x00:
      group6(cpu);
      return;
    case 0x01:
      group7(cpu);
      return;
    case 0x02:
    case 0x03: {
      if (!cpu.protectedMode) cpu.raiseUd();
      cpu.decodeModrm();
      const sel = cpu.readRm(1) & 0xffff;
      const v = op === 0x02 ? Sys.lar(cpu, sel) : Sys.lsl(cpu, sel);
      if (v === undefined) cpu.setArith(0, C.ZF);
      else {
        cpu.setReg(vs, cpu.reg, v);
        cpu.setArith(C.ZF, C.ZF);
      }
      return;
    }
    case 0x06:
      requireCpl0(cpu);
      cpu.cr0 &= ~C.CR0_TS;
      return;
    case 0x08:
    case 0x09:
      requireCpl0(cpu);
      return; // INVD/WBINVD: no caches to flush
    case 0x0b:
      cpu.raiseUd();
      return;
    case 0x1f:
      // NOP Ev (the long NOP every assembler emits for alignment).
      cpu.decodeModrm();
      return;
    case 0x20:
    case 0x21:
    case 0x22:
    case 0x23:
      movControl(cpu, op);
      return;
    case 0x30:
      requireCpl0(cpu);
      cpu.exits.msr++;
      writeMsr(cpu, regs[1], regs[0], regs[2]);
      return;
    case 0x31:
      if (cpu.cr4 & C.CR4_TSD && cpu.cpl !== 0 && cpu.protectedModeOrVm()) cpu.raiseGp(0);
      {
        const t = cpu.readTsc();
        regs[0] = t % 4294967296;
        regs[2] = Math.floor(t / 4294967296);
      }
      return;
    case 0x32:
      requireCpl0(cpu);
      cpu.exits.msr++;
      readMsr(cpu, regs[1]);
      regs[0] = cpu.tmp64[0];
      regs[2] = cpu.tmp64[1];
      return;
    case 0x34:
      Sys.sysenter(cpu);
      return;
    case 0x35:
      Sys.sysexit(cpu);
      return;
    case 0x40: case 0x41: case 0x42: case 0x43: case 0x44: case 0x45: case 0x46: case 0x47:
    case 0x48: case 0x49: case 0x4a: case 0x4b: case 0x4c: case 0x4d: case 0x4e: case 0x4f: {
      cpu.decodeModrm();
      const v = cpu.readRm(vs); // the source is read (and may fault) whatever the condition
      if (cpu.cond(op & 15)) cpu.setReg(vs, cpu.reg, v);
      return;
    }
    case 0x80: case 0x81: case 0x82: case 0x83: case 0x84: case 0x85: case 0x86: case 0x87:
    case 0x88: case 0x89: case 0x8a: case 0x8b: case 0x8c: case 0x8d: case 0x8e: case 0x8f: {
      const d = cpu.fetchImmV();
      if (cpu.cond(op & 15)) cpu.jumpRel(vs === 2 ? d : (d << 16) >> 16);
      return;
    }
    case 0x90: case 0x91: case 0x92: case 0x93: case 0x94: case 0x95: case 0x96: case 0x97:
    case 0x98: case 0x99: case 0x9a: case 0x9b: case 0x9c: case 0x9d: case 0x9e: case 0x9f:
      cpu.decodeModrm();
      cpu.writeRm(0, cpu.cond(op & 15) ? 1 : 0);
      return;
    case 0xa0:
    case 0xa8:
      cpu.push(vs, cpu.segSel[op === 0xa0 ? C.FS : C.GS]);
      return;
    case 0xa1:
    case 0xa9: {
      const sel = cpu.peek(vs, 0) & 0xffff;
      Sys.loadSeg(cpu, op === 0xa1 ? C.FS : C.GS, sel);
      cpu.addSp(vs === 2 ? 4 : 2);
      return;
    }
    case 0xa2:
      cpu.exits.cpuid++;
      readCpuid(cpu, regs[0], regs[1]);
      return;
    case 0xa3:
    case 0xab:
    case 0xb3:
    case 0xbb:
      bitOp(cpu, op === 0xa3 ? 0 : op === 0xab ? 1 : op === 0xb3 ? 2 : 3, false);
      return;
    case 0xba: {
      cpu.decodeModrm();
      if (cpu.reg < 4) cpu.raiseUd();
      bitOp(cpu, cpu.reg - 4, true);
      return;
    }
    case 0xa4:
    case 0xa5:
    case 0xac:
    case 0xad: {
      cpu.decodeModrm();
      const count = op & 1 ? cpu.r8[4] : cpu.fetch8();
      const left = op < 0xac;
      const src = cpu.getReg(vs, cpu.reg);
      if (cpu.mod === 3) cpu.setReg(vs, cpu.rm, cpu.shiftDouble(left, cpu.getReg(vs, cpu.rm), src, count, vs));
      else {
        const la = cpu.rmwLin(vs);
        cpu.writeLin(vs, la, cpu.shiftDouble(left, cpu.readLin(vs, la), src, count, vs));
      }
      return;
    }
    case 0xaf:
      cpu.decodeModrm();
      cpu.setReg(vs, cpu.reg, cpu.imul2(cpu.getReg(vs, cpu.reg), cpu.readRm(vs), vs));
      return;
    case 0xb0:
    case 0xb1: {
      const s = op & 1 ? vs : 0;
      cpu.decodeModrm();
      const acc = cpu.getReg(s, 0);
      if (cpu.mod === 3) {
        const d = cpu.getReg(s, cpu.rm);
        cpu.alu(7, acc, d, s);
        if (cpu.getZF()) cpu.setReg(s, cpu.rm, cpu.getReg(s, cpu.reg));
        else cpu.setReg(s, 0, d);
      } else {
        // The destination is always written (with its old value on failure), as the SDM describes.
        const la = cpu.rmwLin(s);
        const d = cpu.readLin(s, la);
        cpu.alu(7, acc, d, s);
        if (cpu.getZF()) cpu.writeLin(s, la, cpu.getReg(s, cpu.reg));
        else {
          cpu.writeLin(s, la, d);
          cpu.setReg(s, 0, d);
        }
      }
      return;
    }
    case 0xb2:
    case 0xb4:
    case 0xb5: {
      cpu.decodeModrm();
      if (cpu.mod === 3) cpu.raiseUd();
      const off = cpu.read(vs, cpu.eaSeg, cpu.eaOff);
      const sel = cpu.read(1, cpu.eaSeg, (cpu.eaOff + (vs === 2 ? 4 : 2)) | 0);
      const seg = op === 0xb2 ? C.SS : op === 0xb4 ? C.FS : C.GS;
      Sys.loadSeg(cpu, seg, sel);
      cpu.setReg(vs, cpu.reg, off);
      return;
    }
    case 0xb6:
    case 0xb7:
    case 0xbe:
    case 0xbf: {
      cpu.decodeModrm();
      const s = op & 1 ? 1 : 0;
      let v = cpu.readRm(s);
      if (op >= 0xbe) v = s === 0 ? (v << 24) >> 24 : (v << 16) >> 16;
      cpu.setReg(vs, cpu.reg, v);
      return;
    }
    case 0xbc:
    case 0xbd: {
      cpu.decodeModrm();
      const v = cpu.readRm(vs) & (vs === 2 ? -1 : 0xffff);
      if (v === 0) {
        // Destination unchanged (documented as undefined; every implementation keeps it).
        cpu.setArith(C.ZF, C.ZF);
        return;
      }
      const idx = op === 0xbc ? 31 - Math.clz32(v & -v) : 31 - Math.clz32(v);
      cpu.setReg(vs, cpu.reg, idx);
      cpu.setArith(0, C.ZF);
      return;
    }
    case 0xc0:
    case 0xc1: {
      const s = op & 1 ? vs : 0;
      cpu.decodeModrm();
      const src = cpu.getReg(s, cpu.reg);
      if (cpu.mod === 3) {
        const d = cpu.getReg(s, cpu.rm);
        const r = cpu.alu(0, d, src, s);
        cpu.setReg(s, cpu.reg, d);
        cpu.setReg(s, cpu.rm, r);
      } else {
        const la = cpu.rmwLin(s);
        const d = cpu.readLin(s, la);
        const r = cpu.alu(0, d, src, s);
        cpu.writeLin(s, la, r);
        cpu.setReg(s, cpu.reg, d);
      }
      return;
    }
    case 0xc7: {
      cpu.decodeModrm();
      if (cpu.reg !== 1 || cpu.mod === 3) {
        if (tryExtensions(cpu, op)) return;
        cpu.raiseUd();
      }
      // CMPXCHG8B m64 (Intel SDM Vol. 2): the destination is written in both outcomes.
      const la = cpu.lin(cpu.eaSeg, cpu.eaOff, 8, true);
      cpu.mmu.probeWrite(la, 8);
      const lo = cpu.mmu.read32(la);
      const hi = cpu.mmu.read32((la + 4) | 0);
      if (lo === regs[0] && hi === regs[2]) {
        cpu.mmu.write32(la, regs[3]);
        cpu.mmu.write32((la + 4) | 0, regs[1]);
        cpu.setArith(C.ZF, C.ZF);
      } else {
        cpu.mmu.write32(la, lo);
        cpu.mmu.write32((la + 4) | 0, hi);
        regs[0] = lo;
        regs[2] = hi;
        cpu.setArith(0, C.ZF);
      }
      return;
    }
    case 0xc8: case 0xc9: case 0xca: case 0xcb: case 0xcc: case 0xcd: case 0xce: case 0xcf: {
      const r = op & 7;
      const v = regs[r];
      if (vs === 2) regs[r] = ((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24);
      else cpu.r16[r << 1] = 0; // BSWAP r16 is undefined; hardware clears the low word
      return;
    }
    default:
      if (op >= 0x18 && op <= 0x1e) {
        // Hint NOPs (PREFETCHh and reserved NOPs) take a ModRM operand.
        cpu.decodeModrm();
        return;
      }
      if (tryExtensions(cpu, op)) return;
      cpu.raiseUd();
  }
}

function tryExtensions(cpu: Cpu, op: number): boolean {
  for (const e of cpu.extensions) if (e.op0F && e.op0F(cpu, op)) return true;
  return false;
}

function requireCpl0(cpu: Cpu): void {
  if ((cpu.cr0 & C.CR0_PE) !== 0 && (cpu.cpl !== 0 || cpu.flags & C.VM)) cpu.raiseGp(0);
}

/** BT/BTS/BTR/BTC (kind 0..3); memory operands with a register offset address the bit string beyond the operand. */
function bitOp(cpu: Cpu, kind: number, imm: boolean): void {
  const vs = cpu.o32 ? 2 : 1;
  if (!imm) cpu.decodeModrm();
  const bits = vs === 2 ? 32 : 16;
  let bit: number;
  if (imm) bit = cpu.fetch8();
  else bit = cpu.getReg(vs, cpu.reg);
  let v: number;
  let la = 0;
  if (cpu.mod === 3) {
    bit &= bits - 1;
    v = cpu.getReg(vs, cpu.rm);
  } else {
    if (imm) bit &= bits - 1;
    else {
      // Signed bit offset: the operand address moves by (offset >> 3) rounded to the operand size.
      const sbit = vs === 2 ? bit : (bit << 16) >> 16;
      const wordOff = (sbit >> (vs === 2 ? 5 : 4)) * (bits >> 3);
      cpu.eaOff = cpu.a32 ? (cpu.eaOff + wordOff) | 0 : (cpu.eaOff + wordOff) & 0xffff;
      bit = sbit & (bits - 1);
    }
    if (kind === 0) v = cpu.read(vs, cpu.eaSeg, cpu.eaOff);
    else {
      la = cpu.rmwLin(vs);
      v = cpu.readLin(vs, la);
    }
  }
  const mask = 1 << bit;
  const cf = (v & mask) !== 0 ? C.CF : 0;
  cpu.setArith(cf, C.CF);
  if (kind === 0) return;
  const r = kind === 1 ? v | mask : kind === 2 ? v & ~mask : v ^ mask;
  if (cpu.mod === 3) cpu.setReg(vs, cpu.rm, r);
  else cpu.writeLin(vs, la, r);
}

/** 0F 00: SLDT, STR, LLDT, LTR, VERR, VERW. */
function group6(cpu: Cpu): void {
  if (!cpu.protectedMode) cpu.raiseUd();
  cpu.decodeModrm();
  switch (cpu.reg) {
    case 0:
    case 1: {
      const v = cpu.reg === 0 ? cpu.ldtrSel : cpu.trSel;
      if (cpu.mod === 3) cpu.setReg(cpu.o32 ? 2 : 1, cpu.rm, v);
      else cpu.write(1, cpu.eaSeg, cpu.eaOff, v);
      return;
    }
    case 2:
    case 3: {
      if (cpu.cpl !== 0) cpu.raiseGp(0);
      const sel = cpu.readRm(1) & 0xffff;
      if (cpu.reg === 2) Sys.lldt(cpu, sel);
      else Sys.ltr(cpu, sel);
      return;
    }
    case 4:
    case 5: {
      const sel = cpu.readRm(1) & 0xffff;
      cpu.setArith(Sys.verify(cpu, sel, cpu.reg === 5) ? C.ZF : 0, C.ZF);
      return;
    }
    default:
      cpu.raiseUd();
  }
}

/** 0F 01: SGDT, SIDT, LGDT, LIDT, SMSW, LMSW, INVLPG. */
function group7(cpu: Cpu): void {
  cpu.decodeModrm();
  const reg = cpu.reg;
  if (cpu.mod === 3 && reg !== 4 && reg !== 6) cpu.raiseUd(); // MONITOR/MWAIT and friends are not reported
  switch (reg) {
    case 0:
    case 1: {
      const base = reg === 0 ? cpu.gdtBase : cpu.idtBase;
      const limit = reg === 0 ? cpu.gdtLimit : cpu.idtLimit;
      const la = cpu.lin(cpu.eaSeg, cpu.eaOff, 6, true);
      cpu.mmu.probeWrite(la, 6);
      cpu.mmu.write16(la, limit);
      // With 16-bit operand size the top byte of the base is stored as zero on 386 and later.
      cpu.mmu.write32((la + 2) | 0, cpu.o32 ? base : base & 0xffffff);
      return;
    }
    case 2:
    case 3: {
      if ((cpu.cr0 & C.CR0_PE) !== 0 && (cpu.cpl !== 0 || cpu.flags & C.VM)) cpu.raiseGp(0);
      const limit = cpu.read(1, cpu.eaSeg, cpu.eaOff);
      let base = cpu.read(2, cpu.eaSeg, (cpu.eaOff + 2) | 0);
      if (!cpu.o32) base &= 0xffffff;
      if (reg === 2) {
        cpu.gdtBase = base;
        cpu.gdtLimit = limit;
      } else {
        cpu.idtBase = base;
        cpu.idtLimit = limit;
      }
      return;
    }
    case 4: {
      const v = cpu.cr0;
      if (cpu.mod === 3) cpu.setReg(cpu.o32 ? 2 : 1, cpu.rm, cpu.o32 ? v : v & 0xffff);
      else cpu.write(1, cpu.eaSeg, cpu.eaOff, v);
      return;
    }
    case 6: {
      if ((cpu.cr0 & C.CR0_PE) !== 0 && (cpu.cpl !== 0 || cpu.flags & C.VM)) cpu.raiseGp(0);
      const v = cpu.readRm(1);
      // LMSW changes MP, EM, TS and can set (never clear) PE.
      const nv = (cpu.cr0 & ~0xe) | (v & 0xe) | (v & 1) | (cpu.cr0 & 1);
      setCr0(cpu, nv);
      return;
    }
    case 7: {
      if (cpu.mod === 3) cpu.raiseUd();
      if ((cpu.cr0 & C.CR0_PE) !== 0 && (cpu.cpl !== 0 || cpu.flags & C.VM)) cpu.raiseGp(0);
      cpu.mmu.invlpg(cpu.lin(cpu.eaSeg, cpu.eaOff, 1, false));
      return;
    }
    default:
      cpu.raiseUd();
  }
}

/** CR4 bits this CPU implements (CPUID reports the matching features). */
const CR4_BASE = C.CR4_TSD | C.CR4_DE | C.CR4_PSE | C.CR4_PAE | C.CR4_PGE;

/** MOV to/from CR0, CR2, CR3, CR4 and DR0-DR7 (Intel SDM Vol. 2 MOV—Move to/from Control Registers). */
function movControl(cpu: Cpu, op: number): void {
  const m = cpu.fetch8(); // the mod field is ignored: always register operands
  const reg = (m >> 3) & 7;
  const rm = m & 7;
  if ((cpu.cr0 & C.CR0_PE) !== 0 && (cpu.cpl !== 0 || cpu.flags & C.VM)) cpu.raiseGp(0);
  const regs = cpu.regs;
  if (op === 0x20) {
    switch (reg) {
      case 0:
        regs[rm] = cpu.cr0;
        return;
      case 2:
        regs[rm] = cpu.cr2;
        return;
      case 3:
        regs[rm] = cpu.cr3;
        return;
      case 4:
        regs[rm] = cpu.cr4;
        return;
      default:
        cpu.raiseUd();
    }
  }
  if (op === 0x22) {
    const v = regs[rm];
    switch (reg) {
      case 0:
        setCr0(cpu, v);
        return;
      case 2:
        cpu.cr2 = v;
        return;
      case 3:
        if (cpu.cr0 & C.CR0_PG && cpu.cr4 & C.CR4_PAE && !cpu.mmu.loadPdptes(v)) cpu.raiseGp(0);
        cpu.cr3 = v;
        cpu.updatePaging();
        cpu.mmu.flushNonGlobal();
        return;
      case 4: {
        const allowed = CR4_BASE | (cpu.extensions.some((e) => e.op0F) ? C.CR4_OSFXSR | C.CR4_OSXMMEXCPT : 0);
        if (v & ~allowed) cpu.raiseGp(0);
        if (cpu.cr0 & C.CR0_PG && v & C.CR4_PAE && (cpu.cr4 & C.CR4_PAE) === 0 && !cpu.mmu.loadPdptes(cpu.cr3)) cpu.raiseGp(0);
        cpu.cr4 = v;
        cpu.updatePaging();
        return;
      }
      default:
        cpu.raiseUd();
    }
  }
  // Debug registers: DR4/DR5 alias DR6/DR7 unless CR4.DE.
  let d = reg;
  if (d === 4 || d === 5) {
    if (cpu.cr4 & C.CR4_DE) cpu.raiseUd();
    d += 2;
  }
  if (op === 0x21) regs[rm] = cpu.dr[d];
  else {
    let v = regs[rm];
    if (d === 6) v = (v & 0xe00f) | (0xffff0ff0 & ~0xe00f);
    else if (d === 7) v = (v & ~0xd800) | 0x400;
    cpu.dr[d] = v;
  }
}

/** Writes CR0 with its consistency checks (Intel SDM Vol. 3 §2.5): PG needs PE, NW needs CD. */
export function setCr0(cpu: Cpu, v: number): void {
  v |= C.CR0_ET;
  if (v & C.CR0_PG && (v & C.CR0_PE) === 0) cpu.raiseGp(0);
  if (v & C.CR0_NW && (v & C.CR0_CD) === 0) cpu.raiseGp(0);
  if (v & C.CR0_PG && (cpu.cr0 & C.CR0_PG) === 0 && cpu.cr4 & C.CR4_PAE && !cpu.mmu.loadPdptes(cpu.cr3)) cpu.raiseGp(0);
  cpu.cr0 = v & 0xe005003f; // the writable bits: PE MP EM TS ET NE WP AM NW CD PG
  cpu.updatePaging();
  if ((cpu.cr0 & C.CR0_PE) === 0 && cpu.cpl !== 0) {
    cpu.cpl = 0;
    cpu.updateCpl();
  }
}
