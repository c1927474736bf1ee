import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { describeWithTools, tempDir } from "@typevisor/test-support";
import { afterAll, describe, expect, it } from "vitest";
import { GUEST_INIT_SCRIPT, addDirectory, busyboxInitramfs, initramfsFromPath } from "./guest-debian.js";
import { InitramfsBuilder, InitramfsError, addSpec, cpioType, parseCpio } from "./initramfs.js";

function sample(): InitramfsBuilder {
  return new InitramfsBuilder()
    .file("/init", "#!/bin/sh\necho hi\n", 0o755)
    .file("/etc/motd", "hello\n")
    .symlink("/bin/sh", "busybox")
    .node("/dev/console", "c", 5, 1)
    .dir("/empty", 0o700)
    .file("/a/b/c/deep.txt", new Uint8Array([1, 2, 3]));
}

describe("initramfs builder (newc)", () => {
  it("writes parents before children, sequential inodes and a trailer", () => {
    const members = parseCpio(sample().toCpio());
    expect(members.map((m) => `${cpioType(m.mode)} ${m.name}`)).toEqual([
      "file init",
      "dir etc",
      "file etc/motd",
      "dir bin",
      "symlink bin/sh",
      "dir dev",
      "char dev/console",
      "dir empty",
      "dir a",
      "dir a/b",
      "dir a/b/c",
      "file a/b/c/deep.txt",
    ]);
    const cpio = sample().toCpio();
    expect(new TextDecoder().decode(cpio.subarray(0, 6))).toBe("070701");
    expect(cpio.length % 4).toBe(0);
    const con = members.find((m) => m.name === "dev/console")!;
    expect([con.rdevMajor, con.rdevMinor, con.mode & 0o7777]).toEqual([5, 1, 0o600]);
    expect(new TextDecoder().decode(members.find((m) => m.name === "bin/sh")!.data)).toBe("busybox");
  });

  it("is deterministic and rejects bad paths", () => {
    expect(sample().toCpio()).toEqual(sample().toCpio());
    expect(() => new InitramfsBuilder().file("../etc/x", "")).toThrow(InitramfsError);
    expect(() => new InitramfsBuilder().file("/", "")).toThrow(/archive root/);
    expect(() => new InitramfsBuilder().file("/x", "").file("/x/y", "")).toThrow(/not a directory/);
    expect(() => new InitramfsBuilder().add({ type: "file", path: "/x", data: new Uint8Array(), mode: 0o10000 }).toCpio()).toThrow(/mode/);
  });

  it("reads gen_init_cpio specs and names the bad line", () => {
    const b = addSpec(new InitramfsBuilder(), "# comment\ndir /dev 0755 0 0\nnod /dev/console 0600 0 0 c 5 1\nfile /init init.sh 0755 0 0\nslink /bin/sh busybox 0777 0 0\npipe /run/fifo 0644 0 0\n", (loc) => new TextEncoder().encode(`contents of ${loc}`));
    const members = parseCpio(b.toCpio());
    expect(members.map((m) => m.name)).toEqual(["dev", "dev/console", "init", "bin", "bin/sh", "run", "run/fifo"]);
    expect(new TextDecoder().decode(members[2].data)).toBe("contents of init.sh");
    expect(() => addSpec(new InitramfsBuilder(), "dir /x 0755 0 0\nfile /y\n", () => new Uint8Array())).toThrow(/spec line 2: "file" needs 5 fields/);
    expect(() => addSpec(new InitramfsBuilder(), "nod /d 0600 0 0 x 1 1", () => new Uint8Array())).toThrow(/device type "x"/);
    expect(() => addSpec(new InitramfsBuilder(), "dir /d 0999 0 0", () => new Uint8Array())).toThrow(/octal/);
  });

  it("rejects malformed archives with the offset", () => {
    const cpio = sample().toCpio();
    expect(() => parseCpio(cpio.subarray(0, 50))).toThrow(/offset 0 is cut off/);
    const bad = cpio.slice();
    bad[0] = 0x41;
    expect(() => parseCpio(bad)).toThrow(/bad cpio magic/);
  });

  it("the guest /init parses tv.exec from the command line", () => {
    expect(GUEST_INIT_SCRIPT.startsWith("#!/bin/busybox sh\n")).toBe(true);
    // Run the two sed expressions of /init against sample command lines with the host's sed.
    const exprs = [...GUEST_INIT_SCRIPT.matchAll(/sed -n '([^']+)' \/proc\/cmdline/g)].map((m) => m[1]).filter((e) => e.includes("tv\\.exec"));
    expect(exprs.length).toBe(2);
    const extract = (cmdline: string): string => {
      for (const e of exprs) {
        const out = execFileSync("sed", ["-n", e], { input: cmdline + "\n", encoding: "utf8" }).trim();
        if (out) return out;
      }
      return "";
    };
    expect(extract('console=ttyS0 tv.exec="uname -a; cat /proc/cpuinfo" quiet')).toBe("uname -a; cat /proc/cpuinfo");
    expect(extract("console=ttyS0 tv.exec=/bin/true quiet")).toBe("/bin/true");
    expect(extract("console=ttyS0 quiet")).toBe("");
  });

  it("the guest /init finds the console the kernel uses (the last console=) to attach to a module's console", () => {
    const [expr] = [...GUEST_INIT_SCRIPT.matchAll(/con=\$\(sed -n '([^']+)' \/proc\/cmdline\)/g)].map((m) => m[1]);
    const run = (cmdline: string): string => execFileSync("sed", ["-n", expr], { input: cmdline + "\n", encoding: "utf8" }).trim();
    expect(run("console=ttyS0 console=hvc0 quiet")).toBe("hvc0");
    expect(run("quiet console=ttyS0,115200n8")).toBe("ttyS0");
    expect(run("quiet")).toBe("");
  });
});

describeWithTools(["cpio", "gzip"], "initramfs checked with GNU cpio and gzip", () => {
  const dir = tempDir("tv-initramfs-");
  afterAll(() => dir.remove());

  it("gzip -t accepts the compressed archive and cpio -t lists every member", async () => {
    const gz = await sample().toGzip();
    const file = join(dir.path, "initrd.gz");
    writeFileSync(file, gz);
    expect(spawnSync("gzip", ["-t", file]).status).toBe(0);
    const list = execFileSync("sh", ["-c", `gzip -dc '${file}' | cpio -t --quiet`], { encoding: "utf8" }).trim().split("\n");
    expect(list).toEqual(parseCpio(gunzipSync(gz)).map((m) => m.name));
  });

  it("cpio -i extracts the same contents, modes and links", () => {
    const out = join(dir.path, "x");
    mkdirSync(out);
    const archive = new InitramfsBuilder().file("/init", "#!/bin/sh\n", 0o755).file("/etc/motd", "hello\n", 0o640).symlink("/bin/sh", "busybox").dir("/empty", 0o700).toCpio();
    execFileSync("cpio", ["-i", "-d", "--quiet", "--no-absolute-filenames"], { cwd: out, input: archive });
    expect(readFileSync(join(out, "etc/motd"), "utf8")).toBe("hello\n");
    expect(statSync(join(out, "etc/motd")).mode & 0o777).toBe(0o640);
    expect(statSync(join(out, "init")).mode & 0o777).toBe(0o755);
    expect(readlinkSync(join(out, "bin/sh"))).toBe("busybox");
    expect(statSync(join(out, "empty")).isDirectory()).toBe(true);
  });

  it("reads archives GNU cpio writes (the other direction), and packs a host folder", () => {
    const src = join(dir.path, "src");
    mkdirSync(join(src, "sub"), { recursive: true });
    writeFileSync(join(src, "sub", "file.txt"), "data\n");
    symlinkSync("sub/file.txt", join(src, "link"));
    const theirs = execFileSync("sh", ["-c", "find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet"], { cwd: src });
    const names = parseCpio(new Uint8Array(theirs)).map((m) => `${cpioType(m.mode)} ${m.name.replace(/^\.\//, "")}`);
    expect(names).toEqual(["symlink link", "dir sub", "file sub/file.txt"]);
    const ours = parseCpio(addDirectory(new InitramfsBuilder(), src).toCpio()).map((m) => `${cpioType(m.mode)} ${m.name}`);
    expect(ours).toEqual(names);
    expect(parseCpio(initramfsFromPath(src).toCpio()).length).toBe(3);
  });

  it("builds the busybox guest layout", () => {
    const members = parseCpio(busyboxInitramfs({ busybox: new Uint8Array([0x7f, 0x45, 0x4c, 0x46]), modules: ["virtio_pci"] }).toCpio());
    const byName = new Map(members.map((m) => [m.name, m]));
    expect(cpioType(byName.get("dev/console")!.mode)).toBe("char");
    expect(byName.get("init")!.mode & 0o111).toBe(0o111);
    expect(new TextDecoder().decode(byName.get("etc/modules")!.data)).toBe("virtio_pci\n");
    expect(new TextDecoder().decode(byName.get("bin/sh")!.data)).toBe("busybox");
  });
});
