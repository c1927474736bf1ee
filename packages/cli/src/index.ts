/**
 * `@typevisor/cli`: the `typevisor` command. The programmatic entry point
 * runs the same command line with injectable streams (for tests and for
 * embedding).
 *
 * @packageDocumentation
 */
export { main, VERSION } from "./main.js";
export { CommandError, type Command, type CommandIo } from "./command.js";
