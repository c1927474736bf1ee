// Damaged images: each must fail with a typed error that names the field and
// the offset, never hang, never crash, never allocate without bound.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describeWithTools, seeded, tempDir } from "@typevisor/test-support";
import { afterAll, beforeAll, expect, it } from "vitest";
import { checkImage, listSnapshots, MemoryStore, openImage, Qcow2Error, Qcow2Image, type BlockDevice } from "../src/index.js";
import { qemuImg, qemuIo } from "./helpers.js";

const dir = tempDir("qcow2-hostile-");
afterAll(() => dir.remove());
let good: Buffer;
let compressedGood: Buffer;

/** Opens, reads everything, lists snapshots and checks; returns the first error. */
async function exercise(bytes: Uint8Array, write = false): Promise<unknown> {
  try {
    const img = await Qcow2Image.open(new MemoryStore(bytes), { readOnly: !write });
    try {
      const buf = new Uint8Array(img.size);
      await img.read(0, buf);
      await listSnapshots(img);
      await img.map();
      if (write) await img.write(0, new Uint8Array(img.size).fill(0x55));
      await checkImage(img);
    } finally {
      await img.close().catch(() => undefined);
    }
  } catch (e) {
    return e;
  }
  return undefined;
}

function patched(base: Buffer, edits: [number, number, number | bigint][]): Buffer {
  const b = Buffer.from(base);
  for (const [off, size, value] of edits) {
    if (size === 8) b.writeBigUInt64BE(BigInt(value), off);
    else if (size === 4) b.writeUInt32BE(Number(value) >>> 0, off);
    else if (size === 2) b.writeUInt16BE(Number(value), off);
    else b[off] = Number(value);
  }
  return b;
}

