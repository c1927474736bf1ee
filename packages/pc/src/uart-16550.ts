import { StateError, type IoHandler, type IrqLine, type Snapshottable, type StateValue, type Timer, type VirtualClock } from "@typevisor/hv-core";
import type { SerialBackend } from "./serial-backend.js";

/** A PC serial port's resources. */
export interface ComPort {
  /** First I/O port. */
  readonly base: number;
  /** ISA IRQ. */
  readonly irq: number;
}

/** Standard PC serial ports: base and ISA IRQ. */
export const COM_PORTS: readonly ComPort[] = [
  { base: 0x3f8, irq: 4 },
  { base: 0x2f8, irq: 3 },
  { base: 0x3e8, irq: 4 },
  { base: 0x2e8, irq: 3 },
];

/** The UART's crystal: 1.8432 MHz, divided by 16 × divisor per bit (16550A datasheet, "Baud rate generator"). */
const XTAL_HZ = 1_843_200;
const RX_FIFO = 16;
/** Host input queued beyond the RX FIFO; input past this is dropped (the guest is not reading). */
export const UART_HOST_QUEUE_LIMIT = 1 << 20;

const LSR_DR = 0x01;
const LSR_OE = 0x02;
const LSR_BI = 0x10;
const LSR_THRE = 0x20;
const LSR_TEMT = 0x40;
const LSR_ERRORS = 0x1e;

const MCR_OUT2 = 0x08;
const MCR_LOOP = 0x10;

const TRIGGER = [1, 4, 8, 14];

/**
 * A National Semiconductor PC16550D UART (16550A): 16-byte receive FIFO with
 * trigger levels, the character-timeout interrupt, THR-empty interrupts with
 * their read-IIR-to-clear rule, line status errors, modem status with delta
 * bits, loopback mode, the divisor latch, and scratch register. As on the
 * PC, the interrupt reaches the IRQ line only while MCR.OUT2 is set (and not
 * in loopback, where OUT2 is internal).
 *
 * Transmission is immediate: bytes go to the backend (coalesced and flushed
 * after the current burst), and THR is empty again at once. Host input waits
 * in a queue and moves into the RX FIFO as the guest makes room, so nothing
 * typed is lost to overruns. Timing (character timeout) follows the
 * programmed baud rate on the virtual clock.
 */
export class Uart16550 implements Snapshottable {
  /** Snapshot format version. */
  readonly stateVersion = 1;
  private rbr = new Uint8Array(RX_FIFO);
  private rxHead = 0;
  private rxCount = 0;
  private host: number[] = [];
  private hostHead = 0;
  private ier = 0;
  private lcr = 0x03;
  private mcr = 0;
  private lsr = LSR_THRE | LSR_TEMT;
  private msr = 0;
  private scr = 0;
  private dll = 0x0c; // 9600 baud, the BIOS default
  private dlm = 0;
  private fifoEnabled = false;
  private trigger = 1;
  private thrPending = false; // THR-empty interrupt latched
  private ctiPending = false; // character timeout latched
  private readonly ctiTimer: Timer;
  private outBuf = new Uint8Array(4096);
  private outLen = 0;
  private flushQueued = false;
  private lastIrq = false;

  /**
   * @param stateId - snapshot id, e.g. `"uart@3f8"`
   * @param clock - the virtual clock (character timing)
   * @param irq - the ISA IRQ line
   * @param backend - host side; none means output is discarded and no input arrives
   * @param kick - wakes the machine when host input arrives while every vCPU is halted
   */
  constructor(
    readonly stateId: string,
    private readonly clock: VirtualClock,
    private readonly irq: IrqLine | undefined,
    private readonly backend: SerialBackend | undefined,
    private readonly kick: () => void = () => {},
  ) {
    this.ctiTimer = clock.createTimer(() => this.onCharTimeout(), `${stateId} timeout`);
    this.updateMsrInputs();
    this.msr &= 0xf0;
    backend?.attach?.((data) => this.receive(data));
  }

