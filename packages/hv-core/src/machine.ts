import { VirtualClock, type ClockOptions } from "./clock.js";
import { Emitter } from "./emitter.js";
import { TypevisorError } from "./errors.js";
import { GUEST_MEMORY, type GuestMemory } from "./guest-memory.js";
import { InterruptLines } from "./irq.js";
import { MmioBus } from "./mmio-bus.js";
import type { Plugin } from "./plugin.js";
import { PluginRegistry } from "./plugin-registry.js";
import { PortIoBus } from "./port-io-bus.js";
import { ServiceRegistry } from "./services.js";
import { parseSize } from "./size.js";
import { StateError, StateRegistry, type SavedState } from "./snapshottable.js";
import type { Vcpu } from "./vcpu.js";

/** Lifecycle states: `created → running ⇄ paused → stopped`. */
export type MachineState = "created" | "running" | "paused" | "stopped";

/**
 * Why a machine stopped. Well-known reasons: `poweroff` (ACPI/guest),
 * `exit` (isa-debug-exit and similar, with `exitCode`), `shutdown` (triple
 * fault), `reboot` (a reset request with `resetAction: "stop"`), `timeout`,
 * `error` (a host-side failure),
 * `user` (stopped by the embedding program).
 */
export interface StopInfo {
  /** The reason, e.g. `"poweroff"`. */
  readonly reason: "poweroff" | "exit" | "shutdown" | "reboot" | "timeout" | "error" | "user" | (string & {});
  /** Exit status for `exit` stops. */
  readonly exitCode?: number;
  /** Human-readable detail. */
  readonly message?: string;
  /** The underlying error for `error` stops. */
  readonly error?: unknown;
}

/** Payload of the `state` event. */
export interface StateChange {
  /** State before the change. */
  from: MachineState;
  /** State after the change. */
  to: MachineState;
}

/** Payload of the `reset` event. */
export interface ResetInfo {
  /** How many resets the machine has done, this one included. */
  count: number;
}

/** Events a machine emits. */
export interface MachineEvents {
  /** The lifecycle state changed. */
  state: StateChange;
  /** The machine stopped (after `state` → `stopped`). */
  stop: StopInfo;
  /** The machine was reset (reboot); vCPUs and devices are in power-on state. */
  reset: ResetInfo;
}

/** Raised on an invalid lifecycle transition, naming both states. */
export class LifecycleError extends TypevisorError {}

/** Something that loads a guest into a machine before it starts (kernel loader, firmware). */
export interface BootLoader {
  /** Name for messages. */
  readonly name: string;
  /** Loads the guest: copies images into memory, sets up vCPU registers. */
  load(machine: Machine): void | Promise<void>;
}

/** Options of {@link createMachine} and the {@link Machine} constructor. */
export interface MachineOptions {
  /** Guest RAM size: bytes or a string such as `"256M"`. Default `"128M"`. */
  memory?: string | number;
  /** Virtual clock options (mode, ns per instruction, start time). */
  clock?: ClockOptions;
  /** Instructions per vCPU slice; default 100 000. */
  sliceInstructions?: number;
  /** Host milliseconds of guest execution between yields to the event loop; default 8. */
  yieldEveryMs?: number;
  /** Machine name for messages. */
  name?: string;
  /**
   * What a reset request (guest reboot, triple fault with reset policy) does:
   * `reset` the machine (default, as a PC does) or `stop` it with reason
   * `reboot` (QEMU's `-no-reboot`).
   */
  resetAction?: "reset" | "stop";
}

const setImmediateCompat: (fn: () => void) => void =
  typeof globalThis.setImmediate === "function" ? (fn) => globalThis.setImmediate(fn) : (fn) => setTimeout(fn, 0);

const ALLOWED: Record<MachineState, MachineState[]> = {
  created: ["running", "stopped"],
  running: ["paused", "stopped"],
  paused: ["running", "stopped"],
  stopped: [],
};

/**
 * The composition root: buses, interrupt lines, vCPUs, clock, services,
 * stateful components, and the run loop that executes vCPU slices.
 *
 * The run loop runs slices of guest code for a few milliseconds, then yields
 * to the event loop so timers, async device I/O and the embedding program get
 * their turn. When every vCPU is halted it sleeps until the next timer or
 * until an interrupt wakes it ({@link Machine.kick}).
 */
export class Machine {
  /** Machine name. */
  readonly name: string;
  /** Guest RAM size in bytes. */
  readonly ramSize: number;
  /** The I/O port space. */
  readonly ports = new PortIoBus();
  /** The MMIO space. */
  readonly mmio = new MmioBus();
  /** Interrupt lines and MSI delivery. */
  readonly irqs: InterruptLines;
  /** The virtual clock. */
  readonly clock: VirtualClock;
  /** Services plugins provide to each other. */
  readonly services = new ServiceRegistry();
  /** The stateful components, for snapshots. */
  readonly states = new StateRegistry();
  /** The plugins composing this machine. */
  readonly plugins = new PluginRegistry();
  /** Lifecycle events. */
  readonly events = new Emitter<MachineEvents>();
  /** The vCPUs, index 0 first. */
  readonly vcpus: Vcpu[] = [];
  /** Instructions retired by all vCPUs since creation. */
  get instructions(): number {
    return this.retired[0];
  }
  /** The count behind {@link Machine.instructions}: a Float64Array slot, since it passes 2^31 within a boot (docs/DESIGN.md, hot-path rules). */
  private readonly retired = new Float64Array(1);
  /** Completed resets (reboots). */
  resets = 0;

