// The local APIC of one vCPU (Intel SDM Vol. 3 chapter 11, "Advanced
// Programmable Interrupt Controller"): the xAPIC register page, interrupt
// acceptance and priorities, the LVT with its timer, the ICR, and INIT/SIPI.
// Routing between APICs (IPIs, MSIs, the MMIO page) lives in apic-bus.ts.
import { StateError, type Snapshottable, type StateValue, type Timer } from "@typevisor/hv-core";
import type { ApicBus } from "./apic-bus.js";
import type { Cpu } from "./cpu.js";
import type { CpuExtension, InterruptSource } from "./extensions.js";

/** Default physical address of the local APIC register page (IA32_APIC_BASE after reset). */
export const APIC_DEFAULT_BASE = 0xfee00000;
/** The IA32_APIC_BASE MSR. */
export const MSR_APIC_BASE = 0x1b;
/** The IA32_TSC_DEADLINE MSR (Intel SDM Vol. 3 §11.5.4.1). */
export const MSR_TSC_DEADLINE = 0x6e0;
/**
 * Version register: an integrated xAPIC (version 0x14) whose highest LVT
 * entry is number 5 (timer, thermal, performance, LINT0, LINT1, error; no
 * CMCI), without EOI-broadcast suppression. QEMU reports the same value.
 */
export const APIC_VERSION = 0x00050014;

/** IA32_APIC_BASE bit 8: this is the bootstrap processor (read-only). */
export const APIC_BASE_BSP = 0x100;
/** IA32_APIC_BASE bit 11: the APIC is globally enabled. */
export const APIC_BASE_ENABLE = 0x800;

/** Byte offsets of the xAPIC registers in the 4 KiB page (Intel SDM Vol. 3 table 11-1). */
export const APIC_REG = {
  /** Local APIC ID (bits 31:24). */
  ID: 0x020,
  /** Version (read-only). */
  VERSION: 0x030,
  /** Task priority. */
  TPR: 0x080,
  /** Arbitration priority (read-only). */
  APR: 0x090,
  /** Processor priority (read-only). */
  PPR: 0x0a0,
  /** End of interrupt (write-only). */
  EOI: 0x0b0,
  /** Logical destination (bits 31:24). */
  LDR: 0x0d0,
  /** Destination format (model in bits 31:28: 0xF flat, 0x0 cluster). */
  DFR: 0x0e0,
  /** Spurious-interrupt vector, APIC software enable (bit 8), focus checking (bit 9). */
  SVR: 0x0f0,
  /** In-service register, 8 words at 16-byte strides. */
  ISR: 0x100,
  /** Trigger-mode register, 8 words. */
  TMR: 0x180,
  /** Interrupt-request register, 8 words. */
  IRR: 0x200,
  /** Error status. */
  ESR: 0x280,
  /** Interrupt command, low half (writing it sends the IPI). */
  ICR_LO: 0x300,
  /** Interrupt command, high half (destination in bits 31:24). */
  ICR_HI: 0x310,
  /** LVT timer. */
  LVT_TIMER: 0x320,
  /** LVT thermal sensor. */
  LVT_THERMAL: 0x330,
  /** LVT performance-monitoring counters. */
  LVT_PERF: 0x340,
  /** LVT LINT0 (the 8259's INTR in a PC). */
  LVT_LINT0: 0x350,
  /** LVT LINT1 (NMI in a PC). */
  LVT_LINT1: 0x360,
  /** LVT error. */
  LVT_ERROR: 0x370,
  /** Timer initial count. */
  TIMER_INITIAL: 0x380,
  /** Timer current count (read-only). */
  TIMER_CURRENT: 0x390,
  /** Timer divide configuration. */
  TIMER_DIVIDE: 0x3e0,
} as const;

/** Error status register bits (Intel SDM Vol. 3 §11.5.3). */
export const APIC_ESR = {
  /** A vector 0..15 in a message this APIC sent. */
  SEND_ILLEGAL_VECTOR: 1 << 5,
  /** A vector 0..15 received in a message, an LVT entry or a self IPI. */
  RECEIVE_ILLEGAL_VECTOR: 1 << 6,
  /** An access to a reserved register offset. */
  ILLEGAL_REGISTER: 1 << 7,
} as const;

/** Delivery modes of ICR, LVT and MSI data (Intel SDM Vol. 3 §11.6.1, §11.11.2). */
export const APIC_DELIVERY = {
  /** The vector, to every destination. */
  FIXED: 0,
  /** The vector, to the destination with the lowest priority. */
  LOWEST: 1,
  /** System management interrupt (no SMM here: ignored). */
  SMI: 2,
  /** Non-maskable interrupt. */
  NMI: 4,
  /** INIT: the processor resets into wait-for-SIPI (application processors). */
  INIT: 5,
  /** Startup IPI: a waiting processor starts in real mode at vector << 12. */
  STARTUP: 6,
  /** External interrupt: the vector comes from the 8259 (INTA cycle). */
  EXTINT: 7,
} as const;

