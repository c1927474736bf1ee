// Helpers for tests that boot the Debian guest through `typevisor run`.
import { PassThrough } from "node:stream";
import { main } from "../src/main.js";

/** What a `typevisor run` invocation produced. */
export interface GuestRun {
  status: number;
  out: string;
  err: string;
  /** When each stdout chunk arrived (ms since the epoch) and the output length after it. */
  arrivals: { at: number; length: number }[];
}

/**
 * Runs `typevisor run` with `args`; `input` (if given) is fed to stdin once
 * `inputAfter` appears in the output.
 */
export async function runGuest(args: string[], input?: { after: string; text: string }): Promise<GuestRun> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const stdin = new PassThrough();
  let out = "";
  let err = "";
  let fed = false;
  const arrivals: { at: number; length: number }[] = [];
  stdout.on("data", (d) => {
    out += d;
    arrivals.push({ at: Date.now(), length: out.length });
    if (input && !fed && out.includes(input.after)) {
      fed = true;
      stdin.write(input.text);
    }
  });
  stderr.on("data", (d) => (err += d));
  const status = await main(["run", ...args], { stdout, stderr, stdin });
  return { status, out, err, arrivals };
}

/**
 * A kernel log message on the console ("[   45.319112] hrtimer: ...\r\n").
 * The kernel writes to the UART directly, so a message can also land in the
 * middle of a line a program was printing.
 */
const KERNEL_LINE = /\[\s*\d+\.\d{6}\] [^\n]*\n?/g;

/**
 * The text between `BEGIN name` and `END name` lines the guest printed,
 * without kernel log lines: the kernel prints to the same console whenever
 * it has something to say (a busy host makes it warn about slow timers).
 */
export function section(out: string, name: string): string {
  const m = new RegExp(`BEGIN ${name}\\r?\\n([\\s\\S]*?)END ${name}`).exec(out);
  if (!m) throw new Error(`the guest printed no ${name} section:\n${out.slice(-3000)}`);
  return m[1].replace(KERNEL_LINE, "");
}

/** A guest script fragment printing `cmd`'s output between markers. */
export const probe = (name: string, cmd: string): string => `echo BEGIN ${name}; ${cmd}; echo END ${name}`;

/**
 * Kernel command line for device tests: the serial console, and no crypto
 * self-tests (they are most of the boot's work and test nothing here).
 */
export const DEVICE_TEST_APPEND = "console=ttyS0 cryptomgr.notests";
