/**
 * A virtual CPU as the machine's run loop sees it. The CPU package
 * implements it; the machine only runs slices and watches for idleness.
 */
export interface Vcpu {
  /** Index of this vCPU in the machine (0 is the bootstrap processor). */
  readonly index: number;
  /**
   * Executes at most `budget` instructions, returning early on HLT, a
   * requested exit, or a machine stop/reset request.
   * @returns the number of instructions retired
   */
  runSlice(budget: number): number;
  /** True while the vCPU waits for an interrupt (HLT, or wait-for-SIPI). */
  readonly halted: boolean;
  /** Makes the current or next `runSlice` return at the next instruction boundary. */
  requestExit(): void;
  /** Puts the vCPU into its power-on state. */
  reset(): void;
}
