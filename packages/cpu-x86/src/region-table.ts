// The vCPU's table of compiled regions, and how they call out of
// WebAssembly. The run loop enters every region through one exported
// function, `enter(slot, eip, n, budget)`, which calls the region in that
// slot of the region table; so its call into WebAssembly always has the same
// target. Regions call out (the interpreter for one instruction, #GP, a
// segment check that is not flat, RCL/RCR) through a second table whose one
// entry is a WebAssembly function calling one JavaScript function: V8
// compiles a module that imports a function about 90 us slower than one
// that imports a table. That table is never written after it is made: V8
// updates every instance that imports a table on each write to it, which
// with thousands of regions made compiling them quadratic.
//
// A region stores its state and the instruction's place in the state block
// before it calls out (state-block.ts); the exit copies that to the CPU
// first, so an exception thrown from it finds what the interpreter would
// have left, and copies the interpreter's changes back before returning.
import type { Cpu } from "./cpu.js";
import { S_BLOCK_EIP, S_BLOCK_N, S_BLOCK_REC, S_EIP, S_FLAGS, S_SLICE, fromStateBlock, toStateBlock } from "./state-block.js";
import { FunctionWriter, I32, ModuleWriter, OP } from "./wasm-writer.js";

/** Exit: run one instruction in the interpreter (argument: the region's id); returns 1 when the region must stop. */
export const EXIT_STEP = 0;
/** Exit: raise #GP(0) (does not return). */
export const EXIT_RAISE_GP = 1;
/** Exit: Cpu.linSlow(seg, off, len, write). */
export const EXIT_LIN_SLOW = 2;
/** Exit: Cpu.shift(op, value, count, size) for RCL/RCR (the region stored only its flags). */
export const EXIT_SHIFT = 3;

/** The WebAssembly JS API as far as regions use it (TypeScript's ES libraries do not declare it). */
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
  Table: new (d: { element: "anyfunc"; initial: number }) => Table;
}
const wasmApi = (globalThis as { WebAssembly?: WasmApi }).WebAssembly;

/** Whether this platform can run compiled regions. */
export const WASM_REGIONS = wasmApi !== undefined;

/** Type of the exit: `(op, a, b, c, d) -> i32`. */
export const EXIT_TYPE = [I32, I32, I32, I32, I32];
/** Type of a region: `(eip, n, budget) -> i32`. */
export const REGION_TYPE = [I32, I32, I32];

/** The exit's module: `exit(op, a, b, c, d)` calls the JavaScript `call`. */
function exitModule(): Uint8Array {
  const mw = new ModuleWriter();
  const t = mw.type(EXIT_TYPE, [I32]);
  mw.importFunction("j", "call", t);
  const exit = new FunctionWriter(EXIT_TYPE);
  exit.emit([OP.localGet, 0, OP.localGet, 1, OP.localGet, 2, OP.localGet, 3, OP.localGet, 4, OP.call, 0]);
  mw.exportFunction("exit", mw.addFunction(t, exit));
  return mw.bytes();
}

/** The entry's module: `enter(slot, eip, n, budget)` calls the region in `slot` of the imported region table. */
function enterModule(): Uint8Array {
  const mw = new ModuleWriter();
  const tRegion = mw.type(REGION_TYPE, [I32]);
  mw.importTable("e", "t", 1);
  const enter = new FunctionWriter([I32, I32, I32, I32]);
  enter.emit([OP.localGet, 1, OP.localGet, 2, OP.localGet, 3, OP.localGet, 0, OP.callIndirect, tRegion, 0x00]);
  mw.exportFunction("enter", mw.addFunction(mw.type([I32, I32, I32, I32], [I32]), enter));
  return mw.bytes();
}

/** A WebAssembly table, as far as the region table uses one. */
interface Table {
  readonly length: number;
  grow(n: number): number;
  set(i: number, v: unknown): void;
}

/** One vCPU's region table. */
export class RegionTable {
  /** Runs the region in `slot` from EIP with `n` instructions retired in the slice (see BlockCompiler.slots). */
  readonly enter: (slot: number, eip: number, n: number, budget: number) => number;
  private readonly regions: Table;
  private readonly exits: Table;
  private readonly free: number[] = [];
  /** The block map of each live region's entry page, by the region's id (its entry block): the interpreter must still be on it for the region to go on. */
  readonly maps: (Uint16Array | undefined)[];

