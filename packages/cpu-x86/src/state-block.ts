// The vCPU's state block: a few int32 slots in the host memory (a table
// after the guest RAM arena, mmu-ept HostMemory.allocTable), where compiled
// regions find the guest state. The segment caches live there for good
// (Cpu.segBase and Cpu.segFast are views of it, CS base and limit and SS.B
// are mirrored on every load); the registers and the lazy flags are copied
// in when the run loop enters compiled code and back when it leaves
// (toStateBlock, fromStateBlock).

/** The eight general registers (int32 each). */
export const S_REGS = 0;
/** The lazy-flag state: flags, lazy, fOp, fA, fB, fR, fS, fC. */
export const S_FLAGS = 8;
/** EIP after a region ran, or of the instruction a region hands to the interpreter. */
export const S_EIP = 16;
/** Where an exception finds the instruction (Cpu.sliceCount, blockEip, blockRec, blockN). */
export const S_SLICE = 17;
/** Cpu.blockEip. */
export const S_BLOCK_EIP = 18;
/** Cpu.blockRec. */
export const S_BLOCK_REC = 19;
/** Cpu.blockN. */
export const S_BLOCK_N = 20;
/** CS base. */
export const S_CS_BASE = 21;
/** CS limit (int32 bits, compared unsigned). */
export const S_CS_LIMIT = 22;
/** SS.B: 1 for a 32-bit stack. */
export const S_STACK32 = 23;
/** Segment bases ES CS SS DS FS GS (6 slots: Cpu.segBase). */
export const S_SEG_BASE = 24;
/** Segment fast flags, one byte each (Cpu.segFast), in slots 30 and 31. */
export const S_SEG_FAST = 30;
/** Slots in the state block. */
export const S_SLOTS = 32;

/** What {@link toStateBlock} and {@link fromStateBlock} copy. */
export interface StateBlockCpu {
  regs: Int32Array;
  flags: number;
  lazy: number;
  fOp: number;
  fA: number;
  fB: number;
  fR: number;
  fS: number;
  fC: number;
}

/** Copies the registers and the lazy flags into the state block `s`. */
export function toStateBlock(cpu: StateBlockCpu, s: Int32Array): void {
  const r = cpu.regs;
  s[0] = r[0];
  s[1] = r[1];
  s[2] = r[2];
  s[3] = r[3];
  s[4] = r[4];
  s[5] = r[5];
  s[6] = r[6];
  s[7] = r[7];
  s[8] = cpu.flags;
  s[9] = cpu.lazy;
  s[10] = cpu.fOp;
  s[11] = cpu.fA;
  s[12] = cpu.fB;
  s[13] = cpu.fR;
  s[14] = cpu.fS;
  s[15] = cpu.fC;
}

/** Copies the registers and the lazy flags back from the state block `s`. */
export function fromStateBlock(cpu: StateBlockCpu, s: Int32Array): void {
  const r = cpu.regs;
  r[0] = s[0];
  r[1] = s[1];
  r[2] = s[2];
  r[3] = s[3];
  r[4] = s[4];
  r[5] = s[5];
  r[6] = s[6];
  r[7] = s[7];
  cpu.flags = s[8];
  cpu.lazy = s[9];
  cpu.fOp = s[10];
  cpu.fA = s[11];
  cpu.fB = s[12];
  cpu.fR = s[13];
  cpu.fS = s[14];
  cpu.fC = s[15];
}
