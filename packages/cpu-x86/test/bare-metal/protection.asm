; Exceptions and protection checks: #DE #UD #BR #BP #OF #GP #NP #SS, segment
; limits, read-only and expand-down segments, ring 3 via IRET, I/O
; permission bitmap, gates and their DPL, call gates with parameters,
; SYSENTER/SYSEXIT, #DF, and a final triple fault.
%include "lib.inc"

main:
  PRINT "protection", 10
  ; --- arithmetic and invalid opcodes
  RESUME .a1
  xor ecx, ecx
  div ecx
.a1:
  RESUME .a2
  mov eax, 0x80000000
  cdq
  mov ecx, -1
  idiv ecx
.a2:
  RESUME .a3
  ud2
.a3:
  RESUME .a4
  db 0xf0, 0x90          ; lock nop
.a4:
  RESUME .a5
  db 0x8e, 0xc8          ; mov cs, ax
.a5:
  RESUME .a6
  mov eax, 10
  bound eax, [bounds]
.a6:
  RESUME .a7
  int3
.a7:
  RESUME .a8
  mov al, 0x7f
  add al, 1
  into
.a8:
  ; --- segment loads
  RESUME .b1
  mov ax, 0x9998
  mov ds, ax
.b1:
  RESUME .b2
  mov ax, 0x40
  mov ds, ax
.b2:
  RESUME .b3
  mov ax, 0x40
  mov ss, ax
.b3:
  RESUME .b4
  mov ax, 0x38
  mov ss, ax
.b4:
  RESUME .b5
  mov ax, 0x28
  mov es, ax
.b5:
  RESUME .b6
  mov ax, 0x88
  mov fs, ax
.b6:
  RESUME .b7
  mov ax, 0x23
  mov gs, ax             ; RPL 3 DPL 3 data at CPL 0: allowed
  PRINT "gs ok", 10
  mov ax, 0x08
  mov gs, ax             ; readable code: allowed
  mov eax, [gs:start]
  HEX eax
  PRINT 10
.b7:
  ; --- LAR / LSL / VERR / VERW
  mov eax, 0x18
  lar ebx, eax
  HEX ebx
  lsl ebx, [sel30]
  HEX ebx
  mov ecx, 0x12345678
  lsl ecx, [sel_bad]
  HEX ecx
  pushfd
  pop eax
  and eax, 0x40
  HEX eax
  mov ax, 0x38
  verr ax
  setz al
  verw word [sel38]
  setz ah
  movzx eax, ax
  HEX eax
  PRINT 10
  ; --- ring 3
  mov ecx, 0x80
  mov eax, int80
  mov edx, 0xee00           ; DPL 3 interrupt gate
  call set_gate
  mov ecx, 0x81
  mov eax, int80
  mov edx, 0x8e00           ; DPL 0
  call set_gate
  mov ecx, 0x82
  mov eax, back_to_ring0
  mov edx, 0xef00           ; DPL 3 trap gate
  call set_gate
  ; call gate at 0x58: DPL 3, target ring 0 code, 2 dword parameters
  mov eax, gate_target
  mov [gdt+0x58], ax
  mov word [gdt+0x58+2], 0x08
  mov byte [gdt+0x58+4], 2
  mov byte [gdt+0x58+5], 0xec
  shr eax, 16
  mov [gdt+0x58+6], ax
  ; allow port 0x80 in the I/O bitmap
  and byte [iomap + 0x80/8], ~1
  and byte [iomap + 0xe9/8], ~(1 << (0xe9 & 7))   ; ring 3 prints through port 0xE9
  mov [ring0_esp], esp
  push 0x23
  push stack3_top
  push 0x202
  push 0x1b
  push ring3
  iret

ring3:
  mov ax, 0x23
  mov ds, ax
  mov es, ax
  PRINT "ring3 "
  mov eax, cs
  HEX eax
  mov eax, ss
  HEX eax
  PRINT 10
  RESUME_R3 .r1
  cli
.r1:
  RESUME_R3 .r2
  hlt
.r2:
  RESUME_R3 .r3
  mov eax, cr0
.r3:
  RESUME_R3 .r4
  in al, 0x81               ; denied by the bitmap
