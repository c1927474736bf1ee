// Node-only: fetches Debian guest packages and builds initramfs images from
// host files. Browser bundles that never call these functions drop them.
import { spawn } from "node:child_process";
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { TypevisorError } from "@typevisor/hv-core";
import { InitramfsBuilder, InitramfsError, addSpec } from "./initramfs.js";

/** Raised when fetching guest packages fails; the message carries apt's own words. */
export class GuestFetchError extends TypevisorError {}

/** Where typevisor caches downloads: `$TYPEVISOR_CACHE`, else `$XDG_CACHE_HOME/typevisor`, else `~/.cache/typevisor`. */
export function cacheDir(): string {
  if (process.env.TYPEVISOR_CACHE) return resolve(process.env.TYPEVISOR_CACHE);
  if (process.env.XDG_CACHE_HOME) return join(process.env.XDG_CACHE_HOME, "typevisor");
  return join(homedir(), ".cache", "typevisor");
}

/** A fetched Debian guest: a kernel and a static busybox, unpacked in the cache. */
export interface DebianGuest {
  /** Folder holding this guest. */
  dir: string;
  /** Path of the bzImage (`vmlinuz-*`). */
  kernel: string;
  /** Kernel release, e.g. `6.1.0-50-686`. */
  kernelRelease: string;
  /** Folder of the kernel's modules (`lib/modules/<release>`). */
  modules: string;
  /** Path of the static busybox binary. */
  busybox: string;
  /** The Debian packages, name to version. */
  packages: Record<string, string>;
}

/** Options of {@link fetchDebianGuest}. */
export interface FetchDebianGuestOptions {
  /** Cache folder (default {@link cacheDir}). The guest goes into `<dir>/debian-<arch>`. */
  dir?: string;
  /** Debian architecture (default `i386`). */
  arch?: string;
  /** Kernel metapackage (default `linux-image-686`). */
  kernelPackage?: string;
  /** Debian release (default: this host's Debian codename, else `bookworm`). */
  suite?: string;
  /** Mirror URL (default `http://deb.debian.org/debian`). */
  mirror?: string;
  /** Fetch again even when the cache has the guest. */
  refresh?: boolean;
  /** Progress lines (commands being run). */
  onProgress?: (line: string) => void;
}

function hostSuite(): string {
  try {
    const os = readFileSync("/etc/os-release", "utf8");
    if (/^ID=debian$/m.test(os)) {
      const m = /^VERSION_CODENAME=(\w+)$/m.exec(os);
      if (m) return m[1];
    }
  } catch {
    // not Debian or no os-release: fall back
  }
  return "bookworm";
}

function run(cmd: string, args: string[], cwd: string, onProgress?: (line: string) => void): Promise<{ status: number; stdout: string; stderr: string }> {
  onProgress?.(`$ ${cmd} ${args.filter((a) => !a.startsWith("Dir::") && !a.startsWith("APT::") && !a.startsWith("Debug::") && a !== "-o").join(" ")}`);
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, { cwd, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, LC_ALL: "C", DEBIAN_FRONTEND: "noninteractive" } });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("error", (e) => reject(new GuestFetchError("GUEST_TOOL", `cannot run ${cmd}: ${e.message} (a Debian host with apt-get and dpkg-deb is needed)`)));
    child.on("close", (status) => resolvePromise({ status: status ?? 1, stdout, stderr }));
  });
}

/**
 * Downloads Debian's i386 kernel (`linux-image-686`, resolved to the real
 * `linux-image-<release>-686` package) and `busybox-static` with
 * `apt-get download`, using a private apt state (lists, cache, status) in
 * the cache folder and Debian's archive keyring, so the host's package
 * state is never touched and no root is needed. Unpacks both with
 * `dpkg-deb -x` and caches the result; a second call returns the cache.
 * @throws GuestFetchError when apt cannot resolve or download the packages
 */
