import { TypevisorError } from "./errors.js";

/** Number of global system interrupts (GSIs) a machine routes. */
export const MAX_GSI = 256;

/**
 * The interrupt controller side of IRQ lines (the platform's PIC / I/O APIC).
 * It receives the combined level of each GSI whenever it changes.
 */
export interface InterruptRouter {
  /** The level of `gsi` changed to `level` (already OR-ed over its sources). */
  setIrqLevel(gsi: number, level: boolean): void;
}

/**
 * Receiver of message-signalled interrupts (MSI/MSI-X): a write of `data` to
 * guest-physical `address`, routed to a local APIC. On x86 this is also the
 * APIC bus: the I/O APIC turns each redirection entry into such a message.
 * Format: Intel SDM Vol. 3 §11.11 (address 0xFEE00000 | destination ID << 12
 * | RH << 3 | DM << 2; data = trigger << 15 | level << 14 | delivery mode << 8
 * | vector).
 */
export interface MsiSink {
  /** Delivers one MSI message. */
  deliverMsi(address: number, data: number): void;
}

/**
 * One device's connection to a GSI. Several sources may share a GSI (PCI
 * INTx); the line seen by the router is high while any source asserts it.
 */
export class IrqLine {
  private asserted = false;

  /** @internal */
  constructor(
    private readonly lines: InterruptLines,
    /** The global system interrupt this source drives. */
    readonly gsi: number,
  ) {}

  /** Whether this source currently asserts its line. */
  get level(): boolean {
    return this.asserted;
  }

  /** Drives the line to `level` (level-triggered devices). */
  set(level: boolean): void {
    if (level === this.asserted) return;
    this.asserted = level;
    this.lines.adjust(this.gsi, level ? 1 : -1);
  }

  /** Asserts the line. */
  raise(): void {
    this.set(true);
  }

  /** Deasserts the line. */
  lower(): void {
    this.set(false);
  }

  /** A rising then falling edge (edge-triggered ISA devices). */
  pulse(): void {
    this.set(true);
    this.set(false);
  }
}

/**
 * The machine's interrupt wiring: GSI levels combined over their sources and
 * forwarded to the installed {@link InterruptRouter}; MSI messages forwarded to
 * the installed {@link MsiSink}.
 */
export class InterruptLines {
  private readonly counts = new Int32Array(MAX_GSI);
  private routerImpl: InterruptRouter | undefined;
  private readonly eoiListeners: ((vector: number) => void)[] = [];
  /** Where MSI messages go; installed by the platform. */
  msiSink: MsiSink | undefined;

  /** @param onActivity - called whenever a line rises or an MSI is sent (wakes halted vCPUs) */
  constructor(private readonly onActivity: () => void = () => {}) {}

  /** The installed router. Installing one replays every line that is currently high. */
  get router(): InterruptRouter | undefined {
    return this.routerImpl;
  }

  /** Installs the router (the platform's interrupt controller). */
  set router(router: InterruptRouter | undefined) {
    this.routerImpl = router;
    if (router) for (let gsi = 0; gsi < MAX_GSI; gsi++) if (this.counts[gsi] > 0) router.setIrqLevel(gsi, true);
  }

  /**
   * Creates a new source on `gsi`.
   * @throws TypevisorError `IRQ_RANGE` for a GSI outside 0..255
   */
  line(gsi: number): IrqLine {
    if (!Number.isInteger(gsi) || gsi < 0 || gsi >= MAX_GSI) {
      throw new TypevisorError("IRQ_RANGE", `GSI ${gsi} is outside 0..${MAX_GSI - 1}`);
    }
    return new IrqLine(this, gsi);
  }

  /** Current combined level of `gsi`. */
  level(gsi: number): boolean {
    return this.counts[gsi] > 0;
  }

  /** Sends an MSI message to the installed sink (dropped when none). */
  sendMsi(address: number, data: number): void {
    this.msiSink?.deliverMsi(address, data);
    this.onActivity();
  }

  /**
   * Subscribes to end-of-interrupt broadcasts (the I/O APIC clears Remote IRR
   * of level-triggered entries on them, Intel 82093AA §3.2.4).
   */
  onEoi(listener: (vector: number) => void): void {
    this.eoiListeners.push(listener);
  }

  /** Broadcasts an EOI for a level-triggered `vector` (called by local APICs). */
  eoi(vector: number): void {
    for (const l of this.eoiListeners) l(vector);
  }

  /** @internal */
  adjust(gsi: number, delta: number): void {
    const before = this.counts[gsi];
    const after = before + delta;
    this.counts[gsi] = after;
    if ((before > 0) !== (after > 0)) {
      this.routerImpl?.setIrqLevel(gsi, after > 0);
      if (after > 0) this.onActivity();
    }
  }
}
