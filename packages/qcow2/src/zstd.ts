// Zstandard (RFC 8878) for compressed qcow2 clusters, in plain TypeScript:
// Node has no zstd in zlib before version 22.15, and a package with a
// native or wasm build would not be "install and go" everywhere.
//
// The decoder handles every frame a conforming encoder produces: raw, RLE
// and compressed blocks; raw, RLE, Huffman and treeless literals (1 or 4
// streams); predefined, RLE, FSE and repeat sequence tables; repeat
// offsets; skippable frames; several frames in a row. Dictionaries are not
// used by qcow2 and are refused.
//
// The encoder is small: greedy LZ77 matching with a hash table, raw
// literals, and sequences coded with the predefined FSE tables. Output is
// bigger than libzstd's but decodes anywhere.
import { Qcow2FormatError } from "./errors.js";

const MAGIC = 0xfd2fb528;
const BLOCK_MAX = 128 * 1024;

class ZstdError extends Qcow2FormatError {
  constructor(message: string) {
    super("QCOW2_BAD_ZSTD", `zstd: ${message}`);
  }
}

// ------------------------------------------------------------------ tables

const LL_BASE = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 20, 22, 24, 28, 32, 40, 48, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];
const LL_BITS = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
const ML_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 37, 39, 41, 43, 47, 51, 59, 67, 83, 99, 131, 259, 515, 1027, 2051, 4099, 8195, 16387, 32771, 65539];
const ML_BITS = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
// Predefined distributions (RFC 8878, 3.1.1.3.2.2).
const LL_DEFAULT = [4, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 2, 1, 1, 1, 1, 1, -1, -1, -1, -1];
const ML_DEFAULT = [1, 4, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1];
const OF_DEFAULT = [1, 1, 1, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1];

function highBit(x: number): number {
  return 31 - Math.clz32(x);
}

/** An FSE decoding table. */
interface FseTable {
  log: number;
  symbol: Uint8Array;
  nbBits: Uint8Array;
  base: Uint16Array;
}

/** Spreads symbols over the table (RFC 8878, 4.1.1); shared by decoder and encoder. */
function spread(norm: ArrayLike<number>, log: number): { table: Uint8Array; high: number } {
  const size = 1 << log;
  const table = new Uint8Array(size);
  let high = size - 1;
  for (let s = 0; s < norm.length; s++) if (norm[s] === -1) table[high--] = s;
  const step = (size >> 1) + (size >> 3) + 3;
  const mask = size - 1;
  let pos = 0;
  for (let s = 0; s < norm.length; s++) {
    for (let i = 0; i < norm[s]; i++) {
      table[pos] = s;
      do pos = (pos + step) & mask;
      while (pos > high);
    }
  }
  if (pos !== 0) throw new ZstdError("FSE table distribution does not add up");
  return { table, high };
}

function buildFse(norm: ArrayLike<number>, log: number): FseTable {
  const size = 1 << log;
  const { table } = spread(norm, log);
  const next = new Uint16Array(norm.length);
  for (let s = 0; s < norm.length; s++) next[s] = norm[s] === -1 ? 1 : norm[s];
  const t: FseTable = { log, symbol: table, nbBits: new Uint8Array(size), base: new Uint16Array(size) };
  for (let u = 0; u < size; u++) {
    const s = table[u];
    const ns = next[s]++;
    const nb = log - highBit(ns);
    t.nbBits[u] = nb;
    t.base[u] = (ns << nb) - size;
  }
  return t;
}

function rleFse(symbol: number): FseTable {
  return { log: 0, symbol: Uint8Array.of(symbol), nbBits: Uint8Array.of(0), base: Uint16Array.of(0) };
}

const LL_PREDEF = buildFse(LL_DEFAULT, 6);
const ML_PREDEF = buildFse(ML_DEFAULT, 6);
const OF_PREDEF = buildFse(OF_DEFAULT, 5);

// ----------------------------------------------------------- bit readers

