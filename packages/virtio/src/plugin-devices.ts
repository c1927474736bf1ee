import { VirtioBlkDevice, type VirtioBlkOptions } from "./device-blk.js";
import { VirtioConsoleDevice, type VirtioConsoleOptions } from "./device-console.js";
import { VirtioRngDevice, type VirtioRngOptions } from "./device-rng.js";
import { virtioPlugin, type VirtioPlacementOptions, type VirtioPlugin } from "./plugins.js";

/**
 * A virtio-blk disk as a plugin. The plugin owns the disk: it is closed when
 * the machine stops (pass `keepOpen: true` to keep it).
 */
export function virtioBlk(options: VirtioBlkOptions & VirtioPlacementOptions & { keepOpen?: boolean }): VirtioPlugin<VirtioBlkDevice> {
  const device = new VirtioBlkDevice(options);
  return virtioPlugin("virtio-blk", device, options, options.keepOpen ? undefined : () => options.disk.close());
}

/** A virtio-console (`hvc0`) as a plugin; its backend is closed when the machine stops. */
export function virtioConsole(options: VirtioConsoleOptions & VirtioPlacementOptions): VirtioPlugin<VirtioConsoleDevice> {
  const device = new VirtioConsoleDevice(options);
  return virtioPlugin("virtio-console", device, options, () => options.backend.close?.());
}

/** A virtio-rng entropy device as a plugin. */
export function virtioRng(options: VirtioRngOptions & VirtioPlacementOptions = {}): VirtioPlugin<VirtioRngDevice> {
  return virtioPlugin("virtio-rng", new VirtioRngDevice(options), options);
}