describeWithTools(["qemu-img", "qemu-io"], "hostile images", () => {
  let l1: number;
  let reftable: number;
  let l2: number;
  beforeAll(() => {
    const f = join(dir.path, "good.qcow2");
    qemuImg("create", "-q", "-f", "qcow2", f, "2M");
    qemuIo(f, ["write -P 1 0 128k"]);
    qemuImg("snapshot", "-c", "s1", f);
    good = readFileSync(f);
    l1 = Number(good.readBigUInt64BE(40));
    reftable = Number(good.readBigUInt64BE(48));
    l2 = Number(good.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
    const c = join(dir.path, "comp.qcow2");
    qemuImg("create", "-q", "-f", "qcow2", c, "1M");
    qemuIo(c, ["write -c -P 3 0 64k"]);
    compressedGood = readFileSync(c);
  });

  const cases: [string, () => Buffer, string, string | RegExp][] = [
    ["bad magic", () => patched(good, [[0, 4, 0x12345678]]), "QCOW2_BAD_MAGIC", "magic"],
    ["unknown version", () => patched(good, [[4, 4, 9]]), "QCOW2_VERSION", "version"],
    ["cluster_bits out of range", () => patched(good, [[20, 4, 30]]), "QCOW2_BAD_HEADER", "cluster_bits"],
    ["L1 table past the end of file", () => patched(good, [[40, 8, 0x7ff0000]]), "QCOW2_BAD_HEADER", "l1_table_offset"],
    ["unaligned L1 table", () => patched(good, [[40, 8, l1 + 8]]), "QCOW2_BAD_HEADER", "l1_table_offset"],
    ["L1 table overlapping the header", () => patched(good, [[40, 8, 0]]), "QCOW2_BAD_HEADER", "l1_table_offset"],
    ["L1 table overlapping the refcount table", () => patched(good, [[40, 8, reftable]]), "QCOW2_METADATA_OVERLAP", "l1_table_offset"],
    ["L1 too small for the disk", () => patched(good, [[36, 4, 0]]), "QCOW2_BAD_HEADER", "l1_size"],
    ["L1 size absurd", () => patched(good, [[36, 4, 0x10000000]]), "QCOW2_BAD_HEADER", "l1_size"],
    ["refcount table of absurd size", () => patched(good, [[56, 4, 0xffffffff]]), "QCOW2_BAD_HEADER", "refcount_table_clusters"],
    ["refcount table past the end", () => patched(good, [[48, 8, 0x40000000]]), "QCOW2_BAD_HEADER", "refcount_table_offset"],
    ["L2 table past the end of file", () => patched(good, [[l1, 8, (1n << 63n) + 0x0f000000n]]), "QCOW2_L2_PAST_EOF", "l1_table[0]"],
    ["unaligned L2 table", () => patched(good, [[l1, 8, (1n << 63n) + BigInt(l2 + 512)]]), "QCOW2_UNALIGNED_L2", "l1_table[0]"],
    ["data cluster past the end of file", () => patched(good, [[l2, 8, (1n << 63n) + 0x7f000000n]]), "QCOW2_DATA_PAST_EOF", "l2_entry"],
    ["unaligned data cluster", () => patched(good, [[l2, 8, (1n << 63n) + 0x50200n]]), "QCOW2_UNALIGNED_DATA", "l2_entry"],
    ["snapshot table past the end of file", () => patched(good, [[60, 4, 5000]]), "QCOW2_SNAPSHOT_TABLE_PAST_EOF", /snapshot/],
    ["too many snapshots", () => patched(good, [[60, 4, 0x7fffffff]]), "QCOW2_BAD_HEADER", "nb_snapshots"],
    ["unknown incompatible feature", () => patched(good, [[79, 1, 0x80]]), "QCOW2_UNKNOWN_INCOMPATIBLE", "incompatible_features"],
    ["header extension running past the header", () => patched(good, [[112, 4, 0x1234], [116, 4, 0x7fffffff]]), "QCOW2_BAD_HEADER", "header_extension.length"],
    ["backing file name too long", () => patched(good, [[8, 8, 200], [16, 4, 100000]]), "QCOW2_BAD_HEADER", "backing_file_size"],
  ];

  for (const [name, make, code, field] of cases) {
    it(name, async () => {
      const e = (await exercise(make())) as Qcow2Error;
      expect(e, "expected an error").toBeInstanceOf(Qcow2Error);
      expect(e.code).toBe(code);
      if (typeof field === "string") expect(e.field).toBe(field);
      else expect(e.field).toMatch(field);
      expect(e.offset).toBeTypeOf("number");
      expect(e.message).toMatch(/offset 0x/);
    });
  }

  it("compressed lengths out of range", async () => {
    const b = Buffer.from(compressedGood);
    const l1o = Number(b.readBigUInt64BE(40));
    const l2o = Number(b.readBigUInt64BE(l1o) & 0x00fffffffffffe00n);
    // 16-bit refcounts, 64k clusters: x = 54; give the descriptor an offset past the file.
    const bad = Buffer.from(b);
    bad.writeUInt32BE(0x40000000 | 0x3f0000, l2o);
    bad.writeUInt32BE(0, l2o + 4);
    const e = (await exercise(bad)) as Qcow2Error;
    expect(e).toBeInstanceOf(Qcow2Error);
    expect(e.code).toBe("QCOW2_COMPRESSED_RANGE");
    expect(e.field).toBe("l2_entry.compressed");
    // Garbage where the compressed data is.
    const hi = b.readUInt32BE(l2o);
    const lo = b.readUInt32BE(l2o + 4);
    const off = (hi & 0x3fffff) * 2 ** 32 + lo;
    const junk = Buffer.from(b);
    junk.fill(0xff, off, Math.min(off + 24, junk.length));
    const e2 = (await exercise(junk)) as Qcow2Error;
    expect(e2.code).toBe("QCOW2_BAD_COMPRESSED_DATA");
    expect(e2.offset).toBe(off);
  });

  it("a data cluster pointing at metadata is refused on write, not overwritten", async () => {
    const bad = patched(good, [[l2, 8, (1n << 63n) + BigInt(l1)]]);
    const e = (await exercise(bad, true)) as Qcow2Error;
    expect(e.code).toBe("QCOW2_METADATA_OVERLAP");
  });

  it("header rules: unknown compatible bits kept, unknown autoclear bits cleared, unknown extensions preserved", async () => {
    // Insert an unknown extension before the end marker (qemu writes the
    // feature table first, then the end marker at its own position).
    const b = Buffer.from(good);
    let pos = 112;
    while (b.readUInt32BE(pos) !== 0) pos += 8 + Math.ceil(b.readUInt32BE(pos + 4) / 8) * 8;
    b.writeUInt32BE(0x7e57e57e, pos);
    b.writeUInt32BE(5, pos + 4);
    b.write("hello", pos + 8);
    b.writeUInt32BE(0, pos + 16);
    b.writeUInt32BE(0, pos + 20);
    b[87] |= 0x40; // compatible bit 6
    b[95] |= 0x20; // autoclear bit 5
    const store = new MemoryStore(b);
    const img = await Qcow2Image.open(store);
    expect(img.header.autoclear & (1n << 5n)).toBe(0n);
    await img.setLazyRefcounts(true); // forces a header rewrite
    await img.close();
    const after = store.bytes();
    const again = await Qcow2Image.open(new MemoryStore(after), { readOnly: true });
    expect(again.header.compatible & (1n << 6n)).toBe(1n << 6n);
    expect(again.header.unknownExtensions).toEqual([{ type: 0x7e57e57e, data: new TextEncoder().encode("hello") }]);
    await again.close();
  });

  it("an unknown incompatible bit is named from the feature table", async () => {
    const b = Buffer.from(good);
    let pos = 112;
    while (b.readUInt32BE(pos) !== 0x6803f857) pos += 8 + Math.ceil(b.readUInt32BE(pos + 4) / 8) * 8;
    // Rename the first entry (incompatible bit 0) to bit 9 "frobnication".
    b[pos + 8] = 0;
    b[pos + 9] = 9;
    b.fill(0, pos + 10, pos + 56);
    b.write("frobnication", pos + 10);
    b[78] |= 2; // incompatible bit 9
    const e = (await exercise(b)) as Qcow2Error;
    expect(e.code).toBe("QCOW2_UNKNOWN_INCOMPATIBLE");
    expect(e.message).toContain("bit 9 (frobnication)");
  });

  it("the corrupt bit allows read-only opening only", async () => {
    const bad = patched(good, [[79, 1, 2]]);
    await expect(Qcow2Image.open(new MemoryStore(bad))).rejects.toMatchObject({ code: "QCOW2_CORRUPT" });
    const ro = await Qcow2Image.open(new MemoryStore(bad), { readOnly: true });
    await ro.close();
  });

  it("random damage to metadata never escapes as anything but a Qcow2Error", async () => {
    const next = seeded(2024);
    const metaEnd = Math.min(good.length, 7 * 65536);
    for (let t = 0; t < 150; t++) {
      const b = Buffer.from(good);
      for (let k = 0; k < 1 + (next() % 4); k++) {
        // Aim at the first 112 header bytes, the L1, the reftable, the L2 and the refblock.
        const targets = [next() % 112, l1 + (next() % 16), reftable + (next() % 16), l2 + (next() % 64), 0x20000 + (next() % 64), next() % metaEnd];
        b[targets[next() % targets.length]] ^= 1 << (next() % 8);
      }
      const e = await exercise(b, next() % 2 === 0);
      if (e !== undefined && !(e instanceof Qcow2Error)) throw e;
    }
  });
});

void (null as unknown as BlockDevice);
void openImage;
