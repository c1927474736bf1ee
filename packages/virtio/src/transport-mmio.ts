import type { AccessSize, IrqLine, Machine, MmioHandler, Snapshottable, StateValue } from "@typevisor/hv-core";
import { StateError } from "@typevisor/hv-core";
import { VirtioConfigError } from "./errors.js";
import type { VirtioDevice, VirtioDeviceState, VirtioHost, VirtioInterrupts } from "./virtio-device.js";

/** "virt" in little-endian: the MagicValue register (§4.2.2). */
export const VIRTIO_MMIO_MAGIC = 0x74726976;
/** Vendor ID the typevisor virtio-mmio devices report ("TVSR" read as bytes). */
export const VIRTIO_MMIO_VENDOR_ID = 0x52535654;
/** Default size of a virtio-mmio register window: registers up to 0x100, then 256 bytes of configuration. */
export const VIRTIO_MMIO_DEFAULT_SIZE = 0x200;

/** Register offsets of virtio-mmio version 2 (§4.2.2). */
export const VirtioMmioReg = {
  /** R: 0x74726976. */
  MAGIC_VALUE: 0x000,
  /** R: 2 (virtio 1.x). */
  VERSION: 0x004,
  /** R: device ID. */
  DEVICE_ID: 0x008,
  /** R: vendor ID. */
  VENDOR_ID: 0x00c,
  /** R: 32 feature bits selected by DEVICE_FEATURES_SEL. */
  DEVICE_FEATURES: 0x010,
  /** W: which 32-bit word DEVICE_FEATURES shows. */
  DEVICE_FEATURES_SEL: 0x014,
  /** W: 32 accepted feature bits selected by DRIVER_FEATURES_SEL. */
  DRIVER_FEATURES: 0x020,
  /** W: which 32-bit word DRIVER_FEATURES writes. */
  DRIVER_FEATURES_SEL: 0x024,
  /** W: selects the queue the QUEUE_* registers refer to. */
  QUEUE_SEL: 0x030,
  /** R: maximum size of the selected queue (0 = no such queue). */
  QUEUE_NUM_MAX: 0x034,
  /** W: size of the selected queue. */
  QUEUE_NUM: 0x038,
  /** RW: 1 enables the selected queue; 0 disables it. */
  QUEUE_READY: 0x044,
  /** W: notifies the device of new buffers in a queue (value = queue index). */
  QUEUE_NOTIFY: 0x050,
  /** R: bit 0 used buffer, bit 1 configuration change. */
  INTERRUPT_STATUS: 0x060,
  /** W: clears the written INTERRUPT_STATUS bits. */
  INTERRUPT_ACK: 0x064,
  /** RW: device status; 0 resets. */
  STATUS: 0x070,
  /** W: descriptor area, low 32 bits. */
  QUEUE_DESC_LOW: 0x080,
  /** W: descriptor area, high 32 bits. */
  QUEUE_DESC_HIGH: 0x084,
  /** W: driver area, low 32 bits. */
  QUEUE_DRIVER_LOW: 0x090,
  /** W: driver area, high 32 bits. */
  QUEUE_DRIVER_HIGH: 0x094,
  /** W: device area, low 32 bits. */
  QUEUE_DEVICE_LOW: 0x0a0,
  /** W: device area, high 32 bits. */
  QUEUE_DEVICE_HIGH: 0x0a4,
  /** W: selects a shared memory region. */
  SHM_SEL: 0x0ac,
  /** R: shared memory region length, low 32 bits (-1: none). */
  SHM_LEN_LOW: 0x0b0,
  /** R: shared memory region length, high 32 bits. */
  SHM_LEN_HIGH: 0x0b4,
  /** R: shared memory region base, low 32 bits. */
  SHM_BASE_LOW: 0x0b8,
  /** R: shared memory region base, high 32 bits. */
  SHM_BASE_HIGH: 0x0bc,
  /** RW: queue reset (VIRTIO_F_RING_RESET, not offered). */
  QUEUE_RESET: 0x0c0,
  /** R: configuration generation. */
  CONFIG_GENERATION: 0x0fc,
  /** Start of the device-specific configuration space. */
  CONFIG: 0x100,
} as const;

