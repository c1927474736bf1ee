// System behaviour: segment loading with protection checks, far transfers,
// gates, interrupt and exception delivery, IRET, task switches, I/O
// permissions. Intel SDM Vol. 3 chapters 5 (protection), 6 (interrupts),
// 7 (tasks) and 20 (virtual-8086 mode); Vol. 2 for each instruction.
import { PAGE_FAULT } from "@typevisor/mmu-ept";
import * as C from "./constants.js";
import { CPU_EXCEPTION, type Cpu } from "./cpu.js";

/** Attribute bit: segment unusable (null selector loaded). */
export const ATTR_UNUSABLE = 0x10000;

// Scratch of the last descriptor read (no allocation per load).
let dLo = 0;
let dHi = 0;
let dAddr = 0; // linear address of the descriptor

/** Reads the descriptor `sel` into dLo/dHi; raises `vec`(sel) when outside its table. */
function readDescriptor(cpu: Cpu, sel: number, vec: number, ext: number): void {
  const idx = sel & 0xfff8;
  let base: number;
  let limit: number;
  if (sel & 4) {
    if (cpu.ldtrAttr & ATTR_UNUSABLE || (cpu.ldtrSel & 0xfffc) === 0) cpu.raiseCode(vec, (sel & 0xfffc) | ext);
    base = cpu.ldtrBase;
    limit = cpu.ldtrLimit >>> 0;
  } else {
    base = cpu.gdtBase;
    limit = cpu.gdtLimit >>> 0;
  }
  if (idx + 7 > limit) cpu.raiseCode(vec, (sel & 0xfffc) | ext);
  dAddr = (base + idx) | 0;
  dLo = cpu.sysRead32(dAddr);
  dHi = cpu.sysRead32((dAddr + 4) | 0);
}

function descBase(lo: number, hi: number): number {
  return ((lo >>> 16) | ((hi & 0xff) << 16) | (hi & 0xff000000)) | 0;
}

function descLimit(lo: number, hi: number): number {
  const l = (lo & 0xffff) | (hi & 0xf0000);
  return hi & 0x800000 ? (l << 12) | 0xfff : l;
}

function descAttr(hi: number): number {
  return ((hi >>> 8) & 0xff) | (((hi >>> 20) & 0xf) << 12);
}

/** Sets the accessed bit of the descriptor just read (Intel SDM Vol. 3 §3.4.5.1). */
function setAccessed(cpu: Cpu): void {
  if ((dHi & 0x100) === 0) {
    dHi |= 0x100;
    cpu.sysWrite8((dAddr + 5) | 0, (dHi >>> 8) & 0xff);
  }
}

/** Loads a segment cache from the descriptor just read. */
function loadFromDesc(cpu: Cpu, seg: number, sel: number): void {
  cpu.setSegCache(seg, sel, descBase(dLo, dHi), descLimit(dLo, dHi), descAttr(dHi));
}

/** MOV/POP/LxS to a data or stack segment register (Intel SDM Vol. 2 MOV, Vol. 3 §5.10). */
export function loadSeg(cpu: Cpu, seg: number, sel: number): void {
  sel &= 0xffff;
  if (!cpu.protectedMode) {
    cpu.loadSegReal(seg, sel);
    return;
  }
  loadSegProtected(cpu, seg, sel, C.EXC_GP, 0);
}

/** Protected-mode data/stack segment load; `vec` is #GP normally, #TS during task switches. */
function loadSegProtected(cpu: Cpu, seg: number, sel: number, vec: number, ext: number): void {
  const rpl = sel & 3;
  const cpl = cpu.cpl;
  if ((sel & 0xfffc) === 0) {
    if (seg === C.SS) cpu.raiseCode(vec, ext);
    cpu.setSegCache(seg, sel, 0, 0, ATTR_UNUSABLE);
    return;
  }
  readDescriptor(cpu, sel, vec, ext);
  const attr = descAttr(dHi);
  const dpl = (attr >> 5) & 3;
  const err = (sel & 0xfffc) | ext;
  if (seg === C.SS) {
    if (rpl !== cpl || dpl !== cpl || (attr & 0x1a) !== 0x12) cpu.raiseCode(vec, err);
    if ((attr & 0x80) === 0) cpu.raiseCode(vec === C.EXC_TS ? C.EXC_SS : C.EXC_SS, err);
  } else {
    const s = (attr & 0x10) !== 0;
    const code = (attr & 8) !== 0;
    if (!s || (code && (attr & 2) === 0)) cpu.raiseCode(vec, err);
    const conforming = code && (attr & 4) !== 0;
    if (!conforming && (rpl > dpl || cpl > dpl)) cpu.raiseCode(vec, err);
    if ((attr & 0x80) === 0) cpu.raiseCode(C.EXC_NP, err);
  }
  setAccessed(cpu);
  loadFromDesc(cpu, seg, sel);
}

/** Loads CS for a far transfer to code descriptor (already read) at privilege `cpl`. */
function loadCs(cpu: Cpu, sel: number, cpl: number): void {
  setAccessed(cpu);
  cpu.setSegCache(C.CS, (sel & 0xfffc) | cpl, descBase(dLo, dHi), descLimit(dLo, dHi), descAttr(dHi));
  if (cpu.cpl !== cpl) {
    cpu.cpl = cpl;
    cpu.updateCpl();
  }
}

/** Checks a code-segment target of JMP/CALL (Intel SDM Vol. 3 §5.8.1). */
function checkCodeTarget(cpu: Cpu, sel: number): void {
  const attr = descAttr(dHi);
  const dpl = (attr >> 5) & 3;
  if (attr & 4) {
    if (dpl > cpu.cpl) cpu.raiseGp(sel & 0xfffc);
  } else if ((sel & 3) > cpu.cpl || dpl !== cpu.cpl) cpu.raiseGp(sel & 0xfffc);
  if ((attr & 0x80) === 0) cpu.raiseCode(C.EXC_NP, sel & 0xfffc);
}

function checkEip(cpu: Cpu, eip: number): void {
  if (eip >>> 0 > descLimit(dLo, dHi) >>> 0) cpu.raiseGp(0);
}

// ------------------------------------------------------------------ far JMP / CALL / RET

