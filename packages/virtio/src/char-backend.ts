/**
 * A byte stream between a console device and the host: standard I/O, a
 * file, a socket, or a program. It has the shape of the PC platform's serial
 * backends (`write`, `attach`, `detach`), so one set of host choices serves
 * both the 16550 UART and virtio-console; `pause`/`resume` add flow control.
 */
export interface CharBackend {
  /** Bytes the guest sent. The backend may keep `data` (it is a fresh copy). */
  write(data: Uint8Array): void;
  /**
   * Starts delivering host input by calling `receive` (one receiver at a
   * time). Backends without input omit this.
   */
  attach?(receive: (data: Uint8Array) => void): void;
  /** Stops delivering input and releases host resources. */
  detach?(): void;
  /** Asks the source to stop sending for now (the guest is not reading). */
  pause?(): void;
  /** Lets the source send again. */
  resume?(): void;
}

/** The readable side a {@link streamCharBackend} accepts (Node's `Readable`, a socket, stdin). */
export interface ReadableLike {
  /** Subscribes to data. */
  on(event: "data", listener: (chunk: Uint8Array | string) => void): unknown;
  /** Unsubscribes. */
  off?(event: "data", listener: (chunk: Uint8Array | string) => void): unknown;
  /** Stops `data` events. */
  pause?(): unknown;
  /** Resumes `data` events. */
  resume?(): unknown;
}

/** The writable side a {@link streamCharBackend} accepts (Node's `Writable`, a socket, stdout, a file stream). */
export interface WritableLike {
  /** Writes bytes. */
  write(chunk: Uint8Array): unknown;
  /** Ends the stream. */
  end?(): unknown;
}

/**
 * A backend over streams: `output` receives what the guest writes, `input`
 * feeds the guest. Works with `process.stdin`/`process.stdout`, a
 * `net.Socket` (pass it as both), or `fs.createWriteStream(path)` as output.
 * Flow control pauses `input` while the guest is not reading.
 */
export function streamCharBackend(streams: { input?: ReadableLike; output?: WritableLike; endOutputOnClose?: boolean }): CharBackend {
  const { input, output } = streams;
  const encoder = new TextEncoder();
  let listener: ((chunk: Uint8Array | string) => void) | undefined;
  return {
    write(data) {
      output?.write(data);
    },
    attach: input
      ? (receive) => {
          if (listener) input.off?.("data", listener);
          listener = (chunk) => receive(typeof chunk === "string" ? encoder.encode(chunk) : new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
          input.on("data", listener);
        }
      : undefined,
    pause: input?.pause ? () => void input.pause!() : undefined,
    resume: input?.resume ? () => void input.resume!() : undefined,
    detach() {
      if (listener) input?.off?.("data", listener);
      listener = undefined;
      if (streams.endOutputOnClose) output?.end?.();
    },
  };
}

/**
 * A backend held in memory: collects what the guest writes and lets the
 * program type into the guest. For tests and for programs that drive a
 * guest's console.
 */
export class MemoryCharBackend implements CharBackend {
  private readonly chunks: Uint8Array[] = [];
  private receiver: ((data: Uint8Array) => void) | undefined;
  /** Whether the device asked to pause input. */
  paused = false;

  /** Stores guest output. */
  write(data: Uint8Array): void {
    this.chunks.push(data);
  }

  /** Installs the device's receiver. */
  attach(receiver: (data: Uint8Array) => void): void {
    this.receiver = receiver;
  }

  /** Disconnects the device. */
  detach(): void {
    this.receiver = undefined;
  }

  /** Records the pause request. */
  pause(): void {
    this.paused = true;
  }

  /** Records the resume request. */
  resume(): void {
    this.paused = false;
  }

  /** Sends bytes (or a UTF-8 string) to the guest. */
  send(data: Uint8Array | string): void {
    this.receiver?.(typeof data === "string" ? new TextEncoder().encode(data) : data);
  }

  /** Everything the guest wrote so far, as bytes. */
  get output(): Uint8Array {
    const total = this.chunks.reduce((n, c) => n + c.length, 0);
    const out = new Uint8Array(total);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.length;
    }
    return out;
  }

  /** Everything the guest wrote so far, decoded as UTF-8. */
  get text(): string {
    return new TextDecoder().decode(this.output);
  }
}
