// A minimal ACPI Machine Language encoder: just the terms a static DSDT needs
// (ACPI 6.5 §20.2, "AML Grammar Definition"). Each function returns the
// encoded bytes as a plain number array, so terms compose by concatenation.

/** Encoded AML bytes. */
export type Aml = number[];

/** PkgLength (§20.2.4): the length of what follows including the PkgLength bytes. */
export function pkgLength(contentLength: number): Aml {
  for (let extra = 0; extra <= 3; extra++) {
    const total = contentLength + 1 + extra;
    if (extra === 0 && total <= 0x3f) return [total];
    if (extra > 0 && total < 2 ** (4 + 8 * extra)) {
      const out = [(extra << 6) | (total & 0x0f)];
      for (let i = 0; i < extra; i++) out.push((total >> (4 + 8 * i)) & 0xff);
      return out;
    }
  }
  throw new RangeError(`AML package of ${contentLength} bytes is too long`);
}

/** A NameString of one or more 4-character segments, e.g. `"\\_SB.PCI0"` or `"_HID"` (§20.2.2). */
export function nameString(path: string): Aml {
  const out: Aml = [];
  let p = path;
  while (p.startsWith("\\") || p.startsWith("^")) {
    out.push(p.charCodeAt(0));
    p = p.slice(1);
  }
  const segs = p === "" ? [] : p.split(".");
  for (const s of segs) if (!/^[A-Z_][A-Z0-9_]{0,3}$/.test(s)) throw new RangeError(`invalid AML name segment "${s}"`);
  const seg = (s: string): Aml => [...s.padEnd(4, "_")].map((c) => c.charCodeAt(0));
  if (segs.length === 0) out.push(0x00); // NullName
  else if (segs.length === 1) out.push(...seg(segs[0]));
  else if (segs.length === 2) out.push(0x2e, ...seg(segs[0]), ...seg(segs[1]));
  else out.push(0x2f, segs.length, ...segs.flatMap(seg));
  return out;
}

/** The shortest integer encoding (ZeroOp, OneOp, Byte/Word/DWord/QWordConst; §20.2.3). */
export function integer(v: number): Aml {
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`AML integer ${v} out of range`);
  if (v === 0) return [0x00];
  if (v === 1) return [0x01];
  if (v <= 0xff) return [0x0a, v];
  if (v <= 0xffff) return [0x0b, v & 0xff, v >> 8];
  if (v <= 0xffffffff) return [0x0c, v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24];
  const lo = v % 2 ** 32;
  const hi = Math.floor(v / 2 ** 32);
  return [0x0e, ...integer32(lo), ...integer32(hi)];
}

function integer32(v: number): Aml {
  return [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24];
}

/** A String constant (§20.2.3), ASCII only. */
export function string(s: string): Aml {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0 || c > 0x7f) throw new RangeError("AML strings are ASCII without NUL");
  }
  return [0x0d, ...[...s].map((c) => c.charCodeAt(0)), 0x00];
}

/** `Name (name, value)` (§19.6.90). */
export function name(n: string, value: Aml): Aml {
  return [0x08, ...nameString(n), ...value];
}

/** `Scope (name) { body }`. */
export function scope(n: string, body: Aml): Aml {
  const content = [...nameString(n), ...body];
  return [0x10, ...pkgLength(content.length), ...content];
}

/** `Device (name) { body }` (ExtOpPrefix 0x5B, DeviceOp 0x82). */
export function device(n: string, body: Aml): Aml {
  const content = [...nameString(n), ...body];
  return [0x5b, 0x82, ...pkgLength(content.length), ...content];
}

/** `Package () { elements }` with at most 255 elements (§19.6.102). */
export function pkg(elements: Aml[]): Aml {
  if (elements.length > 255) throw new RangeError("AML Package has more than 255 elements");
  const content = [elements.length, ...elements.flat()];
  return [0x12, ...pkgLength(content.length), ...content];
}

/** `Buffer () { bytes }` (§19.6.10). */
export function buffer(bytes: number[]): Aml {
  const content = [...integer(bytes.length), ...bytes];
  return [0x11, ...pkgLength(content.length), ...content];
}

/** `EisaId ("PNP0A03")`: the compressed 32-bit EISA ID as a DWordConst (§19.3.4). */
export function eisaId(id: string): Aml {
  if (!/^[A-Z]{3}[0-9A-F]{4}$/.test(id)) throw new RangeError(`invalid EISA ID "${id}"`);
  const c = (i: number): number => id.charCodeAt(i) - 0x40;
  const v = ((c(0) << 26) | (c(1) << 21) | (c(2) << 16) | parseInt(id.slice(3), 16)) >>> 0;
  // Stored big-endian: the bytes read in order spell the compressed ID.
  return [0x0c, v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
}

// --- resource descriptors (§6.4) ----------------------------------------------

const u16 = (v: number): number[] => [v & 0xff, (v >> 8) & 0xff];
const u32 = (v: number): number[] => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24];

/** `IO (Decode16, min, max, align, length)`: I/O port descriptor (§6.4.2.5). */
export function ioPort(min: number, max: number, alignment: number, length: number): number[] {
  return [0x47, 0x01, ...u16(min), ...u16(max), alignment, length];
}

/**
 * A Word Address Space descriptor (§6.4.3.5.3) produced by a bridge, with
 * fixed minimum and maximum and positive decode: `kind` 1 = I/O (entire
 * range), 2 = bus number range.
 */
export function wordAddressSpace(kind: 1 | 2, min: number, max: number): number[] {
  const typeFlags = kind === 1 ? 0x03 : 0x00;
  return [0x88, ...u16(13), kind, 0x0c, typeFlags, ...u16(0), ...u16(min), ...u16(max), ...u16(0), ...u16(max - min + 1)];
}

/** A DWord memory range produced by a bridge (§6.4.3.5.2): fixed, read/write, cacheable or not. */
export function dwordMemory(min: number, max: number, cacheable: boolean): number[] {
  const typeFlags = 0x01 | (cacheable ? 0x02 : 0x00);
  return [0x87, ...u16(23), 0x00, 0x0c, typeFlags, ...u32(0), ...u32(min), ...u32(max), ...u32(0), ...u32(max - min + 1)];
}

/** End tag with a zero checksum (treated as valid, §6.4.2.9). */
export function endTag(): number[] {
  return [0x79, 0x00];
}
