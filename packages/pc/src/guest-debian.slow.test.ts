// Downloads Debian's i386 kernel and busybox (about 55 MB) into the cache
// (or $TYPEVISOR_CACHE), then checks them with our loaders and real tools.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describeWithTools, tempDir } from "@typevisor/test-support";
import { afterAll, beforeAll, expect, it } from "vitest";
import { GUEST_INIT_SCRIPT, busyboxInitramfs, fetchDebianGuest, type DebianGuest } from "./guest-debian.js";
import { loadLinux, parseBzImage } from "./linux-loader.js";
import { pcMemoryLayout } from "./memory-map.js";
import { parseCpio } from "./initramfs.js";
import { fakeMemory } from "./test-util.js";

describeWithTools(["apt-get", "dpkg-deb", "cpio", "gzip"], "Debian guest (linux-image-686, busybox-static) fetched with apt-get download", () => {
  let guest: DebianGuest;
  const dir = tempDir("tv-guest-");
  afterAll(() => dir.remove());
  beforeAll(async () => {
    guest = await fetchDebianGuest({ onProgress: (l) => console.log(l) });
  }, 600_000);

  it("caches: a second fetch returns the same files without apt", async () => {
    const again = await fetchDebianGuest({ onProgress: () => expect.fail("a cached fetch must not run apt") });
    expect(again).toEqual(guest);
    expect(guest.kernelRelease).toMatch(/-686$/);
    expect(Object.keys(guest.packages).sort()).toEqual(["busybox-static", `linux-image-${guest.kernelRelease}`]);
  });

  it("the kernel parses as a bzImage with the 32-bit boot protocol and loads", () => {
    const kernel = new Uint8Array(readFileSync(guest.kernel));
    const info = parseBzImage(kernel);
    expect(info.version).toBeGreaterThanOrEqual(0x020f);
    expect(info.relocatable).toBe(true);
    expect(info.has64BitEntry).toBe(false); // i386 kernel
    expect(info.kernelVersion?.startsWith(guest.kernelRelease)).toBe(true);
    expect(["gzip", "xz", "lzma", "zstd", "lz4", "lzo", "bzip2"]).toContain(info.payload?.format);
    expect(info.initSize).toBeGreaterThan(info.kernelSize);
    const mem = fakeMemory(256 << 20);
    const plan = loadLinux(mem, pcMemoryLayout(256 << 20), { kernel, initrd: new Uint8Array(1 << 20), cmdline: "console=ttyS0" }, 0xe0000);
    expect(plan.kernelAddress).toBe(info.prefAddress);
    expect(plan.kernelAddress + info.initSize).toBeLessThanOrEqual(plan.initrd!.address);
    console.log(`kernel ${info.kernelVersion}: protocol ${(info.version >> 8).toString()}.${(info.version & 0xff).toString().padStart(2, "0")}, ${info.payload?.format} payload, init_size ${info.initSize}, pref_address 0x${info.prefAddress.toString(16)}`);
  });

  it("busybox is a static i386 executable and the guest initramfs passes cpio and gzip", async () => {
    const busybox = new Uint8Array(readFileSync(guest.busybox));
    expect([...busybox.subarray(0, 4)]).toEqual([0x7f, 0x45, 0x4c, 0x46]);
    expect(busybox[4]).toBe(1); // ELFCLASS32
    expect(busybox[18] | (busybox[19] << 8)).toBe(3); // EM_386
    const gz = await busyboxInitramfs({ busybox }).toGzip();
    const file = join(dir.path, "initrd.gz");
    writeFileSync(file, gz);
    expect(spawnSync("gzip", ["-t", file]).status).toBe(0);
    const list = execFileSync("sh", ["-c", `gzip -dc '${file}' | cpio -t --quiet`], { encoding: "utf8" }).trim().split("\n");
    expect(list).toContain("bin/busybox");
    expect(list).toContain("init");
    expect(list).toContain("dev/console");
    const members = parseCpio(new Uint8Array(execFileSync("gzip", ["-dc", file], { maxBuffer: 256 << 20 })));
    expect(Buffer.from(members.find((m) => m.name === "bin/busybox")!.data).equals(busybox)).toBe(true);
  });

  it("the guest's own busybox sed extracts tv.exec the way /init does (when the host can run i386 binaries)", (ctx) => {
    if (spawnSync(guest.busybox, ["true"]).status !== 0) {
      console.warn("SKIP: this host cannot run i386 executables");
      ctx.skip();
    }
    const exprs = [...GUEST_INIT_SCRIPT.matchAll(/sed -n '([^']+)' \/proc\/cmdline/g)].map((m) => m[1]).filter((e) => e.includes("tv\\.exec"));
    const extract = (cmdline: string): string => {
      for (const e of exprs) {
        const out = execFileSync(guest.busybox, ["sed", "-n", e], { input: cmdline + "\n", encoding: "utf8" }).trim();
        if (out) return out;
      }
      return "";
    };
    expect(extract('BOOT_IMAGE=x console=ttyS0 tv.exec="echo hello; uname -m" panic=-1')).toBe("echo hello; uname -m");
    expect(extract("console=ttyS0 tv.exec=/bin/true")).toBe("/bin/true");
    expect(extract("console=ttyS0")).toBe("");
    // And its shell accepts the whole script.
    writeFileSync(join(dir.path, "init"), GUEST_INIT_SCRIPT);
    const syntax = spawnSync(guest.busybox, ["sh", "-n", join(dir.path, "init")], { encoding: "utf8" });
    expect(syntax.status, syntax.stderr).toBe(0);
  });

  describeWithTools(["qemu-system-i386"], "the guest under QEMU (peer for the initramfs and /init)", () => {
    const qemu = (initrd: string, append: string): ReturnType<typeof spawn> =>
      spawn("qemu-system-i386", ["-m", "256", "-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot", "-kernel", guest.kernel, "-initrd", initrd, "-append", append], { stdio: ["pipe", "pipe", "pipe"] });
    const collect = (child: ReturnType<typeof spawn>, onData?: (all: string) => void): Promise<{ status: number | null; out: string }> =>
      new Promise((resolve) => {
        let out = "";
        const timer = setTimeout(() => child.kill("SIGKILL"), 240_000);
        child.stdout!.on("data", (d) => {
          out += d;
          onData?.(out);
        });
        child.on("close", (status) => {
          clearTimeout(timer);
          resolve({ status, out });
        });
      });
    let initrd = "";
    beforeAll(async () => {
      initrd = join(dir.path, "guest-initrd.gz");
      writeFileSync(initrd, await busyboxInitramfs({ busybox: new Uint8Array(readFileSync(guest.busybox)) }).toGzip());
    });

    it("runs tv.exec from the kernel command line and powers off", async () => {
      const r = await collect(qemu(initrd, 'console=ttyS0 quiet panic=-1 tv.exec="echo hello from guest; uname -m; ls /dev/console"'));
      expect(r.out).toContain("tv: exec: echo hello from guest");
      expect(r.out).toMatch(/hello from guest\r?\ni686\r?\n\/dev\/console/);
      expect(r.out).toContain("tv: exit status 0");
      expect(r.out).toMatch(/reboot: Power down/);
      expect(r.status).toBe(0);
    }, 300_000);

    it("gives a shell on the console without tv.exec", async () => {
      const child = qemu(initrd, "console=ttyS0 quiet panic=-1");
      let sent = false;
      const r = await collect(child, (all) => {
        if (!sent && all.includes("tv: shell on the console")) {
          sent = true;
          child.stdin!.write("echo answer=$((6*7))\n");
          child.stdin!.write("exit\n");
        }
      });
      expect(r.out).toContain("answer=42");
      expect(r.out).toMatch(/reboot: Power down/);
    }, 300_000);
  });
});
