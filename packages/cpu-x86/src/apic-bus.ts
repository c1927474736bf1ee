// The system side of the local APICs: interrupt messages between them (IPIs,
// MSIs, the I/O APIC's redirected interrupts), the register page on the
// machine's MMIO bus, and the vCPUs' INTR gate to the 8259.
import {
  BusError,
  LEGACY_PIC,
  ServiceKey,
  type IoRegion,
  type LegacyInterruptController,
  type Machine,
  type MmioHandler,
  type MsiSink,
  type VirtualClock,
} from "@typevisor/hv-core";
import { APIC_DELIVERY, LocalApic } from "./apic.js";
import { Cpu, type CpuHost } from "./cpu.js";

/** Service key of the machine's {@link ApicBus} (provided by `x86Cpu()` unless `apic: false`). */
export const LOCAL_APICS = new ServiceKey<ApicBus>("local-apics");

/** Size of the xAPIC register page. */
const PAGE = 0x1000;

/**
 * The machine's APIC bus: it owns one {@link LocalApic} per vCPU and
 *
 * - is the machine's `irqs.msiSink`: x86 MSI messages (Intel SDM Vol. 3
 *   §11.11: address 0xFEExxxxx with destination ID in bits 19:12, RH in
 *   bit 3, DM in bit 2; data with trigger in bit 15, level in bit 14,
 *   delivery mode in bits 10:8, vector in bits 7:0) from devices and the
 *   I/O APIC are decoded and delivered to the addressed APICs;
 * - routes IPIs from the ICR, with physical and logical destinations (flat
 *   and cluster models, broadcast 0xFF), the shorthands, and lowest-priority
 *   arbitration (focus processor first, then the lowest arbitration
 *   priority, ties to the lowest APIC index so runs replay);
 * - maps each globally enabled APIC's register page on the MMIO bus (where
 *   vCPUs relocated their APICs to different bases, each base is mapped) and
 *   sends an access to the APIC of the vCPU making it (`Cpu.running`);
 * - broadcasts EOIs of level-triggered vectors through `machine.irqs.eoi`,
 *   which the I/O APIC listens to.
 *
 * Deviations: an MSI whose RH bit is set with logical destination mode is
 * delivered as lowest priority; DM is honoured whether or not RH is set
 * (as KVM and QEMU do, and as the I/O APIC's messages need). An APIC page
 * relocated onto RAM or another device stays behind them.
 */
export class ApicBus implements MsiSink {
  /** The APICs, by vCPU index. */
  readonly apics: LocalApic[] = [];
  /** The machine clock (APIC timers run on it). */
  readonly clock: VirtualClock;
  /** Virtual ns per instruction in deterministic mode, else 0. */
  readonly nsPerInstruction: number;
  /** MSI messages dropped because their address is not in the 0xFEExxxxx window. */
  droppedMsis = 0;
  private readonly regions = new Map<number, IoRegion>();
  private readonly targets: LocalApic[] = [];
  private readonly pageHandlers = new Map<number, MmioHandler>();
  private installed = false;

  /** @param machine - the machine whose vCPUs get APICs */
  constructor(readonly machine: Machine) {
    this.clock = machine.clock;
    this.nsPerInstruction = machine.clock.mode === "deterministic" ? machine.clock.nsPerInstruction : 0;
  }

  /**
   * The host a vCPU with an APIC is built with: the same as `host`, except
   * that the 8259's INTR reaches the core directly only while the vCPU's
   * APIC is globally disabled; otherwise it goes through LINT0.
   */
  hostFor(index: number, host: CpuHost): CpuHost {
    return {
      ports: host.ports,
      now: host.now,
      nsPerInstruction: host.nsPerInstruction,
      shutdown: host.shutdown,
      legacyPic: () => (this.apics[index]?.hardwareEnabled ? undefined : host.legacyPic()),
    };
  }

