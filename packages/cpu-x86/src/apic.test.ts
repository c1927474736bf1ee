// The local APIC against the Intel SDM Vol. 3 chapter 11, register by
// register: priorities and acceptance, EOI, masking, the ESR, the timer in
// its three modes on the deterministic clock, the ICR, MSI decoding and
// logical destinations, INIT/SIPI, relocation and global disable, snapshots.
import { createMachine, LEGACY_PIC, type Machine } from "@typevisor/hv-core";
import { describe, expect, it } from "vitest";
import { APIC_DEFAULT_BASE, APIC_REG as R, LocalApic } from "./apic.js";
import { LOCAL_APICS, type ApicBus } from "./apic-bus.js";
import { Cpu, CPU_EXCEPTION } from "./cpu.js";
import { X86_CPUS, x86Cpu } from "./plugin.js";

interface Rig {
  vm: Machine;
  bus: ApicBus;
  cpus: readonly Cpu[];
  apic: LocalApic[];
  pic: { pending: number[]; acks: number };
}

async function rig(vcpus = 1, nsPerInstruction = 1): Promise<Rig> {
  const pic = { pending: [] as number[], acks: 0 };
  const vm = await createMachine({
    memory: "4M",
    clock: { mode: "deterministic", nsPerInstruction },
    plugins: [
      x86Cpu({ vcpus }),
      {
        name: "test-pic",
        version: "1.0.0",
        setup(m) {
          m.services.provide(LEGACY_PIC, {
            hasInterrupt: () => pic.pending.length > 0,
            acknowledge: () => {
              pic.acks++;
              return pic.pending.shift()!;
            },
          });
        },
      },
    ],
  });
  const bus = vm.services.get(LOCAL_APICS);
  return { vm, bus, cpus: vm.services.get(X86_CPUS), apic: bus.apics, pic };
}

/** Software-enables an APIC with spurious vector 0xFF. */
function enable(a: LocalApic): void {
  a.writeRegister(R.SVR, 0x1ff);
}

/** The core's INTA: the vectors the APIC hands out in order, until none is deliverable. */
function drain(a: LocalApic): number[] {
  const out: number[] = [];
  while (a.hasInterrupt() && out.length < 300) out.push(a.acknowledge());
  return out;
}

function bits(set: Int32Array): number[] {
  const out: number[] = [];
  for (let v = 0; v < 256; v++) if ((set[v >> 5] >>> (v & 31)) & 1) out.push(v);
  return out;
}

/** Advances deterministic time to `t` and fires due timers. */
function advance(vm: Machine, t: number): void {
  vm.clock.advanceTo(t);
  vm.clock.runDue();
}

function selfIpi(a: LocalApic, vector: number): void {
  a.writeRegister(R.ICR_LO, (1 << 18) | vector);
}

describe("local APIC registers after reset (SDM §11.4.7.1)", () => {
  it("has version 0x50014, its vCPU index as ID, masked LVTs except the BSP's virtual-wire LINT0", async () => {
    const { apic, cpus, vm } = await rig(2);
    expect(apic[0].readRegister(R.VERSION)).toBe(0x00050014);
    expect(apic[1].readRegister(R.ID)).toBe(0x01000000);
    expect(apic[0].readRegister(R.SVR)).toBe(0xff);
    expect(apic[0].readRegister(R.DFR)).toBe(0xffffffff);
    expect(apic[0].readRegister(R.LVT_LINT0)).toBe(0x700);
    expect(apic[1].readRegister(R.LVT_LINT0)).toBe(0x10000);
    for (const r of [R.LVT_TIMER, R.LVT_THERMAL, R.LVT_PERF, R.LVT_LINT1, R.LVT_ERROR]) expect(apic[0].readRegister(r)).toBe(0x10000);
    expect(cpus[0].apicBase >>> 0).toBe(0xfee00900);
    expect(cpus[1].apicBase >>> 0).toBe(0xfee00800);
    expect(cpus[1].waitingForSipi).toBe(true);
    // The page is on the MMIO bus; with no slice running, accesses go to the BSP's APIC.
    expect(vm.mmio.read(APIC_DEFAULT_BASE + R.VERSION, 4)).toBe(0x00050014);
    expect(vm.mmio.ownerOf(APIC_DEFAULT_BASE)).toBe("local-apic");
  });

  it("routes each access to the page to the APIC of the vCPU making it", async () => {
    const { vm, cpus } = await rig(3);
    Cpu.running = cpus[2];
    expect(vm.mmio.read(APIC_DEFAULT_BASE + R.ID, 4)).toBe(0x02000000);
    vm.mmio.write(APIC_DEFAULT_BASE + R.TPR, 4, 0x30);
    Cpu.running = cpus[1];
    expect(vm.mmio.read(APIC_DEFAULT_BASE + R.TPR, 4)).toBe(0);
    Cpu.running = cpus[2];
    expect(vm.mmio.read(APIC_DEFAULT_BASE + R.TPR, 4)).toBe(0x30);
    // Byte reads see the register's bytes; bytes 4..15 of a 16-byte slot read 0; narrow writes are dropped.
    expect(vm.mmio.read(APIC_DEFAULT_BASE + R.VERSION + 2, 1)).toBe(5);
    expect(vm.mmio.read(APIC_DEFAULT_BASE + R.VERSION + 4, 4)).toBe(0);
    vm.mmio.write(APIC_DEFAULT_BASE + R.TPR, 1, 0x70);
    expect(vm.mmio.read(APIC_DEFAULT_BASE + R.TPR, 4)).toBe(0x30);
    Cpu.running = undefined;
  });

  it("reports the APIC and the TSC-deadline timer in CPUID.01H with the initial APIC ID", async () => {
    const { cpus } = await rig(2);
    const out = new Int32Array(4);
    const cpuid = (cpu: Cpu) => {
      out.fill(0);
      out[1] = (cpu.index << 24) | (1 << 16);
      for (const e of cpu.extensions) e.cpuid?.(1, 0, out);
      return [out[1] >>> 24, (out[2] >>> 24) & 1, (out[3] >>> 9) & 1];
    };
    expect(cpuid(cpus[0])).toEqual([0, 1, 1]);
    expect(cpuid(cpus[1])).toEqual([1, 1, 1]);
  });
});

describe("interrupt acceptance and priority (SDM §11.8)", () => {
  it("hands out the highest vector first and blocks a class at or below the PPR", async () => {
    const { apic } = await rig();
    const a = apic[0];
    enable(a);
    for (const v of [0x31, 0x45, 0x42, 0x4f]) a.acceptFixed(v, false);
    expect(bits(a.irr)).toEqual([0x31, 0x42, 0x45, 0x4f]);
    expect(a.hasInterrupt()).toBe(true);
    expect(a.acknowledge()).toBe(0x4f);
    // 0x4f in service: PPR = 0x40, so the rest of class 4 waits; class 3 too.
    expect(a.readRegister(R.PPR)).toBe(0x40);
    expect(a.hasInterrupt()).toBe(false);
    a.acceptFixed(0x51, false);
    expect(a.acknowledge()).toBe(0x51); // a higher class nests
    expect(bits(a.isr)).toEqual([0x4f, 0x51]);
    expect(a.readRegister(R.ISR + 0x20)).toBe((1 << 15) | (1 << 17)); // ISR bits 64..95: 0x4f, 0x51
    // EOI retires the highest in-service vector first.
    a.writeRegister(R.EOI, 0);
    expect(bits(a.isr)).toEqual([0x4f]);
    a.writeRegister(R.EOI, 0);
    expect(bits(a.isr)).toEqual([]);
    expect(drain(a)).toEqual([0x45]);
    a.writeRegister(R.EOI, 0);
    expect(drain(a)).toEqual([0x42]);
    a.writeRegister(R.EOI, 0);
    expect(drain(a)).toEqual([0x31]);
  });

  it("computes PPR from TPR and ISR, and APR for arbitration", async () => {
    const { apic } = await rig();
    const a = apic[0];
    enable(a);
    a.writeRegister(R.TPR, 0x5a);
    expect(a.readRegister(R.PPR)).toBe(0x5a);
    a.acceptFixed(0x55, false);
    expect(a.hasInterrupt()).toBe(false); // class 5 is not above PPR class 5
    expect(a.readRegister(R.APR)).toBe(0x5a); // TPR ≥ IRRV class and > ISRV class: APR = TPR
    a.acceptFixed(0x61, false);
    expect(a.acknowledge()).toBe(0x61);
    expect(a.readRegister(R.PPR)).toBe(0x60); // ISRV class above TPR class
    expect(a.readRegister(R.APR)).toBe(0x60);
    a.writeRegister(R.EOI, 0);
    a.writeRegister(R.TPR, 0x20);
    expect(a.readRegister(R.APR)).toBe(0x50); // IRR class 5 above TPR
    expect(a.acknowledge()).toBe(0x55);
  });

  it("holds fixed interrupts while software-disabled and forces LVT masks (SDM §11.4.7.2)", async () => {
    const { apic } = await rig();
    const a = apic[0];
    a.acceptFixed(0x40, false);
    expect(a.hasInterrupt()).toBe(false);
    a.writeRegister(R.LVT_TIMER, 0x20);
    expect(a.readRegister(R.LVT_TIMER)).toBe(0x10020);
    enable(a);
    expect(drain(a)).toEqual([0x40]);
    a.writeRegister(R.LVT_TIMER, 0x20);
    expect(a.readRegister(R.LVT_TIMER)).toBe(0x20);
    a.writeRegister(R.SVR, 0xff); // software disable sets every mask
    expect(a.readRegister(R.LVT_TIMER)).toBe(0x10020);
    expect(a.readRegister(R.LVT_LINT0)).toBe(0x10700);
  });

  it("broadcasts the EOI of level-triggered vectors only", async () => {
    const { vm, apic } = await rig();
    const a = apic[0];
    enable(a);
    const eois: number[] = [];
    vm.irqs.onEoi((v) => eois.push(v));
    a.acceptFixed(0x60, true);
    a.acceptFixed(0x50, false);
    expect(bits(a.tmr)).toEqual([0x60]);
    expect(a.acknowledge()).toBe(0x60);
    a.writeRegister(R.EOI, 0);
    expect(a.acknowledge()).toBe(0x50);
    a.writeRegister(R.EOI, 0);
    a.writeRegister(R.EOI, 0); // nothing in service: no effect
    expect(eois).toEqual([0x60]);
  });

  it("latches errors into the ESR on a write, and fires the error LVT once until re-armed (SDM §11.5.3)", async () => {
    const { apic } = await rig();
    const a = apic[0];
    enable(a);
    a.writeRegister(R.LVT_ERROR, 0xfe);
    selfIpi(a, 5); // illegal vector, sent to self
    expect(a.readRegister(R.ESR)).toBe(0); // not visible before a write
    expect(drain(a)).toEqual([0xfe]);
    a.writeRegister(R.EOI, 0);
    a.readRegister(0x040); // a reserved register
    expect(drain(a)).toEqual([]); // the error interrupt is not re-armed yet
    a.writeRegister(R.ESR, 0);
    expect(a.readRegister(R.ESR)).toBe(0x20 | 0x40 | 0x80);
    a.writeRegister(R.ESR, 0);
    expect(a.readRegister(R.ESR)).toBe(0);
    a.acceptFixed(3, false); // an illegal vector received from the bus
    expect(drain(a)).toEqual([0xfe]);
    a.writeRegister(R.ESR, 0);
    expect(a.readRegister(R.ESR)).toBe(0x40);
    expect(bits(a.irr)).toEqual([]);
  });

  it("takes the 8259 through LINT0: ExtINT on the BSP, blocked when masked, direct when globally disabled", async () => {
    const { apic, cpus, pic } = await rig(2);
    pic.pending.push(0x20, 0x21, 0x22);
    expect(apic[0].hasInterrupt()).toBe(true);
    expect(apic[0].acknowledge()).toBe(0x20);
    expect(apic[1].hasInterrupt()).toBe(false); // the AP's LINT0 is masked
    expect(cpus[1].host.legacyPic()).toBeUndefined(); // and the core cannot bypass its APIC
    // A fixed vector above the PPR goes first (ExtINT ignores priorities, but the APIC is asked first).
    enable(apic[0]);
    apic[0].acceptFixed(0x90, false);
    expect(apic[0].acknowledge()).toBe(0x90);
    apic[0].writeRegister(R.LVT_LINT0, 0x10700);
    expect(apic[0].hasInterrupt()).toBe(false);
    // Globally disabled: the core takes INTR from the 8259 itself.
    apic[0].wrmsr(cpus[0], 0x1b, 0xfee00100, 0);
    expect(apic[0].hasInterrupt()).toBe(false);
    expect(cpus[0].host.legacyPic()?.acknowledge()).toBe(0x21);
  });

  it("turns LINT0 edges into a fixed vector or an NMI when so programmed", async () => {
    const { apic, cpus, pic } = await rig();
    const a = apic[0];
    enable(a);
    a.writeRegister(R.LVT_LINT0, 0x33); // fixed, edge
    expect(a.hasInterrupt()).toBe(false);
    pic.pending.push(0x20);
    expect(drain(a)).toEqual([0x33]);
    expect(pic.acks).toBe(0); // no INTA to the 8259 in fixed mode
    a.writeRegister(R.EOI, 0);
    expect(drain(a)).toEqual([]); // INTR still high: no new edge
    pic.pending.length = 0;
    a.hasInterrupt();
    a.writeRegister(R.LVT_LINT0, 0x400); // NMI
    pic.pending.push(0x20);
    a.hasInterrupt();
    expect(cpus[0].nmiPending).toBe(true);
    // LINT1 wired to a platform NMI line.
    cpus[0].nmiPending = false;
    a.writeRegister(R.LVT_LINT1, 0x400);
    a.setLint(1, true);
    expect(cpus[0].nmiPending).toBe(true);
    // A level-triggered fixed LINT1: remote IRR set while in service, cleared by the EOI.
    a.setLint(1, false);
    a.writeRegister(R.LVT_LINT1, 0x8000 | 0x66);
    a.setLint(1, true);
    expect(a.acknowledge()).toBe(0x66);
    expect(a.readRegister(R.LVT_LINT1) & 0x4000).toBe(0x4000);
    a.writeRegister(R.EOI, 0);
    expect(a.readRegister(R.LVT_LINT1) & 0x4000).toBe(0);
  });

  it("resets a vCPU through an LVT entry in INIT mode, and hands out the spurious vector when nothing is left at INTA", async () => {
    const { apic, cpus } = await rig(2);
    const ap = apic[1];
    cpus[1].startup(0x20);
    ap.writeRegister(R.SVR, 0x1ef);
    ap.writeRegister(R.LVT_LINT1, 0x500);
    expect(cpus[1].waitingForSipi).toBe(false);
    ap.setLint(1, true);
    expect(cpus[1].waitingForSipi).toBe(true);
    // INIT put the APIC back to its INIT state: software-disabled, spurious vector 0xFF.
    expect(ap.readRegister(R.SVR)).toBe(0xff);
    ap.writeRegister(R.SVR, 0x1ef);
    expect(ap.acknowledge()).toBe(0xef);
    expect(bits(ap.isr)).toEqual([]);
  });
});

