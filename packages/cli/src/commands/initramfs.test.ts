import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { parseCpio } from "@typevisor/pc";
import { tempDir } from "@typevisor/test-support";
import { afterAll, describe, expect, it } from "vitest";
import { main } from "../main.js";
import { captureIo } from "../test-io.js";


describe("typevisor initramfs", () => {
  const dir = tempDir("tv-cli-initramfs-");
  afterAll(() => dir.remove());

  it("packs a folder (gzip by default) and a gen_init_cpio spec", async () => {
    const root = join(dir.path, "root");
    mkdirSync(join(root, "etc"), { recursive: true });
    writeFileSync(join(root, "etc", "motd"), "hi\n");
    const out = join(dir.path, "a.gz");
    const c = captureIo();
    expect(await main(["initramfs", "--out", out, root], c.io)).toBe(0);
    expect(c.err()).toMatch(/wrote .*: 2 entries/);
    expect(parseCpio(gunzipSync(readFileSync(out))).map((m) => m.name)).toEqual(["etc", "etc/motd"]);

    writeFileSync(join(dir.path, "init.sh"), "#!/bin/sh\n");
    writeFileSync(join(dir.path, "spec"), "nod /dev/console 0600 0 0 c 5 1\nfile /init init.sh 0755 0 0\n");
    const raw = join(dir.path, "b.cpio");
    expect(await main(["initramfs", "--no-gzip", "--out", raw, join(dir.path, "spec")], captureIo().io)).toBe(0);
    expect(parseCpio(readFileSync(raw)).map((m) => m.name)).toEqual(["dev", "dev/console", "init"]);
  });

  it("reports usage and missing inputs", async () => {
    const c = captureIo();
    expect(await main(["initramfs", "--help"], c.io)).toBe(0);
    expect(c.out()).toMatch(/usage: typevisor initramfs/);
    expect(await main(["initramfs", "x"], captureIo().io)).toBe(2);
    const e = captureIo();
    expect(await main(["initramfs", "--out", join(dir.path, "c"), join(dir.path, "missing")], e.io)).toBe(1);
    expect(e.err()).toMatch(/no such file or folder/);
    const s = captureIo();
    writeFileSync(join(dir.path, "badspec"), "bogus /x\n");
    expect(await main(["initramfs", "--out", join(dir.path, "c"), join(dir.path, "badspec")], s.io)).toBe(1);
    expect(s.err()).toMatch(/spec line 1: unknown entry type "bogus"/);
  });
});

describe("typevisor guest", () => {
  it("has help and rejects unknown subcommands", async () => {
    const c = captureIo();
    expect(await main(["guest", "--help"], c.io)).toBe(0);
    expect(c.out()).toMatch(/apt-get download/);
    expect(await main(["guest", "frob"], captureIo().io)).toBe(2);
    expect(await main(["guest", "fetch", "--output=xml"], captureIo().io)).toBe(2);
  });
});
