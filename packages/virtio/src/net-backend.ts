/**
 * A NIC's connection to a network: the NIC sends Ethernet frames (without
 * FCS) through it. Frames passed to `send` belong to the callee from then on;
 * the NIC never touches them again.
 */
export interface NetPort {
  /** Sends one frame from the NIC into the network. */
  send(frame: Uint8Array): void;
  /** Disconnects the NIC. */
  close(): void;
}

/** Who is connecting to a {@link NetBackend}. */
export interface NetEndpointInfo {
  /** The NIC's MAC address (6 bytes). */
  mac: Uint8Array;
  /** A name for messages and statistics (e.g. "vm1/virtio-net"). */
  name: string;
}

/**
 * A network a NIC can join: a virtual switch, a packet capture, a host tap.
 * `receive` is called with frames for the NIC; it must not keep or change
 * them beyond the call unless it copies (they may be shared between NICs).
 */
export interface NetBackend {
  /** Connects a NIC. */
  connect(receive: (frame: Uint8Array) => void, info: NetEndpointInfo): NetPort;
}

/** Something that records frames, such as a {@link PcapWriter}. */
export interface FrameRecorder {
  /** Records one frame. */
  record(frame: Uint8Array): void;
}

/**
 * A backend that connects to `backend` and also records every frame the
 * NIC sends or receives with `recorder` (e.g. to inspect one VM's traffic
 * with tcpdump).
 */
export function recordingBackend(backend: NetBackend, recorder: FrameRecorder): NetBackend {
  return {
    connect(receive, info) {
      const port = backend.connect((frame) => {
        recorder.record(frame);
        receive(frame);
      }, info);
      return {
        send(frame) {
          recorder.record(frame);
          port.send(frame);
        },
        close: () => port.close(),
      };
    },
  };
}

/** Formats a 6-byte MAC address as `52:54:00:12:34:56`. */
export function formatMac(mac: Uint8Array): string {
  return Array.from(mac.subarray(0, 6), (b) => b.toString(16).padStart(2, "0")).join(":");
}

/**
 * Parses `52:54:00:12:34:56` (or with `-`) into 6 bytes.
 * @returns undefined when the text is not a MAC address
 */
export function parseMac(text: string): Uint8Array | undefined {
  const m = /^([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})$/i.exec(text);
  if (!m) return undefined;
  return Uint8Array.from(m.slice(1), (h) => parseInt(h, 16));
}
