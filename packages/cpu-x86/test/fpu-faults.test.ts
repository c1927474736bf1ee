// When the FPU and SIMD units fault, compared with the real CPU: each
// scenario is a tiny static i386 program that prints marks (and status
// words) as it goes; natively, Linux turns #MF and #XM into SIGFPE, #GP into
// SIGSEGV and #UD into SIGILL, and our user-mode runner reports the signal
// Linux would send. Output and signal must agree. This is where pending x87
// exceptions are checked (which instructions wait, FLDCW arming a flag,
// FNSTENV masking), unmasked SIMD exceptions (#XM, destination unchanged),
// and the #GP cases (alignment, reserved MXCSR bits).
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { expect, it } from "vitest";
import { describeWithTools, tempDir } from "@typevisor/test-support";
import { buildElf } from "./diff/differential.js";
import { runUserElf } from "./harness/user-mode.js";

const PRELUDE = `
bits 32
global _start
%macro MARK 1
  push eax
  push ebx
  push ecx
  push edx
  mov byte [markbuf], %1
  mov eax, 4
  mov ebx, 1
  mov ecx, markbuf
  mov edx, 1
  int 0x80
  pop edx
  pop ecx
  pop ebx
  pop eax
%endmacro
%macro SHOWSW 0   ; writes FSW (FNSTSW, non-waiting) as two bytes
  push eax
  fnstsw [swbuf]
  mov eax, 4
  mov ebx, 1
  mov ecx, swbuf
  mov edx, 2
  int 0x80
  pop eax
%endmacro
%macro SHOW 2     ; writes %2 bytes at %1
  mov eax, 4
  mov ebx, 1
  mov ecx, %1
  mov edx, %2
  int 0x80
%endmacro
%macro UNMASK_ZE 0
  fldcw [cw_ze]
%endmacro
%macro PEND_ZE 0  ; leaves an unmasked ZE pending
  UNMASK_ZE
  fld1
  fldz
  fdivp st1, st0
%endmacro
section .data
align 16
cw_ze: dw 0x37b
cw_all: dw 0x37f
cw_pm: dw 0x35f
ones: dd 1.0, 1.0, 1.0, 1.0, 0, 0, 0, 0
zeros: dd 0, 0, 0, 0
nan: dd 0x7fc00000, 0, 0, 0
tiny: dd 0x00000001, 0, 0, 0
big: dq 1.0e300
mx_ze: dd 0x1f80 & ~0x200
mx_ie: dd 0x1f80 & ~0x80
mx_res: dd 0x11f80
mx_daz: dd 0x1fc0
section .bss
alignb 16
markbuf: resb 4
swbuf: resb 4
env: resb 128
fx: resb 1024
section .text
_start:
  fninit
`;
const EXIT = `
  MARK 'Z'
  mov eax, 1
  xor ebx, ebx
  int 0x80
`;

