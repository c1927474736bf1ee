// A vCPU with no machine around it, already in flat 32-bit protected mode:
// CS, DS, ES and SS cover 4 GiB, paging is off, and the host has no devices.
// For tests that run a small program straight from guest memory.
import type { PhysicalMemory } from "@typevisor/mmu-ept";
import { Cpu, x86, type CpuOptions } from "../../src/index.js";

/** A CPU on `memory` about to run the code at `eip` with the stack at `esp`. */
export function flatCpu(memory: PhysicalMemory, eip: number, esp: number, options?: CpuOptions): Cpu {
  const cpu = new Cpu(memory, { ports: { read: () => 0, write: () => undefined }, now: () => 0, nsPerInstruction: 0, legacyPic: () => undefined, shutdown: () => undefined }, options);
  cpu.cr0 = 0x11;
  cpu.setSegCache(x86.CS, 8, 0, -1, 0x9b | 0xc000);
  for (const s of [x86.DS, x86.ES, x86.SS]) cpu.setSegCache(s, 0x10, 0, -1, 0x93 | 0xc000);
  cpu.eip = eip;
  cpu.regs[4] = esp;
  return cpu;
}
