import { describe, expect, it } from "vitest";
import { createMachine, LifecycleError, Machine, type MachineState } from "./machine.js";
import type { Vcpu } from "./vcpu.js";
import type { Snapshottable, StateValue } from "./snapshottable.js";

/**
 * A toy vCPU: counts instructions; "executes" HLT when its program counter
 * reaches `haltAt`, and an interrupt (a raised GSI 0) wakes it.
 */
class CountingCpu implements Vcpu, Snapshottable<{ pc: number }> {
  readonly index = 0;
  readonly stateId = "cpu0";
  readonly stateVersion = 1;
  pc = 0;
  halted = false;
  exitRequested = false;
  constructor(
    private readonly machine: Machine,
    private readonly haltAt = Infinity,
  ) {}
  runSlice(budget: number): number {
    if (this.halted) {
      if (!this.machine.irqs.level(0)) return 0;
      this.halted = false;
    }
    let n = 0;
    while (n < budget && !this.exitRequested) {
      this.pc++;
      n++;
      if (this.pc === this.haltAt) {
        this.halted = true;
        break;
      }
    }
    this.exitRequested = false;
    return n;
  }
  requestExit(): void {
    this.exitRequested = true;
  }
  reset(): void {
    this.pc = 0;
    this.halted = false;
  }
  saveState(): { pc: number } {
    return { pc: this.pc };
  }
  loadState(data: { pc: number }): void {
    this.pc = data.pc;
  }
}

