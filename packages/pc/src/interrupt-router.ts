import type { InterruptRouter } from "@typevisor/hv-core";
import type { IoApic } from "./ioapic.js";
import type { Pic8259Pair } from "./pic-8259.js";

/**
 * The GSI an ISA IRQ arrives on at the I/O APIC. Identity, except that the
 * PIT's IRQ 0 is wired to pin 2 (the MADT's interrupt source override, as on
 * QEMU and most PCs).
 */
export function isaIrqToGsi(irq: number): number {
  return irq === 0 ? 2 : irq;
}

/** First GSI of PCI INTx routing (the DSDT `_PRT` uses GSIs 16..23). */
export const PCI_INTX_GSI_BASE = 16;

/**
 * GSI of PCI pin `pin` (1 = INTA#) of device `device` on the root bus: the
 * conventional swizzle `16 + ((device + pin - 1) mod 4)`, matching `_PRT`.
 */
export function pciIntxGsi(device: number, pin: number): number {
  return PCI_INTX_GSI_BASE + ((device + pin - 1) & 3);
}

/**
 * The PC's interrupt wiring: devices raise GSIs (`machine.irqs.line(gsi)`);
 * GSIs 1 and 3..15 go to both the 8259 pair (same IRQ number) and the I/O
 * APIC (same pin); GSI 2 carries ISA IRQ 0 (PIT) to PIC input 0 and I/O
 * APIC pin 2; GSIs 16..23 (PCI) reach only the I/O APIC. GSI 0 is unused.
 */
export class PcInterruptRouter implements InterruptRouter {
  /**
   * @param pic - the 8259 pair
   * @param ioapic - the I/O APIC
   */
  constructor(
    private readonly pic: Pic8259Pair,
    private readonly ioapic: IoApic,
  ) {}

  /** Routes a GSI level change (InterruptRouter). */
  setIrqLevel(gsi: number, level: boolean): void {
    if (gsi === 0) return;
    if (gsi < 16) this.pic.setIrq(gsi === 2 ? 0 : gsi, level);
    this.ioapic.setIrq(gsi, level);
  }
}
