import type { Command } from "./command.js";

/**
 * The subcommands, loaded on demand so `typevisor img` does not pay for the
 * CPU emulator and `typevisor run` does not pay for qcow2 repair code.
 * One line per command; keep them sorted.
 */
export const COMMANDS: Record<string, { summary: string; load: () => Promise<Command> }> = {};
