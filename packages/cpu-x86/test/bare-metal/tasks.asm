; Task switches through the TSS: CALL to a TSS (nested, back link, NT, busy
; bits), IRET back, JMP between tasks, INT through a task gate, an
; exception through a task gate with its error code, CR0.TS, and the
; #TS/#GP checks on invalid and busy TSS targets.
%include "lib.inc"

%macro TSSDESC 2          ; gdt offset, tss address: 32-bit available TSS, limit 0x67
  mov eax, %2
  mov word [gdt + %1], 0x67
  mov [gdt + %1 + 2], ax
  shr eax, 16
  mov [gdt + %1 + 4], al
  mov byte [gdt + %1 + 5], 0x89
  mov byte [gdt + %1 + 6], 0
  mov [gdt + %1 + 7], ah
%endmacro

%macro TSSINIT 3          ; tss, eip, esp
  mov dword [%1 + 0x20], %2
  mov dword [%1 + 0x38], %3
  mov dword [%1 + 0x24], 2
  mov dword [%1 + 0x4c], 0x08
  mov dword [%1 + 0x48], 0x10
  mov dword [%1 + 0x50], 0x10
  mov dword [%1 + 0x54], 0x10
  mov dword [%1 + 0x58], 0x10
  mov dword [%1 + 0x5c], 0x10
  mov dword [%1 + 0x1c], 0
%endmacro

%macro STATE 0            ; prints TR, NT, the busy bits of TSS 0x28/0x68, CR0.TS
  str eax
  HEX eax
  pushfd
  pop eax
  and eax, 0x4000
  HEX eax
  movzx eax, byte [gdt + 0x28 + 5]
  HEX eax
  movzx eax, byte [gdt + 0x68 + 5]
  HEX eax
  mov eax, cr0
  and eax, 8
  HEX eax
  PRINT 10
%endmacro

main:
  PRINT "tasks", 10
  TSSDESC 0x68, tss2
  TSSINIT tss2, task2, stack2_top
  STATE
  call 0x68:0
  PRINT "back "
  STATE
  clts
  jmp 0x68:0
  PRINT "back from jmp "
  STATE
  ; --- INT through a task gate (IDT vector 0x40 -> TSS 0x68)
  TSSINIT tss2, task2b, stack2_top
  mov word [idt + 0x40*8 + 2], 0x68
  mov byte [idt + 0x40*8 + 5], 0x85
  int 0x40
  PRINT "after int40 "
  STATE
  ; --- #GP through a task gate: the handler task gets the error code on its stack
  TSSDESC 0xa8, tss3
  TSSINIT tss3, task3, stack3t_top
  mov word [idt + 13*8 + 2], 0xa8
  mov byte [idt + 13*8 + 5], 0x85
  mov word [idt + 13*8 + 6], 0
  mov word [idt + 13*8], 0
  mov ax, 0x9998
  mov ds, ax
gp_resume:
  mov ax, 0x10
  mov ds, ax
  PRINT "after #GP task "
  STATE
  ; restore the #GP interrupt gate
  mov ecx, 13
  mov eax, [stub_table + 13*4]
  mov edx, 0x8e00
  call set_gate
  ; --- invalid targets
  RESUME .i1
  call 0x28:0              ; busy TSS: #GP(0x28)
.i1:
  mov word [gdt + 0x68], 0x20  ; limit below 0x67: #TS(0x68)
  RESUME .i2
  jmp 0x68:0
.i2:
  mov byte [gdt + 0x68 + 5], 0x09 ; not present: #NP(0x68)
  mov word [gdt + 0x68], 0x67
  RESUME .i3
  jmp 0x68:0
.i3:
  PRINT "done", 10
  mov al, 0
  jmp exit

task2:
  PRINT "task2 "
  STATE
  movzx eax, word [tss2]
  HEX eax
  PRINT 10
  iret                     ; NT=1: back to the caller task
  PRINT "task2 again "
  STATE
  jmp 0x28:0               ; JMP back (task 1 is not busy after its own JMP)
  jmp task2

task2b:
  PRINT "task2b "
  STATE
  iret

task3:
  PRINT "task3 err="
  pop eax
  HEX eax
  movzx eax, word [tss3]
  HEX eax
  STATE
  mov dword [tss0 + 0x20], gp_resume   ; resume task 1 past the faulting MOV
  iret
  jmp task3

align 16
tss2: times 0x68 db 0
tss3: times 0x68 db 0
  times 1024 db 0
stack2_top:
  times 1024 db 0
stack3t_top:
