import { createWriteStream } from "node:fs";
import type { SerialBackend } from "@typevisor/pc";

/**
 * A serial backend for the `run` command. The UART hands over one byte at a
 * time; writing each to the terminal would cost a system call per byte, so
 * bytes collect in a buffer that is flushed when the run loop yields to the
 * event loop (every few milliseconds) or when it fills.
 */
export interface BufferedSerial extends SerialBackend {
  /** Queues one byte of output (the debug console uses this). */
  writeByte(byte: number): void;
  /** Sends host input to the guest (the UART's receive side). */
  receive(data: Uint8Array): void;
  /** Flushes and, for files, closes. */
  close(): Promise<void>;
}

const CAPACITY = 64 * 1024;

/** A buffered serial backend writing to `target` (a stream, or a file path to create). */
export function bufferedSerial(target: NodeJS.WritableStream | string): BufferedSerial {
  const out = typeof target === "string" ? createWriteStream(target) : target;
  const owned = typeof target === "string";
  let buf = new Uint8Array(CAPACITY);
  let used = 0;
  let scheduled = false;
  let closed = false;
  let deliver: ((data: Uint8Array) => void) | undefined;

  const flush = (): void => {
    scheduled = false;
    if (used === 0) return;
    out.write(buf.subarray(0, used));
    buf = new Uint8Array(CAPACITY); // the stream may still hold the old one
    used = 0;
  };
  const schedule = (): void => {
    if (scheduled) return;
    scheduled = true;
    setImmediate(flush);
  };
  const push = (data: Uint8Array): void => {
    if (closed) return;
    for (let i = 0; i < data.length; ) {
      const n = Math.min(data.length - i, CAPACITY - used);
      buf.set(data.subarray(i, i + n), used);
      used += n;
      i += n;
      if (used === CAPACITY) flush();
    }
    schedule();
  };
  const one = new Uint8Array(1);
  return {
    write: push,
    writeByte(byte) {
      one[0] = byte;
      push(one);
    },
    attach(receive) {
      deliver = receive;
    },
    detach() {
      deliver = undefined;
    },
    receive(data) {
      deliver?.(data);
    },
    close() {
      if (closed) return Promise.resolve();
      flush();
      closed = true;
      if (!owned) return Promise.resolve();
      return new Promise((resolve) => out.end(resolve));
    },
  };
}
