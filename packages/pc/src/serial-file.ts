// Node-only: a serial backend writing to a host file.
import { createWriteStream } from "node:fs";
import type { SerialBackend } from "./serial-backend.js";

/** The backend {@link fileSerial} returns. */
export interface FileSerial extends SerialBackend {
  /** Resolves once the file is flushed and closed (after the UART detaches). */
  readonly closed: Promise<void>;
}

/**
 * A serial backend that appends the guest's output to the file at `path`
 * (created or truncated when the backend is made). Output only; writes are
 * buffered by a Node write stream and flushed when the UART detaches.
 */
export function fileSerial(path: string): FileSerial {
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
