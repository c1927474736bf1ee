// L1 and L2 table entries (spec: "Cluster mapping"). Entries are 64-bit big
// endian; they are handled as two uint32 halves so no BigInt is needed.
import { TWO32 } from "./bytes.js";

/** Bit 63 (in the high word): refcount is exactly one, the cluster may be written in place. */
export const OFLAG_COPIED = 0x80000000;
/** Bit 62 (in the high word): the cluster is compressed. */
export const OFLAG_COMPRESSED = 0x40000000;
/** Bit 0 (in the low word): the cluster reads as zeros (version 3). */
export const OFLAG_ZERO = 1;

/** Host cluster offset of a standard L1/L2 entry (bits 9-55); -1 when it does not fit in 2^53. */
export function entryOffset(hi: number, lo: number): number {
  const h = hi & 0x00ffffff;
  if (h >= 0x200000) return -1;
  return h * TWO32 + ((lo & 0xfffffe00) >>> 0);
}

/** Reserved bits 1-8 and 56-61 of a standard L2 entry. */
export function l2Reserved(hi: number, lo: number): boolean {
  return (lo & 0x1fe) !== 0 || (hi & 0x3f000000) !== 0;
}

/** Reserved bits of an L1 entry (0-8, 56-62). */
export function l1Reserved(hi: number, lo: number): boolean {
  return (lo & 0x1ff) !== 0 || (hi & 0x7f000000) !== 0;
}

/** Writes an entry as hi/lo into `view` at `pos`. */
export function putEntry(view: DataView, pos: number, offset: number, flagsHi: number, flagsLo: number): void {
  view.setUint32(pos, (Math.floor(offset / TWO32) | flagsHi) >>> 0);
  view.setUint32(pos + 4, ((offset >>> 0) | flagsLo) >>> 0);
}

/** Decoded compressed-cluster descriptor. */
export interface CompressedRef {
  /** Byte offset of the compressed data in the image file. */
  offset: number;
  /** Bytes to read (whole 512-byte sectors from `offset`'s sector, minus the part before `offset`). */
  length: number;
}

/**
 * Decodes a compressed cluster descriptor (spec: "Compressed Clusters
 * Descriptor": x = 62 - (cluster_bits - 8); bits 0..x-1 offset, bits
 * x..61 number of additional 512-byte sectors).
 */
export function compressedRef(hi: number, lo: number, clusterBits: number): CompressedRef {
  const x = 62 - (clusterBits - 8);
  const hiBits = x - 32;
  const offHi = hi & ((1 << hiBits) - 1);
  const offset = offHi * TWO32 + (lo >>> 0);
  const sectors = ((hi >>> hiBits) & ((1 << (clusterBits - 8)) - 1)) + 1;
  return { offset, length: sectors * 512 - (offset & 511) };
}

/** Encodes a compressed descriptor for data at `offset` of `length` bytes into [hi, lo]. */
export function encodeCompressed(offset: number, length: number, clusterBits: number): [number, number] {
  const x = 62 - (clusterBits - 8);
  const hiBits = x - 32;
  const extra = Math.floor((offset + length - 1) / 512) - Math.floor(offset / 512);
  const hi = (Math.floor(offset / TWO32) | (extra << hiBits) | OFLAG_COMPRESSED) >>> 0;
  return [hi, offset >>> 0];
}
