// Seeded random instruction cases for the differential test against the
// real CPU. Each case: initialize a 64-byte memory window, EFLAGS and the
// general registers from a table, run one instruction (or a short
// sequence), then store registers, EFLAGS and the window into an output
// record. The whole batch is one nasm program that writes the records to
// stdout; the same ELF runs natively and on our vCPU.

/** One generated case. */
export interface DiffCase {
  /** Assembly of the instruction(s) under test. */
  asm: string;
  /** EFLAGS bits the SDM leaves undefined after this instruction (not compared). */
  undefFlags: number;
  /** Register indices whose result is undefined (not compared). */
  undefRegs?: number[];
  /** Initial EAX ECX EDX EBX (ESP ignored) EBP ESI EDI. */
  regs: number[];
  /** Initial EFLAGS (arithmetic flags and DF). */
  flags: number;
  /** Initial memory window (64 bytes). */
  window: Uint8Array;
}

const CF = 1, PF = 4, AF = 0x10, ZF = 0x40, SF = 0x80, OF = 0x800;
/** Size of one output record: 9 dwords (8 registers + EFLAGS) and the 64-byte window. */
export const RECORD = 36 + 64;
/** Offset of the memory window the cases address. */
const WIN = "win";

type Rng = () => number;

const R32 = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"];
const R16 = ["ax", "cx", "dx", "bx", "sp", "bp", "si", "di"];
const R8 = ["al", "cl", "dl", "bl", "ah", "ch", "dh", "bh"];
const SZ = ["byte", "word", "dword"];

function pick<T>(rng: Rng, a: readonly T[]): T {
  return a[rng() % a.length];
}

const INTERESTING = [0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff, 0xfffffffe, 0x80000001, 9, 0x99, 0x0f, 0x10];

function value(rng: Rng): number {
  const r = rng() % 8;
  if (r < 3) return pick(rng, INTERESTING) | 0;
  if (r < 4) return (rng() & 0xff) | 0;
  if (r < 5) return (rng() & 0xffff) | 0;
  return rng() | 0;
}

/** A general register (not ESP) of size s. */
function reg(rng: Rng, s: number): [string, number] {
  let i: number;
  do i = rng() % 8;
  while (s > 0 ? i === 4 : false);
  if (s === 0) return [R8[i], i & 3];
  return [s === 1 ? R16[i] : R32[i], i];
}

function mem(rng: Rng, s: number): string {
  const n = 1 << s;
  const off = rng() % (64 - n + 1);
  return `${SZ[s]} [${WIN}+${off}]`;
}

function imm(rng: Rng, s: number): number {
  const v = value(rng);
  return s === 0 ? v & 0xff : s === 1 ? v & 0xffff : v >>> 0;
}

function hex(v: number): string {
  return "0x" + (v >>> 0).toString(16);
}

/** Generates `count` cases from `seed`. */
export function generateCases(rng: Rng, count: number): DiffCase[] {
  const out: DiffCase[] = [];
  for (let i = 0; i < count; i++) out.push(oneCase(rng));
  return out;
}

function baseCase(rng: Rng): DiffCase {
  const regs = Array.from({ length: 8 }, () => value(rng));
  const window = new Uint8Array(64);
  for (let i = 0; i < 64; i++) window[i] = rng() % 4 === 0 ? pick(rng, [0, 0xff, 0x80, 0x7f, 0x99, 0x09]) : rng() & 0xff;
  const flags = (rng() & (CF | PF | AF | ZF | SF | OF)) | 2;
  return { asm: "", undefFlags: 0, regs, flags, window };
}

const ALU = ["add", "or", "adc", "sbb", "and", "sub", "xor", "cmp"];
const SHIFTS = ["rol", "ror", "rcl", "rcr", "shl", "shr", "sar"];
const CC = ["o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g"];

function operandPair(rng: Rng, s: number): [string, string] {
  const form = rng() % 5;
  const [d] = reg(rng, s);
  const [r] = reg(rng, s);
  switch (form) {
    case 0:
      return [d, r];
    case 1:
      return [d, hex(imm(rng, s))];
    case 2:
      return [d, mem(rng, s)];
    case 3:
      return [mem(rng, s), r];
    default:
      return [mem(rng, s), hex(imm(rng, s))];
  }
}