/** Reads an FSE table description (forward bits). Returns the table and bytes used. */
function readFseDescription(src: Uint8Array, pos: number, end: number, maxSymbol: number, maxLog: number): { table: FseTable; used: number } {
  let bitPos = 0;
  const peek = (n: number): number => {
    let v = 0;
    for (let i = 0; i < n; i++) {
      const bp = bitPos + i;
      const byte = pos + (bp >>> 3);
      const bit = byte < end ? (src[byte] >>> (bp & 7)) & 1 : 0;
      v |= bit << i;
    }
    return v >>> 0;
  };
  const log = peek(4) + 5;
  bitPos += 4;
  if (log > maxLog) throw new ZstdError(`FSE accuracy log ${log} is larger than ${maxLog}`);
  let remaining = (1 << log) + 1;
  let threshold = 1 << log;
  let nbBits = log + 1;
  let symbol = 0;
  let prev0 = false;
  const norm: number[] = [];
  while (remaining > 1) {
    if (symbol > maxSymbol) throw new ZstdError("FSE table has too many symbols");
    if (prev0) {
      let n0 = symbol;
      while (peek(16) === 0xffff) {
        n0 += 24;
        bitPos += 16;
        if (pos + (bitPos >>> 3) > end) throw new ZstdError("FSE table description truncated");
      }
      while ((peek(2) & 3) === 3) {
        n0 += 3;
        bitPos += 2;
      }
      n0 += peek(2) & 3;
      bitPos += 2;
      if (n0 > maxSymbol + 1) throw new ZstdError("FSE zero run past the last symbol");
      while (symbol < n0) norm[symbol++] = 0;
      if (symbol > maxSymbol) throw new ZstdError("FSE zero run past the last symbol");
    }
    const max = 2 * threshold - 1 - remaining;
    let count: number;
    const low = peek(nbBits - 1);
    if ((low & (threshold - 1)) < max) {
      count = low & (threshold - 1);
      bitPos += nbBits - 1;
    } else {
      count = peek(nbBits) & (2 * threshold - 1);
      if (count >= threshold) count -= max;
      bitPos += nbBits;
    }
    count--;
    remaining -= count < 0 ? -count : count;
    norm[symbol++] = count;
    prev0 = count === 0;
    while (remaining < threshold && nbBits > 1) {
      nbBits--;
      threshold >>= 1;
    }
    if (pos + (bitPos >>> 3) > end) throw new ZstdError("FSE table description truncated");
  }
  if (remaining !== 1) throw new ZstdError("FSE table probabilities do not add up");
  return { table: buildFse(norm, log), used: (bitPos + 7) >>> 3 };
}

/** Backward bit reader (zstd bitstreams are read from the end). */
class BackReader {
  private readonly src: Uint8Array;
  private readonly start: number;
  private bitPos: number; // bits remaining above start

  constructor(src: Uint8Array, start: number, end: number) {
    if (end <= start) throw new ZstdError("empty bitstream");
    const last = src[end - 1];
    if (last === 0) throw new ZstdError("bitstream has no end marker");
    this.src = src;
    this.start = start;
    this.bitPos = (end - start) * 8 - (8 - highBit(last));
  }

  /** Reads `n` (<= 25) bits; past the start, zeros are read (and `overflow` tells). */
  read(n: number): number {
    if (n === 0) return 0;
    this.bitPos -= n;
    return this.bitsAt(this.bitPos, n);
  }

  peek(n: number): number {
    return this.bitsAt(this.bitPos - n, n);
  }

  skip(n: number): void {
    this.bitPos -= n;
  }

  private bitsAt(p: number, n: number): number {
    if (p >= 0) {
      // Load up to four bytes little-endian and shift: n <= 25 always fits.
      const src = this.src;
      const i = this.start + (p >>> 3);
      const v = src[i] | (src[i + 1] << 8) | (src[i + 2] << 16) | (src[i + 3] << 24);
      return ((v >>> (p & 7)) & (n >= 32 ? 0xffffffff : (1 << n) - 1)) >>> 0;
    }
    // Past the start of the stream: missing low bits read as zero.
    let v = 0;
    for (let i = n - 1; i >= 0; i--) {
      const bp = p + i;
      v = v * 2 + (bp >= 0 ? (this.src[this.start + (bp >>> 3)] >>> (bp & 7)) & 1 : 0);
    }
    return v >>> 0;
  }

  get overflow(): boolean {
    return this.bitPos < 0;
  }

  get done(): boolean {
    return this.bitPos === 0;
  }

  get remaining(): number {
    return this.bitPos;
  }
}

// ---------------------------------------------------------------- Huffman