export async function fetchDebianGuest(options: FetchDebianGuestOptions = {}): Promise<DebianGuest> {
  const arch = options.arch ?? "i386";
  if (!/^[a-z0-9-]+$/.test(arch)) throw new GuestFetchError("GUEST_ARCH", `invalid architecture "${arch}"`);
  const dir = join(options.dir ?? cacheDir(), `debian-${arch}`);
  const manifestPath = join(dir, "manifest.json");
  if (!options.refresh && existsSync(manifestPath)) {
    const m = JSON.parse(readFileSync(manifestPath, "utf8")) as DebianGuest;
    if (existsSync(m.kernel) && existsSync(m.busybox)) return m;
  }
  const progress = options.onProgress;
  const apt = join(dir, "apt");
  for (const d of ["lists/partial", "cache/archives/partial", "state", "etc/sources.list.d", "etc/preferences.d", "etc/apt.conf.d", "debs"]) mkdirSync(join(apt, d), { recursive: true });
  writeFileSync(join(apt, "status"), "");
  const suite = options.suite ?? hostSuite();
  const mirror = options.mirror ?? "http://deb.debian.org/debian";
  const keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
  const signed = existsSync(keyring) ? `[signed-by=${keyring}] ` : "";
  const security = mirror === "http://deb.debian.org/debian" ? "http://deb.debian.org/debian-security" : undefined;
  const sources = [`deb ${signed}${mirror} ${suite} main`, `deb ${signed}${mirror} ${suite}-updates main`, ...(security ? [`deb ${signed}${security} ${suite}-security main`] : [])];
  writeFileSync(join(apt, "etc", "sources.list"), sources.join("\n") + "\n");
  const isRoot = typeof process.getuid === "function" && process.getuid() === 0;
  const o = (k: string, v: string): string[] => ["-o", `${k}=${v}`];
  const opts = [
    ...o("APT::Architecture", arch),
    ...o("APT::Architectures", arch),
    ...o("Dir::State", join(apt, "state")),
    ...o("Dir::State::Lists", join(apt, "lists")),
    ...o("Dir::State::status", join(apt, "status")),
    ...o("Dir::Cache", join(apt, "cache")),
    ...o("Dir::Etc::SourceList", join(apt, "etc", "sources.list")),
    ...o("Dir::Etc::SourceParts", join(apt, "etc", "sources.list.d")),
    ...o("Dir::Etc::Preferences", join(apt, "etc", "preferences")),
    ...o("Dir::Etc::PreferencesParts", join(apt, "etc", "preferences.d")),
    ...o("Dir::Etc::Parts", join(apt, "etc", "apt.conf.d")),
    ...o("Debug::NoLocking", "1"),
    ...(isRoot ? o("APT::Sandbox::User", "root") : []),
  ];
  const update = await run("apt-get", [...opts, "-q", "update"], dir, progress);
  // A failing secondary index (e.g. a mirror mid-sync) is not fatal as long as the packages resolve.
  const warnings = update.status !== 0 ? update.stderr.split("\n").filter((l) => l.startsWith("E:") || l.startsWith("W:")) : [];
  for (const w of warnings) progress?.(`apt-get update: ${w}`);

  const metapkg = options.kernelPackage ?? "linux-image-686";
  const deps = await run("apt-cache", [...opts, "depends", "--no-recommends", "--no-suggests", metapkg], dir, progress);
  const kernelPkg = /Depends: (linux-image-[0-9][^\s]*)/.exec(deps.stdout)?.[1];
  if (deps.status !== 0 || !kernelPkg) {
    throw new GuestFetchError("GUEST_RESOLVE", `cannot resolve ${metapkg} for ${arch} in ${suite}: ${(deps.stderr || deps.stdout).trim().split("\n").slice(-3).join(" / ")}${warnings.length ? ` (apt-get update: ${warnings.join(" / ")})` : ""}`);
  }
  const debs = join(apt, "debs");
  for (const f of readdirSync(debs)) rmSync(join(debs, f), { force: true });
  const dl = await run("apt-get", [...opts, "-q", "download", kernelPkg, "busybox-static"], debs, progress);
  if (dl.status !== 0) throw new GuestFetchError("GUEST_DOWNLOAD", `apt-get download ${kernelPkg} busybox-static failed: ${dl.stderr.trim().split("\n").slice(-3).join(" / ")}`);

  const root = join(dir, "root");
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  const packages: Record<string, string> = {};
  for (const f of readdirSync(debs).filter((n) => n.endsWith(".deb")).sort()) {
    const x = await run("dpkg-deb", ["-x", join(debs, f), root], dir, progress);
    if (x.status !== 0) throw new GuestFetchError("GUEST_UNPACK", `dpkg-deb -x ${f} failed: ${x.stderr.trim()}`);
    const m = /^([^_]+)_([^_]+)_/.exec(f);
    if (m) packages[m[1]] = decodeURIComponent(m[2]);
  }
  const boot = join(root, "boot");
  const vmlinuz = existsSync(boot) ? readdirSync(boot).find((n) => n.startsWith("vmlinuz-")) : undefined;
  if (!vmlinuz) throw new GuestFetchError("GUEST_UNPACK", `no /boot/vmlinuz-* in ${kernelPkg}`);
  const kernelRelease = vmlinuz.slice("vmlinuz-".length);
  const busybox = [join(root, "bin", "busybox"), join(root, "usr", "bin", "busybox")].find(existsSync);
  if (!busybox) throw new GuestFetchError("GUEST_UNPACK", "no busybox binary in busybox-static");
  const guest: DebianGuest = { dir, kernel: join(boot, vmlinuz), kernelRelease, modules: join(root, "lib", "modules", kernelRelease), busybox, packages };
  writeFileSync(manifestPath, JSON.stringify(guest, null, 2) + "\n");
  return guest;
}

/**
 * The guest's `/init` (run by the kernel from the initramfs): mounts
 * `/proc`, `/sys`, `/dev` (and `/dev/pts`), loads the modules listed in
 * `/etc/modules`, then runs the command given on the kernel command line as
 * `tv.exec="..."` (or `tv.exec=word`), prints its exit status and powers
 * off; without `tv.exec` it starts a shell on the console and powers off
 * when the shell exits.
 */
