import type { AccessSize, MmioHandler, PciConfigHost, PciFunction, PciSlot, Snapshottable, StateValue } from "@typevisor/hv-core";
import { PCI_CAP_ID_VENDOR, PciConfigSpace, StateError } from "@typevisor/hv-core";
import { VirtioDeviceId } from "./constants.js";
import { VirtioConfigError } from "./errors.js";
import type { VirtioDevice, VirtioDeviceState, VirtioHost, VirtioInterrupts } from "./virtio-device.js";

// ---- virtio-pci (§4.1) ------------------------------------------------------

/** PCI vendor ID of virtio devices (§4.1.2). */
export const VIRTIO_PCI_VENDOR_ID = 0x1af4;
/** Modern device IDs are 0x1040 + the virtio device ID (§4.1.2). */
export const VIRTIO_PCI_DEVICE_ID_BASE = 0x1040;

/** `cfg_type` values of the virtio vendor capabilities (§4.1.4). */
export const VirtioPciCap = {
  /** Common configuration. */
  COMMON_CFG: 1,
  /** Notifications. */
  NOTIFY_CFG: 2,
  /** ISR status. */
  ISR_CFG: 3,
  /** Device-specific configuration. */
  DEVICE_CFG: 4,
  /** PCI configuration access window. */
  PCI_CFG: 5,
} as const;

/** Offsets in the common configuration structure (§4.1.4.3). */
export const VirtioPciCommon = {
  /** le32 RW. */
  DEVICE_FEATURE_SELECT: 0x00,
  /** le32 RO. */
  DEVICE_FEATURE: 0x04,
  /** le32 RW. */
  DRIVER_FEATURE_SELECT: 0x08,
  /** le32 RW. */
  DRIVER_FEATURE: 0x0c,
  /** le16 RW. */
  CONFIG_MSIX_VECTOR: 0x10,
  /** le16 RO. */
  NUM_QUEUES: 0x12,
  /** u8 RW. */
  DEVICE_STATUS: 0x14,
  /** u8 RO. */
  CONFIG_GENERATION: 0x15,
  /** le16 RW. */
  QUEUE_SELECT: 0x16,
  /** le16 RW. */
  QUEUE_SIZE: 0x18,
  /** le16 RW. */
  QUEUE_MSIX_VECTOR: 0x1a,
  /** le16 RW. */
  QUEUE_ENABLE: 0x1c,
  /** le16 RO. */
  QUEUE_NOTIFY_OFF: 0x1e,
  /** le64 RW. */
  QUEUE_DESC: 0x20,
  /** le64 RW. */
  QUEUE_DRIVER: 0x28,
  /** le64 RW. */
  QUEUE_DEVICE: 0x30,
  /** le16 RO (VIRTIO_F_NOTIF_CONFIG_DATA, not offered: 0). */
  QUEUE_NOTIFY_DATA: 0x38,
  /** le16 RW (VIRTIO_F_RING_RESET, not offered: 0). */
  QUEUE_RESET: 0x3a,
} as const;

/** "No vector" for config_msix_vector and queue_msix_vector (§4.1.5.1.2). */
export const VIRTIO_MSI_NO_VECTOR = 0xffff;

/** BAR holding the MSI-X table and PBA. */
export const VIRTIO_PCI_MSIX_BAR = 1;
/** BAR holding the virtio structures (64-bit, prefetchable). */
export const VIRTIO_PCI_REGS_BAR = 4;

/** Layout of the virtio structures in {@link VIRTIO_PCI_REGS_BAR}: each on its own page, as QEMU does. */
const COMMON_OFF = 0x0000;
const COMMON_LEN = 0x40;
const ISR_OFF = 0x1000;
const DEVICE_OFF = 0x2000;
const NOTIFY_OFF = 0x3000;
/** Each queue gets its own 4-byte doorbell: notify address = NOTIFY_OFF + queue_notify_off x 4. */
const NOTIFY_MULTIPLIER = 4;

