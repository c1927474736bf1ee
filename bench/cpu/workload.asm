; The CPU benchmark guest: a multiboot kernel that runs an integer sieve
; that fits in cache, then a loop over a 32 MiB array. It marks the start
; and end of each phase by writing 1..4 to port 0x510 and ends with a write
; to isa-debug-exit (port 0xf4). Repetitions come from -DSIEVE_REPS and
; -DARRAY_REPS so runs of different lengths can be subtracted.
bits 32
org 0x100000

hdr:
  dd 0x1BADB002, 0x00010000, -(0x1BADB002 + 0x00010000)
  dd hdr, 0x100000, 0, 0, start

%ifndef SIEVE_REPS
%define SIEVE_REPS 200
%endif
%ifndef ARRAY_REPS
%define ARRAY_REPS 4
%endif

SIEVE_N   equ 8192
SIEVE     equ 0x200000
ARRAY     equ 0x1000000
ARRAY_N   equ (32 << 20) / 4

start:
  cli
  lgdt [gdt_desc]
  jmp 0x08:.flat
.flat:
  mov ax, 0x10
  mov ds, ax
  mov es, ax
  mov ss, ax
  mov esp, 0x90000
  mov dx, 0x510
  mov al, 1
  out dx, al
  ; ---- sieve of Eratosthenes over SIEVE_N bytes, SIEVE_REPS times
  mov ebp, SIEVE_REPS
.rep:
  test ebp, ebp
  jz .sieve_done
  mov edi, SIEVE
  mov ecx, SIEVE_N / 4
  mov eax, 0x01010101
  rep stosd
  xor ebx, ebx                ; prime count
  mov esi, 2
.outer:
  cmp esi, SIEVE_N
  jae .next_rep
  cmp byte [SIEVE + esi], 0
  je .not_prime
  inc ebx
  lea edx, [esi + esi]
.inner:
  cmp edx, SIEVE_N
  jae .not_prime
  mov byte [SIEVE + edx], 0
  add edx, esi
  jmp .inner
.not_prime:
  inc esi
  jmp .outer
.next_rep:
  dec ebp
  jmp .rep
.sieve_done:
  mov [primes], ebx
  mov dx, 0x510
  mov al, 2
  out dx, al
  ; ---- 32 MiB array: a[i] += i, ARRAY_REPS passes
  mov al, 3
  out dx, al
  mov ebp, ARRAY_REPS
.pass:
  test ebp, ebp
  jz .array_done
  xor ecx, ecx
  mov edi, ARRAY
.loop:
  add [edi + ecx*4], ecx
  inc ecx
  cmp ecx, ARRAY_N
  jb .loop
  dec ebp
  jmp .pass
.array_done:
  mov dx, 0x510
  mov al, 4
  out dx, al
  mov al, 0
%if SIEVE_REPS > 0
  cmp dword [primes], 1028    ; primes below 8192
  je .ok
  mov al, 1
.ok:
%endif
  out 0xf4, al
  cli
  hlt

align 8
gdt:
  dq 0
  dq 0x00cf9a000000ffff
  dq 0x00cf92000000ffff
gdt_desc:
  dw 23
  dd gdt
primes: dd 0
