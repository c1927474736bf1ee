import { StateError, type IoHandler, type IrqLine, type Snapshottable, type StateValue } from "@typevisor/hv-core";

const STATUS_OBF = 0x01;
const STATUS_SYS = 0x04;
const STATUS_CMD = 0x08;
const STATUS_UNLOCKED = 0x10;
const STATUS_AUX_OBF = 0x20;

const MODE_KBD_INT = 0x01;
const MODE_AUX_INT = 0x02;
const MODE_SYS = 0x04;

const OUT_RESET = 0x01; // active low: 0 holds the CPU in reset
const OUT_A20 = 0x02;

/** Bound on queued output bytes; a guest flooding commands cannot grow it. */
const OUTPUT_LIMIT = 16;

/** Callbacks from the keyboard controller to the rest of the machine. */
export interface I8042Wiring {
  /** The controller pulsed the CPU reset line (command 0xFE, or output port bit 0 cleared). */
  reset(): void;
  /** The A20 gate changed. */
  a20(enabled: boolean): void;
  /** ISA IRQ 1 (keyboard output buffer full). */
  irq1?: IrqLine;
  /** ISA IRQ 12 (auxiliary output buffer full). */
  irq12?: IrqLine;
}

/**
 * The 8042 keyboard controller at ports 0x60/0x64, as much as a PC without
 * a PS/2 keyboard needs: the reset line (pulse command 0xFE and output port
 * writes), the A20 gate (output port bit 1, and 0xDD/0xDF), the command
 * byte, self tests, and a keyboard that answers the common commands (reset,
 * identify, LEDs, scan code set, enable/disable) so probing firmware and
 * kernels see a sane device. No auxiliary (mouse) device is attached. The
 * FADT tells ACPI guests there is no 8042, so Linux does not drive it; it
 * still uses port 0x64 to reboot.
 */
export class I8042 implements Snapshottable {
  /** Snapshot id. */
  readonly stateId = "i8042";
  /** Snapshot format version. */
  readonly stateVersion = 1;
  private status = STATUS_CMD | STATUS_UNLOCKED;
  private mode = MODE_KBD_INT | MODE_AUX_INT;
  private outPort = OUT_RESET | OUT_A20;
  private pendingCommand = 0; // controller command waiting for its data byte
  private kbdCommand = 0; // keyboard command waiting for its argument
  private queue: number[] = []; // output bytes; bit 8 marks auxiliary data

  /** @param wiring - reset line, A20 gate and IRQ lines */
  constructor(private readonly wiring: I8042Wiring) {}

  /** Whether the A20 gate is open. */
  get a20(): boolean {
    return (this.outPort & OUT_A20) !== 0;
  }

  /** Port handler for the data port 0x60. */
  readonly dataHandler: IoHandler = {
    read: () => this.readData(),
    write: (_offset, _size, value) => this.writeData(value & 0xff),
  };

  /** Port handler for the status/command port 0x64. */
  readonly commandHandler: IoHandler = {
    read: () => this.status,
    write: (_offset, _size, value) => this.writeCommand(value & 0xff),
  };

  private push(byte: number, aux = false): void {
    if (this.queue.length >= OUTPUT_LIMIT) return;
    this.queue.push(byte | (aux ? 0x100 : 0));
    this.update();
  }

  private update(): void {
    this.status &= ~(STATUS_OBF | STATUS_AUX_OBF);
    let kbd = false;
    let aux = false;
    if (this.queue.length > 0) {
      this.status |= STATUS_OBF;
      if (this.queue[0] & 0x100) {
        this.status |= STATUS_AUX_OBF;
        aux = (this.mode & MODE_AUX_INT) !== 0;
      } else kbd = (this.mode & MODE_KBD_INT) !== 0;
    }
    this.wiring.irq1?.set(kbd);
    this.wiring.irq12?.set(aux);
  }

  private readData(): number {
    if (this.queue.length === 0) return 0;
    const v = this.queue.shift()! & 0xff;
    this.update();
    return v;
  }

  private setOutPort(v: number): void {
    const a20Changed = ((v ^ this.outPort) & OUT_A20) !== 0;
    this.outPort = v;
    if (a20Changed) this.wiring.a20((v & OUT_A20) !== 0);
    if (!(v & OUT_RESET)) {
      this.outPort |= OUT_RESET;
      this.wiring.reset();
    }
  }

