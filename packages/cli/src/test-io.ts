// Test helper: command I/O on in-memory streams, with what was written.
import { PassThrough } from "node:stream";

/** Streams for a command's `io`, and the text written to stdout and stderr so far. */
export function captureIo(): { io: { stdout: PassThrough; stderr: PassThrough; stdin: PassThrough }; stdin: PassThrough; out: () => string; err: () => string } {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const stdin = new PassThrough();
  let out = "";
  let err = "";
  stdout.on("data", (d) => (out += d));
  stderr.on("data", (d) => (err += d));
  return { io: { stdout, stderr, stdin }, stdin, out: () => out, err: () => err };
}