  /** Creates `cpu`'s APIC, plugs it in as an extension and registers its state (`apicN`). */
  attach(cpu: Cpu): LocalApic {
    if (cpu.index !== this.apics.length) throw new RangeError(`APIC for vCPU ${cpu.index} attached out of order (expected ${this.apics.length})`);
    if (!this.installed) this.install();
    const apic = new LocalApic(this, cpu);
    this.apics.push(apic);
    cpu.addExtension(apic);
    // The reset state: the BSP's LINT0 in virtual-wire mode (what cpu.reset() leaves).
    apic.reset();
    this.machine.states.register(apic);
    return apic;
  }

  private install(): void {
    this.installed = true;
    this.machine.irqs.msiSink = this;
    this.machine.services.provide(LOCAL_APICS, this);
  }

  /** Removes the APICs from the machine (plugin teardown). */
  detach(): void {
    for (const r of this.regions.values()) r.unregister();
    this.regions.clear();
    for (const a of this.apics) {
      a.stopTimers();
      this.machine.states.unregister(a);
    }
    if (this.machine.irqs.msiSink === this) this.machine.irqs.msiSink = undefined;
    if (this.installed) this.machine.services.remove(LOCAL_APICS);
    this.installed = false;
  }

  /** True while `cpu` is executing (its slice is running): its own accesses and self-IPIs happen mid-instruction. */
  executing(cpu: Cpu): boolean {
    return Cpu.running === cpu;
  }

  /** Wakes the machine's run loop if every vCPU is halted. */
  kick(): void {
    this.machine.kick();
  }

  /** The platform's 8259 (the ExtINT source on LINT0), if any. */
  legacyPic(): LegacyInterruptController | undefined {
    return this.machine.services.find(LEGACY_PIC);
  }

  /** EOI of a level-triggered vector: tell the I/O APICs (82093AA §3.2.4 Remote IRR). */
  eoiBroadcast(vector: number): void {
    this.machine.irqs.eoi(vector);
  }

  // ---------------------------------------------------------------- MMIO page

  /** Maps the register page of every globally enabled APIC (called when a base or enable bit changes). */
  remap(): void {
    const want = new Set<number>();
    for (const a of this.apics) if (a.hardwareEnabled) want.add(a.base);
    for (const [base, region] of this.regions) {
      if (!want.has(base)) {
        region.unregister();
        this.regions.delete(base);
      }
    }
    for (const base of want) {
      if (this.regions.has(base)) continue;
      try {
        this.regions.set(base, this.machine.mmio.register("local-apic", base, PAGE, this.pageHandler(base)));
      } catch (e) {
        // The guest moved the page onto another device's range: that device keeps it.
        if (!(e instanceof BusError)) throw e;
      }
    }
  }

  private pageHandler(base: number): MmioHandler {
    let h = this.pageHandlers.get(base);
    if (!h) {
      h = {
        read: (offset, size) => {
          const a = this.accessor();
          if (!a || a.base !== base || !a.hardwareEnabled) return size === 4 ? 0xffffffff : (1 << (size * 8)) - 1;
          return a.mmioRead(offset, size);
        },
        write: (offset, size, value) => {
          const a = this.accessor();
          if (a && a.base === base && a.hardwareEnabled) a.mmioWrite(offset, size, value);
        },
      };
      this.pageHandlers.set(base, h);
    }
    return h;
  }

  /** The APIC of the vCPU making an access (the BSP's when none of ours runs, e.g. a debugger or a device model). */
  private accessor(): LocalApic | undefined {
    const r = Cpu.running;
    const a = r ? this.apics[r.index] : undefined;
    return a !== undefined && a.cpu === r ? a : this.apics[0];
  }

  // ---------------------------------------------------------------- messages

