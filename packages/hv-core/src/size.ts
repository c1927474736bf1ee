import { TypevisorError } from "./errors.js";

const UNITS: Record<string, number> = {
  "": 1,
  B: 1,
  K: 1024,
  M: 1024 ** 2,
  G: 1024 ** 3,
  T: 1024 ** 4,
};

/**
 * Parses a size the way QEMU's command line does: a number with an optional
 * binary suffix (`K`, `M`, `G`, `T`, optionally followed by `iB`/`B`), e.g.
 * `"256M"`, `"1.5G"`, `"4096"`. Plain numbers pass through.
 *
 * @param size - the size string or a byte count
 * @returns the size in bytes (an integer)
 * @throws TypevisorError `BAD_SIZE` when the text is not a size
 */
export function parseSize(size: string | number): number {
  if (typeof size === "number") {
    if (!Number.isSafeInteger(size) || size < 0) throw new TypevisorError("BAD_SIZE", `invalid size ${size}`);
    return size;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$/i.exec(size);
  if (!m) throw new TypevisorError("BAD_SIZE", `invalid size "${size}" (expected e.g. 512M, 2G, 4096)`);
  const bytes = Number(m[1]) * UNITS[m[2].toUpperCase()];
  if (!Number.isSafeInteger(Math.round(bytes)) || Math.round(bytes) !== bytes) {
    throw new TypevisorError("BAD_SIZE", `size "${size}" is not a whole number of bytes`);
  }
  return bytes;
}
