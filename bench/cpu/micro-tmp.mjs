import { readFileSync } from "node:fs";
const { PhysicalMemory } = await import("@typevisor/mmu-ept");
const { Cpu } = await import("@typevisor/cpu-x86");
const file = process.argv[2];
const mem = new PhysicalMemory({ ramSize: 128 << 20 });
let marks = [];
let done = false;
const cpu = new Cpu(mem, {
  ports: { read: () => 0, write: (p, s, v) => { if (p === 0x510) { const u = process.cpuUsage(); marks[v] = { c: (u.user + u.system) / 1000, n: cpu.instructions + cpu.sliceCount }; } if (p === 0xf4) { done = true; cpu.requestExit(); } } },
  now: () => 0, nsPerInstruction: 0, legacyPic: () => undefined, shutdown: (r) => { throw new Error(r); },
});
const bytes = readFileSync(file);
mem.write(0x100000, bytes);
cpu.cr0 = 0x11; cpu.updatePaging();
cpu.setSegCache(1, 8, 0, -1, 0x9b | 0xc000);
for (const s of [0, 2, 3]) cpu.setSegCache(s, 0x10, 0, -1, 0x93 | 0xc000);
cpu.eip = 0x100020;
while (!done) cpu.runSlice(1_000_000);
const m = (a, b) => ((marks[b].n - marks[a].n) / (marks[b].c - marks[a].c) / 1000).toFixed(1);
console.log("phase1 MIPS(cpu)", m(1, 2), "phase2", marks[4].n - marks[3].n > 1000 ? m(3, 4) : "-");
