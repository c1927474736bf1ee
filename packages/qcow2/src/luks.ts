// LUKS1 encryption inside qcow2 (spec: crypt_method 2 and the "Full disk
// encryption header pointer" extension; the LUKS1 on-disk format). The LUKS
// header and key material live in clusters of the qcow2 file; data clusters
// are encrypted per 512-byte sector with the plain64 IV of the sector's
// offset in the file (QEMU uses the host offset for LUKS in qcow2).
import { createCipheriv, createDecipheriv, createHash, pbkdf2Sync, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import { Qcow2FormatError, Qcow2UnsupportedError, Qcow2UsageError } from "./errors.js";
import type { HeaderAreaWrite } from "./create.js";
import type { Qcow2Header } from "./header.js";
import type { ClusterCipher } from "./qcow2-image.js";
import type { ByteStore } from "./store.js";

const MAGIC = [0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe];
const SLOT_ACTIVE = 0x00ac71f3;
const SLOT_INACTIVE = 0x0000dead;
const HEADER_BYTES = 592;
const SECTOR = 512;
/** Largest LUKS area accepted (8 slots of 4000 stripes of 64-byte keys is ~2 MiB). */
const MAX_LUKS_BYTES = 16 << 20;
const MAX_ITERATIONS = 50_000_000;

const HASHES: Record<string, number> = { sha1: 20, sha256: 32, sha512: 64 };

function cstr(b: Uint8Array, at: number, len: number): string {
  let end = at;
  while (end < at + len && b[end] !== 0) end++;
  return new TextDecoder().decode(b.subarray(at, end));
}

/** Anti-forensic diffusion (LUKS1 AF_split): hash each digest-sized piece with its index. */
function diffuse(block: Uint8Array, hash: string): void {
  const ds = HASHES[hash];
  const count = Math.ceil(block.length / ds);
  for (let i = 0; i < count; i++) {
    const len = Math.min(ds, block.length - i * ds);
    const iv = new Uint8Array(4);
    new DataView(iv.buffer).setUint32(0, i);
    const h = createHash(hash).update(iv).update(block.subarray(i * ds, i * ds + len)).digest();
    block.set(h.subarray(0, len), i * ds);
  }
}

function afMerge(material: Uint8Array, keyBytes: number, stripes: number, hash: string): Uint8Array {
  const d = new Uint8Array(keyBytes);
  for (let s = 0; s < stripes - 1; s++) {
    const blk = material.subarray(s * keyBytes, (s + 1) * keyBytes);
    for (let i = 0; i < keyBytes; i++) d[i] ^= blk[i];
    diffuse(d, hash);
  }
  const last = material.subarray((stripes - 1) * keyBytes, stripes * keyBytes);
  const out = new Uint8Array(keyBytes);
  for (let i = 0; i < keyBytes; i++) out[i] = d[i] ^ last[i];
  return out;
}

function afSplit(key: Uint8Array, stripes: number, hash: string): Uint8Array {
  const kb = key.length;
  const out = new Uint8Array(kb * stripes);
  const d = new Uint8Array(kb);
  for (let s = 0; s < stripes - 1; s++) {
    const blk = randomBytes(kb);
    out.set(blk, s * kb);
    for (let i = 0; i < kb; i++) d[i] ^= blk[i];
    diffuse(d, hash);
  }
  for (let i = 0; i < kb; i++) out[(stripes - 1) * kb + i] = d[i] ^ key[i];
  return out;
}

/** A sector cipher: AES in XTS or CBC mode with the plain64 IV. */
class SectorCipher implements ClusterCipher {
  private readonly algo: string;
  private readonly key: Uint8Array;
  private readonly iv = new Uint8Array(16);
  private readonly ivView = new DataView(this.iv.buffer);

  constructor(cipher: string, mode: string, key: Uint8Array) {
    if (cipher !== "aes") throw new Qcow2UnsupportedError("QCOW2_LUKS_CIPHER", `LUKS cipher '${cipher}' is not supported (aes is)`);
    const bits = mode.startsWith("xts") ? key.length * 4 : key.length * 8;
    const m = mode.split("-")[0];
    if (mode !== `${m}-plain64` && mode !== `${m}-plain`) throw new Qcow2UnsupportedError("QCOW2_LUKS_CIPHER", `LUKS mode '${mode}' is not supported (xts-plain64, cbc-plain64)`);
    if (m !== "xts" && m !== "cbc") throw new Qcow2UnsupportedError("QCOW2_LUKS_CIPHER", `LUKS mode '${mode}' is not supported`);
    if (![128, 192, 256].includes(bits)) throw new Qcow2FormatError("QCOW2_LUKS_KEY", `LUKS key of ${key.length} bytes does not fit aes-${m}`);
    this.algo = `aes-${bits}-${m}`;
    this.key = key;
  }

  private run(decrypt: boolean, sector: number, data: Uint8Array): void {
    this.ivView.setUint32(0, sector >>> 0, true);
    this.ivView.setUint32(4, Math.floor(sector / 4294967296), true);
    const c = decrypt ? createDecipheriv(this.algo, this.key, this.iv) : createCipheriv(this.algo, this.key, this.iv);
    c.setAutoPadding(false);
    const out = c.update(data);
    c.final();
    data.set(out);
  }

  /** @inheritdoc */
  decrypt(hostOffset: number, buf: Uint8Array): void {
    this.each(true, hostOffset, buf);
  }

  /** @inheritdoc */
  encrypt(hostOffset: number, buf: Uint8Array): void {
    this.each(false, hostOffset, buf);
  }

  private each(decrypt: boolean, hostOffset: number, buf: Uint8Array): void {
    if (hostOffset % SECTOR !== 0 || buf.length % SECTOR !== 0) throw new Qcow2UsageError("QCOW2_LUKS_ALIGNMENT", "encrypted I/O must be whole 512-byte sectors");
    const first = hostOffset / SECTOR;
    for (let i = 0; i < buf.length / SECTOR; i++) this.run(decrypt, first + i, buf.subarray(i * SECTOR, (i + 1) * SECTOR));
  }
}

/**
 * Opens the LUKS1 header at [offset, offset+length) of the image file and
 * unlocks a key slot with `passphrase`.
 */
export async function openLuks(store: ByteStore, offset: number, length: number, passphrase: string | Uint8Array): Promise<ClusterCipher> {
  if (length < HEADER_BYTES || length > MAX_LUKS_BYTES || offset + length > store.size) {
    throw new Qcow2FormatError("QCOW2_LUKS_HEADER", `LUKS header area of ${length} bytes at 0x${offset.toString(16)} is out of range`, { offset, field: "crypto_header" });
  }
  const area = new Uint8Array(length);
  await store.read(offset, area);
  const v = new DataView(area.buffer);
  for (let i = 0; i < 6; i++) if (area[i] !== MAGIC[i]) throw new Qcow2FormatError("QCOW2_LUKS_HEADER", "bad LUKS magic", { offset, field: "luks.magic" });
  if (v.getUint16(6) !== 1) throw new Qcow2UnsupportedError("QCOW2_LUKS_VERSION", `LUKS version ${v.getUint16(6)} is not supported (1 is)`, { offset: offset + 6, field: "luks.version" });
  const cipher = cstr(area, 8, 32);
  const mode = cstr(area, 40, 32);
  const hash = cstr(area, 72, 32);
  if (!HASHES[hash]) throw new Qcow2UnsupportedError("QCOW2_LUKS_HASH", `LUKS hash '${hash}' is not supported`, { offset: offset + 72, field: "luks.hash-spec" });
  const keyBytes = v.getUint32(108);
  if (keyBytes < 16 || keyBytes > 64) throw new Qcow2FormatError("QCOW2_LUKS_HEADER", `LUKS key-bytes ${keyBytes} is out of range`, { offset: offset + 108, field: "luks.key-bytes" });
  const digest = area.slice(112, 132);
  const digestSalt = area.slice(132, 164);
  const digestIter = v.getUint32(164);
  if (digestIter === 0 || digestIter > MAX_ITERATIONS) throw new Qcow2FormatError("QCOW2_LUKS_HEADER", `LUKS mk-digest-iter ${digestIter} is out of range`, { offset: offset + 164, field: "luks.mk-digest-iter" });
  const pass = typeof passphrase === "string" ? new TextEncoder().encode(passphrase) : passphrase;
  for (let slot = 0; slot < 8; slot++) {
    const at = 208 + slot * 48;
    const active = v.getUint32(at);
    if (active !== SLOT_ACTIVE) continue;
    const iterations = v.getUint32(at + 4);
    const salt = area.slice(at + 8, at + 40);
    const materialSector = v.getUint32(at + 40);
    const stripes = v.getUint32(at + 44);
    const field = `luks.key-slot[${slot}]`;
    if (iterations === 0 || iterations > MAX_ITERATIONS || stripes === 0 || stripes > 4000) throw new Qcow2FormatError("QCOW2_LUKS_HEADER", `LUKS key slot ${slot} has out-of-range iterations or stripes`, { offset: offset + at, field });
    const matLen = Math.ceil((keyBytes * stripes) / SECTOR) * SECTOR;
    const matOff = materialSector * SECTOR;
    if (matOff + matLen > length) throw new Qcow2FormatError("QCOW2_LUKS_HEADER", `LUKS key slot ${slot} material runs past the header area`, { offset: offset + at + 40, field });
    const slotKey = pbkdf2Sync(pass, salt, iterations, keyBytes, hash);
    const material = area.slice(matOff, matOff + matLen);
    new SectorCipher(cipher, mode, slotKey).decrypt(0, material);
    const master = afMerge(material, keyBytes, stripes, hash);
    const check = pbkdf2Sync(master, digestSalt, digestIter, 20, hash);
    if (timingSafeEqual(check, digest)) return new SectorCipher(cipher, mode, master);
  }
  throw new Qcow2UsageError("QCOW2_LUKS_PASSPHRASE", "the passphrase does not unlock any LUKS key slot");
}

/** Options of {@link luksCreateHook}. */
export interface LuksCreateOptions {
  /** PBKDF2 iterations for the key slot (default 200000). */
  iterations?: number;
  /** Hash for PBKDF2 and the AF splitter (default sha256). */
  hash?: "sha1" | "sha256" | "sha512";
}

/**
 * For {@link createQcow2}'s `prepare`: sets up LUKS (aes-256-xts-plain64,
 * one active key slot) in clusters reserved right after the first
 * refcount block, and returns what to write there.
 */
export function luksCreateHook(passphrase: string | Uint8Array, o: LuksCreateOptions = {}): (h: Qcow2Header, reserve: (bytes: number) => number) => HeaderAreaWrite[] {
  return (h, reserve) => {
    const hash = o.hash ?? "sha256";
    const iterations = o.iterations ?? 200_000;
    const keyBytes = 64;
    const stripes = 4000;
    const master = randomBytes(keyBytes);
    const align = (n: number) => Math.ceil(n / 4096) * 4096;
    const slotLen = align(keyBytes * stripes);
    const firstSlot = align(HEADER_BYTES);
    const length = firstSlot + 8 * slotLen;
    const area = new Uint8Array(length);
    const v = new DataView(area.buffer);
    area.set(MAGIC, 0);
    v.setUint16(6, 1);
    const put = (at: number, s: string) => area.set(new TextEncoder().encode(s), at);
    put(8, "aes");
    put(40, "xts-plain64");
    put(72, hash);
    v.setUint32(104, length / SECTOR);
    v.setUint32(108, keyBytes);
    const digestSalt = randomBytes(32);
    const digestIter = Math.max(1000, Math.floor(iterations / 8));
    area.set(pbkdf2Sync(master, digestSalt, digestIter, 20, hash), 112);
    area.set(digestSalt, 132);
    v.setUint32(164, digestIter);
    put(168, randomUUID());
    const pass = typeof passphrase === "string" ? new TextEncoder().encode(passphrase) : passphrase;
    for (let slot = 0; slot < 8; slot++) {
      const at = 208 + slot * 48;
      const matOff = firstSlot + slot * slotLen;
      v.setUint32(at + 40, matOff / SECTOR);
      v.setUint32(at + 44, stripes);
      if (slot !== 0) {
        v.setUint32(at, SLOT_INACTIVE);
        continue;
      }
      const salt = randomBytes(32);
      v.setUint32(at, SLOT_ACTIVE);
      v.setUint32(at + 4, iterations);
      area.set(salt, at + 8);
      const material = afSplit(master, stripes, hash);
      const padded = new Uint8Array(Math.ceil(material.length / SECTOR) * SECTOR);
      padded.set(material);
      new SectorCipher("aes", "xts-plain64", pbkdf2Sync(pass, salt, iterations, keyBytes, hash)).encrypt(0, padded);
      area.set(padded, matOff);
    }
    const offset = reserve(length);
    h.cryptMethod = 2;
    h.cryptoHeader = { offset, length };
    return [{ offset, data: area }];
  };
}
