; A loop whose counter lives in the same page as its code (linked with
; ld -N): every pass writes the code page. The result must be right, and the
; decoded-instruction cache must stop caching the page instead of dropping
; and decoding it again on every pass.
bits 32
section .text
global _start
_start:
  mov ecx, 100000
.loop:
  add dword [counter], 3
  dec ecx
  jnz .loop
  mov eax, 4
  mov ebx, 1
  mov ecx, counter
  mov edx, 4
  int 0x80
  mov eax, 1
  xor ebx, ebx
  int 0x80
counter: dd 0
