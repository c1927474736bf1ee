// Node-only: a serial backend writing to a host file.
import { createWriteStream } from "node:fs";
import type { SerialBackend } from "./serial-backend.js";

/**
 * A serial backend that appends the guest's output to the file at `path`
 * (created or truncated when the backend is made). Output only; writes are
 * buffered by a Node write stream and flushed when the UART detaches.
 */
export function fileSerial(path: string): SerialBackend & { readonly closed: Promise<void> } {
  const stream = createWriteStream(path);
  let close: () => void = () => {};
  const closed = new Promise<void>((resolve, reject) => {
    stream.on("error", reject);
    close = () => stream.end(resolve);
  });
  return {
    closed,
    write: (data) => void stream.write(data.slice()),
    detach: () => close(),
  };
}