  /** Port handler for the 8 registers at the UART's base. */
  readonly handler: IoHandler = {
    read: (offset) => this.read(offset & 7),
    write: (offset, _size, value) => this.write(offset & 7, value & 0xff),
  };

  /** Time of one character (start + data + parity + stop bits) at the programmed divisor, in ns. */
  get charTimeNs(): number {
    const divisor = (this.dlm << 8) | this.dll || 0x10000;
    const bits = 1 + 5 + (this.lcr & 3) + (this.lcr & 8 ? 1 : 0) + (this.lcr & 4 ? ((this.lcr & 3) === 0 ? 1.5 : 2) : 1);
    return (bits * 16 * divisor * 1e9) / XTAL_HZ;
  }

  /** Host input: queued and fed to the RX FIFO as it has room. */
  receive(data: Uint8Array): void {
    const room = UART_HOST_QUEUE_LIMIT - (this.host.length - this.hostHead);
    const n = Math.min(room, data.length);
    for (let i = 0; i < n; i++) this.host.push(data[i]);
    if (this.mcr & MCR_LOOP) return; // in loopback the receiver is disconnected from the line
    this.fillFromHost();
    this.kick();
  }

  /** Sends the coalesced output to the backend now. */
  flush(): void {
    this.flushQueued = false;
    if (this.outLen === 0) return;
    const out = this.outBuf.slice(0, this.outLen);
    this.outLen = 0;
    this.backend?.write(out);
  }

  /** Disconnects the backend (teardown); pending output is flushed first. */
  close(): void {
    this.flush();
    this.ctiTimer.cancel();
    this.backend?.detach?.();
  }

  private transmit(byte: number): void {
    if (this.mcr & MCR_LOOP) {
      this.pushRx(byte);
      return;
    }
    if (!this.backend) return;
    this.outBuf[this.outLen++] = byte;
    if (this.outLen === this.outBuf.length) this.flush();
    else if (!this.flushQueued) {
      this.flushQueued = true;
      queueMicrotask(() => this.flush());
    }
  }

  private get capacity(): number {
    return this.fifoEnabled ? RX_FIFO : 1;
  }

  private pushRx(byte: number): void {
    if (this.rxCount >= this.capacity) {
      this.lsr |= LSR_OE; // overrun: the byte in the shift register is lost
      this.updateIrq();
      return;
    }
    this.rbr[(this.rxHead + this.rxCount) % RX_FIFO] = byte;
    this.rxCount++;
    this.lsr |= LSR_DR;
    this.restartTimeout();
    this.updateIrq();
  }

  private fillFromHost(): void {
    let moved = false;
    while (this.rxCount < this.capacity && this.hostHead < this.host.length) {
      this.rbr[(this.rxHead + this.rxCount) % RX_FIFO] = this.host[this.hostHead++];
      this.rxCount++;
      moved = true;
    }
    if (this.hostHead > 4096 && this.hostHead * 2 > this.host.length) {
      this.host = this.host.slice(this.hostHead);
      this.hostHead = 0;
    }
    if (moved) {
      this.lsr |= LSR_DR;
      this.restartTimeout();
      this.updateIrq();
    }
  }

  private restartTimeout(): void {
    this.ctiPending = false;
    if (this.fifoEnabled && this.rxCount > 0) this.ctiTimer.armAfter(4 * this.charTimeNs);
    else this.ctiTimer.cancel();
  }

  private onCharTimeout(): void {
    if (this.fifoEnabled && this.rxCount > 0) {
      this.ctiPending = true;
      this.updateIrq();
    }
  }

  /** IIR value for the highest-priority pending interrupt (16550 datasheet Table 4). */
  private iir(): number {
    const fifo = this.fifoEnabled ? 0xc0 : 0;
    const ier = this.ier;
    if (ier & 0x04 && this.lsr & LSR_ERRORS) return fifo | 0x06;
    if (ier & 0x01) {
      if (this.rxCount > 0 && (!this.fifoEnabled || this.rxCount >= this.trigger)) return fifo | 0x04;
      if (this.ctiPending) return fifo | 0x0c;
    }
    if (ier & 0x02 && this.thrPending) return fifo | 0x02;
    if (ier & 0x08 && this.msr & 0x0f) return fifo | 0x00;
    return fifo | 0x01;
  }

