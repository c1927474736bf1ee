; Self-modifying code on physical pages: code written through a second
; linear mapping (an alias) of the page it runs from, two code mappings of
; one physical page, a store to the next instruction through an alias, an
; instruction crossing into a page that is patched, a page table switch to
; other code at the same linear address, and the same bytes run as 16-bit
; and as 32-bit code. Decoded-instruction caches key code by physical page
; and CS.D; QEMU TCG's answers are the reference.
%include "lib.inc"

PD    equ 0x300000
PT0   equ 0x301000              ; 0..4 MiB identity
PT1   equ 0x302000              ; 4..8 MiB: the aliases below
CODE  equ 0x500000              ; physical page of the routine
CODE2 equ 0x501000              ; another routine
XA    equ 0x503000              ; first half of the crossing instruction
XB    equ 0x506000              ; second half (not physically contiguous)
LOW   equ 0x8000                ; trampoline below 64 KiB (16-bit returns)
MIXED equ 0x9000                ; bytes run as 16-bit and as 32-bit code

main:
  PRINT "smc", 10
  ; ---- the same bytes as 32-bit and as 16-bit code (no paging yet)
  mov esi, tramp
  mov edi, LOW
  mov ecx, tramp_end - tramp
  rep movsb
  mov esi, mixed
  mov edi, MIXED
  mov ecx, mixed_end - mixed
  rep movsb
  mov ecx, 2
.modes:
  push ecx
  call LOW
  HEX ebx
  HEX eax
  pop ecx
  loop .modes
  mov byte [MIXED + 2], 0x99     ; patch: 32-bit imm byte 1, 16-bit imm high byte
  call LOW
  HEX ebx
  HEX eax
  PRINT 10

  ; ---- paging: identity for 0..4 MiB, aliases at 4 MiB
  mov edi, PD
  mov ecx, 0x3000 / 4
  xor eax, eax
  rep stosd
  mov dword [PD], PT0 | 3
  mov dword [PD + 4], PT1 | 3
  xor ecx, ecx
.id:
  mov eax, ecx
  shl eax, 12
  or eax, 3
  mov [PT0 + ecx*4], eax
  inc ecx
  cmp ecx, 1024
  jb .id
  mov dword [PT1 + 0*4], CODE | 3       ; 0x400000: code
  mov dword [PT1 + 1*4], CODE | 3       ; 0x401000: data alias of the same page
  mov dword [PT1 + 2*4], CODE | 3       ; 0x402000: second code mapping
  mov dword [PT1 + 3*4], XA | 3         ; 0x403000
  mov dword [PT1 + 4*4], XB | 3         ; 0x404000
  mov dword [PT1 + 5*4], XB | 3         ; 0x405000: alias of XB
  ; routine: mov eax, imm32 / ret, then a routine that stores to its next instruction
  mov esi, routine
  mov edi, CODE
  mov ecx, routine_end - routine
  rep movsb
  mov esi, routine2
  mov edi, CODE2
  mov ecx, routine2_end - routine2
  rep movsb
  ; the crossing instruction: B8 11 22 | 33 44 C3 at XA+0xffd / XB
  mov dword [XA + 0xffc], 0x2211b890
  mov dword [XB], 0x00c34433
  mov eax, PD
  mov cr3, eax
  mov eax, cr0
  or eax, 0x80000000
  mov cr0, eax

  call 0x400000
  HEX eax
  mov dword [0x401001], 0x22222222      ; through the alias
  call 0x400000
  HEX eax
  call 0x402000                         ; the other code mapping
  HEX eax
  mov dword [0x401001], 0x33333333
  call 0x402000
  HEX eax
  call 0x400000
  HEX eax
  PRINT 10
  ; a store, through the alias, to the instruction right after it
  mov ecx, 3
.next:
  push ecx
  call 0x400000 + (r_next - routine)
  HEX eax
  pop ecx
  loop .next
  PRINT 10
  ; an instruction crossing into a page that is then patched through an alias
  call 0x403ffd
  HEX eax
  mov byte [0x405000], 0x77
  call 0x403ffd
  HEX eax
  mov byte [0x404001], 0x66
  call 0x403ffd
  HEX eax
  PRINT 10
  ; other code at the same linear address after a page table change
  mov dword [PT1 + 0*4], CODE2 | 3
  invlpg [0x400000]
  call 0x400000
  HEX eax
  mov dword [PT1 + 0*4], CODE | 3
  invlpg [0x400000]
  call 0x400000
  HEX eax
  PRINT 10
  mov al, 0
  jmp exit

; Runs MIXED as 32-bit code (16-bit far call: its o16 RETF returns here) and as 16-bit code.
tramp:
  xor eax, eax
  db 0x66, 0x9a                 ; o16 call 0x08:MIXED (nasm would emit a 32-bit offset)
  dw MIXED, 0x08
  mov ebx, eax
  xor eax, eax
  call 0x48:MIXED
  ret
tramp_end:

; 32-bit: mov eax, 0x12345678 / o16 retf
; 16-bit: mov ax, 0x5678 / xor al, 0x12 / o32 retf
mixed:
  db 0xb8, 0x78, 0x56, 0x34, 0x12, 0x66, 0xcb
mixed_end:

routine:
  mov eax, 0x11111111
  ret
r_next:
  add byte [0x401000 + (r_imm - routine) + 1], 0x10   ; through the alias: the next instruction's imm8
r_imm:
  mov al, 0x05
  movzx eax, al
  ret
routine_end:

routine2:
  mov eax, 0x44444444
  ret
routine2_end:
