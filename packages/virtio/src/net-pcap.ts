import type { FrameRecorder, NetBackend, NetEndpointInfo, NetPort } from "./net-backend.js";

/** Where a {@link PcapWriter} writes: a Node stream, a file stream, or a collector. */
export interface ByteSink {
  /** Appends bytes (the sink may keep the array). */
  write(bytes: Uint8Array): unknown;
  /** Ends the output. */
  end?(): unknown;
}

/** Options of {@link PcapWriter}. */
export interface PcapWriterOptions {
  /** Most bytes stored per packet (default 65535); longer frames are cut, keeping their original length. */
  snaplen?: number;
  /** Clock in milliseconds since the Unix epoch, fractions allowed (default: high resolution wall clock). */
  now?: () => number;
}

/** libpcap's magic for microsecond timestamps, written in host order (little-endian here). */
const PCAP_MAGIC = 0xa1b2c3d4;
/** LINKTYPE_ETHERNET. */
const LINKTYPE_ETHERNET = 1;

/**
 * Writes Ethernet frames in the classic libpcap format (version 2.4,
 * microsecond timestamps, link type Ethernet), readable by tcpdump and
 * Wireshark. Use it as a recorder ({@link recordingBackend},
 * {@link VirtualSwitch.tap}) or as a network of its own that only captures.
 */
export class PcapWriter implements FrameRecorder, NetBackend {
  /** Packets written. */
  packets = 0;
  private readonly sink: ByteSink;
  private readonly snaplen: number;
  private readonly now: () => number;
  private closed = false;

  /**
   * Writes the file header at once.
   * @param sink - where the bytes go
   * @param options - snap length and clock
   */
  constructor(sink: ByteSink, options: PcapWriterOptions = {}) {
    this.sink = sink;
    this.snaplen = options.snaplen ?? 65535;
    this.now = options.now ?? (() => performance.timeOrigin + performance.now());
    const h = new DataView(new ArrayBuffer(24));
    h.setUint32(0, PCAP_MAGIC, true);
    h.setUint16(4, 2, true); // version 2.4
    h.setUint16(6, 4, true);
    h.setInt32(8, 0, true); // thiszone: UTC
    h.setUint32(12, 0, true); // sigfigs
    h.setUint32(16, this.snaplen, true);
    h.setUint32(20, LINKTYPE_ETHERNET, true);
    sink.write(new Uint8Array(h.buffer));
  }

  /**
   * Opens `path` for writing (Node only) and returns a writer on it.
   * Close the writer to flush and close the file.
   */
  static async createFile(path: string, options: PcapWriterOptions = {}): Promise<PcapWriter> {
    const fs = await import("node:fs");
    return new PcapWriter(fs.createWriteStream(path), options);
  }

  /** Appends one frame with the current time. */
  record(frame: Uint8Array): void {
    if (this.closed) return;
    const incl = Math.min(frame.length, this.snaplen);
    const out = new Uint8Array(16 + incl);
    const v = new DataView(out.buffer);
    const ms = this.now();
    const sec = Math.floor(ms / 1000);
    v.setUint32(0, sec >>> 0, true);
    v.setUint32(4, Math.min(999_999, Math.floor((ms - sec * 1000) * 1000)), true);
    v.setUint32(8, incl, true);
    v.setUint32(12, frame.length, true);
    out.set(frame.subarray(0, incl), 16);
    this.sink.write(out);
    this.packets++;
  }

  /** As a network: frames the NIC sends are recorded; nothing is ever received. */
  connect(_receive: (frame: Uint8Array) => void, _info: NetEndpointInfo): NetPort {
    return { send: (frame) => this.record(frame), close: () => {} };
  }

  /** Ends the output (flushing a file). Later frames are ignored. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sink.end?.();
  }
}
