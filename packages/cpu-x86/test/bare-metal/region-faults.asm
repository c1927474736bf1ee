; Faults raised from the middle of a hot loop's blocks: a load through DS
; while DS is a segment with a 4 KiB limit (#GP), and a DIV by zero (#DE).
; With every block compiled, the #GP comes from the compiled code's segment
; check and the #DE from an instruction the compiled code hands to the
; interpreter: both must push the faulting instruction's EIP and leave the
; registers as they were before it. The handlers print both, repair the
; cause and return to the faulting instruction, which then completes.
; QEMU TCG does not check data segment limits, so our own byte-by-byte
; interpreter is the reference (region-faults.test.ts).
%include "lib.inc"

main:
  PRINT "region faults", 10
  mov ecx, 13
  mov eax, gp_handler
  mov edx, 0x8e00
  call set_gate
  xor ecx, ecx
  mov eax, de_handler
  call set_gate
  mov ecx, 300
  mov ebx, 0x1234
  mov dx, 0x30                ; limited from the start, so code compiled at once checks DS itself
  mov ds, dx
loop_top:
  mov eax, ecx
  add ebx, eax
  test ecx, 63
  jnz flat_ds
  mov dx, 0x30                ; data, limit 0xfff
  mov ds, dx
flat_ds:
  lea esi, [ecx*4 + table]
  inc ebx
  rol ebx, 3
ld_insn:
  mov eax, [esi]              ; #GP(0) while DS is limited
  xor ebx, eax
  mov edi, ecx
  and edi, 31
  add ebx, edi
  mov eax, ebx
  xor edx, edx
  sub ebx, ecx
div_insn:
  div edi                     ; #DE when ECX is a multiple of 32
  add ebx, edx
  dec ecx
  jnz loop_top
  PRINT "ebx="
  HEX ebx
  PRINT 10
  mov al, 0
  jmp exit

gp_handler:                   ; [esp] error code, [esp+4] EIP
  push eax
  mov ax, 0x10
  mov ds, ax
  PRINT "#GP e="
  HEX [esp+4]
  mov eax, [esp+8]
  sub eax, ld_insn
  PRINT "at="
  HEX eax
  PRINT "ebx="
  HEX ebx
  PRINT "ecx="
  HEX ecx
  PRINT 10
  pop eax
  add esp, 4
  iret                        ; DS is flat now: the load restarts and succeeds

de_handler:                   ; [esp] EIP
  push eax
  PRINT "#DE at="
  mov eax, [esp+4]
  sub eax, div_insn
  HEX eax
  PRINT "ebx="
  HEX ebx
  PRINT "edi="
  HEX edi
  PRINT 10
  pop eax
  mov edi, 7                  ; the DIV restarts with a divisor
  iret

align 4
table:
%assign i 0
%rep 301
  dd (i * 2654435761) & 0xffffffff
%assign i i+1
%endrep