/** Used-buffer bit of InterruptStatus. */
export const VIRTIO_MMIO_INT_VRING = 1;
/** Configuration-change bit of InterruptStatus. */
export const VIRTIO_MMIO_INT_CONFIG = 2;

/** Options of {@link VirtioMmioTransport}. */
export interface VirtioMmioOptions {
  /** Guest-physical base of the register window. */
  base: number;
  /** Size of the register window (default 0x200); it must hold the device's configuration space. */
  size?: number;
  /** The interrupt line (level-triggered: high while InterruptStatus is non-zero). */
  irq: IrqLine;
  /** Guest memory and I/O tracking. */
  host: VirtioHost;
}

/** The saved state of a {@link VirtioMmioTransport}. */
export interface VirtioMmioState {
  [key: string]: StateValue;
  /** DeviceFeaturesSel. */
  deviceFeaturesSel: number;
  /** DriverFeaturesSel. */
  driverFeaturesSel: number;
  /** QueueSel. */
  queueSel: number;
  /** SHMSel. */
  shmSel: number;
  /** InterruptStatus. */
  interruptStatus: number;
  /** The device. */
  device: VirtioDeviceState;
}

/**
 * Linux's kernel command-line parameter that declares a virtio-mmio device
 * (drivers/virtio/virtio_mmio.c, "virtio_mmio.device=<size>@<baseaddr>:<irq>"),
 * for machines without a device tree or ACPI description of it.
 */
export function virtioMmioKernelParam(base: number, size: number, irq: number): string {
  return `virtio_mmio.device=0x${size.toString(16)}@0x${base.toString(16)}:${irq}`;
}

/**
 * The virtio-mmio transport, version 2 (§4.2): a 0x200-byte register window
 * on the MMIO bus and one level-triggered interrupt line.
 *
 * Registers are 32 bits wide; other access sizes to them read 0 and are
 * ignored on write (§4.2.2.2). The configuration space at 0x100 takes 8-, 16-
 * and 32-bit accesses.
 */
export class VirtioMmioTransport implements MmioHandler, VirtioInterrupts, Snapshottable<VirtioMmioState> {
  /** The device behind the registers. */
  readonly device: VirtioDevice;
  /** Guest-physical base of the window. */
  readonly base: number;
  /** Size of the window. */
  readonly size: number;
  /** Snapshot id: `virtio-mmio@<base>`. */
  readonly stateId: string;
  /** Saved-state format version. */
  readonly stateVersion = 1;
  /** InterruptStatus register. */
  interruptStatus = 0;
  private readonly irq: IrqLine;
  private deviceFeaturesSel = 0;
  private driverFeaturesSel = 0;
  private queueSel = 0;
  private shmSel = 0;

  /**
   * @param device - the device to expose
   * @param options - placement, interrupt line and host
   */
  constructor(device: VirtioDevice, options: VirtioMmioOptions) {
    this.device = device;
    this.base = options.base;
    this.size = options.size ?? VIRTIO_MMIO_DEFAULT_SIZE;
    if (this.size < VirtioMmioReg.CONFIG + device.config.length) {
      throw new VirtioConfigError("VIRTIO_MMIO_SIZE", `virtio-mmio window of 0x${this.size.toString(16)} bytes is too small for ${device.name} (${device.config.length} bytes of configuration at 0x100)`);
    }
    this.irq = options.irq;
    this.stateId = `virtio-mmio@0x${this.base.toString(16)}`;
    device.attach(options.host, this);
  }

  /** The Linux command-line parameter for this device ({@link virtioMmioKernelParam}). */
  get kernelParam(): string {
    return virtioMmioKernelParam(this.base, this.size, this.irq.gsi);
  }

  /** Sets InterruptStatus bit 0 and raises the line. */
  signalQueue(): void {
    this.interruptStatus |= VIRTIO_MMIO_INT_VRING;
    this.irq.raise();
  }

  /** Sets InterruptStatus bit 1 and raises the line. */
  signalConfig(): void {
    this.interruptStatus |= VIRTIO_MMIO_INT_CONFIG;
    this.irq.raise();
  }

  /** Device and transport reset (status 0 or machine reset). */
  reset(): void {
    this.device.reset();
    this.resetRegisters();
  }

