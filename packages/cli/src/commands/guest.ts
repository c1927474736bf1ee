import { readFileSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { busyboxInitramfs, cacheDir, fetchDebianGuest } from "@typevisor/pc";
import { CommandError, type Command, type CommandIo } from "../command.js";

const HELP = `usage: typevisor guest fetch [--dir DIR] [--suite NAME] [--mirror URL] [--refresh] [--output=json]
       typevisor guest initramfs --out FILE [--dir DIR] [--add HOST:GUEST]...

Guest images for typevisor: Debian's i386 kernel (linux-image-686) and a
busybox initramfs.

  fetch       download linux-image-686 and busybox-static (i386) with
              'apt-get download' into a private apt state under the cache
              folder (no root needed, the host's packages are untouched),
              unpack them, and print where the kernel and busybox are
  initramfs   build the busybox initramfs (gzip'ed cpio): /init mounts
              /proc, /sys and /dev, runs the kernel command line's
              tv.exec="..." and powers off, or starts a shell on the console

options:
  --dir DIR         cache folder (default $TYPEVISOR_CACHE or ~/.cache/typevisor)
  --suite NAME      Debian release (default: this host's, else bookworm)
  --mirror URL      Debian mirror (default http://deb.debian.org/debian)
  --refresh         download again even if cached
  --out FILE        where to write the initramfs
  --add HOST:GUEST  also put host file HOST at GUEST in the initramfs
  --output=json     print the result as JSON (fetch)
  -h, --help        show this help
`;

async function run(argv: string[], io: CommandIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        dir: { type: "string" },
        suite: { type: "string" },
        mirror: { type: "string" },
        refresh: { type: "boolean" },
        out: { type: "string" },
        add: { type: "string", multiple: true },
        output: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    throw new CommandError(`${(e as Error).message}\n\n${HELP}`, 2);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    io.stdout.write(HELP);
    return 0;
  }
  const sub = positionals[0];
  if (positionals.length !== 1 || (sub !== "fetch" && sub !== "initramfs")) throw new CommandError(`expected 'fetch' or 'initramfs'\n\n${HELP}`, 2);
  if (values.output !== undefined && values.output !== "json" && values.output !== "text") throw new CommandError(`--output must be json or text`, 2);
  const progress = (line: string): void => void io.stderr.write(`${line}\n`);
  const guest = await fetchDebianGuest({ dir: values.dir ?? cacheDir(), suite: values.suite, mirror: values.mirror, refresh: sub === "fetch" && values.refresh, onProgress: progress });
  if (sub === "fetch") {
    if (values.output === "json") io.stdout.write(JSON.stringify(guest, null, 2) + "\n");
    else io.stdout.write(`kernel:  ${guest.kernel}\nrelease: ${guest.kernelRelease}\nbusybox: ${guest.busybox}\nmodules: ${guest.modules}\n`);
    return 0;
  }
  if (!values.out) throw new CommandError("initramfs needs --out FILE", 2);
  const files: Record<string, Uint8Array> = {};
  for (const spec of values.add ?? []) {
    const i = spec.lastIndexOf(":");
    if (i <= 0 || i === spec.length - 1) throw new CommandError(`--add expects HOST:GUEST, got "${spec}"`, 2);
    try {
      files[spec.slice(i + 1)] = readFileSync(spec.slice(0, i));
    } catch (e) {
      throw new CommandError(`cannot read ${spec.slice(0, i)}: ${(e as Error).message}`);
    }
  }
  const image = await busyboxInitramfs({ busybox: readFileSync(guest.busybox), files }).toGzip();
  writeFileSync(values.out, image);
  progress(`wrote ${values.out} (${image.length} bytes); boot it with ${guest.kernel}`);
  return 0;
}

/** `typevisor guest`: fetch the Debian guest kernel and busybox, build its initramfs. */
export const command: Command = { name: "guest", summary: "fetch Debian's i386 kernel and busybox, build the guest initramfs", run };