const LVT_TIMER = 0;
const LVT_LINT0 = 3;
const LVT_LINT1 = 4;
const LVT_ERROR = 5;
const LVT_COUNT = 6;
const LVT_MASKED = 1 << 16;
const LVT_LEVEL = 1 << 15;
const LVT_REMOTE_IRR = 1 << 14;
/** Writable bits per LVT entry: vector, delivery mode, polarity, trigger, mask, timer mode. */
const LVT_WRITABLE = [0x700ff, 0x107ff, 0x107ff, 0x1a7ff, 0x1a7ff, 0x100ff];
const TIMER_ONESHOT = 0;
const TIMER_PERIODIC = 1;
const TIMER_TSC_DEADLINE = 2;
const SVR_ENABLE = 0x100;
const SVR_NO_FOCUS = 0x200;
const ICR_LO_WRITABLE = 0x000cdfff; // vector, delivery mode, destination mode, level, trigger, shorthand
/**
 * A periodic timer with a shorter period (1 µs) fires at most this often.
 * Like KVM's lower bound, it keeps a guest from making the host run a timer
 * callback every virtual nanosecond; the interrupts would coalesce in the
 * IRR anyway.
 */
const MIN_PERIOD_NS = 1000;

/** Index of the highest set bit in a 256-bit set, or -1. */
function highest(set: Int32Array): number {
  for (let i = 7; i >= 0; i--) {
    const w = set[i];
    if (w !== 0) return (i << 5) + 31 - Math.clz32(w);
  }
  return -1;
}

function testBit(set: Int32Array, v: number): boolean {
  return ((set[v >> 5] >>> (v & 31)) & 1) !== 0;
}

function setBit(set: Int32Array, v: number): void {
  set[v >> 5] |= 1 << (v & 31);
}

function clearBit(set: Int32Array, v: number): void {
  set[v >> 5] &= ~(1 << (v & 31));
}

/**
 * One vCPU's local APIC in xAPIC mode, plugged into its {@link Cpu} as an
 * extension unit:
 *
 * - the 4 KiB register page at IA32_APIC_BASE (default 0xFEE00000,
 *   relocatable, globally enabled by bit 11), reached through the machine's
 *   MMIO bus ({@link ApicBus} routes each access to the accessing vCPU's APIC);
 * - fixed interrupts enter the IRR (with their trigger mode in the TMR) and
 *   reach the core at an instruction boundary when their priority class is
 *   above the PPR; the INTA moves them to the ISR; EOI retires the highest
 *   ISR bit and broadcasts level-triggered vectors to the I/O APIC
 *   (§11.8.3-§11.8.5);
 * - the LVT: the timer (one-shot, periodic, TSC-deadline) counting the
 *   machine's virtual clock at 1 GHz divided by the divide configuration,
 *   on hv-core timers (nothing polls; deterministic runs replay exactly);
 *   LINT0 (the 8259's INTR: ExtINT virtual wire, or Fixed/NMI on its edges,
 *   sampled at instruction boundaries where IF=1);
 *   LINT1; the error entry; masks, forced while software-disabled (§11.4.7.2);
 * - the ICR (every shorthand and delivery mode: Fixed, Lowest priority, NMI,
 *   INIT, INIT level de-assert, SIPI), and the ESR with its write-before-read
 *   semantics (§11.5.3);
 * - INIT resets the vCPU into wait-for-SIPI (application processors) keeping
 *   IA32_APIC_BASE, the MTRRs, PAT and the TSC as the SDM's table 10-1 says;
 *   SIPI starts a waiting vCPU in real mode at vector × 4096.
 *
 * While the APIC is globally disabled the vCPU takes the 8259's INTR
 * directly, as a processor without an APIC. After a machine reset the BSP's
 * LINT0 is ExtINT and unmasked (what a BIOS sets up, and QEMU's reset state),
 * so the 8259 works before any guest APIC code runs.
 *
 * Not modelled: SMI (no SMM), x2APIC, thermal and performance-counter
 * sources (their LVT entries exist but nothing fires them), the remote read
 * register, EOI-broadcast suppression.
 */
export class LocalApic implements CpuExtension, InterruptSource, Snapshottable {
  /** Unit name. */
  readonly name = "local-apic";
  /** Snapshot id: `apic0`, `apic1`, ... */
  readonly stateId: string;
  /** Snapshot format version. */
  readonly stateVersion = 1;
  /** The interrupt source the core consults before the legacy PIC: this APIC. */
  readonly interrupts: InterruptSource = this;

