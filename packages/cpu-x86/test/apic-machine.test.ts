// The local APIC driven by guest code in a deterministic machine: timer
// interrupts at exact virtual times (periodic and TSC-deadline, read back
// with RDTSC), exact replay and snapshot resume with a running timer, a
// level-triggered interrupt source that re-delivers after the EOI broadcast
// (as the I/O APIC does), and LINT0 gating the 8259.
import { expect, it } from "vitest";
import { createMachine, LEGACY_PIC, X86_CPU_CONTROL, type Machine, type Plugin } from "@typevisor/hv-core";
import { PHYSICAL_MEMORY } from "@typevisor/mmu-ept";
import { describeWithTools } from "@typevisor/test-support";
import { X86_CPUS, x86Cpu } from "../src/index.js";
import { nasmBinary } from "./harness/nasm.js";

const PRELUDE = `
bits 32
org 0x100000
  jmp start
APIC equ 0xfee00000
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
  mov dword [APIC + 0xf0], 0x1ff    ; software-enable the APIC
`;

function assemble(body: string): Uint8Array {
  return nasmBinary(PRELUDE + body);
}

async function machine(code: Uint8Array, extra: Plugin[] = []): Promise<{ vm: Machine; out: number[] }> {
  const vm = await createMachine({ memory: "8M", clock: { mode: "deterministic" }, plugins: [x86Cpu(), ...extra] });
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

// Periodic timer at divide-by-1, 20 000 ticks (20 µs); the handler reports the
// TSC; the main loop alternates busy work and HLT.
const PERIODIC = `
  GATE 0x40, tick
  mov dword [APIC + 0x3e0], 0xb
  mov dword [APIC + 0x320], 0x20040
  mov dword [APIC + 0x380], 20000
  sti
.loop:
  mov ecx, 3000
.busy:
  imul esi, esi, 7
  loop .busy
  hlt
  cmp dword [ticks], 12
  jb .loop
  OUT 0xf4, 0
tick:
  rdtsc
  OUT 0x500, eax
  inc dword [ticks]
  mov dword [APIC + 0xb0], 0
  iret
ticks: dd 0
`;

describeWithTools(["nasm"], "the local APIC under guest code", () => {
  it("periodic timer interrupts arrive exactly one period apart and replay identically", async () => {
    const code = assemble(PERIODIC);
    const a = await machine(code);
    expect(await a.vm.run()).toMatchObject({ reason: "exit", exitCode: 0 });
    expect(a.out.length).toBe(12);
    const gaps = a.out.slice(1).map((t, i) => t - a.out[i]);
    expect(new Set(gaps)).toEqual(new Set([20000]));
    const b = await machine(code);
    await b.vm.run();
    expect(b.out).toEqual(a.out);
  });

  it("resumes from a snapshot with the timer armed and continues identically", async () => {
    const code = assemble(PERIODIC);
    const a = await machine(code);
    const cpu = a.vm.services.get(X86_CPUS)[0];
    // Run part of the way by hand: slices, timers and idle jumps as the machine would.
        while (a.out.length < 5) {
      a.vm.clock.runDue();
      const n = cpu.runSlice(Math.max(1, Math.min(10_000, a.vm.clock.nextDeadline() - a.vm.clock.now())));
      a.vm.clock.advanceInstructions(n);
      if (cpu.halted) a.vm.clock.advanceTo(a.vm.clock.nextDeadline());
    }
    const saved = a.vm.saveState();
    const at = a.vm.clock.now();
    expect(saved.map((s) => s.id)).toContain("apic0");
    await a.vm.run();
    const b = await machine(new Uint8Array(code.length));
    b.vm.clock.advanceTo(at);
    b.vm.loadState(saved);
    await b.vm.run();
    expect([...a.out.slice(0, 5), ...b.out]).toEqual(a.out);
  });

  it("fires the TSC-deadline timer when the TSC reaches IA32_TSC_DEADLINE", async () => {
    const code = assemble(`
  GATE 0x41, fired
  mov eax, 1
  cpuid
  shr ecx, 24
  and ecx, 1
  OUT 0x500, ecx                  ; CPUID.01H:ECX.TSC_DEADLINE
  mov dword [APIC + 0x320], 0x40041
  rdtsc
  add eax, 50000
  adc edx, 0
  mov [deadline], eax
  mov ecx, 0x6e0
  wrmsr
  rdmsr
  sub eax, [deadline]
  OUT 0x500, eax                  ; reads back
  sti
.w:
  hlt
  cmp dword [done], 0
  je .w
  mov ecx, 0x6e0
  rdmsr
  OUT 0x500, eax                  ; cleared once fired
  OUT 0xf4, 0
fired:
  rdtsc
  sub eax, [deadline]
  OUT 0x500, eax
  mov dword [done], 1
  mov dword [APIC + 0xb0], 0
  iret
deadline: dd 0
done: dd 0
`);
    const { vm, out } = await machine(code);
    expect(await vm.run()).toMatchObject({ reason: "exit", exitCode: 0 });
    expect(out[0]).toBe(1);
    expect(out[1]).toBe(0);
    // The HLT idles up to the deadline: the handler's RDTSC is the deadline plus the few instructions before it.
    expect(out[2]).toBeGreaterThanOrEqual(0);
    expect(out[2]).toBeLessThan(10);
    expect(out[3]).toBe(0);
  });

  it("re-delivers a level-triggered interrupt after the EOI broadcast while its source stays asserted", async () => {
    // A miniature I/O APIC pin: level-triggered, remote IRR until the EOI of its vector.
    let asserted = 3; // the line stays high for three deliveries
    let remoteIrr = false;
    let delivered = 0;
    const source: Plugin = {
      name: "level-source",
      version: "1.0.0",
      setup(m) {
        const send = () => {
          if (asserted > 0 && !remoteIrr) {
            remoteIrr = true;
            delivered++;
            m.irqs.sendMsi(0xfee00000, 0xc000 | 0x61);
          }
        };
        m.irqs.onEoi((v) => {
          if (v !== 0x61) return;
          remoteIrr = false;
          asserted--;
          send();
        });
        m.ports.register("raise", 0x600, 4, { read: () => 0, write: () => send() });
      },
    };
    const code = assemble(`
  GATE 0x61, isr
  sti
  OUT 0x600, 0
.w:
  cmp dword [count], 3
  jb .w
  mov eax, [APIC + 0x1b0]
  OUT 0x500, eax
  OUT 0xf4, 0
isr:
  inc dword [count]
  mov eax, [APIC + 0x1b0]          ; TMR word 3: level-triggered
  OUT 0x500, eax
  mov dword [APIC + 0xb0], 0
  iret
count: dd 0
`);
    const { vm, out } = await machine(code, [source]);
    expect(await vm.run()).toMatchObject({ reason: "exit", exitCode: 0 });
    expect(delivered).toBe(3);
    expect(out.slice(0, 3)).toEqual([2, 2, 2]); // bit 1 of TMR word 3 = vector 0x61
  });

  it("passes the 8259 through LINT0 in virtual-wire mode and holds it back when the guest masks LINT0", async () => {
    const pending: number[] = [];
    const pic: Plugin = {
      name: "test-pic",
      version: "1.0.0",
      setup(m) {
        m.services.provide(LEGACY_PIC, { hasInterrupt: () => pending.length > 0, acknowledge: () => pending.shift()! });
        m.ports.register("irq", 0x600, 4, { read: () => 0, write: (_o, _s, v) => void pending.push(v) });
      },
    };
    const code = assemble(`
  GATE 0x30, isr
  GATE 0x31, isr
  mov dword [APIC + 0x350], 0x10700  ; LINT0 masked
  sti
  OUT 0x600, 0x30
  mov ecx, 1000
.a: loop .a
  OUT 0x500, [count]                 ; nothing yet
  mov dword [APIC + 0x350], 0x700    ; ExtINT, unmasked: the 8259 gets through
  nop
  nop
  OUT 0x500, [count]
  mov ecx, 0x1b
  rdmsr
  and eax, ~0x800                    ; APIC globally disabled: INTR goes straight to the core
  wrmsr
  OUT 0x600, 0x31
  nop
  nop
  OUT 0x500, [count]
  OUT 0xf4, 0
isr:
  inc dword [count]
  iret
count: dd 0
`);
    const { vm, out } = await machine(code, [pic]);
    expect(await vm.run()).toMatchObject({ reason: "exit", exitCode: 0 });
    expect(out).toEqual([0, 1, 2]);
  });
});