describe("timer (SDM §11.5.4) on the deterministic clock", () => {
  it("one-shot: counts down at 1 GHz / divisor and fires once at the exact virtual time", async () => {
    const { vm, apic } = await rig();
    const a = apic[0];
    enable(a);
    advance(vm, 5000);
    a.writeRegister(R.TIMER_DIVIDE, 0xb); // divide by 1
    a.writeRegister(R.LVT_TIMER, 0x40);
    a.writeRegister(R.TIMER_INITIAL, 1000);
    advance(vm, 5250);
    expect(a.readRegister(R.TIMER_CURRENT)).toBe(750);
    advance(vm, 5999);
    expect(a.hasInterrupt()).toBe(false);
    advance(vm, 6000);
    expect(a.readRegister(R.TIMER_CURRENT)).toBe(0);
    expect(drain(a)).toEqual([0x40]);
    a.writeRegister(R.EOI, 0);
    advance(vm, 20000);
    expect(drain(a)).toEqual([]);
    expect(a.readRegister(R.TIMER_CURRENT)).toBe(0);
    expect(a.readRegister(R.TIMER_INITIAL)).toBe(1000);
  });

  it("divides by 1..128 as the divide configuration says", async () => {
    const { vm, apic } = await rig();
    const a = apic[0];
    const divisors: [number, number][] = [[0x0, 2], [0x1, 4], [0x2, 8], [0x3, 16], [0x8, 32], [0x9, 64], [0xa, 128], [0xb, 1]];
    for (const [cfg, div] of divisors) {
      a.writeRegister(R.TIMER_DIVIDE, cfg);
      expect(a.readRegister(R.TIMER_DIVIDE)).toBe(cfg);
      const t0 = vm.clock.now();
      a.writeRegister(R.TIMER_INITIAL, 100000);
      advance(vm, t0 + 10 * div + (div - 1));
      expect(a.readRegister(R.TIMER_CURRENT)).toBe(100000 - 10);
      a.writeRegister(R.TIMER_INITIAL, 0); // stops the timer
      expect(a.readRegister(R.TIMER_CURRENT)).toBe(0);
    }
  });

  it("periodic: reloads, fires every initial × divisor ns without drift, and counts on while masked", async () => {
    const { vm, apic } = await rig();
    const a = apic[0];
    enable(a);
    a.writeRegister(R.TIMER_DIVIDE, 0x0); // divide by 2
    a.writeRegister(R.LVT_TIMER, 0x20000 | 0x41);
    const t0 = vm.clock.now();
    a.writeRegister(R.TIMER_INITIAL, 500); // 1000 ns period
    const fired: number[] = [];
    for (let t = t0; t <= t0 + 5000; t += 50) {
      advance(vm, t);
      if (a.hasInterrupt()) {
        fired.push(vm.clock.now() - t0);
        a.acknowledge();
        a.writeRegister(R.EOI, 0);
      }
    }
    expect(fired).toEqual([1000, 2000, 3000, 4000, 5000]);
    advance(vm, t0 + 5300);
    expect(a.readRegister(R.TIMER_CURRENT)).toBe(350);
    a.writeRegister(R.LVT_TIMER, 0x30000 | 0x41); // masked
    advance(vm, t0 + 9000);
    expect(drain(a)).toEqual([]);
    expect(a.readRegister(R.TIMER_CURRENT)).toBe(500);
    // Unmasking resumes on the same grid.
    a.writeRegister(R.LVT_TIMER, 0x20000 | 0x41);
    advance(vm, t0 + 9999);
    expect(drain(a)).toEqual([]);
    advance(vm, t0 + 10000);
    expect(drain(a)).toEqual([0x41]);
  });

  it("a timer interrupt that finds its vector still requested is coalesced", async () => {
    const { vm, apic } = await rig();
    const a = apic[0];
    enable(a);
    a.writeRegister(R.TIMER_DIVIDE, 0xb);
    a.writeRegister(R.LVT_TIMER, 0x20000 | 0x41);
    a.writeRegister(R.TIMER_INITIAL, 2000);
    advance(vm, vm.clock.now() + 10000);
    expect(drain(a)).toEqual([0x41]);
  });

  it("a periodic timer shorter than 1 µs fires at most once per µs", async () => {
    const { vm, apic } = await rig();
    const a = apic[0];
    enable(a);
    a.writeRegister(R.TIMER_DIVIDE, 0xb);
    a.writeRegister(R.LVT_TIMER, 0x20000 | 0x41);
    const t0 = vm.clock.now();
    a.writeRegister(R.TIMER_INITIAL, 5);
    let fired = 0;
    for (let t = t0; t <= t0 + 10_000; t += 100) {
      advance(vm, t);
      fired += drain(a).length;
      a.writeRegister(R.EOI, 0);
    }
    expect(fired).toBeGreaterThanOrEqual(9);
    expect(fired).toBeLessThanOrEqual(11);
    expect(a.readRegister(R.TIMER_CURRENT)).toBeLessThanOrEqual(5);
  });

  it("TSC-deadline: IA32_TSC_DEADLINE arms, fires when the TSC reaches it, and clears (SDM §11.5.4.1)", async () => {
    const { vm, apic, cpus } = await rig();
    const a = apic[0];
    const cpu = cpus[0];
    enable(a);
    const msr = new Int32Array(2);
    const read = () => (a.rdmsr(cpu, 0x6e0, msr), msr[1] * 2 ** 32 + (msr[0] >>> 0));
    // Outside TSC-deadline mode the MSR reads 0 and ignores writes.
    a.wrmsr(cpu, 0x6e0, 123456, 0);
    expect(read()).toBe(0);
    a.writeRegister(R.TIMER_DIVIDE, 0xb);
    a.writeRegister(R.TIMER_INITIAL, 777);
    a.writeRegister(R.LVT_TIMER, 0x40000 | 0x42);
    expect(a.readRegister(R.TIMER_INITIAL)).toBe(0); // the mode switch disarmed the count
    a.writeRegister(R.TIMER_INITIAL, 777); // ignored in TSC-deadline mode
    expect(a.readRegister(R.TIMER_INITIAL)).toBe(0);
    cpu.tscOffset = 1_000_000; // TSC = virtual ns + offset
    advance(vm, 10_000);
    a.wrmsr(cpu, 0x6e0, 1_020_000, 0);
    expect(read()).toBe(1_020_000);
    advance(vm, 19_999);
    expect(a.hasInterrupt()).toBe(false);
    advance(vm, 20_000);
    expect(drain(a)).toEqual([0x42]);
    a.writeRegister(R.EOI, 0);
    expect(read()).toBe(0);
    // A deadline already passed fires at once; writing 0 disarms.
    a.wrmsr(cpu, 0x6e0, 5, 0);
    expect(drain(a)).toEqual([0x42]);
    a.writeRegister(R.EOI, 0);
    a.wrmsr(cpu, 0x6e0, 1_030_000, 0);
    a.wrmsr(cpu, 0x6e0, 0, 0);
    advance(vm, 40_000);
    expect(drain(a)).toEqual([]);
    // Leaving TSC-deadline mode disarms it too.
    a.wrmsr(cpu, 0x6e0, 1_050_000, 0);
    a.writeRegister(R.LVT_TIMER, 0x42);
    a.writeRegister(R.LVT_TIMER, 0x40000 | 0x42);
    advance(vm, 60_000);
    expect(drain(a)).toEqual([]);
  });

  it("replays exactly: the same guest program sees interrupts at the same TSC values", async () => {
    const runOnce = async () => {
      const { vm, apic } = await rig();
      const a = apic[0];
      enable(a);
      a.writeRegister(R.TIMER_DIVIDE, 0x3);
      a.writeRegister(R.LVT_TIMER, 0x20000 | 0x50);
      a.writeRegister(R.TIMER_INITIAL, 123);
      const seen: number[] = [];
      for (let i = 0; i < 2000 && seen.length < 20; i++) {
        advance(vm, vm.clock.now() + 37 * (1 + (i % 7)));
        if (a.hasInterrupt()) {
          seen.push(a.readRegister(R.TIMER_CURRENT));
          a.acknowledge();
          a.writeRegister(R.EOI, 0);
        }
      }
      return seen;
    };
    const a = await runOnce();
    expect(a.length).toBe(20);
    expect(await runOnce()).toEqual(a);
  });
});

