// What the block compiler reads off decoded blocks (decoder.ts records),
// whichever code it generates: where a block may continue, and which
// instructions make the flags before them dead.
import { REC_STRIDE } from "./decode-cache.js";
import * as D from "./decoder.js";

/** Page offsets a block may continue at: taken branches, the fall-through, and a call's return address. */
export function successors(rec: Int32Array, start: number, count: number, off: number, bytes: number): number[] {
  const out: number[] = [];
  let r = start;
  let pos = off;
  let last = 0;
  for (let k = 0; k < count; ) {
    const w = rec[r];
    const id = w & 0xff;
    const len = (w >> 8) & 15;
    const fused = D.isFused(w);
    k += fused ? 2 : 1;
    const next = pos + len;
    if (id === D.H_JCC || id === D.H_JMP || id === D.H_CALL || fused) out.push(next + rec[r + 2]);
    last = id;
    pos = next;
    r += REC_STRIDE;
  }
  if (last !== D.H_JMP && last !== D.H_RET && last !== D.H_JMP_R && last !== D.H_JMP_M) out.push(off + bytes);
  return out;
}

/**
 * Whether the instruction of record word `w` sets CF, PF, AF, ZF, SF and OF
 * without reading them, and has only register and immediate operands, so
 * it cannot leave the region before it writes them: then the flags of the
 * instruction before it in the block are dead. (ADC and SBB read CF.)
 */
export function overwritesFlags(w: number): boolean {
  const id = w & 0xff;
  const aop = (w >> 16) & 15;
  switch (id) {
    case D.H_ALU_RR32:
    case D.H_ALU_RR:
    case D.H_ALU_RI32:
    case D.H_ALU_RI:
      return aop !== 2 && aop !== 3;
    case D.H_ADD_RR32:
    case D.H_OR_RR32:
    case D.H_AND_RR32:
    case D.H_SUB_RR32:
    case D.H_XOR_RR32:
    case D.H_CMP_RR32:
    case D.H_ADD_RI32:
    case D.H_OR_RI32:
    case D.H_AND_RI32:
    case D.H_SUB_RI32:
    case D.H_XOR_RI32:
    case D.H_CMP_RI32:
    case D.H_TEST_RR:
    case D.H_TEST_RI:
    case D.H_TEST_RR32:
    case D.H_CMPJ_RR32:
    case D.H_CMPJ_RI32:
    case D.H_TESTJ_RR32:
      return true;
    default:
      return false;
  }
}