  constructor(
    private readonly cpu: Cpu,
    maxBlocks: number,
  ) {
    const api = wasmApi!;
    this.maps = new Array<Uint16Array | undefined>(maxBlocks + 1).fill(undefined);
    const call = (op: number, a: number, b: number, c: number, d: number): number => this.call(op, a, b, c, d);
    const exit = new api.Instance(new api.Module(exitModule()), { j: { call } }).exports.exit;
    this.exits = new api.Table({ element: "anyfunc", initial: 1 });
    this.exits.set(0, exit);
    this.regions = new api.Table({ element: "anyfunc", initial: 64 });
    this.enter = new api.Instance(new api.Module(enterModule()), { e: { t: this.regions } }).exports.enter as RegionTable["enter"];
    // Slot 0 stays empty: it means "no region".
    for (let i = this.regions.length - 1; i > 0; i--) this.free.push(i);
  }

  /** A free slot for a region (the table grows when none is left). */
  allocate(): number {
    if (this.free.length === 0) {
      const old = this.regions.grow(this.regions.length);
      for (let i = this.regions.length - 1; i >= old; i--) this.free.push(i);
    }
    return this.free.pop()!;
  }

  /** Empties `slot` (its region was dropped; the module can go). */
  release(slot: number): void {
    this.regions.set(slot, null);
    this.free.push(slot);
  }

  /** Instantiates a region's module on the vCPU's host memory and puts it in `slot`. */
  instantiate(bytes: Uint8Array, slot: number): void {
    const api = wasmApi!;
    const instance = new api.Instance(new api.Module(bytes), { e: { m: this.cpu.memory.host.memory, t: this.exits } });
    this.regions.set(slot, instance.exports.run);
  }

  private call(op: number, a: number, b: number, c: number, d: number): number {
    const cpu = this.cpu;
    // The state block of the memory the calling region runs on (if the host memory moves during the call, the region still reads this one).
    const S = cpu.state;
    if (op === EXIT_SHIFT) {
      flagsFromState(cpu, S);
      const r = cpu.shift(a, b, c, d);
      flagsToState(cpu, S);
      return r;
    }
    fromStateBlock(cpu, S);
    cpu.sliceCount = S[S_SLICE];
    cpu.blockEip = S[S_BLOCK_EIP];
    cpu.blockRec = S[S_BLOCK_REC];
    cpu.blockN = S[S_BLOCK_N];
    if (op === EXIT_LIN_SLOW) return cpu.linSlow(a, b, c, d !== 0);
    if (op === EXIT_RAISE_GP) {
      cpu.raiseGp(0);
      return 0;
    }
    cpu.eip = S[S_EIP];
    cpu.step();
    toStateBlock(cpu, S);
    S[S_EIP] = cpu.eip;
    return cpu.attention !== 0 || cpu.winLen < 0 || cpu.curMap !== this.maps[a] ? 1 : 0;
  }
}

function flagsFromState(cpu: Cpu, S: Int32Array): void {
  cpu.flags = S[S_FLAGS];
  cpu.lazy = S[S_FLAGS + 1];
  cpu.fOp = S[S_FLAGS + 2];
  cpu.fA = S[S_FLAGS + 3];
  cpu.fB = S[S_FLAGS + 4];
  cpu.fR = S[S_FLAGS + 5];
  cpu.fS = S[S_FLAGS + 6];
  cpu.fC = S[S_FLAGS + 7];
}

function flagsToState(cpu: Cpu, S: Int32Array): void {
  S[S_FLAGS] = cpu.flags;
  S[S_FLAGS + 1] = cpu.lazy;
  S[S_FLAGS + 2] = cpu.fOp;
  S[S_FLAGS + 3] = cpu.fA;
  S[S_FLAGS + 4] = cpu.fB;
  S[S_FLAGS + 5] = cpu.fR;
  S[S_FLAGS + 6] = cpu.fS;
  S[S_FLAGS + 7] = cpu.fC;
}