function oneCase(rng: Rng): DiffCase {
  const c = baseCase(rng);
  const s = rng() % 3;
  const kind = rng() % 33;
  switch (kind) {
    case 0:
    case 1:
    case 2:
    case 3: {
      const op = pick(rng, ALU);
      const [a, b] = operandPair(rng, s);
      c.asm = `${op} ${a}, ${b}`;
      if (op === "and" || op === "or" || op === "xor") c.undefFlags = AF;
      if (s > 0 && rng() % 4 === 0 && !b.startsWith("e") && !b.includes("[")) {
        // the sign-extended imm8 form (83 /r)
        c.asm = `${op} ${a}, byte ${(rng() & 0xff) - 128}`;
        if (a.startsWith("byte")) c.asm = `${op} ${a}, ${rng() & 0xff}`;
      }
      return c;
    }
    case 4: {
      const op = pick(rng, ["inc", "dec", "neg", "not"]);
      c.asm = `${op} ${rng() % 2 ? reg(rng, s)[0] : mem(rng, s)}`;
      return c;
    }
    case 5: {
      const [a, b] = operandPair(rng, s);
      c.asm = a.includes("[") && !b.startsWith("0x") ? `test ${a}, ${b}` : `test ${a}, ${b}`;
      c.undefFlags = AF;
      return c;
    }
    case 6:
    case 7:
    case 8: {
      const op = pick(rng, SHIFTS);
      const dst = rng() % 2 ? reg(rng, s)[0] : mem(rng, s);
      const bits = 8 << s;
      const form = rng() % 3;
      let count: number;
      if (form === 0) {
        count = 1;
        c.asm = `${op} ${dst}, 1`;
      } else if (form === 1) {
        count = rng() % 4 === 0 ? rng() & 0xff : rng() % (bits + 2);
        c.asm = `${op} ${dst}, ${count}`;
      } else {
        count = rng() % 3 === 0 ? rng() & 0xff : rng() % (bits + 2);
        c.regs[1] = (c.regs[1] & ~0xff) | count;
        if (dst === "cl" || dst === "ch" || dst === "cx" || dst === "ecx") return oneCase(rng);
        c.asm = `${op} ${dst}, cl`;
      }
      c.undefFlags = shiftUndef(op, count & 31, bits);
      return c;
    }
    case 9: {
      // SHLD/SHRD
      const sz = 1 + (rng() % 2);
      const op = rng() % 2 ? "shld" : "shrd";
      const dst = rng() % 2 ? reg(rng, sz)[0] : mem(rng, sz);
      const [src] = reg(rng, sz);
      let count = rng() % 33;
      if (sz === 1) count %= 17;
      if (rng() % 2) c.asm = `${op} ${dst}, ${src}, ${count}`;
      else {
        if (src.includes("c") || dst.includes("cx") || dst === "cl") return oneCase(rng);
        c.regs[1] = (c.regs[1] & ~0xff) | count;
        c.asm = `${op} ${dst}, ${src}, cl`;
      }
      const cnt = count & 31;
      c.undefFlags = cnt === 0 ? 0 : cnt === 1 ? AF : AF | OF;
      return c;
    }
    case 10: {
      const op = pick(rng, ["mul", "imul"]);
      c.asm = `${op} ${rng() % 2 ? reg(rng, s)[0] : mem(rng, s)}`;
      c.undefFlags = SF | ZF | AF | PF;
      return c;
    }
    case 11: {
      const sz = 1 + (rng() % 2);
      const [d] = reg(rng, sz);
      const src = rng() % 2 ? reg(rng, sz)[0] : mem(rng, sz);
      c.asm = rng() % 2 ? `imul ${d}, ${src}` : `imul ${d}, ${src}, ${rng() % 2 ? (rng() & 0xff) - 128 : hex(imm(rng, sz))}`;
      c.undefFlags = SF | ZF | AF | PF;
      return c;
    }
    case 12: {
      // DIV/IDIV with a divisor and dividend chosen so the quotient fits (no #DE natively).
      const signed = rng() % 2 === 1;
      const bits = 8 << s;
      let d = value(rng) & ((1 << bits) - 1 || -1);
      if (s === 2) d = value(rng) | 0;
      if ((d & (s === 2 ? -1 : (1 << bits) - 1)) === 0) d = 3;
      const divisor = s === 2 ? d : signed ? (d << (32 - bits)) >> (32 - bits) : d & ((1 << bits) - 1);
      // Quotient q and remainder r with |r| < |divisor|; dividend = q*divisor + r.
      const qmax = signed ? 2 ** (bits - 1) - 1 : 2 ** bits - 1;
      const q = (rng() % 2 ? rng() : rng() % 1000) % (qmax + 1);
      const qs = signed && rng() % 2 ? -q : q;
      const absd = Math.abs(s === 2 && !signed ? divisor >>> 0 : divisor);
      let r = absd > 1 ? (rng() >>> 0) % absd : 0;
      const dividendSign = signed ? Math.sign(qs * divisor) || 1 : 1;
      if (signed && dividendSign < 0) r = -r;
      const dv = s === 2 && !signed ? divisor >>> 0 : divisor;
      const dividend = BigInt(qs) * BigInt(dv) + BigInt(r);
      const m = BigInt.asUintN(bits * 2, dividend);
      if (s === 0) c.regs[0] = (c.regs[0] & ~0xffff) | Number(m & 0xffffn);
      else if (s === 1) {
        c.regs[0] = (c.regs[0] & ~0xffff) | Number(m & 0xffffn);
        c.regs[2] = (c.regs[2] & ~0xffff) | Number((m >> 16n) & 0xffffn);
      } else {
        c.regs[0] = Number(m & 0xffffffffn) | 0;
        c.regs[2] = Number((m >> 32n) & 0xffffffffn) | 0;
      }
      // The divisor lives in the memory window or in EBX/ECX/ESI.
      const op = signed ? "idiv" : "div";
      if (rng() % 2) {
        const off = 8;
        for (let k = 0; k < 1 << s; k++) c.window[off + k] = (divisor >>> (8 * k)) & 0xff;
        c.asm = `${op} ${SZ[s]} [${WIN}+${off}]`;
      } else {
        const idx = pick(rng, s === 0 ? [1, 3] : [1, 3, 6]);
        c.regs[idx] = s === 0 ? (c.regs[idx] & ~0xff) | (divisor & 0xff) : s === 1 ? (c.regs[idx] & ~0xffff) | (divisor & 0xffff) : divisor;
        c.asm = `${op} ${s === 0 ? R8[idx] : s === 1 ? R16[idx] : R32[idx]}`;
      }
      c.undefFlags = CF | PF | AF | ZF | SF | OF;
      return c;
    }
    case 13: {
      const op = pick(rng, ["daa", "das", "aaa", "aas", "aam", "aad"]);
      c.regs[0] = rng() % 2 ? pick(rng, [0x99, 0x9a, 0x0a, 0xf9, 0xfa, 0x00, 0x06, 0x60, 0x66]) : rng() & 0xffff;
      if (op === "aam") c.asm = `aam ${1 + (rng() % 255)}`;
      else if (op === "aad") c.asm = `aad ${rng() & 0xff}`;
      else c.asm = op;
      c.undefFlags = op === "daa" || op === "das" ? OF : op === "aaa" || op === "aas" ? OF | SF | ZF | PF : OF | AF | CF;
      return c;
    }
    case 14: {
      // BT/BTS/BTR/BTC
      const sz = 1 + (rng() % 2);
      const op = pick(rng, ["bt", "bts", "btr", "btc"]);
      const form = rng() % 3;
      if (form === 0) c.asm = `${op} ${reg(rng, sz)[0]}, ${rng() & 0xff}`;
      else if (form === 1) c.asm = `${op} ${mem(rng, sz)}, ${rng() & 0xff}`;
      else {
        // A register bit offset on memory: keep it inside the window (-128..+255 bits around offset 24).
        const [r, idx] = reg(rng, sz);
        if (r.startsWith("e") ? false : false) return oneCase(rng);
        const bit = (rng() % 384) - 128 - 64;
        c.regs[idx] = sz === 1 ? (c.regs[idx] & ~0xffff) | (bit & 0xffff) : bit;
        if (rng() % 2) c.asm = `${op} ${SZ[sz]} [${WIN}+32], ${r}`;
        else {
          const [d] = reg(rng, sz);
          c.asm = `${op} ${d}, ${r}`;
        }
        if (Math.abs(bit) > 200) return oneCase(rng);
        if (sz === 2 && bit < -224) return oneCase(rng);
      }
      c.undefFlags = OF | SF | AF | PF;
      return c;
    }
    case 15: {
      const sz = 1 + (rng() % 2);
      const op = rng() % 2 ? "bsf" : "bsr";
      const src = rng() % 2 ? reg(rng, sz)[0] : mem(rng, sz);
      c.asm = `${op} ${reg(rng, sz)[0]}, ${src}`;
      c.undefFlags = CF | OF | SF | AF | PF;
      return c;
    }
    case 16: {
      const op = pick(rng, ["cmpxchg", "xadd", "xchg"]);
      const dst = rng() % 2 ? reg(rng, s)[0] : mem(rng, s);
      c.asm = `${rng() % 4 === 0 && dst.includes("[") ? "lock " : ""}${op} ${dst}, ${reg(rng, s)[0]}`;
      if (rng() % 3 === 0 && op === "cmpxchg") {
        // make the comparison succeed sometimes
        c.asm = `mov ${s === 0 ? "al" : s === 1 ? "ax" : "eax"}, ${dst}\n  ${c.asm}`;
      }
      return c;
    }
    case 17: {
      if (rng() % 2) {
        c.window.set(new Uint8Array(new Int32Array([c.regs[0], c.regs[2]]).buffer), 16);
      }
      c.asm = `cmpxchg8b qword [${WIN}+16]`;
      return c;
    }
    case 18: {
      const cc = pick(rng, CC);
      const sz = 1 + (rng() % 2);
      const f = rng() % 3;
      if (f === 0) c.asm = `cmov${cc} ${reg(rng, sz)[0]}, ${rng() % 2 ? reg(rng, sz)[0] : mem(rng, sz)}`;
      else if (f === 1) c.asm = `set${cc} ${rng() % 2 ? reg(rng, 0)[0] : mem(rng, 0)}`;
      else c.asm = `j${cc} short .t${c.regs[0] & 0xffff}_${(rng() & 0xffff).toString(16)}`.replace(/.t(\w+)$/, (m) => m) ;
      if (f === 2) {
        const label = `.L${(rng() >>> 0).toString(16)}${rng() % 1000}`;
        c.asm = `j${cc} ${label}\n  mov eax, 0x1234\n${label}:`;
      }
      return c;
    }
    case 19: {
      const f = rng() % 8;
      const sz = 1 + (rng() % 2);
      if (f === 0) c.asm = `movzx ${reg(rng, sz)[0]}, ${rng() % 2 ? reg(rng, 0)[0] : mem(rng, 0)}`;
      else if (f === 1) c.asm = `movsx ${reg(rng, sz)[0]}, ${rng() % 2 ? reg(rng, 0)[0] : mem(rng, 0)}`;
      else if (f === 2) c.asm = `movzx ${reg(rng, 2)[0]}, ${rng() % 2 ? reg(rng, 1)[0] : mem(rng, 1)}`;
      else if (f === 3) c.asm = `movsx ${reg(rng, 2)[0]}, ${rng() % 2 ? reg(rng, 1)[0] : mem(rng, 1)}`;
      else if (f === 4) c.asm = pick(rng, ["cbw", "cwde", "cwd", "cdq", "lahf", "sahf", "cmc", "clc", "stc", "db 0xd6 ; salc"]);
      else if (f === 5) c.asm = `bswap ${reg(rng, 2)[0]}`;
      else if (f === 6) {
        // LEA with SIB forms.
        const [b] = reg(rng, 2);
        const [x] = reg(rng, 2);
        c.asm = `lea ${reg(rng, sz)[0]}, [${b}+${x}*${pick(rng, [1, 2, 4, 8])}+${(rng() & 0xffff) - 0x8000}]`;
      } else {
        // A SIB memory operand through a small index register.
        c.regs[7] = rng() % 8;
        c.asm = `${pick(rng, ALU)} ${reg(rng, s)[0]}, ${SZ[s]} [${WIN}+edi*${pick(rng, [1, 2, 4])}+${rng() % 24}]`;
        if (c.asm.startsWith("and") || c.asm.startsWith("or") || c.asm.startsWith("xor")) c.undefFlags = AF;
        if (/(edi|di|dil)\b/.test(c.asm.split(",")[0])) return oneCase(rng);
      }
      return c;
    }
    case 20:
    case 21: {
      // String instructions with REP prefixes and overrides.
      const base = pick(rng, ["movs", "cmps", "stos", "lods", "scas"]);
      const suffix = pick(rng, ["b", "w", "d"]);
      const df = rng() % 3 === 0;
      const n = rng() % 6;
      c.regs[1] = n;
      c.regs[6] = 0; // set below relative to the window
      c.flags = (c.flags & ~0x400) | (df ? 0x400 : 0);
      const rep = base === "cmps" || base === "scas" ? pick(rng, ["", "repe ", "repne "]) : pick(rng, ["", "rep "]);
      const ovr = base === "movs" || base === "cmps" || base === "lods" ? pick(rng, ["", "", "es ", "ss ", "ds "]) : "";
      const srcOff = df ? 20 : 0;
      // Now and then a MOVS whose destination starts just past its source: element by element it repeats a pattern.
      const dstOff = df ? 52 : base === "movs" && rng() % 3 === 0 ? 1 + (rng() % 4) : 32;
      c.asm = `mov esi, ${WIN}+${srcOff}\n  mov edi, ${WIN}+${dstOff}\n  ${ovr}${rep}${base}${suffix}`;
      if (base === "cmps" && rng() % 2) c.window.copyWithin(32, 0, 16);
      if (base === "scas" && rng() % 2) c.regs[0] = c.window[dstOff] | (c.window[dstOff + 1] << 8);
      return c;
    }
    case 22: {
      // Stack operations on a known stack.
      const seq = pick(rng, [
        "push eax\n  pop ebx",
        "push word 0x1234\n  pop cx",
        "pushad\n  popad",
        "pushaw\n  popaw",
        "pusha\n  mov eax, [esp+12]\n  popa",
        "push dword [win+4]\n  pop dword [win+8]",
        "push esp\n  pop eax",
        "pop dword [esp]\n  push eax",
        "push byte -3\n  pop edx",
        "pushfd\n  pop eax",
        "mov ebp, esp\n  enter 16, 0\n  mov eax, esp\n  leave",
        "mov ebp, esp\n  enter 8, 3\n  mov eax, [esp]\n  mov ebx, [esp+4]\n  leave",
        "mov ebp, esp\n  enter 4, 1\n  leave",
        "push ax\n  pop word [win+2]",
        "mov eax, ds\n  mov ebx, cs\n  mov ecx, ss",
        "push ds\n  pop es\n  mov edx, es",
        "mov ax, ds\n  mov es, ax\n  mov [win], es",
        "push es\n  pop eax",
        "push word ss\n  pop word [win+6]",
        "call .f\n  jmp .e\n.f:\n  mov eax, [esp]\n  add ebx, eax\n  ret\n.e:",
        "call .f\n  jmp .e\n.f:\n  push ecx\n  mov ecx, [esp+4]\n  pop edx\n  ret 0\n.e:",
        "push .r\n  ret\n  mov eax, 1\n.r:",
        "mov eax, .r\n  call eax\n  jmp .e\n.r:\n  ret\n.e:",
        "push .t\n  call [esp]\n  pop ecx\n  jmp .e\n.t:\n  lea eax, [esp+4]\n  ret\n.e:",
      ]);
      c.asm = seq;
      return c;
    }
    case 23: {
      c.regs[3] = 0; // EBX set to the window below
      c.asm = `mov ebx, ${WIN}\n  xlatb`;
      c.regs[0] = rng() & 0x3f;
      return c;
    }
    case 24: {
      const f = rng() % 4;
      const label = `.L${(rng() >>> 0).toString(16)}x${rng() % 1000}`;
      c.regs[1] = f === 0 && rng() % 3 === 0 ? 0 : 1 + (c.regs[1] & 0x1ff);
      if (f === 0) c.asm = `jecxz ${label}\n  mov eax, 1\n${label}:`;
      else if (f === 1) c.asm = `${label}:\n  inc edx\n  loop ${label}`;
      else if (f === 2) c.asm = `${label}:\n  inc edx\n  cmp edx, ebx\n  loopne ${label}`;
      else c.asm = `${label}:\n  add edx, 3\n  test dl, 1\n  loope ${label}`;
      c.undefFlags = 0;
      return c;
    }
    case 25: {
      // 16-bit addressing forms (0x67 prefix) on the window: BX+SI etc.
      c.regs[6] = rng() % 8;
      c.asm = `mov ebx, ${WIN}\n  ${pick(rng, ["add", "sub", "xor", "mov", "adc"])} ${reg(rng, s)[0]}, [ebx+esi*1+${rng() % 16}]`;
      if (c.asm.includes(" xor ")) c.undefFlags = AF;
      if (/(ebx|bx|bl|bh|esi|si)\b,/.test(c.asm.split("\n")[1])) return oneCase(rng);
      return c;
    }
    case 26: {
      // Rotates/shifts on memory through all counts including 0 and multiples of the width.
      const op = pick(rng, ["rcl", "rcr", "rol", "ror"]);
      const bits = 8 << s;
      const count = pick(rng, [0, 1, bits - 1, bits, bits + 1, 2 * bits, 31, 9, 17]);
      c.asm = `${op} ${mem(rng, s)}, ${count & 0xff}`;
      c.undefFlags = shiftUndef(op, count & 31, bits);
      return c;
    }
    case 27: {
      // Carry chains: ADC/SBB sequences over 64-bit values.
      c.asm = pick(rng, ["add eax, ebx\n  adc edx, ecx", "sub eax, ebx\n  sbb edx, ecx", "neg eax\n  adc edx, 0\n  neg edx", "stc\n  adc eax, -1\n  sbb ebx, ebx"]);
      return c;
    }
    case 28: {
      // Signed-byte immediate and accumulator short forms.
      const op = pick(rng, ALU);
      c.asm = `${op} ${pick(rng, ["al", "ax", "eax"])}, ${rng() & 0x7f}`;
      if (op === "and" || op === "or" || op === "xor") c.undefFlags = AF;
      return c;
    }
    case 29: {
      // A compare followed by a conditional branch or SETcc (32-bit pairs are fused), on close values.
      const sz = rng() % 4 === 0 ? rng() % 2 : 2;
      const [a, ai] = reg(rng, sz);
      const form = rng() % 4;
      const m = sz === 0 ? 0xff : sz === 1 ? 0xffff : -1;
      let b: string;
      if (form === 0 || form === 2) {
        const [r, ri] = reg(rng, sz);
        b = r;
        if (rng() % 3 === 0 && sz === 2) c.regs[ri] = (c.regs[ai] + pick(rng, [0, 1, -1])) | 0;
      } else if (form === 1) b = hex(rng() % 3 === 0 && sz === 2 ? (c.regs[ai] + pick(rng, [0, 1, -1])) | 0 : imm(rng, sz) & m);
      else b = sz === 0 ? hex(rng() & 0xff) : `byte ${(rng() & 0xff) - 128}`;
      const label = `.C${(rng() >>> 0).toString(16)}x${rng() % 1000}`;
      const use = rng() % 3 === 0 ? `set${pick(rng, CC)} ch` : `j${pick(rng, CC)} ${label}\n  mov eax, 0x1234\n${label}:`;
      if (use.startsWith("set") && (a === "ch" || b === "ch" || a === "cx" || a === "ecx")) return oneCase(rng);
      c.asm = `${form === 2 ? "test" : "cmp"} ${a}, ${b}\n  ${use}`;
      if (form === 2) c.undefFlags = AF;
      return c;
    }
    case 30: {
      // A short counted loop closed by a fused compare-and-branch (bounded: at most six passes).
      c.regs[3] = ((rng() & 0x7fffffff) - 0x40000000) | 0;
      c.regs[2] = (c.regs[3] - 1 - (rng() % 5)) | 0;
      const label = `.K${(rng() >>> 0).toString(16)}x${rng() % 1000}`;
      c.asm = `${label}:\n  inc edx\n  cmp edx, ebx\n  j${pick(rng, ["l", "b", "ne", "le", "be"])} ${label}`;
      return c;
    }
    case 31: {
      // INC/DEC of a counter followed by a conditional branch (fused), forward or closing a short loop.
      const op = pick(rng, ["inc", "dec"]);
      const label = `.D${(rng() >>> 0).toString(16)}x${rng() % 1000}`;
      if (rng() % 2) {
        c.regs[1] = pick(rng, [0, 1, 2, -1, -2, 0x7fffffff, 0x80000000, 0x80000001, 0xffffffff]) | 0;
        c.asm = `${op} ecx\n  j${pick(rng, CC)} ${label}\n  mov eax, 0x1234\n${label}:`;
      } else {
        c.regs[1] = 1 + (rng() % 6);
        c.asm = `${label}:\n  add edx, 3\n  dec ecx\n  j${pick(rng, ["nz", "g", "ns", "ge"])} ${label}`;
      }
      return c;
    }
    default: {
      // Two dependent instructions: flags produced by one, consumed by the next.
      const op1 = pick(rng, ALU);
      const [a, b] = operandPair(rng, s);
      c.asm = `${op1} ${a}, ${b}\n  ${pick(rng, ["adc", "sbb"])} ${reg(rng, 2)[0]}, ${reg(rng, 2)[0]}\n  set${pick(rng, CC)} cl`;
      return c;
    }
  }
}

