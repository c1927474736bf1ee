import { describe, expect, it } from "vitest";
import { AcpiPm, PM_TIMER_HZ, SLP_TYP_S5 } from "./acpi-pm.js";
import { rig } from "./test-util.js";

function make() {
  const r = rig();
  let off = 0;
  const pm = new AcpiPm(r.clock, { powerOff: () => off++, sci: r.irqs.line(9) });
  return { ...r, pm, off: () => off };
}

describe("ACPI PM1 block and PM timer", () => {
  it("powers off on SLP_EN with the S5 sleep type only", () => {
    const m = make();
    expect(m.pm.cntHandler.read(0, 2) & 1).toBe(1); // SCI_EN: ACPI mode, no SMI_CMD
    m.pm.cntHandler.write(0, 2, (1 << 10) | 0x2000); // S1: not supported, ignored
    expect(m.off()).toBe(0);
    m.pm.cntHandler.write(0, 2, SLP_TYP_S5 << 10); // type without SLP_EN
    expect(m.off()).toBe(0);
    expect(m.pm.cntHandler.read(0, 2)).toBe((SLP_TYP_S5 << 10) | 1);
    m.pm.cntHandler.write(0, 2, (SLP_TYP_S5 << 10) | 0x2000);
    expect(m.off()).toBe(1);
    expect(m.pm.cntHandler.read(0, 2) & 0x2000).toBe(0); // SLP_EN reads 0
  });

  it("counts at 3.579545 MHz in 24 bits", () => {
    const m = make();
    m.clock.advanceTo(1e9);
    expect(m.pm.timerHandler.read(0, 4)).toBe(PM_TIMER_HZ % 0x1000000);
    m.clock.advanceTo(10e9);
    expect(m.pm.timerHandler.read(0, 4)).toBe((10 * PM_TIMER_HZ) % 0x1000000);
  });

  it("sets TMR_STS on the bit-23 carry and raises the SCI when enabled; status is write-one-to-clear", () => {
    const m = make();
    m.pm.evtHandler.write(2, 2, 0x0001); // TMR_EN
    const carryNs = Math.ceil((0x800000 * 1e9) / PM_TIMER_HZ);
    m.advanceTo(carryNs - 2);
    expect(m.irqs.level(9)).toBe(false);
    m.advanceTo(carryNs + 1);
    expect(m.irqs.level(9)).toBe(true);
    expect(m.pm.evtHandler.read(0, 4)).toBe(0x00010001);
    m.pm.evtHandler.write(0, 2, 0x0001);
    expect(m.irqs.level(9)).toBe(false);
    expect(m.pm.evtHandler.read(0, 2)).toBe(0);
  });

  it("delivers a fixed power button press when enabled", () => {
    const m = make();
    m.pm.pressPowerButton();
    expect(m.irqs.level(9)).toBe(false);
    m.pm.evtHandler.write(2, 2, 0x0100);
    expect(m.irqs.level(9)).toBe(true);
    const saved = m.pm.saveState();
    const n = make();
    n.pm.loadState(saved);
    expect(n.irqs.level(9)).toBe(true);
  });
});
