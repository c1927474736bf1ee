; Restartable faults in the middle of straight-line code: ring 3 code whose
; PUSH, load, page-crossing store and CALL page-fault; the #PF handler
; prints the faulting EIP (relative to the code), the ring 3 ESP, the error
; code and CR2, maps the page and returns, so each instruction restarts.
; The EIP and ESP an exception pushes must be those of the faulting
; instruction wherever it sits in a decoded block. QEMU TCG is the reference.
%include "lib.inc"

PD   equ 0x300000
PT1  equ 0x301000               ; 4..8 MiB

main:
  PRINT "restart", 10
  mov edi, PD
  mov ecx, 0x2000 / 4
  xor eax, eax
  rep stosd
  mov dword [PD], 0x87                  ; 0..4 MiB: 4 MiB page, user, writable
  mov dword [PD + 4], PT1 | 7
  mov dword [PT1 + 6*4], 0x506000 | 5   ; 0x406000: not writable yet
  mov dword [PT1 + 7*4], 0x507000 | 5   ; 0x407000 (the ring 3 stack): not writable yet
  mov dword [PT1 + 8*4], 0x508000 | 7   ; 0x408000
  mov dword [PT1 + 9*4], 0x509000 | 0   ; 0x409000: not present
  mov dword [PT1 + 10*4], 0x50a000 | 0  ; 0x40a000: not present
  mov dword [PT1 + 11*4], 0x50b000 | 5  ; 0x40b000: a second stack, not writable yet
  mov dword [0x506010], 0x1000
  mov dword [0x50a020], 0x30000
  mov eax, cr4
  or eax, 0x10                          ; PSE
  mov cr4, eax
  mov eax, PD
  mov cr3, eax
  mov eax, cr0
  or eax, 0x80010000                    ; PG, WP
  mov cr0, eax
  mov ecx, 14
  mov eax, pf_handler
  mov edx, 0x8e00
  call set_gate
  and byte [iomap + 0xe9/8], ~(1 << (0xe9 & 7))
  mov ecx, 0x82
  mov eax, back
  mov edx, 0xef00
  call set_gate
  mov [saved_esp], esp
  push 0x23
  push 0x407100
  push 0x202
  push 0x1b
  push r3code
  iret

r3code:
  mov ax, 0x23
  mov ds, ax
  mov es, ax
  mov ebx, 5
  push ebx                              ; the stack page is read-only: #PF, then retried
  push ebx
  mov ecx, [0x40a020]                   ; not present
  add ebx, ecx
  mov [0x408ffe], ebx                   ; crosses into the not-present 0x409000
  add dword [0x406010], ebx             ; read-only page: read-modify-write faults before writing
  call r3sub
  mov ebp, esp
  mov esp, 0x40b100
  call r3sub                            ; the push of the return address faults
  mov esp, ebp
  pop edx
  pop edx
  HEX esp
  HEX ebx
  HEX ecx
  HEX edx
  HEX [0x408ffc]
  HEX [0x406010]
  PRINT 10
  int 0x82

r3sub:
  mov eax, [esp]
  sub eax, r3code
  HEX eax
  ret

back:
  mov ax, 0x10
  mov ds, ax
  mov es, ax
  mov esp, [saved_esp]
  mov al, 0
  jmp exit

pf_handler:
  ; [esp] error code, [esp+4] EIP, [esp+8] CS, [esp+12] EFLAGS, [esp+16] ESP, [esp+20] SS
  push eax
  push ds
  mov ax, 0x10
  mov ds, ax
  PRINT "pf "
  mov eax, [esp+12]
  sub eax, r3code
  call print_hex
  mov eax, [esp+24]
  call print_hex
  mov eax, [esp+8]
  call print_hex
  mov eax, cr2
  call print_hex
  PRINT 10
  ; map the page: present, writable, user
  mov eax, cr2
  shr eax, 12
  and eax, 0x3ff
  or dword [PT1 + eax*4], 7
  mov eax, cr2
  invlpg [eax]
  pop ds
  pop eax
  add esp, 4
  iret

saved_esp: dd 0
