import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { TypevisorError } from "@typevisor/hv-core";

/** Raised for a module that is missing or not a loadable ELF object. */
export class KernelModuleError extends TypevisorError {}

/** One kernel module to put into an initramfs. */
export interface KernelModule {
  /** Module name as the kernel knows it (`-` folded to `_`), e.g. `virtio_pci`. */
  name: string;
  /** Path relative to the release's modules folder, e.g. `kernel/drivers/virtio/virtio_pci.ko`. */
  path: string;
  /** Names of the modules it needs loaded first (its `depends=` entry). */
  depends: string[];
}

/** Most .ko files a modules folder may hold before we refuse to index it. */
const MAX_MODULES = 20_000;
/** Most bytes of one module we read (Debian's largest are a few MiB). */
const MAX_MODULE_BYTES = 64 * 2 ** 20;

const normalise = (name: string): string => name.replace(/-/g, "_");

/**
 * Reads the `.modinfo` section of an ELF kernel module (null-separated
 * `key=value` strings, see the kernel's MODULE_INFO) and returns its values
 * for `key`. The ELF headers are checked before use: a damaged file gives a
 * typed error, not a wrong read.
 */
export function moduleInfo(ko: Uint8Array, key: string, where = "module"): string[] {
  const v = new DataView(ko.buffer, ko.byteOffset, ko.byteLength);
  const bad = (what: string): never => {
    throw new KernelModuleError("KMOD_FORMAT", `${where}: ${what}`);
  };
  if (ko.length < 52 || v.getUint32(0) !== 0x7f454c46) bad("not an ELF file");
  const is64 = ko[4] === 2;
  if (ko[5] !== 1) bad("not little-endian ELF");
  const u = (off: number, size: 2 | 4 | 8): number => {
    if (off + size > ko.length) bad(`header field at offset ${off} is past the end of the file`);
    return size === 2 ? v.getUint16(off, true) : size === 4 ? v.getUint32(off, true) : Number(v.getBigUint64(off, true));
  };
  const shoff = is64 ? u(0x28, 8) : u(0x20, 4);
  const shentsize = u(is64 ? 0x3a : 0x2e, 2);
  const shnum = u(is64 ? 0x3c : 0x30, 2);
  const shstrndx = u(is64 ? 0x3e : 0x32, 2);
  if (shentsize < (is64 ? 64 : 40) || shnum === 0 || shstrndx >= shnum) bad("bad section header table");
  const section = (i: number): { name: number; off: number; size: number } => {
    const base = shoff + i * shentsize;
    return is64
      ? { name: u(base, 4), off: u(base + 0x18, 8), size: u(base + 0x20, 8) }
      : { name: u(base, 4), off: u(base + 0x10, 4), size: u(base + 0x14, 4) };
  };
  const strtab = section(shstrndx);
  if (strtab.off + strtab.size > ko.length) bad("section name table is past the end of the file");
  const cstr = (off: number, end: number): string => {
    let e = off;
    while (e < end && ko[e] !== 0) e++;
    return new TextDecoder().decode(ko.subarray(off, e));
  };
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (s.name >= strtab.size || cstr(strtab.off + s.name, strtab.off + strtab.size) !== ".modinfo") continue;
    if (s.off + s.size > ko.length) bad(".modinfo is past the end of the file");
    const out: string[] = [];
    for (const entry of new TextDecoder().decode(ko.subarray(s.off, s.off + s.size)).split("\0")) {
      if (entry.startsWith(`${key}=`)) out.push(entry.slice(key.length + 1));
    }
    return out;
  }
  return bad("no .modinfo section (not a kernel module)");
}

/**
 * Indexes the `.ko` files under a release's modules folder
 * (`/lib/modules/<release>`) by module name.
 */
export function indexModules(modulesDir: string): Map<string, string> {
  const index = new Map<string, string>();
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const full = join(dir, name);
      if (statSync(full).isDirectory()) walk(full);
      else if (name.endsWith(".ko")) {
        if (index.size >= MAX_MODULES) throw new KernelModuleError("KMOD_TOO_MANY", `${modulesDir} holds more than ${MAX_MODULES} modules`);
        index.set(normalise(name.slice(0, -3)), relative(modulesDir, full));
      }
    }
  };
  walk(join(modulesDir, "kernel"));
  return index;
}

/**
 * The modules `names` need, dependencies first, each once: what an
 * initramfs must carry to load them (the same closure `modprobe` follows
 * through `modules.dep`). Names built into the kernel (`modules.builtin`)
 * are skipped.
 */
export function moduleClosure(modulesDir: string, names: readonly string[]): KernelModule[] {
  const index = indexModules(modulesDir);
  let builtin = new Set<string>();
  try {
    builtin = new Set(
      readFileSync(join(modulesDir, "modules.builtin"), "utf8")
        .split("\n")
        .filter(Boolean)
        .map((l) => normalise(l.replace(/^.*\//, "").replace(/\.ko$/, ""))),
    );
  } catch {
    // no builtin list: every name must be a module file
  }
  const out: KernelModule[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = (raw: string, chain: string[]): void => {
    const name = normalise(raw);
    if (state.get(name) === "done" || builtin.has(name)) return;
    if (state.get(name) === "visiting") throw new KernelModuleError("KMOD_CYCLE", `module dependency cycle: ${[...chain, name].join(" -> ")}`);
    const path = index.get(name);
    if (!path) throw new KernelModuleError("KMOD_MISSING", `module "${name}" is not in ${modulesDir}${chain.length ? ` (needed by ${chain[chain.length - 1]})` : ""}`);
    state.set(name, "visiting");
    const full = join(modulesDir, path);
    if (statSync(full).size > MAX_MODULE_BYTES) throw new KernelModuleError("KMOD_TOO_BIG", `${full} is larger than ${MAX_MODULE_BYTES} bytes`);
    const depends = moduleInfo(readFileSync(full), "depends", full).flatMap((d) => d.split(",")).filter(Boolean).map(normalise);
    for (const d of depends) visit(d, [...chain, name]);
    state.set(name, "done");
    out.push({ name, path, depends });
  };
  for (const n of names) visit(n, []);
  return out;
}