  private updateIrq(): void {
    const pending = (this.iir() & 1) === 0;
    const level = pending && (this.mcr & MCR_OUT2) !== 0 && (this.mcr & MCR_LOOP) === 0;
    if (level !== this.lastIrq) {
      this.lastIrq = level;
      this.irq?.set(level);
    }
  }

  private updateMsrInputs(): void {
    let inputs: number;
    if (this.mcr & MCR_LOOP) {
      const m = this.mcr;
      inputs = (m & 2 ? 0x10 : 0) | (m & 1 ? 0x20 : 0) | (m & 4 ? 0x40 : 0) | (m & 8 ? 0x80 : 0);
    } else inputs = 0xb0; // a connected host: CTS, DSR, DCD asserted
    const old = this.msr;
    const changed = (old ^ inputs) & 0xf0;
    let delta = old & 0x0f;
    if (changed & 0x10) delta |= 0x01;
    if (changed & 0x20) delta |= 0x02;
    if (old & 0x40 && !(inputs & 0x40)) delta |= 0x04; // trailing edge of RI
    if (changed & 0x80) delta |= 0x08;
    this.msr = inputs | delta;
  }

  private read(offset: number): number {
    switch (offset) {
      case 0: {
        if (this.lcr & 0x80) return this.dll;
        if (this.rxCount === 0) return this.rbr[this.rxHead]; // stale byte, as the chip would return
        const v = this.rbr[this.rxHead];
        this.rxHead = (this.rxHead + 1) % RX_FIFO;
        this.rxCount--;
        this.ctiPending = false;
        if (this.rxCount === 0) this.lsr &= ~LSR_DR;
        if (!(this.mcr & MCR_LOOP)) this.fillFromHost();
        this.restartTimeout();
        this.updateIrq();
        return v;
      }
      case 1:
        return this.lcr & 0x80 ? this.dlm : this.ier;
      case 2: {
        const v = this.iir();
        if ((v & 0x0f) === 0x02) {
          this.thrPending = false; // reading IIR with THRE as the source clears it
          this.updateIrq();
        }
        return v;
      }
      case 3:
        return this.lcr;
      case 4:
        return this.mcr;
      case 5: {
        const v = this.lsr | (this.fifoEnabled && this.lsr & LSR_ERRORS ? 0x80 : 0);
        this.lsr &= ~(LSR_ERRORS | 0x80);
        this.updateIrq();
        return v;
      }
      case 6: {
        const v = this.msr;
        this.msr &= 0xf0;
        this.updateIrq();
        return v;
      }
      default:
        return this.scr;
    }
  }

  private write(offset: number, v: number): void {
    switch (offset) {
      case 0:
        if (this.lcr & 0x80) {
          this.dll = v;
          return;
        }
        this.thrPending = false;
        this.transmit(v);
        // The byte leaves at once: THR (and the shift register) are empty again.
        this.lsr |= LSR_THRE | LSR_TEMT;
        this.thrPending = true;
        this.updateIrq();
        return;
      case 1:
        if (this.lcr & 0x80) {
          this.dlm = v;
          return;
        }
        if (v & 0x02 && !(this.ier & 0x02) && this.lsr & LSR_THRE) this.thrPending = true; // enabling ETBEI with THR empty interrupts at once
        this.ier = v & 0x0f;
        this.updateIrq();
        return;
      case 2: {
        const enable = (v & 1) !== 0;
        if (enable !== this.fifoEnabled) {
          // Changing the FIFO enable bit clears both FIFOs.
          this.rxHead = 0;
          this.rxCount = 0;
          this.lsr &= ~LSR_DR;
        }
        this.fifoEnabled = enable;
        if (enable && v & 0x02) {
          this.rxHead = 0;
          this.rxCount = 0;
          this.lsr &= ~LSR_DR;
        }
        this.trigger = TRIGGER[v >> 6];
        if (!(this.mcr & MCR_LOOP)) this.fillFromHost();
        this.restartTimeout();
        this.updateIrq();
        return;
      }
      case 3:
        this.lcr = v;
        if (v & 0x40 && this.mcr & MCR_LOOP) {
          // Break in loopback: the receiver sees a break condition.
          this.lsr |= LSR_BI;
          this.pushRx(0);
        }
        return;
      case 4: {
        const wasLoop = (this.mcr & MCR_LOOP) !== 0;
        this.mcr = v & 0x1f;
        this.updateMsrInputs();
        if (wasLoop && !(this.mcr & MCR_LOOP)) this.fillFromHost();
        this.updateIrq();
        return;
      }
      case 5:
      case 6:
        return; // LSR and MSR are read-only (factory test writes ignored)
      default:
        this.scr = v;
    }
  }