describe("interprocessor interrupts (SDM §11.6)", () => {
  it("delivers by physical ID and by every shorthand", async () => {
    const { apic } = await rig(3);
    for (const a of apic) enable(a);
    const send = (from: number, hi: number, lo: number) => {
      apic[from].writeRegister(R.ICR_HI, hi);
      apic[from].writeRegister(R.ICR_LO, lo);
    };
    send(0, 2 << 24, 0x61); // physical ID 2
    send(1, 0, (1 << 18) | 0x62); // self
    send(2, 0, (2 << 18) | 0x63); // all including self
    send(0, 0, (3 << 18) | 0x64); // all excluding self
    send(0, 0xff << 24, 0x65); // physical broadcast
    expect(bits(apic[0].irr)).toEqual([0x63, 0x65]);
    expect(bits(apic[1].irr)).toEqual([0x62, 0x63, 0x64, 0x65]);
    expect(bits(apic[2].irr)).toEqual([0x61, 0x63, 0x64, 0x65]);
    expect(apic[0].readRegister(R.ICR_LO)).toBe(0x65); // delivery status idle
    expect(apic[0].readRegister(R.ICR_HI)).toBe(0xff000000);
    // A changed APIC ID is what physical destinations match.
    apic[2].writeRegister(R.ID, 0x07000000);
    send(0, 7 << 24, 0x66);
    expect(bits(apic[2].irr)).toContain(0x66);
  });

  it("matches logical destinations in the flat and cluster models (SDM §11.6.2.2)", async () => {
    const { apic } = await rig(4);
    for (const a of apic) enable(a);
    const send = (hi: number, vector: number) => {
      apic[0].writeRegister(R.ICR_HI, hi << 24);
      apic[0].writeRegister(R.ICR_LO, (1 << 11) | vector);
    };
    const who = (vector: number) => apic.map((a, i) => ((a.irr[vector >> 5] >>> (vector & 31)) & 1 ? i : -1)).filter((i) => i >= 0);
    apic.forEach((a, i) => a.writeRegister(R.LDR, (1 << i) << 24));
    send(0x06, 0x70);
    expect(who(0x70)).toEqual([1, 2]);
    send(0xff, 0x71);
    expect(who(0x71)).toEqual([0, 1, 2, 3]);
    // Cluster model: LDR = cluster << 4 | member bit.
    const ldrs = [0x11, 0x12, 0x21, 0x22];
    apic.forEach((a, i) => {
      a.writeRegister(R.DFR, 0x0fffffff);
      a.writeRegister(R.LDR, ldrs[i] << 24);
    });
    expect(apic[0].readRegister(R.DFR)).toBe(0x0fffffff);
    send(0x13, 0x72);
    expect(who(0x72)).toEqual([0, 1]);
    send(0x22, 0x73);
    expect(who(0x73)).toEqual([3]);
    send(0xf1, 0x74); // every cluster, member 1
    expect(who(0x74)).toEqual([0, 2]);
  });

  it("arbitrates lowest priority: the focus processor, else the lowest APR (SDM §11.6.2.4)", async () => {
    const { apic } = await rig(3);
    for (const a of apic) enable(a);
    apic[0].writeRegister(R.TPR, 0x40);
    apic[1].writeRegister(R.TPR, 0x20);
    apic[2].writeRegister(R.TPR, 0x30);
    const send = (vector: number) => {
      apic[0].writeRegister(R.ICR_HI, 0xff << 24);
      apic[0].writeRegister(R.ICR_LO, (1 << 8) | vector);
    };
    send(0x80);
    expect(bits(apic[1].irr)).toEqual([0x80]);
    // APIC 1's APR is now 0x80 (its IRR): APIC 2 has the lowest priority for a new vector...
    send(0x81);
    expect(bits(apic[2].irr)).toEqual([0x81]);
    // ...but a vector already requested somewhere goes to that focus processor.
    send(0x80);
    expect(bits(apic[1].irr)).toEqual([0x80]);
    expect(bits(apic[0].irr)).toEqual([]);
  });

  it("sends NMIs, and INIT then SIPI starts a waiting vCPU in real mode at vector × 4096", async () => {
    const { apic, cpus } = await rig(2);
    enable(apic[0]);
    const send = (hi: number, lo: number) => {
      apic[0].writeRegister(R.ICR_HI, hi);
      apic[0].writeRegister(R.ICR_LO, lo);
    };
    send(1 << 24, 0x400);
    expect(cpus[1].nmiPending).toBe(true);
    // A SIPI before INIT to a running CPU is ignored; the AP is still waiting here.
    send(1 << 24, 0x4500); // INIT, level assert
    send(1 << 24, 0x8500); // INIT level de-assert: no effect
    expect(cpus[1].waitingForSipi).toBe(true);
    expect(cpus[1].nmiPending).toBe(false); // INIT reset the vCPU
    send(1 << 24, 0x4600 | 0x9a); // SIPI, vector 0x9a
    expect(cpus[1].waitingForSipi).toBe(false);
    expect(cpus[1].halted).toBe(false);
    expect([cpus[1].segSel[1], cpus[1].segBase[1], cpus[1].eip]).toEqual([0x9a00, 0x9a000, 0]);
    expect(cpus[1].cr0 & 1).toBe(0);
    send(1 << 24, 0x4600 | 0x10); // a second SIPI is ignored
    expect(cpus[1].segSel[1]).toBe(0x9a00);
  });

  it("INIT keeps the APIC ID, IA32_APIC_BASE, MTRRs and TSC offset, and resets the rest of the APIC", async () => {
    const { apic, cpus } = await rig(2);
    const ap = apic[1];
    enable(ap);
    ap.writeRegister(R.ID, 0x05000000);
    ap.writeRegister(R.TPR, 0x30);
    ap.acceptFixed(0x44, false);
    cpus[1].apicBase = 0xfed00800;
    cpus[1].mtrr.set(0x2ff, [0xc06, 0]);
    cpus[1].tscOffset = 999;
    ap.acceptInit();
    expect(ap.readRegister(R.ID)).toBe(0x05000000);
    expect(ap.readRegister(R.TPR)).toBe(0);
    expect(ap.readRegister(R.SVR)).toBe(0xff);
    expect(bits(ap.irr)).toEqual([]);
    expect(cpus[1].apicBase >>> 0).toBe(0xfed00800);
    expect(cpus[1].mtrr.get(0x2ff)).toEqual([0xc06, 0]);
    expect(cpus[1].tscOffset).toBe(999);
    expect(cpus[1].waitingForSipi).toBe(true);
  });

  it("defers an INIT aimed at the executing vCPU to its instruction boundary", async () => {
    const { vm, apic, cpus } = await rig(2);
    Cpu.running = cpus[1];
    cpus[1].startup(0x10);
    cpus[1].eip = 0x1234;
    apic[1].acceptInit();
    expect(cpus[1].eip).toBe(0x1234);
    expect(cpus[1].exitRequested).toBe(true);
    Cpu.running = undefined;
    vm.clock.runDue();
    expect(cpus[1].waitingForSipi).toBe(true);
  });
});

describe("MSI messages (SDM §11.11) through machine.irqs", () => {
  it("decodes destination, mode, trigger and vector", async () => {
    const { vm, apic, cpus } = await rig(3);
    for (const a of apic) enable(a);
    const msi = (dest: number, dm: number, rh: number, data: number) => vm.irqs.sendMsi((0xfee00000 | (dest << 12) | (rh << 3) | (dm << 2)) >>> 0, data);
    msi(1, 0, 0, 0x0051); // physical, fixed, edge
    expect(bits(apic[1].irr)).toEqual([0x51]);
    expect(bits(apic[1].tmr)).toEqual([]);
    msi(2, 0, 0, 0xc052); // level-triggered, asserted
    expect(bits(apic[2].tmr)).toEqual([0x52]);
    msi(2, 0, 0, 0x8053); // level-triggered de-assert: nothing
    expect(bits(apic[2].irr)).toEqual([0x52]);
    apic.forEach((a, i) => a.writeRegister(R.LDR, (1 << i) << 24));
    msi(0x05, 1, 0, 0x0054); // logical flat: APICs 0 and 2
    expect([0, 1, 2].filter((i) => bits(apic[i].irr).includes(0x54))).toEqual([0, 2]);
    apic[0].writeRegister(R.TPR, 0x70);
    msi(0x05, 1, 1, 0x0055); // RH=1, logical: lowest priority among 0 and 2
    expect([0, 1, 2].filter((i) => bits(apic[i].irr).includes(0x55))).toEqual([2]);
    msi(0xff, 0, 0, 0x0056); // physical broadcast
    expect([0, 1, 2].filter((i) => bits(apic[i].irr).includes(0x56))).toEqual([0, 1, 2]);
    msi(1, 0, 0, 0x0400); // NMI
    expect(cpus[1].nmiPending).toBe(true);
    msi(0, 0, 0, 0x0700); // ExtINT: the next INTA goes to the 8259 even with LINT0 masked
    apic[0].writeRegister(R.LVT_LINT0, 0x10700);
    apic[0].writeRegister(R.TPR, 0xf0);
    expect(apic[0].hasInterrupt()).toBe(false); // the 8259 has nothing yet
    vm.irqs.sendMsi(0xfed00000, 0x57); // not an interrupt address: dropped
    expect(vm.services.get(LOCAL_APICS).droppedMsis).toBe(1);
  });

  it("interrupts from the I/O APIC wake a halted vCPU (machine.kick) and retire with an EOI broadcast", async () => {
    const { vm, apic, cpus } = await rig();
    enable(apic[0]);
    let kicks = 0;
    const kick = vm.kick.bind(vm);
    vm.kick = () => {
      kicks++;
      kick();
    };
    const eois: number[] = [];
    vm.irqs.onEoi((v) => eois.push(v));
    cpus[0].halted = true;
    cpus[0].attention = 0;
    vm.irqs.sendMsi(0xfee00000, 0xc031);
    expect(kicks).toBeGreaterThan(0);
    expect(cpus[0].attention).not.toBe(0);
    expect(apic[0].acknowledge()).toBe(0x31);
    apic[0].writeRegister(R.EOI, 0);
    expect(eois).toEqual([0x31]);
  });
});

describe("IA32_APIC_BASE (SDM §11.4.4)", () => {
  it("relocates the page, disables the APIC globally, and rejects reserved bits with #GP", async () => {
    const { vm, apic, cpus } = await rig();
    const a = apic[0];
    const cpu = cpus[0];
    const msr = new Int32Array(2);
    a.wrmsr(cpu, 0x1b, 0xfed40800, 0);
    a.rdmsr(cpu, 0x1b, msr);
    expect(msr[0] >>> 0).toBe(0xfed40900); // BSP bit kept (read-only)
    expect(vm.mmio.read(0xfed40000 + R.VERSION, 4)).toBe(0x00050014);
    expect(vm.mmio.isClaimed(APIC_DEFAULT_BASE)).toBe(false);
    // Above 4 GiB (36-bit physical addresses).
    a.wrmsr(cpu, 0x1b, 0xfee00800, 0x3);
    expect(vm.mmio.read(3 * 2 ** 32 + 0xfee00000 + R.VERSION, 4)).toBe(0x00050014);
    a.wrmsr(cpu, 0x1b, 0xfee00800, 0);
    enable(a);
    a.writeRegister(R.TPR, 0x20);
    a.acceptFixed(0x40, false);
    a.wrmsr(cpu, 0x1b, 0xfee00000, 0); // global disable: power-up state, off the bus
    expect(vm.mmio.isClaimed(APIC_DEFAULT_BASE)).toBe(false);
    expect(a.readRegister(R.SVR)).toBe(0xff);
    expect(bits(a.irr)).toEqual([]);
    const out = new Int32Array(4);
    a.cpuid(1, 0, out);
    expect(out[3] & (1 << 9)).toBe(0);
    vm.irqs.sendMsi(0xfee00000, 0x41);
    expect(bits(a.irr)).toEqual([]);
    a.wrmsr(cpu, 0x1b, 0xfee00800, 0); // re-enabled, software-disabled
    expect(vm.mmio.isClaimed(APIC_DEFAULT_BASE)).toBe(true);
    for (const [lo, hi] of [[0xfee00801, 0], [0xfee00c00, 0], [0xfee00a00, 0], [0xfee00800, 0x10]]) {
      let thrown: unknown;
      try {
        a.wrmsr(cpu, 0x1b, lo, hi);
      } catch (e) {
        thrown = e;
      }
      expect(thrown).toBe(CPU_EXCEPTION);
      expect(cpu.excVector).toBe(13);
    }
  });

  it("maps each vCPU's page at its own base; another vCPU's base is not its APIC", async () => {
    const { vm, apic, cpus } = await rig(2);
    apic[1].wrmsr(cpus[1], 0x1b, 0xfed00800, 0);
    expect(vm.mmio.ownerOf(0xfed00000)).toBe("local-apic");
    expect(vm.mmio.ownerOf(APIC_DEFAULT_BASE)).toBe("local-apic");
    Cpu.running = cpus[1];
    expect(vm.mmio.read(0xfed00000 + R.ID, 4)).toBe(0x01000000);
    expect(vm.mmio.read(APIC_DEFAULT_BASE + R.ID, 4)).toBe(0xffffffff);
    Cpu.running = cpus[0];
    expect(vm.mmio.read(APIC_DEFAULT_BASE + R.ID, 4)).toBe(0);
    expect(vm.mmio.read(0xfed00000 + R.ID, 4)).toBe(0xffffffff);
    Cpu.running = undefined;
    apic[1].wrmsr(cpus[1], 0x1b, 0xfee00800, 0);
    expect(vm.mmio.isClaimed(0xfed00000)).toBe(false);
  });

  it("leaves a page moved onto another device to that device", async () => {
    const { vm, apic, cpus } = await rig();
    vm.mmio.register("other", 0xfec00000, 0x1000, { read: () => 0x1234, write: () => {} });
    apic[0].wrmsr(cpus[0], 0x1b, 0xfec00800, 0);
    expect(vm.mmio.read(0xfec00000 + R.VERSION, 4)).toBe(0x1234);
    apic[0].wrmsr(cpus[0], 0x1b, 0xfee00800, 0);
    expect(vm.mmio.read(APIC_DEFAULT_BASE + R.VERSION, 4)).toBe(0x00050014);
  });
});

describe("without an APIC (x86Cpu({ apic: false }))", () => {
  it("has no APIC page, no MSI sink and no CPUID bit, and takes INTR from the 8259 directly", async () => {
    const vm = await createMachine({ memory: "4M", plugins: [x86Cpu({ apic: false })] });
    const cpu = vm.services.get(X86_CPUS)[0];
    expect(vm.services.find(LOCAL_APICS)).toBeUndefined();
    expect(vm.irqs.msiSink).toBeUndefined();
    expect(vm.mmio.isClaimed(APIC_DEFAULT_BASE)).toBe(false);
    expect(cpu.extensions.map((e) => e.name)).not.toContain("local-apic");
    expect(vm.states.ids).not.toContain("apic0");
  });
});

describe("snapshots", () => {
  it("restore registers, the armed timer and wait-for-SIPI, and reject malformed data", async () => {
    const a = await rig(2);
    enable(a.apic[0]);
    a.apic[0].writeRegister(R.TIMER_DIVIDE, 0xb);
    a.apic[0].writeRegister(R.LVT_TIMER, 0x20000 | 0x45);
    a.apic[0].writeRegister(R.TIMER_INITIAL, 800);
    a.apic[0].acceptFixed(0x99, true);
    advance(a.vm, 500);
    const saved = a.vm.saveState();
    const b = await rig(2);
    b.vm.clock.advanceTo(500);
    b.vm.loadState(saved);
    expect(bits(b.apic[0].irr)).toEqual([0x99]);
    expect(bits(b.apic[0].tmr)).toEqual([0x99]);
    expect(b.apic[0].readRegister(R.TIMER_CURRENT)).toBe(300);
    expect(b.cpus[1].waitingForSipi).toBe(true);
    for (const r of [a, b]) advance(r.vm, 2400);
    expect(bits(b.apic[0].irr)).toEqual(bits(a.apic[0].irr));
    expect(b.apic[0].readRegister(R.TIMER_CURRENT)).toBe(a.apic[0].readRegister(R.TIMER_CURRENT));
    const bad = saved.map((s) => (s.id === "apic0" ? { ...s, data: { ...(s.data as object), lvt: [1, 2] } } : s));
    expect(() => b.vm.loadState(bad)).toThrow(/apic0.*lvt/);
  });
});
