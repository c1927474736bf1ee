// Seeded fuzzing of the virtqueue layer: a hostile driver writes random,
// half-valid and malformed descriptor chains; the device must either handle
// each chain (return it, possibly flagged) or set DEVICE_NEEDS_RESET, and the
// host must never throw, loop or do unbounded work.
import { seeded } from "@typevisor/test-support";
import { GUEST_MEMORY, Machine } from "@typevisor/hv-core";
import { CHAIN_OK, type DescriptorChain } from "../src/descriptor-chain.js";
import { FlatGuestMemory } from "../src/flat-guest-memory.js";
import { attachVirtioMmio } from "../src/transport-mmio.js";
import { VirtioDevice } from "../src/virtio-device.js";
import type { Virtqueue } from "../src/virtqueue.js";
import { GuestAllocator, MmioGuestDriver, type PackedDriverQueue, type SplitDriverQueue } from "./guest-driver.js";

export const RAM = 1 << 20;
const DATA_START = 0x40000;

/** Guest memory that counts accesses, to bound the work per notification. */
export class CountingMemory extends FlatGuestMemory {
  accesses = 0;
  override readU16(gpa: number): number {
    this.accesses++;
    return super.readU16(gpa);
  }
  override readU32(gpa: number): number {
    this.accesses++;
    return super.readU32(gpa);
  }
  override writeU16(gpa: number, v: number): void {
    this.accesses++;
    super.writeU16(gpa, v);
  }
  override writeU32(gpa: number, v: number): void {
    this.accesses++;
    super.writeU32(gpa, v);
  }
  override isRam(gpa: number, length: number): boolean {
    this.accesses++;
    return super.isRam(gpa, length);
  }
}

/** Pops everything, checks each chain's invariants, touches its buffers, returns it. */
export class FuzzDevice extends VirtioDevice {
  readonly violations: string[] = [];
  chains = 0;
  flagged = 0;
  private readonly chain: DescriptorChain;
  private readonly buf = new Uint8Array(64);

  constructor(queueSize: number, capacity: number) {
    super({ deviceId: 0x7e, name: "fuzz", queueSizes: [queueSize], features: [], configSize: 0, chainCapacity: capacity });
    this.chain = this.newChain();
  }

  protected override onQueueNotify(q: Virtqueue): void {
    const c = this.chain;
    const mem = this.memory;
    let n = 0;
    while (q.pop(c)) {
      if (++n > q.size) this.violations.push(`popped more than ${q.size} chains in one notification`);
      this.chains++;
      this.check(c, mem);
      let written = 0;
      if (c.problem === CHAIN_OK) {
        try {
          c.readFrom(mem, 0, this.buf);
          written = c.writeTo(mem, 0, this.buf);
        } catch (e) {
          this.violations.push(`buffer access on a chain flagged OK threw: ${String(e)}`);
        }
      } else this.flagged++;
      q.push(c, written);
    }
    this.signalUsed(q);
  }

  private check(c: DescriptorChain, mem: FlatGuestMemory | VirtioDevice["memory"]): void {
    if (c.count > c.capacity) this.violations.push(`chain of ${c.count} segments exceeds capacity ${c.capacity}`);
    let r = 0;
    let w = 0;
    for (let i = 0; i < c.count; i++) {
      if (c.len[i] === 0) this.violations.push("zero-length segment stored");
      if (i < c.readableCount) r += c.len[i];
      else w += c.len[i];
      if (c.problem === CHAIN_OK && !mem.isRam(c.addr[i], c.len[i])) this.violations.push(`segment ${i} outside RAM in a chain flagged OK`);
    }
    if (c.problem === CHAIN_OK && (r !== c.readableBytes || w !== c.writableBytes)) this.violations.push(`byte totals ${r}/${w} disagree with ${c.readableBytes}/${c.writableBytes}`);
    if (c.problem === CHAIN_OK && (c.readableBytes > 0xffffffff || c.writableBytes > 0xffffffff)) this.violations.push("a chain longer than 2^32 - 1 bytes flagged OK");
  }
}

