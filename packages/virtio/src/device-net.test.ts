import { describe, expect, it } from "vitest";
import { VirtioNetDevice, VirtioNetFeature, VIRTIO_NET_S_LINK_UP } from "./device-net.js";
import { recordingBackend } from "./net-backend.js";
import { PcapWriter } from "./net-pcap.js";
import { VirtualSwitch } from "./net-switch.js";
import { parseNetOption } from "./options.js";
import { mmioRig } from "../test/loopback-device.js";
import type { DriverQueue } from "../test/guest-driver.js";
import { arpRequest, udp, BROADCAST } from "../test/frames.js";

const MAC_A = "52:54:00:00:00:0a";
const MAC_B = "52:54:00:00:00:0b";
const HDR = 12;

function hdr(gso = 0): Uint8Array {
  const h = new Uint8Array(HDR);
  h[1] = gso;
  return h;
}

interface Vm {
  device: VirtioNetDevice;
  rx: DriverQueue;
  tx: DriverQueue;
  send(frame: Uint8Array): void;
  /** Posts `n` receive buffers of `size` bytes. */
  post(n: number, size?: number): void;
  /** Frames received so far (header checked and stripped). */
  received(): Uint8Array[];
  irqLevel(): boolean;
  driver: ReturnType<typeof mmioRig>["driver"];
}

function vm(mac: string, sw?: VirtualSwitch, opts: { packed?: boolean; backlog?: number; activate?: boolean } = {}): Vm {
  const device = new VirtioNetDevice({ mac, backend: sw, rxBacklog: opts.backlog, queueSize: 16 });
  const rig = mmioRig(device);
  rig.driver.negotiate({ packed: opts.packed, accept: [VirtioNetFeature.MAC, VirtioNetFeature.STATUS, VirtioNetFeature.MTU] });
  const rx = rig.driver.setupQueue(0);
  const tx = rig.driver.setupQueue(1);
  if (opts.activate ?? true) rig.driver.driverOk();
  return {
    device,
    rx,
    tx,
    driver: rig.driver,
    irqLevel: rig.irqLevel,
    send(frame) {
      tx.add({ out: [hdr(), frame] });
      tx.publish();
      rig.driver.kick(1);
      tx.takeUsed();
    },
    post(n, size = HDR + 1518) {
      for (let i = 0; i < n; i++) rx.add({ in: [size] });
      rx.publish();
      rig.driver.kick(0);
    },
    received() {
      return rx.takeUsed().map((u) => {
        const bytes = rx.written(u.id, u.len);
        expect(bytes.subarray(0, HDR)).toEqual(Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0)); // num_buffers = 1
        return bytes.slice(HDR);
      });
    },
  };
}

const tick = () => new Promise((r) => setImmediate(r));

