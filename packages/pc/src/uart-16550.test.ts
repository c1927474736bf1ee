import { describe, expect, it } from "vitest";
import { MemorySerial } from "./serial-backend.js";
import { Uart16550 } from "./uart-16550.js";
import { rig } from "./test-util.js";

const RBR = 0, IER = 1, IIR = 2, FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7;

function make() {
  const r = rig();
  const serial = new MemorySerial();
  let kicks = 0;
  const uart = new Uart16550("uart@3f8", r.clock, r.irqs.line(4), serial, () => kicks++);
  const rd = (o: number): number => uart.handler.read(o, 1);
  const wr = (o: number, v: number): void => uart.handler.write(o, 1, v);
  const irq = (): boolean => r.irqs.level(4);
  return { ...r, serial, uart, rd, wr, irq, kicks: () => kicks };
}

/** Linux 8250 set-up for a 16550A at 115200 8N1 with FIFOs (trigger 8) and OUT2. */
function linuxSetup(m: ReturnType<typeof make>): void {
  m.wr(LCR, 0x83);
  m.wr(0, 0x01);
  m.wr(1, 0x00);
  m.wr(LCR, 0x03);
  m.wr(FCR, 0x87);
  m.wr(MCR, 0x0b);
}

describe("16550A UART", () => {
  it("transmits to the backend and keeps THR empty", async () => {
    const m = make();
    linuxSetup(m);
    for (const c of "hello\n") m.wr(0, c.charCodeAt(0));
    expect(m.rd(LSR) & 0x60).toBe(0x60);
    await Promise.resolve();
    expect(m.serial.text).toBe("hello\n");
  });

  it("has a divisor latch and scratch register", () => {
    const m = make();
    m.wr(LCR, 0x80);
    m.wr(0, 0x34);
    m.wr(1, 0x12);
    expect(m.rd(0)).toBe(0x34);
    expect(m.rd(1)).toBe(0x12);
    m.wr(LCR, 0x03);
    expect(m.rd(IER)).toBe(0);
    m.wr(SCR, 0x5a);
    expect(m.rd(SCR)).toBe(0x5a);
    // 8N1 at divisor 0x1234: 10 bits of 16 * 0x1234 crystal periods.
    expect(m.uart.charTimeNs).toBeCloseTo((10 * 16 * 0x1234 * 1e9) / 1843200, 3);
  });

  it("raises THRE when ETBEI is enabled, clears it on an IIR read or a THR write", () => {
    const m = make();
    linuxSetup(m);
    expect(m.irq()).toBe(false);
    m.wr(IER, 0x02);
    expect(m.irq()).toBe(true);
    expect(m.rd(IIR)).toBe(0xc2);
    expect(m.irq()).toBe(false);
    expect(m.rd(IIR)).toBe(0xc1);
    m.wr(0, 0x41); // the byte goes out, THR empties again: interrupt again
    expect(m.irq()).toBe(true);
    m.wr(IER, 0x00);
    expect(m.irq()).toBe(false);
  });

  it("gates the interrupt with MCR OUT2, as the PC wires it", () => {
    const m = make();
    linuxSetup(m);
    m.wr(MCR, 0x03);
    m.wr(IER, 0x02);
    expect(m.irq()).toBe(false);
    expect(m.rd(IIR) & 0x0f).toBe(0x02); // pending inside the UART
    m.wr(IER, 0x00);
    m.wr(MCR, 0x0b);
    m.wr(IER, 0x02);
    expect(m.irq()).toBe(true);
  });

  it("signals character timeout below the trigger level after four character times", () => {
    const m = make();
    linuxSetup(m);
    m.wr(IER, 0x01);
    m.serial.send("ls\n");
    expect(m.kicks()).toBe(1);
    expect(m.rd(LSR) & 1).toBe(1);
    expect(m.irq()).toBe(false); // 3 < trigger 8
    const four = 4 * m.uart.charTimeNs;
    m.advanceTo(four - 1);
    expect(m.irq()).toBe(false);
    m.advanceTo(four + 1);
    expect(m.irq()).toBe(true);
    expect(m.rd(IIR)).toBe(0xcc);
    expect(String.fromCharCode(m.rd(RBR), m.rd(RBR), m.rd(RBR))).toBe("ls\n");
    expect(m.irq()).toBe(false);
    expect(m.rd(LSR) & 1).toBe(0);
  });

  it("raises received-data-available at the trigger level and keeps host input in order past 16 bytes", () => {
    const m = make();
    linuxSetup(m);
    m.wr(FCR, 0xc1); // trigger 14
    m.wr(IER, 0x01);
    const text = "abcdefghijklmnopqrstuvwxyz0123456789";
    m.serial.send(text);
    expect(m.irq()).toBe(true);
    expect(m.rd(IIR)).toBe(0xc4);
    let got = "";
    while (m.rd(LSR) & 1) got += String.fromCharCode(m.rd(RBR));
    expect(got).toBe(text);
    expect(m.rd(LSR) & 0x02).toBe(0); // no overrun: host input waits for room
  });

  it("loops back TX to RX and MCR outputs to MSR inputs with delta bits", () => {
    const m = make();
    m.wr(MCR, 0x10);
    expect(m.rd(MSR)).toBe(0x00 | 0x0b); // CTS/DSR/DCD dropped: deltas
    expect(m.rd(MSR)).toBe(0x00);
    m.wr(MCR, 0x1f);
    expect(m.rd(MSR)).toBe(0xfb);
    m.wr(MCR, 0x1b); // OUT1 (RI) falls: trailing edge
    expect(m.rd(MSR) & 0x44).toBe(0x04);
    m.wr(0, 0x55);
    expect(m.rd(LSR) & 1).toBe(1);
    m.wr(0, 0x66); // no FIFO: the holding register is full, overrun
    expect(m.rd(LSR) & 0x02).toBe(0x02);
    expect(m.rd(LSR) & 0x02).toBe(0); // reading LSR clears OE
    expect(m.rd(RBR)).toBe(0x55);
    expect(m.serial.output.length).toBe(0);
    expect(m.irq()).toBe(false); // loopback keeps the interrupt inside
  });

  it("reports line status errors first when enabled", () => {
    const m = make();
    m.wr(MCR, 0x18);
    m.wr(IER, 0x05);
    m.wr(0, 1);
    m.wr(0, 2);
    expect(m.rd(IIR)).toBe(0x06);
    m.rd(LSR);
    expect(m.rd(IIR)).toBe(0x04);
  });

  it("survives a snapshot with FIFO contents and queued input", () => {
    const m = make();
    linuxSetup(m);
    m.serial.send("x".repeat(20));
    const saved = m.uart.saveState();
    const n = make();
    n.uart.loadState(saved);
    let got = "";
    while (n.rd(LSR) & 1) got += String.fromCharCode(n.rd(RBR));
    expect(got).toBe("x".repeat(20));
    expect(() => n.uart.loadState({ regs: [1] })).toThrow(/malformed/);
  });
});
