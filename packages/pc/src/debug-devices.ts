import type { IoHandler } from "@typevisor/hv-core";

/** QEMU's `isa-debug-exit` port as commonly configured (`iobase=0xf4,iosize=4`). */
export const DEBUG_EXIT_PORT = 0xf4;
/** Bochs/QEMU debug console port (`-debugcon`). */
export const DEBUGCON_PORT = 0xe9;

/** The exit status QEMU's isa-debug-exit gives for a written `value`: `(value << 1) | 1`. */
export function debugExitStatus(value: number): number {
  return ((value << 1) | 1) >>> 0;
}

/**
 * QEMU's isa-debug-exit device: any write of `value` (1, 2 or 4 bytes) ends
 * the run with exit status `(value << 1) | 1`, so a bare-metal test can
 * report success or failure and an exit status of 0 (a normal shutdown)
 * stays distinguishable. Reads return 0.
 */
export function debugExitHandler(exit: (status: number, value: number) => void): IoHandler {
  return {
    read: () => 0,
    write: (_offset, _size, value) => exit(debugExitStatus(value), value >>> 0),
  };
}

/**
 * The debug console at port 0xE9 (Bochs "port e9 hack", QEMU `-debugcon`):
 * each byte written goes to `sink`; a read returns 0xE9 so software can
 * detect the port.
 */
export function debugconHandler(sink: (byte: number) => void): IoHandler {
  return {
    read: () => 0xe9,
    write: (_offset, size, value) => {
      for (let i = 0; i < size; i++) sink((value >>> (i * 8)) & 0xff);
    },
  };
}

/**
 * System control port A (port 0x92, "fast A20 and reset"): bit 1 is the A20
 * gate, writing bit 0 as 1 resets the CPU.
 */
export class Port92 {
  private value = 0x02;

  /**
   * @param a20 - called when the guest changes the A20 gate
   * @param reset - called on a fast reset
   */
  constructor(
    private readonly a20: (enabled: boolean) => void,
    private readonly reset: () => void,
  ) {}

  /** The port handler. */
  readonly handler: IoHandler = {
    read: () => this.value & 0x02,
    write: (_o, _s, v) => {
      const before = this.value;
      this.value = v & 0x02;
      if ((before ^ this.value) & 0x02) this.a20((this.value & 0x02) !== 0);
      if (v & 1) this.reset();
    },
  };

  /** Power-on value: A20 enabled. */
  powerOn(): void {
    this.value = 0x02;
  }

  /** Current register value (saved with the platform state). */
  get register(): number {
    return this.value;
  }

  /** Restores the register value without side effects. */
  set register(v: number) {
    this.value = v & 0x02;
  }
}
