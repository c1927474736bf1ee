// Boot state and snapshots of a vCPU.
import { StateError, type StateValue, type X86BootState, type X86SegmentName } from "@typevisor/hv-core";
import * as C from "./constants.js";
import type { Cpu } from "./cpu.js";

const SEG_NAMES: X86SegmentName[] = ["es", "cs", "ss", "ds", "fs", "gs"];
const REG_NAMES = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"] as const;

/**
 * Puts `cpu` into a boot loader's state after a reset (e.g. flat protected
 * mode for the Linux 32-bit boot protocol or multiboot). CPL follows the DPL
 * of the CS descriptor given; paging registers are pushed to the MMU.
 */
export function applyBootState(cpu: Cpu, s: X86BootState): void {
  cpu.reset();
  cpu.regs[2] = 0;
  if (s.cr0 !== undefined) cpu.cr0 = s.cr0 | C.CR0_ET;
  if (s.cr3 !== undefined) cpu.cr3 = s.cr3;
  if (s.cr4 !== undefined) cpu.cr4 = s.cr4;
  if (s.gdtr) {
    cpu.gdtBase = s.gdtr.base | 0;
    cpu.gdtLimit = s.gdtr.limit;
  }
  if (s.idtr) {
    cpu.idtBase = s.idtr.base | 0;
    cpu.idtLimit = s.idtr.limit;
  }
  for (const [name, v] of Object.entries(s.regs ?? {})) {
    const i = REG_NAMES.indexOf(name as (typeof REG_NAMES)[number]);
    if (i < 0) throw new StateError("BOOT_STATE", `unknown register "${name}" in boot state`);
    cpu.regs[i] = v | 0;
  }
  cpu.setFlagsRaw(s.eflags ?? 2);
  for (let i = 0; i < 6; i++) {
    const seg = s.segments?.[SEG_NAMES[i]];
    if (seg) cpu.setSegCache(i, seg.selector, seg.base, seg.limit, (seg.access & 0xff) | ((seg.flags & 0xf) << 12));
  }
  cpu.eip = s.eip | 0;
  cpu.cpl = cpu.cr0 & C.CR0_PE ? (cpu.segAttr[C.CS] >> 5) & 3 : 0;
  cpu.updateCpl();
  cpu.updatePaging();
  if (cpu.cr0 & C.CR0_PG && cpu.cr4 & C.CR4_PAE && !cpu.mmu.loadPdptes(cpu.cr3)) {
    throw new StateError("BOOT_STATE", "boot state enables PAE paging but the PDPT at CR3 has reserved bits set");
  }
  cpu.mmu.flushAll();
}

/** The full architectural state of a vCPU as a plain value. */
export function saveCpuState(cpu: Cpu): StateValue {
  return {
    regs: Array.from(cpu.regs),
    regsHi: Array.from(cpu.regsHi),
    eip: cpu.eip,
    eflags: cpu.getFlags(),
    seg: [Array.from(cpu.segSel), Array.from(cpu.segBase), Array.from(cpu.segLimit), Array.from(cpu.segAttr)],
    ldtr: [cpu.ldtrSel, cpu.ldtrBase, cpu.ldtrLimit, cpu.ldtrAttr],
    tr: [cpu.trSel, cpu.trBase, cpu.trLimit, cpu.trAttr],
    gdtr: [cpu.gdtBase, cpu.gdtLimit],
    idtr: [cpu.idtBase, cpu.idtLimit],
    cr: [cpu.cr0, cpu.cr2, cpu.cr3, cpu.cr4],
    pdpte: Array.from(cpu.mmu.pdpte),
    dr: Array.from(cpu.dr),
    efer: cpu.efer,
    cpl: cpu.cpl,
    msr: [cpu.sysenterCs, cpu.sysenterEsp, cpu.sysenterEip, cpu.pat[0], cpu.pat[1], cpu.apicBase, cpu.tscOffset],
    mtrr: [...cpu.mtrr.entries()].map(([k, v]) => [k, v[0], v[1]]),
    halted: cpu.halted,
    shadow: cpu.shadow,
    nmi: [cpu.nmiPending, cpu.nmiBlocked],
    instructions: cpu.instructions,
  };
}

