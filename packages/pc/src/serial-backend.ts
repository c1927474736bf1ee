/**
 * Where a UART's bytes go and come from: the host side of a serial port.
 * The UART calls `write` with what the guest transmits, and hands `attach`
 * the function through which the backend delivers host input.
 */
export interface SerialBackend {
  /** Bytes the guest transmitted. Must not block; buffer if the sink is slow. */
  write(data: Uint8Array): void;
  /** Starts delivering host input by calling `receive`. Optional for output-only backends. */
  attach?(receive: (data: Uint8Array) => void): void;
  /** Stops delivering input and releases host resources. */
  detach?(): void;
}

/** A writable sink such as `process.stdout` or a file stream. */
export interface ByteSink {
  /** Writes bytes. */
  write(chunk: Uint8Array): unknown;
}

/** A readable source such as `process.stdin`. */
export interface ByteSource {
  /** Subscribes to data. */
  on(event: "data", listener: (chunk: Uint8Array | string) => void): unknown;
  /** Unsubscribes. */
  off(event: "data", listener: (chunk: Uint8Array | string) => void): unknown;
}

/**
 * A backend over streams: output to `out` (e.g. `process.stdout`), input
 * from `input` (e.g. `process.stdin`) when given.
 */
export function streamSerial(out: ByteSink, input?: ByteSource): SerialBackend {
  let listener: ((chunk: Uint8Array | string) => void) | undefined;
  return {
    write: (data) => void out.write(data.slice()),
    attach(receive) {
      if (!input) return;
      listener = (chunk) => receive(typeof chunk === "string" ? new TextEncoder().encode(chunk) : new Uint8Array(chunk));
      input.on("data", listener);
    },
    detach() {
      if (input && listener) input.off("data", listener);
      listener = undefined;
    },
  };
}

/** An in-memory backend for tests and embedding: collects output, injects input. */
export class MemorySerial implements SerialBackend {
  private readonly chunks: Uint8Array[] = [];
  private receiveFn: ((data: Uint8Array) => void) | undefined;
  private pending: Uint8Array[] = [];

  /** Collects guest output. */
  write(data: Uint8Array): void {
    this.chunks.push(data.slice());
  }

  /** Connects the UART; input sent before this is delivered now. */
  attach(receive: (data: Uint8Array) => void): void {
    this.receiveFn = receive;
    for (const p of this.pending) receive(p);
    this.pending = [];
  }

  /** Disconnects the UART. */
  detach(): void {
    this.receiveFn = undefined;
  }

  /** Sends bytes (or a string, UTF-8 encoded) to the guest. */
  send(data: Uint8Array | string): void {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
    if (this.receiveFn) this.receiveFn(bytes);
    else this.pending.push(bytes);
  }

  /** Everything the guest wrote so far. */
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

  /** Everything the guest wrote so far, decoded as UTF-8 (latin-1 bytes pass through as replacement characters). */
  get text(): string {
    return new TextDecoder().decode(this.output);
  }

  /** Forgets collected output. */
  clear(): void {
    this.chunks.length = 0;
  }
}