  /** APIC ID (8 bits; starts as the vCPU index). */
  id = 0;
  /** Task priority register. */
  tpr = 0;
  /** Logical destination register (bits 31:24). */
  ldr = 0;
  /** Destination format register, model bits 31:28 (reads set bits 27:0). */
  dfr = 0xf0000000 | 0;
  /** Spurious-interrupt vector register. */
  svr = 0xff;
  /** In-service register (256 bits). */
  readonly isr = new Int32Array(8);
  /** Trigger-mode register (256 bits: level-triggered vectors). */
  readonly tmr = new Int32Array(8);
  /** Interrupt-request register (256 bits). */
  readonly irr = new Int32Array(8);
  /** The readable ESR (errors latched by the last ESR write). */
  esr = 0;
  /** Errors detected since the last ESR write. */
  esrPending = 0;
  /** The error LVT may fire (re-armed by each ESR write). */
  private esrArmed = true;
  /** LVT entries: timer, thermal, performance, LINT0, LINT1, error. */
  readonly lvt = new Int32Array(LVT_COUNT);
  /** ICR low half as last written. */
  icrLo = 0;
  /** ICR high half. */
  icrHi = 0;
  /** Timer initial count (unsigned). */
  initialCount = 0;
  /** Timer divide configuration register (bits 0, 1, 3). */
  divideConfig = 0;
  /** log2 of the timer divisor. */
  private divideShift = 1;
  /** Virtual time (ns) at which the current count equalled the initial count. */
  private loadTime = 0;
  /** IA32_TSC_DEADLINE, low and high halves (0 = disarmed). */
  private deadlineLo = 0;
  private deadlineHi = 0;
  /** IA32_APIC_BASE bits 35:32 (the low half lives in the core's `cpu.apicBase`). */
  private baseHi = 0;
  /** An ExtINT message is waiting for the 8259's INTA. */
  private extIntPending = false;
  /** Last seen levels of LINT0 and LINT1 (edge detection). */
  private lintLevel = 0;
  /** An INIT aimed at this vCPU while it executes waits for the instruction boundary. */
  private initPending = false;
  /** The vCPU reset we are doing is an INIT (keeps the APIC ID). */
  private inInit = false;
  private readonly timer: Timer;
  private readonly initTimer: Timer;

  /**
   * @param bus - the machine's APIC bus (routing, MMIO page, clock)
   * @param cpu - the vCPU this APIC belongs to
   */
  constructor(
    readonly bus: ApicBus,
    readonly cpu: Cpu,
  ) {
    this.stateId = `apic${cpu.index}`;
    this.timer = bus.clock.createTimer((now) => this.timerFired(now), `apic${cpu.index}-timer`);
    this.initTimer = bus.clock.createTimer(() => this.pendingInit(), `apic${cpu.index}-init`);
    this.resetRegisters(true);
  }

  // ---------------------------------------------------------------- state helpers

  /** IA32_APIC_BASE bit 11: the APIC takes part in the system. */
  get hardwareEnabled(): boolean {
    return (this.cpu.apicBase & APIC_BASE_ENABLE) !== 0;
  }

  /** SVR bit 8: the APIC is software-enabled. */
  get softwareEnabled(): boolean {
    return (this.svr & SVR_ENABLE) !== 0;
  }

  /** Physical address of the register page (IA32_APIC_BASE bits 35:12). */
  get base(): number {
    return this.baseHi * 4294967296 + ((this.cpu.apicBase & 0xfffff000) >>> 0);
  }

  /** Processor priority (Intel SDM Vol. 3 §11.8.3.1). */
  get ppr(): number {
    const isrv = highest(this.isr);
    const isrClass = isrv < 0 ? 0 : isrv >> 4;
    return this.tpr >> 4 >= isrClass ? this.tpr : isrClass << 4;
  }

  /** Arbitration priority (Intel SDM Vol. 3 §11.6.2.4), used by lowest-priority delivery. */
  get apr(): number {
    const tprClass = this.tpr >> 4;
    const isrv = highest(this.isr);
    const irrv = highest(this.irr);
    const isrClass = isrv < 0 ? 0 : isrv >> 4;
    const irrClass = irrv < 0 ? 0 : irrv >> 4;
    if (tprClass >= irrClass && tprClass > isrClass) return this.tpr;
    return Math.max(tprClass, isrClass, irrClass) << 4;
  }

  /** True when `vector` is in service or requested (the focus processor of lowest-priority delivery). */
  isFocusFor(vector: number): boolean {
    return (this.svr & SVR_NO_FOCUS) === 0 && (testBit(this.isr, vector) || testBit(this.irr, vector));
  }

  /** The highest requested vector whose class is above the PPR, or -1. */
  private deliverable(): number {
    const irrv = highest(this.irr);
    if (irrv < 0) return -1;
    return (irrv & 0xf0) > (this.ppr & 0xf0) ? irrv : -1;
  }

  /** Virtual time now as this vCPU sees it (in deterministic mode, instructions retired in its running slice count). */
  private now(): number {
    let t = this.bus.clock.now();
    if (this.bus.nsPerInstruction !== 0 && this.bus.executing(this.cpu)) t += this.cpu.sliceCount * this.bus.nsPerInstruction;
    return t;
  }

  /** Makes the vCPU look at its interrupt inputs at the next instruction boundary, and wakes the machine if it idles. */
  private signal(): void {
    this.cpu.interruptPending();
    this.bus.kick();
  }

  // ---------------------------------------------------------------- interrupt acceptance

  /**
   * Accepts a fixed interrupt into the IRR (§11.8.4), recording its trigger
   * mode in the TMR. Vectors 0..15 are illegal: they set the ESR's
   * receive-illegal-vector bit and are dropped.
   */
  acceptFixed(vector: number, level: boolean): void {
    vector &= 0xff;
    if (vector < 16) {
      this.error(APIC_ESR.RECEIVE_ILLEGAL_VECTOR);
      return;
    }
    setBit(this.irr, vector);
    if (level) setBit(this.tmr, vector);
    else clearBit(this.tmr, vector);
    this.signal();
  }

