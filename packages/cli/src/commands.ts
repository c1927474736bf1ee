import type { Command } from "./command.js";

/**
 * The subcommands, loaded on demand so `typevisor img` does not pay for the
 * CPU emulator and `typevisor run` does not pay for qcow2 repair code.
 * One line per command; keep them sorted.
 */
export const COMMANDS: Record<string, { summary: string; load: () => Promise<Command> }> = {
  guest: { summary: "fetch Debian's i386 kernel and busybox, build the guest initramfs", load: async () => (await import("./commands/guest.js")).command },
  img: { summary: "disk images: create, info, check, convert, compare, map, snapshot, resize, rebase, commit, amend", load: async () => (await import("./commands/img.js")).default },
  initramfs: { summary: "build an initramfs (cpio newc, gzip) from a folder or a spec", load: async () => (await import("./commands/initramfs.js")).command },
  run: { summary: "boot a virtual machine (default: a Debian guest with a shell)", load: async () => (await import("./commands/run.js")).runCommand },
};