interface Huffman {
  maxBits: number;
  symbol: Uint8Array;
  nbBits: Uint8Array;
}

function readHuffman(src: Uint8Array, pos: number, end: number): { table: Huffman; used: number } {
  if (pos >= end) throw new ZstdError("Huffman tree description truncated");
  const hb = src[pos];
  const weights: number[] = [];
  let used: number;
  if (hb >= 128) {
    const n = hb - 127;
    used = 1 + Math.ceil(n / 2);
    if (pos + used > end) throw new ZstdError("Huffman weights truncated");
    for (let i = 0; i < n; i++) {
      const b = src[pos + 1 + (i >> 1)];
      weights.push(i & 1 ? b & 15 : b >> 4);
    }
  } else {
    used = 1 + hb;
    if (pos + used > end) throw new ZstdError("Huffman weights truncated");
    const { table, used: tused } = readFseDescription(src, pos + 1, pos + 1 + hb, 255, 6);
    const br = new BackReader(src, pos + 1 + tused, pos + 1 + hb);
    let s1 = br.read(table.log);
    let s2 = br.read(table.log);
    for (;;) {
      if (weights.length > 255) throw new ZstdError("too many Huffman weights");
      weights.push(table.symbol[s1]);
      s1 = table.base[s1] + br.read(table.nbBits[s1]);
      if (br.overflow) {
        weights.push(table.symbol[s2]);
        break;
      }
      weights.push(table.symbol[s2]);
      s2 = table.base[s2] + br.read(table.nbBits[s2]);
      if (br.overflow) {
        weights.push(table.symbol[s1]);
        break;
      }
    }
  }
  let total = 0;
  for (const w of weights) {
    if (w > 11) throw new ZstdError("Huffman weight too large");
    if (w > 0) total += 1 << (w - 1);
  }
  if (total === 0) throw new ZstdError("Huffman weights are all zero");
  const maxBits = highBit(total) + 1;
  if (maxBits > 11) throw new ZstdError("Huffman code too long");
  const rest = (1 << maxBits) - total;
  if (rest & (rest - 1)) throw new ZstdError("Huffman weights do not form a tree");
  weights.push(highBit(rest) + 1);
  const size = 1 << maxBits;
  const table: Huffman = { maxBits, symbol: new Uint8Array(size), nbBits: new Uint8Array(size) };
  const rankStart = new Array<number>(maxBits + 2).fill(0);
  const rankCount = new Array<number>(maxBits + 2).fill(0);
  for (const w of weights) rankCount[w]++;
  let next = 0;
  for (let w = 1; w <= maxBits; w++) {
    rankStart[w] = next;
    next += rankCount[w] << (w - 1);
  }
  for (let s = 0; s < weights.length; s++) {
    const w = weights[s];
    if (w === 0) continue;
    const len = 1 << (w - 1);
    const at = rankStart[w];
    for (let i = 0; i < len; i++) {
      table.symbol[at + i] = s;
      table.nbBits[at + i] = maxBits + 1 - w;
    }
    rankStart[w] += len;
  }
  return { table, used };
}

function decodeHuffStream(h: Huffman, src: Uint8Array, start: number, end: number, out: Uint8Array, outPos: number, count: number): void {
  const br = new BackReader(src, start, end);
  for (let i = 0; i < count; i++) {
    const v = br.peek(h.maxBits);
    out[outPos + i] = h.symbol[v];
    br.skip(h.nbBits[v]);
  }
  if (!br.done) throw new ZstdError("Huffman stream size mismatch");
}

// ---------------------------------------------------------------- decoder

interface FrameState {
  huffman: Huffman | null;
  ll: FseTable | null;
  of: FseTable | null;
  ml: FseTable | null;
  rep: [number, number, number];
}

/**
 * Decompresses zstd frames from `src` until `size` bytes were produced (the
 * rest of `src`, sector padding, is ignored).
 */