/** JMP ptr16:16/32 and JMP m16:16/32. */
export function farJump(cpu: Cpu, sel: number, off: number, size: number): void {
  if (size === 1) off &= 0xffff;
  if (!cpu.protectedMode) {
    cpu.loadSegReal(C.CS, sel);
    cpu.jumpNear(off);
    return;
  }
  if ((sel & 0xfffc) === 0) cpu.raiseGp(0);
  readDescriptor(cpu, sel, C.EXC_GP, 0);
  const attr = descAttr(dHi);
  if (attr & 0x10) {
    if ((attr & 8) === 0) cpu.raiseGp(sel & 0xfffc);
    checkCodeTarget(cpu, sel);
    checkEip(cpu, off);
    loadCs(cpu, sel, cpu.cpl);
    cpu.eip = off;
    return;
  }
  const type = attr & 0xf;
  const dpl = (attr >> 5) & 3;
  if (type === 4 || type === 0xc) {
    if (dpl < cpu.cpl || dpl < (sel & 3)) cpu.raiseGp(sel & 0xfffc);
    if ((attr & 0x80) === 0) cpu.raiseCode(C.EXC_NP, sel & 0xfffc);
    const target = dLo >>> 16;
    let eip = (dLo & 0xffff) | (type === 0xc ? dHi & 0xffff0000 : 0);
    if ((target & 0xfffc) === 0) cpu.raiseGp(0);
    readDescriptor(cpu, target, C.EXC_GP, 0);
    const tattr = descAttr(dHi);
    if ((tattr & 0x18) !== 0x18) cpu.raiseGp(target & 0xfffc);
    const tdpl = (tattr >> 5) & 3;
    if (tattr & 4 ? tdpl > cpu.cpl : tdpl !== cpu.cpl) cpu.raiseGp(target & 0xfffc);
    if ((tattr & 0x80) === 0) cpu.raiseCode(C.EXC_NP, target & 0xfffc);
    if (type === 4) eip &= 0xffff;
    checkEip(cpu, eip);
    loadCs(cpu, target, cpu.cpl);
    cpu.eip = eip;
    return;
  }
  if (type === 5 || type === 1 || type === 9) {
    if (dpl < cpu.cpl || dpl < (sel & 3)) cpu.raiseGp(sel & 0xfffc);
    if ((attr & 0x80) === 0) cpu.raiseCode(C.EXC_NP, sel & 0xfffc);
    taskSwitch(cpu, type === 5 ? taskGateTarget(cpu) : sel, TASK_JMP, false, 0);
    return;
  }
  cpu.raiseGp(sel & 0xfffc);
}

function taskGateTarget(_cpu: Cpu): number {
  return dLo >>> 16;
}

/** CALL ptr16:16/32 and CALL m16:16/32, including call gates (Intel SDM Vol. 3 §5.8.5). */
export function farCall(cpu: Cpu, sel: number, off: number, size: number): void {
  if (size === 1) off &= 0xffff;
  const retEip = cpu.eip;
  const retCs = cpu.segSel[C.CS];
  if (!cpu.protectedMode) {
    const sp = cpu.sp;
    const n = size === 2 ? 4 : 2;
    cpu.mmu.probeWrite(cpu.lin(C.SS, cpu.stack32 ? (sp - 2 * n) | 0 : (sp - 2 * n) & 0xffff, 2 * n, true), 2 * n);
    cpu.push(size, retCs);
    cpu.push(size, retEip);
    cpu.loadSegReal(C.CS, sel);
    cpu.jumpNear(off);
    return;
  }
  if ((sel & 0xfffc) === 0) cpu.raiseGp(0);
  readDescriptor(cpu, sel, C.EXC_GP, 0);
  const attr = descAttr(dHi);
  if (attr & 0x10) {
    if ((attr & 8) === 0) cpu.raiseGp(sel & 0xfffc);
    checkCodeTarget(cpu, sel);
    checkEip(cpu, off);
    const sp = cpu.sp;
    const n = size === 2 ? 4 : 2;
    cpu.mmu.probeWrite(cpu.lin(C.SS, cpu.stack32 ? (sp - 2 * n) | 0 : (sp - 2 * n) & 0xffff, 2 * n, true), 2 * n);
    const lo = dLo;
    const hi = dHi;
    const addr = dAddr;
    cpu.push(size, retCs);
    cpu.push(size, retEip);
    dLo = lo;
    dHi = hi;
    dAddr = addr;
    loadCs(cpu, sel, cpu.cpl);
    cpu.eip = off;
    return;
  }
  const type = attr & 0xf;
  const dpl = (attr >> 5) & 3;
  if (type === 5 || type === 1 || type === 9) {
    if (dpl < cpu.cpl || dpl < (sel & 3)) cpu.raiseGp(sel & 0xfffc);
    if ((attr & 0x80) === 0) cpu.raiseCode(C.EXC_NP, sel & 0xfffc);
    taskSwitch(cpu, type === 5 ? taskGateTarget(cpu) : sel, TASK_CALL, false, 0);
    return;
  }
  if (type !== 4 && type !== 0xc) cpu.raiseGp(sel & 0xfffc);
  if (dpl < cpu.cpl || dpl < (sel & 3)) cpu.raiseGp(sel & 0xfffc);
  if ((attr & 0x80) === 0) cpu.raiseCode(C.EXC_NP, sel & 0xfffc);
  const gateSize = type === 0xc ? 2 : 1;
  const target = dLo >>> 16;
  const params = dHi & 0x1f;
  let eip = (dLo & 0xffff) | (gateSize === 2 ? dHi & 0xffff0000 : 0);
  if ((target & 0xfffc) === 0) cpu.raiseGp(0);
  readDescriptor(cpu, target, C.EXC_GP, 0);
  const tattr = descAttr(dHi);
  const tdpl = (tattr >> 5) & 3;
  if ((tattr & 0x18) !== 0x18 || tdpl > cpu.cpl) cpu.raiseGp(target & 0xfffc);
  if ((tattr & 0x80) === 0) cpu.raiseCode(C.EXC_NP, target & 0xfffc);
  if (gateSize === 1) eip &= 0xffff;
  checkEip(cpu, eip);
  const codeLo = dLo;
  const codeHi = dHi;
  const codeAddr = dAddr;
  if ((tattr & 4) === 0 && tdpl < cpu.cpl) {
    // More privilege: switch to the inner stack from the TSS and copy the parameters.
    const oldSs = cpu.segSel[C.SS];
    const oldEsp = cpu.regs[4];
    const oldStack32 = cpu.stack32;
    const paramBase = cpu.sp;
    const copied: number[] = [];
    for (let i = params - 1; i >= 0; i--) {
      const o = oldStack32 ? (paramBase + i * (gateSize === 2 ? 4 : 2)) | 0 : (paramBase + i * (gateSize === 2 ? 4 : 2)) & 0xffff;
      copied.push(cpu.read(gateSize, C.SS, o));
    }
    const [newSs, newEsp] = innerStack(cpu, tdpl, 0);
    const savedSs = saveSeg(cpu, C.SS);
    loadInnerSs(cpu, newSs, tdpl, 0);
    cpu.regs[4] = newEsp;
    const n = gateSize === 2 ? 4 : 2;
    const total = (4 + params) * n;
    const sp = cpu.sp;
    try {
      cpu.mmu.setUser(false);
      try {
        cpu.mmu.probeWrite(cpu.lin(C.SS, cpu.stack32 ? (sp - total) | 0 : (sp - total) & 0xffff, total, true), total);
      } catch (e) {
        // The new stack cannot hold the frame: the fault is taken with the caller's SS:ESP (#SS names the new SS).
        restoreSeg(cpu, C.SS, savedSs);
        if (e === CPU_EXCEPTION && cpu.excVector === C.EXC_SS) cpu.raiseCode(C.EXC_SS, newSs & 0xfffc);
        throw e;
      }
      cpu.push(gateSize, oldSs);
      cpu.push(gateSize, oldEsp);
      for (const v of copied) cpu.push(gateSize, v);
      cpu.push(gateSize, retCs);
      cpu.push(gateSize, retEip);
    } finally {
      cpu.mmu.setUser(cpu.cpl === 3);
    }
    dLo = codeLo;
    dHi = codeHi;
    dAddr = codeAddr;
    loadCs(cpu, target, tdpl);
  } else {
    const n = gateSize === 2 ? 4 : 2;
    const sp = cpu.sp;
    cpu.mmu.probeWrite(cpu.lin(C.SS, cpu.stack32 ? (sp - 2 * n) | 0 : (sp - 2 * n) & 0xffff, 2 * n, true), 2 * n);
    cpu.push(gateSize, retCs);
    cpu.push(gateSize, retEip);
    dLo = codeLo;
    dHi = codeHi;
    dAddr = codeAddr;
    loadCs(cpu, target, cpu.cpl);
  }
  cpu.eip = eip;
}

