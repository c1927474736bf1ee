import { describe, expect, it } from "vitest";
import { I8042 } from "./i8042.js";
import { Port92, debugExitHandler, debugExitStatus, debugconHandler } from "./debug-devices.js";
import { rig } from "./test-util.js";

function make() {
  const r = rig();
  const log: string[] = [];
  const kbc = new I8042({ reset: () => log.push("reset"), a20: (on) => log.push(`a20=${on}`), irq1: r.irqs.line(1), irq12: r.irqs.line(12) });
  const cmd = (v: number): void => kbc.commandHandler.write(0, 1, v);
  const data = (v: number): void => kbc.dataHandler.write(0, 1, v);
  const status = (): number => kbc.commandHandler.read(0, 1);
  const read = (): number => kbc.dataHandler.read(0, 1);
  return { ...r, kbc, log, cmd, data, status, read };
}

describe("i8042 keyboard controller", () => {
  it("resets the machine on the 0xFE pulse command (Linux's reboot=k path)", () => {
    const m = make();
    expect(m.status() & 0x02).toBe(0); // input buffer empty: kb_wait() passes
    m.cmd(0xfe);
    expect(m.log).toEqual(["reset"]);
    m.cmd(0xff); // pulses nothing
    expect(m.log).toEqual(["reset"]);
  });

  it("gates A20 through the output port and 0xDD/0xDF", () => {
    const m = make();
    expect(m.kbc.a20).toBe(true);
    m.cmd(0xd0);
    expect(m.read() & 0x03).toBe(0x03);
    m.cmd(0xd1);
    m.data(0x01);
    expect(m.kbc.a20).toBe(false);
    m.cmd(0xdf);
    m.cmd(0xd1);
    m.data(0x00); // clearing bit 0 pulses reset
    expect(m.log).toEqual(["a20=false", "a20=true", "a20=false", "reset"]);
  });

  it("answers self tests and the command byte, with IRQ 1 on output", () => {
    const m = make();
    m.cmd(0xaa);
    expect(m.status() & 0x05).toBe(0x05); // OBF and SYS
    expect(m.irqs.level(1)).toBe(true);
    expect(m.read()).toBe(0x55);
    expect(m.irqs.level(1)).toBe(false);
    m.cmd(0xab);
    expect(m.read()).toBe(0x00);
    m.cmd(0x60);
    m.data(0x44); // interrupts off
    m.cmd(0x20);
    expect(m.irqs.level(1)).toBe(false);
    expect(m.read()).toBe(0x44);
  });

  it("has a keyboard that acknowledges, identifies and resets", () => {
    const m = make();
    m.data(0xf2);
    expect([m.read(), m.read(), m.read()]).toEqual([0xfa, 0xab, 0x83]);
    m.data(0xff);
    expect([m.read(), m.read()]).toEqual([0xfa, 0xaa]);
    m.data(0xed);
    m.data(0x07);
    expect([m.read(), m.read()]).toEqual([0xfa, 0xfa]);
    m.data(0x12);
    expect(m.read()).toBe(0xfe);
    expect(m.status() & 1).toBe(0);
    for (let i = 0; i < 100; i++) m.data(0xee); // bounded output queue
    let n = 0;
    while (m.status() & 1) {
      m.read();
      n++;
    }
    expect(n).toBe(16);
  });

  it("snapshots", () => {
    const m = make();
    m.cmd(0xd1);
    m.data(0x01);
    m.data(0xf2);
    const n = make();
    n.kbc.loadState(m.kbc.saveState());
    expect(n.kbc.a20).toBe(false);
    expect([n.read(), n.read(), n.read()]).toEqual([0xfa, 0xab, 0x83]);
    expect(() => n.kbc.loadState({ regs: [1, 2], queue: [] })).toThrow(/malformed/);
  });
});

describe("debug devices", () => {
  it("isa-debug-exit exits with (value << 1) | 1", () => {
    const exits: number[] = [];
    const h = debugExitHandler((status) => exits.push(status));
    h.write(0, 1, 0);
    h.write(0, 1, 0x10);
    h.write(0, 4, 0x7fffffff);
    expect(exits).toEqual([1, 0x21, 0xffffffff]);
    expect(debugExitStatus(21)).toBe(43);
  });

  it("debugcon prints bytes and reads back 0xE9", () => {
    const out: number[] = [];
    const h = debugconHandler((b) => out.push(b));
    h.write(0, 1, 0x41);
    h.write(0, 2, 0x4342);
    expect(String.fromCharCode(...out)).toBe("ABC");
    expect(h.read(0, 1)).toBe(0xe9);
  });

  it("port 0x92 gates A20 and resets on bit 0", () => {
    const log: string[] = [];
    const p = new Port92((on) => log.push(`a20=${on}`), () => log.push("reset"));
    expect(p.handler.read(0, 1)).toBe(2);
    p.handler.write(0, 1, 0);
    p.handler.write(0, 1, 3);
    expect(log).toEqual(["a20=false", "a20=true", "reset"]);
  });
});