export function zstdDecompress(src: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(size);
  let op = 0;
  let pos = 0;
  const u32 = (p: number) => (src[p] | (src[p + 1] << 8) | (src[p + 2] << 16) | (src[p + 3] << 24)) >>> 0;
  while (op < size) {
    if (pos + 4 > src.length) throw new ZstdError(`input ended after ${op} of ${size} bytes`);
    const magic = u32(pos);
    pos += 4;
    if ((magic & 0xfffffff0) === 0x184d2a50) {
      if (pos + 4 > src.length) throw new ZstdError("skippable frame truncated");
      pos += 4 + u32(pos);
      continue;
    }
    if (magic !== MAGIC) throw new ZstdError(`bad frame magic 0x${magic.toString(16)}`);
    const fhd = src[pos++];
    const fcsFlag = fhd >> 6;
    const single = (fhd >> 5) & 1;
    if (fhd & 8) throw new ZstdError("reserved frame header bit set");
    const checksum = (fhd >> 2) & 1;
    const dictFlag = fhd & 3;
    if (!single) pos++; // window descriptor: the output bound is the cluster
    if (dictFlag) {
      const n = [0, 1, 2, 4][dictFlag];
      let id = 0;
      for (let i = 0; i < n; i++) id |= src[pos + i] << (8 * i);
      pos += n;
      if (id !== 0) throw new ZstdError("dictionaries are not supported");
    }
    pos += [single ? 1 : 0, 2, 4, 8][fcsFlag];
    const st: FrameState = { huffman: null, ll: null, of: null, ml: null, rep: [1, 4, 8] };
    for (;;) {
      if (pos + 3 > src.length) throw new ZstdError("block header truncated");
      const bh = src[pos] | (src[pos + 1] << 8) | (src[pos + 2] << 16);
      pos += 3;
      const last = bh & 1;
      const type = (bh >> 1) & 3;
      const bsize = bh >>> 3;
      if (bsize > BLOCK_MAX) throw new ZstdError("block too large");
      if (type === 0) {
        if (pos + bsize > src.length) throw new ZstdError("raw block truncated");
        if (op + bsize > size) throw new ZstdError("output larger than a cluster");
        out.set(src.subarray(pos, pos + bsize), op);
        op += bsize;
        pos += bsize;
      } else if (type === 1) {
        if (pos >= src.length) throw new ZstdError("RLE block truncated");
        if (op + bsize > size) throw new ZstdError("output larger than a cluster");
        out.fill(src[pos], op, op + bsize);
        op += bsize;
        pos += 1;
      } else if (type === 2) {
        if (pos + bsize > src.length) throw new ZstdError("compressed block truncated");
        op = decodeBlock(src, pos, pos + bsize, out, op, st);
        pos += bsize;
      } else throw new ZstdError("reserved block type");
      if (last) break;
    }
    if (checksum) pos += 4;
  }
  return out;
}