export interface FuzzResult {
  chains: number;
  flagged: number;
  resets: number;
  violations: string[];
  maxAccessesPerKick: number;
}

/** Runs `rounds` batches of hostile chains against a fresh device. */
export function fuzzQueue(seed: number, rounds: number, packed: boolean): FuzzResult {
  const r = seeded(seed);
  const pick = <T>(xs: readonly T[]): T => xs[r() % xs.length];
  const sizes = packed ? [1, 3, 4, 7, 16, 64, 256] : [1, 2, 4, 16, 64, 256];
  const queueSize = pick(sizes);
  const capacity = Math.max(4, Math.min(queueSize, 64));
  const machine = new Machine({ memory: RAM });
  const mem = new CountingMemory(RAM);
  machine.services.provide(GUEST_MEMORY, mem);
  const device = new FuzzDevice(queueSize, capacity);
  attachVirtioMmio(machine, device, { base: 0xd000_0000, irq: 5 });
  let resets = 0;
  let maxAccesses = 0;
  const driver = new MmioGuestDriver(machine, 0xd000_0000, mem, new GuestAllocator(0x1000, DATA_START));

  const addr = (): number => {
    switch (r() % 12) {
      case 0:
        return 0;
      case 1:
        return RAM - (r() % 64);
      case 2:
        return RAM + (r() % 4096);
      case 3:
        return 2 ** 52 + (r() % 4096) * 4096;
      case 4:
        return 2 ** 63;
      case 5:
        return r() * 0x100 + (r() & 0xff);
      default:
        return DATA_START + (r() % (RAM - DATA_START - 4096));
    }
  };
  const len = (): number => {
    switch (r() % 12) {
      case 0:
        return 0;
      case 1:
        return 0xffffffff;
      case 2:
        return 0x80000000;
      case 3:
        return r();
      case 4:
        return 4096;
      default:
        return r() % 600;
    }
  };
  const writeDesc = (at: number, a: number, l: number, flags: number, tail: number): void => {
    mem.writeU32(at, a % 2 ** 32);
    mem.writeU32(at + 4, Math.floor(a / 2 ** 32) % 2 ** 32);
    mem.writeU32(at + 8, l >>> 0);
    if (packed) {
      mem.writeU16(at + 12, tail);
      mem.writeU16(at + 14, flags);
    } else {
      mem.writeU16(at + 12, flags);
      mem.writeU16(at + 14, tail);
    }
  };
  /** A random indirect table somewhere in the data area; returns [address, length]. */
  const indirectTable = (valid: boolean): [number, number] => {
    const n = 1 + (r() % 8);
    const table = DATA_START + (r() % 0x8000) * 16;
    for (let i = 0; i < n; i++) {
      const flags = valid ? (i < n - 1 ? 1 : 0) | (i >= n / 2 ? 2 : 0) : r() & 0xffff;
      writeDesc(table + 16 * i, valid ? DATA_START + (r() % 0x80000) : addr(), valid ? r() % 300 : len(), flags, valid ? i + 1 : r() & 0xffff);
    }
    return r() % 8 === 0 ? [addr(), len()] : [table, valid || r() % 2 ? 16 * n : (r() % 200) + 1];
  };

  let q: SplitDriverQueue | PackedDriverQueue;
  let availIdx = 0;
  let pos = 0;
  let wrap = 1;
  const init = (): void => {
    driver.negotiate({ packed, eventIdx: r() % 2 === 0, indirect: r() % 4 !== 0 });
    (driver.alloc as unknown as { next: number }).next = 0x1000;
    q = driver.setupQueue(0) as SplitDriverQueue | PackedDriverQueue;
    driver.driverOk();
    availIdx = 0;
    pos = 0;
    wrap = 1;
  };
  init();

  for (let round = 0; round < rounds; round++) {
    const k = 1 + (r() % 4);
    for (let j = 0; j < k; j++) {
      // Mostly plausible chains (some with broken indirect tables), a fifth outright malformed.
      const m = r() % 20;
      const mode = m < 16 ? m % 6 : m - 10;
      if (!packed) {
        const sq = q! as SplitDriverQueue;
        let head = r() % queueSize;
        if (mode <= 5) {
          // A plausible chain over distinct descriptors, maybe ending in an indirect table.
          const n = 1 + (r() % Math.min(6, queueSize));
          const ids: number[] = [];
          for (let i = 0; i < n; i++) ids.push((head + i) % queueSize);
          ids.forEach((id, i) => {
            const last = i === n - 1;
            if (last && r() % 4 === 0) {
              const [ta, tl] = indirectTable(mode < 4);
              writeDesc(sq.desc + 16 * id, ta, tl, 4, 0);
            } else writeDesc(sq.desc + 16 * id, DATA_START + (r() % 0x80000), r() % 600, (last ? 0 : 1) | (i >= n / 2 ? 2 : 0), ids[i + 1] ?? 0);
          });
        } else if (mode === 6) {
          writeDesc(sq.desc + 16 * head, addr(), len(), r() & 7, r() % 3 === 0 ? r() & 0xffff : r() % queueSize);
        } else if (mode === 7) {
          const other = r() % queueSize;
          writeDesc(sq.desc + 16 * head, DATA_START, 8, 1, other);
          writeDesc(sq.desc + 16 * other, DATA_START, 8, 1, head);
        } else if (mode === 8) {
          const [ta, tl] = indirectTable(false);
          writeDesc(sq.desc + 16 * head, ta, tl, 4 | (r() % 4 === 0 ? 1 : 0), r() & 0xffff);
        } else {
          head = r() & 0xffff;
        }
        mem.writeU16(sq.avail + 4 + 2 * (availIdx % queueSize), head);
        availIdx = (availIdx + 1) & 0xffff;
      } else {
        const pq = q! as PackedDriverQueue;
        const n = mode <= 5 ? 1 + (r() % Math.min(6, queueSize)) : 1;
        const id = r() % 5 === 0 ? r() & 0xffff : r() % queueSize;
        let headAt = -1;
        let headFlags = 0;
        for (let i = 0; i < n; i++) {
          const availBits = wrap ? 1 << 7 : 1 << 15;
          let flags: number;
          let a = DATA_START + (r() % 0x80000);
          let l = r() % 600;
          if (mode <= 5) {
            flags = (i < n - 1 ? 1 : 0) | (i >= n / 2 ? 2 : 0) | availBits;
            if (i === n - 1 && r() % 4 === 0) {
              [a, l] = indirectTable(mode < 4);
              flags = 4 | availBits;
            }
          } else if (mode === 9) {
            flags = r() & 0xffff; // random avail/used bits too
          } else {
            flags = (r() & 7) | availBits;
            a = addr();
            l = len();
          }
          const at = pq.desc + 16 * pos;
          if (i === 0) {
            headAt = at;
            headFlags = flags;
            writeDesc(at, a, l, flags ^ (1 << 7) ^ (1 << 15), id); // not yet available
          } else writeDesc(at, a, l, flags, id);
          if (++pos === queueSize) {
            pos = 0;
            wrap ^= 1;
          }
        }
        mem.writeU16(headAt + 14, headFlags);
      }
    }
    if (!packed) {
      const sq = q! as SplitDriverQueue;
      mem.writeU16(sq.avail + 2, r() % 64 === 0 ? r() & 0xffff : availIdx);
      if (r() % 8 === 0) mem.writeU16(sq.avail, r() & 1);
    }
    mem.accesses = 0;
    driver.kick(0);
    maxAccesses = Math.max(maxAccesses, mem.accesses);
    if (device.needsResetReason !== undefined) {
      resets++;
      init();
    } else if (device.queues[0].inflight !== 0) {
      device.violations.push(`${device.queues[0].inflight} buffers left in flight without DEVICE_NEEDS_RESET`);
    }
    // Occasionally start over so driver and device positions agree again (packed).
    if (packed && r() % 16 === 0) {
      resets++;
      init();
    }
  }
  return { chains: device.chains, flagged: device.flagged, resets, violations: device.violations, maxAccessesPerKick: maxAccesses };
}