const CAP_MSIX_TABLE = 0x0000;

/** Class codes by device type (QEMU's choices, which Linux does not depend on). */
function classCodeFor(deviceId: number): number {
  switch (deviceId) {
    case VirtioDeviceId.NET:
      return 0x020000; // network controller, Ethernet
    case VirtioDeviceId.BLOCK:
      return 0x010000; // mass storage, SCSI
    case VirtioDeviceId.CONSOLE:
      return 0x078000; // communication controller, other
    default:
      return 0x00ff00; // unclassified
  }
}

function pow2AtLeast(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/**
 * What a virtio-pci function needs from the machine: guest memory for DMA
 * (and I/O tracking) as every virtio transport does, plus the port and MMIO
 * buses its BARs map onto and MSI delivery, as hv-core's
 * {@link PciConfigSpace} needs them. A `Machine` has all of these.
 */
export interface VirtioPciHost extends VirtioHost, PciConfigHost {}

/** Options of {@link VirtioPciTransport}. */
export interface VirtioPciOptions {
  /** Guest memory, I/O tracking, buses and interrupt lines (usually built from the `Machine`). */
  host: VirtioPciHost;
  /** Name of the function (default the device name). */
  name?: string;
}

/** The saved state of a {@link VirtioPciTransport}. */
export interface VirtioPciState {
  [key: string]: StateValue;
  /** The PCI configuration space (with the MSI-X table). */
  pci: StateValue;
  /** device_feature_select. */
  deviceFeatureSelect: number;
  /** driver_feature_select. */
  driverFeatureSelect: number;
  /** queue_select. */
  queueSelect: number;
  /** config_msix_vector. */
  configVector: number;
  /** ISR status. */
  isr: number;
  /** The device. */
  device: VirtioDeviceState;
}

/**
 * The virtio-pci transport for modern devices (§4.1): a PCI function whose
 * vendor capabilities point at the common configuration, notification, ISR
 * and device configuration structures in a 64-bit memory BAR; MSI-X (one
 * vector per queue plus one for configuration changes) with INTx as the
 * fallback; and the PCI configuration access capability.
 *
 * The configuration space is hv-core's {@link PciConfigSpace} (BAR sizing
 * and mapping, capability list, MSI-X table and PBA, INTx); this class adds
 * the virtio structures behind it. It is a {@link PciFunction} itself: plug
 * it into the platform's PCI bus (`machine.services.get(PCI_BUS)`), which
 * calls {@link VirtioPciTransport.reset} on machine reset.
 */
export class VirtioPciTransport implements PciFunction, VirtioInterrupts, Snapshottable<VirtioPciState> {
  /** The device behind the function. */
  readonly device: VirtioDevice;
  /** Function name. */
  readonly name: string;
  /** Snapshot id (`virtio-pci:<name>`). */
  readonly stateId: string;
  /** Saved-state format version. */
  readonly stateVersion = 1;
  /** The configuration space (identity, BARs, capabilities, MSI-X, INTx). */
  readonly pci: PciConfigSpace;
  /** Number of MSI-X vectors (queues + 1). */
  readonly msixVectors: number;
  /** ISR status (§4.1.4.5): bit 0 queue interrupt, bit 1 configuration change. */
  isr = 0;
  private deviceFeatureSelect = 0;
  private driverFeatureSelect = 0;
  private queueSelect = 0;
  private configVector = VIRTIO_MSI_NO_VECTOR;
  private statusBeforeReset = 0;
  private readonly pciCfgCap: number;
  private readonly regsSize: number;
  private readonly regs: MmioHandler;

  /**
   * @param device - the device to expose
   * @param options - host (memory, buses, interrupts) and name
   */
  constructor(device: VirtioDevice, options: VirtioPciOptions) {
    this.device = device;
    this.name = options.name ?? device.name;
    this.stateId = `virtio-pci:${this.name}`;
    const nq = device.queues.length;
    if (nq > 1024) throw new VirtioConfigError("VIRTIO_PCI", `${this.name}: ${nq} queues is more than virtio-pci supports here (1024)`);
    this.msixVectors = nq + 1;
    const deviceCfgLen = device.config.length;
    if (deviceCfgLen > 0x1000) throw new VirtioConfigError("VIRTIO_PCI", `${this.name}: configuration space of ${deviceCfgLen} bytes exceeds one page`);
    this.regsSize = pow2AtLeast(NOTIFY_OFF + Math.max(1, nq) * NOTIFY_MULTIPLIER);
    this.regs = {
      read: (offset, size) => this.regsRead(offset, size),
      write: (offset, size, value) => this.regsWrite(offset, size, value),
    };
    const tableLen = this.msixVectors * 16;
    const pbaOffset = (tableLen + 0x7ff) & ~0x7ff; // PBA on the next 2 KiB boundary
    const msixBarSize = Math.max(0x1000, pow2AtLeast(pbaOffset + Math.ceil(this.msixVectors / 64) * 8));
    this.pci = new PciConfigSpace(options.host, {
      name: this.name,
      vendorId: VIRTIO_PCI_VENDOR_ID,
      deviceId: VIRTIO_PCI_DEVICE_ID_BASE + device.deviceId,
      classCode: classCodeFor(device.deviceId),
      revision: 1, // modern-only device (§4.1.2.1)
      subsystemVendorId: VIRTIO_PCI_VENDOR_ID,
      subsystemId: 0x1100,
      interruptPin: 1,
      bars: [
        { index: VIRTIO_PCI_MSIX_BAR, kind: "mem32", size: msixBarSize },
        { index: VIRTIO_PCI_REGS_BAR, kind: "mem64", size: this.regsSize, prefetchable: true, handler: this.regs },
      ],
    });
    const cs = this.pci;
    // Vendor capabilities (§4.1.4): common, ISR, device (if any), notify, PCI access.
    this.addVirtioCap(VirtioPciCap.COMMON_CFG, COMMON_OFF, COMMON_LEN);
    this.addVirtioCap(VirtioPciCap.ISR_CFG, ISR_OFF, 1);
    if (deviceCfgLen > 0) this.addVirtioCap(VirtioPciCap.DEVICE_CFG, DEVICE_OFF, deviceCfgLen);
    const notifyCap = this.addVirtioCap(VirtioPciCap.NOTIFY_CFG, NOTIFY_OFF, Math.max(1, nq) * NOTIFY_MULTIPLIER, 4);
    cs.define(notifyCap + 16, 4, NOTIFY_MULTIPLIER);
    // VIRTIO_PCI_CAP_PCI_CFG: bar, offset, length writable; pci_cfg_data is the window (§4.1.4.9).
    this.pciCfgCap = this.addVirtioCap(VirtioPciCap.PCI_CFG, 0, 0, 4);
    cs.define(this.pciCfgCap + 4, 1, 0, 0xff);
    cs.define(this.pciCfgCap + 8, 4, 0, 0xffffffff);
    cs.define(this.pciCfgCap + 12, 4, 0, 0xffffffff);
    cs.define(this.pciCfgCap + 16, 4, 0, 0xffffffff);
    cs.addMsix({ vectors: this.msixVectors, tableBar: VIRTIO_PCI_MSIX_BAR, tableOffset: CAP_MSIX_TABLE, pbaBar: VIRTIO_PCI_MSIX_BAR, pbaOffset });
    cs.onConfigRead = (offset, size, value) => this.configReadHook(offset, size, value);
    cs.onConfigWrite = (offset, size, value) => this.configWriteHook(offset, size, value);
    device.attach(options.host, this);
  }

  /** Appends one virtio_pci_cap (16 bytes + `extra`) pointing at `offset`/`length` of the registers BAR. */
  private addVirtioCap(type: number, offset: number, length: number, extra = 0): number {
    const cs = this.pci;
    const cap = cs.addCapability(PCI_CAP_ID_VENDOR, 16 + extra);
    cs.define(cap + 2, 1, 16 + extra); // cap_len
    cs.define(cap + 3, 1, type); // cfg_type
    cs.define(cap + 4, 1, type === VirtioPciCap.PCI_CFG ? 0 : VIRTIO_PCI_REGS_BAR); // bar
    cs.define(cap + 5, 1, 0); // id
    cs.define(cap + 8, 4, offset);
    cs.define(cap + 12, 4, length);
    return cap;
  }

  // ---- PciFunction ----------------------------------------------------------

  /** Configuration read (PCI function). */
  configRead(offset: number, size: AccessSize): number {
    return this.pci.configRead(offset, size);
  }

  /** Configuration write (PCI function). */
  configWrite(offset: number, size: AccessSize, value: number): void {
    this.pci.configWrite(offset, size, value);
  }

  /** Machine or bus reset: power-on configuration space, device reset (PCI function). */
  reset(): void {
    this.pci.reset();
    this.device.reset();
    this.resetRegisters();
  }

  /** Plugged into a slot: the BARs follow the guest's programming, INTA# drives the slot's line (PCI function). */
  attach(slot: PciSlot): void {
    this.pci.attach(slot);
  }

  /** Unplugged: BARs unmapped, INTx lowered (PCI function). */
  detach(): void {
    this.pci.detach();
  }

  private resetRegisters(): void {
    this.deviceFeatureSelect = 0;
    this.driverFeatureSelect = 0;
    this.queueSelect = 0;
    this.configVector = VIRTIO_MSI_NO_VECTOR;
    this.isr = 0;
    this.pci.setIntx(false);
  }

  // ---- interrupts -----------------------------------------------------------

  /** Used-buffer notification: the queue's MSI-X vector, or ISR bit 0 and INTx (§4.1.5.4). */
  signalQueue(queue: number): void {
    if (this.pci.msixEnabled) {
      const v = this.device.queues[queue]?.msixVector ?? VIRTIO_MSI_NO_VECTOR;
      if (v !== VIRTIO_MSI_NO_VECTOR) this.pci.notify(v);
      return;
    }
    this.isr |= 1;
    this.pci.setIntx(true);
  }

  /** Configuration change: ISR bit 1, then the configuration vector or INTx (§4.1.5.3). */
  signalConfig(): void {
    this.isr |= 2;
    if (this.pci.msixEnabled) {
      if (this.configVector !== VIRTIO_MSI_NO_VECTOR) this.pci.notify(this.configVector);
      return;
    }
    this.pci.setIntx(true);
  }

  // ---- the registers BAR -------------------------------------------------------

  private regsRead(offset: number, size: AccessSize): number {
    if (offset < COMMON_OFF + COMMON_LEN) return this.commonRead(offset - COMMON_OFF, size);
    if (offset === ISR_OFF) {
      // Reading ISR clears it and deasserts INTx (§4.1.4.5).
      const v = this.isr;
      this.isr = 0;
      this.pci.setIntx(false);
      return v;
    }
    if (offset >= DEVICE_OFF && offset < DEVICE_OFF + 0x1000) return this.device.readConfig(offset - DEVICE_OFF, size);
    return 0;
  }

  private regsWrite(offset: number, size: AccessSize, value: number): void {
    if (offset < COMMON_OFF + COMMON_LEN) {
      this.commonWrite(offset - COMMON_OFF, size, value);
      return;
    }
    if (offset >= DEVICE_OFF && offset < DEVICE_OFF + 0x1000) {
      this.device.writeConfig(offset - DEVICE_OFF, size, value);
      return;
    }
    if (offset >= NOTIFY_OFF && offset < NOTIFY_OFF + this.device.queues.length * NOTIFY_MULTIPLIER) {
      // No DMA unless the guest enabled bus mastering.
      if (this.pci.busMasterEnabled) this.device.notifyQueue(((offset - NOTIFY_OFF) / NOTIFY_MULTIPLIER) | 0);
    }
  }

  /** Reads a common configuration field; any width, composed byte by byte from the fields. */
  private commonRead(offset: number, size: AccessSize): number {
    let v = 0;
    for (let i = 0; i < size; i++) v |= this.commonByte(offset + i) << (8 * i);
    return v >>> 0;
  }

  private commonByte(at: number): number {
    const C = VirtioPciCommon;
    const d = this.device;
    const q = d.queues[this.queueSelect];
    const field = (base: number, value: number): number => (value / 2 ** (8 * (at - base))) & 0xff;
    if (at < 0x04) return field(C.DEVICE_FEATURE_SELECT, this.deviceFeatureSelect);
    if (at < 0x08) return field(C.DEVICE_FEATURE, d.deviceFeatures(this.deviceFeatureSelect));
    if (at < 0x0c) return field(C.DRIVER_FEATURE_SELECT, this.driverFeatureSelect);
    if (at < 0x10) return field(C.DRIVER_FEATURE, d.driverFeatures(this.driverFeatureSelect));
    if (at < 0x12) return field(C.CONFIG_MSIX_VECTOR, this.configVector);
    if (at < 0x14) return field(C.NUM_QUEUES, d.queues.length);
    if (at === C.DEVICE_STATUS) return d.status === 0 && d.resetInProgress ? this.statusBeforeReset : d.status;
    if (at === C.CONFIG_GENERATION) return d.configGeneration & 0xff;
    if (at < 0x18) return field(C.QUEUE_SELECT, this.queueSelect);
    if (!q) return 0; // a queue that does not exist reads as size 0 and disabled
    if (at < 0x1a) return field(C.QUEUE_SIZE, q.size);
    if (at < 0x1c) return field(C.QUEUE_MSIX_VECTOR, q.msixVector);
    if (at < 0x1e) return field(C.QUEUE_ENABLE, q.ready ? 1 : 0);
    if (at < 0x20) return field(C.QUEUE_NOTIFY_OFF, q.index);
    if (at < 0x28) return field(C.QUEUE_DESC, q.descAddr);
    if (at < 0x30) return field(C.QUEUE_DRIVER, q.driverAddr);
    if (at < 0x38) return field(C.QUEUE_DEVICE, q.deviceAddr);
    return 0;
  }

  /** Writes a common configuration field with its natural width (64-bit fields also as two 32-bit halves). */
  private commonWrite(offset: number, size: AccessSize, value: number): void {
    const C = VirtioPciCommon;
    const d = this.device;
    const q = d.queues[this.queueSelect];
    value >>>= 0;
    if (size === 4) {
      switch (offset) {
        case C.DEVICE_FEATURE_SELECT:
          this.deviceFeatureSelect = value;
          return;
        case C.DRIVER_FEATURE_SELECT:
          this.driverFeatureSelect = value;
          return;
        case C.DRIVER_FEATURE:
          d.setDriverFeatures(this.driverFeatureSelect, value);
          return;
      }
      if (offset >= C.QUEUE_DESC && offset < C.QUEUE_DEVICE + 8 && q && !q.ready) {
        const high = (offset & 4) !== 0;
        const set = (addr: number): number => (high ? value * 0x1_0000_0000 + (addr % 0x1_0000_0000) : Math.floor(addr / 0x1_0000_0000) * 0x1_0000_0000 + value);
        if (offset < C.QUEUE_DRIVER) q.descAddr = set(q.descAddr);
        else if (offset < C.QUEUE_DEVICE) q.driverAddr = set(q.driverAddr);
        else q.deviceAddr = set(q.deviceAddr);
      }
      return;
    }
    if (size === 2) {
      switch (offset) {
        case C.CONFIG_MSIX_VECTOR:
          this.configVector = value < this.msixVectors ? value : VIRTIO_MSI_NO_VECTOR;
          return;
        case C.QUEUE_SELECT:
          this.queueSelect = value;
          return;
        case C.QUEUE_SIZE:
          if (q && !q.ready) q.size = value;
          return;
        case C.QUEUE_MSIX_VECTOR:
          // An invalid vector reads back as NO_VECTOR so the driver sees the mapping failed (§4.1.5.1.2).
          if (q) q.msixVector = value < this.msixVectors ? value : VIRTIO_MSI_NO_VECTOR;
          return;
        case C.QUEUE_ENABLE:
          if (q && value === 1) d.enableQueue(this.queueSelect);
          return;
      }
      return;
    }
    if (size === 1 && offset === C.DEVICE_STATUS) {
      if ((value & 0xff) === 0) {
        this.statusBeforeReset = d.status || 1;
        d.reset();
        this.resetRegisters();
      } else d.writeStatus(value);
    }
  }

  // ---- VIRTIO_PCI_CAP_PCI_CFG window (§4.1.4.9) -----------------------------------

  private cfgWindow(): { bar: number; offset: number; length: number } {
    const c = this.pciCfgCap;
    const cs = this.pci;
    return { bar: cs.configRead(c + 4, 1) as number, offset: cs.configRead(c + 8, 4) >>> 0, length: cs.configRead(c + 12, 4) >>> 0 };
  }

  private configReadHook(offset: number, size: AccessSize, value: number): number {
    const data = this.pciCfgCap + 16;
    if (offset >= data && offset < data + 4) {
      const w = this.cfgWindow();
      if (w.bar === VIRTIO_PCI_REGS_BAR && (w.length === 1 || w.length === 2 || w.length === 4) && w.offset + w.length <= this.regsSize && w.offset % w.length === 0) {
        const v = this.regsRead(w.offset, w.length as AccessSize);
        return size === 4 ? v : (v >>> (8 * (offset - data))) & ((1 << (8 * size)) - 1);
      }
    }
    return value;
  }

  private configWriteHook(offset: number, size: AccessSize, value: number): void {
    const data = this.pciCfgCap + 16;
    if (offset === data) {
      const w = this.cfgWindow();
      if (w.bar === VIRTIO_PCI_REGS_BAR && (w.length === 1 || w.length === 2 || w.length === 4) && w.length <= size && w.offset + w.length <= this.regsSize && w.offset % w.length === 0) {
        this.regsWrite(w.offset, w.length as AccessSize, w.length === 4 ? value >>> 0 : value & ((1 << (8 * w.length)) - 1));
      }
    }
  }

  // ---- snapshots -------------------------------------------------------------------

  /** Saves the configuration space, the transport registers and the device. */
  saveState(): VirtioPciState {
    return {
      pci: this.pci.saveState(),
      deviceFeatureSelect: this.deviceFeatureSelect,
      driverFeatureSelect: this.driverFeatureSelect,
      queueSelect: this.queueSelect,
      configVector: this.configVector,
      isr: this.isr,
      device: this.device.save(),
    };
  }

  /** Restores {@link VirtioPciTransport.saveState} output (untrusted data: validated). */
  loadState(data: VirtioPciState): void {
    const u32 = (v: unknown, what: string, max = 0xffffffff): number => {
      if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > max) throw new StateError("STATE_MALFORMED", `${this.stateId}: saved ${what} is malformed`);
      return v;
    };
    if (typeof data !== "object" || data === null) throw new StateError("STATE_MALFORMED", `${this.stateId}: saved state is not an object`);
    const sels = [u32(data.deviceFeatureSelect, "device_feature_select"), u32(data.driverFeatureSelect, "driver_feature_select"), u32(data.queueSelect, "queue_select", 0xffff)];
    const vector = u32(data.configVector, "config_msix_vector", 0xffff);
    const isr = u32(data.isr, "ISR", 3);
    this.pci.loadState(data.pci);
    this.device.load(data.device);
    [this.deviceFeatureSelect, this.driverFeatureSelect, this.queueSelect] = sels;
    this.configVector = vector < this.msixVectors ? vector : VIRTIO_MSI_NO_VECTOR;
    this.isr = isr;
    this.pci.setIntx(isr !== 0 && !this.pci.msixEnabled);
  }
}