  private writeCommand(cmd: number): void {
    this.status |= STATUS_CMD;
    this.pendingCommand = 0;
    switch (cmd) {
      case 0x20:
        this.push(this.mode);
        break;
      case 0x60:
      case 0xd1:
      case 0xd2:
      case 0xd3:
      case 0xd4:
        this.pendingCommand = cmd;
        break;
      case 0xa7:
        this.mode |= 0x20;
        break;
      case 0xa8:
        this.mode &= ~0x20;
        break;
      case 0xa9:
        this.push(0x00);
        break;
      case 0xaa:
        this.status |= STATUS_SYS;
        this.push(0x55);
        break;
      case 0xab:
        this.push(0x00);
        break;
      case 0xad:
        this.mode |= 0x10;
        break;
      case 0xae:
        this.mode &= ~0x10;
        break;
      case 0xc0:
        this.push(0x80); // input port: keyboard not inhibited
        break;
      case 0xd0:
        this.push(this.outPort | (this.queue.length > 0 ? 0x10 : 0));
        break;
      case 0xdd:
        this.setOutPort(this.outPort & ~OUT_A20);
        break;
      case 0xdf:
        this.setOutPort(this.outPort | OUT_A20);
        break;
      default:
        // 0xF0..0xFF pulse the output port bits whose command bit is 0; bit 0 is the CPU reset line.
        if (cmd >= 0xf0 && !(cmd & 1)) this.wiring.reset();
    }
  }

  private writeData(v: number): void {
    this.status &= ~STATUS_CMD;
    const cmd = this.pendingCommand;
    this.pendingCommand = 0;
    switch (cmd) {
      case 0x60:
        this.mode = v;
        if (v & MODE_SYS) this.status |= STATUS_SYS;
        else this.status &= ~STATUS_SYS;
        this.update();
        return;
      case 0xd1:
        this.setOutPort(v);
        return;
      case 0xd2:
        this.push(v);
        return;
      case 0xd3:
        this.push(v, true);
        return;
      case 0xd4:
        this.push(0xfe, true); // no auxiliary device: it never acknowledges
        return;
      default:
        this.keyboard(v);
    }
  }

  /** The keyboard's own command set (IBM PS/2 keyboard technical reference). */
  private keyboard(v: number): void {
    const pending = this.kbdCommand;
    if (pending) {
      this.kbdCommand = 0;
      if (pending === 0xf0 && v === 0) {
        this.push(0xfa);
        this.push(0x02); // scan code set 2
      } else this.push(0xfa);
      return;
    }
    switch (v) {
      case 0xff:
        this.push(0xfa);
        this.push(0xaa);
        break;
      case 0xf2:
        this.push(0xfa);
        this.push(0xab);
        this.push(0x83);
        break;
      case 0xed:
      case 0xf0:
      case 0xf3:
        this.kbdCommand = v;
        this.push(0xfa);
        break;
      case 0xee:
        this.push(0xee);
        break;
      case 0xf4:
      case 0xf5:
      case 0xf6:
        this.push(0xfa);
        break;
      default:
        this.push(0xfe);
    }
  }

  /** Power-on state. A20 is enabled, as QEMU and multiboot loaders expect. */
  reset(): void {
    this.status = STATUS_CMD | STATUS_UNLOCKED;
    this.mode = MODE_KBD_INT | MODE_AUX_INT;
    const a20Was = this.a20;
    this.outPort = OUT_RESET | OUT_A20;
    if (!a20Was) this.wiring.a20(true);
    this.pendingCommand = this.kbdCommand = 0;
    this.queue = [];
    this.update();
  }

  /** Saves the controller registers and output queue. */
  saveState(): StateValue {
    return { regs: [this.status, this.mode, this.outPort, this.pendingCommand, this.kbdCommand], queue: this.queue.slice() };
  }

  /** Restores the controller. */
  loadState(data: StateValue): void {
    const d = data as { regs?: unknown; queue?: unknown };
    const byteList = (x: unknown, n: number, max: number): x is number[] =>
      Array.isArray(x) && x.length <= n && x.every((b) => typeof b === "number" && Number.isInteger(b) && b >= 0 && b <= max);
    if (typeof d !== "object" || d === null || !byteList(d.regs, 5, 0xff) || d.regs.length !== 5 || !byteList(d.queue, OUTPUT_LIMIT, 0x1ff)) {
      throw new StateError("STATE_MALFORMED", "i8042: saved state is malformed");
    }
    const a20Was = this.a20;
    [this.status, this.mode, this.outPort, this.pendingCommand, this.kbdCommand] = d.regs;
    this.outPort |= OUT_RESET;
    this.queue = d.queue.slice();
    if (a20Was !== this.a20) this.wiring.a20(this.a20);
    this.update();
  }
}
