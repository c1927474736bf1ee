import type { GuestMemory, StateValue } from "@typevisor/hv-core";
import { VirtioDeviceId } from "./constants.js";
import { CHAIN_OK, type DescriptorChain } from "./descriptor-chain.js";
import { VirtioConfigError } from "./errors.js";
import { formatMac, parseMac, type NetBackend, type NetPort } from "./net-backend.js";
import { VirtioDevice, type VirtioRingOptions } from "./virtio-device.js";
import type { Virtqueue } from "./virtqueue.js";

/** virtio-net feature bits (§5.1.3) this device knows. */
export const VirtioNetFeature = {
  /** The device handles packets with partial checksums (not offered). */
  CSUM: 0,
  /** The driver handles packets with partial checksums (not offered). */
  GUEST_CSUM: 1,
  /** `mtu` is valid. */
  MTU: 3,
  /** `mac` is valid. */
  MAC: 5,
  /** The driver can merge receive buffers (not offered). */
  MRG_RXBUF: 15,
  /** `status` (link state) is valid. */
  STATUS: 16,
  /** A control queue (not offered). */
  CTRL_VQ: 17,
} as const;

/** Link-up bit of the `status` configuration field. */
export const VIRTIO_NET_S_LINK_UP = 1;

/** Counters of a {@link VirtioNetDevice}. */
export interface VirtioNetStats {
  /** Frames sent by the guest into the network. */
  txFrames: number;
  /** Bytes of those frames. */
  txBytes: number;
  /** Guest frames dropped (malformed, oversized, link down, no network). */
  txDropped: number;
  /** Frames delivered to the guest. */
  rxFrames: number;
  /** Bytes of those frames. */
  rxBytes: number;
  /** Frames for the guest dropped (driver not ready, backlog full, buffer too small). */
  rxDropped: number;
}

/** Options of {@link VirtioNetDevice}. */
export interface VirtioNetOptions {
  /** The network to join (a {@link VirtualSwitch}, a {@link PcapWriter}, ...); can also be connected later. */
  backend?: NetBackend;
  /** MAC address (`"52:54:00:12:34:56"` or 6 bytes); default 52:54:00 plus three random bytes. */
  mac?: string | Uint8Array;
  /** MTU advertised to the driver (default 1500). */
  mtu?: number;
  /** Frames held while the guest has no receive buffers (default 256); more are dropped. */
  rxBacklog?: number;
  /** Size of each queue (default 256). */
  queueSize?: number;
  /** Ring features. */
  ring?: VirtioRingOptions;
  /** Name used in messages, state and switch port names (default "virtio-net"). */
  name?: string;
}

const RX = 0;
const TX = 1;
/** struct virtio_net_hdr with VERSION_1: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers. */
const HDR = 12;
const ETH_HLEN = 14;
const VIRTIO_NET_HDR_GSO_NONE = 0;
const CFG_MAC = 0;
const CFG_STATUS = 6;
const CFG_MAX_PAIRS = 8;
const CFG_MTU = 10;

function randomMac(): Uint8Array {
  const mac = Uint8Array.of(0x52, 0x54, 0x00, 0, 0, 0);
  globalThis.crypto.getRandomValues(mac.subarray(3));
  return mac;
}

/**
 * virtio-net (§5.1): one receive and one transmit queue, a MAC address and
 * link status, no offloads (frames up to the MTU, checksums computed by the
 * guest). Frames go to and come from a {@link NetBackend}.
 *
 * Frames for the guest wait in a bounded backlog while its receive ring is
 * empty; a transmitted frame is copied once out of guest memory and handed
 * to the backend, which owns it from then on.
 */
export class VirtioNetDevice extends VirtioDevice {
  /** The MAC address. */
  readonly mac: Uint8Array;
  /** The MTU the driver is told. */
  readonly mtu: number;
  /** Counters. */
  readonly stats: VirtioNetStats = { txFrames: 0, txBytes: 0, txDropped: 0, rxFrames: 0, rxBytes: 0, rxDropped: 0 };
  private port: NetPort | undefined;
  private linkUp = true;
  private readonly backlogLimit: number;
  private backlog: Uint8Array[] = [];
  private readonly rxChain: DescriptorChain;
  private readonly txChain: DescriptorChain;
  private readonly header = new Uint8Array(HDR);
  private readonly txHeader = new Uint8Array(HDR);
  private readonly maxFrame: number;