/** SS:ESP for privilege `dpl` from the current TSS (Intel SDM Vol. 3 §7.2.1). */
function innerStack(cpu: Cpu, dpl: number, ext: number): [number, number] {
  const tss32 = (cpu.trAttr & 8) !== 0;
  const off = tss32 ? 4 + dpl * 8 : 2 + dpl * 4;
  const len = tss32 ? 8 : 4;
  if (off + len - 1 > cpu.trLimit >>> 0) cpu.raiseCode(C.EXC_TS, (cpu.trSel & 0xfffc) | ext);
  const base = cpu.trBase;
  if (tss32) return [cpu.sysRead16((base + off + 4) | 0), cpu.sysRead32((base + off) | 0)];
  return [cpu.sysRead16((base + off + 2) | 0), cpu.sysRead16((base + off) | 0)];
}

/** Loads the inner-privilege SS, raising #TS as a stack switch does. */
function loadInnerSs(cpu: Cpu, sel: number, dpl: number, ext: number): void {
  if ((sel & 0xfffc) === 0) cpu.raiseCode(C.EXC_TS, ext);
  readDescriptor(cpu, sel, C.EXC_TS, ext);
  const attr = descAttr(dHi);
  if ((sel & 3) !== dpl || ((attr >> 5) & 3) !== dpl || (attr & 0x1a) !== 0x12) cpu.raiseCode(C.EXC_TS, (sel & 0xfffc) | ext);
  if ((attr & 0x80) === 0) cpu.raiseCode(C.EXC_SS, (sel & 0xfffc) | ext);
  setAccessed(cpu);
  loadFromDesc(cpu, C.SS, sel);
}

/** RETF [imm16] (Intel SDM Vol. 2 RET). */
export function farReturn(cpu: Cpu, size: number, imm: number): void {
  const n = size === 2 ? 4 : 2;
  if (!cpu.protectedMode) {
    const eip = cpu.peek(size, 0);
    const cs = cpu.peek(size, n) & 0xffff;
    cpu.loadSegReal(C.CS, cs);
    cpu.jumpNear(size === 2 ? eip : eip & 0xffff);
    cpu.addSp(2 * n + imm);
    return;
  }
  const eip0 = cpu.peek(size, 0);
  const sel = cpu.peek(size, n) & 0xffff;
  const eip = size === 2 ? eip0 : eip0 & 0xffff;
  returnToCode(cpu, sel, eip, size, 2 * n, imm, -1);
}

/**
 * Common tail of RETF and IRET in protected mode: checks the return CS,
 * handles the return to an outer privilege level (pops SS:ESP at `depth +
 * imm`), nulls data segments the new CPL may not use. `flags` >= 0 is
 * applied (IRET) after the checks.
 */
function returnToCode(cpu: Cpu, sel: number, eip: number, size: number, depth: number, imm: number, flags: number): void {
  if ((sel & 0xfffc) === 0) cpu.raiseGp(0);
  readDescriptor(cpu, sel, C.EXC_GP, 0);
  const attr = descAttr(dHi);
  const rpl = sel & 3;
  if (rpl < cpu.cpl) cpu.raiseGp(sel & 0xfffc);
  if ((attr & 0x18) !== 0x18) cpu.raiseGp(sel & 0xfffc);
  const dpl = (attr >> 5) & 3;
  if (attr & 4 ? dpl > rpl : dpl !== rpl) cpu.raiseGp(sel & 0xfffc);
  if ((attr & 0x80) === 0) cpu.raiseCode(C.EXC_NP, sel & 0xfffc);
  const n = size === 2 ? 4 : 2;
  const codeLo = dLo;
  const codeHi = dHi;
  const codeAddr = dAddr;
  if (rpl === cpu.cpl) {
    checkEip(cpu, eip);
    loadCs(cpu, sel, rpl);
    cpu.eip = eip;
    cpu.addSp(depth + imm);
    if (flags >= 0) applyIretFlags(cpu, flags, size);
    return;
  }
  // Return to an outer level: SS:ESP follow the popped values.
  const newEsp = cpu.peek(size, depth + imm);
  const newSs = cpu.peek(size, depth + imm + n) & 0xffff;
  if ((newSs & 0xfffc) === 0) cpu.raiseGp(0);
  if ((newSs & 3) !== rpl) cpu.raiseGp(newSs & 0xfffc);
  readDescriptor(cpu, newSs, C.EXC_GP, 0);
  const sattr = descAttr(dHi);
  if ((sattr & 0x1a) !== 0x12 || ((sattr >> 5) & 3) !== rpl) cpu.raiseGp(newSs & 0xfffc);
  if ((sattr & 0x80) === 0) cpu.raiseCode(C.EXC_SS, newSs & 0xfffc);
  const ssLo = dLo;
  const ssHi = dHi;
  const ssAddr = dAddr;
  dLo = codeLo;
  dHi = codeHi;
  dAddr = codeAddr;
  checkEip(cpu, eip);
  if (flags >= 0) applyIretFlags(cpu, flags, size); // uses the old CPL for the IF/IOPL rules
  loadCs(cpu, sel, rpl);
  cpu.eip = eip;
  dLo = ssLo;
  dHi = ssHi;
  dAddr = ssAddr;
  setAccessed(cpu);
  loadFromDesc(cpu, C.SS, newSs);
  cpu.regs[4] = size === 2 ? newEsp : (cpu.regs[4] & ~0xffff) | (newEsp & 0xffff);
  if (!cpu.stack32 && size === 2) cpu.regs[4] = newEsp;
  cpu.addSp(imm);
  for (const s of [C.ES, C.DS, C.FS, C.GS]) {
    const a = cpu.segAttr[s];
    if (a & ATTR_UNUSABLE) continue;
    const sdpl = (a >> 5) & 3;
    const dataOrNonConf = (a & 0x18) !== 0x18 || (a & 4) === 0;
    if (dataOrNonConf && sdpl < rpl) cpu.setSegCache(s, 0, 0, 0, ATTR_UNUSABLE);
  }
}