  /** Machine reset (MR pin): registers to their reset values, FIFOs empty; queued host input stays. */
  reset(): void {
    this.rxHead = this.rxCount = 0;
    this.ier = 0;
    this.lcr = 0x03;
    this.mcr = 0;
    this.lsr = LSR_THRE | LSR_TEMT;
    this.msr = 0;
    this.updateMsrInputs();
    this.msr &= 0xf0;
    this.fifoEnabled = false;
    this.trigger = 1;
    this.thrPending = this.ctiPending = false;
    this.ctiTimer.cancel();
    this.lastIrq = false;
    this.irq?.lower();
  }

  /** Saves registers, FIFO contents and queued host input. */
  saveState(): StateValue {
    const rx = new Uint8Array(this.rxCount);
    for (let i = 0; i < this.rxCount; i++) rx[i] = this.rbr[(this.rxHead + i) % RX_FIFO];
    return {
      regs: [this.ier, this.lcr, this.mcr, this.lsr, this.msr, this.scr, this.dll, this.dlm, +this.fifoEnabled, this.trigger, +this.thrPending, +this.ctiPending],
      rx,
      host: Uint8Array.from(this.host.slice(this.hostHead)),
    };
  }

  /** Restores what {@link Uart16550.saveState} produced. */
  loadState(data: StateValue): void {
    const d = data as { regs?: unknown; rx?: unknown; host?: unknown };
    const ok =
      typeof d === "object" && d !== null && Array.isArray(d.regs) && d.regs.length === 12 && d.regs.every((x) => typeof x === "number" && Number.isInteger(x) && x >= 0 && x <= 0xff) &&
      d.rx instanceof Uint8Array && d.rx.length <= RX_FIFO && d.host instanceof Uint8Array && d.host.length <= UART_HOST_QUEUE_LIMIT;
    if (!ok) throw new StateError("STATE_MALFORMED", `${this.stateId}: saved state is malformed`);
    const r = d.regs as number[];
    [this.ier, this.lcr, this.mcr, this.lsr, this.msr, this.scr, this.dll, this.dlm] = r;
    this.ier &= 0x0f;
    this.mcr &= 0x1f;
    this.fifoEnabled = r[8] !== 0;
    this.trigger = TRIGGER.includes(r[9]) ? r[9] : 1;
    this.thrPending = r[10] !== 0;
    this.ctiPending = r[11] !== 0;
    this.rbr.fill(0);
    this.rbr.set(d.rx as Uint8Array);
    this.rxHead = 0;
    this.rxCount = Math.min((d.rx as Uint8Array).length, this.capacity);
    this.host = Array.from(d.host as Uint8Array);
    this.hostHead = 0;
    if (this.rxCount > 0) this.lsr |= LSR_DR;
    else this.lsr &= ~LSR_DR;
    const pendingCti = this.ctiPending;
    this.restartTimeout();
    this.ctiPending = pendingCti;
    this.lastIrq = false;
    this.irq?.lower();
    this.updateIrq();
  }
}
