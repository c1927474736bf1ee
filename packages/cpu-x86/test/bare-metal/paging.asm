; Paging: 32-bit paging with 4 MiB and 4 KiB pages, accessed/dirty bits,
; #PF error codes and CR2 (not present, write, user, CR0.WP), INVLPG, and
; PAE paging with 2 MiB pages and NX (EFER.NXE) on instruction fetches.
%include "lib.inc"

PD  equ 0x300000
PT  equ 0x301000
PDPT equ 0x302000
PAEPD equ 0x303000
PAEPT equ 0x304000

main:
  PRINT "paging", 10
  ; clear the tables
  mov edi, PD
  mov ecx, 0x5000/4
  xor eax, eax
  rep stosd
  mov dword [PD], 0x87                  ; 0..4 MiB: 4 MiB page, user, writable
  mov dword [PD+4], PT | 7
  mov dword [PT+0*4], 0x500000 | 7      ; 0x400000 user rw
  mov dword [PT+1*4], 0                 ; 0x401000 not present
  mov dword [PT+2*4], 0x502000 | 1      ; 0x402000 supervisor ro
  mov dword [PT+3*4], 0x503000 | 5      ; 0x403000 user ro
  mov dword [PT+4*4], 0x504000 | 3      ; 0x404000 supervisor rw
  mov dword [PT+5*4], 0x505000 | 7
  mov eax, cr4
  or eax, 0x10                          ; PSE
  mov cr4, eax
  mov eax, PD
  mov cr3, eax
  mov eax, cr0
  or eax, 0x80000000
  mov cr0, eax
  PRINT "on "
  HEX [PT]
  mov eax, [0x400000]
  HEX [PT]
  mov dword [0x400010], 0xabcd
  HEX [PT]
  HEX [PD]
  PRINT 10
  RESUME .p1
  mov eax, [0x401234]
.p1:
  RESUME .p2
  mov byte [0x401ffe], 1
.p2:
  mov dword [0x402000], 0x11            ; WP=0: supervisor writes a read-only page
  HEX [PT+8]
  mov eax, cr0
  or eax, 0x10000
  mov cr0, eax
  RESUME .p3
  mov dword [0x402004], 0x22
.p3:
  RESUME .p4
  mov dword [0x403ffe], 0x33            ; crosses into the supervisor page: faults on the first
.p4:
  PRINT 10
  ; --- ring 3
  and byte [iomap + 0xe9/8], ~(1 << (0xe9 & 7))
  mov ecx, 0x82
  mov eax, back
  mov edx, 0xef00
  call set_gate
  mov [saved_esp], esp
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
  mov eax, [0x403000]
  HEX eax
  PRINT 10
  RESUME_R3 .u1
  mov eax, [0x404000]
.u1:
  RESUME_R3 .u2
  mov dword [0x403000], 1
.u2:
  RESUME_R3 .u3
  mov dword [0x401000], 1
.u3:
  int 0x82
back:
  mov ax, 0x10
  mov ds, ax
  mov es, ax
  mov esp, [saved_esp]
  ; --- INVLPG
  mov dword [0x405000], 0x5050         ; physical 0x505000 through PT[5]
  mov dword [PT], 0x505000 | 7
  invlpg [0x400000]
  HEX [0x400000]
  PRINT 10
  ; --- PAE + NX
  mov eax, cr0
  and eax, 0x7fffffff
  mov cr0, eax
  mov dword [PDPT], PAEPD | 1
  mov dword [PAEPD], 0x000000e7         ; 0..2 MiB: 2 MiB page
  mov dword [PAEPD+8], 0x200000 | 0xe7  ; 2..4 MiB
  mov dword [PAEPD+16], PAEPT | 7       ; 4..6 MiB: page table
  mov dword [PAEPT], 0x500000 | 7
  mov dword [PAEPT+4], 0x80000000       ; NX
  mov dword [PAEPT+8], 0x501000 | 7
  mov byte [0x501000], 0xc3             ; ret (paging is off here: physical)
  mov byte [0x500000], 0xc3
  mov ecx, 0xc0000080
  rdmsr
  or eax, 0x800
  wrmsr
  mov eax, cr4
  or eax, 0x20
  mov cr4, eax
  mov eax, PDPT
  mov cr3, eax
  mov eax, cr0
  or eax, 0x80000000
  mov cr0, eax
  PRINT "pae "
  call 0x401000
  PRINT "exec ok "
  RESUME .n1
  call 0x400000
.n1:
  HEX [PAEPT+8]
  HEX [PAEPD]
  PRINT 10
  mov al, 0
  jmp exit

saved_esp: dd 0