/** Applies EFLAGS popped by IRET in protected mode, honouring CPL and IOPL (Intel SDM Vol. 2 IRET). */
function applyIretFlags(cpu: Cpu, v: number, size: number): void {
  let mask = C.CF | C.PF | C.AF | C.ZF | C.SF | C.TF | C.DF | C.OF | C.NT;
  if (size === 2) mask |= C.RF | C.AC | C.ID;
  const iopl = (cpu.flags & C.IOPL) >> 12;
  if (cpu.cpl <= iopl) mask |= C.IF;
  if (cpu.cpl === 0) {
    mask |= C.IOPL;
    if (size === 2) mask |= C.VIF | C.VIP;
  }
  const old = cpu.getFlags();
  cpu.setFlagsRaw((old & ~mask) | (v & mask));
  cpu.attention = 1;
}

// ------------------------------------------------------------------ PUSHF / POPF / CLI / STI

/** PUSHF/PUSHFD (Intel SDM Vol. 2 PUSHF): #GP(0) in V86 mode with IOPL < 3 (no VME). */
export function pushf(cpu: Cpu, size: number): void {
  const f = cpu.getFlags();
  if (f & C.VM && (f & C.IOPL) !== C.IOPL) cpu.raiseGp(0);
  cpu.push(size, size === 2 ? f & 0x00fcffff : f);
}

/** POPF/POPFD with the CPL/IOPL rules of the SDM. */
export function popf(cpu: Cpu, size: number): void {
  const old = cpu.getFlags();
  const vm = (old & C.VM) !== 0;
  if (vm && (old & C.IOPL) !== C.IOPL) cpu.raiseGp(0);
  const v = cpu.pop(size);
  let mask = C.CF | C.PF | C.AF | C.ZF | C.SF | C.TF | C.DF | C.OF | C.NT;
  if (size === 2) mask |= C.AC | C.ID;
  const iopl = (old & C.IOPL) >> 12;
  if ((cpu.cr0 & C.CR0_PE) === 0) mask |= C.IF | C.IOPL;
  else if (vm) mask |= C.IF;
  else {
    if (cpu.cpl <= iopl) mask |= C.IF;
    if (cpu.cpl === 0) mask |= C.IOPL;
  }
  cpu.setFlagsRaw((old & ~mask) | (v & mask));
  cpu.attention = 1;
}

/** CLI: #GP(0) when CPL > IOPL in protected mode (V86: IOPL < 3). */
export function cli(cpu: Cpu): void {
  if (cpu.cr0 & C.CR0_PE) {
    const iopl = (cpu.flags & C.IOPL) >> 12;
    if (cpu.flags & C.VM ? iopl !== 3 : cpu.cpl > iopl) cpu.raiseGp(0);
  }
  cpu.flags &= ~C.IF;
}

/** STI: as CLI; interrupts stay blocked until after the next instruction. */
export function sti(cpu: Cpu): void {
  if (cpu.cr0 & C.CR0_PE) {
    const iopl = (cpu.flags & C.IOPL) >> 12;
    if (cpu.flags & C.VM ? iopl !== 3 : cpu.cpl > iopl) cpu.raiseGp(0);
  }
  if ((cpu.flags & C.IF) === 0) {
    cpu.flags |= C.IF;
    cpu.setShadow();
  }
}

// ------------------------------------------------------------------ ENTER / BOUND / ARPL

/** ENTER imm16, imm8 (Intel SDM Vol. 2 ENTER). */
export function enter(cpu: Cpu, alloc: number, level: number, size: number): void {
  const n = size === 2 ? 4 : 2;
  const regs = cpu.regs;
  const sp = cpu.sp;
  const total = n * (level + 1) + alloc;
  const low = cpu.stack32 ? (sp - total) | 0 : (sp - total) & 0xffff;
  // Check the whole frame first: the instruction must not fault half way.
  cpu.mmu.probeWrite(cpu.lin(C.SS, low, total > 0 ? total : 1, true), Math.max(1, total));
  const ebp = regs[5];
  cpu.push(size, ebp);
  const frame = cpu.stack32 ? regs[4] : regs[4] & 0xffff;
  let bp = ebp;
  if (level > 0) {
    for (let i = 1; i < level; i++) {
      bp = cpu.stack32 ? (bp - n) | 0 : (bp - n) & 0xffff;
      cpu.push(size, cpu.read(size, C.SS, bp));
    }
    cpu.push(size, frame);
  }
  if (size === 2) regs[5] = frame;
  else cpu.r16[10] = frame;
  cpu.addSp(-alloc);
}

/** BOUND r, m (Intel SDM Vol. 2 BOUND): #BR when out of range. */
export function bound(cpu: Cpu): void {
  cpu.decodeModrm();
  if (cpu.mod === 3) cpu.raiseUd();
  const s = cpu.o32 ? 2 : 1;
  const idx = cpu.getReg(s, cpu.reg);
  const lo = cpu.read(s, cpu.eaSeg, cpu.eaOff);
  const hi = cpu.read(s, cpu.eaSeg, (cpu.eaOff + (s === 2 ? 4 : 2)) | 0);
  const v = s === 2 ? idx : (idx << 16) >> 16;
  const l = s === 2 ? lo : (lo << 16) >> 16;
  const h = s === 2 ? hi : (hi << 16) >> 16;
  if (v < l || v > h) cpu.raise(C.EXC_BR);
}

/** ARPL r/m16, r16: #UD outside protected mode. */
export function arpl(cpu: Cpu): void {
  if (!cpu.protectedMode) cpu.raiseUd();
  cpu.decodeModrm();
  const la = cpu.mod === 3 ? 0 : cpu.rmwLin(1);
  const dst = cpu.mod === 3 ? cpu.getReg(1, cpu.rm) : cpu.readLin(1, la);
  const src = cpu.getReg(1, cpu.reg);
  if ((dst & 3) < (src & 3)) {
    const r = (dst & ~3) | (src & 3);
    if (cpu.mod === 3) cpu.setReg(1, cpu.rm, r);
    else cpu.writeLin(1, la, r);
    cpu.setArith(C.ZF, C.ZF);
  } else cpu.setArith(0, C.ZF);
}

// ------------------------------------------------------------------ I/O permission bitmap

/** Checks the TSS I/O permission bitmap for `len` ports at `port` (Intel SDM Vol. 1 §19.5.2). */
export function checkIoBitmap(cpu: Cpu, port: number, len: number): void {
  // Only a 32-bit TSS has a bitmap; its base is the 16-bit field at offset 0x66.
  if ((cpu.trAttr & 0xf) !== 0xb && (cpu.trAttr & 0xf) !== 9) cpu.raiseGp(0);
  const limit = cpu.trLimit >>> 0;
  if (limit < 0x67) cpu.raiseGp(0);
  const mapBase = cpu.sysRead16((cpu.trBase + 0x66) | 0);
  const byte = mapBase + (port >> 3);
  if (byte + 1 > limit) cpu.raiseGp(0);
  const bits = cpu.sysRead16((cpu.trBase + byte) | 0);
  const mask = ((1 << len) - 1) << (port & 7);
  if (bits & mask) cpu.raiseGp(0);
}

