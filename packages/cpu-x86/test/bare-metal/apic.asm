; The local APIC of one CPU: register read-back, self IPIs accepted by
; priority (IRR, ISR and PPR as handlers see them), the TPR holding classes
; back, nesting of a higher class inside a handler, software disable, the
; shorthands and logical destinations aimed at oneself, and the timer in
; one-shot, periodic and masked modes. Only what does not depend on how fast
; time runs is printed, so QEMU TCG and our machine must agree exactly.
%include "lib.inc"
%include "apic-lib.inc"

main:
  PRINT "apic", 10
  call apic_setup
  mov ecx, 0x1b
  rdmsr
  and eax, 0xfffff900               ; base, enable, BSP
  HEX eax
  HEX [APIC + A_VER]
  HEX [APIC + A_ID]
  HEX [APIC + A_SVR]
  PRINT 10
  ; Read-back of writable registers.
  APIC_W A_TIMER, 0x20033
  HEX [APIC + A_TIMER]
  APIC_W A_TIMER, 0x10033
  APIC_W A_ERROR, 0x100fe
  HEX [APIC + A_ERROR]
  APIC_W A_TDCR, 0xb
  HEX [APIC + A_TDCR]
  APIC_W A_LDR, 0x01000000
  HEX [APIC + A_LDR]
  APIC_W A_DFR, 0xffffffff
  HEX [APIC + A_DFR]
  APIC_W A_TPR, 0x35
  HEX [APIC + A_TPR]
  HEX [APIC + A_PPR]
  APIC_W A_TPR, 0
  PRINT 10

  ; --- self IPIs with IF=0 wait in the IRR; STI takes them highest first
  PRINT "self", 10
  SELF_IPI 0x51
  SELF_IPI 0x62
  SELF_IPI 0x53
  HEX [APIC + A_IRR + 0x20]         ; vectors 0x40..0x5f
  HEX [APIC + A_IRR + 0x30]         ; vectors 0x60..0x7f
  HEX [APIC + A_ISR + 0x30]
  HEX [APIC + A_PPR]
  PRINT 10
  sti
  WAIT_LOG 0, 3
  cli
  LOG 0
  HEX [APIC + A_IRR + 0x20]
  HEX [APIC + A_ISR + 0x20]
  PRINT 10

  ; --- the TPR holds back every class at or below its own
  PRINT "tpr", 10
  APIC_W A_TPR, 0x60
  sti
  SELF_IPI 0x55
  SELF_IPI 0x65
  SELF_IPI 0x76
  WAIT_LOG 0, 1
  nop
  nop
  cli
  LOG 0                             ; only 0x76
  HEX [APIC + A_IRR + 0x20]
  HEX [APIC + A_IRR + 0x30]
  HEX [APIC + A_PPR]
  PRINT 10
  sti
  APIC_W A_TPR, 0x50                ; lets 0x65 through
  nop
  nop
  APIC_W A_TPR, 0                   ; and then 0x55
  WAIT_LOG 0, 2
  cli
  LOG 0

  ; --- a higher class nests inside a handler; a lower one waits for its EOI
  PRINT "nest", 10
  mov dword [hooks + 0x52*4], nest_hook
  SELF_IPI 0x52
  sti
  WAIT_LOG 0, 3
  cli
  mov dword [hooks + 0x52*4], 0
  LOG 0
  HEX [nest_seen]
  PRINT 10

  ; --- software-disabled: requests wait in the IRR until the APIC is enabled again
  PRINT "swdis", 10
  APIC_W A_SVR, 0x0ff
  SELF_IPI 0x58
  sti
  mov ecx, 10000