function ints(v: unknown, n: number, what: string): number[] {
  if (!Array.isArray(v) || v.length !== n || v.some((x) => typeof x !== "number" || !Number.isFinite(x))) {
    throw new StateError("CPU_STATE", `vCPU state field "${what}" must be ${n} numbers`);
  }
  return v as number[];
}

/** Restores state saved by {@link saveCpuState}, validating every field. */
export function loadCpuState(cpu: Cpu, data: StateValue): void {
  if (typeof data !== "object" || data === null || Array.isArray(data) || data instanceof Uint8Array) {
    throw new StateError("CPU_STATE", "vCPU state is not an object");
  }
  const d = data as Record<string, StateValue>;
  const regs = ints(d.regs, 16, "regs");
  const regsHi = ints(d.regsHi, 16, "regsHi");
  const seg = d.seg as StateValue[];
  if (!Array.isArray(seg) || seg.length !== 4) throw new StateError("CPU_STATE", 'vCPU state field "seg" must hold 4 arrays');
  const segs = seg.map((a, i) => ints(a, 6, `seg[${i}]`));
  const ldtr = ints(d.ldtr, 4, "ldtr");
  const tr = ints(d.tr, 4, "tr");
  const gdtr = ints(d.gdtr, 2, "gdtr");
  const idtr = ints(d.idtr, 2, "idtr");
  const cr = ints(d.cr, 4, "cr");
  const pdpte = ints(d.pdpte, 8, "pdpte");
  const dr = ints(d.dr, 8, "dr");
  const msr = ints(d.msr, 7, "msr");
  const nmi = d.nmi as StateValue[];
  const mtrr = d.mtrr as StateValue[];
  if (!Array.isArray(mtrr) || mtrr.length > 64) throw new StateError("CPU_STATE", 'vCPU state field "mtrr" is malformed');
  const mtrrs = mtrr.map((m, i) => ints(m, 3, `mtrr[${i}]`));
  const scalar = (k: string): number => {
    const v = d[k];
    if (typeof v !== "number" || !Number.isFinite(v)) throw new StateError("CPU_STATE", `vCPU state field "${k}" must be a number`);
    return v;
  };
  const eip = scalar("eip");
  const eflags = scalar("eflags");
  const efer = scalar("efer");
  const cpl = scalar("cpl");
  const shadow = scalar("shadow");
  const instructions = scalar("instructions");
  if (cpl < 0 || cpl > 3) throw new StateError("CPU_STATE", `vCPU state has CPL ${cpl}`);
  if (!Array.isArray(nmi) || nmi.length !== 2) throw new StateError("CPU_STATE", 'vCPU state field "nmi" is malformed');
  cpu.regs.set(regs);
  cpu.regsHi.set(regsHi);
  cpu.eip = eip | 0;
  cpu.setFlagsRaw(eflags);
  for (let i = 0; i < 6; i++) cpu.setSegCache(i, segs[0][i], segs[1][i], segs[2][i], segs[3][i]);
  [cpu.ldtrSel, cpu.ldtrBase, cpu.ldtrLimit, cpu.ldtrAttr] = ldtr;
  [cpu.trSel, cpu.trBase, cpu.trLimit, cpu.trAttr] = tr;
  [cpu.gdtBase, cpu.gdtLimit] = gdtr;
  [cpu.idtBase, cpu.idtLimit] = idtr;
  // Control registers are int32 while the CPU runs (docs/DESIGN.md, hot-path rules).
  [cpu.cr0, cpu.cr2, cpu.cr3, cpu.cr4] = cr.map((v) => v | 0);
  cpu.dr.set(dr);
  cpu.efer = efer;
  cpu.cpl = cpl;
  [cpu.sysenterCs, cpu.sysenterEsp, cpu.sysenterEip] = msr;
  cpu.pat[0] = msr[3];
  cpu.pat[1] = msr[4];
  cpu.apicBase = msr[5];
  cpu.tscOffset = msr[6];
  cpu.mtrr.clear();
  for (const [k, lo, hi] of mtrrs) cpu.mtrr.set(k, [lo, hi]);
  cpu.halted = d.halted === true;
  cpu.shadow = shadow;
  cpu.nmiPending = nmi[0] === true;
  cpu.nmiBlocked = nmi[1] === true;
  cpu.instructions = instructions;
  cpu.updateCpl();
  cpu.updatePaging();
  cpu.mmu.pdpte.set(pdpte);
  cpu.mmu.flushAll();
  cpu.attention = 1;
}