// ------------------------------------------------------------------ interrupts and exceptions

function hasErrorCode(vector: number): boolean {
  return vector === 8 || (vector >= 10 && vector <= 14) || vector === 17;
}

function contributory(v: number): boolean {
  return v === 0 || (v >= 10 && v <= 13);
}

/**
 * Delivers the exception in cpu.excVector/excCode (EIP already at the
 * faulting instruction), applying the double-fault rules (Intel SDM Vol. 3
 * §6.15, table 6-5): a contributory fault during delivery of a contributory
 * fault, or a contributory/page fault during delivery of a page fault,
 * becomes #DF; a fault while delivering #DF is a triple fault (shutdown).
 */
export function deliverException(cpu: Cpu): void {
  let vec = cpu.excVector;
  let hasCode = cpu.excHasCode || hasErrorCode(vec);
  let code = cpu.excHasCode ? cpu.excCode : 0;
  if (cpu.exceptionExit && cpu.exceptionExit(vec, code)) return;
  for (;;) {
    try {
      cpu.delivering = vec;
      deliverInterrupt(cpu, vec, hasCode, code, true, false);
      cpu.delivering = -1;
      return;
    } catch (e) {
      if (e !== CPU_EXCEPTION && e !== PAGE_FAULT) throw e;
      let next = cpu.excVector;
      let nextCode = cpu.excCode;
      if (e === PAGE_FAULT) {
        cpu.cr2 = cpu.mmu.faultAddress;
        next = C.EXC_PF;
        nextCode = cpu.mmu.faultCode;
      }
      cpu.delivering = -1;
      if (vec === C.EXC_DF) {
        tripleFault(cpu);
        return;
      }
      const df = (contributory(vec) && contributory(next)) || (vec === C.EXC_PF && (contributory(next) || next === C.EXC_PF));
      if (df) {
        vec = C.EXC_DF;
        hasCode = true;
        code = 0;
      } else {
        vec = next;
        hasCode = hasErrorCode(next);
        code = nextCode;
      }
    }
  }
}

/** A triple fault: the processor enters shutdown; the machine stops or resets. */
export function tripleFault(cpu: Cpu): void {
  cpu.exits.shutdown++;
  cpu.halted = true;
  cpu.flags &= ~C.IF;
  cpu.requestExit();
  cpu.host.shutdown("triple fault");
}

/** INT n / INT3 / INTO: software interrupts check the gate DPL; in V86 mode IOPL must be 3 (no VME). */
export function softwareInterrupt(cpu: Cpu, vector: number, _isInt3: boolean): void {
  if (cpu.softIntHook && cpu.softIntHook(vector)) return;
  if (cpu.flags & C.VM && (cpu.flags & C.IOPL) !== C.IOPL) cpu.raiseGp(0);
  const stepping = (cpu.flags & C.TF) !== 0;
  deliverInterrupt(cpu, vector, false, 0, false, false);
  if (stepping) cpu.singleStepSuppressed = true; // INT n cleared TF: no single-step trap after it
}

/**
 * Delivers interrupt `vector` through the IVT (real mode) or the IDT.
 * `external` marks hardware interrupts and exceptions: they skip the gate
 * DPL check and set EXT in error codes. `icebp` is INT1 (no DPL check).
 */
export function deliverInterrupt(cpu: Cpu, vector: number, hasCode: boolean, code: number, external: boolean, icebp: boolean): void {
  cpu.halted = false;
  const ext = external || icebp ? 1 : 0;
  if ((cpu.cr0 & C.CR0_PE) === 0) {
    // Real mode (Intel SDM Vol. 3 §21.1.4): IVT entry of 4 bytes.
    const off = vector * 4;
    if (off + 3 > cpu.idtLimit >>> 0) cpu.raiseGp(0);
    const ip = cpu.mmu.read16((cpu.idtBase + off) | 0);
    const cs = cpu.mmu.read16((cpu.idtBase + off + 2) | 0);
    const sp = cpu.sp;
    cpu.mmu.probeWrite(cpu.lin(C.SS, (sp - 6) & 0xffff, 6, true), 6);
    cpu.push(1, cpu.getFlags());
    cpu.push(1, cpu.segSel[C.CS]);
    cpu.push(1, cpu.eip);
    cpu.flags &= ~(C.IF | C.TF | C.AC | C.RF);
    cpu.loadSegReal(C.CS, cs);
    cpu.eip = ip;
    return;
  }
  const vm = (cpu.flags & C.VM) !== 0;
  if (vector * 8 + 7 > cpu.idtLimit >>> 0) cpu.raiseGp(vector * 8 + 2 + ext);
  const ga = (cpu.idtBase + vector * 8) | 0;
  const gLo = cpu.sysRead32(ga);
  const gHi = cpu.sysRead32((ga + 4) | 0);
  const gattr = (gHi >>> 8) & 0xff;
  const type = gattr & 0x1f; // includes the S bit: system gates have S = 0
  if (type !== 5 && type !== 6 && type !== 7 && type !== 0xe && type !== 0xf) cpu.raiseGp(vector * 8 + 2 + ext);
  const gdpl = (gattr >> 5) & 3;
  if (!external && !icebp && gdpl < cpu.cpl) cpu.raiseGp(vector * 8 + 2);
  if ((gattr & 0x80) === 0) cpu.raiseCode(C.EXC_NP, vector * 8 + 2 + ext);
  if (type === 5) {
    taskSwitch(cpu, gLo >>> 16, TASK_INT, hasCode, code);
    return;
  }
  const gateSize = type & 8 ? 2 : 1;
  const sel = gLo >>> 16;
  let eip = (gLo & 0xffff) | (gateSize === 2 ? gHi & 0xffff0000 : 0);
  if (gateSize === 1) eip &= 0xffff;
  if ((sel & 0xfffc) === 0) cpu.raiseGp(ext);
  readDescriptor(cpu, sel, C.EXC_GP, ext);
  const attr = descAttr(dHi);
  const dpl = (attr >> 5) & 3;
  if ((attr & 0x18) !== 0x18 || dpl > cpu.cpl) cpu.raiseGp((sel & 0xfffc) | ext);
  if ((attr & 0x80) === 0) cpu.raiseCode(C.EXC_NP, (sel & 0xfffc) | ext);
  const codeLo = dLo;
  const codeHi = dHi;
  const codeAddr = dAddr;
  const oldFlags = cpu.getFlags();
  const oldCs = cpu.segSel[C.CS];
  const oldEip = cpu.eip;
  const n = gateSize === 2 ? 4 : 2;
  if ((attr & 4) === 0 && dpl < cpu.cpl) {
    if (vm && dpl !== 0) cpu.raiseGp((sel & 0xfffc) | ext);
    const [newSs, newEsp] = innerStack(cpu, dpl, ext);
    const oldSs = cpu.segSel[C.SS];
    const oldEsp = cpu.regs[4];
    const segs = vm ? [cpu.segSel[C.GS], cpu.segSel[C.FS], cpu.segSel[C.DS], cpu.segSel[C.ES]] : null;
    // Validate the new stack and the whole frame before changing anything visible.
    const saved = saveSeg(cpu, C.SS);
    loadInnerSs(cpu, newSs, dpl, ext);
    const frame = ((vm ? 9 : 5) + (hasCode ? 1 : 0)) * n;
    const top = cpu.stack32 ? newEsp : newEsp & 0xffff;
    cpu.mmu.setUser(false);
    try {
      cpu.mmu.probeWrite(cpu.lin(C.SS, cpu.stack32 ? (top - frame) | 0 : (top - frame) & 0xffff, frame, true), frame);
    } catch (e) {
      restoreSeg(cpu, C.SS, saved);
      cpu.mmu.setUser(cpu.cpl === 3);
      if (e === CPU_EXCEPTION && cpu.excVector === C.EXC_SS) cpu.raiseCode(C.EXC_SS, (newSs & 0xfffc) | ext);
      throw e;
    }
    cpu.regs[4] = newEsp;
    if (segs) {
      for (const s of segs) cpu.push(gateSize, s);
    }
    cpu.push(gateSize, oldSs);
    cpu.push(gateSize, oldEsp);
    cpu.push(gateSize, oldFlags);
    cpu.push(gateSize, oldCs);
    cpu.push(gateSize, oldEip);
    if (hasCode) cpu.push(gateSize, code);
    if (vm) {
      for (const s of [C.ES, C.DS, C.FS, C.GS]) cpu.setSegCache(s, 0, 0, 0, ATTR_UNUSABLE);
    }
    dLo = codeLo;
    dHi = codeHi;
    dAddr = codeAddr;
    cpu.flags &= ~C.VM;
    loadCs(cpu, sel, dpl);
  } else {
    if (vm) cpu.raiseGp((sel & 0xfffc) | ext);
    const frame = (3 + (hasCode ? 1 : 0)) * n;
    const sp = cpu.sp;
    cpu.mmu.probeWrite(cpu.lin(C.SS, cpu.stack32 ? (sp - frame) | 0 : (sp - frame) & 0xffff, frame, true), frame);
    cpu.push(gateSize, oldFlags);
    cpu.push(gateSize, oldCs);
    cpu.push(gateSize, oldEip);
    if (hasCode) cpu.push(gateSize, code);
    dLo = codeLo;
    dHi = codeHi;
    dAddr = codeAddr;
    loadCs(cpu, sel, cpu.cpl);
  }
  cpu.eip = eip;
  cpu.flags &= ~(C.TF | C.NT | C.RF | C.VM);
  if ((type & 1) === 0) cpu.flags &= ~C.IF;
}