  private stateValue: MachineState = "created";
  private readonly sliceInstructions: number;
  private readonly yieldEveryMs: number;
  private readonly resetAction: "reset" | "stop";
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private pendingStop: StopInfo | undefined;
  private resetRequested = false;
  private readonly resetHandlers: (() => void)[] = [];
  private inflightIo = 0;
  private stopInfo: StopInfo | undefined;
  private resolveStopped!: (info: StopInfo) => void;
  /** Resolves with the reason once the machine has stopped. */
  readonly stopped: Promise<StopInfo>;

  /** @param options - see {@link MachineOptions} */
  constructor(options: MachineOptions = {}) {
    this.name = options.name ?? "vm";
    this.ramSize = parseSize(options.memory ?? "128M");
    this.clock = new VirtualClock(options.clock);
    this.irqs = new InterruptLines(() => this.kick());
    this.sliceInstructions = options.sliceInstructions ?? 100_000;
    this.yieldEveryMs = options.yieldEveryMs ?? 8;
    this.resetAction = options.resetAction ?? "reset";
    this.stopped = new Promise((resolve) => (this.resolveStopped = resolve));
  }

  /** Current lifecycle state. */
  get state(): MachineState {
    return this.stateValue;
  }

  /** Guest memory (for DMA), from the memory plugin. */
  get memory(): GuestMemory {
    return this.services.get(GUEST_MEMORY);
  }

  /** Why the machine stopped, once it has. */
  get stopReason(): StopInfo | undefined {
    return this.stopInfo;
  }

  /** Adds a vCPU; its index must be the next free one. */
  addVcpu(vcpu: Vcpu): void {
    if (vcpu.index !== this.vcpus.length) {
      throw new TypevisorError("VCPU_INDEX", `vCPU index ${vcpu.index} added, expected ${this.vcpus.length}`);
    }
    this.vcpus.push(vcpu);
  }

  /** Registers a function run on every machine reset, after the vCPUs reset. */
  onReset(handler: () => void): void {
    this.resetHandlers.push(handler);
  }

  /** Loads a guest with `loader`, then starts the machine. */
  async boot(loader: BootLoader): Promise<void> {
    if (this.stateValue !== "created") throw new LifecycleError("LIFECYCLE", `cannot boot "${loader.name}": machine is ${this.stateValue}, not created`);
    await loader.load(this);
    this.start();
  }

  /** Starts executing the vCPUs (`created → running`). */
  start(): void {
    if (this.vcpus.length === 0) throw new LifecycleError("NO_VCPU", `machine "${this.name}" has no vCPU to run (add a CPU plugin)`);
    this.transition("running");
    this.clock.start();
    this.loop = this.runLoop().catch((error: unknown) => {
      const message = error instanceof Error ? error.message : String(error);
      this.finishStop({ reason: "error", message, error });
    });
  }

  /** Starts the machine and resolves when it stops. */
  async run(): Promise<StopInfo> {
    this.start();
    return this.stopped;
  }

  /** Pauses after the current slice (`running → paused`); virtual time stops. */
  async pause(): Promise<void> {
    this.transition("paused");
    for (const v of this.vcpus) v.requestExit();
    this.kick();
    await this.loop;
    this.clock.freeze();
  }

  /** Resumes a paused machine (`paused → running`). */
  resume(): void {
    if (this.stateValue !== "paused") throw new LifecycleError("LIFECYCLE", `machine "${this.name}" cannot resume: it is ${this.stateValue}, not paused`);
    this.transition("running");
    this.clock.start();
    this.loop = this.runLoop().catch((error: unknown) => {
      const message = error instanceof Error ? error.message : String(error);
      this.finishStop({ reason: "error", message, error });
    });
  }

  /**
   * Asks the machine to stop at the next instruction boundary. Safe to call
   * from a device handler in the middle of a slice; the first request wins.
   */
  requestStop(info: StopInfo): void {
    if (this.stateValue === "stopped" || this.pendingStop) return;
    this.pendingStop = info;
    for (const v of this.vcpus) v.requestExit();
    this.kick();
    if (this.stateValue !== "running") this.finishStop(info);
  }

  /** Stops the machine and tears its plugins down. Resolves with the stop reason. */
  async stop(info: StopInfo = { reason: "user" }): Promise<StopInfo> {
    this.requestStop(info);
    await this.loop;
    await this.stopped;
    return this.stopInfo!;
  }

  /**
   * Asks for a machine reset (reboot) at the next instruction boundary, or,
   * with `resetAction: "stop"`, stops the machine with reason `reboot`.
   */
  requestReset(): void {
    if (this.resetAction === "stop") {
      this.requestStop({ reason: "reboot", message: "the guest asked for a reset" });
      return;
    }
    this.resetRequested = true;
    for (const v of this.vcpus) v.requestExit();
    this.kick();
  }

