// REP MOVS and REP STOS over long runs, going up (DF=0) and down (DF=1):
// page crossings, overlapping source and destination (element by element a
// MOVS whose destination starts just ahead of its source in the direction it
// goes repeats a pattern, which a block copy would not), misaligned
// destinations, and every element size. The CPU moves
// whole page runs at once when it can (Cpu.repBulk); a plain model of the
// SDM's element-by-element definition is the oracle.
import { expect, it } from "vitest";
import { PhysicalMemory } from "@typevisor/mmu-ept";
import { describeWithTools } from "@typevisor/test-support";
import { flatCpu } from "./harness/flat-cpu.js";
import { nasmBinary } from "./harness/nasm.js";

interface Op {
  kind: "movs" | "stos";
  size: 1 | 2 | 4;
  src: number;
  dst: number;
  count: number;
  value: number;
  /** DF=1: the addresses go down. */
  down?: boolean;
}

const AREA = 0x10000;
const AREA_SIZE = 0x8000;

const OPS: Op[] = [
  { kind: "movs", size: 1, src: 0x10100, dst: 0x10101, count: 300, value: 0 },
  { kind: "movs", size: 4, src: 0x10800, dst: 0x10803, count: 200, value: 0 },
  { kind: "movs", size: 2, src: 0x11002, dst: 0x11001, count: 700, value: 0 },
  { kind: "movs", size: 1, src: 0x11ff0, dst: 0x12ff8, count: 300, value: 0 },
  { kind: "movs", size: 4, src: 0x13000, dst: 0x15004, count: 2500, value: 0 },
  { kind: "movs", size: 4, src: 0x10040, dst: 0x10000, count: 64, value: 0 },
  { kind: "stos", size: 4, src: 0, dst: 0x14001, count: 1500, value: 0x11223344 },
  { kind: "stos", size: 2, src: 0, dst: 0x16ffa, count: 900, value: 0x5566 },
  { kind: "stos", size: 1, src: 0, dst: 0x17f00, count: 1, value: 0x77 },
  { kind: "stos", size: 4, src: 0, dst: 0x10ff8, count: 1030, value: -2 },
  // Linux's boot code moves its compressed image up over itself this way (std; rep movsd).
  { kind: "movs", size: 4, src: 0x14ffc, dst: 0x15ffc, count: 1500, value: 0, down: true },
  { kind: "movs", size: 1, src: 0x13600, dst: 0x135ff, count: 300, value: 0, down: true },
  { kind: "movs", size: 2, src: 0x11001, dst: 0x11803, count: 700, value: 0, down: true },
  { kind: "movs", size: 4, src: 0x12002, dst: 0x11ffe, count: 100, value: 0, down: true },
  { kind: "movs", size: 4, src: 0x10f00, dst: 0x10f40, count: 64, value: 0, down: true },
  { kind: "stos", size: 4, src: 0, dst: 0x17ffc, count: 1030, value: 0x0badf00d, down: true },
  { kind: "stos", size: 2, src: 0, dst: 0x16003, count: 600, value: 0x1234, down: true },
  { kind: "stos", size: 1, src: 0, dst: 0x13010, count: 40, value: 0x99, down: true },
];

function program(ops: Op[]): string {
  const lines = ["bits 32", "org 0x1000"];
  for (const op of ops) {
    lines.push(op.down ? "  std" : "  cld", `  mov esi, ${op.src}`, `  mov edi, ${op.dst}`, `  mov ecx, ${op.count}`, `  mov eax, ${op.value}`);
    lines.push(`  rep ${op.kind}${op.size === 1 ? "b" : op.size === 2 ? "w" : "d"}`);
    // Leave the registers where the op left them for the next check.
    lines.push(`  mov [0x9000 + ${ops.indexOf(op) * 12}], esi`, `  mov [0x9004 + ${ops.indexOf(op) * 12}], edi`, `  mov [0x9008 + ${ops.indexOf(op) * 12}], ecx`);
  }
  lines.push("  hlt");
  return lines.join("\n");
}

/** The SDM's definition, one element at a time. */
function model(mem: Uint8Array, op: Op): { esi: number; edi: number } {
  let si = op.src;
  let di = op.dst;
  const step = op.down ? -op.size : op.size;
  for (let i = 0; i < op.count; i++) {
    // The whole element is read before it is written.
    const element = op.kind === "movs" ? mem.slice(si - AREA, si - AREA + op.size) : Uint8Array.from({ length: op.size }, (_, b) => (op.value >>> (8 * b)) & 0xff);
    mem.set(element, di - AREA);
    if (op.kind === "movs") si += step;
    di += step;
  }
  return { esi: op.kind === "movs" ? si : op.src, edi: di };
}

function initial(): Uint8Array {
  const a = new Uint8Array(AREA_SIZE);
  for (let i = 0; i < a.length; i++) a[i] = (i * 7 + (i >> 8)) & 0xff;
  return a;
}

describeWithTools(["nasm"], "REP MOVS and REP STOS", () => {
  it("leave memory and registers as element-by-element execution does", () => {
    const image = nasmBinary(program(OPS));
    const memory = new PhysicalMemory({ ramSize: 1 << 20 });
    memory.write(0x1000, image);
    memory.write(AREA, initial());
    const cpu = flatCpu(memory, 0x1000, 0x7000);
    for (let guard = 0; !cpu.halted && guard < 10_000; guard++) cpu.runSlice(1000);
    expect(cpu.halted).toBe(true);

    const want = initial();
    const got = new Uint8Array(AREA_SIZE);
    memory.read(AREA, got);
    OPS.forEach((op, i) => {
      const r = model(want, op);
      expect([memory.readU32(0x9000 + i * 12), memory.readU32(0x9004 + i * 12), memory.readU32(0x9008 + i * 12)], `op ${i} registers`).toEqual([r.esi, r.edi, 0]);
    });
    const firstDiff = got.findIndex((v, i) => v !== want[i]);
    expect(firstDiff, firstDiff >= 0 ? `first difference at ${(AREA + firstDiff).toString(16)}` : "").toBe(-1);
  });
});
