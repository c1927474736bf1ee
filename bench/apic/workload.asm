; The local APIC benchmark guest (multiboot): IPI_REPS self IPIs, each taken
; and retired (ICR write, delivery through the IDT, EOI, IRET), then
; MMIO_REPS reads of the PPR (an APIC register access each). Port 0x510
; marks the start and end of each phase (1..4); isa-debug-exit ends it.
bits 32
org 0x100000

hdr:
  dd 0x1BADB002, 0x00010000, -(0x1BADB002 + 0x00010000)
  dd hdr, 0x100000, 0, 0, start

%ifndef IPI_REPS
%define IPI_REPS 100000
%endif
%ifndef MMIO_REPS
%define MMIO_REPS 1000000
%endif

APIC equ 0xfee00000
IDT  equ 0x1000

start:
  cli
  lgdt [gdt_desc]
  jmp 0x08:.flat
.flat:
  mov ax, 0x10
  mov ds, ax
  mov es, ax
  mov ss, ax
  mov esp, 0x90000
  mov al, 0xff                     ; 8259s masked, LINT0 masked: only our IPIs
  out 0x21, al
  out 0xa1, al
  mov dword [APIC + 0x350], 0x10700
  mov dword [APIC + 0xf0], 0x1ff
  mov eax, handler                 ; vector 0x50: interrupt gate
  mov [IDT + 0x50*8], ax
  mov word [IDT + 0x50*8 + 2], 0x08
  mov word [IDT + 0x50*8 + 4], 0x8e00
  shr eax, 16
  mov [IDT + 0x50*8 + 6], ax
  lidt [idt_desc]
  mov dx, 0x510
  mov al, 1
  out dx, al
  sti
  mov ecx, IPI_REPS
  jecxz .ipi_done
.ipi:
  mov dword [APIC + 0x300], 0x40050  ; self IPI, vector 0x50: taken at the next boundary
  loop .ipi
.ipi_done:
  cli
  mov al, 2
  out dx, al
  cmp dword [count], IPI_REPS
  jne fail
  mov al, 3
  out dx, al
  mov ecx, MMIO_REPS
  jecxz .mmio_done
.mmio:
  mov eax, [APIC + 0xa0]
  loop .mmio
.mmio_done:
  mov al, 4
  out dx, al
  mov al, 0
  out 0xf4, al
fail:
  mov al, 1
  out 0xf4, al
  hlt

handler:
  inc dword [count]
  mov dword [APIC + 0xb0], 0
  iret

align 8
count: dd 0
gdt: dq 0, 0x00cf9a000000ffff, 0x00cf92000000ffff
gdt_desc:
  dw 23
  dd gdt
idt_desc:
  dw 256*8 - 1
  dd IDT
