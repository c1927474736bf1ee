// `typevisor img` against qemu-img: same files, same verdicts.
import { execFileSync, spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describeWithTools, seeded, tempDir } from "@typevisor/test-support";
import { afterAll, expect, it } from "vitest";
import { main } from "../main.js";
import { captureIo } from "../test-io.js";

const dir = tempDir("img-cli-");
afterAll(() => dir.remove());
const p = (name: string) => join(dir.path, name);

async function tv(...argv: string[]): Promise<{ status: number; out: string; err: string }> {
  const c = captureIo();
  const status = await main(["img", ...argv], c.io);
  return { status, out: c.out(), err: c.err() };
}

function qemu(...args: string[]): string {
  return execFileSync("qemu-img", args, { encoding: "utf8" });
}

function qemuStatus(...args: string[]): number {
  return spawnSync("qemu-img", args).status ?? -1;
}

function randomFile(path: string, size: number, seed: number): Uint8Array {
  const next = seeded(seed);
  const b = new Uint8Array(size);
  // Half the 64 KiB blocks hold data, the rest stay zero.
  for (let blk = 0; blk < size / 65536; blk++) {
    if (next() % 2) continue;
    for (let i = blk * 65536; i < (blk + 1) * 65536; i += 4) {
      const v = next();
      b[i] = v;
      b[i + 1] = v >> 8;
      b[i + 2] = next() % 4 === 0 ? v >> 16 : 0;
    }
  }
  writeFileSync(path, b);
  return b;
}