.r4:
  in al, 0x80               ; allowed by the bitmap
  PRINT "in80 ok", 10
  RESUME_R3 .r5
  in ax, 0x80               ; 0x81 denied: the whole access must be allowed
.r5:
  RESUME_R3 .r6
  mov ax, 0x10
  mov ds, ax
.r6:
  mov ax, 0x23
  mov ds, ax
  int 0x80
  PRINT "after int80", 10
  RESUME_R3 .r7
  int 0x81                  ; gate DPL 0 < CPL 3
.r7:
  RESUME_R3 .r8
  int 0x30                  ; gate not present
.r8:
  push 0x1111
  push 0x2222
  call 0x5b:0
  mov ebx, ds               ; nulled by the return to ring 3 (DPL 0 < CPL 3)
  mov ax, 0x23
  mov ds, ax
  PRINT "after gate "
  HEX ebx
  mov eax, esp
  sub eax, stack3_top
  HEX eax
  PRINT 10
  int 0x82                  ; back to ring 0

int80:
  PRINT "int80 cs="
  HEX [esp+4]
  PRINT "ss="
  HEX [esp+16]
  mov eax, [esp+12]
  sub eax, stack3_top
  HEX eax
  mov eax, esp
  sub eax, stack0_top
  HEX eax
  PRINT 10
  iret

gate_target:
  PRINT "gate cs="
  HEX [esp+4]
  HEX [esp+8]
  HEX [esp+12]
  PRINT "ss="
  HEX [esp+20]
  mov eax, cs
  HEX eax
  mov eax, ss
  HEX eax
  mov eax, ds
  HEX eax
  PRINT 10
  mov ax, 0x10
  mov ds, ax               ; DS DPL 0: nulled on the return to ring 3
  retf 8

back_to_ring0:
  mov ax, 0x10
  mov ds, ax
  mov es, ax
  mov esp, [ring0_esp]
  PRINT "back in ring0 "
  mov eax, ds
  HEX eax
  PRINT 10
  ; --- SYSENTER / SYSEXIT
  mov ecx, 0x174
  xor edx, edx
  mov eax, 0x08
  wrmsr
  mov ecx, 0x175
  mov eax, [ring0_esp]
  wrmsr
  mov ecx, 0x176
  mov eax, sysenter_target
  wrmsr
  mov ecx, stack3_top
  mov edx, after_sysexit
  sysexit
after_sysexit:
  PRINT "sysexit cs="
  mov eax, cs
  HEX eax
  mov eax, ss
  HEX eax
  PRINT 10
  sysenter
sysenter_target:
  PRINT "sysenter cs="
  mov eax, cs
  HEX eax
  mov eax, ss
  HEX eax
  mov eax, esp
  sub eax, [ring0_esp]
  HEX eax
  PRINT 10
  mov esp, [ring0_esp]
  ; --- single-step: TF traps after each instruction, not after INT n
  mov ecx, 1
  mov eax, db_handler
  mov edx, 0x8e00
  call set_gate
  mov ecx, 0x83
  mov eax, int83
  mov edx, 0x8e00
  call set_gate
  mov dword [steps], 0
  pushfd
  or dword [esp], 0x100
  popfd                      ; the trap starts after the next instruction
  mov eax, 1
  add eax, 2
  int 0x83
  nop
  pushfd
  and dword [esp], ~0x100
  popfd
  PRINT "steps "
  HEX [steps]
  PRINT 10
  ; --- #DF: #GP while its gate is not present -> #NP during delivery -> #DF
  mov byte [idt + 13*8 + 5], 0x0e    ; clear P of vector 13
  RESUME .d1
  mov ax, 0x9998
  mov ds, ax
.d1:
  mov ax, 0x10
  mov ds, ax
  mov byte [idt + 13*8 + 5], 0x8e
  PRINT "triple", 10
  lidt [null_idt]
  int3
  PRINT "not reached", 10
  mov al, 1
  jmp exit

db_handler:
  inc dword [steps]
  push eax
  mov eax, [esp+4]
  sub eax, main
  call print_hex
  pop eax
  iret
int83:
  PRINT "int83 "
  iret
steps: dd 0
null_idt: dw 0
  dd 0
ring0_esp: dd 0
bounds: dd 0, 5
sel30: dd 0x30
sel_bad: dd 0x9990
sel38: dw 0x20
