// Ethernet frames for tests, built by hand (checksums included) so a real
// packet parser (tcpdump) can judge them.
export const BROADCAST = "ff:ff:ff:ff:ff:ff";

export function macBytes(mac: string): number[] {
  return mac.split(":").map((h) => parseInt(h, 16));
}

export function ethernet(dst: string, src: string, type: number, payload: Uint8Array): Uint8Array {
  const f = new Uint8Array(14 + payload.length);
  f.set(macBytes(dst), 0);
  f.set(macBytes(src), 6);
  f[12] = type >> 8;
  f[13] = type & 0xff;
  f.set(payload, 14);
  return f;
}

function ip4(a: string): number[] {
  return a.split(".").map(Number);
}

/** An ARP who-has request. */
export function arpRequest(srcMac: string, srcIp: string, targetIp: string): Uint8Array {
  const p = new Uint8Array(28);
  p.set([0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet, IPv4, hlen 6, plen 4, request
  p.set(macBytes(srcMac), 8);
  p.set(ip4(srcIp), 14);
  p.set(ip4(targetIp), 24);
  return ethernet(BROADCAST, srcMac, 0x0806, p);
}

function checksum(b: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < b.length; i += 2) s += (b[i] << 8) | (b[i + 1] ?? 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** An IPv4 UDP datagram (UDP checksum 0 = none, which IPv4 allows). */
export function udp(dstMac: string, srcMac: string, srcIp: string, dstIp: string, sport: number, dport: number, data: Uint8Array): Uint8Array {
  const ip = new Uint8Array(20 + 8 + data.length);
  const v = new DataView(ip.buffer);
  ip[0] = 0x45;
  v.setUint16(2, ip.length);
  v.setUint16(4, 0x1234);
  ip[8] = 64;
  ip[9] = 17;
  ip.set(ip4(srcIp), 12);
  ip.set(ip4(dstIp), 16);
  v.setUint16(10, checksum(ip.subarray(0, 20)));
  v.setUint16(20, sport);
  v.setUint16(22, dport);
  v.setUint16(24, 8 + data.length);
  ip.set(data, 28);
  return ethernet(dstMac, srcMac, 0x0800, ip);
}