  private resetRegisters(): void {
    this.interruptStatus = 0;
    this.irq.lower();
    this.deviceFeaturesSel = 0;
    this.driverFeaturesSel = 0;
    this.queueSel = 0;
    this.shmSel = 0;
  }

  /** Reads a register or the configuration space. */
  read(offset: number, size: AccessSize): number {
    if (offset >= VirtioMmioReg.CONFIG) return this.device.readConfig(offset - VirtioMmioReg.CONFIG, size);
    if (size !== 4 || (offset & 3) !== 0) return 0;
    const d = this.device;
    const q = d.queues[this.queueSel];
    switch (offset) {
      case VirtioMmioReg.MAGIC_VALUE:
        return VIRTIO_MMIO_MAGIC;
      case VirtioMmioReg.VERSION:
        return 2;
      case VirtioMmioReg.DEVICE_ID:
        return d.deviceId;
      case VirtioMmioReg.VENDOR_ID:
        return VIRTIO_MMIO_VENDOR_ID;
      case VirtioMmioReg.DEVICE_FEATURES:
        return d.deviceFeatures(this.deviceFeaturesSel);
      case VirtioMmioReg.QUEUE_NUM_MAX:
        return q ? q.maxSize : 0;
      case VirtioMmioReg.QUEUE_NUM:
        return q ? q.size : 0;
      case VirtioMmioReg.QUEUE_READY:
        return q?.ready ? 1 : 0;
      case VirtioMmioReg.INTERRUPT_STATUS:
        return this.interruptStatus;
      case VirtioMmioReg.STATUS:
        return d.status;
      case VirtioMmioReg.QUEUE_DESC_LOW:
        return q ? q.descAddr >>> 0 : 0;
      case VirtioMmioReg.QUEUE_DESC_HIGH:
        return q ? Math.floor(q.descAddr / 0x1_0000_0000) >>> 0 : 0;
      case VirtioMmioReg.QUEUE_DRIVER_LOW:
        return q ? q.driverAddr >>> 0 : 0;
      case VirtioMmioReg.QUEUE_DRIVER_HIGH:
        return q ? Math.floor(q.driverAddr / 0x1_0000_0000) >>> 0 : 0;
      case VirtioMmioReg.QUEUE_DEVICE_LOW:
        return q ? q.deviceAddr >>> 0 : 0;
      case VirtioMmioReg.QUEUE_DEVICE_HIGH:
        return q ? Math.floor(q.deviceAddr / 0x1_0000_0000) >>> 0 : 0;
      case VirtioMmioReg.SHM_LEN_LOW:
      case VirtioMmioReg.SHM_LEN_HIGH:
      case VirtioMmioReg.SHM_BASE_LOW:
      case VirtioMmioReg.SHM_BASE_HIGH:
        return 0xffffffff; // no shared memory regions (§4.2.2: a missing region reads as -1)
      case VirtioMmioReg.CONFIG_GENERATION:
        return d.configGeneration;
      default:
        return 0;
    }
  }

