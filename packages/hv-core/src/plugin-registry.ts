import { TypevisorError } from "./errors.js";
import type { Machine } from "./machine.js";
import type { Plugin } from "./plugin.js";

/** Why a set of plugins cannot be composed. */
export type PluginErrorKind = "missing" | "duplicate" | "conflict" | "cycle" | "setup" | "teardown";

/** Raised when plugins cannot be composed; `plugins` names the culprits. */
export class PluginError extends TypevisorError {
  /** What kind of composition failure this is. */
  readonly kind: PluginErrorKind;
  /** Names of the plugins (and capabilities) involved. */
  readonly plugins: readonly string[];

  /**
   * @param kind - kind of failure
   * @param plugins - the plugin names involved
   * @param message - human-readable explanation
   * @param options - the underlying cause, for setup failures
   */
  constructor(kind: PluginErrorKind, plugins: readonly string[], message: string, options?: { cause?: unknown }) {
    super(`PLUGIN_${kind.toUpperCase()}`, message);
    this.kind = kind;
    this.plugins = plugins;
    if (options?.cause !== undefined) (this as { cause?: unknown }).cause = options.cause;
  }
}

/**
 * Holds a set of plugins, checks that they compose, and runs their setup in
 * dependency order and their teardown in reverse.
 */
export class PluginRegistry {
  private readonly plugins: Plugin[] = [];
  private started: Plugin[] = [];

  /** Adds a plugin. Duplicate names are rejected at {@link PluginRegistry.resolve}. */
  add(plugin: Plugin): this {
    this.plugins.push(plugin);
    return this;
  }

  /** The plugins in registration order. */
  get all(): readonly Plugin[] {
    return this.plugins;
  }

  /**
   * Checks the set and returns the plugins in setup order: every plugin after
   * the providers of what it requires; ties keep registration order.
   * @throws PluginError for a duplicate name, a capability provided twice, a
   *   requirement nobody provides, or a dependency cycle
   */
  resolve(): Plugin[] {
    const byName = new Map<string, Plugin>();
    for (const p of this.plugins) {
      if (byName.has(p.name)) {
        throw new PluginError("duplicate", [p.name], `plugin "${p.name}" is registered twice (versions ${byName.get(p.name)!.version} and ${p.version})`);
      }
      byName.set(p.name, p);
    }
    const provider = new Map<string, Plugin>();
    for (const p of this.plugins) {
      for (const cap of new Set([p.name, ...(p.provides ?? [])])) {
        const other = provider.get(cap);
        if (other && other !== p) {
          throw new PluginError("conflict", [other.name, p.name], `plugins "${other.name}" and "${p.name}" both provide "${cap}"`);
        }
        provider.set(cap, p);
      }
    }
    const deps = new Map<Plugin, Plugin[]>();
    for (const p of this.plugins) {
      const list: Plugin[] = [];
      for (const req of p.requires ?? []) {
        const prov = provider.get(req);
        if (!prov) throw new PluginError("missing", [p.name, req], `plugin "${p.name}" requires "${req}", which no registered plugin provides`);
        if (prov !== p) list.push(prov);
      }
      deps.set(p, list);
    }
    // Depth-first topological sort; the grey set detects cycles and lets us name them.
    const order: Plugin[] = [];
    const state = new Map<Plugin, "grey" | "black">();
    const stack: Plugin[] = [];
    const visit = (p: Plugin): void => {
      const s = state.get(p);
      if (s === "black") return;
      if (s === "grey") {
        const cycle = [...stack.slice(stack.indexOf(p)), p].map((x) => x.name);
        throw new PluginError("cycle", cycle, `plugin dependency cycle: ${cycle.join(" -> ")}`);
      }
      state.set(p, "grey");
      stack.push(p);
      for (const d of deps.get(p)!) visit(d);
      stack.pop();
      state.set(p, "black");
      order.push(p);
    };
    for (const p of this.plugins) visit(p);
    return order;
  }

  /**
   * Sets every plugin up in dependency order. If one fails, the ones already
   * set up are torn down (in reverse) and the failure is rethrown wrapped in a
   * {@link PluginError} naming the plugin.
   */
  async setup(machine: Machine): Promise<void> {
    const order = this.resolve();
    this.started = [];
    for (const p of order) {
      try {
        await p.setup(machine);
      } catch (cause) {
        await this.teardown(machine).catch(() => undefined);
        if (cause instanceof PluginError) throw cause;
        const msg = cause instanceof Error ? cause.message : String(cause);
        throw new PluginError("setup", [p.name], `plugin "${p.name}" failed to set up: ${msg}`, { cause });
      }
      this.started.push(p);
    }
  }

  /**
   * Tears down the plugins that were set up, in reverse order. Every teardown
   * runs even if an earlier one fails; the first failure is rethrown after.
   */
  async teardown(machine: Machine): Promise<void> {
    let first: PluginError | undefined;
    const started = this.started;
    this.started = [];
    for (const p of started.reverse()) {
      try {
        await p.teardown?.(machine);
      } catch (cause) {
        const msg = cause instanceof Error ? cause.message : String(cause);
        first ??= new PluginError("teardown", [p.name], `plugin "${p.name}" failed to tear down: ${msg}`, { cause });
      }
    }
    if (first) throw first;
  }
}