  /** An NMI for this vCPU (ICR, MSI, LVT). */
  acceptNmi(): void {
    this.cpu.raiseNmi();
    this.bus.kick();
  }

  /** An ExtINT message: the next interrupt acknowledge goes to the 8259. */
  acceptExtInt(): void {
    this.extIntPending = true;
    this.signal();
  }

  /**
   * INIT (Intel SDM Vol. 3 §10.4, multiple-processor initialization): resets
   * the vCPU; application processors then wait for a startup IPI. An INIT
   * aimed at the vCPU that is executing (a self INIT) waits for its
   * instruction boundary.
   */
  acceptInit(): void {
    if (this.bus.executing(this.cpu)) {
      this.initPending = true;
      this.cpu.requestExit();
      this.initTimer.arm(this.bus.clock.now());
      return;
    }
    this.doInit();
  }

  /** Startup IPI: a vCPU waiting for SIPI starts in real mode at `vector` << 12; otherwise ignored. */
  acceptStartup(vector: number): void {
    if (!this.cpu.waitingForSipi) return;
    this.cpu.startup(vector & 0xff);
    this.bus.kick();
  }

  private pendingInit(): void {
    if (!this.initPending) return;
    this.doInit();
  }

  private doInit(): void {
    const cpu = this.cpu;
    this.initPending = false;
    this.initTimer.cancel();
    // INIT keeps IA32_APIC_BASE, the MTRRs, PAT and the TSC (Intel SDM Vol. 3 table 10-1).
    const apicBase = cpu.apicBase;
    const mtrr = [...cpu.mtrr.entries()];
    const pat0 = cpu.pat[0];
    const pat1 = cpu.pat[1];
    const tscOffset = cpu.tscOffset;
    this.inInit = true;
    try {
      cpu.reset();
    } finally {
      this.inInit = false;
    }
    cpu.apicBase = apicBase;
    for (const [k, v] of mtrr) cpu.mtrr.set(k, v);
    cpu.pat[0] = pat0;
    cpu.pat[1] = pat1;
    cpu.tscOffset = tscOffset;
    if (apicBase & APIC_BASE_BSP) {
      cpu.waitingForSipi = false;
      cpu.halted = false;
    } else cpu.waitForStartup();
    this.bus.remap();
    this.bus.kick();
  }

  // ---------------------------------------------------------------- InterruptSource (the core's INTA)

  /** True while a fixed interrupt above the PPR, or the 8259 through ExtINT, is ready for the core (IF=1 checked by the core). */
  hasInterrupt(): boolean {
    if ((this.cpu.apicBase & APIC_BASE_ENABLE) === 0) return false; // the core takes INTR from the 8259 directly
    if ((this.svr & SVR_ENABLE) !== 0 && this.deliverable() >= 0) return true;
    return this.pollLint0();
  }

  /** The INTA cycle: moves the highest deliverable vector from IRR to ISR, or runs the 8259's INTA for ExtINT. */
  acknowledge(): number {
    if ((this.svr & SVR_ENABLE) !== 0) {
      const v = this.deliverable();
      if (v >= 0) {
        clearBit(this.irr, v);
        setBit(this.isr, v);
        // A level-triggered LINT entry is in service until its EOI (remote IRR).
        for (let i = LVT_LINT0; i <= LVT_LINT1; i++) {
          const e = this.lvt[i];
          if ((e & 0x7ff) === v && e & LVT_LEVEL) this.lvt[i] = e | LVT_REMOTE_IRR;
        }
        return v;
      }
    }
    this.extIntPending = false;
    const pic = this.bus.legacyPic();
    if (pic && pic.hasInterrupt()) return pic.acknowledge();
    // Nothing left to give (e.g. the TPR was raised in between): the spurious vector, ISR untouched (§11.9).
    return this.svr & 0xff;
  }

  /**
   * LINT0 is wired to the 8259's INTR. ExtINT passes it to the core (virtual
   * wire); Fixed and NMI entries fire on its rising edge (level-triggered
   * Fixed entries drop their request when it falls).
   */
  private pollLint0(): boolean {
    const e = this.lvt[LVT_LINT0];
    if (e & LVT_MASKED && !this.extIntPending) return false;
    const pic = this.bus.legacyPic();
    if (!pic) return false;
    const mode = (e >> 8) & 7;
    if (this.extIntPending || ((e & LVT_MASKED) === 0 && mode === APIC_DELIVERY.EXTINT)) return pic.hasInterrupt();
    if ((e & LVT_MASKED) === 0 && (mode === APIC_DELIVERY.FIXED || mode === APIC_DELIVERY.NMI)) {
      this.setLint(0, pic.hasInterrupt());
      return (this.svr & SVR_ENABLE) !== 0 && this.deliverable() >= 0;
    }
    return false;
  }

