; Real mode: the switch from protected mode (through a 16-bit code segment),
; the IVT with INT n and exceptions (#DE, #UD pushing the faulting IP),
; segment:offset addressing, 32-bit operand and address prefixes, far
; CALL/RET, PUSHF/POPF/IRET, and big real ("unreal") mode, where a segment
; keeps the 4 GiB limit it had in protected mode.
%include "lib.inc"

RM equ 0x8000                   ; where the 16-bit code runs

main:
  PRINT "realmode", 10
  mov esi, rm_start
  mov edi, RM
  mov ecx, rm_end - rm_start
  rep movsb
  mov dword [0x100000 + 0x200000], 0xfeedface   ; for the unreal-mode read at 3 MiB
  mov ax, 0x50
  mov ss, ax
  mov es, ax
  mov fs, ax
  mov gs, ax
  ; DS keeps the 4 GiB flat descriptor (0x10) for unreal mode
  jmp 0x48:RM

bits 16
rm_start:
  mov eax, cr0
  and eax, ~1
  mov cr0, eax
  jmp 0:(RM + .real - rm_start)
.real:
  xor ax, ax
  mov ss, ax
  mov es, ax
  mov sp, 0x7000
  lidt [RM + ivt_desc - rm_start]
  ; unreal mode: DS still has its 4 GiB limit from protected mode
  mov esi, 0x300000
  mov eax, [esi]              ; address-size prefix: 32-bit offset
  call pr32
  mov ds, ax                  ; (ax = 0xface): a real-mode load: base = sel*16, limit kept
  xor ax, ax
  mov ds, ax
  ; IVT: vector 0 (#DE), 6 (#UD), 0x40 (INT n)
  mov word [0*4], RM + de_handler - rm_start
  mov word [0*4+2], 0
  mov word [6*4], RM + ud_handler - rm_start
  mov word [6*4+2], 0
  mov word [0x40*4], RM + int40 - rm_start
  mov word [0x40*4+2], 0
  ; arithmetic with 16 and 32-bit operands
  mov ax, 0xfff0
  add ax, 0x20
  pushf
  pop bx
  and bx, 0x8d5
  call pr16b
  mov eax, 0x12345678
  mov ecx, 0x10
  mul ecx
  call pr32
  mov eax, edx
  call pr32
  ; segment:offset
  mov ax, 0x1000
  mov es, ax
  mov word [es:0x10], 0xbeef
  mov ax, [es:0x10]
  call pr16
  mov eax, [dword 0x10010]   ; 32-bit offset reaches linear 0x10010 (limit 0xffffffff kept)
  call pr32
  ; INT n and IRET
  mov ax, 0x4242
  int 0x40
  call pr16
  ; #DE pushes the IP of the DIV
  xor cx, cx
  div cx
  mov ax, 0x5151
  call pr16
  ; #UD
  ud2
  mov ax, 0x6161
  call pr16
  ; far call / far return
  call 0:(RM + farfn - rm_start)
  call pr16
  ; LOOP with CX
  mov cx, 5
  xor ax, ax
.l:
  add ax, cx
  loop .l
  call pr16
  ; back to protected mode
  lgdt [cs:RM + gdtd - rm_start]
  mov eax, cr0
  or eax, 1
  mov cr0, eax
  jmp dword 0x08:pm_back

pr16b:                        ; prints bx
  push ax
  mov ax, bx
  call pr16
  pop ax
  ret
pr16:                         ; prints ax as 4 hex digits and a space
  push eax
  shl eax, 16
  mov cx, 4
  jmp prn
pr32:                         ; prints eax
  push eax
  mov cx, 8
prn:
  push dx
  mov dx, 0xe9
.d:
  rol eax, 4
  push ax
  and al, 0xf
  add al, '0'
  cmp al, '9'
  jbe .o
  add al, 7
.o:
  out dx, al
  pop ax
  loop .d
  mov al, ' '
  out dx, al
  pop dx
  pop eax
  ret

int40:
  push bp
  mov bp, sp
  mov ax, [bp+6]              ; FLAGS pushed by INT
  and ax, 0x200
  call pr16
  mov ax, [bp+4]              ; CS
  call pr16
  pop bp
  mov ax, 0x4343
  iret

de_handler:
  push bp
  mov bp, sp
  mov ax, [bp+2]              ; IP of the faulting DIV
  sub ax, RM
  call pr16
  add word [bp+2], 2          ; skip DIV CX
  pop bp
  iret

ud_handler:
  push bp
  mov bp, sp
  mov ax, [bp+2]
  sub ax, RM
  call pr16
  add word [bp+2], 2          ; skip UD2
  pop bp
  iret

farfn:
  mov ax, cs
  call pr16
  mov ax, 0x7777
  retf

ivt_desc: dw 0x3ff
  dd 0
gdtd: dw gdt_end - gdt - 1
  dd gdt
rm_end:

bits 32
pm_back:
  mov ax, 0x10
  mov ds, ax
  mov es, ax
  mov ss, ax
  mov esp, stack0_top
  PRINT 10, "back in protected mode", 10
  mov al, 0
  jmp exit
