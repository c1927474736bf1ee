// The helpers a compiled region calls when it does not know the lazy-flag
// state statically (at the start of a block the flags come from whatever
// ran before): CF, a condition, and all arithmetic flags of a lazy state,
// as Cpu.getCF, Cpu.cond and Cpu.getFlags compute them. Every region's
// module holds its own copy (a few hundred bytes): importing functions from
// elsewhere costs V8 more per module than compiling them.
import { I32, FunctionWriter, OP, uleb } from "./wasm-writer.js";
import { and, cond3, eq, eqz, evenParity, k, leU, ltU, ne, or, select, shrU, xor, type X } from "./wasm-expr.js";

const P = (i: number): X => [OP.localGet, ...uleb(i)];

/** `cfOf(fl, lz, op, a, b, r, s, c)`: CF of a lazy-flag state (as Cpu.getCF), for code that does not know the state statically. */
export function cfFunction(): FunctionWriter {
  const f = new FunctionWriter([I32, I32, I32, I32, I32, I32, I32, I32]);
  const [fl, lz, op, a, b, r, s, c] = [0, 1, 2, 3, 4, 5, 6, 7].map(P);
  const m = f.local();
  f.emit([...eqz(and(lz, k(1))), OP.if, 0x40, ...and(fl, k(1)), OP.return, OP.end]);
  f.emit([...select(eq(s, k(2)), k(-1), select(eq(s, k(1)), k(65535), k(255))), OP.localSet, m]);
  const u = (x: X): X => and(x, P(m));
  const carry = ne(c, k(0));
  const res = select(
    eq(op, k(1)),
    ltU(u(r), u(a)),
    select(eq(op, k(2)), select(carry, leU(u(r), u(a)), ltU(u(r), u(a))), select(eq(op, k(3)), ltU(u(a), u(b)), select(eq(op, k(4)), select(carry, leU(u(a), u(b)), ltU(u(a), u(b))), k(0)))),
  );
  f.emit(res);
  return f;
}

/** The overflow flag of a lazy state (as Cpu), given the sign mask local. */
function overflowOf(lz: X, fl: X, op: X, a: X, b: X, r: X, sign: X): X {
  const add1 = ne(and(and(xor(a, r), xor(b, r)), sign), k(0));
  const sub1 = ne(and(and(xor(a, b), xor(a, r)), sign), k(0));
  const lazyOf = select(or(eq(op, k(1)), eq(op, k(2))), add1, select(or(eq(op, k(3)), eq(op, k(4))), sub1, k(0)));
  return select(eqz(and(lz, k(0x800))), ne(and(fl, k(0x800)), k(0)), lazyOf);
}

/** `condOf(cc, fl, lz, op, a, b, r, s, c)`: condition `cc` of a lazy-flag state (as Cpu.cond). */
export function condFunction(cfIndex: number): FunctionWriter {
  const f = new FunctionWriter([I32, I32, I32, I32, I32, I32, I32, I32, I32]);
  const [cc, fl, lz, op, a, b, r, s, c] = [0, 1, 2, 3, 4, 5, 6, 7, 8].map(P);
  const sign = f.local();
  const m = f.local();
  const zf = f.local();
  const sf = f.local();
  const of = f.local();
  const t = f.local();
  const set = (l: number, v: X): void => f.emit([...v, OP.localSet, ...uleb(l)]);
  set(sign, select(eq(s, k(2)), k(-2147483648), select(eq(s, k(1)), k(32768), k(128))));
  set(m, select(eq(s, k(2)), k(-1), select(eq(s, k(1)), k(65535), k(255))));
  set(zf, select(ne(and(lz, k(0x40)), k(0)), eqz(and(r, P(m))), ne(and(fl, k(0x40)), k(0))));
  set(sf, select(ne(and(lz, k(0x80)), k(0)), ne(and(r, P(sign)), k(0)), ne(and(fl, k(0x80)), k(0))));
  set(of, overflowOf(lz, fl, op, a, b, r, P(sign)));
  const cf = [...fl, ...lz, ...op, ...a, ...b, ...r, ...s, ...c, OP.call, cfIndex];
  const pf = select(ne(and(lz, k(4)), k(0)), evenParity(r), ne(and(fl, k(4)), k(0)));
  const cases: X[] = [P(of), cf, P(zf), or(P(zf), cf), P(sf), pf, ne(P(sf), P(of)), or(P(zf), ne(P(sf), P(of)))];
  // t = cases[cc >> 1], through a chain of ifs.
  const kind = shrU(cc, k(1));
  let e: X = cases[7];
  for (let j = 6; j >= 0; j--) e = cond3(eq(kind, k(j)), cases[j], e);
  set(t, e);
  f.emit(select(and(cc, k(1)), eqz(P(t)), P(t)));
  return f;
}

/** `flagsOf(fl, lz, op, a, b, r, s, c)`: the arithmetic EFLAGS bits of a lazy-flag state (as Cpu.getFlags). */
export function flagsFunction(cfIndex: number): FunctionWriter {
  const f = new FunctionWriter([I32, I32, I32, I32, I32, I32, I32, I32]);
  const [fl, lz, op, a, b, r, s, c] = [0, 1, 2, 3, 4, 5, 6, 7].map(P);
  const fr = f.local();
  const sign = f.local();
  const m = f.local();
  const set = (l: number, v: X): void => f.emit([...v, OP.localSet, ...uleb(l)]);
  f.emit([...eqz(lz), OP.if, 0x40, ...fl, OP.return, OP.end]);
  set(fr, and(fl, xor(lz, k(-1))));
  set(m, select(eq(s, k(2)), k(-1), select(eq(s, k(1)), k(65535), k(255))));
  set(sign, select(eq(s, k(2)), k(-2147483648), select(eq(s, k(1)), k(32768), k(128))));
  const bit = (on: X, v: number): void => set(fr, or(P(fr), select(on, k(v), k(0))));
  const has = (x: number): X => ne(and(lz, k(x)), k(0));
  f.emit([...has(1), OP.if, 0x40, ...or(P(fr), [...fl, ...lz, ...op, ...a, ...b, ...r, ...s, ...c, OP.call, cfIndex]), OP.localSet, ...uleb(fr), OP.end]);
  bit(and(has(4), evenParity(r)), 4);
  bit(and(and(has(0x10), ne(op, k(0))), ne(and(xor(xor(a, b), r), k(0x10)), k(0))), 0x10);
  bit(and(has(0x40), eqz(and(r, P(m)))), 0x40);
  bit(and(has(0x80), ne(and(r, P(sign)), k(0))), 0x80);
  bit(and(has(0x800), overflowOf(lz, fl, op, a, b, r, P(sign))), 0x800);
  f.emit(P(fr));
  return f;
}
