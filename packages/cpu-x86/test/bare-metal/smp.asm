; Two CPUs: the BSP starts the AP with INIT, INIT de-assert, SIPI (the MP
; start-up sequence); the AP runs real-mode code at the SIPI vector × 4096,
; switches to protected mode and sets up its APIC. Then IPIs by physical ID,
; shorthand, logical destination and broadcast, an NMI IPI, lowest priority,
; and a second INIT-SIPI that restarts the running AP. Only the BSP prints.
%include "lib.inc"
%include "apic-lib.inc"

TRAMP equ 0x8000                  ; SIPI vector 0x08
STARTS equ 0x7000                 ; bumped by the AP's real-mode code
CPUID_ID equ 0x7004               ; initial APIC ID the AP read with CPUID

%macro WAIT_MEM 2                 ; waits (bounded) until dword [%1] >= %2
  mov ecx, 50000000
%%w:
  cmp dword [%1], %2
  jae %%d
  pause
  loop %%w
  PRINT "timeout ", %str(%1), 10
%%d:
%endmacro

%macro SPIN 0
  mov ecx, 200000
%%s:
  pause
  loop %%s
%endmacro

main:
  PRINT "smp", 10
  call apic_setup
  mov ecx, 2
  mov eax, nmi_handler
  mov edx, 0x8e00
  call set_gate
  APIC_W A_LDR, 0x01000000
  mov esi, tramp
  mov edi, TRAMP
  mov ecx, tramp_end - tramp
  rep movsb
  mov dword [STARTS], 0
  ; --- INIT, INIT de-assert, SIPI
  APIC_W A_ICRHI, 0x01000000
  APIC_W A_ICRLO, 0x4500
  APIC_W A_ICRLO, 0x8500
  APIC_W A_ICRLO, 0x4608
  WAIT_MEM STARTS, 1
  WAIT_MEM ap_ready, 1
  APIC_W A_ICRLO, 0x4608            ; a second SIPI: the AP runs, so it is ignored
  SPIN
  HEX [STARTS]
  HEX [CPUID_ID]
  HEX [ap_id]
  HEX [ap_ready]
  PRINT 10

  ; --- fixed IPIs
  PRINT "ipi", 10
  APIC_W A_ICRHI, 0x01000000
  APIC_W A_ICRLO, 0x70              ; physical ID 1
  WAIT_LOG 1, 1
  APIC_W A_ICRLO, 0xc0000 | 0x71    ; all excluding self
  WAIT_LOG 1, 2
  APIC_W A_ICRLO, 0x80000 | 0x72    ; all including self
  WAIT_LOG 1, 3
  APIC_W A_ICRHI, 0x02000000
  APIC_W A_ICRLO, 0x800 | 0x73      ; logical 0x02: the AP
  WAIT_LOG 1, 4
  APIC_W A_ICRHI, 0x03000000
  APIC_W A_ICRLO, 0x800 | 0x74      ; logical 0x03: both
  WAIT_LOG 1, 5
  APIC_W A_ICRHI, 0xff000000
  APIC_W A_ICRLO, 0x75              ; physical broadcast
  WAIT_LOG 1, 6
  APIC_W A_ICRHI, 0x00000000
  APIC_W A_ICRLO, 0x76              ; physical ID 0: us only
  sti
  WAIT_LOG 0, 4
  SPIN
  cli
  LOG 0
  LOG 1
  ; Lowest priority to both while both are idle at TPR 0: equal arbitration
  ; priorities, and QEMU (which does not arbitrate) picks the first too.
  APIC_W A_ICRHI, 0x03000000
  APIC_W A_ICRLO, 0x900 | 0x77
  sti
  WAIT_LOG 0, 1
  SPIN
  cli
  LOG 0
  HEX [logn + 4]
  PRINT 10

  ; --- NMI IPI
  PRINT "nmi", 10
  APIC_W A_ICRHI, 0x01000000
  APIC_W A_ICRLO, 0x400
  WAIT_MEM nmi_count, 1
  SPIN
  HEX [nmi_count]
  PRINT 10

  ; --- INIT-SIPI again: the running AP is reset and starts over
  PRINT "restart", 10
  APIC_W A_ICRHI, 0x01000000
  APIC_W A_ICRLO, 0x4500
  APIC_W A_ICRLO, 0x8500
  APIC_W A_ICRLO, 0x4608
  WAIT_MEM STARTS, 2
  WAIT_MEM ap_ready, 2
  HEX [STARTS]
  HEX [ap_ready]
  APIC_W A_ICRHI, 0x01000000
  APIC_W A_ICRLO, 0x78
  WAIT_LOG 1, 1
  SPIN
  LOG 1
  PRINT "done", 10
  mov al, 0
  jmp exit

nmi_handler:
  lock inc dword [nmi_count]
  iret

; The AP in protected mode: its own stack, the shared IDT, an enabled APIC
; with logical ID 0x02, then HLT with interrupts on.
ap_pm:
  mov ax, 0x10
  mov ds, ax
  mov es, ax
  mov fs, ax
  mov gs, ax
  mov ss, ax
  mov esp, ap_stack_top
  lidt [idt_desc]
  mov eax, [APIC + A_ID]
  mov [ap_id], eax
  APIC_W A_SVR, 0x1ff
  APIC_W A_LINT0, 0x10700
  APIC_W A_DFR, 0xffffffff
  APIC_W A_LDR, 0x02000000
  APIC_W A_TPR, 0
  lock inc dword [ap_ready]
  sti
.idle:
  hlt
  jmp .idle

bits 16
tramp:
  cli
  xor ax, ax
  mov ds, ax
  lock inc dword [STARTS]
  mov eax, 1
  cpuid
  shr ebx, 24
  mov [CPUID_ID], ebx
  o32 lgdt [TRAMP + tramp_gdt - tramp]
  mov eax, cr0
  or al, 1
  mov cr0, eax
  jmp dword 0x08:ap_pm
tramp_gdt:
  dw gdt_end - gdt - 1
  dd gdt
tramp_end:
bits 32

align 4
ap_ready: dd 0
ap_id: dd 0
nmi_count: dd 0
  times 1024 db 0
ap_stack_top:
