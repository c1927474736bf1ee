import { describe, expect, it } from "vitest";
import { MAX_TIMERS_PER_RUN, VirtualClock } from "./clock.js";

describe("VirtualClock", () => {
  it("deterministic time moves only by instructions and explicit jumps", () => {
    const c = new VirtualClock({ mode: "deterministic", nsPerInstruction: 2 });
    expect(c.now()).toBe(0);
    c.start();
    expect(c.now()).toBe(0);
    c.advanceInstructions(500);
    expect(c.now()).toBe(1000);
    c.advanceTo(900);
    expect(c.now()).toBe(1000);
    c.advanceTo(5000);
    expect(c.now()).toBe(5000);
    expect(c.wallTime()).toBe(Date.UTC(2000, 0, 1) + 0.005);
  });

  it("two deterministic runs fire the same timers at the same times", () => {
    const run = (): string[] => {
      const c = new VirtualClock({ mode: "deterministic" });
      const log: string[] = [];
      const periodic = c.createTimer((now) => {
        log.push(`tick@${now}`);
        periodic.arm(periodic.deadline + 300);
      }, "tick");
      periodic.arm(300);
      const once = c.createTimer((now) => log.push(`once@${now}`), "once");
      once.arm(450);
      for (let i = 0; i < 20; i++) {
        c.advanceInstructions(97);
        c.runDue();
      }
      return log;
    };
    const a = run();
    expect(a).toEqual(run());
    expect(a).toEqual(["tick@388", "once@485", "tick@679", "tick@970", "tick@1261", "tick@1552", "tick@1843"]);
  });

  it("fires timers in deadline order and supports re-arm and cancel", () => {
    const c = new VirtualClock({ mode: "deterministic" });
    const log: string[] = [];
    const timers = [50, 10, 40, 20, 30].map((d) => {
      const t = c.createTimer(() => log.push(String(d)), `t${d}`);
      t.arm(d);
      return t;
    });
    timers[2].cancel(); // 40
    timers[0].arm(5); // 50 -> 5
    timers[0].arm(35); // 5 -> 35
    expect(c.pendingTimers).toBe(4);
    expect(c.nextDeadline()).toBe(10);
    c.advanceTo(100);
    expect(c.runDue()).toBe(4);
    expect(log).toEqual(["10", "20", "30", "50"]);
    expect(c.nextDeadline()).toBe(Infinity);
    expect(timers[2].armed).toBe(false);
  });

  it("keeps heap order under many random operations", () => {
    const c = new VirtualClock({ mode: "deterministic" });
    let seed = 12345;
    const rnd = (): number => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
    const fired: number[] = [];
    const timers = Array.from({ length: 200 }, (_, i) => c.createTimer((now) => fired.push(now), `t${i}`));
    for (let i = 0; i < 5000; i++) {
      const t = timers[Math.floor(rnd() * timers.length)];
      if (rnd() < 0.2) t.cancel();
      else t.arm(Math.floor(rnd() * 1e6));
    }
    const expected = timers.filter((t) => t.armed).map((t) => t.deadline).sort((a, b) => a - b);
    const order: number[] = [];
    while (c.pendingTimers > 0) {
      const d = c.nextDeadline();
      order.push(d);
      c.advanceTo(d);
      c.runDue();
    }
    expect(order.filter((d, i) => order.indexOf(d) === i)).toEqual(expected.filter((d, i) => expected.indexOf(d) === i));
    expect(fired.length).toBe(expected.length);
  });

  it("bounds a timer that keeps re-arming itself in the past", () => {
    const c = new VirtualClock({ mode: "deterministic" });
    let n = 0;
    const t = c.createTimer(() => {
      n++;
      t.arm(0);
    });
    t.arm(0);
    expect(c.runDue()).toBe(MAX_TIMERS_PER_RUN);
    expect(n).toBe(MAX_TIMERS_PER_RUN);
  });

  it("realtime time follows the host and stands still while frozen", () => {
    let host = 1_000_000;
    const c = new VirtualClock({ mode: "realtime", hostNow: () => host, startTime: 0 });
    expect(c.now()).toBe(0);
    c.start();
    host += 500;
    expect(c.now()).toBe(500);
    c.freeze();
    host += 10_000;
    expect(c.now()).toBe(500);
    c.start();
    host += 100;
    expect(c.now()).toBe(600);
    c.advanceInstructions(1e9);
    expect(c.now()).toBe(600);
    c.setNow(42);
    expect(c.now()).toBe(42);
  });

  it("armAfter is relative to now", () => {
    const c = new VirtualClock({ mode: "deterministic" });
    c.advanceTo(1000);
    const t = c.createTimer(() => undefined);
    t.armAfter(250);
    expect(t.deadline).toBe(1250);
  });
});
