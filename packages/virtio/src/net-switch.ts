import type { NetBackend, NetEndpointInfo, NetPort } from "./net-backend.js";

/** Options of {@link VirtualSwitch}. */
export interface VirtualSwitchOptions {
  /** Name for messages. */
  name?: string;
  /** Most MAC addresses remembered; the least recently learned is forgotten first (default 4096). */
  maxMacs?: number;
  /** Milliseconds after which a learned address is forgotten (default 300 000, as in IEEE 802.1D). */
  agingMs?: number;
  /** Clock in milliseconds (default `Date.now`). */
  now?: () => number;
}

/** Counters of one switch port. */
export interface SwitchPortStats {
  /** Frames the NIC sent into the switch. */
  rxFrames: number;
  /** Frames the switch delivered to the NIC. */
  txFrames: number;
  /** Frames from the NIC the switch dropped (runts, hairpin). */
  dropped: number;
}

/** One port in {@link VirtualSwitch.portStats}. */
export interface SwitchPortInfo {
  /** The name the NIC connected with. */
  name: string;
  /** Its counters. */
  stats: SwitchPortStats;
}

class SwitchPort implements NetPort {
  readonly stats: SwitchPortStats = { rxFrames: 0, txFrames: 0, dropped: 0 };
  open = true;
  constructor(
    private readonly sw: VirtualSwitch,
    readonly name: string,
    readonly deliver: (frame: Uint8Array) => void,
  ) {}
  send(frame: Uint8Array): void {
    if (this.open) this.sw.forward(this, frame);
  }
  close(): void {
    if (!this.open) return;
    this.open = false;
    this.sw.detach(this);
  }
}

const MIN_FRAME = 14;

function macKey(frame: Uint8Array, at: number): number {
  return frame[at] * 0x100_0000_0000 + frame[at + 1] * 0x1_0000_0000 + ((frame[at + 2] << 24) >>> 0) + ((frame[at + 3] << 16) | (frame[at + 4] << 8) | frame[at + 5]);
}

/**
 * An in-process Ethernet switch connecting the NICs of several VMs (and
 * anything else implementing the port side). It learns which port each
 * source MAC address lives behind and forwards unicast frames only there;
 * broadcast, multicast and unknown destinations go to every other port
 * (IEEE 802.1D transparent bridging). The address table is bounded and ages.
 *
 * Switches can be shared by name within a process ({@link VirtualSwitch.named}),
 * which is how `--net switch=NAME` joins machines together.
 */
export class VirtualSwitch implements NetBackend {
  private static readonly registry = new Map<string, VirtualSwitch>();

  /** The process-wide switch called `name`, created on first use. */
  static named(name: string, options: Omit<VirtualSwitchOptions, "name"> = {}): VirtualSwitch {
    let sw = VirtualSwitch.registry.get(name);
    if (!sw) VirtualSwitch.registry.set(name, (sw = new VirtualSwitch({ ...options, name })));
    return sw;
  }

  /** Forgets the named switch (its ports keep working until closed). */
  static forget(name: string): void {
    VirtualSwitch.registry.delete(name);
  }

  /** Switch name. */
  readonly name: string;
  /** Frames flooded because the destination was broadcast, multicast or unknown. */
  flooded = 0;
  private readonly ports = new Set<SwitchPort>();
  private readonly table = new Map<number, { port: SwitchPort; seen: number }>();
  private readonly maxMacs: number;
  private readonly agingMs: number;
  private readonly now: () => number;
  private readonly taps = new Set<(frame: Uint8Array, from: string) => void>();

  /** @param options - name, table size, aging, clock */
  constructor(options: VirtualSwitchOptions = {}) {
    this.name = options.name ?? "switch";
    this.maxMacs = options.maxMacs ?? 4096;
    this.agingMs = options.agingMs ?? 300_000;
    this.now = options.now ?? Date.now;
  }

  /** Connects a NIC; `receive` gets the frames forwarded to it. */
  connect(receive: (frame: Uint8Array) => void, info: NetEndpointInfo): NetPort {
    const port = new SwitchPort(this, info.name, receive);
    this.ports.add(port);
    return port;
  }

  /** Number of connected ports. */
  get portCount(): number {
    return this.ports.size;
  }

  /** Counters of every port, with the port names. */
  portStats(): SwitchPortInfo[] {
    return [...this.ports].map((p) => ({ name: p.name, stats: { ...p.stats } }));
  }

  /** Number of learned MAC addresses. */
  get learnedMacs(): number {
    return this.table.size;
  }

  /** Calls `listener` with every frame entering the switch (mirror port), e.g. a pcap recorder. */
  tap(listener: (frame: Uint8Array, from: string) => void): () => void {
    this.taps.add(listener);
    return () => this.taps.delete(listener);
  }

  /** @internal */
  detach(port: SwitchPort): void {
    this.ports.delete(port);
    for (const [mac, entry] of this.table) if (entry.port === port) this.table.delete(mac);
  }

  /** @internal */
  forward(from: SwitchPort, frame: Uint8Array): void {
    if (frame.length < MIN_FRAME) {
      from.stats.dropped++;
      return;
    }
    from.stats.rxFrames++;
    for (const t of this.taps) t(frame, from.name);
    const now = this.now();
    // Learn the source unless it is a group address (not a valid source).
    if ((frame[6] & 1) === 0) {
      const src = macKey(frame, 6);
      const known = this.table.get(src);
      if (known) {
        this.table.delete(src); // re-insert: keeps Map order = least recently learned first
      } else if (this.table.size >= this.maxMacs) {
        const oldest = this.table.keys().next().value as number;
        this.table.delete(oldest);
      }
      this.table.set(src, { port: from, seen: now });
    }
    if ((frame[0] & 1) === 0) {
      const entry = this.table.get(macKey(frame, 0));
      if (entry && now - entry.seen <= this.agingMs && entry.port.open) {
        if (entry.port === from) {
          from.stats.dropped++; // destination is on the sender's own port
          return;
        }
        entry.port.stats.txFrames++;
        entry.port.deliver(frame);
        return;
      }
    }
    this.flooded++;
    for (const p of this.ports) {
      if (p === from) continue;
      p.stats.txFrames++;
      p.deliver(frame);
    }
  }
}
