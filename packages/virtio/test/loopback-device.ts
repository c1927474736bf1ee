// A tiny test device: it reverses the bytes of each buffer's readable part
// into its writable part. Optionally holds buffers until released, to test
// in-flight bookkeeping and asynchronous completion.
import { FlatGuestMemory } from "../src/flat-guest-memory.js";
import { VirtioDevice, type VirtioRingOptions } from "../src/virtio-device.js";
import type { DescriptorChain } from "../src/descriptor-chain.js";
import type { Virtqueue } from "../src/virtqueue.js";
import { Machine, GUEST_MEMORY } from "@typevisor/hv-core";
import { attachVirtioMmio, type VirtioMmioTransport } from "../src/transport-mmio.js";
import { GuestAllocator, MmioGuestDriver } from "./guest-driver.js";

export class LoopbackDevice extends VirtioDevice {
  hold = false;
  held: DescriptorChain[] = [];
  problems: number[] = [];
  private readonly scratch = new Uint8Array(4096);
  private chain = this.newChain();
  activated = 0;
  resets = 0;

  constructor(queueSize = 16, ring: VirtioRingOptions = {}, chainCapacity?: number) {
    super({ deviceId: 0x7f, name: "loopback", queueSizes: [queueSize], features: [0], configSize: 8, ring, chainCapacity });
    this.configData.setUint32(0, 0x12345678, true);
  }

  protected override onQueueNotify(q: Virtqueue): void {
    for (;;) {
      if (this.hold) {
        const c = this.newChain();
        if (!q.pop(c)) break;
        this.held.push(c);
        continue;
      }
      if (!q.pop(this.chain)) break;
      this.complete(q, this.chain);
    }
    this.signalUsed(q);
  }

  complete(q: Virtqueue, c: DescriptorChain): void {
    if (c.problem !== 0) {
      this.problems.push(c.problem);
      q.push(c, 0);
      return;
    }
    const n = Math.min(c.readableBytes, this.scratch.length);
    const data = this.scratch.subarray(0, n);
    c.readFrom(this.memory, 0, data);
    data.reverse();
    const w = c.writeTo(this.memory, 0, data);
    q.push(c, w);
  }

  release(): void {
    const q = this.queues[0];
    this.guard(0, () => {
      for (const c of this.held) this.complete(q, c);
      this.held = [];
      this.signalUsed(q);
    });
  }

  bumpConfig(value: number): void {
    this.updateConfig((v) => v.setUint32(4, value, true));
  }

  protected override onActivate(): void {
    this.activated++;
  }
  protected override onReset(): void {
    this.resets++;
    this.held = [];
  }
}

export const MMIO_BASE = 0xd000_0000;
export const IRQ = 5;

/** A machine with flat RAM and one device on virtio-mmio, plus a guest driver for it. */
export function mmioRig<D extends VirtioDevice>(device: D, ramSize = 1 << 20): { machine: Machine; mem: FlatGuestMemory; device: D; transport: VirtioMmioTransport; driver: MmioGuestDriver; irqLevel: () => boolean } {
  const machine = new Machine({ memory: ramSize });
  const mem = new FlatGuestMemory(ramSize);
  machine.services.provide(GUEST_MEMORY, mem);
  const transport = attachVirtioMmio(machine, device, { base: MMIO_BASE, irq: IRQ });
  const driver = new MmioGuestDriver(machine, MMIO_BASE, mem, new GuestAllocator(0x1000, ramSize));
  return { machine, mem, device, transport, driver, irqLevel: () => machine.irqs.level(IRQ) };
}