describeWithTools(["qemu-img"], "typevisor img against qemu-img", () => {
  it("--help lists every subcommand; errors go to stderr with a non-zero status", async () => {
    const h = await tv("--help");
    expect(h.status).toBe(0);
    for (const s of ["info", "check", "create", "convert", "compare", "map", "snapshot", "resize", "rebase", "commit", "amend"]) expect(h.out).toContain(s);
    expect((await tv("info", "--help")).status).toBe(0);
    const bad = await tv("frob");
    expect(bad.status).toBe(2);
    const missing = await tv("info", p("does-not-exist.qcow2"));
    expect(missing.status).toBe(1);
    expect(missing.err).toContain("does-not-exist");
    expect((await tv("create", "-f", "qcow2", "-o", "nonsense=1", p("x.qcow2"), "1M")).status).toBe(2);
  });

  it("create makes images qemu-img accepts, for each option", async () => {
    const cases = ["", "compat=0.10", "cluster_size=4k,refcount_bits=8", "lazy_refcounts=on", "extended_l2=on", "compression_type=zstd", "preallocation=metadata", "refcount_bits=64"];
    for (const [i, o] of cases.entries()) {
      const f = p(`c${i}.qcow2`);
      const r = await tv("create", "-q", "-f", "qcow2", ...(o ? ["-o", o] : []), f, "20M");
      expect(r.status, r.err).toBe(0);
      expect(qemuStatus("check", f)).toBe(0);
      const info = JSON.parse(qemu("info", "--output=json", f));
      expect(info["virtual-size"]).toBe(20 << 20);
      const ours = JSON.parse((await tv("info", "--output=json", f)).out);
      for (const k of ["virtual-size", "cluster-size", "format", "dirty-flag"]) expect(ours[k]).toEqual(info[k]);
      expect(ours["format-specific"]).toEqual(info["format-specific"]);
    }
  });

  it("info matches qemu-img info on qemu's images, with backing file and snapshots", async () => {
    const base = p("i-base.qcow2");
    const top = p("i-top.qcow2");
    qemu("create", "-q", "-f", "qcow2", base, "8M");
    qemu("create", "-q", "-f", "qcow2", "-b", "i-base.qcow2", "-F", "qcow2", top);
    qemu("snapshot", "-c", "first", top);
    const theirs = JSON.parse(qemu("info", "--output=json", top));
    const ours = JSON.parse((await tv("info", "--output=json", top)).out);
    for (const k of ["virtual-size", "cluster-size", "format", "backing-filename", "backing-filename-format", "format-specific"]) expect(ours[k]).toEqual(theirs[k]);
    expect(ours.snapshots.map((s: { name: string; id: string }) => [s.id, s.name])).toEqual(theirs.snapshots.map((s: { name: string; id: string }) => [s.id, s.name]));
    expect((await tv("info", top)).out).toContain("backing file: i-base.qcow2");
    const chain = JSON.parse((await tv("info", "--backing-chain", "--output=json", top)).out);
    expect(chain.map((i: { filename: string }) => i.filename)).toEqual([top, base]);
    // A missing backing file does not stop info (qemu-img behaves the same).
    qemu("create", "-q", "-f", "qcow2", "-u", "-b", "gone.qcow2", "-F", "qcow2", p("orphan.qcow2"), "1M");
    expect((await tv("info", p("orphan.qcow2"))).status).toBe(0);
  });

  it("check: exit codes 0 / 3 leaks / 2 corruptions as qemu-img, and -r repairs what qemu-img then accepts", async () => {
    const f = p("chk.qcow2");
    qemu("create", "-q", "-f", "qcow2", f, "8M");
    execFileSync("qemu-io", ["-c", "write -P 1 0 1M", f]);
    expect((await tv("check", f)).status).toBe(0);
    const json = JSON.parse((await tv("check", "--output=json", f)).out);
    const theirs = JSON.parse(qemu("check", "--output=json", f));
    expect(json).toEqual({ ...theirs, filename: f });
    // Leak: raise the refcount of a free cluster past the end (16-bit entries in the block at 0x20000).
    const img = readFileSync(f);
    const rb = 0x20000;
    const leaked = Buffer.from(img);
    const used = Math.ceil(leaked.length / 65536);
    leaked.writeUInt16BE(1, rb + used * 2);
    writeFileSync(f, Buffer.concat([leaked, Buffer.alloc(65536)]));
    expect(qemuStatus("check", f)).toBe(3);
    expect((await tv("check", f)).status).toBe(3);
    expect((await tv("check", "-r", "leaks", f)).status).toBe(0);
    expect(qemuStatus("check", f)).toBe(0);
    // Corruption: drop the refcount of the L1 table's cluster (cluster 3) to 0.
    const bad = readFileSync(f);
    bad.writeUInt16BE(0, rb + 3 * 2);
    writeFileSync(f, bad);
    expect(qemuStatus("check", f)).toBe(2);
    expect((await tv("check", f)).status).toBe(2);
    expect((await tv("check", "-r", "all", f)).status).toBe(0);
    expect(qemuStatus("check", f)).toBe(0);
  });

  it("convert: raw to qcow2 (plain, -c zlib, -c zstd, options) and back, equal to qemu-img's view", async () => {
    const raw = p("cv.raw");
    randomFile(raw, 6 << 20, 5);
    for (const [i, args] of [[], ["-c"], ["-c", "-o", "compression_type=zstd"], ["-o", "cluster_size=4k,extended_l2=off,refcount_bits=4"], ["-o", "extended_l2=on"]].entries()) {
      const q = p(`cv${i}.qcow2`);
      const r = await tv("convert", "-f", "raw", "-O", "qcow2", ...args, raw, q);
      expect(r.status, r.err).toBe(0);
      expect(qemuStatus("check", q)).toBe(0);
      expect(qemu("compare", "-f", "raw", "-F", "qcow2", raw, q)).toContain("identical");
      const back = p(`cv${i}.back.raw`);
      expect((await tv("convert", "-O", "raw", q, back)).status).toBe(0);
      expect(readFileSync(back).equals(readFileSync(raw))).toBe(true);
      if (args[0] === "-c") expect(JSON.parse((await tv("check", "--output=json", q)).out)["compressed-clusters"]).toBeGreaterThan(0);
    }
    // qemu's compressed image through our convert.
    const qc = p("qemu-c.qcow2");
    qemu("convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd", raw, qc);
    const back = p("qemu-c.raw");
    expect((await tv("convert", "-p", "-O", "raw", qc, back)).status).toBe(0);
    expect(readFileSync(back).equals(readFileSync(raw))).toBe(true);
  });

  it("LUKS: create and convert with the passphrase from the environment; qemu-img decrypts the result", async () => {
    const raw = p("lk.raw");
    randomFile(raw, 1 << 20, 11);
    const f = p("lk.qcow2");
    process.env.TYPEVISOR_IMG_PASSPHRASE = "s3cret";
    try {
      expect((await tv("create", "-q", "-f", "qcow2", "-o", "encrypt.format=luks", p("lk-empty.qcow2"), "1M")).status).toBe(0);
      const r = await tv("convert", "-O", "qcow2", "-o", "encrypt.format=luks", raw, f);
      expect(r.status, r.err).toBe(0);
      const info = JSON.parse((await tv("info", "--output=json", f)).out);
      expect(info.encrypted).toBe(true);
      expect(info["format-specific"].data.encrypt.format).toBe("luks");
    } finally {
      delete process.env.TYPEVISOR_IMG_PASSPHRASE;
    }
    // Metadata needs no passphrase; data does.
    expect((await tv("info", f)).out).toContain("encrypted: yes");
    expect((await tv("convert", "-O", "raw", f, p("lk.fail"))).status).toBe(1);
    execFileSync("qemu-img", ["convert", "--object", "secret,id=s0,data=s3cret", "--image-opts", `driver=qcow2,file.filename=${f},encrypt.key-secret=s0`, "-O", "raw", p("lk.out")]);
    expect(readFileSync(p("lk.out")).equals(readFileSync(raw))).toBe(true);
  });

  it("compare: 0 identical, 1 different (with the first offset)", async () => {
    const a = p("cmp-a.raw");
    const data = randomFile(a, 1 << 20, 7);
    const b = p("cmp-b.qcow2");
    qemu("convert", "-O", "qcow2", a, b);
    expect((await tv("compare", a, b)).status).toBe(0);
    data[300000] ^= 1;
    writeFileSync(a, data);
    const r = await tv("compare", a, b);
    expect(r.status).toBe(1);
    expect(r.out).toContain(`Content mismatch at offset ${300000 - (300000 % 512)}!`);
  });

  it("map: the same data, zero and unallocated ranges as qemu-img map", async () => {
    const f = p("map.qcow2");
    qemu("create", "-q", "-f", "qcow2", f, "4M");
    execFileSync("qemu-io", ["-c", "write -P 1 64k 128k", "-c", "write -z 1M 64k", "-c", "write -P 2 2M 4k", f]);
    const theirs = JSON.parse(qemu("map", "--output=json", f)) as { start: number; length: number; data: boolean; zero: boolean }[];
    const ours = JSON.parse((await tv("map", "--output=json", f)).out) as typeof theirs;
    const byteView = (rows: typeof theirs) => rows.map((r) => `${r.start}+${r.length}:${r.data}/${r.zero}`);
    expect(byteView(ours)).toEqual(byteView(theirs));
  });

  it("snapshots: created by one tool, listed and applied by the other", async () => {
    const f = p("snap.qcow2");
    qemu("create", "-q", "-f", "qcow2", f, "4M");
    execFileSync("qemu-io", ["-c", "write -P 1 0 1M", f]);
    expect((await tv("snapshot", "-c", "ours1", f)).status).toBe(0);
    expect(qemu("snapshot", "-l", f)).toContain("ours1");
    expect(qemuStatus("check", f)).toBe(0);
    execFileSync("qemu-io", ["-c", "write -P 2 0 512k", f]);
    qemu("snapshot", "-c", "theirs1", f);
    execFileSync("qemu-io", ["-c", "write -P 3 0 4M", f]);
    expect((await tv("snapshot", "-l", f)).out).toMatch(/ours1[\s\S]*theirs1/);
    // Apply qemu's snapshot with our code.
    expect((await tv("snapshot", "-a", "theirs1", f)).status).toBe(0);
    expect(qemuStatus("check", f)).toBe(0);
    const expectBuf = new Uint8Array(4 << 20);
    expectBuf.fill(2, 0, 512 << 10);
    expectBuf.fill(1, 512 << 10, 1 << 20);
    writeFileSync(p("snap.expect"), expectBuf);
    expect(qemu("compare", "-F", "raw", f, p("snap.expect"))).toContain("identical");
    // Apply ours with qemu.
    qemu("snapshot", "-a", "ours1", f);
    expectBuf.fill(1, 0, 1 << 20);
    writeFileSync(p("snap.expect"), expectBuf);
    expect(qemu("compare", "-F", "raw", f, p("snap.expect"))).toContain("identical");
    expect((await tv("snapshot", "-d", "theirs1", f)).status).toBe(0);
    expect((await tv("snapshot", "-d", "1", f)).status).toBe(0);
    expect(qemu("snapshot", "-l", f)).not.toContain("ours1");
    expect(qemuStatus("check", f)).toBe(0);
    expect((await tv("check", f)).status).toBe(0);
  });

  it("resize grows and shrinks; rebase and commit keep the guest's view; amend changes options", async () => {
    const f = p("rs.qcow2");
    qemu("create", "-q", "-f", "qcow2", f, "4M");
    execFileSync("qemu-io", ["-c", "write -P 9 0 4M", f]);
    expect((await tv("resize", f, "+4M")).status).toBe(0);
    expect(JSON.parse(qemu("info", "--output=json", f))["virtual-size"]).toBe(8 << 20);
    expect((await tv("resize", f, "3M")).status).toBe(1);
    expect((await tv("resize", "--shrink", f, "-5M")).status).toBe(0);
    expect(JSON.parse(qemu("info", "--output=json", f))["virtual-size"]).toBe(3 << 20);
    expect(qemuStatus("check", f)).toBe(0);
    const expectBuf = new Uint8Array(3 << 20).fill(9);
    writeFileSync(p("rs.expect"), expectBuf);
    expect(qemu("compare", "-F", "raw", f, p("rs.expect"))).toContain("identical");

    // Chain base <- mid <- top; rebase top onto base (safe), then commit.
    const base = p("rb-base.qcow2");
    const mid = p("rb-mid.qcow2");
    const top = p("rb-top.qcow2");
    qemu("create", "-q", "-f", "qcow2", base, "2M");
    execFileSync("qemu-io", ["-c", "write -P 1 0 2M", base]);
    qemu("create", "-q", "-f", "qcow2", "-b", "rb-base.qcow2", "-F", "qcow2", mid);
    execFileSync("qemu-io", ["-c", "write -P 2 512k 512k", mid]);
    qemu("create", "-q", "-f", "qcow2", "-b", "rb-mid.qcow2", "-F", "qcow2", top);
    execFileSync("qemu-io", ["-c", "write -P 3 1536k 64k", top]);
    qemu("convert", "-O", "raw", top, p("rb.before"));
    expect((await tv("rebase", "-b", "rb-base.qcow2", "-F", "qcow2", top)).status).toBe(0);
    expect(JSON.parse(qemu("info", "--output=json", top))["backing-filename"]).toBe("rb-base.qcow2");
    expect(qemu("compare", "-F", "raw", top, p("rb.before"))).toContain("identical");
    expect((await tv("commit", top)).status).toBe(0);
    expect(qemu("compare", "-F", "raw", base, p("rb.before"))).toContain("identical");
    expect(qemu("compare", "-F", "raw", top, p("rb.before"))).toContain("identical");
    expect(qemuStatus("check", top)).toBe(0);
    expect(qemuStatus("check", base)).toBe(0);

    const a = p("am.qcow2");
    qemu("create", "-q", "-f", "qcow2", a, "4M");
    execFileSync("qemu-io", ["-c", "write -P 4 0 1M", a]);
    expect((await tv("amend", "-o", "lazy_refcounts=on,refcount_bits=8", a)).status).toBe(0);
    let info = JSON.parse(qemu("info", "--output=json", a));
    expect(info["format-specific"].data["lazy-refcounts"]).toBe(true);
    expect(info["format-specific"].data["refcount-bits"]).toBe(8);
    expect(qemuStatus("check", a)).toBe(0);
    expect((await tv("amend", "-o", "lazy_refcounts=off,refcount_bits=16,compat=0.10", a)).status).toBe(0);
    info = JSON.parse(qemu("info", "--output=json", a));
    expect(info["format-specific"].data.compat).toBe("0.10");
    expect(qemuStatus("check", a)).toBe(0);
    writeFileSync(p("am.expect"), new Uint8Array(4 << 20).fill(4, 0, 1 << 20));
    expect(qemu("compare", "-F", "raw", a, p("am.expect"))).toContain("identical");
  });
});
