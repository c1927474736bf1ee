/** Ctrl-A: the console's escape key, as in QEMU's `-serial mon:stdio`. */
export const ESCAPE = 0x01;

const HELP_TEXT = "\r\nC-a h    print this help\r\nC-a x    exit typevisor\r\nC-a C-a  send C-a to the guest\r\n";

/** Where the escape handler sends its results. */
export interface ConsoleEscapeActions {
  /** Bytes for the guest. */
  send(bytes: Uint8Array): void;
  /** The user asked to quit. */
  quit(): void;
  /** Text for the user (the help). */
  help(text: string): void;
}

/**
 * Splits raw terminal input into guest bytes and Ctrl-A commands:
 * `C-a x` quits, `C-a h` prints help, `C-a C-a` sends one C-a, and C-a
 * followed by anything else is dropped along with that key. The state
 * survives across input chunks (a terminal may deliver C-a and x apart).
 */
export class ConsoleEscape {
  private pendingEscape = false;

  constructor(private readonly actions: ConsoleEscapeActions) {}

  /** Feeds one chunk of terminal input. */
  input(chunk: Uint8Array): void {
    let start = 0;
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i];
      if (this.pendingEscape) {
        this.pendingEscape = false;
        start = i + 1;
        if (b === 0x78 /* x */) {
          this.actions.quit();
          return;
        }
        if (b === 0x68 /* h */) this.actions.help(HELP_TEXT);
        else if (b === ESCAPE) this.actions.send(Uint8Array.of(ESCAPE));
        continue;
      }
      if (b === ESCAPE) {
        if (i > start) this.actions.send(chunk.subarray(start, i));
        this.pendingEscape = true;
        start = i + 1;
      }
    }
    if (start < chunk.length && !this.pendingEscape) this.actions.send(chunk.subarray(start));
  }
}