  /**
   * Drives local interrupt pin `pin` (0 = LINT0, 1 = LINT1) to `level`, e.g.
   * a platform's NMI line on LINT1. Edge-triggered entries fire on the
   * rising edge; a level-triggered Fixed entry requests its vector while the
   * line is high.
   */
  setLint(pin: 0 | 1, level: boolean): void {
    const bit = 1 << pin;
    const was = (this.lintLevel & bit) !== 0;
    if (level === was) return;
    this.lintLevel = level ? this.lintLevel | bit : this.lintLevel & ~bit;
    const i = LVT_LINT0 + pin;
    const e = this.lvt[i];
    if (level) this.deliverLvt(i);
    else if (((e >> 8) & 7) === APIC_DELIVERY.FIXED && e & LVT_LEVEL) clearBit(this.irr, e & 0xff);
  }

  /** Fires LVT entry `i` (§11.5.1): nothing while masked; otherwise by its delivery mode. */
  private deliverLvt(i: number): void {
    const e = this.lvt[i];
    if (e & LVT_MASKED) return;
    const mode = i === LVT_TIMER || i === LVT_ERROR ? APIC_DELIVERY.FIXED : (e >> 8) & 7;
    switch (mode) {
      case APIC_DELIVERY.FIXED:
        if (e & LVT_REMOTE_IRR) return; // a level-triggered LINT entry still in service
        this.acceptFixed(e & 0xff, (i === LVT_LINT0 || i === LVT_LINT1) && (e & LVT_LEVEL) !== 0);
        return;
      case APIC_DELIVERY.NMI:
        this.acceptNmi();
        return;
      case APIC_DELIVERY.INIT:
        this.acceptInit();
        return;
      case APIC_DELIVERY.EXTINT:
        this.acceptExtInt();
        return;
      default:
      // SMI and reserved modes: no SMM here.
    }
  }

  /** Records errors in the ESR (§11.5.3); the error LVT fires once until the next ESR write re-arms it. */
  private error(bits: number): void {
    this.esrPending |= bits;
    if (this.esrArmed) {
      this.esrArmed = false;
      this.deliverLvt(LVT_ERROR);
    }
  }

  /** EOI (§11.8.5): retires the highest in-service vector; a level-triggered one is broadcast to the I/O APICs. */
  private eoi(): void {
    const v = highest(this.isr);
    if (v < 0) return;
    clearBit(this.isr, v);
    if (testBit(this.tmr, v)) {
      for (let i = LVT_LINT0; i <= LVT_LINT1; i++) {
        const e = this.lvt[i];
        if ((e & 0xff) === v && e & LVT_REMOTE_IRR) this.lvt[i] = e & ~LVT_REMOTE_IRR;
      }
      this.bus.eoiBroadcast(v);
    }
    this.signal();
  }

  // ---------------------------------------------------------------- timer (§11.5.4)

  private get timerMode(): number {
    const m = (this.lvt[LVT_TIMER] >> 17) & 3;
    return m === 3 ? TIMER_ONESHOT : m;
  }

  /** The current-count register. */
  currentCount(): number {
    const initial = this.initialCount;
    if (initial === 0 || this.timerMode === TIMER_TSC_DEADLINE) return 0;
    const ticks = Math.floor((this.now() - this.loadTime) / 2 ** this.divideShift);
    if (this.timerMode === TIMER_PERIODIC) return initial - (ticks % initial);
    return ticks >= initial ? 0 : initial - ticks;
  }

  /** Arms the hv-core timer for the next expiry of the count (one-shot/periodic) or the TSC deadline. */
  private armTimer(): void {
    const now = this.now();
    let at = Infinity;
    if (this.timerMode === TIMER_TSC_DEADLINE) {
      if (this.deadlineLo !== 0 || this.deadlineHi !== 0) {
        at = this.deadlineHi * 4294967296 + (this.deadlineLo >>> 0) - this.cpu.tscOffset;
        if (at <= now) {
          // Already past: fires at once (§11.5.4.1).
          this.timer.cancel();
          this.deadlineFired();
          return;
        }
      }
    } else if (this.initialCount !== 0) {
      const tick = 2 ** this.divideShift;
      const elapsed = Math.floor((now - this.loadTime) / tick);
      if (this.timerMode === TIMER_PERIODIC) {
        const period = this.initialCount * tick;
        at = this.loadTime + (Math.floor(elapsed / this.initialCount) + 1) * period;
        if (period < MIN_PERIOD_NS) at = Math.max(at, now + MIN_PERIOD_NS);
      } else if (elapsed < this.initialCount) at = this.loadTime + this.initialCount * tick;
    }
    if (at === Infinity) {
      this.timer.cancel();
      return;
    }
    const before = this.bus.clock.nextDeadline();
    this.timer.arm(at);
    // A deterministic slice was sized to end at the earliest timer: end it sooner for this one.
    if (at < before && this.bus.nsPerInstruction !== 0 && this.bus.executing(this.cpu)) this.cpu.requestExit();
  }

  private timerFired(now: number): void {
    if (this.timerMode === TIMER_TSC_DEADLINE) {
      if (this.deadlineLo === 0 && this.deadlineHi === 0) return;
      const tsc = now + this.cpu.tscOffset;
      if (tsc < this.deadlineHi * 4294967296 + (this.deadlineLo >>> 0)) {
        this.armTimer(); // IA32_TSC moved back since arming
        return;
      }
      this.deadlineFired();
      return;
    }
    if (this.initialCount === 0) return;
    this.deliverLvt(LVT_TIMER);
    if (this.timerMode === TIMER_PERIODIC) this.armTimer();
  }