function decodeBlock(src: Uint8Array, pos: number, end: number, out: Uint8Array, op: number, st: FrameState): number {
  // Literals section.
  const b0 = src[pos];
  const ltype = b0 & 3;
  const sf = (b0 >> 2) & 3;
  let litSize: number;
  let literals: Uint8Array;
  if (ltype === 0 || ltype === 1) {
    let hl: number;
    if ((sf & 1) === 0) {
      litSize = b0 >> 3;
      hl = 1;
    } else if (sf === 1) {
      litSize = (b0 >> 4) + (src[pos + 1] << 4);
      hl = 2;
    } else {
      litSize = (b0 >> 4) + (src[pos + 1] << 4) + (src[pos + 2] << 12);
      hl = 3;
    }
    pos += hl;
    if (litSize > BLOCK_MAX) throw new ZstdError("too many literals");
    if (ltype === 0) {
      if (pos + litSize > end) throw new ZstdError("raw literals truncated");
      literals = src.subarray(pos, pos + litSize);
      pos += litSize;
    } else {
      literals = new Uint8Array(litSize).fill(src[pos]);
      pos += 1;
    }
  } else {
    let hl: number;
    let compSize: number;
    let streams = 4;
    if (sf === 0 || sf === 1) {
      streams = sf === 0 ? 1 : 4;
      litSize = (b0 >> 4) + ((src[pos + 1] & 0x3f) << 4);
      compSize = (src[pos + 1] >> 6) + (src[pos + 2] << 2);
      hl = 3;
    } else if (sf === 2) {
      litSize = (b0 >> 4) + (src[pos + 1] << 4) + ((src[pos + 2] & 3) << 12);
      compSize = (src[pos + 2] >> 2) + (src[pos + 3] << 6);
      hl = 4;
    } else {
      litSize = (b0 >> 4) + (src[pos + 1] << 4) + ((src[pos + 2] & 0x3f) << 12);
      compSize = (src[pos + 2] >> 6) + (src[pos + 3] << 2) + (src[pos + 4] << 10);
      hl = 5;
    }
    pos += hl;
    if (litSize > BLOCK_MAX) throw new ZstdError("too many literals");
    const cend = pos + compSize;
    if (cend > end) throw new ZstdError("compressed literals truncated");
    if (ltype === 2) {
      const { table, used } = readHuffman(src, pos, cend);
      st.huffman = table;
      pos += used;
    } else if (!st.huffman) throw new ZstdError("treeless literals without a previous Huffman table");
    literals = new Uint8Array(litSize);
    const h = st.huffman!;
    if (streams === 1) decodeHuffStream(h, src, pos, cend, literals, 0, litSize);
    else {
      if (pos + 6 > cend) throw new ZstdError("jump table truncated");
      const s1 = src[pos] | (src[pos + 1] << 8);
      const s2 = src[pos + 2] | (src[pos + 3] << 8);
      const s3 = src[pos + 4] | (src[pos + 5] << 8);
      const p1 = pos + 6;
      const p2 = p1 + s1;
      const p3 = p2 + s2;
      const p4 = p3 + s3;
      if (p4 > cend) throw new ZstdError("jump table out of range");
      const per = Math.floor((litSize + 3) / 4);
      if (per * 3 > litSize) throw new ZstdError("too few literals for four streams");
      decodeHuffStream(h, src, p1, p2, literals, 0, per);
      decodeHuffStream(h, src, p2, p3, literals, per, per);
      decodeHuffStream(h, src, p3, p4, literals, 2 * per, per);
      decodeHuffStream(h, src, p4, cend, literals, 3 * per, litSize - 3 * per);
    }
    pos = cend;
  }

  // Sequences section.
  if (pos >= end) throw new ZstdError("sequences section missing");
  let nbSeq = src[pos++];
  if (nbSeq >= 128) {
    if (nbSeq === 255) {
      nbSeq = src[pos] + (src[pos + 1] << 8) + 0x7f00;
      pos += 2;
    } else {
      nbSeq = ((nbSeq - 128) << 8) + src[pos];
      pos += 1;
    }
  }
  let lit = 0;
  const limit = out.length;
  if (nbSeq > 0) {
    const modes = src[pos++];
    if (modes & 3) throw new ZstdError("reserved sequence mode bits set");
    const pick = (mode: number, predef: FseTable, prev: FseTable | null, maxSym: number, maxLog: number): FseTable => {
      switch (mode) {
        case 0:
          return predef;
        case 1: {
          const s = src[pos++];
          if (s > maxSym) throw new ZstdError("RLE sequence symbol out of range");
          return rleFse(s);
        }
        case 2: {
          const { table, used } = readFseDescription(src, pos, end, maxSym, maxLog);
          pos += used;
          return table;
        }
        default:
          if (!prev) throw new ZstdError("repeat table mode without a previous table");
          return prev;
      }
    };
    st.ll = pick(modes >> 6, LL_PREDEF, st.ll, 35, 9);
    st.of = pick((modes >> 4) & 3, OF_PREDEF, st.of, 31, 8);
    st.ml = pick((modes >> 2) & 3, ML_PREDEF, st.ml, 52, 9);
    if (pos > end) throw new ZstdError("sequence tables truncated");
    const ll = st.ll;
    const of = st.of;
    const ml = st.ml;
    const br = new BackReader(src, pos, end);
    let sLL = br.read(ll.log);
    let sOF = br.read(of.log);
    let sML = br.read(ml.log);
    const rep = st.rep;
    for (let i = 0; i < nbSeq; i++) {
      const ofCode = of.symbol[sOF];
      const mlCode = ml.symbol[sML];
      const llCode = ll.symbol[sLL];
      if (ofCode > 31 || llCode > 35 || mlCode > 52) throw new ZstdError("sequence code out of range");
      const ofValue = (2 ** ofCode) + (ofCode > 0 ? readWide(br, ofCode) : 0);
      const mlv = ML_BASE[mlCode] + br.read(ML_BITS[mlCode]);
      const llv = LL_BASE[llCode] + br.read(LL_BITS[llCode]);
      let offset: number;
      if (ofValue > 3) {
        offset = ofValue - 3;
        rep[2] = rep[1];
        rep[1] = rep[0];
        rep[0] = offset;
      } else {
        const idx = ofValue - 1 + (llv === 0 ? 1 : 0);
        if (idx === 0) offset = rep[0];
        else {
          offset = idx === 3 ? rep[0] - 1 : rep[idx];
          if (idx > 1) rep[2] = rep[1];
          rep[1] = rep[0];
          rep[0] = offset;
        }
      }
      if (i + 1 < nbSeq) {
        sLL = ll.base[sLL] + br.read(ll.nbBits[sLL]);
        sML = ml.base[sML] + br.read(ml.nbBits[sML]);
        sOF = of.base[sOF] + br.read(of.nbBits[sOF]);
      }
      if (br.overflow) throw new ZstdError("sequence bitstream overrun");
      if (lit + llv > literals.length) throw new ZstdError("sequence uses more literals than there are");
      if (op + llv + mlv > limit) throw new ZstdError("output larger than a cluster");
      out.set(literals.subarray(lit, lit + llv), op);
      op += llv;
      lit += llv;
      if (offset <= 0 || offset > op) throw new ZstdError(`match offset ${offset} reaches before the start of the output`);
      let from = op - offset;
      if (offset >= mlv) {
        out.copyWithin(op, from, from + mlv);
        op += mlv;
      } else for (let k = 0; k < mlv; k++) out[op++] = out[from++];
    }
    if (!br.done) throw new ZstdError("sequence bitstream not fully consumed");
  }
  const restLen = literals.length - lit;
  if (op + restLen > limit) throw new ZstdError("output larger than a cluster");
  out.set(literals.subarray(lit), op);
  return op + restLen;
}

