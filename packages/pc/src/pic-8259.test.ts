import { describe, expect, it } from "vitest";
import { Pic8259Pair } from "./pic-8259.js";

/** Linux's init_8259A sequence: vectors 0x20/0x28, slave on IR2, 8086 mode. */
function linuxInit(pic: Pic8259Pair): { m: ReturnType<Pic8259Pair["portHandler"]>; s: ReturnType<Pic8259Pair["portHandler"]> } {
  const m = pic.portHandler("master");
  const s = pic.portHandler("slave");
  m.write(0, 1, 0x11);
  m.write(1, 1, 0x20);
  m.write(1, 1, 0x04);
  m.write(1, 1, 0x01);
  s.write(0, 1, 0x11);
  s.write(1, 1, 0x28);
  s.write(1, 1, 0x02);
  s.write(1, 1, 0x01);
  m.write(1, 1, 0x00);
  s.write(1, 1, 0x00);
  return { m, s };
}

describe("8259A pair", () => {
  it("delivers an edge request with the ICW2 vector, then holds it in service until EOI", () => {
    const pic = new Pic8259Pair();
    const { m } = linuxInit(pic);
    expect(pic.hasInterrupt()).toBe(false);
    pic.setIrq(1, true);
    expect(pic.hasInterrupt()).toBe(true);
    expect(m.read(0, 1)).toBe(0x02); // IRR (default read register)
    expect(pic.acknowledge()).toBe(0x21);
    expect(pic.registers().isr).toBe(0x02);
    expect(pic.registers().irr).toBe(0);
    m.write(0, 1, 0x0b); // OCW3: read ISR
    expect(m.read(0, 1)).toBe(0x02);
    pic.setIrq(1, false);
    pic.setIrq(1, true); // a new edge while in service: latched, but blocked by ISR
    expect(pic.hasInterrupt()).toBe(false);
    m.write(0, 1, 0x20); // non-specific EOI
    expect(pic.registers().isr).toBe(0);
    expect(pic.acknowledge()).toBe(0x21);
  });

  it("resolves fixed priority and lets a higher level nest (fully nested mode)", () => {
    const pic = new Pic8259Pair();
    const { m } = linuxInit(pic);
    pic.setIrq(5, true);
    pic.setIrq(3, true);
    expect(pic.acknowledge()).toBe(0x23);
    expect(pic.hasInterrupt()).toBe(false); // 5 is lower than 3 in service
    pic.setIrq(1, true);
    expect(pic.acknowledge()).toBe(0x21); // 1 nests
    m.write(0, 1, 0x20); // EOI clears the highest in service: 1
    expect(pic.registers().isr).toBe(0x08);
    m.write(0, 1, 0x63); // specific EOI for 3
    expect(pic.acknowledge()).toBe(0x25);
  });

  it("cascades the slave through IR2 and reports spurious IRQ 15 when a level request vanishes", () => {
    const pic = new Pic8259Pair();
    const { m, s } = linuxInit(pic);
    pic.setIrq(10, true);
    expect(pic.hasInterrupt()).toBe(true);
    expect(pic.acknowledge()).toBe(0x2a);
    expect(pic.registers().isr).toBe(0x0404);
    s.write(0, 1, 0x20);
    m.write(0, 1, 0x20);
    expect(pic.registers().isr).toBe(0);
    // IRQ 11 level-triggered through the ELCR, then withdrawn before INTA.
    pic.elcrHandler.write(1, 1, 0x08);
    pic.setIrq(11, true);
    expect(pic.hasInterrupt()).toBe(true);
    pic.setIrq(11, false);
    expect(pic.acknowledge()).toBe(0x2f);
    expect(pic.registers().isr).toBe(0x0004); // master acknowledged the cascade; slave ISR untouched
  });

  it("masks with OCW1 and delivers a latched edge once unmasked", () => {
    const pic = new Pic8259Pair();
    const { m } = linuxInit(pic);
    m.write(1, 1, 0x01);
    pic.setIrq(0, true);
    pic.setIrq(0, false);
    expect(pic.hasInterrupt()).toBe(false);
    expect(m.read(1, 1)).toBe(0x01);
    m.write(1, 1, 0x00);
    expect(pic.acknowledge()).toBe(0x20);
  });

  it("returns the IRQ 7 vector for an INTA with nothing pending, without setting ISR", () => {
    const pic = new Pic8259Pair();
    linuxInit(pic);
    expect(pic.acknowledge()).toBe(0x27);
    expect(pic.registers().isr).toBe(0);
  });

  it("supports automatic EOI (ICW4 bit 1)", () => {
    const pic = new Pic8259Pair();
    const m = pic.portHandler("master");
    m.write(0, 1, 0x13); // single, ICW4 needed
    m.write(1, 1, 0x08);
    m.write(1, 1, 0x03); // 8086, AEOI
    pic.setIrq(4, true);
    expect(pic.acknowledge()).toBe(0x0c);
    expect(pic.registers().isr).toBe(0);
  });

  it("rotates priority on EOI and on the set-priority command", () => {
    const pic = new Pic8259Pair();
    const { m } = linuxInit(pic);
    pic.setIrq(3, true);
    expect(pic.acknowledge()).toBe(0x23);
    m.write(0, 1, 0xa0); // rotate on non-specific EOI: 3 becomes lowest
    pic.setIrq(3, false);
    pic.setIrq(3, true);
    pic.setIrq(6, true);
    expect(pic.acknowledge()).toBe(0x26);
    m.write(0, 1, 0x20);
    // 3 is still pending. Set priority with 2 lowest: order 3,4,...,2, so 3 goes before a new 6.
    m.write(0, 1, 0xc2);
    pic.setIrq(6, false);
    pic.setIrq(6, true);
    expect(pic.acknowledge()).toBe(0x23);
    m.write(0, 1, 0x20);
    // Now 5 lowest: order 6,7,0,...,5, so 6 goes before a new 3.
    m.write(0, 1, 0xc5);
    pic.setIrq(3, false);
    pic.setIrq(3, true);
    expect(pic.acknowledge()).toBe(0x26);
  });

  it("special mask mode lets lower levels through while a masked level is in service", () => {
    const pic = new Pic8259Pair();
    const { m } = linuxInit(pic);
    pic.setIrq(3, true);
    expect(pic.acknowledge()).toBe(0x23);
    pic.setIrq(5, true);
    expect(pic.hasInterrupt()).toBe(false);
    m.write(1, 1, 0x08); // mask 3
    m.write(0, 1, 0x68); // OCW3: set special mask mode
    expect(pic.acknowledge()).toBe(0x25);
    m.write(0, 1, 0x48); // reset special mask mode
  });

  it("poll command returns 0x80 | level and acknowledges", () => {
    const pic = new Pic8259Pair();
    const { m } = linuxInit(pic);
    pic.setIrq(6, true);
    m.write(0, 1, 0x0c);
    expect(m.read(0, 1)).toBe(0x86);
    expect(pic.registers().isr).toBe(0x40);
    m.write(0, 1, 0x0c);
    expect(m.read(0, 1)).toBe(0);
  });

  it("keeps the ELCR's reserved bits zero and survives a snapshot", () => {
    const pic = new Pic8259Pair();
    linuxInit(pic);
    pic.elcrHandler.write(0, 1, 0xff);
    pic.elcrHandler.write(1, 1, 0xff);
    expect(pic.elcrHandler.read(0, 1)).toBe(0xf8);
    expect(pic.elcrHandler.read(1, 1)).toBe(0xde);
    pic.setIrq(9, true);
    const saved = pic.saveState();
    const copy = new Pic8259Pair();
    copy.loadState(saved);
    expect(copy.registers()).toEqual(pic.registers());
    expect(copy.acknowledge()).toBe(0x29);
    expect(() => copy.loadState({ master: [1, 2], slave: [] })).toThrow(/malformed/);
  });
});