  private deadlineFired(): void {
    this.deadlineLo = 0;
    this.deadlineHi = 0;
    this.deliverLvt(LVT_TIMER);
  }

  // ---------------------------------------------------------------- registers

  /** Reads the 32-bit register at byte offset `offset` (16-byte aligned) of the page. */
  readRegister(offset: number): number {
    const r = (offset >>> 4) & 0xff;
    switch (r) {
      case 0x02:
        return (this.id << 24) >>> 0;
      case 0x03:
        return APIC_VERSION;
      case 0x08:
        return this.tpr;
      case 0x09:
        return this.apr;
      case 0x0a:
        return this.ppr;
      case 0x0b:
        return 0; // EOI is write-only
      case 0x0d:
        return this.ldr >>> 0;
      case 0x0e:
        return (this.dfr | 0x0fffffff) >>> 0;
      case 0x0f:
        return this.svr;
      case 0x28:
        return this.esr;
      case 0x30:
        return this.icrLo >>> 0; // delivery status (bit 12) always idle: IPIs are delivered at once
      case 0x31:
        return this.icrHi >>> 0;
      case 0x38:
        return this.initialCount >>> 0;
      case 0x39:
        return this.currentCount() >>> 0;
      case 0x3e:
        return this.divideConfig;
      default:
        if (r >= 0x10 && r < 0x18) return this.isr[r - 0x10] >>> 0;
        if (r >= 0x18 && r < 0x20) return this.tmr[r - 0x18] >>> 0;
        if (r >= 0x20 && r < 0x28) return this.irr[r - 0x20] >>> 0;
        if (r >= 0x32 && r < 0x38) return this.lvt[r - 0x32] >>> 0;
        this.error(APIC_ESR.ILLEGAL_REGISTER);
        return 0;
    }
  }

  /** Writes the 32-bit register at byte offset `offset` (16-byte aligned) of the page. */
  writeRegister(offset: number, value: number): void {
    const r = (offset >>> 4) & 0xff;
    value |= 0;
    switch (r) {
      case 0x02:
        this.id = value >>> 24;
        return;
      case 0x08:
        this.tpr = value & 0xff;
        this.signal();
        return;
      case 0x0b:
        this.eoi();
        return;
      case 0x0d:
        this.ldr = value & 0xff000000;
        return;
      case 0x0e:
        this.dfr = value & 0xf0000000;
        return;
      case 0x0f:
        this.svr = value & 0x3ff;
        // Software disable sets every LVT mask bit (§11.4.7.2).
        if ((this.svr & SVR_ENABLE) === 0) for (let i = 0; i < LVT_COUNT; i++) this.lvt[i] |= LVT_MASKED;
        this.signal();
        return;
      case 0x28:
        // Write before read: latch the errors seen since the last write, clear them, re-arm the error interrupt.
        this.esr = this.esrPending;
        this.esrPending = 0;
        this.esrArmed = true;
        return;
      case 0x30:
        this.icrLo = value & ICR_LO_WRITABLE;
        this.sendIpi();
        return;
      case 0x31:
        this.icrHi = value & 0xff000000;
        return;
      case 0x38:
        if (this.timerMode === TIMER_TSC_DEADLINE) return; // ignored in TSC-deadline mode
        this.initialCount = value >>> 0;
        this.loadTime = this.now();
        this.armTimer();
        return;
      case 0x3e:
        this.writeDivide(value);
        return;
      case 0x03:
      case 0x09:
      case 0x0a:
      case 0x39:
        return; // read-only
      default:
        if (r >= 0x10 && r < 0x28) return; // ISR, TMR, IRR: read-only
        if (r >= 0x32 && r < 0x38) {
          this.writeLvt(r - 0x32, value);
          return;
        }
        this.error(APIC_ESR.ILLEGAL_REGISTER);
    }
  }

  private writeLvt(i: number, value: number): void {
    const old = this.lvt[i];
    let v = (value & LVT_WRITABLE[i]) | (old & LVT_REMOTE_IRR);
    if ((this.svr & SVR_ENABLE) === 0) v |= LVT_MASKED;
    if (!(v & LVT_LEVEL)) v &= ~LVT_REMOTE_IRR;
    this.lvt[i] = v;
    if (i === LVT_TIMER) {
      const oldMode = (old >> 17) & 3;
      const newMode = (v >> 17) & 3;
      if ((oldMode === TIMER_TSC_DEADLINE) !== (newMode === TIMER_TSC_DEADLINE)) {
        // Switching into or out of TSC-deadline mode disarms the timer (§11.5.4.1).
        this.initialCount = 0;
        this.deadlineLo = 0;
        this.deadlineHi = 0;
      }
      this.armTimer();
    } else if (i === LVT_LINT0) this.signal(); // the 8259 may now pass (or stop passing)
  }

