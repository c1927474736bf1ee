import { readFile, writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { createMachine, parseSize, type Plugin, type StopInfo } from "@typevisor/hv-core";
import { x86Cpu } from "@typevisor/cpu-x86";
import { busyboxInitramfs, fetchDebianGuest, linuxBoot, moduleClosure, multibootBoot, parseBzImage, pcPlatform } from "@typevisor/pc";
import { openImage } from "@typevisor/qcow2";
import { parseDiskOption, parseNetOption, PcapWriter, virtioBlk, virtioConsole, virtioNet, virtioRng, type DiskOption, type NetOption } from "@typevisor/virtio";
import { CommandError, type Command, type CommandIo } from "../command.js";
import { bufferedSerial, type BufferedSerial } from "./run-serial.js";
import { ConsoleEscape } from "./run-escape.js";
import { TimedBlockDevice, type RunStats } from "./run-stats.js";

const HELP = `usage: typevisor run [options]

Boots a virtual machine: an x86 vCPU, the PC platform, and a kernel loaded
directly (no BIOS). With no --kernel, boots the default guest: Debian's i386
kernel and a busybox initramfs (fetched once with 'typevisor guest fetch'),
with a shell on the serial console.

options:
  --kernel FILE      bzImage (Linux boot protocol) or multiboot ELF; detected
  --initrd FILE      initial ramdisk (Linux), or first module (multiboot)
  --append STR       kernel command line (default guest: console=ttyS0 quiet
                     cryptomgr.notests)
  --exec CMD         default guest only: run CMD in the guest, then power off
  --modules LIST     default guest only: also carry and load these kernel
                     modules (comma-separated, e.g. ext4), with their
                     dependencies
  --memory SIZE      guest RAM, e.g. 256M, 1G (default 256M)
  --smp N            number of vCPUs (default 1)
  --serial WHERE     COM1: stdio (default), file:PATH, or none
  --debugcon WHERE   port 0xE9 debug console: none (default), stdio, file:PATH
  --disk FILE[,format=qcow2|raw][,readonly]
                     a virtio-blk disk (repeatable; /dev/vda, /dev/vdb, ...)
  --console WHERE    a virtio console (hvc0): stdio, file:PATH or none
                     (default); with stdio the default guest uses it as its
                     console and the serial port goes quiet
  --rng              a virtio-rng device fed from the host's random source
  --net switch=NAME[,mac=MAC][,pcap=FILE]
                     a virtio-net NIC on the in-process switch NAME
                     (repeatable), optionally captured to a pcap file
  --no-reboot        exit instead of rebooting (guest reboot: status 0;
                     triple fault: status 3 with the reason)
  --timeout SECONDS  stop the guest after SECONDS (status 124)
  --stats FILE       at exit, write JSON to FILE: wall and CPU seconds, guest
                     instructions, and per disk the requests and the time
                     the storage backend was busy
  --deterministic    virtual time advances with instructions, not the host
                     clock (runs replay exactly)
  -h, --help         this help

Console: on a terminal, stdin is in raw mode and goes to the guest; press
Ctrl-A x to quit, Ctrl-A h for help, Ctrl-A Ctrl-A to send Ctrl-A. When stdin
is not a terminal, guest output is still streamed and input is forwarded.

Exit status: 0 when the guest powers off (or reboots with --no-reboot, or
you quit), the guest's status on isa-debug-exit (port 0xF4: (value<<1)|1),
3 on a triple fault with --no-reboot, 124 on --timeout, 1 on errors, 2 on
usage errors.
`;

/** Exit statuses of `typevisor run`, documented in its help. */
export const RUN_STATUS = { ok: 0, error: 1, usage: 2, tripleFault: 3, timeout: 124 } as const;

/** Where an output stream goes: the command's stdio, a file, or nowhere. */
type Sink = { kind: "stdio" } | { kind: "file"; path: string } | { kind: "none" };

function parseSink(option: string, value: string | undefined, fallback: Sink): Sink {
  if (value === undefined) return fallback;
  if (value === "stdio") return { kind: "stdio" };
  if (value === "none") return { kind: "none" };
  if (value.startsWith("file:") && value.length > 5) return { kind: "file", path: value.slice(5) };
  throw new CommandError(`--${option} must be stdio, file:PATH or none (got '${value}')`, 2);
}

/** The kind of kernel image, from its bytes. */
export function detectKernel(image: Uint8Array): "bzimage" | "multiboot" | undefined {
  try {
    parseBzImage(image);
    return "bzimage";
  } catch {
    // not a bzImage; look for a multiboot header in the first 8 KiB (multiboot spec §3.1.1)
  }
  const view = new DataView(image.buffer, image.byteOffset, image.byteLength);
  for (let off = 0; off + 12 <= Math.min(image.length, 8192); off += 4) {
    if (view.getUint32(off, true) === 0x1badb002) {
      const flags = view.getUint32(off + 4, true);
      if (((0x1badb002 + flags + view.getUint32(off + 8, true)) | 0) === 0) return "multiboot";
    }
  }
  return undefined;
}

/** Options of `typevisor run` after parsing. */
export interface RunOptions {
  kernel?: string;
  initrd?: string;
  append?: string;
  exec?: string;
  modules: string[];
  memory: number;
  smp: number;
  serial: Sink;
  debugcon: Sink;
  noReboot: boolean;
  timeout?: number;
  stats?: string;
  deterministic: boolean;
  disks: DiskOption[];
  console: Sink;
  rng: boolean;
  nets: NetOption[];
}

/** Parses `typevisor run` arguments; throws CommandError (status 2) on misuse. */
export function parseRunArgs(argv: string[]): RunOptions | "help" {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        kernel: { type: "string" },
        initrd: { type: "string" },
        append: { type: "string" },
        exec: { type: "string" },
        modules: { type: "string" },
        memory: { type: "string", short: "m" },
        smp: { type: "string" },
        serial: { type: "string" },
        debugcon: { type: "string" },
        "no-reboot": { type: "boolean" },
        timeout: { type: "string" },
        stats: { type: "string" },
        deterministic: { type: "boolean" },
        disk: { type: "string", multiple: true },
        console: { type: "string" },
        rng: { type: "boolean" },
        net: { type: "string", multiple: true },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    throw new CommandError((e as Error).message, 2);
  }
  if (values.help) return "help";
  let memory: number;
  try {
    memory = parseSize(values.memory ?? "256M");
  } catch (e) {
    throw new CommandError(`--memory: ${(e as Error).message}`, 2);
  }
  if (memory < 16 * 2 ** 20 || memory > 0xb0000000) throw new CommandError(`--memory must be between 16M and 2816M (got ${values.memory})`, 2);
  const smp = values.smp === undefined ? 1 : Number(values.smp);
  if (!Number.isInteger(smp) || smp < 1 || smp > 64) throw new CommandError(`--smp must be 1..64 (got '${values.smp}')`, 2);
  let timeout: number | undefined;
  if (values.timeout !== undefined) {
    timeout = Number(values.timeout);
    if (!(timeout > 0)) throw new CommandError(`--timeout must be a positive number of seconds (got '${values.timeout}')`, 2);
  }
  const option = <T>(parse: () => T): T => {
    try {
      return parse();
    } catch (e) {
      throw new CommandError((e as Error).message, 2);
    }
  };
  const disks = (values.disk ?? []).map((d) => option(() => parseDiskOption(d)));
  const nets = (values.net ?? []).map((n) => option(() => parseNetOption(n)));
  const modules = (values.modules ?? "").split(",").map((m) => m.trim()).filter(Boolean);
  if (modules.some((m) => !/^[A-Za-z0-9_-]+$/.test(m))) throw new CommandError(`--modules takes module names separated by commas (got '${values.modules}')`, 2);
  if (modules.length && values.kernel !== undefined) throw new CommandError("--modules works with the default guest only", 2);
  if (values.exec !== undefined && values.kernel !== undefined) throw new CommandError("--exec works with the default guest only (drop --kernel, or put tv.exec=... in --append)", 2);
  return {
    kernel: values.kernel,
    initrd: values.initrd,
    append: values.append,
    exec: values.exec,
    modules,
    memory,
    smp,
    serial: parseSink("serial", values.serial, { kind: "stdio" }),
    debugcon: parseSink("debugcon", values.debugcon, { kind: "none" }),
    noReboot: values["no-reboot"] ?? false,
    timeout,
    stats: values.stats,
    deterministic: values.deterministic ?? false,
    disks,
    console: parseSink("console", values.console, { kind: "none" }),
    rng: values.rng ?? false,
    nets,
  };
}