function saveSeg(cpu: Cpu, s: number): [number, number, number, number] {
  return [cpu.segSel[s], cpu.segBase[s], cpu.segLimit[s], cpu.segAttr[s]];
}

function restoreSeg(cpu: Cpu, s: number, v: [number, number, number, number]): void {
  cpu.setSegCache(s, v[0], v[1], v[2], v[3]);
}

/** IRET/IRETD (Intel SDM Vol. 2 IRET): real mode, V86, nested task return, same and outer privilege, return to V86. */
export function iret(cpu: Cpu, size: number): void {
  const n = size === 2 ? 4 : 2;
  cpu.nmiBlocked = false;
  if ((cpu.cr0 & C.CR0_PE) === 0) {
    const eip = cpu.peek(size, 0);
    const cs = cpu.peek(size, n) & 0xffff;
    const fl = cpu.peek(size, 2 * n);
    cpu.loadSegReal(C.CS, cs);
    cpu.jumpNear(size === 2 ? eip : eip & 0xffff);
    cpu.addSp(3 * n);
    const old = cpu.getFlags();
    const mask = size === 2 ? 0x257fd5 : 0x7fd5;
    cpu.setFlagsRaw((old & ~mask) | (fl & mask));
    cpu.attention = 1;
    return;
  }
  if (cpu.flags & C.VM) {
    if ((cpu.flags & C.IOPL) !== C.IOPL) cpu.raiseGp(0);
    const eip = cpu.peek(size, 0);
    const cs = cpu.peek(size, n) & 0xffff;
    const fl = cpu.peek(size, 2 * n);
    if (size === 2 && eip >>> 0 > 0xffff) cpu.raiseGp(0);
    cpu.loadSegReal(C.CS, cs);
    cpu.eip = eip & 0xffff;
    cpu.addSp(3 * n);
    const old = cpu.getFlags();
    const mask = (size === 2 ? C.AC | C.ID | C.RF : 0) | 0x7fd5 & ~C.IOPL;
    cpu.setFlagsRaw((old & ~mask) | (fl & mask));
    cpu.attention = 1;
    return;
  }
  if (cpu.flags & C.NT) {
    // Return from a nested task through the back link (Intel SDM Vol. 3 §7.3).
    const link = cpu.sysRead16(cpu.trBase);
    taskSwitch(cpu, link, TASK_IRET, false, 0);
    return;
  }
  const eip0 = cpu.peek(size, 0);
  const sel = cpu.peek(size, n) & 0xffff;
  const fl = cpu.peek(size, 2 * n);
  if (size === 2 && fl & C.VM && cpu.cpl === 0) {
    // Return to virtual-8086 mode: the frame also holds ESP, SS, ES, DS, FS, GS.
    const esp = cpu.peek(2, 12);
    const ss = cpu.peek(2, 16);
    const es = cpu.peek(2, 20);
    const ds = cpu.peek(2, 24);
    const fs = cpu.peek(2, 28);
    const gs = cpu.peek(2, 32);
    cpu.setFlagsRaw(fl | C.VM);
    cpu.cpl = 3;
    cpu.updateCpl();
    for (const [s, v] of [[C.CS, sel], [C.SS, ss], [C.ES, es], [C.DS, ds], [C.FS, fs], [C.GS, gs]] as const) cpu.loadSegReal(s, v);
    cpu.regs[4] = esp;
    cpu.eip = eip0 & 0xffff;
    cpu.attention = 1;
    return;
  }
  const eip = size === 2 ? eip0 : eip0 & 0xffff;
  returnToCode(cpu, sel, eip, size, 3 * n, 0, fl);
}

// ------------------------------------------------------------------ task switching

/** Task switch source: JMP. */
export const TASK_JMP = 0;
/** Task switch source: CALL. */
export const TASK_CALL = 1;
/** Task switch source: IRET. */
export const TASK_IRET = 2;
/** Task switch source: interrupt or exception through a task gate. */
export const TASK_INT = 3;

/**
 * Switches to the task whose TSS selector is `sel` (Intel SDM Vol. 3
 * §7.3): checks the new TSS, saves the current state in the old TSS,
 * manages busy bits, NT and the back link, loads CR3, LDTR, the registers
 * and segments (raising #TS/#NP/#SS in the new task's context), and pushes
 * the error code when an exception caused the switch.
 */
