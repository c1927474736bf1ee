// WebAssembly i32 expressions as code fragments: each builder returns the
// code that leaves one i32 on the stack, so generated code reads like the
// arithmetic it stands for (`add(get(x), k(1))`). Fragments nest rather
// than being copied into each other (FunctionWriter.emit flattens them),
// so building an expression costs one small array per operation.
import { I32, OP, sleb, uleb, type Code } from "./wasm-writer.js";

/** WebAssembly code that leaves one i32 on the stack. */
export type X = Code[];

/** `i32.const v`. */
export const k = (v: number): X => [OP.i32Const, sleb(v)];
/** `local.get i`. */
export const get = (i: number): X => [OP.localGet, uleb(i)];
const bin =
  (op: number) =>
  (a: X, b: X): X => [a, b, op];
export const add = bin(OP.i32Add);
export const sub = bin(OP.i32Sub);
export const and = bin(OP.i32And);
export const or = bin(OP.i32Or);
export const xor = bin(OP.i32Xor);
export const shl = bin(OP.i32Shl);
export const shrS = bin(OP.i32ShrS);
export const shrU = bin(OP.i32ShrU);
export const mul = bin(OP.i32Mul);
export const eq = bin(OP.i32Eq);
export const ne = bin(OP.i32Ne);
export const ltS = bin(OP.i32LtS);
export const ltU = bin(OP.i32LtU);
export const gtU = bin(OP.i32GtU);
export const leS = bin(OP.i32LeS);
export const leU = bin(OP.i32LeU);
/** 1 when `a` is 0, else 0. */
export const eqz = (a: X): X => [a, OP.i32Eqz];
/** `c ? a : b`, both evaluated (cheap operands only). */
export const select = (c: X, a: X, b: X): X => [a, b, c, OP.select];
/** `c ? a : b`, only one evaluated. */
export const cond3 = (c: X, a: X, b: X): X => [c, OP.if, I32, a, OP.else, b, OP.end];
/** The parity flag's condition (x86 PF): an even number of ones in the low byte. */
export const evenParity = (r: X): X => eqz(and([and(r, k(255)), OP.i32Popcnt], k(1)));
const LOADS = [OP.i32Load8U, OP.i32Load16U, OP.i32Load];
const STORES = [OP.i32Store8, OP.i32Store16, OP.i32Store];
/** A load of size `s` (0: byte, 1: 16-bit, 2: 32-bit; zero-extended) at `addr` plus `offset`. */
export const load = (s: number, addr: X, offset = 0): X => [addr, LOADS[s], s, uleb(offset)];
/** Code that stores `v` (size `s`) at `addr` plus `offset`. */
export const store = (s: number, addr: X, v: X, offset = 0): X => [addr, v, STORES[s], s, uleb(offset)];
/** The unsigned comparison `a + c > limit` of three int32s as 64-bit numbers (no wrap). */
export const sumAboveU = (a: X, c: number, limit: X): X => [a, OP.i64ExtendI32U, OP.i64Const, sleb(c), OP.i64Add, limit, OP.i64ExtendI32U, OP.i64GtU];
