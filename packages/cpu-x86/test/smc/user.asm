; Self-modifying code as a Linux process (linked with ld -N so the text is
; writable), run natively and on our vCPU: the bytes it writes to stdout
; must agree. Each case stores into code the decoded-instruction cache has
; already seen, or is about to see: the next instruction, a later
; instruction in the same block, an opcode, a copied-in routine replaced by
; another, a function on another page, and an instruction that crosses a
; page boundary.
bits 32
section .text
global _start
_start:
  mov edi, out
  xor edx, edx
  ; 1. a store to the next instruction (its immediate)
  mov byte [s1 + 1], 0x42
s1:
  mov al, 0x11
  stosb
  ; 2. a loop that patches the immediate of an instruction later in its own body
  mov ecx, 10
s2loop:
  mov [s2imm + 1], ecx
  nop
s2imm:
  mov eax, 0
  add edx, eax
  dec ecx
  jnz s2loop
  mov eax, edx
  stosd
  ; 3. an opcode that flips between ADD and SUB each iteration
  mov ecx, 7
  mov ebx, 1000
s3loop:
s3op:
  add ebx, ecx
  xor byte [s3op], 0x28
  dec ecx
  jnz s3loop
  mov eax, ebx
  stosd
  ; 4. code copied into a buffer, run, replaced with other code, run again
  push edi
  mov esi, code_a
  mov edi, buf
  mov ecx, code_a_end - code_a
  rep movsb
  call buf
  mov ebx, eax
  mov esi, code_b
  mov edi, buf
  mov ecx, code_b_end - code_b
  rep movsb
  mov ecx, 5
  call buf
  pop edi
  stosd
  mov eax, ebx
  stosd
  ; 5. a function on another page, called, patched with a dword store, called again
  call far_fn
  stosd
  mov dword [far_imm + 1], 0x5a5a5a5a
  call far_fn
  stosd
  ; 6. an instruction crossing a page boundary, patched in its second page
  call cross
  stosd
  mov byte [cross + 4], 0x77
  call cross
  stosd
  ; 7. a store to the instruction right after it, in a loop (each pass sees the previous pass's value)
  mov ecx, 4
  xor ebx, ebx
s7loop:
  mov [s7 + 2], cl
s7:
  add ebx, byte 0
  dec ecx
  jnz s7loop
  mov eax, ebx
  stosd
  ; write(1, out, edi - out); exit(0)
  mov edx, edi
  sub edx, out
  mov ecx, out
  mov ebx, 1
  mov eax, 4
  int 0x80
  mov eax, 1
  xor ebx, ebx
  int 0x80

code_a:
  mov eax, 0x11111111
  ret
code_a_end:
code_b:
  mov eax, 0x22222222
  add eax, ecx
  ret
code_b_end:

  align 4096
far_fn:
far_imm:
  mov eax, 0x12345678
  ret

  ; `cross` starts 3 bytes before a page boundary: B8 + 2 immediate bytes here, 2 in the next page.
  times 4096 - 3 - ($ - far_fn) db 0xcc
cross:
  mov eax, 0x44332211
  ret

section .data
out: times 64 db 0
buf: times 64 db 0xcc
