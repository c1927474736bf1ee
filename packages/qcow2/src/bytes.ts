// Big-endian 64-bit helpers. qcow2 stores every integer big-endian; offsets
// are 64-bit but JavaScript numbers are exact only below 2^53, so values are
// read as two uint32 halves and rejected when they do not fit.
import { Qcow2FormatError } from "./errors.js";

/** 2^32 as a number. */
export const TWO32 = 4294967296;

/** Reads a big-endian uint64 that must be below 2^53; throws naming `field` otherwise. */
export function getU64(view: DataView, pos: number, field: string, fileOffset = pos): number {
  const hi = view.getUint32(pos);
  const lo = view.getUint32(pos + 4);
  if (hi >= 0x200000) throw new Qcow2FormatError("QCOW2_VALUE_TOO_LARGE", `${field} is 0x${hi.toString(16)}${lo.toString(16).padStart(8, "0")}, larger than 2^53`, { offset: fileOffset, field });
  return hi * TWO32 + lo;
}

/** Writes a big-endian uint64 (value must be a non-negative integer below 2^53). */
export function setU64(view: DataView, pos: number, value: number): void {
  view.setUint32(pos, Math.floor(value / TWO32));
  view.setUint32(pos + 4, value >>> 0);
}

/** A DataView over the whole of `a`. */
export function viewOf(a: Uint8Array): DataView {
  return new DataView(a.buffer, a.byteOffset, a.byteLength);
}

/** True when every byte of `a` is zero. */
export function isZero(a: Uint8Array): boolean {
  const n = a.length;
  let i = 0;
  if ((a.byteOffset & 3) === 0) {
    const words = new Uint32Array(a.buffer, a.byteOffset, n >>> 2);
    for (let w = 0; w < words.length; w++) if (words[w] !== 0) return false;
    i = words.length << 2;
  }
  for (; i < n; i++) if (a[i] !== 0) return false;
  return true;
}
