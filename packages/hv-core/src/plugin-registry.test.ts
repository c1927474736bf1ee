import { describe, expect, it } from "vitest";
import { Machine } from "./machine.js";
import type { Plugin } from "./plugin.js";
import { PluginError, PluginRegistry } from "./plugin-registry.js";

function plugin(name: string, opts: Partial<Plugin> = {}, log: string[] = []): Plugin {
  return {
    name,
    version: "1.0.0",
    setup: () => void log.push(`setup ${name}`),
    teardown: () => void log.push(`teardown ${name}`),
    ...opts,
  };
}

function errorOf(fn: () => unknown): PluginError {
  try {
    fn();
  } catch (e) {
    if (e instanceof PluginError) return e;
    throw e;
  }
  throw new Error("expected a PluginError");
}

describe("PluginRegistry", () => {
  it("orders setup by requirements and tears down in reverse", async () => {
    const log: string[] = [];
    const reg = new PluginRegistry()
      .add(plugin("blk", { requires: ["pci-bus", "memory"] }, log))
      .add(plugin("pc", { requires: ["memory"], provides: ["pci-bus"] }, log))
      .add(plugin("ram", { provides: ["memory"] }, log));
    expect(reg.resolve().map((p) => p.name)).toEqual(["ram", "pc", "blk"]);
    const m = new Machine();
    await reg.setup(m);
    await reg.teardown(m);
    expect(log).toEqual(["setup ram", "setup pc", "setup blk", "teardown blk", "teardown pc", "teardown ram"]);
  });

  it("keeps registration order between independent plugins", () => {
    const reg = new PluginRegistry().add(plugin("c")).add(plugin("a")).add(plugin("b"));
    expect(reg.resolve().map((p) => p.name)).toEqual(["c", "a", "b"]);
  });

  it("names the plugin and the capability that is missing", () => {
    const e = errorOf(() => new PluginRegistry().add(plugin("blk", { requires: ["pci-bus"] })).resolve());
    expect(e.kind).toBe("missing");
    expect(e.code).toBe("PLUGIN_MISSING");
    expect(e.plugins).toEqual(["blk", "pci-bus"]);
    expect(e.message).toContain('"blk" requires "pci-bus"');
  });

  it("rejects duplicate plugin names", () => {
    const e = errorOf(() => new PluginRegistry().add(plugin("pc")).add(plugin("pc")).resolve());
    expect(e.kind).toBe("duplicate");
    expect(e.plugins).toEqual(["pc"]);
  });

  it("rejects two providers of one capability, naming both", () => {
    const e = errorOf(() =>
      new PluginRegistry().add(plugin("pc", { provides: ["pci-bus"] })).add(plugin("q35", { provides: ["pci-bus"] })).resolve(),
    );
    expect(e.kind).toBe("conflict");
    expect(e.plugins).toEqual(["pc", "q35"]);
    expect(e.message).toContain('"pci-bus"');
  });

  it("rejects a plugin whose capability equals another plugin's name", () => {
    const e = errorOf(() => new PluginRegistry().add(plugin("pc")).add(plugin("other", { provides: ["pc"] })).resolve());
    expect(e.kind).toBe("conflict");
  });

  it("reports a dependency cycle with its path", () => {
    const e = errorOf(() =>
      new PluginRegistry()
        .add(plugin("a", { requires: ["b"] }))
        .add(plugin("b", { requires: ["cap-c"] }))
        .add(plugin("c", { provides: ["cap-c"], requires: ["a"] }))
        .resolve(),
    );
    expect(e.kind).toBe("cycle");
    expect(e.plugins).toEqual(["a", "b", "c", "a"]);
    expect(e.message).toContain("a -> b -> c -> a");
  });

  it("allows a plugin to require what it provides itself", () => {
    expect(new PluginRegistry().add(plugin("a", { provides: ["x"], requires: ["x"] })).resolve()).toHaveLength(1);
  });

  it("awaits async setup and undoes earlier plugins when one fails", async () => {
    const log: string[] = [];
    const reg = new PluginRegistry()
      .add(
        plugin("slow", {
          setup: async () => {
            await new Promise((r) => setTimeout(r, 5));
            log.push("setup slow");
          },
        }, log),
      )
      .add(plugin("bad", { requires: ["slow"], setup: () => Promise.reject(new Error("no such file")) }, log));
    const m = new Machine();
    const err = await reg.setup(m).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PluginError);
    expect((err as PluginError).kind).toBe("setup");
    expect((err as PluginError).message).toBe('plugin "bad" failed to set up: no such file');
    expect(log).toEqual(["setup slow", "teardown slow"]);
  });

  it("runs every teardown and reports the first failure", async () => {
    const log: string[] = [];
    const reg = new PluginRegistry()
      .add(plugin("a", {}, log))
      .add(plugin("b", { teardown: () => { throw new Error("boom"); } }, log))
      .add(plugin("c", {}, log));
    const m = new Machine();
    await reg.setup(m);
    const err = await reg.teardown(m).catch((e: unknown) => e);
    expect((err as PluginError).kind).toBe("teardown");
    expect((err as PluginError).plugins).toEqual(["b"]);
    expect(log).toContain("teardown a");
    expect(log).toContain("teardown c");
  });
});