/** EFLAGS the SDM leaves undefined after a shift or rotate of `count` (already masked to 5 bits). */
function shiftUndef(op: string, count: number, bits: number): number {
  if (count === 0) return 0;
  if (op === "rol" || op === "ror" || op === "rcl" || op === "rcr") return count === 1 ? 0 : OF;
  let u = count === 1 ? AF : AF | OF;
  if (count >= bits) u |= CF; // 8/16-bit shifts by the width or more: CF undefined
  if (count > bits && (op === "shl" || op === "shr")) u |= OF;
  return u;
}

/** The nasm source of a batch. */
export function assemble(cases: DiffCase[]): string {
  const lines: string[] = [];
  lines.push("bits 32", "global _start", "section .bss", "alignb 16", "win: resb 64", "out: resb " + cases.length * RECORD, "stack: resb 4096", "stacktop:", "section .data", "inits:");
  for (const c of cases) {
    const words: string[] = [];
    for (let i = 0; i < 64; i += 4) words.push(hex(c.window[i] | (c.window[i + 1] << 8) | (c.window[i + 2] << 16) | (c.window[i + 3] << 24)));
    lines.push(`  dd ${words.join(",")}`);
  }
  lines.push("section .text", "_start:");
  cases.forEach((c, i) => {
    const rec = `out+${i * RECORD}`;
    lines.push(`case${i}:`);
    lines.push(`  cld`, `  mov esi, inits+${i * 64}`, `  mov edi, win`, `  mov ecx, 16`, `  rep movsd`);
    lines.push(`  mov esp, stacktop-64`);
    lines.push(`  push dword ${hex(c.flags)}`, `  popfd`);
    const order = [0, 1, 2, 3, 5, 6, 7];
    for (const r of order) lines.push(`  mov ${R32[r]}, ${hex(c.regs[r])}`);
    lines.push(`  ${c.asm}`);
    lines.push(`  pushfd`, `  pop dword [${rec}+32]`);
    for (let r = 0; r < 8; r++) lines.push(`  mov [${rec}+${r * 4}], ${R32[r]}`);
    lines.push(`  cld`, `  mov esi, win`, `  mov edi, ${rec}+36`, `  mov ecx, 16`, `  rep movsd`);
  });
  lines.push("  mov eax, 4", "  mov ebx, 1", "  mov ecx, out", `  mov edx, ${cases.length * RECORD}`, "  int 0x80", "  mov eax, 1", "  xor ebx, ebx", "  int 0x80");
  return lines.join("\n") + "\n";
}
