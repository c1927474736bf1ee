/** Where a command writes; streams in production, buffers in tests. */
export interface CommandIo {
  /** Normal output (what scripts read). */
  stdout: NodeJS.WritableStream;
  /** Errors, warnings and progress. */
  stderr: NodeJS.WritableStream;
  /** Input (interactive consoles). */
  stdin: NodeJS.ReadableStream;
}

/** One `typevisor` subcommand. */
export interface Command {
  /** Name as typed: `typevisor <name>`. */
  readonly name: string;
  /** One line for `typevisor --help`. */
  readonly summary: string;
  /**
   * Runs the command with the arguments after its name.
   * @returns the process exit status
   */
  run(argv: string[], io: CommandIo): Promise<number>;
}

/**
 * A failure to report as `typevisor: <message>` with exit status `status`
 * (1 for errors, 2 for usage errors) instead of a stack trace.
 */
export class CommandError extends Error {
  /** Exit status. */
  readonly status: number;

  /**
   * @param message - what went wrong, for people
   * @param status - exit status (default 1)
   */
  constructor(message: string, status = 1) {
    super(message);
    this.name = "CommandError";
    this.status = status;
  }
}
