import { describe, expect, it } from "vitest";
import { seeded } from "@typevisor/test-support";
import { MemoryBlockBackend } from "./block-backend.js";
import { VirtioBlkDevice } from "./device-blk.js";
import { mmioRig } from "../test/loopback-device.js";
import type { BufferSpec, DriverQueue } from "../test/guest-driver.js";

const SECTORS = 512;

/**
 * Hostile request contents over well-formed rings: random types, sectors
 * (in range, at the end, past it, near 2^64), data lengths (aligned or not,
 * zero, huge) and layouts (missing header, missing status, split headers).
 * Every request must come back with a status byte of 0, 1 or 2 (or empty when
 * it has nowhere to put one), the device must never ask for a reset, and the
 * disk must equal a model that applies exactly the writes reported OK.
 */
async function fuzzBlk(seed: number, rounds: number, packed: boolean): Promise<{ requests: number; statuses: number[] }> {
  const r = seeded(seed);
  const disk = new MemoryBlockBackend(SECTORS * 512);
  const model = new Uint8Array(SECTORS * 512);
  const device = new VirtioBlkDevice({ disk, queueSize: 32 });
  const rig = mmioRig(device, 4 << 20);
  rig.driver.negotiate({ packed, eventIdx: r() % 2 === 0, accept: [9, 13, 14] });
  const q: DriverQueue = rig.driver.setupQueue(0);
  rig.driver.driverOk();
  const statuses = [0, 0, 0, 0];
  let requests = 0;
  const types = [0, 1, 4, 8, 11, 13, 2, 0xffffffff];
  const sector = (): number => [r() % SECTORS, SECTORS - 1, SECTORS, 2 ** 53 - 1, r() * 2 ** 21 + r()][r() % 5] ?? 0;
  const dataLen = (): number => [512, 1024, 4096, 0, 100, 511, 513, 512 * (1 + (r() % 8))][r() % 8];
  for (let round = 0; round < rounds; round++) {
    const batch: { id: number; type: number; sec: number; data?: Uint8Array; statusLen: number; inLen: number }[] = [];
    const k = 1 + (r() % 4);
    let wroteInBatch = false;
    for (let j = 0; j < k; j++) {
      let type = types[r() % types.length];
      const sec = sector();
      const h = new Uint8Array(16);
      const v = new DataView(h.buffer);
      // At most one request that changes the disk per batch: concurrent overlapping writes have no defined order.
      if ((type === 1 || type === 11 || type === 13) && wroteInBatch) type = 0;
      if (type === 1 || type === 11 || type === 13) wroteInBatch = true;
      v.setUint32(0, type, true);
      v.setUint32(4, r(), true); // reserved / ioprio: ignored
      v.setUint32(8, sec % 2 ** 32, true);
      v.setUint32(12, Math.floor(sec / 2 ** 32), true);
      const spec: BufferSpec = { indirect: r() % 3 === 0 };
      let data: Uint8Array | undefined;
      let inLen = 0;
      const layout = r() % 10;
      const headerParts = layout === 0 ? [h.subarray(0, 5), h.subarray(5)] : layout === 1 ? [h.subarray(0, 12)] : [h];
      if (type === 1) {
        data = new Uint8Array(dataLen());
        for (let i = 0; i < data.length; i++) data[i] = r() & 0xff;
        spec.out = [...headerParts, data];
      } else if (type === 11 || type === 13) {
        const n = r() % 3;
        const ranges = new Uint8Array(16 * n + (r() % 5 === 0 ? 8 : 0));
        const rv = new DataView(ranges.buffer);
        for (let i = 0; i < n; i++) {
          rv.setUint32(16 * i, r() % (SECTORS + 8), true);
          rv.setUint32(16 * i + 8, r() % 16, true);
          rv.setUint32(16 * i + 12, r() % 4 === 0 ? r() % 4 : 0, true);
        }
        data = ranges;
        spec.out = [...headerParts, ranges];
      } else {
        spec.out = headerParts;
        inLen = type === 8 ? [20, 5, 0][r() % 3] : dataLen();
      }
      const statusLen = layout === 2 ? 0 : 1;
      spec.in = [...(inLen > 0 ? [inLen] : []), ...(statusLen ? [statusLen] : [])];
      if (layout === 3 && inLen > 0) spec.in = [inLen + statusLen]; // status shares the data descriptor
      if (q.free() < 8) break;
      batch.push({ id: q.add(spec), type, sec, data, statusLen, inLen });
    }
    q.publish();
    rig.driver.kick(0);
    for (let i = 0; i < 50 && device.pendingIo > 0; i++) await new Promise((res) => setImmediate(res));
    await new Promise((res) => setImmediate(res));
    const used = new Map(q.takeUsed().map((u) => [u.id, u.len]));
    expect(device.needsResetReason, `seed ${seed} round ${round}`).toBeUndefined();
    const before = model.slice();
    for (const b of batch) {
      expect(used.has(b.id), `request ${b.id} (type ${b.type}) was not returned`).toBe(true);
      requests++;
      if (b.statusLen === 0 && b.inLen === 0) {
        expect(used.get(b.id)).toBe(0);
        continue;
      }
      const status = q.written(b.id, b.inLen + b.statusLen)[b.inLen + b.statusLen - 1];
      expect([0, 1, 2], `status of type ${b.type}`).toContain(status);
      statuses[status]++;
      if (status !== 0) continue;
      if (b.type === 1) model.set(b.data!, b.sec * 512);
      if (b.type === 11 || b.type === 13) {
        const rv = new DataView(b.data!.buffer);
        for (let i = 0; i + 16 <= b.data!.length; i += 16) model.fill(0, rv.getUint32(i, true) * 512, (rv.getUint32(i, true) + rv.getUint32(i + 8, true)) * 512);
      }
      // The device takes the last writable byte as the status, whatever the driver meant.
      const readLen = b.inLen + b.statusLen - 1;
      if (b.type === 0 && !wroteInBatch) expect(Buffer.compare(q.written(b.id, readLen), before.subarray(b.sec * 512, b.sec * 512 + readLen)), `read of sector ${b.sec}`).toBe(0);
    }
    expect(Buffer.compare(disk.data, model), `disk differs from the model after round ${round}`).toBe(0);
    if (round % 20 === 19) (rig.driver.alloc as unknown as { next: number }).next = 0x100000;
  }
  return { requests, statuses };
}

describe("virtio-blk fuzzing: hostile request contents", () => {
  for (const packed of [false, true]) {
    it(`${packed ? "packed" : "split"}: every request gets a status, the disk matches the model`, async () => {
      let total = 0;
      const statuses = [0, 0, 0, 0];
      for (let s = 0; s < 4; s++) {
        const res = await fuzzBlk(0xb1c0 + s + (packed ? 0x100 : 0), 400, packed);
        total += res.requests;
        res.statuses.forEach((n, i) => (statuses[i] += n));
      }
      console.log(`${packed ? "packed" : "split"}: ${total} requests; OK ${statuses[0]}, IOERR ${statuses[1]}, UNSUPP ${statuses[2]}`);
      expect(total).toBeGreaterThan(3000);
      expect(statuses[0]).toBeGreaterThan(100);
      expect(statuses[1]).toBeGreaterThan(100);
      expect(statuses[2]).toBeGreaterThan(10);
    });
  }
});
