// Reading and writing refcount entries of any width (spec: "Reference
// counts": refcount_bits = 1 << refcount_order, 1..64). Sub-byte widths pack
// the lowest-numbered entry into the least significant bits of a byte.
import { TWO32 } from "./bytes.js";

/** Reads entry `i` of a refcount block with `order` (0..6). */
export function getRefcountEntry(block: Uint8Array, view: DataView, order: number, i: number): number {
  switch (order) {
    case 0:
      return (block[i >>> 3] >>> (i & 7)) & 1;
    case 1:
      return (block[i >>> 2] >>> ((i & 3) * 2)) & 3;
    case 2:
      return (block[i >>> 1] >>> ((i & 1) * 4)) & 15;
    case 3:
      return block[i];
    case 4:
      return view.getUint16(i * 2);
    case 5:
      return view.getUint32(i * 4);
    default: {
      const hi = view.getUint32(i * 8);
      // Values past 2^53 cannot be represented; treat them as saturated.
      return hi >= 0x200000 ? Number.MAX_SAFE_INTEGER : hi * TWO32 + view.getUint32(i * 8 + 4);
    }
  }
}

/** Largest refcount representable with `order`. */
export function maxRefcount(order: number): number {
  return order >= 6 ? Number.MAX_SAFE_INTEGER : 2 ** (1 << order) - 1;
}

/** Writes entry `i`; returns the byte range [start, end) that changed. */
export function setRefcountEntry(block: Uint8Array, view: DataView, order: number, i: number, value: number): void {
  switch (order) {
    case 0: {
      const b = i >>> 3;
      const s = i & 7;
      block[b] = (block[b] & ~(1 << s)) | ((value & 1) << s);
      return;
    }
    case 1: {
      const b = i >>> 2;
      const s = (i & 3) * 2;
      block[b] = (block[b] & ~(3 << s)) | ((value & 3) << s);
      return;
    }
    case 2: {
      const b = i >>> 1;
      const s = (i & 1) * 4;
      block[b] = (block[b] & ~(15 << s)) | ((value & 15) << s);
      return;
    }
    case 3:
      block[i] = value;
      return;
    case 4:
      view.setUint16(i * 2, value);
      return;
    case 5:
      view.setUint32(i * 4, value);
      return;
    default:
      view.setUint32(i * 8, Math.floor(value / TWO32));
      view.setUint32(i * 8 + 4, value >>> 0);
  }
}

/** Byte range of a refcount block that holds entries [first, last]. */
export function entryBytes(order: number, first: number, last: number): [number, number] {
  if (order < 3) {
    const perByte = 8 >> order;
    return [Math.floor(first / perByte), Math.floor(last / perByte) + 1];
  }
  const w = 1 << (order - 3);
  return [first * w, (last + 1) * w];
}