  /** Decodes an x86 MSI message and delivers it (Intel SDM Vol. 3 §11.11). */
  deliverMsi(address: number, data: number): void {
    if (address >>> 20 !== 0xfee) {
      this.droppedMsis++;
      return;
    }
    const dest = (address >>> 12) & 0xff;
    const redirect = (address >>> 3) & 1;
    const logical = (address >>> 2) & 1;
    const vector = data & 0xff;
    let mode = (data >>> 8) & 7;
    const level = (data >>> 14) & 1;
    const trigger = (data >>> 15) & 1;
    if (trigger === 1 && level === 0) return; // a level-triggered de-assert carries no interrupt
    if (redirect === 1 && logical === 1 && mode === APIC_DELIVERY.FIXED) mode = APIC_DELIVERY.LOWEST;
    this.deliver(undefined, 0, dest, logical, mode, vector, trigger === 1);
  }

  /**
   * Delivers an interrupt message on the APIC bus.
   * @param from - the sending APIC (IPIs), or undefined (MSI, I/O APIC)
   * @param shorthand - 0 none, 1 self, 2 all including self, 3 all excluding self
   * @param dest - destination field (APIC ID, or logical mask)
   * @param logical - 1 for logical destination mode
   * @param mode - delivery mode ({@link APIC_DELIVERY})
   * @param vector - vector (Fixed, Lowest priority, SIPI)
   * @param level - level-triggered (recorded in the TMR)
   */
  deliver(from: LocalApic | undefined, shorthand: number, dest: number, logical: number, mode: number, vector: number, level: boolean): void {
    const t = this.targets;
    t.length = 0;
    for (const a of this.apics) {
      if (!a.hardwareEnabled) continue; // a globally disabled APIC is off the bus
      let hit: boolean;
      switch (shorthand) {
        case 1:
          hit = a === from;
          break;
        case 2:
          hit = true;
          break;
        case 3:
          hit = a !== from;
          break;
        default:
          hit = logical ? this.matchLogical(a, dest) : dest === 0xff || a.id === dest;
      }
      if (hit) t.push(a);
    }
    if (t.length === 0) return;
    switch (mode) {
      case APIC_DELIVERY.FIXED:
        for (const a of t) a.acceptFixed(vector, level);
        return;
      case APIC_DELIVERY.LOWEST:
        this.lowestPriority(t, vector).acceptFixed(vector, level);
        return;
      case APIC_DELIVERY.NMI:
        for (const a of t) a.acceptNmi();
        return;
      case APIC_DELIVERY.INIT:
        for (const a of t) a.acceptInit();
        return;
      case APIC_DELIVERY.STARTUP:
        for (const a of t) a.acceptStartup(vector);
        return;
      case APIC_DELIVERY.EXTINT:
        for (const a of t) a.acceptExtInt();
        return;
      default:
      // SMI (no SMM) and the reserved modes.
    }
  }

  /** Logical destination match (Intel SDM Vol. 3 §11.6.2.2): flat model ANDs the LDR with the mask; cluster model compares the cluster and ANDs the members. */
  private matchLogical(a: LocalApic, dest: number): boolean {
    if (dest === 0xff) return true;
    const ldr = a.ldr >>> 24;
    const model = a.dfr >>> 28;
    if (model === 0xf) return (ldr & dest) !== 0;
    if (model === 0) {
      const cluster = dest >> 4;
      return (cluster === 0xf || cluster === ldr >> 4) && (ldr & dest & 0xf) !== 0;
    }
    return false;
  }

  /** Lowest-priority arbitration (§11.6.2.4): the focus processor, else the lowest APR; ties to the lowest index. */
  private lowestPriority(t: LocalApic[], vector: number): LocalApic {
    for (const a of t) if (a.isFocusFor(vector)) return a;
    let best = t[0];
    let bestApr = best.apr;
    for (let i = 1; i < t.length; i++) {
      const apr = t[i].apr;
      if (apr < bestApr) {
        best = t[i];
        bestApr = apr;
      }
    }
    return best;
  }
}