  /** @param options - network, address and limits */
  constructor(options: VirtioNetOptions = {}) {
    const queueSize = options.queueSize ?? 256;
    const F = VirtioNetFeature;
    super({
      deviceId: VirtioDeviceId.NET,
      name: options.name ?? "virtio-net",
      queueSizes: [queueSize, queueSize],
      features: [F.MAC, F.STATUS, F.MTU],
      configSize: 12,
      chainCapacity: Math.min(queueSize, 64),
      ring: options.ring,
    });
    const mac = typeof options.mac === "string" ? parseMac(options.mac) : (options.mac ?? randomMac());
    if (!mac || mac.length !== 6) throw new VirtioConfigError("VIRTIO_NET_OPTIONS", `"${String(options.mac)}" is not a MAC address (52:54:00:12:34:56)`);
    if (mac[0] & 1) throw new VirtioConfigError("VIRTIO_NET_OPTIONS", `MAC address ${formatMac(mac)} is a group address; a NIC needs a unicast one`);
    this.mac = Uint8Array.from(mac);
    this.mtu = options.mtu ?? 1500;
    if (!Number.isInteger(this.mtu) || this.mtu < 68 || this.mtu > 65535 - ETH_HLEN - 4) throw new VirtioConfigError("VIRTIO_NET_OPTIONS", `MTU ${this.mtu} is outside 68..65517`);
    this.maxFrame = this.mtu + ETH_HLEN + 4; // room for one VLAN tag
    this.backlogLimit = options.rxBacklog ?? 256;
    this.rxChain = this.newChain();
    this.txChain = this.newChain();
    this.config.set(this.mac, CFG_MAC);
    this.configData.setUint16(CFG_STATUS, VIRTIO_NET_S_LINK_UP, true);
    this.configData.setUint16(CFG_MAX_PAIRS, 1, true);
    this.configData.setUint16(CFG_MTU, this.mtu, true);
    if (options.backend) this.connect(options.backend);
  }

  /** Joins `backend`, leaving the current network first. */
  connect(backend: NetBackend): void {
    this.disconnect();
    this.port = backend.connect((frame) => this.receive(frame), { mac: this.mac, name: this.name });
  }

  /** Leaves the network (the link stays up; frames are dropped). */
  disconnect(): void {
    this.port?.close();
    this.port = undefined;
  }

  /** Sets the link state the driver sees (configuration change, §5.1.4). */
  setLink(up: boolean): void {
    if (up === this.linkUp) return;
    this.linkUp = up;
    this.updateConfig((v) => v.setUint16(CFG_STATUS, up ? VIRTIO_NET_S_LINK_UP : 0, true));
  }

  /** Frames waiting for guest receive buffers. */
  get backlogFrames(): number {
    return this.backlog.length;
  }

  /** A frame from the network for the guest; the device does not keep `frame` past the call except in its backlog. */
  receive(frame: Uint8Array): void {
    if (!this.active || !this.linkUp || !this.queues[RX].ready || frame.length < ETH_HLEN) {
      this.stats.rxDropped++;
      return;
    }
    if (this.backlog.length > 0 || !this.deliver(frame)) {
      if (this.backlog.length >= this.backlogLimit) {
        this.stats.rxDropped++;
        return;
      }
      this.backlog.push(frame);
    }
  }