  private writeDivide(value: number): void {
    const oldShift = this.divideShift;
    this.writeDivideConfig(value);
    if (this.divideShift !== oldShift && this.initialCount !== 0 && this.timerMode !== TIMER_TSC_DEADLINE) {
      // Keep the current count continuous: the ticks elapsed so far stay elapsed at the new rate.
      const now = this.now();
      const ticks = Math.floor((now - this.loadTime) / 2 ** oldShift);
      const done = this.timerMode === TIMER_PERIODIC ? ticks % this.initialCount : Math.min(ticks, this.initialCount);
      this.loadTime = now - done * 2 ** this.divideShift;
    }
    this.armTimer();
  }

  /** Sends the IPI described by the ICR (§11.6.1). */
  private sendIpi(): void {
    const lo = this.icrLo;
    const vector = lo & 0xff;
    const mode = (lo >> 8) & 7;
    const level = (lo >> 14) & 1;
    const trigger = (lo >> 15) & 1;
    const shorthand = (lo >> 18) & 3;
    // INIT level de-assert only synchronizes arbitration IDs: no effect on the processors.
    if (mode === APIC_DELIVERY.INIT && trigger === 1 && level === 0) return;
    if ((mode === APIC_DELIVERY.FIXED || mode === APIC_DELIVERY.LOWEST) && vector < 16) {
      this.error(shorthand === 1 ? APIC_ESR.RECEIVE_ILLEGAL_VECTOR | APIC_ESR.SEND_ILLEGAL_VECTOR : APIC_ESR.SEND_ILLEGAL_VECTOR);
      return;
    }
    this.bus.deliver(this, shorthand, this.icrHi >>> 24, (lo >> 11) & 1, mode, vector, trigger === 1);
  }

  // ---------------------------------------------------------------- the page and MSRs

  /** MMIO read of the page at `offset` (the bus checked that this APIC owns the access). */
  mmioRead(offset: number, size: number): number {
    const byte = offset & 0xf;
    if (byte >= 4) return 0;
    const v = this.readRegister(offset & 0xff0) >>> (byte * 8);
    return size === 4 ? v >>> 0 : v & ((1 << (size * 8)) - 1);
  }

  /** MMIO write: registers take aligned 32-bit stores only (narrower or misaligned stores are dropped, as on QEMU). */
  mmioWrite(offset: number, size: number, value: number): void {
    if (size !== 4 || (offset & 0xf) !== 0) return;
    this.writeRegister(offset, value);
  }

  /** RDMSR: IA32_APIC_BASE and IA32_TSC_DEADLINE. */
  rdmsr(_cpu: Cpu, index: number, out: Int32Array): boolean {
    if (index === MSR_APIC_BASE) {
      out[0] = this.cpu.apicBase;
      out[1] = this.baseHi;
      return true;
    }
    if (index === MSR_TSC_DEADLINE) {
      // Reads zero outside TSC-deadline mode (§11.5.4.1).
      const on = this.hardwareEnabled && this.timerMode === TIMER_TSC_DEADLINE;
      out[0] = on ? this.deadlineLo : 0;
      out[1] = on ? this.deadlineHi : 0;
      return true;
    }
    return false;
  }

  /** WRMSR: IA32_APIC_BASE (relocation, global enable/disable) and IA32_TSC_DEADLINE. */
  wrmsr(cpu: Cpu, index: number, lo: number, hi: number): boolean {
    if (index === MSR_APIC_BASE) {
      // Bits 0-7, 9, 10 (no x2APIC) and 36-63 (36-bit physical addresses) are reserved; BSP is read-only.
      if (hi & ~0xf || lo & 0x6ff) cpu.raiseGp(0);
      const was = this.hardwareEnabled;
      cpu.apicBase = (lo & ~APIC_BASE_BSP) | (cpu.apicBase & APIC_BASE_BSP);
      this.baseHi = hi & 0xf;
      if (was && !this.hardwareEnabled) {
        // Global disable: the APIC returns to its power-up state (§11.4.3) and leaves the system bus.
        this.resetRegisters(false);
      }
      this.bus.remap();
      this.signal();
      return true;
    }
    if (index === MSR_TSC_DEADLINE) {
      if (!this.hardwareEnabled || this.timerMode !== TIMER_TSC_DEADLINE) return true; // ignored outside TSC-deadline mode
      this.deadlineLo = lo | 0;
      this.deadlineHi = hi | 0;
      this.armTimer();
      return true;
    }
    return false;
  }

  /** CPUID.01H: EDX bit 9 (APIC present while globally enabled), ECX bit 24 (TSC-deadline timer). */
  cpuid(leaf: number, _subleaf: number, out: Int32Array): void {
    if (leaf !== 1 || !this.hardwareEnabled) return;
    out[3] |= 1 << 9;
    out[2] |= 1 << 24;
    out[1] = (out[1] & 0x00ffffff) | (this.cpu.index << 24); // initial APIC ID
  }

  /** RESET (power-up state) or, during an INIT, the INIT state that keeps the APIC ID (§11.4.7.1, §11.4.7.3). */
  reset(): void {
    this.resetRegisters(!this.inInit, true);
    if (!this.inInit) {
      this.baseHi = 0;
      this.bus.remap();
    }
  }

  /** Disarms the timers (the machine is being torn down). */
  stopTimers(): void {
    this.timer.cancel();
    this.initTimer.cancel();
  }