export const GUEST_INIT_SCRIPT = `#!/bin/busybox sh
# typevisor guest init
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /root /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
hostname typevisor
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TERM=\${TERM:-vt100}
[ -d /lib/modules ] && depmod
if [ -f /etc/modules ]; then
  while read -r mod args; do
    case "$mod" in ""|\\#*) continue ;; esac
    modprobe "$mod" $args || echo "tv: modprobe $mod failed"
  done < /etc/modules
fi
# The kernel opens /dev/console for /init before any module loads; when the
# console is a module's device (console=hvc0 needs virtio_console) there was
# none, so attach to it now that it exists.
if ! [ -t 1 ]; then
  con=$(sed -n 's/.*console=\\([a-zA-Z0-9]*\\).*/\\1/p' /proc/cmdline)
  [ -n "$con" ] && [ -c "/dev/$con" ] && exec 0<>"/dev/$con" 1>&0 2>&0
fi
cmd=$(sed -n 's/.*tv\\.exec="\\([^"]*\\)".*/\\1/p' /proc/cmdline)
[ -n "$cmd" ] || cmd=$(sed -n 's/.*tv\\.exec=\\([^ "][^ ]*\\).*/\\1/p' /proc/cmdline)
if [ -n "$cmd" ]; then
  echo "tv: exec: $cmd"
  sh -c "$cmd"
  echo "tv: exit status $?"
  sync
  poweroff -f
fi
echo "tv: shell on the console; leave it to power off"
setsid cttyhack sh
sync
poweroff -f
`;

/** Options of {@link busyboxInitramfs}. */
export interface BusyboxInitramfsOptions {
  /** The static busybox binary. */
  busybox: Uint8Array;
  /** Extra files, e.g. kernel modules: destination path to contents. */
  files?: Record<string, Uint8Array | string>;
  /** Module names written to `/etc/modules` (loaded by `/init` with modprobe). */
  modules?: readonly string[];
}

/**
 * The guest's initramfs: busybox as `/bin/busybox` (with `/bin/sh`), `/init`
 * ({@link GUEST_INIT_SCRIPT}), `/dev/console` so init has a console before
 * devtmpfs is mounted, and any extra files.
 */
export function busyboxInitramfs(options: BusyboxInitramfsOptions): InitramfsBuilder {
  const b = new InitramfsBuilder();
  for (const d of ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "run", "root"]) b.dir(d);
  b.node("dev/console", "c", 5, 1, 0o600);
  b.node("dev/null", "c", 1, 3, 0o666);
  b.file("bin/busybox", options.busybox, 0o755);
  b.symlink("bin/sh", "busybox");
  b.file("init", GUEST_INIT_SCRIPT, 0o755);
  b.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
  b.file("etc/group", "root:x:0:\n");
  if (options.modules?.length) b.file("etc/modules", options.modules.join("\n") + "\n");
  for (const [path, data] of Object.entries(options.files ?? {})) b.file(path, data, path.endsWith(".sh") ? 0o755 : 0o644);
  return b;
}

/**
 * Adds a host folder's contents (files, folders, symlinks, device nodes,
 * FIFOs) to `builder` under `prefix`, in sorted order, owned by root, with
 * the host permission bits.
 */
export function addDirectory(builder: InitramfsBuilder, hostDir: string, prefix = "/", maxEntries = 1_000_000): InitramfsBuilder {
  let count = 0;
  const walk = (rel: string): void => {
    for (const name of readdirSync(join(hostDir, rel)).sort()) {
      if (++count > maxEntries) throw new InitramfsError("INITRAMFS_SIZE", `${hostDir} has more than ${maxEntries} entries`);
      const relPath = rel ? `${rel}/${name}` : name;
      const host = join(hostDir, relPath);
      const dest = `${prefix.replace(/\/$/, "")}/${relPath}`;
      const st = lstatSync(host);
      const perm = st.mode & 0o7777;
      if (st.isDirectory()) {
        builder.dir(dest, perm);
        walk(relPath);
      } else if (st.isSymbolicLink()) builder.symlink(dest, readlinkSync(host));
      else if (st.isFile()) builder.file(dest, readFileSync(host), perm);
      else if (st.isCharacterDevice() || st.isBlockDevice()) {
        // Linux dev_t: major = bits 8..19, minor = bits 0..7 and 20..31.
        const rdev = st.rdev;
        builder.node(dest, st.isCharacterDevice() ? "c" : "b", (rdev >> 8) & 0xfff, (rdev & 0xff) | ((rdev >> 12) & 0xfff00), perm);
      } else if (st.isFIFO()) builder.add({ type: "pipe", path: dest, mode: perm });
      else if (st.isSocket()) builder.add({ type: "socket", path: dest, mode: perm });
    }
  };
  walk("");
  return builder;
}

/** Builds an initramfs from a host folder or a gen_init_cpio spec file (locations relative to the spec's folder). */
export function initramfsFromPath(path: string): InitramfsBuilder {
  const builder = new InitramfsBuilder();
  const st = lstatSync(path);
  if (st.isDirectory()) return addDirectory(builder, path);
  const base = dirname(resolve(path));
  return addSpec(builder, readFileSync(path, "utf8"), (loc) => readFileSync(resolve(base, loc)));
}
