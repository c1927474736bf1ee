// The CPU inside a machine: INTR from the legacy PIC (IF, the STI shadow,
// waking from HLT), NMI, triple fault as shutdown or reset, snapshots that
// resume identically, CPUID/MSR exits a plugin claims, RDTSC in
// deterministic time. Guests are small nasm programs run in flat 32-bit
// protected mode.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import { createMachine, LEGACY_PIC, X86_CPU_CONTROL, type Machine, type Plugin } from "@typevisor/hv-core";
import { PHYSICAL_MEMORY } from "@typevisor/mmu-ept";
import { describeWithTools, tempDir } from "@typevisor/test-support";
import { X86_CPUS, x86Cpu } from "../src/index.js";

const PRELUDE = `
bits 32
org 0x100000
  jmp start
; IDT at 0x1000: 256 interrupt gates to 'unexpected' unless set below
%macro GATE 2
  mov eax, %2
  mov [0x1000 + %1*8], ax
  mov word [0x1000 + %1*8 + 2], 0x08
  mov word [0x1000 + %1*8 + 4], 0x8e00
  shr eax, 16
  mov [0x1000 + %1*8 + 6], ax
%endmacro
%macro OUT 2
  mov dx, %1
  mov eax, %2
  out dx, eax
%endmacro
gdt: dq 0, 0x00cf9a000000ffff, 0x00cf92000000ffff
gdtd: dw 23
  dd gdt
idtd: dw 256*8-1
  dd 0x1000
start:
  lgdt [gdtd]
  lidt [idtd]
  mov esp, 0x90000
`;

function assemble(dir: string, body: string): Uint8Array {
  const src = join(dir, "g.asm");
  const bin = join(dir, "g.bin");
  execFileSync("sh", ["-c", `cat > ${src}`], { input: PRELUDE + body });
  execFileSync("nasm", ["-f", "bin", src, "-o", bin]);
  return readFileSync(bin);
}

interface TestPic {
  pending: number[];
  acks: number;
}

async function machine(code: Uint8Array, opts: { pic?: TestPic; onTripleFault?: "shutdown" | "reset" } = {}): Promise<{ vm: Machine; out: number[] }> {
  const plugins: Plugin[] = [x86Cpu({ onTripleFault: opts.onTripleFault })];
  if (opts.pic) {
    const pic = opts.pic;
    plugins.push({
      name: "test-pic",
      version: "1.0.0",
      setup(m) {
        m.services.provide(LEGACY_PIC, {
          hasInterrupt: () => pic.pending.length > 0,
          acknowledge: () => {
            pic.acks++;
            return pic.pending.shift()!;
          },
        });
      },
    });
  }
  const vm = await createMachine({ memory: "8M", clock: { mode: "deterministic" }, plugins });
  const out: number[] = [];
  vm.ports.register("report", 0x500, 4, { read: () => 0, write: (_o, _s, v) => void out.push(v) });
  vm.ports.register("exit", 0xf4, 4, { read: () => 0, write: (_o, _s, v) => vm.requestStop({ reason: "exit", exitCode: v }) });
  vm.services.get(PHYSICAL_MEMORY).write(0x100000, code);
  const flat = (selector: number, access: number) => ({ selector, base: 0, limit: 0xffffffff, access, flags: 0xc });
  vm.services.get(X86_CPU_CONTROL).applyBootState(0, {
    eip: 0x100000,
    cr0: 0x11,
    segments: { cs: flat(0x08, 0x9b), ds: flat(0x10, 0x93), es: flat(0x10, 0x93), ss: flat(0x10, 0x93) },
  });
  return { vm, out };
}