/** Scenario name and body (between the prelude and the exit). */
const SCENARIOS: [string, string][] = [
  ["fwait raises a pending exception", "PEND_ZE\n MARK 'a'\n SHOWSW\n fwait\n MARK 'b'"],
  ["a waiting x87 instruction raises it", "PEND_ZE\n MARK 'a'\n fld1\n MARK 'b'"],
  ["FNSTSW, FNSTCW do not wait", "PEND_ZE\n fnstsw ax\n fnstcw [env]\n MARK 'a'\n fwait\n MARK 'b'"],
  ["FNSTENV stores, masks, and leaves the exception pending", "PEND_ZE\n fnstenv [env]\n SHOW env, 12\n SHOWSW\n fwait\n MARK 'b'"],
  ["FNSAVE reinitializes: nothing pending afterwards", "PEND_ZE\n fnsave [env]\n SHOW env, 12\n fwait\n fld1\n MARK 'b'"],
  ["FNCLEX clears the pending exception", "PEND_ZE\n fnclex\n SHOWSW\n fwait\n MARK 'b'"],
  ["FNINIT clears it", "PEND_ZE\n fninit\n fwait\n MARK 'b'"],
  ["FLDCW waits", "PEND_ZE\n MARK 'a'\n fldcw [cw_all]\n MARK 'b'"],
  ["FLDCW unmasking a set flag arms it", "fld1\n fldz\n fdivp st1, st0\n SHOWSW\n fldcw [cw_ze]\n SHOWSW\n MARK 'a'\n fwait\n MARK 'b'"],
  ["FLDENV waits", "fnstenv [env]\n PEND_ZE\n MARK 'a'\n fldenv [env]\n MARK 'b'"],
  ["FLDENV loading an unmasked flag arms it", "PEND_ZE\n fnstenv [env]\n fninit\n or word [env], 0\n and word [env], 0xfffb\n fldenv [env]\n SHOWSW\n MARK 'a'\n fwait\n MARK 'b'"],
  ["FRSTOR waits", "fnsave [env]\n PEND_ZE\n MARK 'a'\n frstor [env]\n MARK 'b'"],
  ["FXSAVE and FXRSTOR do not wait", "PEND_ZE\n fxsave [fx]\n fxrstor [fx]\n SHOWSW\n MARK 'a'\n fwait\n MARK 'b'"],
  ["FXRSTOR of a pending state arms it", "PEND_ZE\n fxsave [fx]\n fninit\n fxrstor [fx]\n MARK 'a'\n fld1\n MARK 'b'"],
  ["MMX instructions wait", "PEND_ZE\n MARK 'a'\n paddb mm0, mm1\n MARK 'b'"],
  ["EMMS waits", "PEND_ZE\n MARK 'a'\n emms\n MARK 'b'"],
  ["SSE instructions do not wait for x87", "PEND_ZE\n addps xmm0, xmm1\n movaps xmm2, xmm0\n MARK 'a'\n fwait\n MARK 'b'"],
  ["unmasked precision: result written, fault later", "fldcw [cw_pm]\n fld1\n fld dword [tiny]\n faddp st1, st0\n SHOWSW\n fnsave [env]\n SHOW env+28, 10\n frstor [env]\n MARK 'a'\n fwait"],
  ["unmasked ZE: destination and stack unchanged", "UNMASK_ZE\n fld1\n fldz\n fdiv st1, st0\n fnsave [env]\n SHOW env, 4\n SHOW env+28, 20\n MARK 'a'"],
  ["unmasked IE on a memory store: nothing stored", "fldcw [cw_ze]\n fldz\n fldz\n fdivp st1, st0\n fnclex\n fldcw [cw_all]\n fld dword [nan]\n and word [env], 0\n fldcw [cw_pm]\n fistp dword [env]\n SHOWSW\n SHOW env, 4\n fnclex\n MARK 'a'"],
  ["FLD of an SNaN with IE unmasked: nothing pushed", "mov dword [env], 0x7f800001\n mov word [env+8], 0x37e\n fldcw [env+8]\n fld dword [env]\n SHOWSW\n fnclex\n MARK 'a'"],
  ["unmasked SIMD exception: #XM (SIGFPE)", "ldmxcsr [mx_ze]\n movaps xmm0, [ones]\n xorps xmm1, xmm1\n MARK 'a'\n divps xmm0, xmm1\n MARK 'b'"],
  ["unmasked SIMD invalid on conversion", "ldmxcsr [mx_ie]\n movss xmm0, [nan]\n MARK 'a'\n cvtss2si eax, xmm0\n MARK 'b'"],
  ["masked SIMD exceptions only set flags", "movaps xmm0, [ones]\n xorps xmm1, xmm1\n divps xmm0, xmm1\n stmxcsr [env]\n SHOW env, 4\n movaps [env], xmm0\n SHOW env, 16"],
  ["DAZ: denormal inputs are zeros", "ldmxcsr [mx_daz]\n movss xmm0, [tiny]\n movss xmm1, [ones]\n mulss xmm1, xmm0\n movss [env], xmm1\n stmxcsr [env+4]\n SHOW env, 8"],
  ["misaligned MOVAPS: #GP", "MARK 'a'\n movaps xmm0, [ones+4]\n MARK 'b'"],
  ["misaligned packed memory operand: #GP", "MARK 'a'\n addps xmm0, [ones+4]\n MARK 'b'"],
  ["misaligned scalar and MOVUPS are fine", "addss xmm0, [ones+4]\n movups xmm1, [ones+4]\n movsd xmm2, [ones+4]\n MARK 'a'"],
  ["misaligned FXSAVE: #GP", "MARK 'a'\n fxsave [fx+8]\n MARK 'b'"],
  ["misaligned MOVDQA: #GP", "MARK 'a'\n movdqa xmm0, [ones+8]\n MARK 'b'"],
  ["reserved MXCSR bits: #GP", "MARK 'a'\n ldmxcsr [mx_res]\n MARK 'b'"],
  ["FXRSTOR with reserved MXCSR bits: #GP", "fxsave [fx]\n or dword [fx+24], 0x10000\n MARK 'a'\n fxrstor [fx]\n MARK 'b'"],
];

describeWithTools(["nasm", "ld"], "FPU and SIMD faults agree with the real CPU", () => {
  it(`${SCENARIOS.length} scenarios`, () => {
    const dir = tempDir("tv-fpu-faults-");
    const failures: string[] = [];
    try {
      SCENARIOS.forEach(([name, body], i) => {
        const exe = buildElf(dir.path, `s${i}`, PRELUDE + body.replace(/\n /g, "\n  ") + EXIT);
        const native = spawnSync(exe, [], { maxBuffer: 1 << 20 });
        const ours = runUserElf(readFileSync(exe), 1_000_000, { fpu: true });
        const nOut = Buffer.from(native.stdout).toString("hex");
        const oOut = Buffer.from(ours.stdout).toString("hex");
        const nSig = native.signal ?? `exit ${native.status}`;
        const oSig = ours.signal ?? `exit ${ours.exitCode}`;
        if (nOut !== oOut || nSig !== oSig) failures.push(`${name}: native ${nOut} ${nSig}, ours ${oOut} ${oSig}`);
      });
    } finally {
      dir.remove();
    }
    expect(failures, failures.join("\n")).toEqual([]);
  }, 60_000);
});