/** The guest kernel modules to load: those the virtio devices need (Debian builds them as modules), then the user's. */
function virtioModulesFor(o: RunOptions): string[] {
  const names: string[] = [];
  if (o.disks.length || o.console.kind !== "none" || o.rng || o.nets.length) names.push("virtio_pci");
  if (o.disks.length) names.push("virtio_blk");
  if (o.console.kind !== "none") names.push("virtio_console");
  if (o.rng) names.push("virtio_rng");
  if (o.nets.length) names.push("virtio_net");
  return [...names, ...o.modules];
}

/** Quotes `cmd` for the kernel command line's `tv.exec="..."` (the guest's /init reads it). */
function execParam(cmd: string): string {
  if (cmd.includes('"')) throw new CommandError('--exec cannot contain a double quote (the kernel command line has no escape for it)', 2);
  return `tv.exec="${cmd}"`;
}

/** What to boot: kernel bytes, its kind, initrd and command line. */
interface BootImage {
  kind: "bzimage" | "multiboot";
  kernel: Uint8Array;
  initrd?: Uint8Array;
  cmdline: string;
}

async function resolveBoot(o: RunOptions, io: CommandIo): Promise<BootImage> {
  if (o.kernel !== undefined) {
    const kernel = await readFile(o.kernel).catch((e: Error) => {
      throw new CommandError(`cannot read kernel: ${e.message}`);
    });
    const kind = detectKernel(kernel);
    if (!kind) throw new CommandError(`${o.kernel}: neither a bzImage (no "HdrS" setup header) nor a multiboot kernel (no header in the first 8 KiB)`);
    const initrd = o.initrd === undefined ? undefined : await readFile(o.initrd).catch((e: Error) => {
      throw new CommandError(`cannot read initrd: ${e.message}`);
    });
    return { kind, kernel, initrd, cmdline: o.append ?? (kind === "bzimage" ? "console=ttyS0" : "") };
  }
  // The default guest: Debian's i386 kernel and a busybox initramfs.
  const guest = await fetchDebianGuest({ onProgress: (line) => io.stderr.write(`typevisor run: ${line}\n`) });
  const kernel = await readFile(guest.kernel);
  let initrd: Uint8Array;
  if (o.initrd !== undefined) initrd = await readFile(o.initrd);
  else {
    const wanted = virtioModulesFor(o);
    const closure = wanted.length ? moduleClosure(guest.modules, wanted) : [];
    const files: Record<string, Uint8Array> = {};
    for (const m of closure) files[`lib/modules/${guest.kernelRelease}/${m.path}`] = await readFile(`${guest.modules}/${m.path}`);
    // /init loads the whole closure in order: busybox modprobe follows
    // depends= but not the soft dependencies (ext4 needs crc32c first).
    initrd = await busyboxInitramfs({ busybox: await readFile(guest.busybox), files, modules: closure.map((m) => m.name) }).toGzip();
  }
  // The kernel's crypto self-tests are most of its boot work and test the
  // kernel, not the machine: the default guest skips them.
  const base = o.append ?? `${o.console.kind === "stdio" ? "console=hvc0" : "console=ttyS0"} quiet cryptomgr.notests`;
  return { kind: "bzimage", kernel, initrd, cmdline: o.exec === undefined ? base : `${base} ${execParam(o.exec)}` };
}