function readWide(br: BackReader, n: number): number {
  if (n <= 24) return br.read(n);
  const hi = br.read(n - 24);
  return hi * (1 << 24) + br.read(24);
}

// ---------------------------------------------------------------- encoder

/** An FSE encoding table (the transform of the decoding table). */
interface FseCTable {
  log: number;
  stateTable: Uint16Array;
  deltaNbBits: Int32Array;
  deltaFindState: Int32Array;
}

function buildFseC(norm: number[], log: number): FseCTable {
  const size = 1 << log;
  const { table } = spread(norm, log);
  const cumul = new Int32Array(norm.length + 1);
  for (let s = 0; s < norm.length; s++) cumul[s + 1] = cumul[s] + (norm[s] === -1 ? 1 : norm[s]);
  const stateTable = new Uint16Array(size);
  const pos = cumul.slice();
  for (let u = 0; u < size; u++) stateTable[pos[table[u]]++] = size + u;
  const deltaNbBits = new Int32Array(norm.length);
  const deltaFindState = new Int32Array(norm.length);
  let total = 0;
  for (let s = 0; s < norm.length; s++) {
    const n = norm[s];
    if (n === 0) continue;
    if (n === -1 || n === 1) {
      deltaNbBits[s] = (log << 16) - (1 << log);
      deltaFindState[s] = total - 1;
      total++;
    } else {
      const maxBitsOut = log - highBit(n - 1);
      const minStatePlus = n << maxBitsOut;
      deltaNbBits[s] = (maxBitsOut << 16) - minStatePlus;
      deltaFindState[s] = total - n;
      total += n;
    }
  }
  return { log, stateTable, deltaNbBits, deltaFindState };
}

const LL_C = buildFseC(LL_DEFAULT, 6);
const ML_C = buildFseC(ML_DEFAULT, 6);
const OF_C = buildFseC(OF_DEFAULT, 5);

/** Byte output with a fixed capacity (the caller knows the bound). */
class ByteOut {
  buf: Uint8Array;
  n = 0;
  constructor(capacity: number) {
    this.buf = new Uint8Array(capacity);
  }
  push(b: number): void {
    if (this.n === this.buf.length) this.grow(1);
    this.buf[this.n++] = b;
  }
  bytes(src: Uint8Array, from: number, to: number): void {
    if (this.n + (to - from) > this.buf.length) this.grow(to - from);
    this.buf.set(src.subarray(from, to), this.n);
    this.n += to - from;
  }
  private grow(extra: number): void {
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.n + extra + 64));
    next.set(this.buf.subarray(0, this.n));
    this.buf = next;
  }
}

