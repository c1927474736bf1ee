// How compiled regions (region-codegen.ts) call out of WebAssembly: into the
// interpreter for one instruction, to raise #GP, for a segment check that is
// not flat, or for RCL/RCR. Each vCPU has one JavaScript function for all of
// them behind a WebAssembly table, which every region imports: V8 compiles a
// module that imports a function about 90 µs slower than one that imports
// a table, and compiled regions are many and small.
//
// A region stores its state and the instruction's place in the state block
// before it calls out (state-block.ts); the exits copy that to the CPU
// first, so an exception thrown from them finds what the interpreter would
// have left, and copy the interpreter's changes back before returning.
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
  Table: new (d: { element: "anyfunc"; initial: number }) => { set(i: number, f: unknown): void };
}
const wasmApi = (globalThis as { WebAssembly?: WasmApi }).WebAssembly;

/** Whether this platform can run compiled regions. */
export const WASM_REGIONS = wasmApi !== undefined;

/** A compiled region's function: `(eip, n, budget) -> count` (see jit.ts RegionFn). */
export type RegionExport = (eip: number, n: number, budget: number) => number;

/** The module that puts a JavaScript function `call(op, a, b, c, d)` into a table as a WebAssembly function. */
function trampolineModule(): Uint8Array {
  const mw = new ModuleWriter();
  const t = mw.type([I32, I32, I32, I32, I32], [I32]);
  mw.importFunction("j", "call", t);
  const f = new FunctionWriter([I32, I32, I32, I32, I32]);
  f.emit([OP.localGet, 0, OP.localGet, 1, OP.localGet, 2, OP.localGet, 3, OP.localGet, 4, OP.call, 0]);
  mw.exportFunction("exit", mw.addFunction(t, f));
  return mw.bytes();
}

/** One vCPU's exits, and the instantiation of its regions. */
export class RegionExits {
  private readonly table: { set(i: number, f: unknown): void };
  /** The block map of each live region's entry page, by the region's id (its entry block): the interpreter must still be on it for the region to go on. */
  readonly maps: (Uint16Array | undefined)[];

  constructor(
    private readonly cpu: Cpu,
    maxBlocks: number,
  ) {
    const api = wasmApi!;
    this.maps = new Array<Uint16Array | undefined>(maxBlocks + 1).fill(undefined);
    const call = (op: number, a: number, b: number, c: number, d: number): number => this.call(op, a, b, c, d);
    const tramp = new api.Instance(new api.Module(trampolineModule()), { j: { call } });
    this.table = new api.Table({ element: "anyfunc", initial: 1 });
    this.table.set(0, tramp.exports.exit);
  }

  /** Instantiates a region's module on the vCPU's host memory. */
  instantiate(bytes: Uint8Array): RegionExport {
    const api = wasmApi!;
    return new api.Instance(new api.Module(bytes), { e: { m: this.cpu.memory.host.memory, t: this.table } }).exports.run as RegionExport;
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
