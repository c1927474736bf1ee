import { VirtioBlkDevice, type VirtioBlkOptions } from "./device-blk.js";
import { VirtioConsoleDevice, type VirtioConsoleOptions } from "./device-console.js";
import { VirtioNetDevice, type VirtioNetOptions } from "./device-net.js";
import { VirtioRngDevice, type VirtioRngOptions } from "./device-rng.js";
import { recordingBackend, type NetBackend } from "./net-backend.js";
import type { PcapWriter } from "./net-pcap.js";
import { VirtualSwitch } from "./net-switch.js";
import { virtioPlugin, type VirtioPlacementOptions, type VirtioPlugin } from "./plugins.js";

/**
 * A virtio-blk disk as a plugin. The plugin owns the disk: it is closed when
 * the machine stops (pass `keepOpen: true` to keep it).
 */
export function virtioBlk(options: VirtioBlkOptions & VirtioPlacementOptions & { keepOpen?: boolean }): VirtioPlugin<VirtioBlkDevice> {
  const device = new VirtioBlkDevice(options);
  return virtioPlugin("virtio-blk", device, options, options.keepOpen ? undefined : () => options.disk.close());
}

/** A virtio-console (`hvc0`) as a plugin; its backend is detached when the machine stops. */
export function virtioConsole(options: VirtioConsoleOptions & VirtioPlacementOptions): VirtioPlugin<VirtioConsoleDevice> {
  const device = new VirtioConsoleDevice(options);
  return virtioPlugin("virtio-console", device, options, () => options.backend.detach?.());
}

/** A virtio-rng entropy device as a plugin. */
export function virtioRng(options: VirtioRngOptions & VirtioPlacementOptions = {}): VirtioPlugin<VirtioRngDevice> {
  return virtioPlugin("virtio-rng", new VirtioRngDevice(options), options);
}

/** Options of {@link virtioNet}: the device options plus where to connect it. */
export interface VirtioNetPluginOptions extends Omit<VirtioNetOptions, "backend"> {
  /** The switch to join: an instance, or the name of a process-wide one ({@link VirtualSwitch.named}). */
  switch?: VirtualSwitch | string;
  /** Any other network. */
  backend?: NetBackend;
  /** Also record this NIC's traffic (both directions); closed when the machine stops. */
  pcap?: PcapWriter;
}

/**
 * A virtio-net NIC as a plugin, joined to a switch (and/or recorded to a
 * pcap file). It leaves the network when the machine stops.
 */
export function virtioNet(options: VirtioNetPluginOptions & VirtioPlacementOptions): VirtioPlugin<VirtioNetDevice> {
  let backend: NetBackend | undefined = options.backend ?? (typeof options.switch === "string" ? VirtualSwitch.named(options.switch) : options.switch);
  const pcap = options.pcap;
  if (pcap) backend = backend ? recordingBackend(backend, pcap) : pcap;
  const device = new VirtioNetDevice({ ...options, backend });
  return virtioPlugin("virtio-net", device, options, () => {
    device.disconnect();
    pcap?.close();
  });
}