  /** Writes a register or the configuration space. */
  write(offset: number, size: AccessSize, value: number): void {
    if (offset >= VirtioMmioReg.CONFIG) {
      this.device.writeConfig(offset - VirtioMmioReg.CONFIG, size, value);
      return;
    }
    if (size !== 4 || (offset & 3) !== 0) return;
    const d = this.device;
    const q = d.queues[this.queueSel];
    switch (offset) {
      case VirtioMmioReg.DEVICE_FEATURES_SEL:
        this.deviceFeaturesSel = value;
        return;
      case VirtioMmioReg.DRIVER_FEATURES:
        d.setDriverFeatures(this.driverFeaturesSel, value);
        return;
      case VirtioMmioReg.DRIVER_FEATURES_SEL:
        this.driverFeaturesSel = value;
        return;
      case VirtioMmioReg.QUEUE_SEL:
        this.queueSel = value;
        return;
      case VirtioMmioReg.QUEUE_NUM:
        if (q && !q.ready) q.size = value;
        return;
      case VirtioMmioReg.QUEUE_READY:
        if (!q) return;
        if (value & 1) d.enableQueue(this.queueSel);
        else if (q.ready) q.reset();
        return;
      case VirtioMmioReg.QUEUE_NOTIFY:
        d.notifyQueue(value & 0xffff);
        return;
      case VirtioMmioReg.INTERRUPT_ACK:
        this.interruptStatus &= ~value;
        if (this.interruptStatus === 0) this.irq.lower();
        return;
      case VirtioMmioReg.STATUS:
        if ((value & 0xff) === 0) this.reset();
        else d.writeStatus(value);
        return;
      case VirtioMmioReg.SHM_SEL:
        this.shmSel = value;
        return;
    }
    // Queue addresses: only while the queue is disabled (§4.2.3.2).
    if (!q || q.ready) return;
    switch (offset) {
      case VirtioMmioReg.QUEUE_DESC_LOW:
        q.descAddr = setLow(q.descAddr, value);
        return;
      case VirtioMmioReg.QUEUE_DESC_HIGH:
        q.descAddr = setHigh(q.descAddr, value);
        return;
      case VirtioMmioReg.QUEUE_DRIVER_LOW:
        q.driverAddr = setLow(q.driverAddr, value);
        return;
      case VirtioMmioReg.QUEUE_DRIVER_HIGH:
        q.driverAddr = setHigh(q.driverAddr, value);
        return;
      case VirtioMmioReg.QUEUE_DEVICE_LOW:
        q.deviceAddr = setLow(q.deviceAddr, value);
        return;
      case VirtioMmioReg.QUEUE_DEVICE_HIGH:
        q.deviceAddr = setHigh(q.deviceAddr, value);
        return;
    }
  }

  /** Saves the transport registers and the device. */
  saveState(): VirtioMmioState {
    return {
      deviceFeaturesSel: this.deviceFeaturesSel,
      driverFeaturesSel: this.driverFeaturesSel,
      queueSel: this.queueSel,
      shmSel: this.shmSel,
      interruptStatus: this.interruptStatus,
      device: this.device.save(),
    };
  }

  /** Restores the transport registers and the device (data from an untrusted file). */
  loadState(data: VirtioMmioState): void {
    const u32 = (v: unknown, what: string): number => {
      if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new StateError("STATE_MALFORMED", `${this.stateId}: saved ${what} is malformed`);
      return v;
    };
    if (typeof data !== "object" || data === null) throw new StateError("STATE_MALFORMED", `${this.stateId}: saved state is not an object`);
    const sels = [u32(data.deviceFeaturesSel, "DeviceFeaturesSel"), u32(data.driverFeaturesSel, "DriverFeaturesSel"), u32(data.queueSel, "QueueSel"), u32(data.shmSel, "SHMSel")];
    const isr = u32(data.interruptStatus, "InterruptStatus") & 3;
    this.device.load(data.device);
    [this.deviceFeaturesSel, this.driverFeaturesSel, this.queueSel, this.shmSel] = sels;
    this.interruptStatus = isr;
    this.irq.set(isr !== 0);
  }
}

function setLow(addr: number, lo: number): number {
  return Math.floor(addr / 0x1_0000_0000) * 0x1_0000_0000 + (lo >>> 0);
}

function setHigh(addr: number, hi: number): number {
  return (hi >>> 0) * 0x1_0000_0000 + (addr % 0x1_0000_0000);
}

/** Placement of a virtio-mmio device in a machine. */
export interface VirtioMmioPlacement {
  /** Guest-physical base of the register window. */
  base: number;
  /** GSI of its interrupt line. */
  irq: number;
  /** Window size (default 0x200). */
  size?: number;
}

/**
 * Puts `device` on `machine` behind a virtio-mmio transport: claims the MMIO
 * window, connects the interrupt line, registers the saved state and resets
 * the device with the machine. DMA uses the machine's guest memory service.
 * @returns the transport (its {@link VirtioMmioTransport.kernelParam} tells Linux where it is)
 */
export function attachVirtioMmio(machine: Machine, device: VirtioDevice, placement: VirtioMmioPlacement): VirtioMmioTransport {
  const memory = machine.memory;
  const host: VirtioHost = { memory, trackIo: (work) => machine.trackIo(work) };
  const transport = new VirtioMmioTransport(device, { base: placement.base, size: placement.size, irq: machine.irqs.line(placement.irq), host });
  machine.mmio.register(device.name, placement.base, transport.size, transport);
  machine.states.register(transport);
  machine.onReset(() => transport.reset());
  return transport;
}
