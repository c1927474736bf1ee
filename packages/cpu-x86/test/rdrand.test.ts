// RDRAND and RDSEED (Intel SDM Vol. 2B): register forms only, 16- and
// 32-bit operands, CF=1 with OF/SF/ZF/AF/PF cleared, the CPUID bits, and
// #UD for the encodings that are not theirs. A scripted generator makes the
// values checkable.
import { describe, expect, it } from "vitest";
import { PhysicalMemory } from "@typevisor/mmu-ept";
import { CPU_EXCEPTION, CPUID_1_RDRAND, CPUID_7_RDSEED, RandomNumberUnit, x86, type Cpu } from "../src/index.js";
import { flatCpu } from "./harness/flat-cpu.js";

const CODE = 0x1000;

/** A CPU with the unit, drawing 1, 2, 3, ... */
function cpuWith(bytes: number[]): { cpu: Cpu; draws: () => number } {
  const memory = new PhysicalMemory({ ramSize: 1 << 20 });
  memory.write(CODE, Uint8Array.from(bytes));
  const cpu = flatCpu(memory, CODE, 0x8000);
  let counter = 0;
  let fills = 0;
  cpu.addExtension(
    new RandomNumberUnit((out) => {
      fills++;
      for (let i = 0; i < out.length; i++) out[i] = (0x9e3779b9 * ++counter) >>> 0;
    }),
  );
  return { cpu, draws: () => fills };
}

/** Runs one instruction; the exception vector it raised, or -1. */
function stepVector(cpu: Cpu): number {
  try {
    cpu.step();
    return -1;
  } catch (e) {
    if (e !== CPU_EXCEPTION) throw e;
    return cpu.excVector;
  }
}

const ALL_ARITH = x86.CF | x86.PF | x86.AF | x86.ZF | x86.SF | x86.OF;

describe("RDRAND and RDSEED", () => {
  it("load a 32-bit draw, set CF and clear the other arithmetic flags", () => {
    // rdrand eax; rdseed ecx; rdrand edi
    const { cpu } = cpuWith([0x0f, 0xc7, 0xf0, 0x0f, 0xc7, 0xf9, 0x0f, 0xc7, 0xf7]);
    cpu.setArith(ALL_ARITH & ~x86.CF, ALL_ARITH);
    cpu.step();
    expect(cpu.getFlags() & ALL_ARITH).toBe(x86.CF);
    cpu.step();
    cpu.step();
    expect([cpu.regs[0] >>> 0, cpu.regs[1] >>> 0, cpu.regs[7] >>> 0]).toEqual([0x9e3779b9, (0x9e3779b9 * 2) >>> 0, (0x9e3779b9 * 3) >>> 0]);
    expect(cpu.eip).toBe(CODE + 9);
  });

  it("with an operand-size prefix write only the low word", () => {
    // rdrand bx (66 0F C7 F3)
    const { cpu } = cpuWith([0x66, 0x0f, 0xc7, 0xf3]);
    cpu.regs[3] = 0x12345678;
    cpu.step();
    expect(cpu.regs[3] >>> 0).toBe((0x12340000 | (0x9e3779b9 & 0xffff)) >>> 0);
  });

  it("draw a new pool from the source only when the last one is used up", () => {
    const bytes: number[] = [];
    for (let i = 0; i < 300; i++) bytes.push(0x0f, 0xc7, 0xf0);
    const { cpu, draws } = cpuWith(bytes);
    const seen = new Set<number>();
    for (let i = 0; i < 300; i++) {
      cpu.step();
      seen.add(cpu.regs[0]);
    }
    expect(seen.size).toBe(300);
    expect(draws()).toBe(2);
  });

  it("raise #UD for memory operands, RDPID's F3 encoding and LOCK", () => {
    for (const bytes of [
      [0x0f, 0xc7, 0x30], // rdrand with a memory operand ([eax])
      [0xf3, 0x0f, 0xc7, 0xf8], // F3 0F C7 /7: RDPID, not RDSEED
      [0xf0, 0x0f, 0xc7, 0xf0], // LOCK RDRAND
    ]) {
      const { cpu } = cpuWith(bytes);
      expect(stepVector(cpu), bytes.map((b) => b.toString(16)).join(" ")).toBe(x86.EXC_UD);
    }
  });

  it("are reported by CPUID only when the unit is there", () => {
    // cpuid with EAX=1, then EAX=7/ECX=0
    const leaf = (cpu: Cpu, eax: number): [number, number] => {
      cpu.eip = CODE;
      cpu.regs[0] = eax;
      cpu.regs[1] = 0;
      cpu.step();
      return [cpu.regs[1], cpu.regs[3]];
    };
    const { cpu } = cpuWith([0x0f, 0xa2]);
    expect(leaf(cpu, 1)[0] & CPUID_1_RDRAND).toBe(CPUID_1_RDRAND);
    expect(leaf(cpu, 7)[1] & CPUID_7_RDSEED).toBe(CPUID_7_RDSEED);

    const memory = new PhysicalMemory({ ramSize: 1 << 20 });
    memory.write(CODE, Uint8Array.from([0x0f, 0xa2, 0x0f, 0xc7, 0xf0]));
    const bare = flatCpu(memory, CODE, 0x8000);
    expect(leaf(bare, 1)[0] & CPUID_1_RDRAND).toBe(0);
    expect(leaf(bare, 7)[1] & CPUID_7_RDSEED).toBe(0);
    bare.eip = CODE + 2;
    expect(stepVector(bare)).toBe(x86.EXC_UD);
  });
});