describeWithTools(["nasm"], "the CPU in a machine", () => {
  it("takes INTR only with IF=1, after the STI shadow, and wakes from HLT", async () => {
    const dir = tempDir();
    try {
      const code = assemble(
        dir.path,
        `
  GATE 0x30, handler
  OUT 0x500, 1
  hlt_cli: nop            ; IF=0: the pending interrupt must wait
  OUT 0x500, 2
  sti
after_sti:
  hlt                     ; the shadow lets HLT execute; the interrupt then wakes it
after_hlt:
  OUT 0x500, 3
  OUT 0xf4, 0
handler:
  mov eax, [esp]          ; return address
  OUT 0x500, eax
  iret
`,
      );
      const pic = { pending: [0x30], acks: 0 };
      const { vm, out } = await machine(code, { pic });
      const stop = await vm.run();
      expect(stop).toMatchObject({ reason: "exit", exitCode: 0 });
      const afterHlt = out[2];
      expect(out[0]).toBe(1);
      expect(out[1]).toBe(2);
      // Delivered after HLT (return address is the instruction after it), before "3".
      expect(code[afterHlt - 0x100000 - 1]).toBe(0xf4);
      expect(out[3]).toBe(3);
      expect(pic.acks).toBe(1);
    } finally {
      dir.remove();
    }
  });

  it("wakes a halted vCPU when a timer raises an interrupt later", async () => {
    const dir = tempDir();
    try {
      const code = assemble(
        dir.path,
        `
  GATE 0x31, handler
  sti
.loop:
  hlt
  cmp dword [count], 3
  jb .loop
  OUT 0xf4, 7
handler:
  inc dword [count]
  iret
count: dd 0
`,
      );
      const pic = { pending: [] as number[], acks: 0 };
      const { vm } = await machine(code, { pic });
      let fired = 0;
      const timer = vm.clock.createTimer(() => {
        pic.pending.push(0x31);
        vm.kick();
        if (++fired < 3) timer.armAfter(1_000_000);
      });
      timer.armAfter(1_000_000);
      const stop = await vm.run();
      expect(stop).toMatchObject({ reason: "exit", exitCode: 7 });
      expect(fired).toBe(3);
      // Deterministic time jumped to the timers while the vCPU was halted.
      expect(vm.clock.now()).toBeGreaterThanOrEqual(3_000_000);
    } finally {
      dir.remove();
    }
  });

  it("delivers NMI with IF=0 and blocks further NMIs until IRET", async () => {
    const dir = tempDir();
    try {
      const code = assemble(
        dir.path,
        `
  GATE 2, nmi
  OUT 0x600, 0            ; the device raises an NMI
  mov ecx, 100000
.spin:
  cmp dword [seen], 2
  je .done
  loop .spin
.done:
  mov eax, [seen]
  OUT 0xf4, eax
nmi:
  inc dword [seen]
  OUT 0x500, 0x22
  OUT 0x600, 0            ; a second NMI now must wait for the IRET
  mov ecx, 200
.w: loop .w
  OUT 0x500, 0x23
  iret
seen: dd 0
`,
      );
      const { vm, out } = await machine(code);
      const cpu = vm.services.get(X86_CPUS)[0];
      let raised = 0;
      vm.ports.register("nmi", 0x600, 4, { read: () => 0, write: () => void (raised++ < 2 && cpu.raiseNmi()) });
      const stop = await vm.run();
      expect(stop).toMatchObject({ reason: "exit", exitCode: 2 });
      expect(out).toEqual([0x22, 0x23, 0x22, 0x23]);
    } finally {
      dir.remove();
    }
  });

  it("turns a triple fault into a shutdown stop, or a reset when asked", async () => {
    const dir = tempDir();
    try {
      const code = assemble(dir.path, `\n  lidt [nullidt]\n  int3\nnullidt: dw 0\n  dd 0\n`);
      const a = await machine(code);
      expect(await a.vm.run()).toMatchObject({ reason: "shutdown" });
      const b = await machine(code, { onTripleFault: "reset" });
      const cpu = b.vm.services.get(X86_CPUS)[0];
      const resets: number[][] = [];
      b.vm.events.on("reset", (r) => {
        // After the reset the vCPU is at the reset vector in real mode.
        resets.push([r.count, cpu.eip, cpu.segSel[1], cpu.cr0]);
        void b.vm.stop();
      });
      await b.vm.run();
      expect(resets).toEqual([[1, 0xfff0, 0xf000, 0x60000010]]);
    } finally {
      dir.remove();
    }
  });

  it("resumes identically from a snapshot of CPU and memory", async () => {
    const dir = tempDir();
    try {
      const code = assemble(
        dir.path,
        `
  mov esi, 0
  mov ecx, 5000
.l:
  imul esi, esi, 31
  add esi, ecx
  mov [0x200000 + ecx*4], esi
  loop .l
  OUT 0x500, esi
  rdtsc
  OUT 0x500, eax
  OUT 0xf4, 0
`,
      );
      const a = await machine(code);
      const cpuA = a.vm.services.get(X86_CPUS)[0];
      cpuA.runSlice(7777); // part way through the loop
      const saved = a.vm.saveState();
      const endA = await a.vm.run();
      const b = await machine(new Uint8Array(code.length));
      b.vm.loadState(saved);
      const endB = await b.vm.run();
      expect(endB).toEqual(endA);
      expect(b.out[0]).toBe(a.out[0]);
      expect(b.vm.services.get(PHYSICAL_MEMORY).readU32(0x200000 + 4)).toBe(a.vm.services.get(PHYSICAL_MEMORY).readU32(0x200000 + 4));
      const c = await machine(code);
      expect(() => c.vm.loadState(saved.map((s) => (s.id === "cpu0" ? { ...s, data: { ...(s.data as object), cpl: 9 } } : s)))).toThrow(/CPL/);
    } finally {
      dir.remove();
    }
  });

  it("reports the TSC rate (CPUID 15H/16H, invariant TSC) and keeps IA32_TSC_ADJUST in step with TSC writes", async () => {
    const dir = tempDir();
    try {
      const code = assemble(
        dir.path,
        `
  xor eax, eax
  cpuid
  OUT 0x500, eax          ; highest basic leaf
  mov eax, 0x15
  cpuid
  mov esi, ecx
  OUT 0x500, eax          ; ratio denominator
  OUT 0x500, ebx          ; ratio numerator
  OUT 0x500, esi          ; crystal Hz
  mov eax, 7
  xor ecx, ecx
  cpuid
  OUT 0x500, ebx          ; TSC_ADJUST present
  mov eax, 0x80000007
  cpuid
  mov esi, edx
  OUT 0x500, esi          ; invariant TSC
  mov ecx, 0x3b
  rdmsr
  OUT 0x500, eax          ; TSC_ADJUST starts at 0
  ; Write the TSC 1000 ahead of where it is: TSC_ADJUST becomes about 1000.
  rdtsc
  add eax, 1000
  adc edx, 0
  mov ecx, 0x10
  wrmsr
  mov ecx, 0x3b
  rdmsr
  mov esi, eax
  OUT 0x500, esi
  ; Set TSC_ADJUST to -5: the TSC moves back by the difference.
  mov ecx, 0x3b
  mov eax, -5
  mov edx, -1
  wrmsr
  rdmsr
  mov esi, eax
  mov edi, edx
  OUT 0x500, esi
  OUT 0x500, edi
  OUT 0xf4, 0
`,
      );
      const { vm, out } = await machine(code);
      expect(await vm.run()).toMatchObject({ exitCode: 0 });
      expect(out.slice(0, 7)).toEqual([0x16, 1, 1, 1_000_000_000, 2, 1 << 8, 0]);
      // Between RDTSC and WRMSR a few instructions pass (1 ns each in deterministic time).
      expect(out[7]).toBeGreaterThan(990);
      expect(out[7]).toBeLessThanOrEqual(1000);
      expect([out[8] | 0, out[9] | 0]).toEqual([-5, -1]);
    } finally {
      dir.remove();
    }
  });

  it("reports only implemented features in CPUID and lets plugins claim unknown leaves and MSRs", async () => {
    const dir = tempDir();
    try {
      const code = assemble(
        dir.path,
        `
  xor eax, eax
  cpuid
  OUT 0x500, ebx
  mov eax, 1
  cpuid
  mov esi, edx            ; (OUT clobbers DX)
  OUT 0x500, esi
  mov eax, 0x40000000
  cpuid
  OUT 0x500, ebx
  mov ecx, 0x1234
  rdmsr
  OUT 0x500, eax
  GATE 13, gp
  mov ecx, 0x9999
  rdmsr                   ; nobody implements it: #GP(0)
  OUT 0xf4, 1
gp:
  OUT 0x500, 0x6060
  OUT 0xf4, 0
`,
      );
      const { vm, out } = await machine(code);
      const cpu = vm.services.get(X86_CPUS)[0];
      cpu.cpuidHandlers.push((leaf, _sub, r) => {
        if (leaf !== 0x40000000) return false;
        r[1] = 0x7476; // "tv"
        return true;
      });
      cpu.msrReadHandlers.push((index, r) => {
        if (index !== 0x1234) return false;
        r[0] = 42;
        return true;
      });
      expect(await vm.run()).toMatchObject({ exitCode: 0 });
      expect(Buffer.from(new Uint32Array([out[0]]).buffer).toString()).toBe("Genu");
      expect(out[1] & 1).toBe(1); // FPU: the x87 unit x86Cpu() plugs in by default
      expect(out[1] & (1 << 23)).toBe(1 << 23); // MMX, from the SIMD unit
      expect(out[1] & (1 << 27)).toBe(0); // no SS, HTT, TM... beyond what exists
      expect(out[1] & (1 << 8)).toBe(1 << 8); // CX8
      expect(out[2]).toBe(0x7476);
      expect(out[3]).toBe(42);
      expect(out[4]).toBe(0x6060);
    } finally {
      dir.remove();
    }
  });
});
