// RDRAND and RDSEED (Intel SDM Vol. 2B, "RDRAND" and "RDSEED"; Vol. 1
// 7.3.17 "Random Number Generator Instructions"): the guest's source of
// entropy from the first instruction of its boot.
//
// Without them a Linux guest starts with an empty entropy pool and credits
// only one bit per 64 interrupts, so until then every get_random_bytes()
// re-extracts the pool (BLAKE2s) and a blocking getrandom() spins on timer
// jitter. With them, and the kernel's default trust in the CPU's generator,
// the pool is ready at random_init().
import * as C from "./constants.js";
import type { Cpu } from "./cpu.js";
import type { CpuExtension } from "./extensions.js";

/** Fills `out` with random 32-bit words (e.g. `crypto.getRandomValues`). */
export type RandomFill = (out: Uint32Array) => void;

/** CPUID.01H:ECX bit 30: RDRAND. */
export const CPUID_1_RDRAND = 1 << 30;
/** CPUID.(EAX=07H,ECX=0):EBX bit 18: RDSEED. */
export const CPUID_7_RDSEED = 1 << 18;

/** Words drawn from the source at once (the source is a system call on most hosts). */
const POOL_WORDS = 256;

/** The host's cryptographic generator (Web Crypto: in Node and in browsers). */
export const hostRandom: RandomFill = (out) => {
  globalThis.crypto.getRandomValues(out);
};

/**
 * The random number generator unit: RDRAND r16/r32 (0F C7 /6) and RDSEED
 * r16/r32 (0F C7 /7), register forms without a REP prefix (F3 0F C7 /7 is
 * RDPID, which this unit does not claim). Both always succeed: the host's
 * generator is cryptographic, so RDSEED's conditioned output is the same
 * draw as RDRAND's.
 */
export class RandomNumberUnit implements CpuExtension {
  readonly name = "rdrand";
  private readonly pool = new Uint32Array(POOL_WORDS);
  private next = POOL_WORDS;

  constructor(private readonly fill: RandomFill = hostRandom) {}

  op0F(cpu: Cpu, op: number): boolean {
    // The caller decoded the ModRM byte: only the register forms of /6 and /7 are ours.
    if (op !== 0xc7 || cpu.mod !== 3 || (cpu.reg !== 6 && cpu.reg !== 7) || cpu.rep !== 0 || cpu.lock) return false;
    const v = this.word();
    cpu.setReg(cpu.o32 ? 2 : 1, cpu.rm, v);
    // CF=1: a value is ready. OF, SF, ZF, AF and PF are cleared.
    cpu.setArith(C.CF, C.ARITH);
    return true;
  }

  cpuid(leaf: number, subleaf: number, out: Int32Array): void {
    if (leaf === 1) out[2] |= CPUID_1_RDRAND;
    else if (leaf === 7 && subleaf === 0) out[1] |= CPUID_7_RDSEED;
  }

  /** The next random word; draws a new pool when this one is used up. */
  private word(): number {
    if (this.next >= POOL_WORDS) {
      this.fill(this.pool);
      this.next = 0;
    }
    return this.pool[this.next++] | 0;
  }
}
