; The FPU as the operating system sees it: Linux's FPU detection (FNINIT,
; FNSTSW, FNSTCW), CR0.EM/MP/TS (#NM for lazy FPU switching, #UD for
; MMX/SSE under EM), CR0.NE=1 (#MF at FWAIT; the NE=0 FERR# path is a unit
; test because QEMU TCG aborts on it), CR4.OSFXSR (#UD for SSE without it),
; FXSAVE/MOVAPS alignment (#GP), and MMX aliasing seen through FXSAVE.
%include "lib.inc"

%macro CR0_SET 1
  mov eax, cr0
  or eax, %1
  mov cr0, eax
%endmacro
%macro CR0_CLR 1
  mov eax, cr0
  and eax, ~(%1)
  mov cr0, eax
%endmacro
%macro CR4_SET 1
  mov eax, cr4
  or eax, %1
  mov cr4, eax
%endmacro
%macro CR4_CLR 1
  mov eax, cr4
  and eax, ~(%1)
  mov cr4, eax
%endmacro

main:
  PRINT "fpu", 10
  ; --- Linux's FPU detection (arch/x86 fpu__init_system_early_generic)
  CR0_CLR 4 | 8
  CR0_SET 0x22
  fninit
  mov word [scratch], 0x5a5a
  fnstsw [scratch]
  movzx eax, word [scratch]
  HEX eax
  mov word [scratch], 0x5a5a
  fnstcw [scratch]
  movzx eax, word [scratch]
  HEX eax
  and eax, 0x103f
  cmp eax, 0x3f
  jne .nofpu
  cmp word [scratch - 0], 0
  PRINT "fpu present", 10
  jmp .cpuid
.nofpu:
  PRINT "no fpu", 10
.cpuid:
  mov eax, 1
  cpuid
  and edx, (1 << 0) | (1 << 23) | (1 << 24) | (1 << 25) | (1 << 26)
  HEX edx
  PRINT 10

  ; --- CR0.EM: escapes #NM, WAIT does not care about EM, MMX and SSE #UD
  CR4_SET 0x600
  CR0_SET 4
  RESUME .em1
  fld1
  PRINT "em: fld1 ran", 10
.em1:
  RESUME .em2
  fwait
  PRINT "em: wait ok", 10
.em2:
  RESUME .em3
  paddb mm0, mm1
  PRINT "em: mmx ran", 10
.em3:
  RESUME .em4
  addps xmm0, xmm1
  PRINT "em: sse ran", 10
.em4:
  RESUME .em5
  fxsave [fxarea]
  PRINT "em: fxsave ran", 10
.em5:
  RESUME .em6
  sfence
  lfence
  mfence
  PRINT "em: fences ok", 10
.em6:
  CR0_CLR 4

  ; --- CR0.TS: lazy FPU switching. Every FPU/MMX/SSE instruction #NM; WAIT only with MP.
  CR0_SET 8
  RESUME .ts1
  fld1
  PRINT "ts: fld1 ran", 10
.ts1:
  RESUME .ts2
  fwait
  PRINT "ts+mp: wait ran", 10
.ts2:
  CR0_CLR 2
  RESUME .ts3
  fwait
  PRINT "ts: wait ok without mp", 10
.ts3:
  CR0_SET 2
  RESUME .ts4
  movaps xmm0, xmm1
  PRINT "ts: sse ran", 10
.ts4:
  RESUME .ts5
  paddb mm0, mm1
  PRINT "ts: mmx ran", 10
.ts5:
  RESUME .ts6
  fxrstor [fxarea]
  PRINT "ts: fxrstor ran", 10
.ts6:
  RESUME .ts7
  stmxcsr [scratch]
  PRINT "ts: stmxcsr ran", 10
.ts7:
  clts
  RESUME .ts8
  fld1
  fstp st0
  PRINT "clts: fld1 ok", 10
.ts8:

  ; --- CR4.OSFXSR: SSE #UD without it; MMX and x87 unaffected
  CR4_CLR 0x200
  RESUME .fx1
  xorps xmm0, xmm0
  PRINT "no osfxsr: sse ran", 10
.fx1:
  RESUME .fx2
  ldmxcsr [mxcsr_default]
  PRINT "no osfxsr: ldmxcsr ran", 10
.fx2:
  RESUME .fx3
  pxor mm2, mm2
  emms
  PRINT "no osfxsr: mmx ok", 10
.fx3:
  CR4_SET 0x200

  ; --- Unmasked x87 exception: #MF at the next FWAIT (CR0.NE=1). Which other
  ; instructions wait, and FLDCW arming a pending flag, are checked against the
  ; real CPU in fpu-faults.test.ts (QEMU TCG only checks at FWAIT).
  fninit
  mov word [scratch], 0x37b            ; ZE unmasked
  fldcw [scratch]
  fld1
  fldz
  RESUME .mf1
  fdivp st1, st0                       ; sets ZE and ES; no fault yet
  fnstsw ax
  and eax, 0xc7ff                      ; TOP aside (QEMU pops despite the unmasked exception)
  HEX eax
  PRINT "div done", 10
  fwait
  PRINT "wait: no #MF", 10
.mf1:
  fnstsw ax                            ; non-waiting: no fault
  and eax, 0xc7ff
  HEX eax
  fnclex
  RESUME .mf4
  fwait
  fld1
  fstp st0
  PRINT "after fnclex ok", 10
.mf4:
  fninit

  ; --- SIMD exceptions: #XM with OSXMMEXCPT, #UD without; masked ones just set flags
  ldmxcsr [mxcsr_default]
  xorps xmm1, xmm1
  movaps xmm0, [ones]
  divps xmm0, xmm1                     ; masked: inf, ZE flag
  stmxcsr [scratch]
  HEX dword [scratch]
  movmskps eax, xmm0
  HEX eax
  PRINT 10
  ; (Unmasked SIMD exceptions, #XM vs #UD, are compared with the real CPU in
  ; fpu-faults.test.ts: QEMU TCG does not raise #XM.)

  ; --- #GP: misaligned FXSAVE/MOVAPS, reserved MXCSR bits
  RESUME .gp1
  fxsave [fxarea + 8]
  PRINT "misaligned fxsave ran", 10
.gp1:
  RESUME .gp2
  movaps xmm0, [ones + 4]
  PRINT "misaligned movaps ran", 10
.gp2:
  RESUME .gp3
  movups xmm0, [ones + 4]
  PRINT "movups ok", 10
.gp3:

  ; --- MMX aliasing seen through FXSAVE: TOP=0, tags valid, exponent all ones; EMMS empties
  fninit
  fld1
  fld1
  mov eax, 0x11223344
  movd mm3, eax
  fxsave [fxarea]
  movzx eax, word [fxarea + 2]         ; FSW (TOP)
  HEX eax
  movzx eax, byte [fxarea + 4]         ; abridged tags
  HEX eax
  HEX dword [fxarea + 32 + 3*16]
  emms
  fxsave [fxarea]
  movzx eax, byte [fxarea + 4]
  HEX eax
  PRINT 10
  ; FXRSTOR round trip of x87 and SSE state
  fninit
  fldpi
  movaps xmm5, [ones]
  fxsave [fxarea]
  fninit
  xorps xmm5, xmm5
  fxrstor [fxarea]
  fstp dword [scratch]
  HEX dword [scratch]
  movmskps eax, xmm5
  HEX eax
  PRINT 10

  PRINT "done", 10
  mov al, 0
  jmp exit

align 16
ones: dd 1.0, 1.0, 1.0, 1.0, 0, 0, 0, 0
mxcsr_default: dd 0x1f80
mxcsr_ze_unmasked: dd 0x1f80 & ~0x200
mxcsr_reserved: dd 0x11f80
scratch: dd 0, 0
align 16
fxarea: times 528 db 0
