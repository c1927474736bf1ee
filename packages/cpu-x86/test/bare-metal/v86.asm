; Virtual-8086 mode: entering through IRET, 8086 addressing, IOPL-sensitive
; instructions (#GP to the monitor when IOPL < 3), the I/O permission bitmap
; (applies whatever the IOPL), INT n through a DPL 3 gate with the V86 frame
; (GS FS DS ES pushed, data segments nulled), IRET back, and the gate checks.
%include "lib.inc"

V86_CS equ 0x0700            ; code copied to linear 0x7000
V86_SS equ 0x0800            ; stack at linear 0x8000..0x8fff

%macro ENTER_V86 2           ; %1 = EFLAGS, %2 = IP
  push dword 0               ; gs
  push dword 0x0040          ; fs
  push dword 0x0900          ; ds (linear 0x9000)
  push dword 0x0a00          ; es
  push dword V86_SS
  push dword 0x1000
  push dword %1
  push dword V86_CS
  push dword %2
  iret
%endmacro

main:
  PRINT "v86", 10
  ; copy the 16-bit code below 1 MiB
  mov esi, v86_code
  mov edi, 0x7000
  mov ecx, v86_end - v86_code
  rep movsb
  and byte [iomap + 0xe9/8], ~(1 << (0xe9 & 7))
  mov ecx, 0x30
  mov eax, v86_int
  mov edx, 0xee00            ; DPL 3 interrupt gate
  call set_gate
  mov ecx, 0x31
  mov eax, v86_int
  mov edx, 0x8e00            ; DPL 0: #GP from V86
  call set_gate
  ; --- IOPL 0
  RESUME .a1
  ENTER_V86 0x20002, part1 - v86_code
.a1:
  PRINT "mem "
  HEX [0x9100]
  HEX [0xa104]
  PRINT 10
  ; --- IOPL 3
  RESUME .a2
  ENTER_V86 0x23002, part2 - v86_code
.a2:
  PRINT "mem "
  HEX [0x9200]
  HEX [0x9204]
  PRINT 10
  ; (An INT from V86 to a gate whose code segment is not ring 0 must raise
  ; #GP(selector) per the SDM; QEMU TCG delivers it anyway, so that case is
  ; checked in the unit tests instead of here.)
  PRINT "done", 10
  mov al, 0
  jmp exit

v86_int:
  ; Entering from V86 nulls DS/ES/FS/GS: save what they hold, then load ring 0 data.
  mov ebx, es
  mov ecx, fs
  mov edx, gs
  mov esi, ds
  mov ax, 0x10
  mov ds, ax
  PRINT "int frame "
  HEX [esp]
  HEX [esp+4]
  push eax
  mov eax, [esp+12]
  and eax, 0x23000
  HEX eax
  pop eax
  HEX [esp+12]
  HEX [esp+16]
  HEX [esp+20]
  HEX [esp+24]
  HEX [esp+28]
  HEX [esp+32]
  PRINT 10
  PRINT "segs "
  HEX ebx
  HEX ecx
  HEX edx
  HEX esi
  PRINT 10
  add dword [esp], 0         ; return after the INT
  iret

bits 16
v86_code:
part1:
  mov dx, 0xe9
  mov al, 'V'
  out dx, al
  mov al, 10
  out dx, al
  mov word [0x100], 0x1234       ; ds:0x100 = linear 0x9100
  mov word [es:0x104], 0x5678    ; es = 0x0a00 -> linear 0xa104
  mov bx, 0x100
  mov si, 2
  mov byte [bx+si], 0x77         ; 8086 addressing
  cli                            ; IOPL 0: #GP(0)
part2:
  cli
  sti
  pushf
  pop ax
  mov [0x200], ax
  push cs
  pop word [0x204]
  int 0x30                       ; through the DPL 3 gate and back
  mov dx, 0xe9
  mov al, 'R'
  out dx, al
  mov al, 10
  out dx, al
  int 0x31                       ; gate DPL 0: #GP(0x31*8+2)
v86_end:
bits 32