export function taskSwitch(cpu: Cpu, sel: number, source: number, hasCode: boolean, code: number): void {
  const ext = source === TASK_INT ? 1 : 0;
  if (sel & 4) cpu.raiseCode(C.EXC_TS, (sel & 0xfffc) | ext);
  readDescriptor(cpu, sel, source === TASK_IRET ? C.EXC_TS : C.EXC_GP, ext);
  const attr = descAttr(dHi);
  const type = attr & 0x1f;
  const busy = type === 3 || type === 0xb;
  if (source === TASK_IRET ? !busy : type !== 1 && type !== 9) cpu.raiseCode(source === TASK_IRET ? C.EXC_TS : C.EXC_GP, (sel & 0xfffc) | ext);
  if ((attr & 0x80) === 0) cpu.raiseCode(C.EXC_NP, (sel & 0xfffc) | ext);
  const newBase = descBase(dLo, dHi);
  const newLimit = descLimit(dLo, dHi) >>> 0;
  const new32 = (type & 8) !== 0;
  if (newLimit < (new32 ? 0x67 : 0x2b)) cpu.raiseCode(C.EXC_TS, (sel & 0xfffc) | ext);
  const newDescAddr = dAddr;
  const newHi = dHi;

  // Read the new task's state first (its pages must be present before we commit anything).
  const r = (o: number): number => (new32 ? cpu.sysRead32((newBase + o) | 0) : cpu.sysRead16((newBase + o) | 0));
  const nEip = new32 ? r(0x20) : r(0x0e);
  let nFlags = new32 ? r(0x24) : r(0x10) | (cpu.getFlags() & 0xffff0000 & 0);
  const nRegs: number[] = [];
  for (let i = 0; i < 8; i++) nRegs.push(new32 ? r(0x28 + i * 4) : r(0x12 + i * 2));
  const nSegs: number[] = [];
  for (let i = 0; i < (new32 ? 6 : 4); i++) nSegs.push((new32 ? cpu.sysRead16((newBase + 0x48 + i * 4) | 0) : r(0x22 + i * 2)) & 0xffff);
  if (!new32) nSegs.push(0, 0);
  const nLdt = (new32 ? cpu.sysRead16((newBase + 0x60) | 0) : r(0x2a)) & 0xffff;
  const nCr3 = new32 ? r(0x1c) : cpu.cr3;

  // Save the outgoing task.
  const oldBase = cpu.trBase;
  const old32 = (cpu.trAttr & 8) !== 0;
  let oFlags = cpu.getFlags();
  if (source === TASK_IRET) oFlags &= ~C.NT;
  if (source === TASK_JMP || source === TASK_IRET) {
    // Clear the busy bit of the old TSS descriptor.
    const oa = ((cpu.trSel & 4 ? cpu.ldtrBase : cpu.gdtBase) + (cpu.trSel & 0xfff8) + 5) | 0;
    cpu.sysWrite8(oa, cpu.sysRead8(oa) & ~2);
  }
  if (old32) {
    cpu.sysWrite32((oldBase + 0x20) | 0, cpu.eip);
    cpu.sysWrite32((oldBase + 0x24) | 0, oFlags);
    for (let i = 0; i < 8; i++) cpu.sysWrite32((oldBase + 0x28 + i * 4) | 0, cpu.regs[i]);
    for (let i = 0; i < 6; i++) cpu.sysWrite16((oldBase + 0x48 + i * 4) | 0, cpu.segSel[i]);
  } else {
    cpu.sysWrite16((oldBase + 0x0e) | 0, cpu.eip);
    cpu.sysWrite16((oldBase + 0x10) | 0, oFlags);
    for (let i = 0; i < 8; i++) cpu.sysWrite16((oldBase + 0x12 + i * 2) | 0, cpu.regs[i]);
    for (let i = 0; i < 4; i++) cpu.sysWrite16((oldBase + 0x22 + i * 2) | 0, cpu.segSel[i]);
  }
  if (source === TASK_CALL || source === TASK_INT) {
    cpu.sysWrite16(newBase, cpu.trSel);
    nFlags |= C.NT;
  }
  if (source !== TASK_IRET) {
    // Mark the new TSS busy.
    cpu.sysWrite8((newDescAddr + 5) | 0, ((newHi >>> 8) & 0xff) | 2);
  }
  cpu.trSel = sel;
  cpu.trBase = newBase;
  cpu.trLimit = newLimit;
  cpu.trAttr = descAttr(newHi) | 2;
  cpu.cr0 |= C.CR0_TS;

  // Load the new task's state. From here faults happen in the new task's context.
  if (new32 && cpu.cr0 & C.CR0_PG) {
    cpu.cr3 = nCr3;
    if (cpu.cr4 & C.CR4_PAE && !cpu.mmu.loadPdptes(nCr3)) cpu.raiseGp(0);
    cpu.updatePaging();
  }
  cpu.eip = nEip;
  cpu.setFlagsRaw(new32 ? nFlags : (cpu.getFlags() & 0xffff0000) | (nFlags & 0xffff));
  for (let i = 0; i < 8; i++) {
    if (new32) cpu.regs[i] = nRegs[i];
    else cpu.r16[i * 2] = nRegs[i];
  }
  // Selectors first (so a fault reports the new task's values), then the descriptor checks.
  for (let i = 0; i < 6; i++) cpu.segSel[i] = nSegs[i];
  cpu.ldtrSel = nLdt;
  const vm = (cpu.flags & C.VM) !== 0;
  cpu.cpl = vm ? 3 : nSegs[C.CS] & 3;
  cpu.updateCpl();
  // LDT (Intel SDM Vol. 3 §7.3 step 12): invalid LDT -> #TS(ldt).
  if ((nLdt & 0xfffc) === 0) cpu.ldtrAttr = ATTR_UNUSABLE;
  else {
    if (nLdt & 4) cpu.raiseCode(C.EXC_TS, (nLdt & 0xfffc) | ext);
    readDescriptor(cpu, nLdt, C.EXC_TS, ext);
    const la = descAttr(dHi);
    if ((la & 0x1f) !== 2) cpu.raiseCode(C.EXC_TS, (nLdt & 0xfffc) | ext);
    if ((la & 0x80) === 0) cpu.raiseCode(C.EXC_TS, (nLdt & 0xfffc) | ext);
    cpu.ldtrBase = descBase(dLo, dHi);
    cpu.ldtrLimit = descLimit(dLo, dHi);
    cpu.ldtrAttr = la;
  }
  if (vm) {
    for (let i = 0; i < 6; i++) cpu.loadSegReal(i, nSegs[i]);
  } else {
    // CS: must be a present code segment whose DPL matches its RPL (non-conforming).
    const cs = nSegs[C.CS];
    if ((cs & 0xfffc) === 0) cpu.raiseCode(C.EXC_TS, ext);
    readDescriptor(cpu, cs, C.EXC_TS, ext);
    const ca = descAttr(dHi);
    const cdpl = (ca >> 5) & 3;
    if ((ca & 0x18) !== 0x18 || (ca & 4 ? cdpl > (cs & 3) : cdpl !== (cs & 3))) cpu.raiseCode(C.EXC_TS, (cs & 0xfffc) | ext);
    if ((ca & 0x80) === 0) cpu.raiseCode(C.EXC_NP, (cs & 0xfffc) | ext);
    setAccessed(cpu);
    loadFromDesc(cpu, C.CS, cs);
    loadSegProtected(cpu, C.SS, nSegs[C.SS], C.EXC_TS, ext);
    for (const s of [C.ES, C.DS, C.FS, C.GS]) loadSegProtected(cpu, s, nSegs[s], C.EXC_TS, ext);
  }
  if (hasCode) {
    cpu.push(new32 ? 2 : 1, code);
  }
  if (cpu.eip >>> 0 > cpu.segLimit[C.CS] >>> 0) cpu.raiseGp(ext);
  cpu.attention = 1;
}