  /** Puts one frame into the next receive buffer; false when the ring is empty. */
  private deliver(frame: Uint8Array): boolean {
    const q = this.queues[RX];
    let delivered = false;
    this.guard(RX, () => {
      const c = this.rxChain;
      const mem = this.memory;
      // Malformed buffers go back empty; the frame tries the next one.
      while (q.pop(c)) {
        if (c.problem !== CHAIN_OK) {
          this.requestFailed(RX, `malformed receive buffer (problem ${c.problem} at descriptor ${c.problemAt})`);
          q.push(c, 0);
          this.signalUsedSoon(q);
          continue;
        }
        if (c.writableBytes < HDR + frame.length) {
          // Too small for this frame: drop the frame, return the buffer empty.
          this.stats.rxDropped++;
          this.requestFailed(RX, `receive buffer of ${c.writableBytes} bytes is too small for a ${frame.length}-byte frame`);
          q.push(c, 0);
          this.signalUsedSoon(q);
          delivered = true;
          return;
        }
        const h = this.header;
        h.fill(0);
        h[10] = 1; // num_buffers = 1 (no MRG_RXBUF)
        c.writeTo(mem, 0, h);
        c.writeTo(mem, HDR, frame);
        q.push(c, HDR + frame.length);
        this.stats.rxFrames++;
        this.stats.rxBytes += frame.length;
        this.signalUsedSoon(q);
        delivered = true;
        return;
      }
    });
    return delivered;
  }

  private drainBacklog(): void {
    let n = 0;
    while (n < this.backlog.length && this.active && this.deliver(this.backlog[n])) n++;
    if (n > 0) this.backlog = this.backlog.slice(n);
  }

  protected override onQueueNotify(q: Virtqueue): void {
    if (q.index === RX) {
      this.drainBacklog();
      return;
    }
    const c = this.txChain;
    const mem = this.memory;
    while (q.pop(c)) {
      this.transmit(c, mem);
      q.push(c, 0);
    }
    this.signalUsed(q);
  }

  private transmit(c: DescriptorChain, mem: GuestMemory): void {
    if (c.problem !== CHAIN_OK) {
      this.stats.txDropped++;
      this.requestFailed(TX, `malformed transmit buffer (problem ${c.problem} at descriptor ${c.problemAt})`);
      return;
    }
    const len = c.readableBytes - HDR;
    if (len < ETH_HLEN || len > this.maxFrame) {
      this.stats.txDropped++;
      this.requestFailed(TX, `transmit frame of ${len} bytes is outside ${ETH_HLEN}..${this.maxFrame}`);
      return;
    }
    c.readFrom(mem, 0, this.txHeader);
    if (this.txHeader[1] !== VIRTIO_NET_HDR_GSO_NONE) {
      this.stats.txDropped++;
      this.requestFailed(TX, `transmit header asks for segmentation offload ${this.txHeader[1]}, which was not negotiated`);
      return;
    }
    if (!this.port || !this.linkUp) {
      this.stats.txDropped++;
      return;
    }
    const frame = new Uint8Array(len);
    c.readFrom(mem, HDR, frame);
    this.stats.txFrames++;
    this.stats.txBytes += len;
    this.port.send(frame);
  }

  protected override onActivate(): void {
    this.drainBacklog();
  }

  protected override onReset(): void {
    this.backlog = [];
  }

  /** Link state and the receive backlog. */
  protected override saveDeviceState(): StateValue {
    return { mac: Uint8Array.from(this.mac), link: this.linkUp, backlog: this.backlog.map((f) => Uint8Array.from(f)) };
  }

  /** Restores link state and backlog; the saved MAC must match this device's. */
  protected override loadDeviceState(data: StateValue): void {
    const d = data as { mac?: unknown; link?: unknown; backlog?: unknown } | null;
    const ok =
      d !== null &&
      d.mac instanceof Uint8Array &&
      d.mac.length === 6 &&
      typeof d.link === "boolean" &&
      Array.isArray(d.backlog) &&
      d.backlog.length <= this.backlogLimit &&
      d.backlog.every((f) => f instanceof Uint8Array && f.length >= ETH_HLEN && f.length <= 65535);
    if (!ok) throw new VirtioConfigError("VIRTIO_STATE", `${this.name}: saved state is malformed`);
    if (formatMac(d.mac as Uint8Array) !== formatMac(this.mac)) {
      throw new VirtioConfigError("VIRTIO_STATE", `${this.name}: saved MAC ${formatMac(d.mac as Uint8Array)} differs from this device's ${formatMac(this.mac)} (pass the same mac option)`);
    }
    this.linkUp = d.link as boolean;
    this.configData.setUint16(CFG_STATUS, this.linkUp ? VIRTIO_NET_S_LINK_UP : 0, true);
    this.backlog = (d.backlog as Uint8Array[]).map((f) => Uint8Array.from(f));
  }
}