  /** Wakes the run loop if it sleeps because every vCPU is halted. */
  kick(): void {
    const w = this.wake;
    if (w) {
      this.wake = undefined;
      w();
    }
  }

  /**
   * Tracks asynchronous device work (e.g. a disk read). In deterministic mode
   * an idle machine waits for tracked work before it advances time.
   */
  trackIo<T>(work: Promise<T>): Promise<T> {
    this.inflightIo++;
    const done = (): void => {
      this.inflightIo--;
      this.kick();
    };
    work.then(done, done);
    return work;
  }

  /** Number of tracked asynchronous operations still in flight. */
  get pendingIo(): number {
    return this.inflightIo;
  }

  /**
   * Saves every stateful component. Only while created or paused, so the
   * state is consistent.
   */
  saveState(): SavedState[] {
    if (this.stateValue === "running") throw new StateError("STATE_RUNNING", "pause the machine before saving its state");
    return this.states.saveAll();
  }

  /** Restores every stateful component (machine created or paused). */
  loadState(states: readonly SavedState[]): void {
    if (this.stateValue === "running" || this.stateValue === "stopped") {
      throw new StateError("STATE_RUNNING", `cannot load state into a ${this.stateValue} machine; pause it first`);
    }
    this.states.restoreAll(states);
  }

  private transition(to: MachineState): void {
    const from = this.stateValue;
    if (!ALLOWED[from].includes(to)) {
      throw new LifecycleError("LIFECYCLE", `machine "${this.name}" cannot go from ${from} to ${to}`);
    }
    this.stateValue = to;
    this.events.emit("state", { from, to });
  }

  private finishStop(info: StopInfo): void {
    if (this.stateValue === "stopped") return;
    this.stopInfo = info;
    this.clock.freeze();
    this.transition("stopped");
    const done = (): void => {
      this.events.emit("stop", info);
      this.resolveStopped(info);
    };
    this.plugins.teardown(this).then(done, done);
  }

  private doReset(): void {
    this.resetRequested = false;
    for (const v of this.vcpus) v.reset();
    for (const h of this.resetHandlers) h();
    this.resets++;
    this.events.emit("reset", { count: this.resets });
  }

  private async runLoop(): Promise<void> {
    const clock = this.clock;
    const deterministic = clock.mode === "deterministic";
    const hostMs = (): number => performance.now();
    while (this.stateValue === "running") {
      const chunkEnd = hostMs() + this.yieldEveryMs;
      let allHalted = false;
      for (;;) {
        if (this.pendingStop) break;
        if (this.resetRequested) this.doReset();
        clock.runDue();
        let budget = this.sliceInstructions;
        if (deterministic) {
          // Never run past the next timer: it must fire at its exact virtual time.
          const until = clock.nextDeadline() - clock.now();
          if (until < Infinity) budget = Math.max(1, Math.min(budget, Math.ceil(until / clock.nsPerInstruction)));
        }
        let most = 0;
        allHalted = true;
        for (const v of this.vcpus) {
          const n = v.runSlice(budget);
          if (n > most) most = n;
          this.retired[0] += n;
          if (!v.halted) allHalted = false;
        }
        clock.advanceInstructions(most);
        if (this.stateValue !== "running" || this.pendingStop || this.resetRequested) break;
        if (allHalted) {
          // Deterministic idle with nothing in flight: jump to the next timer
          // and keep going, but within this chunk, so the event loop (serial
          // input, stop requests) still gets its turn.
          if (!deterministic || this.inflightIo > 0 || clock.nextDeadline() === Infinity) break;
          clock.advanceTo(clock.nextDeadline());
          allHalted = false;
        }
        if (hostMs() >= chunkEnd) break;
      }
      if (this.pendingStop) {
        this.finishStop(this.pendingStop);
        return;
      }
      if (this.stateValue !== "running") return;
      if (this.resetRequested) continue;
      if (allHalted) await this.idle();
      else await new Promise<void>((resolve) => setImmediateCompat(resolve));
    }
  }

  /** Every vCPU is halted: sleep until a timer is due, I/O completes or an interrupt arrives. */
  private idle(): Promise<void> {
    const clock = this.clock;
    const deadline = clock.nextDeadline();
    return new Promise<void>((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      this.wake = () => {
        if (timer !== undefined) clearTimeout(timer);
        resolve();
      };
      if (clock.mode === "realtime" && deadline < Infinity) {
        const ms = Math.max(0, (deadline - clock.now()) / 1e6);
        timer = setTimeout(() => this.kick(), ms);
      }
    });
  }
}

/**
 * Creates a machine and sets up its plugins in dependency order.
 * @throws PluginError when the plugins do not compose or one fails to set up
 */
export async function createMachine(options: MachineOptions & { plugins: readonly Plugin[] }): Promise<Machine> {
  const machine = new Machine(options);
  for (const p of options.plugins) machine.plugins.add(p);
  await machine.plugins.setup(machine);
  return machine;
}