.sw:
  loop .sw
  cli
  HEX [logn]
  HEX [APIC + A_IRR + 0x20]
  PRINT 10
  APIC_W A_SVR, 0x1ff
  sti
  WAIT_LOG 0, 1
  cli
  LOG 0

  ; --- shorthands and destinations that name this CPU
  PRINT "dest", 10
  APIC_W A_ICRHI, 0
  APIC_W A_ICRLO, 0x80000 | 0x61    ; all including self
  APIC_W A_ICRLO, 0xc0000 | 0x62    ; all excluding self: nobody here
  APIC_W A_ICRLO, 0x63              ; physical ID 0
  APIC_W A_ICRHI, 0x01000000
  APIC_W A_ICRLO, 0x800 | 0x64      ; logical 0x01 = our LDR
  APIC_W A_ICRHI, 0x02000000
  APIC_W A_ICRLO, 0x800 | 0x65      ; logical 0x02: nobody
  APIC_W A_ICRHI, 0xff000000
  APIC_W A_ICRLO, 0x66              ; physical broadcast
  APIC_W A_ICRHI, 0x05000000
  APIC_W A_ICRLO, 0x67              ; physical ID 5: nobody
  HEX [APIC + A_IRR + 0x30]
  PRINT 10
  sti
  WAIT_LOG 0, 4
  mov ecx, 10000
.d:
  loop .d
  cli
  LOG 0
  HEX [APIC + A_ICRLO]
  HEX [APIC + A_ICRHI]
  PRINT 10

  ; --- timer: one-shot
  PRINT "oneshot", 10
  APIC_W A_TDCR, 0xb                ; divide by 1
  APIC_W A_TIMER, 0x40
  APIC_W A_TICR, 20000000           ; 20 ms
  mov eax, [APIC + A_TCCR]
  xor edx, edx
  test eax, eax
  setnz dl
  cmp eax, 20000000
  setbe al
  and dl, al
  HEX edx                           ; 1: counting down from the initial count
  ; Check, then halt with interrupts enabled only from the HLT on (STI's
  ; shadow): an interrupt between the check and a plain HLT would leave it
  ; halted for good.
.o:
  cli
  cmp dword [logn], 1
  jae .o_done
  sti
  hlt
  jmp .o
.o_done:
  HEX [APIC + A_TCCR]               ; 0 once expired
  HEX [APIC + A_TICR]
  PRINT 10
  mov ecx, 200000
  sti
.o2:
  loop .o2                          ; no second interrupt
  cli
  LOG 0

  ; --- timer: periodic, five interrupts, the count reloads
  PRINT "periodic", 10
  mov dword [hooks + 0x41*4], periodic_hook
  APIC_W A_TIMER, 0x20041
  APIC_W A_TICR, 100000
  ; As above: the hook masks the timer at the fifth interrupt, so a fifth
  ; taken between the check and a plain HLT would leave it halted for good.
.p:
  cli
  cmp dword [logn], 5
  jae .p_done
  sti
  hlt
  jmp .p
.p_done:
  APIC_W A_TIMER, 0x30041           ; masked
  APIC_W A_TICR, 0
  mov dword [hooks + 0x41*4], 0
  HEX [logn]
  HEX [periodic_nonzero]
  HEX [APIC + A_TCCR]
  PRINT 10
  mov dword [logn], 0

  ; --- timer: masked one-shot counts to zero without an interrupt
  PRINT "masked", 10
  APIC_W A_TIMER, 0x10042
  APIC_W A_TICR, 3000
  sti
  mov ecx, 50000000
.m:
  cmp dword [APIC + A_TCCR], 0
  je .m0
  loop .m
.m0:
  mov ecx, 1000
.m1:
  loop .m1
  cli
  HEX [APIC + A_TCCR]
  HEX [logn]
  HEX [APIC + A_IRR + 0x20]
  PRINT 10

  PRINT "done", 10
  mov al, 0
  jmp exit

; Inside 0x52's handler (class 5 in service): 0x45 must wait, 0x72 nests.
nest_hook:
  SELF_IPI 0x45
  SELF_IPI 0x72
  sti
  mov ecx, 10000
.w:
  cmp dword [logn], 2
  jae .d
  loop .w
.d:
  cli
  mov eax, [logn]
  mov [nest_seen], eax
  ret

periodic_hook:
  ; Counts five interrupts and masks the timer at the fifth. A host that
  ; stalls QEMU for a whole period can still deliver a sixth (already in the
  ; IRR): it is not counted, so the output does not depend on host speed.
  cmp dword [logn], 5
  jbe .count
  dec dword [logn]
  ret
.count:
  cmp dword [APIC + A_TCCR], 0
  je .z
  inc dword [periodic_nonzero]
.z:
  cmp dword [logn], 5
  jb .done
  APIC_W A_TIMER, 0x30041
.done:
  ret

nest_seen: dd 0
periodic_nonzero: dd 0
