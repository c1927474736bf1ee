import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
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
  /**
   * Modules its `softdep=pre:` entry asks for, resolved to module names:
   * not linked against, but used at run time (ext4 asks for `crypto-crc32c`).
   */
  softdeps: string[];
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

/** File in a modules folder caching its alias index (what depmod's modules.alias holds). */
const ALIAS_CACHE = "typevisor.aliases.json";

/**
 * Module names by alias (`alias=` entries of every module's .modinfo),
 * for the plain aliases a `softdep=` names; wildcard device aliases are
 * left out. Reading every module takes a moment, so the index is cached in
 * the modules folder when it is writable.
 */
export function aliasIndex(modulesDir: string, index = indexModules(modulesDir)): Map<string, string[]> {
  const cache = join(modulesDir, ALIAS_CACHE);
  try {
    const cached: unknown = JSON.parse(readFileSync(cache, "utf8"));
    // Only a well-formed cache is trusted (alias -> module names); anything else is rebuilt.
    if (cached !== null && typeof cached === "object" && !Array.isArray(cached)) {
      const entries = Object.entries(cached);
      if (entries.every(([, v]) => Array.isArray(v) && v.every((n) => typeof n === "string"))) return new Map(entries as [string, string[]][]);
    }
  } catch {
    // no cache yet, or unreadable: rebuild it
  }
  const aliases = new Map<string, string[]>();
  for (const [name, path] of index) {
    const full = join(modulesDir, path);
    if (statSync(full).size > MAX_MODULE_BYTES) continue;
    for (const alias of moduleInfo(readFileSync(full), "alias", full)) {
      if (/[*?[]/.test(alias)) continue;
      const list = aliases.get(alias) ?? [];
      list.push(name);
      aliases.set(alias, list);
    }
  }
  try {
    writeFileSync(cache, JSON.stringify(Object.fromEntries(aliases)));
  } catch {
    // a read-only modules folder: no cache
  }
  return aliases;
}

/**
 * Parses a `softdep=` value ("pre: a b post: c") into its pre-modules.
 * Post-modules are not needed for the module to work.
 */
function softdepPre(values: string[]): string[] {
  const out: string[] = [];
  for (const v of values) {
    let pre = false;
    for (const word of v.trim().split(/\s+/)) {
      if (word === "pre:") pre = true;
      else if (word === "post:") pre = false;
      else if (pre && word) out.push(word);
    }
  }
  return out;
}

/**
 * The modules `names` need, dependencies first, each once: what an
 * initramfs must carry to load them (the same closure `modprobe` follows
 * through `modules.dep`, plus the `softdep=pre:` modules it loads first,
 * resolved through module aliases and preferring a `_generic`
 * implementation when several provide one). Names built into the kernel
 * (`modules.builtin`) are skipped; a soft dependency nothing provides is
 * left out, as modprobe does.
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
  let aliases: Map<string, string[]> | undefined;
  const resolveSoft = (dep: string): string | undefined => {
    const name = normalise(dep);
    if (index.has(name) || builtin.has(name)) return name;
    aliases ??= aliasIndex(modulesDir, index);
    const providers = aliases.get(dep) ?? aliases.get(name) ?? [];
    if (providers.some((p) => builtin.has(p))) return undefined;
    return providers.find((p) => p.endsWith("_generic")) ?? [...providers].sort()[0];
  };
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
    const ko = readFileSync(full);
    const depends = moduleInfo(ko, "depends", full).flatMap((d) => d.split(",")).filter(Boolean).map(normalise);
    const softdeps = softdepPre(moduleInfo(ko, "softdep", full))
      .map(resolveSoft)
      .filter((d): d is string => d !== undefined && !builtin.has(d));
    for (const d of [...softdeps, ...depends]) visit(d, [...chain, name]);
    state.set(name, "done");
    out.push({ name, path, depends, softdeps });
  };
  for (const n of names) visit(n, []);
  return out;
}
