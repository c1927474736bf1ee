import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { describeWithTools, tempDir } from "@typevisor/test-support";
import { PcapWriter } from "./net-pcap.js";
import { arpRequest, udp } from "../test/frames.js";

function collect() {
  const chunks: Uint8Array[] = [];
  return {
    sink: { write: (b: Uint8Array) => chunks.push(b) },
    bytes: () => Buffer.concat(chunks),
  };
}

describe("PcapWriter", () => {
  it("writes the libpcap 2.4 header and records with microsecond timestamps", () => {
    const out = collect();
    const w = new PcapWriter(out.sink, { now: () => 1_700_000_000_123.456, snaplen: 20 });
    w.record(new Uint8Array(30).fill(7));
    const b = out.bytes();
    expect(b.length).toBe(24 + 16 + 20);
    expect(b.readUInt32LE(0)).toBe(0xa1b2c3d4);
    expect([b.readUInt16LE(4), b.readUInt16LE(6)]).toEqual([2, 4]);
    expect(b.readUInt32LE(16)).toBe(20); // snaplen
    expect(b.readUInt32LE(20)).toBe(1); // Ethernet
    expect(b.readUInt32LE(24)).toBe(1_700_000_000);
    expect(b.readUInt32LE(28)).toBe(123_456);
    expect(b.readUInt32LE(32)).toBe(20); // captured
    expect(b.readUInt32LE(36)).toBe(30); // original length
    expect(w.packets).toBe(1);
  });

  it("ignores frames after close", () => {
    const out = collect();
    let ended = 0;
    const w = new PcapWriter({ ...out.sink, end: () => ended++ });
    w.close();
    w.record(new Uint8Array(20));
    expect(out.bytes().length).toBe(24);
    expect(ended).toBe(1);
  });
});

describeWithTools(["tcpdump"], "PcapWriter output read by tcpdump", () => {
  it("tcpdump decodes the frames", () => {
    const dir = tempDir();
    try {
      const out = collect();
      let t = 1_600_000_000_000;
      const w = new PcapWriter(out.sink, { now: () => (t += 1.5) });
      w.record(arpRequest("52:54:00:12:34:56", "10.0.0.1", "10.0.0.2"));
      w.record(udp("52:54:00:65:43:21", "52:54:00:12:34:56", "10.0.0.1", "10.0.0.2", 4000, 53, new TextEncoder().encode("hello")));
      const file = join(dir.path, "t.pcap");
      writeFileSync(file, out.bytes());
      const text = execFileSync("tcpdump", ["-r", file, "-nn", "-e", "-tt"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
      const lines = text.trim().split("\n");
      expect(lines.length).toBe(2);
      expect(lines[0]).toMatch(/^1600000000\.001500 52:54:00:12:34:56 > ff:ff:ff:ff:ff:ff, ethertype ARP \(0x0806\), length 42: Request who-has 10\.0\.0\.2 tell 10\.0\.0\.1/);
      expect(lines[1]).toMatch(/52:54:00:12:34:56 > 52:54:00:65:43:21, ethertype IPv4 \(0x0800\), length 47: 10\.0\.0\.1\.4000 > 10\.0\.0\.2\.53: /);
      expect(readFileSync(file).length).toBe(24 + 16 + 42 + 16 + 47);
    } finally {
      dir.remove();
    }
  });
});
