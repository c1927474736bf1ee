; A multiboot program for the whole PC: it runs on typevisor (x86Cpu +
; pcPlatform, through `typevisor run`) and on QEMU TCG, and both must print
; the same on the debug console. Includes the cpu-x86 bare-metal start-up.
;
; PC platform: 8259 through LINT0 (virtual wire), LINT0 masking, the I/O
; APIC delivering the PIT edge-triggered and the RTC level-triggered (remote
; IRR, TMR, EOI broadcast, re-delivery while the line is still asserted).
%include "lib.inc"
%include "apic-lib.inc"
IOAPIC equ 0xfec00000

%macro RTE_W 2          ; pin, low dword (high dword 0: APIC ID 0)
  mov dword [IOAPIC], 0x10 + 2*(%1) + 1
  mov dword [IOAPIC + 0x10], 0
  mov dword [IOAPIC], 0x10 + 2*(%1)
  mov dword [IOAPIC + 0x10], %2
%endmacro

%macro CMOS_W 2
  mov al, %1
  out 0x70, al
  mov al, %2
  out 0x71, al
%endmacro

main:
  PRINT "pc", 10
  call apic_setup
  ; 8259: vectors 0x20/0x28, only IRQ 0 unmasked
  mov al, 0x11
  out 0x20, al
  out 0xa0, al
  mov al, 0x20
  out 0x21, al
  mov al, 0x28
  out 0xa1, al
  mov al, 4
  out 0x21, al
  mov al, 2
  out 0xa1, al
  mov al, 1
  out 0x21, al
  out 0xa1, al
  mov al, 0xfe
  out 0x21, al
  mov al, 0xff
  out 0xa1, al
  ; PIT channel 0: rate generator, 1193 (about 1 kHz)
  mov al, 0x34
  out 0x43, al
  mov ax, 1193
  out 0x40, al
  mov al, ah
  out 0x40, al

  PRINT "virtual wire", 10
  mov dword [hooks + 0x20*4], pic_hook
  APIC_W A_LINT0, 0x700
  sti
  WAIT_LOG_CLI 0, 3
  LOG 0

  PRINT "lint0 masked", 10
  APIC_W A_LINT0, 0x10700
  mov al, 0xfe
  out 0x21, al
  sti
  mov ecx, 3000000
.m:
  loop .m
  cli
  HEX [logn]
  PRINT 10
  mov al, 0xff
  out 0x21, al

  PRINT "ioapic edge", 10
  mov dword [hooks + 0x40*4], pit_hook
  RTE_W 2, 0x40
  sti
  WAIT_LOG_CLI 0, 3
  LOG 0
  HEX [tmr_seen]
  PRINT 10

  PRINT "ioapic level", 10
  mov dword [hooks + 0x48*4], rtc_hook
  mov dword [hooks + 0x49*4], rtc_hook_eoi_first
  RTE_W 8, 0x8048                   ; level, active high
  CMOS_W 0x0a, 0x26                 ; 1024 Hz
  mov al, 0x0c
  out 0x70, al
  in al, 0x71                       ; clear pending flags
  CMOS_W 0x0b, 0x42                 ; periodic interrupt enable, 24-hour
  sti
  WAIT_LOG_CLI 0, 3
  LOG 0
  HEX [tmr_seen]
  HEX [rirr_seen]
  mov dword [IOAPIC], 0x10 + 16
  mov eax, [IOAPIC + 0x10]
  HEX eax                           ; remote IRR clear, masked
  PRINT 10

  PRINT "eoi before deassert", 10
  mov dword [rtc_count], 0
  RTE_W 8, 0x8049
  mov al, 0x0c
  out 0x70, al
  in al, 0x71
  CMOS_W 0x0b, 0x42
  sti
  WAIT_LOG 0, 2
  mov ecx, 100000
.e:
  loop .e
  cli
  LOG 0
  HEX [c_first]
  HEX [c_second]
  PRINT 10
  PRINT "done", 10
  mov al, 0
  jmp exit

pic_hook:                           ; ExtINT: the 8259 needs its own EOI
  mov al, 0x20
  out 0x20, al
  cmp dword [logn], 3
  jb .r
  mov al, 0xff
  out 0x21, al
.r:
  ret

pit_hook:
  mov eax, [APIC + A_TMR + 0x20]
  mov [tmr_seen], eax
  cmp dword [logn], 3
  jb .r
  RTE_W 2, 0x10040                  ; masked
.r:
  ret

rtc_hook:
  mov eax, [APIC + A_TMR + 0x20]
  mov [tmr_seen], eax
  mov dword [IOAPIC], 0x10 + 16
  mov eax, [IOAPIC + 0x10]
  and eax, 0x4000
  mov [rirr_seen], eax
  mov al, 0x0c
  out 0x70, al
  in al, 0x71                       ; deasserts the line
  cmp dword [logn], 3
  jb .r
  CMOS_W 0x0b, 0x02
  RTE_W 8, 0x18048
.r:
  ret

rtc_hook_eoi_first:
  APIC_W A_EOI, 0                   ; the line is still high: the I/O APIC sends again
  mov al, 0x0c
  out 0x70, al
  in al, 0x71
  and eax, 0x80
  inc dword [rtc_count]
  cmp dword [rtc_count], 1
  jne .second
  mov [c_first], eax
  CMOS_W 0x0b, 0x02                 ; no more periodic interrupts
  ret
.second:
  mov [c_second], eax
  ret

tmr_seen: dd 0
rirr_seen: dd 0
rtc_count: dd 0
c_first: dd -1
c_second: dd -1
