// Runs a static i386 Linux ELF (nasm + ld -m elf_i386, int 0x80 only) on our
// vCPU: flat 32-bit segments at CPL 3, paging off, the ELF loaded at its
// addresses, and `int 0x80` trapped as an exit that implements write(2) and
// exit(2). The same binary runs natively, so outputs compare byte for byte.
import { PhysicalMemory } from "@typevisor/mmu-ept";
import { Cpu, loadElf32 } from "../../src/index.js";

/** Result of a user-mode run. */
export interface UserRun {
  stdout: Uint8Array;
  exitCode: number;
  /** The signal Linux would have sent for the first exception (SIGSEGV for #GP, SIGBUS for #SS/#NP, ...), if one happened. */
  signal?: string;
  instructions: number;
  cpu: Cpu;
}

// Linux's 32-bit user selectors (__USER32_CS = 0x23, __USER_DS = 0x2b), backed by a GDT so
// that segment loads behave as natively.
const FLAT_CODE3 = { selector: 0x23, base: 0, limit: 0xffffffff, access: 0xfb, flags: 0xc };
const FLAT_DATA3 = { selector: 0x2b, base: 0, limit: 0xffffffff, access: 0xf3, flags: 0xc };
const GDT = 0x3000;

/** Loads and runs `elf`; throws if it does not exit within `maxInstructions`. */
export function runUserElf(elf: Uint8Array, maxInstructions = 50_000_000): UserRun {
  const memory = new PhysicalMemory({ ramSize: 512 << 20 });
  const cpu = new Cpu(memory, {
    ports: { read: () => 0xffffffff, write: () => undefined },
    now: () => 0,
    nsPerInstruction: 0,
    legacyPic: () => undefined,
    shutdown: (reason) => {
      throw new Error(`guest ${reason} at eip 0x${(cpu.eip >>> 0).toString(16)} (exception ${cpu.excVector}, code 0x${cpu.excCode.toString(16)})`);
    },
  });
  const image = loadElf32(elf, memory);
  memory.writeU32(GDT + 4 * 8, 0x0000ffff);
  memory.writeU32(GDT + 4 * 8 + 4, 0x00cffb00);
  memory.writeU32(GDT + 5 * 8, 0x0000ffff);
  memory.writeU32(GDT + 5 * 8 + 4, 0x00cff300);
  cpu.reset();
  cpu.cr0 = 0x60000011;
  cpu.cpl = 3;
  cpu.setSegCache(1, FLAT_CODE3.selector, 0, -1, FLAT_CODE3.access | (FLAT_CODE3.flags << 12));
  for (const s of [0, 2, 3]) cpu.setSegCache(s, FLAT_DATA3.selector, 0, -1, FLAT_DATA3.access | (FLAT_DATA3.flags << 12));
  cpu.setSegCache(4, 0, 0, 0, 0x10000);
  cpu.setSegCache(5, 0, 0, 0, 0x10000);
  cpu.gdtBase = GDT;
  cpu.gdtLimit = 16 * 8 - 1;
  cpu.updateCpl();
  cpu.updatePaging();
  cpu.setFlagsRaw(0x202);
  cpu.regs[4] = 0x1ff00000;
  cpu.eip = image.entry;
  cpu.idtLimit = 0; // any exception escalates to a triple fault, which we report
  const out: number[] = [];
  let exitCode = -1;
  let signal: string | undefined;
  // Linux's signal for each exception vector (arch/x86/kernel/traps.c).
  const SIGNALS: Record<number, string> = { 0: "SIGFPE", 4: "SIGSEGV", 5: "SIGSEGV", 6: "SIGILL", 11: "SIGBUS", 12: "SIGBUS", 13: "SIGSEGV", 14: "SIGSEGV", 17: "SIGBUS" };
  cpu.exceptionExit = (vector) => {
    signal = SIGNALS[vector] ?? `vector ${vector}`;
    exitCode = 128;
    cpu.requestExit();
    return true;
  };
  // modify_ldt(2): an LDT in guest memory, filled the way Linux's fill_ldt() encodes a user_desc.
  const LDT = 0x1000;
  cpu.ldtrSel = 0x8;
  cpu.ldtrBase = LDT;
  cpu.ldtrLimit = 8191 * 8 + 7;
  cpu.ldtrAttr = 0x82;
  cpu.softIntHook = (vector) => {
    if (vector !== 0x80) return false;
    const nr = cpu.regs[0];
    if (nr === 1) {
      exitCode = cpu.regs[3];
      cpu.requestExit();
    } else if (nr === 4) {
      const buf = cpu.regs[1] >>> 0;
      const len = cpu.regs[2] >>> 0;
      for (let i = 0; i < len; i++) out.push(cpu.mmu.read8((buf + i) | 0));
      cpu.regs[0] = len;
    } else if (nr === 123 && cpu.regs[3] === 1) {
      const p = cpu.regs[1];
      const entry = cpu.mmu.read32(p);
      const base = cpu.mmu.read32(p + 4);
      const limit = cpu.mmu.read32(p + 8);
      const f = cpu.mmu.read32(p + 12);
      const contents = (f >> 1) & 3;
      if (entry >>> 0 >= 8192 || contents === 3) {
        cpu.regs[0] = -22;
        return true;
      }
      const type = (((f >> 3) & 1) ^ 1) << 1 | (contents << 2) | 1;
      const access = 0x10 | type | (3 << 5) | ((((f >> 5) & 1) ^ 1) << 7);
      const lo = (limit & 0xffff) | ((base & 0xffff) << 16);
      const hi = ((base >>> 16) & 0xff) | (access << 8) | (limit & 0xf0000) | (((f >> 6) & 1) << 20) | ((f & 1) << 22) | (((f >> 4) & 1) << 23) | (base & 0xff000000);
      memory.writeU32(LDT + entry * 8, lo >>> 0);
      memory.writeU32(LDT + entry * 8 + 4, hi >>> 0);
      cpu.regs[0] = 0;
    } else cpu.regs[0] = -38; // ENOSYS
    return true;
  };
  let total = 0;
  while (exitCode < 0) {
    total += cpu.runSlice(1_000_000);
    if (total > maxInstructions) throw new Error(`guest did not exit within ${maxInstructions} instructions (eip 0x${(cpu.eip >>> 0).toString(16)})`);
  }
  return { stdout: Uint8Array.from(out), exitCode, signal, instructions: total, cpu };
}
