/**
 * The device-side position of a ring, as saved in snapshots. Split rings use
 * free-running 16-bit indices and ignore the wrap counters; packed rings use
 * ring positions with wrap counters, and `signalled` counts slots mod 2 x size.
 * @internal
 */
export interface RingState {
  [key: string]: number;
  avail: number;
  availWrap: number;
  used: number;
  usedWrap: number;
  signalled: number;
}
