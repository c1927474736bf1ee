// The killed writer's operations, generated from a seed, shared by the
// writer process and the test that checks what survived the kill.

/** xorshift32, as the test-support PRNG. */
export function rng(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

/** The next operation for a disk of `size` bytes with clusters of `cs`. */
export function nextOp(next, size, cs) {
  const clusters = Math.floor(size / cs);
  const op = next() % 10;
  const off = (next() % clusters) * cs + (next() % 2 ? next() % cs : 0);
  const len = Math.min(size - off, 1 + (next() % (cs * 4)));
  const fill = next() & 0xff;
  if (op < 5) return { kind: "write", offset: off, length: len, fill };
  if (op < 6) return { kind: "compressed", offset: (next() % clusters) * cs, length: cs, fill };
  if (op < 7) return { kind: "discard", offset: off, length: len };
  if (op < 8) return { kind: "zero", offset: off, length: len, unmap: next() % 2 === 0 };
  return { kind: "flush" };
}

/** Applies an operation to the expected disk contents (discard zeroes whole clusters only). */
export function applyExpected(mirror, op, cs) {
  if (op.kind === "write" || op.kind === "compressed") mirror.fill(op.fill, op.offset, op.offset + op.length);
  else if (op.kind === "zero") mirror.fill(0, op.offset, op.offset + op.length);
  else if (op.kind === "discard") {
    const end = op.offset + op.length;
    const a = Math.ceil(op.offset / cs) * cs;
    const b = end === mirror.length ? end : Math.floor(end / cs) * cs;
    if (b > a) mirror.fill(0, a, b);
  }
}