/** Forward bit writer (little-endian, as zstd's BIT_CStream). */
class BitWriter {
  private acc = 0;
  private nbits = 0;
  constructor(private readonly out: ByteOut) {}

  /** Adds the low `bits` bits of `value` (bits <= 24 per call chunk). */
  add(value: number, bits: number): void {
    while (bits > 0) {
      const take = bits > 16 ? 16 : bits;
      this.acc |= (value & ((1 << take) - 1)) << this.nbits;
      this.nbits += take;
      value = Math.floor(value / (1 << take));
      bits -= take;
      while (this.nbits >= 8) {
        this.out.push(this.acc & 0xff);
        this.acc >>>= 8;
        this.nbits -= 8;
      }
    }
  }

  close(): void {
    this.add(1, 1);
    if (this.nbits > 0) this.out.push(this.acc & 0xff);
    this.acc = 0;
    this.nbits = 0;
  }
}

class CState {
  value = 0;
  constructor(private readonly t: FseCTable) {}

  init(symbol: number): void {
    const t = this.t;
    const nbBitsOut = (t.deltaNbBits[symbol] + (1 << 15)) >> 16;
    const v = (nbBitsOut << 16) - t.deltaNbBits[symbol];
    this.value = t.stateTable[(v >> nbBitsOut) + t.deltaFindState[symbol]];
  }

  encode(w: BitWriter, symbol: number): void {
    const t = this.t;
    const nbBitsOut = (this.value + t.deltaNbBits[symbol]) >> 16;
    w.add(this.value & ((1 << nbBitsOut) - 1), nbBitsOut);
    this.value = t.stateTable[(this.value >> nbBitsOut) + t.deltaFindState[symbol]];
  }

  flush(w: BitWriter): void {
    w.add(this.value & ((1 << this.t.log) - 1), this.t.log);
  }
}

function llCode(v: number): number {
  if (v < 16) return v;
  for (let c = 35; c >= 16; c--) if (v >= LL_BASE[c]) return c;
  return 16;
}

function mlCode(v: number): number {
  // v is the match length.
  if (v < 35) return v - 3;
  for (let c = 52; c >= 32; c--) if (v >= ML_BASE[c]) return c;
  return 32;
}

// Sequence buffers reused across blocks (a block holds at most 128 KiB / 4 sequences).
const SEQ_MAX = BLOCK_MAX / 3 + 1;
const seqLL = new Int32Array(SEQ_MAX);
const seqML = new Int32Array(SEQ_MAX);
const seqOff = new Int32Array(SEQ_MAX);
const codeLL = new Uint8Array(SEQ_MAX);
const codeML = new Uint8Array(SEQ_MAX);
const codeOF = new Uint8Array(SEQ_MAX);
const litBuf = new Uint8Array(BLOCK_MAX);

