// Cluster compression codecs (spec: "Compressed Clusters Descriptor" and the
// compression_type header field). zlib images hold raw deflate streams with
// a 4 KiB window (QEMU inflates with windowBits -12, so wider windows would
// not decode there); zstd images hold one or more zstd frames.
import { constants, deflateRawSync, inflateRawSync } from "node:zlib";
import { Qcow2FormatError } from "./errors.js";
import { zstdCompress, zstdDecompress } from "./zstd.js";

/** Compression type codes (header byte 104). */
export const COMPRESSION = { zlib: 0, zstd: 1 } as const;

/**
 * Compresses one cluster; returns undefined when the result would not be
 * smaller than the cluster (the caller then stores it uncompressed).
 */
export function compressCluster(type: number, data: Uint8Array): Uint8Array | undefined {
  const out = type === COMPRESSION.zstd ? zstdCompress(data) : deflateRawSync(data, { windowBits: 12, level: 6, memLevel: 9 });
  return out.length < data.length ? new Uint8Array(out.buffer, out.byteOffset, out.length) : undefined;
}

/**
 * Decompresses one cluster into `dest` (exactly one cluster long). The input
 * may carry trailing bytes up to the next sector boundary; they are ignored.
 * @param where - file offset of the compressed data, for errors
 */
export function decompressCluster(type: number, src: Uint8Array, dest: Uint8Array, where: number): void {
  let out: Uint8Array;
  try {
    if (type === COMPRESSION.zstd) out = zstdDecompress(src, dest.length);
    else out = inflateRawSync(src, { windowBits: 12, finishFlush: constants.Z_SYNC_FLUSH, maxOutputLength: dest.length + 1 });
  } catch (e) {
    throw new Qcow2FormatError("QCOW2_BAD_COMPRESSED_DATA", `compressed cluster does not decompress: ${(e as Error).message}`, { offset: where, field: "compressed_cluster" });
  }
  if (out.length < dest.length) throw new Qcow2FormatError("QCOW2_BAD_COMPRESSED_DATA", `compressed cluster decompresses to ${out.length} bytes, not ${dest.length}`, { offset: where, field: "compressed_cluster" });
  dest.set(out.subarray(0, dest.length));
}