describe("Machine lifecycle", () => {
  it("goes created → running ⇄ paused → stopped, emitting each change", async () => {
    const m = new Machine({ memory: "16M" });
    expect(m.ramSize).toBe(16 * 1024 * 1024);
    m.addVcpu(new CountingCpu(m));
    const seen: string[] = [];
    m.events.on("state", (e) => seen.push(`${e.from}->${e.to}`));
    m.start();
    expect(m.state).toBe<MachineState>("running");
    await new Promise((r) => setTimeout(r, 20));
    await m.pause();
    const at = m.instructions;
    expect(at).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 20));
    expect(m.instructions).toBe(at);
    m.resume();
    await new Promise((r) => setTimeout(r, 20));
    expect(m.instructions).toBeGreaterThan(at);
    const info = await m.stop();
    expect(info.reason).toBe("user");
    expect(seen).toEqual(["created->running", "running->paused", "paused->running", "running->stopped"]);
  });

  it("rejects invalid transitions with both states named", async () => {
    const m = new Machine();
    expect(() => m.resume()).toThrowError(LifecycleError);
    expect(() => m.resume()).toThrowError(/cannot resume: it is created, not paused/);
    expect(() => m.start()).toThrowError(/no vCPU/);
    m.addVcpu(new CountingCpu(m));
    await m.stop();
    expect(m.state).toBe("stopped");
    expect(() => m.start()).toThrowError(/cannot go from stopped to running/);
    await expect(m.pause()).rejects.toThrowError(/from stopped to paused/);
  });

  it("stops at the next instruction boundary when a device requests it", async () => {
    const m = new Machine({ clock: { mode: "deterministic" } });
    const cpu = new CountingCpu(m);
    m.addVcpu(cpu);
    const t = m.clock.createTimer(() => m.requestStop({ reason: "exit", exitCode: 3 }));
    t.arm(12_345);
    const info = await m.run();
    expect(info).toEqual({ reason: "exit", exitCode: 3 });
    // The slice was cut to end exactly at the timer's deadline (1 ns per instruction).
    expect(cpu.pc).toBe(12_345);
    expect(m.stopReason).toBe(info);
  });

  it("sleeps while every vCPU is halted and wakes on an interrupt", async () => {
    const m = new Machine();
    const cpu = new CountingCpu(m, 1000);
    m.addVcpu(cpu);
    const line = m.irqs.line(0);
    m.start();
    await new Promise((r) => setTimeout(r, 30));
    expect(cpu.halted).toBe(true);
    expect(m.instructions).toBe(1000);
    line.raise();
    await new Promise((r) => setTimeout(r, 10));
    expect(cpu.halted).toBe(false);
    expect(m.instructions).toBeGreaterThan(1000);
    await m.stop();
  });

  it("in deterministic mode jumps idle time to the next timer", async () => {
    const m = new Machine({ clock: { mode: "deterministic" } });
    const cpu = new CountingCpu(m, 10);
    m.addVcpu(cpu);
    const line = m.irqs.line(0);
    const t = m.clock.createTimer((now) => {
      line.raise();
      m.clock.createTimer(() => m.requestStop({ reason: "exit", exitCode: 0 })).arm(now + 5);
    });
    t.arm(1_000_000_000); // one virtual second
    const info = await m.run();
    expect(info.reason).toBe("exit");
    expect(m.clock.now()).toBe(1_000_000_005);
    expect(m.instructions).toBe(15);
  });

  it("keeps yielding to the event loop while idle deterministic time jumps from timer to timer", async () => {
    const m = new Machine({ clock: { mode: "deterministic" } });
    m.addVcpu(new CountingCpu(m, 10));
    // A periodic 1 ms tick that never wakes the halted vCPU (no interrupt).
    const tick = m.clock.createTimer(() => tick.arm(tick.deadline + 1_000_000), "tick");
    tick.arm(1_000_000);
    m.start();
    // If the loop never yielded, this timer callback would never run.
    await new Promise((r) => setTimeout(r, 20));
    const info = await m.stop();
    expect(info.reason).toBe("user");
    expect(m.clock.now()).toBeGreaterThan(1_000_000);
  });

  it("waits for tracked I/O before advancing idle deterministic time", async () => {
    const m = new Machine({ clock: { mode: "deterministic" } });
    m.addVcpu(new CountingCpu(m, 10));
    const line = m.irqs.line(0);
    let timeAtCompletion = -1;
    m.clock.createTimer(() => m.requestStop({ reason: "user" })).arm(1e6);
    const io = m.trackIo(new Promise((r) => setTimeout(r, 15)));
    m.start();
    await io;
    timeAtCompletion = m.clock.now();
    line.raise();
    await m.stopped;
    // Idle time did not jump to the stop timer while the I/O was in flight.
    expect(timeAtCompletion).toBe(10);
    expect(m.clock.now()).toBe(1e6);
  });

  it("resets vCPUs and devices on request", async () => {
    const m = new Machine();
    const cpu = new CountingCpu(m);
    m.addVcpu(cpu);
    let deviceResets = 0;
    m.onReset(() => deviceResets++);
    const resets: number[] = [];
    m.events.on("reset", (e) => resets.push(e.count));
    m.start();
    await new Promise((r) => setTimeout(r, 10));
    m.requestReset();
    await new Promise((r) => setTimeout(r, 10));
    await m.stop();
    expect(deviceResets).toBe(1);
    expect(resets).toEqual([1]);
  });

  it("turns reset requests into a reboot stop with resetAction stop", async () => {
    const m = new Machine({ resetAction: "stop" });
    const cpu = new CountingCpu(m);
    m.addVcpu(cpu);
    let resets = 0;
    m.onReset(() => resets++);
    m.start();
    await new Promise((r) => setTimeout(r, 5));
    m.requestReset();
    const info = await m.stopped;
    expect(info.reason).toBe("reboot");
    expect(resets).toBe(0);
  });

  it("reports a host-side error as an error stop", async () => {
    const m = new Machine();
    m.addVcpu({ index: 0, halted: false, runSlice: () => { throw new Error("decoder bug"); }, requestExit() {}, reset() {} });
    const info = await m.run();
    expect(info.reason).toBe("error");
    expect(info.message).toBe("decoder bug");
  });

  it("saves and restores component state only when not running", async () => {
    const m = new Machine();
    const cpu = new CountingCpu(m);
    m.addVcpu(cpu);
    m.states.register(cpu);
    cpu.pc = 77;
    const saved = m.saveState();
    expect(saved).toEqual([{ id: "cpu0", version: 1, data: { pc: 77 } as StateValue }]);
    cpu.pc = 1;
    m.loadState(saved);
    expect(cpu.pc).toBe(77);
    m.start();
    expect(() => m.saveState()).toThrowError(/pause the machine/);
    await m.pause();
    expect(m.saveState()[0].id).toBe("cpu0");
    await m.stop();
  });

  it("createMachine sets plugins up and stop tears them down", async () => {
    const log: string[] = [];
    const m = await createMachine({
      memory: 4096,
      plugins: [
        {
          name: "cpu",
          version: "1.0.0",
          setup: (mm) => {
            log.push("setup");
            mm.addVcpu(new CountingCpu(mm));
          },
          teardown: () => void log.push("teardown"),
        },
      ],
    });
    expect(m.vcpus).toHaveLength(1);
    m.start();
    await m.stop();
    expect(log).toEqual(["setup", "teardown"]);
  });
});