describe("virtio-net", () => {
  it("shows its MAC, link status and MTU in the configuration space", () => {
    const a = vm(MAC_A);
    const mac = Array.from({ length: 6 }, (_, i) => a.driver.config(i, 1).toString(16).padStart(2, "0")).join(":");
    expect(mac).toBe(MAC_A);
    expect(a.driver.config(6, 2)).toBe(VIRTIO_NET_S_LINK_UP);
    expect(a.driver.config(10, 2)).toBe(1500);
    expect(a.driver.read(0x008)).toBe(1);
    a.device.setLink(false);
    expect(a.driver.config(6, 2)).toBe(0);
    expect(a.driver.read(0x60) & 2).toBe(2);
  });

  for (const packed of [false, true]) {
    it(`carries frames between two VMs through a switch (${packed ? "packed" : "split"})`, async () => {
      const sw = new VirtualSwitch();
      const a = vm(MAC_A, sw, { packed });
      const b = vm(MAC_B, sw, { packed });
      a.post(4);
      b.post(4);
      const arp = arpRequest(MAC_A, "10.0.0.1", "10.0.0.2");
      a.send(arp);
      await tick();
      expect(b.received()).toEqual([arp]);
      expect(b.irqLevel()).toBe(true);
      expect(a.received()).toEqual([]); // no echo to the sender
      const reply = udp(MAC_A, MAC_B, "10.0.0.2", "10.0.0.1", 53, 4000, new TextEncoder().encode("pong"));
      b.send(reply);
      await tick();
      expect(a.received()).toEqual([reply]);
      expect(a.device.stats).toMatchObject({ txFrames: 1, rxFrames: 1, txDropped: 0, rxDropped: 0 });
      expect(sw.learnedMacs).toBe(2);
    });
  }

  it("holds frames while the guest has no receive buffers, then delivers them in order", async () => {
    const sw = new VirtualSwitch();
    const a = vm(MAC_A, sw);
    const b = vm(MAC_B, sw, { backlog: 3 });
    const frames = [1, 2, 3, 4, 5].map((i) => udp(BROADCAST, MAC_A, "10.0.0.1", "10.0.0.255", 1, 2, Uint8Array.of(i)));
    for (const f of frames) a.send(f);
    expect(b.device.backlogFrames).toBe(3);
    expect(b.device.stats.rxDropped).toBe(2);
    b.post(2);
    await tick();
    expect(b.received()).toEqual(frames.slice(0, 2));
    b.post(5);
    await tick();
    expect(b.received()).toEqual([frames[2]]);
    expect(b.device.backlogFrames).toBe(0);
  });

  it("drops frames for a guest that has not finished initialising", () => {
    const sw = new VirtualSwitch();
    const a = vm(MAC_A, sw);
    const b = vm(MAC_B, sw, { activate: false });
    a.send(arpRequest(MAC_A, "10.0.0.1", "10.0.0.2"));
    expect(b.device.stats.rxDropped).toBe(1);
    expect(b.device.backlogFrames).toBe(0);
  });

  it("drops malformed, oversized and offload transmit buffers without stopping", () => {
    const sw = new VirtualSwitch();
    const a = vm(MAC_A, sw);
    const b = vm(MAC_B, sw);
    b.post(4);
    const errors: string[] = [];
    a.device.events.on("requestError", (e) => errors.push(e.reason));
    a.tx.add({ out: [new Uint8Array(8)] }); // shorter than the header
    a.tx.add({ out: [hdr(), new Uint8Array(1600)] }); // beyond MTU
    a.tx.add({ out: [hdr(4), arpRequest(MAC_A, "1.1.1.1", "2.2.2.2")] }); // GSO without negotiation
    a.tx.add({ out: [hdr()], in: [64] }); // header only
    a.tx.publish();
    a.driver.kick(1);
    expect(a.tx.takeUsed().length).toBe(4);
    expect(a.device.stats.txDropped).toBe(4);
    expect(errors.length).toBe(4);
    expect(a.device.needsResetReason).toBeUndefined();
    a.send(arpRequest(MAC_A, "10.0.0.1", "10.0.0.2"));
    expect(a.device.stats.txFrames).toBe(1);
  });

  it("returns receive buffers that are too small empty and drops the frame", async () => {
    const sw = new VirtualSwitch();
    const a = vm(MAC_A, sw);
    const b = vm(MAC_B, sw);
    b.post(1, 20);
    a.send(arpRequest(MAC_A, "10.0.0.1", "10.0.0.2"));
    await tick();
    expect(b.rx.takeUsed()).toEqual([{ id: 0, len: 0 }]);
    expect(b.device.stats.rxDropped).toBe(1);
  });

  it("records both directions of one NIC into a pcap", async () => {
    const sw = new VirtualSwitch();
    const chunks: Uint8Array[] = [];
    const pcap = new PcapWriter({ write: (c) => chunks.push(c) }, { now: () => 0 });
    const a = new VirtioNetDevice({ mac: MAC_A, backend: recordingBackend(sw, pcap) });
    void a;
    const b = vm(MAC_B, sw);
    const peer = sw.connect(() => {}, { mac: new Uint8Array(6), name: "peer" });
    peer.send(arpRequest("52:54:00:00:00:0c", "10.0.0.3", "10.0.0.1")); // reaches a (dropped there: not active) and b
    b.send(arpRequest(MAC_B, "10.0.0.2", "10.0.0.1"));
    expect(pcap.packets).toBe(2);
    expect(chunks.length).toBe(3);
  });

  it("keeps its backlog and link state across a snapshot; refuses a different MAC", async () => {
    const sw = new VirtualSwitch();
    const a = vm(MAC_A, sw);
    const b = vm(MAC_B, sw);
    a.send(arpRequest(MAC_A, "10.0.0.1", "10.0.0.2"));
    b.device.setLink(false);
    const saved = structuredClone(b.device.save());
    const b2 = new VirtioNetDevice({ mac: MAC_B });
    const rig = mmioRig(b2);
    rig.transport.loadState({ deviceFeaturesSel: 0, driverFeaturesSel: 0, queueSel: 0, shmSel: 0, interruptStatus: 0, device: saved });
    expect(b2.backlogFrames).toBe(1);
    expect(b2.readConfig(6, 2)).toBe(0);
    const other = mmioRig(new VirtioNetDevice({ mac: "52:54:00:00:00:99" }));
    expect(() => other.transport.loadState({ deviceFeaturesSel: 0, driverFeaturesSel: 0, queueSel: 0, shmSel: 0, interruptStatus: 0, device: saved })).toThrow(/saved MAC 52:54:00:00:00:0b differs/);
  });

  it("validates its MAC and MTU", () => {
    expect(() => new VirtioNetDevice({ mac: "01:00:5e:00:00:01" })).toThrow(/group address/);
    expect(() => new VirtioNetDevice({ mac: "nope" })).toThrow(/not a MAC address/);
    expect(() => new VirtioNetDevice({ mtu: 20 })).toThrow(/MTU/);
    const d = new VirtioNetDevice();
    expect(d.mac[0]).toBe(0x52);
    expect(d.mac[1]).toBe(0x54);
  });
});

describe("--net option", () => {
  it.each([
    ["switch=lan0", { switch: "lan0", mac: undefined, pcap: undefined }],
    ["switch=lan0,mac=52:54:00:AB:cd:01", { switch: "lan0", mac: "52:54:00:ab:cd:01", pcap: undefined }],
    ["switch=lan0,pcap=/tmp/a,,b.pcap", { switch: "lan0", mac: undefined, pcap: "/tmp/a,b.pcap" }],
    ["pcap=out.pcap,mac=52-54-00-00-00-01", { switch: undefined, mac: "52:54:00:00:00:01", pcap: "out.pcap" }],
  ])("%s", (text, want) => {
    expect(parseNetOption(text)).toEqual(want);
  });

  it.each([
    ["", /needs a value/],
    ["mac=52:54:00:00:00:01", /give switch=NAME/],
    ["switch=", /needs a value/],
    ["switch=a b", /may use only/],
    ["switch=lan,mac=01:00:5e:00:00:01", /multicast/],
    ["switch=lan,mac=zz", /not a MAC address/],
    ["switch=lan,model=e1000", /unknown option "model"/],
  ])("%s is rejected", (text, message) => {
    expect(() => parseNetOption(text)).toThrow(message);
  });
});