  private resetRegisters(powerUp: boolean, machineReset = false): void {
    if (powerUp) this.id = this.cpu.index & 0xff;
    this.tpr = 0;
    this.ldr = 0;
    this.dfr = 0xf0000000 | 0;
    this.svr = 0xff;
    this.isr.fill(0);
    this.tmr.fill(0);
    this.irr.fill(0);
    this.esr = 0;
    this.esrPending = 0;
    this.esrArmed = true;
    this.lvt.fill(LVT_MASKED);
    // What a PC BIOS leaves behind (and QEMU's reset state): the BSP's LINT0 in virtual-wire mode, so the 8259 reaches it.
    if (powerUp && machineReset && this.cpu.index === 0) this.lvt[LVT_LINT0] = APIC_DELIVERY.EXTINT << 8;
    this.icrLo = 0;
    this.icrHi = 0;
    this.initialCount = 0;
    this.divideConfig = 0;
    this.divideShift = 1;
    this.loadTime = 0;
    this.deadlineLo = 0;
    this.deadlineHi = 0;
    this.extIntPending = false;
    this.lintLevel = 0;
    this.initPending = false;
    this.timer.cancel();
    this.initTimer.cancel();
  }

  // ---------------------------------------------------------------- snapshots

  /** The APIC's registers, timer and pending INIT/SIPI state. */
  saveState(): StateValue {
    return {
      regs: [this.id, this.tpr, this.ldr, this.dfr, this.svr, this.esr, this.esrPending, +this.esrArmed, this.icrLo, this.icrHi],
      isr: Array.from(this.isr),
      tmr: Array.from(this.tmr),
      irr: Array.from(this.irr),
      lvt: Array.from(this.lvt),
      timer: [this.initialCount, this.divideConfig, this.loadTime, this.timer.armed ? this.timer.deadline : -1, this.deadlineLo, this.deadlineHi],
      base: [this.cpu.apicBase, this.baseHi],
      pins: [+this.extIntPending, this.lintLevel, +this.initPending, +this.cpu.waitingForSipi],
    };
  }

  /** Restores a saved APIC (validating every field: the data may come from a file) and re-arms its timer. */
  loadState(data: StateValue): void {
    const d = data as Record<string, unknown>;
    const nums = (key: string, n: number): number[] => {
      const v = d?.[key];
      if (!Array.isArray(v) || v.length !== n || v.some((x) => typeof x !== "number" || !Number.isFinite(x))) {
        throw new StateError("APIC_STATE", `${this.stateId}: saved field "${key}" must be ${n} finite numbers`);
      }
      return v as number[];
    };
    if (typeof d !== "object" || d === null) throw new StateError("APIC_STATE", `${this.stateId}: saved state is not an object`);
    const regs = nums("regs", 10);
    const sets = [nums("isr", 8), nums("tmr", 8), nums("irr", 8)];
    const lvt = nums("lvt", LVT_COUNT);
    const timer = nums("timer", 6);
    const base = nums("base", 2);
    const pins = nums("pins", 4);
    if (base[0] & 0x6ff || base[1] & ~0xf) throw new StateError("APIC_STATE", `${this.stateId}: saved IA32_APIC_BASE has reserved bits set`);
    this.id = regs[0] & 0xff;
    this.tpr = regs[1] & 0xff;
    this.ldr = regs[2] & 0xff000000;
    this.dfr = regs[3] & 0xf0000000;
    this.svr = regs[4] & 0x3ff;
    this.esr = regs[5] & 0xff;
    this.esrPending = regs[6] & 0xff;
    this.esrArmed = regs[7] !== 0;
    this.icrLo = regs[8] & ICR_LO_WRITABLE;
    this.icrHi = regs[9] & 0xff000000;
    for (let i = 0; i < 8; i++) {
      this.isr[i] = sets[0][i] & (i === 0 ? ~0xffff : -1);
      this.tmr[i] = sets[1][i] & (i === 0 ? ~0xffff : -1);
      this.irr[i] = sets[2][i] & (i === 0 ? ~0xffff : -1);
    }
    for (let i = 0; i < LVT_COUNT; i++) this.lvt[i] = lvt[i] & (LVT_WRITABLE[i] | LVT_REMOTE_IRR);
    this.initialCount = timer[0] >>> 0;
    this.writeDivideConfig(timer[1]);
    this.loadTime = timer[2];
    this.deadlineLo = timer[4] | 0;
    this.deadlineHi = timer[5] | 0;
    this.cpu.apicBase = base[0] | 0;
    this.baseHi = base[1];
    this.extIntPending = pins[0] !== 0;
    this.lintLevel = pins[1] & 3;
    this.initPending = pins[2] !== 0;
    this.cpu.waitingForSipi = pins[3] !== 0;
    if (timer[3] >= 0) this.timer.arm(timer[3]);
    else this.timer.cancel();
    if (this.initPending) this.initTimer.arm(this.bus.clock.now());
    else this.initTimer.cancel();
    this.bus.remap();
  }

  private writeDivideConfig(value: number): void {
    const cfg = value & 0xb;
    const d = (cfg & 3) | ((cfg >> 1) & 4);
    this.divideConfig = cfg;
    this.divideShift = (d + 1) & 7;
  }
}