function statusOf(info: StopInfo, io: CommandIo): number {
  switch (info.reason) {
    case "poweroff":
    case "user":
      return RUN_STATUS.ok;
    case "reboot":
      io.stderr.write("typevisor run: the guest rebooted (--no-reboot)\n");
      return RUN_STATUS.ok;
    case "exit":
      return info.exitCode ?? RUN_STATUS.error;
    case "shutdown":
      io.stderr.write(`typevisor run: ${info.message ?? "triple fault"} (the guest shut the CPU down)\n`);
      return RUN_STATUS.tripleFault;
    case "timeout":
      io.stderr.write(`typevisor run: ${info.message}\n`);
      return RUN_STATUS.timeout;
    default:
      io.stderr.write(`typevisor run: the machine stopped: ${info.reason}${info.message ? `: ${info.message}` : ""}\n`);
      return RUN_STATUS.error;
  }
}

async function run(argv: string[], io: CommandIo): Promise<number> {
  const o = parseRunArgs(argv);
  if (o === "help") {
    io.stdout.write(HELP);
    return 0;
  }
  const boot = await resolveBoot(o, io);

  const stdin = io.stdin as NodeJS.ReadStream;
  // Terminal input goes to the virtio console when it is on stdio, else to the serial port.
  const inputOnStdio = o.serial.kind === "stdio" || o.console.kind === "stdio";
  const interactive = inputOnStdio && stdin.isTTY === true && typeof stdin.setRawMode === "function";
  const sinks: BufferedSerial[] = [];
  const open = (sink: Sink): BufferedSerial | undefined => {
    if (sink.kind === "none") return undefined;
    const s = bufferedSerial(sink.kind === "stdio" ? io.stdout : sink.path);
    sinks.push(s);
    return s;
  };
  const serialSink = o.console.kind === "stdio" && o.serial.kind === "stdio" && o.kernel === undefined ? ({ kind: "none" } as Sink) : o.serial;
  const serial = open(serialSink);
  const hvc = open(o.console);
  const debugcon = o.debugcon.kind === "stdio" && serial && o.serial.kind === "stdio" ? serial : open(o.debugcon);

  const plugins: Plugin[] = [
    x86Cpu({ vcpus: o.smp, onTripleFault: o.noReboot ? "shutdown" : "reset" }),
    pcPlatform({ serial: serial ?? null, debugcon: debugcon ? (b) => debugcon.writeByte(b) : undefined }),
  ];
  // virtio devices on the PCI bus, where Linux's virtio_pci finds them.
  const disks: TimedBlockDevice[] = [];
  for (const [i, d] of o.disks.entries()) {
    const disk = new TimedBlockDevice(await openImage(d.path, { format: d.format, readOnly: d.readOnly }));
    disks.push(disk);
    plugins.push(virtioBlk({ disk, readOnly: d.readOnly, transport: "pci", id: String(i), serial: `disk${i}` }));
  }
  if (hvc) plugins.push(virtioConsole({ backend: hvc, transport: "pci" }));
  if (o.rng) plugins.push(virtioRng({ transport: "pci" }));
  for (const [i, n] of o.nets.entries()) {
    const pcap = n.pcap ? await PcapWriter.createFile(n.pcap) : undefined;
    plugins.push(virtioNet({ switch: n.switch, mac: n.mac, pcap, transport: "pci", id: String(i) }));
  }
  const vm = await createMachine({
    memory: o.memory,
    plugins,
    resetAction: o.noReboot ? "stop" : "reset",
    clock: { mode: o.deterministic ? "deterministic" : "realtime" },
  });

  // Console input: raw terminal with the Ctrl-A escape, or plain forwarding.
  const input = o.console.kind === "stdio" ? hvc : serial;
  const escape = new ConsoleEscape({
    send: (bytes) => input?.receive(bytes),
    quit: () => void vm.stop({ reason: "user", message: "quit from the console" }),
    help: (text) => io.stderr.write(text),
  });
  const onData = (chunk: Buffer | string): void => {
    const bytes = typeof chunk === "string" ? Buffer.from(chunk) : chunk;
    if (interactive) escape.input(bytes);
    else input?.receive(bytes);
  };
  if (inputOnStdio) {
    if (interactive) stdin.setRawMode(true);
    stdin.on("data", onData);
    stdin.resume();
  }
  const onSignal = (): void => void vm.stop({ reason: "user", message: "interrupted" });
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const timer = o.timeout === undefined ? undefined : setTimeout(() => void vm.stop({ reason: "timeout", message: `timed out after ${o.timeout} s` }), o.timeout * 1000);

  const bootAt = performance.now();
  const cpuAtBoot = process.cpuUsage();
  try {
    if (boot.kind === "bzimage") await vm.boot(linuxBoot({ kernel: boot.kernel, initrd: boot.initrd, cmdline: boot.cmdline }));
    else await vm.boot(multibootBoot({ kernel: boot.kernel, cmdline: boot.cmdline, modules: boot.initrd ? [{ data: boot.initrd, cmdline: o.initrd ?? "" }] : [] }));
    const info = await vm.stopped;
    for (const s of sinks) await s.close();
    if (o.stats !== undefined) {
      const cpu = process.cpuUsage(cpuAtBoot);
      const stats: RunStats = {
        wallSeconds: (performance.now() - bootAt) / 1000,
        cpuSeconds: (cpu.user + cpu.system) / 1e6,
        instructions: vm.instructions,
        disks: disks.map((d, i) => ({ path: o.disks[i].path, busySeconds: d.busyMs / 1000, requests: d.requests })),
        stop: { reason: info.reason, exitCode: info.exitCode, message: info.message },
      };
      await writeFile(o.stats, JSON.stringify(stats, null, 2) + "\n");
    }
    return statusOf(info, io);
  } finally {
    if (timer) clearTimeout(timer);
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    if (inputOnStdio) {
      stdin.off("data", onData);
      if (interactive) stdin.setRawMode(false);
      stdin.pause();
    }
    if (vm.state !== "stopped") await vm.stop();
    for (const s of sinks) await s.close();
  }
}

/** `typevisor run`. */
export const runCommand: Command = { name: "run", summary: "boot a virtual machine (default: a Debian guest with a shell)", run };
export default runCommand;
