import { CommandError, type CommandIo } from "./command.js";
import { COMMANDS } from "./commands.js";
import { TypevisorError } from "@typevisor/hv-core";

declare const __CLI_VERSION__: string | undefined;

/** Version string printed by `typevisor --version`. */
export const VERSION = typeof __CLI_VERSION__ === "string" ? __CLI_VERSION__ : "0.0.0-dev";

function usage(): string {
  const names = Object.keys(COMMANDS).sort();
  const width = Math.max(8, ...names.map((n) => n.length));
  const lines = names.map((n) => `  ${n.padEnd(width)}  ${COMMANDS[n].summary}`);
  return [
    "usage: typevisor <command> [options]",
    "",
    "A hypervisor written in TypeScript.",
    "",
    "commands:",
    ...(lines.length ? lines : ["  (none)"]),
    "",
    "Run 'typevisor <command> --help' for a command's options.",
    "",
  ].join("\n");
}

/**
 * Runs the `typevisor` command line.
 * @param argv - arguments after the program name
 * @param io - streams to use (default: the process's)
 * @returns the exit status
 */
export async function main(argv: string[], io: CommandIo = { stdout: process.stdout, stderr: process.stderr, stdin: process.stdin }): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || name === "help") {
    io.stdout.write(usage());
    return name === undefined ? 2 : 0;
  }
  if (name === "--version" || name === "-V") {
    io.stdout.write(`typevisor ${VERSION}\n`);
    return 0;
  }
  const entry = COMMANDS[name];
  if (!entry) {
    io.stderr.write(`typevisor: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  try {
    const command = await entry.load();
    return await command.run(rest, io);
  } catch (e) {
    if (e instanceof CommandError) {
      io.stderr.write(`typevisor ${name}: ${e.message}\n`);
      return e.status;
    }
    if (e instanceof TypevisorError) {
      io.stderr.write(`typevisor ${name}: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
}