// ------------------------------------------------------------------ LLDT / LTR / LAR / LSL / VERR / VERW

/** LLDT (Intel SDM Vol. 2 LLDT). */
export function lldt(cpu: Cpu, sel: number): void {
  if ((sel & 0xfffc) === 0) {
    cpu.ldtrSel = sel;
    cpu.ldtrAttr = ATTR_UNUSABLE;
    return;
  }
  if (sel & 4) cpu.raiseGp(sel & 0xfffc);
  readDescriptor(cpu, sel, C.EXC_GP, 0);
  const attr = descAttr(dHi);
  if ((attr & 0x1f) !== 2) cpu.raiseGp(sel & 0xfffc);
  if ((attr & 0x80) === 0) cpu.raiseCode(C.EXC_NP, sel & 0xfffc);
  cpu.ldtrSel = sel;
  cpu.ldtrBase = descBase(dLo, dHi);
  cpu.ldtrLimit = descLimit(dLo, dHi);
  cpu.ldtrAttr = attr;
}

/** LTR: loads TR and marks the TSS busy. */
export function ltr(cpu: Cpu, sel: number): void {
  if ((sel & 0xfffc) === 0) cpu.raiseGp(0);
  if (sel & 4) cpu.raiseGp(sel & 0xfffc);
  readDescriptor(cpu, sel, C.EXC_GP, 0);
  const attr = descAttr(dHi);
  const type = attr & 0x1f;
  if (type !== 1 && type !== 9) cpu.raiseGp(sel & 0xfffc);
  if ((attr & 0x80) === 0) cpu.raiseCode(C.EXC_NP, sel & 0xfffc);
  cpu.sysWrite8((dAddr + 5) | 0, ((dHi >>> 8) & 0xff) | 2);
  cpu.trSel = sel;
  cpu.trBase = descBase(dLo, dHi);
  cpu.trLimit = descLimit(dLo, dHi);
  cpu.trAttr = attr | 2;
}

/**
 * Shared check of LAR/LSL/VERR/VERW: reads `sel` without faulting and
 * returns whether it is visible at the current CPL/RPL (ZF result).
 * `kind`: 0 LAR, 1 LSL, 2 VERR, 3 VERW.
 */
function probeSelector(cpu: Cpu, sel: number, kind: number): boolean {
  if ((sel & 0xfffc) === 0) return false;
  const idx = sel & 0xfff8;
  const base = sel & 4 ? cpu.ldtrBase : cpu.gdtBase;
  const limit = sel & 4 ? cpu.ldtrLimit : cpu.gdtLimit;
  if (sel & 4 && cpu.ldtrAttr & ATTR_UNUSABLE) return false;
  if (idx + 7 > limit >>> 0) return false;
  dAddr = (base + idx) | 0;
  dLo = cpu.sysRead32(dAddr);
  dHi = cpu.sysRead32((dAddr + 4) | 0);
  const attr = descAttr(dHi);
  const dpl = (attr >> 5) & 3;
  const conformingCode = (attr & 0x1c) === 0x1c;
  if (attr & 0x10) {
    if (kind === 2) {
      if ((attr & 0x1a) === 0x18) return false; // execute-only code
    } else if (kind === 3) {
      if ((attr & 0x1a) !== 0x12) return false; // writable data only
    }
    if (!conformingCode && (dpl < cpu.cpl || dpl < (sel & 3))) return false;
    return true;
  }
  if (kind >= 2) return false;
  const type = attr & 0xf;
  // LSL accepts LDT and TSS; LAR also accepts gates.
  const ok = kind === 1 ? [1, 2, 3, 9, 0xb].includes(type) : [1, 2, 3, 4, 5, 9, 0xb, 0xc].includes(type);
  if (!ok) return false;
  return dpl >= cpu.cpl && dpl >= (sel & 3);
}

/** LAR: access rights of `sel` (dHi & 0x00F0FF00), or undefined (ZF=0). */
export function lar(cpu: Cpu, sel: number): number | undefined {
  if (!probeSelector(cpu, sel, 0)) return undefined;
  return dHi & 0x00f0ff00;
}

/** LSL: byte-granular limit of `sel`, or undefined (ZF=0). */
export function lsl(cpu: Cpu, sel: number): number | undefined {
  if (!probeSelector(cpu, sel, 1)) return undefined;
  return descLimit(dLo, dHi);
}

/** VERR (write = false) / VERW (write = true). */
export function verify(cpu: Cpu, sel: number, write: boolean): boolean {
  return probeSelector(cpu, sel, write ? 3 : 2);
}

// ------------------------------------------------------------------ SYSENTER / SYSEXIT

/** SYSENTER (Intel SDM Vol. 2): flat ring-0 CS/SS from IA32_SYSENTER_CS. */
export function sysenter(cpu: Cpu): void {
  if ((cpu.cr0 & C.CR0_PE) === 0 || (cpu.sysenterCs & 0xfffc) === 0) cpu.raiseGp(0);
  cpu.flags &= ~(C.VM | C.IF | C.RF);
  const cs = cpu.sysenterCs & 0xfffc;
  cpu.cpl = 0;
  cpu.updateCpl();
  cpu.setSegCache(C.CS, cs, 0, -1, 0x9b | 0xc000);
  cpu.setSegCache(C.SS, cs + 8, 0, -1, 0x93 | 0xc000);
  cpu.regs[4] = cpu.sysenterEsp;
  cpu.eip = cpu.sysenterEip;
}

/** SYSEXIT: flat ring-3 CS/SS at IA32_SYSENTER_CS + 16/24, EIP = EDX, ESP = ECX. */
export function sysexit(cpu: Cpu): void {
  if ((cpu.cr0 & C.CR0_PE) === 0 || cpu.flags & C.VM || cpu.cpl !== 0 || (cpu.sysenterCs & 0xfffc) === 0) cpu.raiseGp(0);
  const cs = cpu.sysenterCs & 0xfffc;
  cpu.cpl = 3;
  cpu.updateCpl();
  cpu.setSegCache(C.CS, (cs + 16) | 3, 0, -1, 0xfb | 0xc000);
  cpu.setSegCache(C.SS, (cs + 24) | 3, 0, -1, 0xf3 | 0xc000);
  cpu.regs[4] = cpu.regs[1];
  cpu.eip = cpu.regs[2];
}
