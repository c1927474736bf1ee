// The FPU units inside a machine: Linux's FPU detection sequence, CPUID
// reporting exactly the units plugged in, CR4.OSFXSR writable only with the
// SIMD unit, the FERR# path of CR0.NE=0, the real-mode FSTENV/FSAVE layouts
// (Intel SDM Vol. 1 figures 8-10 and 8-12; the protected-mode layouts are
// compared with the real CPU in the differential test), and snapshots.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import { createMachine, StateError, X86_CPU_CONTROL, type Machine } from "@typevisor/hv-core";
import { PHYSICAL_MEMORY, PhysicalMemory } from "@typevisor/mmu-ept";
import { describeWithTools, tempDir } from "@typevisor/test-support";
import { Cpu, Simd, X86_CPUS, X87, x86Cpu, type X86CpuOptions } from "../src/index.js";

function assemble(dir: string, src: string): Uint8Array {
  const asm = join(dir, "g.asm");
  const bin = join(dir, "g.bin");
  execFileSync("sh", ["-c", `cat > ${asm}`], { input: src });
  execFileSync("nasm", ["-f", "bin", asm, "-o", bin]);
  return readFileSync(bin);
}

/** A flat 32-bit ring-0 guest at 1 MiB reporting through port 0x500 and exiting through 0xf4. */
async function machine(code: Uint8Array, opts: X86CpuOptions = {}): Promise<{ vm: Machine; out: number[] }> {
  const vm = await createMachine({ memory: "8M", clock: { mode: "deterministic" }, plugins: [x86Cpu(opts)] });
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

// arch/x86/kernel/fpu/init.c, fpu__init_system_early_generic(): clear CR0.TS/EM,
// then FNINIT; FNSTSW; FNSTCW into words preset to 0xffff, and check.
const LINUX_DETECT = `
bits 32
org 0x100000
  mov eax, cr0
  and eax, ~(8 | 4)
  mov cr0, eax
  mov word [fsw], 0xffff
  mov word [fcw], 0xffff
  fninit
  fnstsw [fsw]
  fnstcw [fcw]
  movzx eax, word [fsw]
  mov dx, 0x500
  out dx, eax
  movzx eax, word [fcw]
  out dx, eax
  xor eax, eax
  cmp word [fsw], 0
  jne .no
  movzx ecx, word [fcw]
  and ecx, 0x103f
  cmp ecx, 0x3f
  jne .no
  mov eax, 1                ; X86_FEATURE_FPU
.no:
  out dx, eax
  mov eax, 1
  cpuid
  mov eax, edx
  mov dx, 0x500
  out dx, eax
  mov eax, cr4
  or eax, 0x600             ; OSFXSR | OSXMMEXCPT, as Linux sets them when CPUID has FXSR/SSE
  mov cr4, eax
  mov eax, cr4
  out dx, eax
  mov dx, 0xf4
  out dx, eax
fsw: dw 0
fcw: dw 0
`;

describeWithTools(["nasm"], "the FPU units in a machine", () => {
  it("passes Linux's FPU detection (fninit; fnstsw; fnstcw) and CPUID reports FPU, MMX, FXSR, SSE, SSE2", async () => {
    const dir = tempDir();
    try {
      const { vm, out } = await machine(assemble(dir.path, LINUX_DETECT));
      const stop = await vm.run();
      expect(stop.reason).toBe("exit");
      expect(out.slice(0, 3)).toEqual([0, 0x37f, 1]);
      const edx = out[3];
      expect(edx & 1).toBe(1);
      expect((edx >>> 23) & 0xf).toBe(0xf); // MMX, FXSR, SSE, SSE2
      expect(out[4] & 0x600).toBe(0x600);
    } finally {
      dir.remove();
    }
  });

  it("reports only the x87 with fpu: 'x87', and then refuses CR4.OSFXSR", async () => {
    const dir = tempDir();
    try {
      const { vm, out } = await machine(assemble(dir.path, LINUX_DETECT), { fpu: "x87" });
      const cpu = vm.services.get(X86_CPUS)[0];
      const faults: number[] = [];
      cpu.exceptionExit = (vector) => {
        faults.push(vector);
        vm.requestStop({ reason: "exit", exitCode: vector });
        return true;
      };
      await vm.run();
      expect(out.slice(0, 3)).toEqual([0, 0x37f, 1]);
      expect(out[3] & 1).toBe(1);
      expect((out[3] >>> 23) & 0xf).toBe(0);
      expect(faults).toEqual([13]); // MOV CR4 with OSFXSR: #GP
    } finally {
      dir.remove();
    }
  });

  it("without an FPU, CPUID reports none and escapes fault", async () => {
    const dir = tempDir();
    try {
      const code = assemble(dir.path, `bits 32\norg 0x100000\n  mov eax, 1\n  cpuid\n  mov eax, edx\n  mov dx, 0x500\n  out dx, eax\n  fninit\n  mov dx, 0xf4\n  out dx, eax\n`);
      const { vm, out } = await machine(code, { fpu: "none" });
      const cpu = vm.services.get(X86_CPUS)[0];
      expect(cpu.extensions.map((e) => e.name).filter((n) => n !== "local-apic")).toEqual([]);
      const faults: number[] = [];
      cpu.exceptionExit = (vector) => {
        faults.push(vector);
        vm.requestStop({ reason: "exit", exitCode: vector });
        return true;
      };
      await vm.run();
      expect(faults).toEqual([6]); // FNINIT without a coprocessor
      expect(out[0] & ((1 << 0) | (0xf << 23))).toBe(0);
    } finally {
      dir.remove();
    }
  });

  it("with CR0.NE=0 an unmasked exception asserts FERR# at the next waiting instruction and execution goes on", async () => {
    const dir = tempDir();
    try {
      const code = assemble(
        dir.path,
        `bits 32
org 0x100000
  mov eax, cr0
  and eax, ~0x20
  mov cr0, eax
  fninit
  fldcw [cw]
  fld1
  fldz
  fdivp st1, st0
  mov eax, 1
  mov dx, 0x500
  out dx, eax
  fwait
  mov eax, 2
  out dx, eax
  fnstsw ax
  out dx, eax
  mov dx, 0xf4
  out dx, eax
cw: dw 0x37b
`,
      );
      const { vm, out } = await machine(code);
      const x87 = vm.services.get(X86_CPUS)[0].extensions.find((e) => e instanceof X87) as X87;
      const ferr: boolean[] = [];
      x87.ferr = (level) => ferr.push(level);
      await vm.run();
      expect(out[0]).toBe(1);
      expect(ferr).toEqual([true]); // asserted at FWAIT, not at FDIVP
      expect(out[1]).toBe(2);
      expect(out[2] & 0x8084).toBe(0x8084); // B, ES, ZE still set
    } finally {
      dir.remove();
    }
  });

  it("snapshots the x87 and SIMD state and restores it exactly; rejects malformed state", async () => {
    const dir = tempDir();
    try {
      const code = assemble(dir.path, `bits 32\norg 0x100000\n  mov eax, cr4\n  or eax, 0x600\n  mov cr4, eax\n  fninit\n  fldpi\n  fld1\n  movaps xmm3, [v]\n  ldmxcsr [m]\n  mov dx, 0xf4\n  out dx, eax\nalign 16\nv: dd 1, 2, 3, 4\nm: dd 0x3f80\n`);
      const { vm } = await machine(code);
      const units = vm.services.get(X86_CPUS)[0].extensions;
      await vm.run();
      const x87 = units.find((e) => e instanceof X87) as X87;
      const simd = units.find((e) => e instanceof Simd) as Simd;
      const a = x87.state.saveState();
      const b = simd.state.saveState();
      x87.init();
      simd.reset();
      x87.state.loadState(a);
      simd.state.loadState(b);
      expect(x87.top).toBe(6);
      expect(x87.se[7]).toBe(0x4000); // pi
      expect(x87.hi[7] >>> 0).toBe(0xc90fdaa2);
      expect(Array.from(simd.xmm.subarray(12, 16))).toEqual([1, 2, 3, 4]);
      expect(simd.mxcsr).toBe(0x3f80);
      expect(JSON.stringify(x87.state.saveState())).toBe(JSON.stringify(a));
      expect(() => x87.state.loadState({ ...(a as object), regs: [[1], [2], [3]] })).toThrow(StateError);
      expect(() => simd.state.loadState({ mxcsr: 0x10000, xmm: Array(32).fill(0) })).toThrow(StateError);
      expect(() => simd.state.loadState("x")).toThrow(StateError);
    } finally {
      dir.remove();
    }
  });
});

/** Runs 16-bit real-mode `code` at 0000:7c00 on a bare vCPU with the FPU until HLT. */
function realMode(code: Uint8Array): { cpu: Cpu; mem: PhysicalMemory } {
  const mem = new PhysicalMemory({ ramSize: 1 << 20 });
  const cpu = new Cpu(mem, { ports: { read: () => 0, write: () => undefined }, now: () => 0, nsPerInstruction: 0, legacyPic: () => undefined, shutdown: () => undefined });
  const x87 = new X87();
  cpu.addExtension(x87);
  cpu.addExtension(new Simd(x87));
  cpu.reset();
  mem.write(0x17c00, code);
  cpu.setSegCache(1, 0x1000, 0x10000, 0xffff, 0x9b);
  for (const s of [0, 2, 3]) cpu.setSegCache(s, 0x1000, 0x10000, 0xffff, 0x93);
  cpu.eip = 0x7c00;
  for (let i = 0; i < 100 && !cpu.halted; i++) cpu.runSlice(1000);
  return { cpu, mem };
}

describeWithTools(["nasm"], "real-mode FPU environment layouts", () => {
  it("FNSTENV/FNSAVE store the 14- and 28-byte real-mode formats (linear FIP/FDP split around FOP); FRSTOR reads them back", () => {
    const dir = tempDir();
    try {
      const code = assemble(
        dir.path,
        `bits 16
org 0x7c00
  fninit
  fld dword [0x7d00]     ; FIP = 1000:7c02 (linear 0x17c02), FDP = 1000:7d00 (0x17d00), FOP = 0x106
  fnstenv [0x7e00]
  o32 fnstenv [0x7e20]
  fnsave [0x7e40]
  o32 frstor [0x7f00]    ; a 32-bit real-mode image with other pointers
  o32 fnstenv [0x7f80]
  hlt
times 0x100 - ($ - $$) db 0
  dd 1.0                 ; 0x7d00
times 0x300 - ($ - $$) db 0
  dd 0xffff037f, 0xffff3800, 0xffff3fff, 0xffff5678, 0x0abcd123, 0xffff9abc, 0x0fedc000   ; 0x7f00
  times 80 db 0
`,
      );
      const { mem } = realMode(code);
      const view = (off: number, n: number): DataView => {
        const b = new Uint8Array(n);
        mem.read(0x10000 + off, b);
        return new DataView(b.buffer);
      };
      const fip = 0x17c02;
      const fdp = 0x17d00;
      const e16 = view(0x7e00, 14);
      expect(e16.getUint16(0, true)).toBe(0x37f);
      expect(e16.getUint16(2, true)).toBe(0x3800); // TOP = 7
      expect(e16.getUint16(4, true)).toBe(0x3fff); // ST0 (physical 7) valid, the rest empty
      expect(e16.getUint16(6, true)).toBe(fip & 0xffff);
      expect(e16.getUint16(8, true)).toBe(((fip >>> 16) << 12) | 0x106);
      expect(e16.getUint16(10, true)).toBe(fdp & 0xffff);
      expect(e16.getUint16(12, true)).toBe((fdp >>> 16) << 12);
      const e32 = view(0x7e20, 28);
      expect(e32.getUint32(12, true) & 0xffff).toBe(fip & 0xffff);
      expect(e32.getUint32(16, true)).toBe(((fip >>> 16) << 12) | 0x106);
      expect(e32.getUint32(20, true) & 0xffff).toBe(fdp & 0xffff);
      expect(e32.getUint32(24, true)).toBe((fdp >>> 16) << 12);
      // FNSAVE: the 16-bit environment, then ST0 = 1.0 at offset 14.
      const sv = view(0x7e40, 24);
      expect(sv.getUint32(14 + 4, true)).toBe(0x80000000);
      expect(sv.getUint16(14 + 8, true)).toBe(0x3fff);
      // The 32-bit real-mode image loaded by FRSTOR comes back field for field.
      const back = view(0x7f80, 28);
      expect(back.getUint32(12, true) & 0xffff).toBe(0x5678);
      expect(back.getUint32(16, true)).toBe(0x0abcd123);
      expect(back.getUint32(20, true) & 0xffff).toBe(0x9abc);
      expect(back.getUint32(24, true)).toBe(0x0fedc000);
    } finally {
      dir.remove();
    }
  });
});