/** Appends a compressed block body for data[start, end) to `out`; returns false (and appends nothing) when it would not be smaller. */
function encodeBlock(data: Uint8Array, start: number, end: number, hash: Int32Array, out: ByteOut): boolean {
  // Greedy LZ77 with 4-byte hashes; matches may reach into earlier blocks.
  let ns = 0;
  let nl = 0;
  let anchor = start;
  let i = start;
  const HB = 15;
  while (i + 4 <= end) {
    const v = (data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)) >>> 0;
    const h = Math.imul(v, 2654435761) >>> (32 - HB);
    const cand = hash[h];
    hash[h] = i;
    if (cand >= 0 && i - cand < 1 << 24 && data[cand] === data[i] && data[cand + 1] === data[i + 1] && data[cand + 2] === data[i + 2] && data[cand + 3] === data[i + 3]) {
      let len = 4;
      while (i + len < end && len < 65536 && data[cand + len] === data[i + len]) len++;
      litBuf.set(data.subarray(anchor, i), nl);
      nl += i - anchor;
      seqLL[ns] = i - anchor;
      seqML[ns] = len;
      seqOff[ns] = i - cand;
      ns++;
      i += len;
      anchor = i;
      continue;
    }
    i++;
  }
  litBuf.set(data.subarray(anchor, end), nl);
  nl += end - anchor;
  const mark = out.n;
  // Raw literals section.
  if (nl < 32) out.push(nl << 3);
  else if (nl < 4096) {
    out.push(((nl & 15) << 4) | 4);
    out.push(nl >> 4);
  } else {
    out.push(((nl & 15) << 4) | 12);
    out.push((nl >> 4) & 0xff);
    out.push(nl >> 12);
  }
  out.bytes(litBuf, 0, nl);
  // Sequences section, predefined tables.
  if (ns < 128) out.push(ns);
  else if (ns < 0x7f00) {
    out.push((ns >> 8) + 128);
    out.push(ns & 0xff);
  } else {
    out.push(255);
    out.push((ns - 0x7f00) & 0xff);
    out.push((ns - 0x7f00) >> 8);
  }
  if (ns > 0) {
    out.push(0); // all three predefined
    const w = new BitWriter(out);
    const sLL = new CState(LL_C);
    const sML = new CState(ML_C);
    const sOF = new CState(OF_C);
    for (let k = 0; k < ns; k++) {
      codeLL[k] = llCode(seqLL[k]);
      codeML[k] = mlCode(seqML[k]);
      codeOF[k] = highBit(seqOff[k] + 3);
    }
    const extra = (k: number) => {
      w.add(seqLL[k] - LL_BASE[codeLL[k]], LL_BITS[codeLL[k]]);
      w.add(seqML[k] - ML_BASE[codeML[k]], ML_BITS[codeML[k]]);
      const offBase = seqOff[k] + 3;
      w.add(offBase - 2 ** codeOF[k], codeOF[k]);
    };
    const last = ns - 1;
    sML.init(codeML[last]);
    sOF.init(codeOF[last]);
    sLL.init(codeLL[last]);
    extra(last);
    for (let k = ns - 2; k >= 0; k--) {
      sOF.encode(w, codeOF[k]);
      sML.encode(w, codeML[k]);
      sLL.encode(w, codeLL[k]);
      extra(k);
    }
    sML.flush(w);
    sOF.flush(w);
    sLL.flush(w);
    w.close();
  }
  if (out.n - mark >= end - start) {
    out.n = mark;
    return false;
  }
  return true;
}

/** Compresses `data` into one zstd frame (single segment, no checksum). */
export function zstdCompress(data: Uint8Array): Uint8Array {
  const size = data.length;
  const out = new ByteOut(size + 64 + 4 * Math.ceil(size / BLOCK_MAX));
  out.push(0x28);
  out.push(0xb5);
  out.push(0x2f);
  out.push(0xfd);
  // Frame header: single segment, content size field of 1, 2 or 4 bytes.
  if (size < 256) {
    out.push(0x20);
    out.push(size);
  } else if (size < 65536 + 256) {
    out.push(0x60);
    out.push((size - 256) & 0xff);
    out.push((size - 256) >> 8);
  } else {
    out.push(0xa0);
    out.push(size & 0xff);
    out.push((size >> 8) & 0xff);
    out.push((size >> 16) & 0xff);
    out.push((size >>> 24) & 0xff);
  }
  const hash = new Int32Array(1 << 15).fill(-1);
  let pos = 0;
  const header = (bh: number) => {
    out.push(bh & 0xff);
    out.push((bh >> 8) & 0xff);
    out.push((bh >> 16) & 0xff);
  };
  do {
    const end = Math.min(size, pos + BLOCK_MAX);
    const last = end === size ? 1 : 0;
    const n = end - pos;
    let same = n > 0;
    for (let k = pos + 1; k < end && same; k++) same = data[k] === data[pos];
    if (same) {
      header(last | (1 << 1) | (n << 3));
      out.push(data[pos]);
    } else {
      const at = out.n;
      header(0);
      if (n > 0 && encodeBlock(data, pos, end, hash, out)) {
        const bh = last | (2 << 1) | ((out.n - at - 3) << 3);
        out.buf[at] = bh & 0xff;
        out.buf[at + 1] = (bh >> 8) & 0xff;
        out.buf[at + 2] = (bh >> 16) & 0xff;
      } else {
        out.n = at;
        header(last | (n << 3));
        out.bytes(data, pos, end);
      }
    }
    pos = end;
  } while (pos < size);
  return out.buf.slice(0, out.n);
}
