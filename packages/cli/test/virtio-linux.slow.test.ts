// Linux's own virtio drivers (virtio_pci, virtio_blk, virtio_console,
// virtio_rng, virtio_net from Debian's kernel package) against our devices,
// through `typevisor run`. The guest's words and the data it writes are the
// verdict; qemu-img reads the disks back.
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { describeWithTools, tempDir } from "@typevisor/test-support";
import { DEVICE_TEST_APPEND, probe, runGuest, section } from "./guest-run.js";

const MiB = 1 << 20;

describeWithTools(["apt-get", "dpkg", "qemu-img"], "virtio devices under Linux's drivers", () => {
  const dir = tempDir("tv-virtio-");
  afterAll(() => dir.remove());
  const path = (name: string): string => join(dir.path, name);

  describe("virtio-blk", () => {
    const host = randomBytes(2 * MiB);
    let out = "";
    let status = -1;
    beforeAll(async () => {
      // Disk 1: data prepared on the host (raw -> qcow2 by qemu-img), read-only.
      writeFileSync(path("host.raw"), host);
      execFileSync("qemu-img", ["convert", "-f", "raw", "-O", "qcow2", path("host.raw"), path("host.qcow2")]);
      // Disk 2: an empty qcow2 the guest writes a pattern to.
      execFileSync("qemu-img", ["create", "-f", "qcow2", path("out.qcow2"), "8M"]);
      const script = [
        probe("read", "dd if=/dev/vda bs=65536 count=32 2>/dev/null | sha256sum"),
        probe("size", "cat /sys/block/vda/size /sys/block/vdb/size /sys/block/vda/ro"),
        // 1 MiB of a recognisable pattern at 3 MiB into disk 2, then flush.
        "yes typevisor-virtio-blk | head -c 1048576 > /tmp/p",
        probe("write", "dd if=/tmp/p of=/dev/vdb bs=65536 seek=48 conv=fsync 2>&1 | tail -n 1"),
      ].join("; ");
      const r = await runGuest(["--exec", script, "--append", DEVICE_TEST_APPEND, "--no-reboot", "--timeout", "1500", "--disk", `${path("host.qcow2")},readonly`, "--disk", path("out.qcow2")]);
      out = r.out;
      status = r.status;
    }, 1_600_000);

    it("the guest reads host-prepared data with a matching checksum", () => {
      expect(status).toBe(0);
      expect(section(out, "read").trim()).toBe(`${createHash("sha256").update(host).digest("hex")}  -`);
      // Sizes in 512-byte sectors; vda is read-only.
      expect(section(out, "size").trim().split(/\s+/)).toEqual([String((2 * MiB) / 512), String((8 * MiB) / 512), "1"]);
    });

    it("a pattern the guest writes lands in the qcow2 file (read back by qemu-img)", () => {
      expect(execFileSync("qemu-img", ["check", path("out.qcow2")], { encoding: "utf8" })).toContain("No errors were found");
      execFileSync("qemu-img", ["convert", "-O", "raw", path("out.qcow2"), path("out.raw")]);
      const raw = readFileSync(path("out.raw"));
      const line = Buffer.from("typevisor-virtio-blk\n");
      const expected = Buffer.alloc(MiB);
      for (let i = 0; i < MiB; i++) expected[i] = line[i % line.length];
      expect(raw.subarray(3 * MiB, 4 * MiB).equals(expected)).toBe(true);
      expect(raw.subarray(0, 3 * MiB).every((b) => b === 0)).toBe(true);
      expect(raw.subarray(4 * MiB).every((b) => b === 0)).toBe(true);
    });
  });

  it("a file system the guest makes (busybox mke2fs, mounted by the kernel's ext4 driver) survives a guest reboot", async () => {
    execFileSync("qemu-img", ["create", "-f", "qcow2", path("fs.qcow2"), "32M"]);
    // First boot: no file system yet -> mkfs, write a file, reboot.
    // Second boot: mount it and print the file, then power off. A first boot
    // that cannot make or mount the file system powers off instead of
    // rebooting into the same failure.
    const script = [
      "mkdir -p /mnt",
      "if mount -t ext4 /dev/vda /mnt 2>/dev/null; then echo BEGIN second; cat /mnt/hello; md5sum /mnt/big | cut -c1-32; echo END second; umount /mnt; poweroff -f; fi",
      "mke2fs -q /dev/vda && mount -t ext4 /dev/vda /mnt || { echo FAILED to make or mount the file system; poweroff -f; }",
      "echo written-before-reboot > /mnt/hello; yes 0123456789 | head -c 3000000 > /mnt/big",
      "echo BEGIN first; md5sum /mnt/big | cut -c1-32; echo END first; umount /mnt; sync; reboot -f",
    ].join("; ");
    const r = await runGuest(["--exec", script, "--append", DEVICE_TEST_APPEND, "--modules", "ext4", "--timeout", "2500", "--disk", path("fs.qcow2")]);
    expect(r.status).toBe(0);
    const first = section(r.out, "first").trim();
    const second = section(r.out, "second").trim().split(/\r?\n/);
    expect(second).toEqual(["written-before-reboot", first]);
    expect(first).toBe(createHash("md5").update(Buffer.from("0123456789\n".repeat(272728)).subarray(0, 3000000)).digest("hex"));
    expect(execFileSync("qemu-img", ["check", path("fs.qcow2")], { encoding: "utf8" })).toContain("No errors were found");
  }, 2_600_000);

  it("hvc0 carries text both ways, and /dev/hwrng yields random data", async () => {
    // The guest's console is hvc0 on our stdio: the exec's output arrives
    // through virtio-console, and a line we type reaches the guest through it.
    const script = [
      probe("rng", "cat /sys/class/misc/hw_random/rng_current; dd if=/dev/hwrng bs=256 count=4 2>/dev/null | od -An -tx1 | tr -d ' \\n' | head -c 2048; echo"),
      "echo READY-FOR-INPUT; read -r line; echo BEGIN echo; echo got:$line; echo END echo",
    ].join("; ");
    const r = await runGuest(
      ["--exec", script, "--append", "console=hvc0 cryptomgr.notests", "--console", "stdio", "--serial", "none", "--rng", "--no-reboot", "--timeout", "1500"],
      { after: "READY-FOR-INPUT", text: "hello-through-hvc0\n" },
    );
    expect(r.status).toBe(0);
    expect(section(r.out, "echo").trim()).toBe("got:hello-through-hvc0");
    const [current, hex] = section(r.out, "rng").trim().split(/\r?\n/);
    expect(current).toMatch(/^virtio_rng/);
    expect(hex).toMatch(/^[0-9a-f]{2048}$/);
    // 1 KiB of real randomness: every byte value shows up, none dominates.
    const bytes = Buffer.from(hex, "hex");
    const counts = new Map<number, number>();
    for (const b of bytes) counts.set(b, (counts.get(b) ?? 0) + 1);
    expect(counts.size).toBeGreaterThan(200);
    expect(Math.max(...counts.values())).toBeLessThan(20);
  }, 1_600_000);

  it("two guests on one switch ping each other", async () => {
    const guest = (ip: string, mac: string, then: string) =>
      runGuest([
        "--exec",
        `ip link set eth0 up; ip addr add ${ip}/24 dev eth0; ${then}`,
        "--append", DEVICE_TEST_APPEND, "--net", `switch=tv-test-lan,mac=${mac},pcap=${path(`${ip}.pcap`)}`, "--no-reboot", "--timeout", "2500",
      ]);
    // Each side waits until its peer answers (the peer may still be
    // booting), pings it three times, then stays up 15 s so that the peer's
    // own pings, which may start later, are answered too.
    const pingPeer = (peer: string): string =>
      `for i in $(seq 1 600); do ping -c 1 -W 1 ${peer} >/dev/null 2>&1 && break; sleep 1; done; echo BEGIN ping; ping -c 3 ${peer} | tail -n 2; echo END ping; sleep 15`;
    const [a, b] = await Promise.all([guest("10.0.2.1", "52:54:00:00:00:01", pingPeer("10.0.2.2")), guest("10.0.2.2", "52:54:00:00:00:02", pingPeer("10.0.2.1"))]);
    for (const r of [a, b]) {
      expect(r.status).toBe(0);
      expect(section(r.out, "ping")).toMatch(/3 packets transmitted, 3 (packets )?received, 0% packet loss/);
    }
    // A's capture is a valid pcap file holding both guests' echo requests
    // and replies (at least the six each side counted above).
    const pcap = readFileSync(path("10.0.2.1.pcap"));
    expect(pcap.readUInt32LE(0)).toBe(0xa1b2c3d4);
    const icmp = new Map<string, number>();
    for (let at = 24; at + 16 <= pcap.length; ) {
      const len = pcap.readUInt32LE(at + 8);
      const f = pcap.subarray(at + 16, at + 16 + len);
      at += 16 + len;
      if (f.length < 34 || f.readUInt16BE(12) !== 0x0800 || f[23] !== 1) continue;
      const ip = f.subarray(14);
      const type = ip[(ip[0] & 15) * 4];
      const key = `${type === 8 ? "request" : type === 0 ? "reply" : type} from ${ip.subarray(12, 16).join(".")}`;
      icmp.set(key, (icmp.get(key) ?? 0) + 1);
    }
    for (const key of ["request from 10.0.2.1", "reply from 10.0.2.2", "request from 10.0.2.2", "reply from 10.0.2.1"]) expect(icmp.get(key) ?? 0, key).toBeGreaterThanOrEqual(3);
  }, 2_600_000);
});
