import type { Machine } from "./machine.js";

/**
 * A unit of machine composition: a CPU model, a platform, a device. The
 * registry orders plugins by what they `requires` and `provides` and gives each
 * one the {@link Machine} to attach to.
 *
 * A plugin implicitly provides its own `name`, so `requires: ["pc"]` can name
 * a plugin directly or a capability such as `"pci-bus"`.
 */
export interface Plugin {
  /** Unique plugin name, e.g. `"virtio-blk"`. */
  readonly name: string;
  /** The plugin's version (semver), reported in errors and machine info. */
  readonly version: string;
  /** Capabilities (or plugin names) that must be set up before this one. */
  readonly requires?: readonly string[];
  /** Capabilities this plugin offers to others. At most one plugin may provide each. */
  readonly provides?: readonly string[];
  /** Attaches the plugin to the machine. May be async (e.g. to open files). */
  setup(machine: Machine): void | Promise<void>;
  /** Releases what `setup` acquired. Called in reverse setup order. */
  teardown?(machine: Machine): void | Promise<void>;
}
