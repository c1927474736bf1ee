import { describe, expect, it } from "vitest";
import { GUEST_MEMORY, Machine, type GuestMemory } from "@typevisor/hv-core";
import { seeded } from "@typevisor/test-support";
import { MemoryBlockBackend, type BlockBackend } from "./block-backend.js";
import { VirtioBlkDevice, VirtioBlkFeature, VirtioBlkRequest, VirtioBlkStatus } from "./device-blk.js";
import { FlatGuestMemory } from "./flat-guest-memory.js";
import { attachVirtioMmio } from "./transport-mmio.js";
import { GuestAllocator, MmioGuestDriver, type DriverQueue } from "../test/guest-driver.js";
import { mmioRig, MMIO_BASE } from "../test/loopback-device.js";

const T = VirtioBlkRequest;
const S = VirtioBlkStatus;

function header(type: number, sector: number): Uint8Array {
  const h = new Uint8Array(16);
  const v = new DataView(h.buffer);
  v.setUint32(0, type, true);
  v.setUint32(8, sector % 0x1_0000_0000, true);
  v.setUint32(12, Math.floor(sector / 0x1_0000_0000), true);
  return h;
}

function range(sector: number, count: number, flags = 0): Uint8Array {
  const r = new Uint8Array(16);
  const v = new DataView(r.buffer);
  v.setUint32(0, sector, true);
  v.setUint32(8, count, true);
  v.setUint32(12, flags, true);
  return r;
}

/** Waits until the device has no request running and its notifications went out. */
async function settle(device: VirtioBlkDevice): Promise<void> {
  for (let i = 0; i < 1000 && device.pendingIo > 0; i++) await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
}

interface BlkRig {
  driver: MmioGuestDriver;
  device: VirtioBlkDevice;
  q: DriverQueue;
  disk: BlockBackend;
  /** Submits one request and returns its id; `dataIn` = bytes the device writes before the status. */
  submit(type: number, sector: number, opts?: { out?: Uint8Array[]; dataIn?: number[]; indirect?: boolean }): number;
  /** Runs the queue and returns [status, used len, data] per id. */
  run(): Promise<Map<number, { status: number; len: number; data: Uint8Array }>>;
  irqLevel(): boolean;
}

function blkRig(disk: BlockBackend, opts: { packed?: boolean; eventIdx?: boolean; readOnly?: boolean; memory?: (m: FlatGuestMemory) => GuestMemory; queueSize?: number } = {}): BlkRig {
  const device = new VirtioBlkDevice({ disk, readOnly: opts.readOnly, serial: "disk-serial-0001", queueSize: opts.queueSize ?? 64 });
  let rig;
  if (opts.memory) {
    const machine = new Machine({ memory: 4 << 20 });
    const mem = new FlatGuestMemory(4 << 20);
    machine.services.provide(GUEST_MEMORY, opts.memory(mem));
    attachVirtioMmio(machine, device, { base: MMIO_BASE, irq: 5 });
    const driver = new MmioGuestDriver(machine, MMIO_BASE, mem, new GuestAllocator(0x1000, 4 << 20));
    rig = { driver, irqLevel: () => machine.irqs.level(5) };
  } else {
    rig = mmioRig(device, 4 << 20);
  }
  const { driver } = rig;
  driver.negotiate({ packed: opts.packed, eventIdx: opts.eventIdx, accept: [VirtioBlkFeature.FLUSH, VirtioBlkFeature.SEG_MAX, VirtioBlkFeature.BLK_SIZE, VirtioBlkFeature.DISCARD, VirtioBlkFeature.WRITE_ZEROES, VirtioBlkFeature.RO] });
  const q = driver.setupQueue(0);
  driver.driverOk();
  const inLens = new Map<number, number>();
  return {
    driver,
    device,
    q,
    disk,
    irqLevel: rig.irqLevel,
    submit(type, sector, o = {}) {
      const dataIn = o.dataIn ?? [];
      const id = q.add({ out: [header(type, sector), ...(o.out ?? [])], in: [...dataIn, 1], indirect: o.indirect });
      inLens.set(id, dataIn.reduce((a, b) => a + b, 0));
      return id;
    },
    async run() {
      q.publish();
      driver.kick(0);
      await settle(device);
      const out = new Map<number, { status: number; len: number; data: Uint8Array }>();
      for (const u of q.takeUsed()) {
        const n = inLens.get(u.id) ?? 0;
        const all = q.written(u.id, n + 1);
        out.set(u.id, { status: all[n], len: u.len, data: all.subarray(0, n) });
      }
      return out;
    },
  };
}

/** The backend with some methods replaced. */
function wrap(disk: MemoryBlockBackend, overrides: Partial<BlockBackend>): BlockBackend {
  return {
    size: disk.size,
    readOnly: disk.readOnly,
    read: (o, d) => disk.read(o, d),
    write: (o, s) => disk.write(o, s),
    flush: () => disk.flush(),
    discard: (o, l) => disk.discard(o, l),
    writeZeroes: (o, l) => disk.writeZeroes(o, l),
    close: () => disk.close(),
    ...overrides,
  };
}

function pattern(n: number, seed: number): Uint8Array {
  const r = seeded(seed);
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = r() & 0xff;
  return b;
}

describe("virtio-blk configuration and features", () => {
  it("advertises capacity, seg_max, blk_size, queues and discard limits", () => {
    const { driver, device } = blkRig(new MemoryBlockBackend(8 << 20));
    expect(driver.config(0, 4)).toBe((8 << 20) / 512);
    expect(driver.config(4, 4)).toBe(0);
    expect(driver.config(12, 4)).toBe(62); // seg_max = queue size - 2
    expect(driver.config(20, 4)).toBe(512);
    expect(driver.config(34, 2)).toBe(1);
    expect(driver.config(40, 4)).toBe(32);
    expect(driver.config(56, 1)).toBe(1);
    expect(device.hasFeature(VirtioBlkFeature.FLUSH)).toBe(true);
    expect(device.hasFeature(VirtioBlkFeature.DISCARD)).toBe(true);
    expect(device.offers(VirtioBlkFeature.RO)).toBe(false);
    expect(device.offers(VirtioBlkFeature.MQ)).toBe(false);
  });

  it("a read-only disk offers RO and neither discard nor write-zeroes", () => {
    const { device } = blkRig(new MemoryBlockBackend(1 << 20, { readOnly: true }));
    expect(device.offers(VirtioBlkFeature.RO)).toBe(true);
    expect(device.offers(VirtioBlkFeature.DISCARD)).toBe(false);
    expect(device.offers(VirtioBlkFeature.WRITE_ZEROES)).toBe(false);
  });

  it("several queues offer MQ and num_queues; capacity beyond 2^32 sectors fills the high word", () => {
    const huge = wrap(new MemoryBlockBackend(0), { size: 2 ** 42 + 512 * 3 });
    const d = new VirtioBlkDevice({ disk: huge, queues: 4 });
    expect(d.offers(VirtioBlkFeature.MQ)).toBe(true);
    expect(d.queues.length).toBe(4);
    expect(d.readConfig(34, 2)).toBe(4);
    expect(d.readConfig(0, 4)).toBe(3);
    expect(d.readConfig(4, 4)).toBe(2 ** 42 / 512 / 2 ** 32);
  });

  it("rejects a serial longer than 20 bytes", () => {
    expect(() => new VirtioBlkDevice({ disk: new MemoryBlockBackend(512), serial: "x".repeat(21) })).toThrow(/longer than 20/);
  });
});

describe("virtio-blk requests", () => {
  for (const packed of [false, true]) {
    for (const indirect of [false, true]) {
      it(`writes and reads back data over multi-segment chains (${packed ? "packed" : "split"}${indirect ? ", indirect" : ""})`, async () => {
        const disk = new MemoryBlockBackend(1 << 20);
        const rig = blkRig(disk, { packed });
        const data = pattern(4096, 7);
        // Header, then data in three uneven segments.
        const w = rig.submit(T.OUT, 8, { out: [data.subarray(0, 1000), data.subarray(1000, 1024), data.subarray(1024)], indirect });
        let res = await rig.run();
        expect(res.get(w)).toMatchObject({ status: S.OK, len: 1 });
        expect(disk.data.subarray(8 * 512, 8 * 512 + 4096)).toEqual(data);
        const r = rig.submit(T.IN, 8, { dataIn: [512, 3000, 584], indirect });
        res = await rig.run();
        expect(res.get(r)!.status).toBe(S.OK);
        expect(res.get(r)!.len).toBe(4097);
        expect(res.get(r)!.data).toEqual(data);
        expect(rig.irqLevel()).toBe(true);
        expect(rig.device.stats).toMatchObject({ ok: 2, bytesRead: 4096, bytesWritten: 4096 });
      });
    }
  }

  it("accepts the status byte in the same descriptor as the data (any layout)", async () => {
    const disk = new MemoryBlockBackend(1 << 20);
    disk.data.fill(0x5a, 0, 512);
    const rig = blkRig(disk);
    const id = rig.q.add({ out: [header(T.IN, 0)], in: [513] });
    rig.q.publish();
    rig.driver.kick(0);
    await settle(rig.device);
    const [u] = rig.q.takeUsed();
    expect(u).toEqual({ id, len: 513 });
    const bytes = rig.q.written(id, 513);
    expect(bytes[0]).toBe(0x5a);
    expect(bytes[511]).toBe(0x5a);
    expect(bytes[512]).toBe(S.OK);
  });

  it("works without zero-copy views (bounce buffer) and reports view writes as dirty", async () => {
    const data = pattern(200_000, 3);
    const disk = new MemoryBlockBackend(1 << 20);
    disk.data.set(data.subarray(0, 199_680), 512);
    const noView = (m: FlatGuestMemory): GuestMemory => {
      const { view: _v, markDirty: _d, ...rest } = Object.getOwnPropertyDescriptors(FlatGuestMemory.prototype);
      void _v;
      void _d;
      const plain = Object.create(Object.prototype, rest) as GuestMemory;
      Object.defineProperty(plain, "bytes", { value: m.bytes });
      Object.defineProperty(plain, "dirty", { value: [], writable: true });
      Object.defineProperty(plain, "trackDirty", { value: false });
      return plain;
    };
    const rig = blkRig(disk, { memory: noView });
    const id = rig.submit(T.IN, 1, { dataIn: [199_680] });
    const res = await rig.run();
    expect(res.get(id)!.status).toBe(S.OK);
    expect(res.get(id)!.data).toEqual(data.subarray(0, 199_680));
    // Zero-copy path: dirty ranges are reported through markDirty.
    const rig2 = mmioRig(new VirtioBlkDevice({ disk }), 1 << 20);
    rig2.mem.trackDirty = true;
    rig2.driver.negotiate();
    const q = rig2.driver.setupQueue(0);
    rig2.driver.driverOk();
    const rid = q.add({ out: [header(T.IN, 1)], in: [1024, 1] });
    q.publish();
    rig2.mem.takeDirty();
    rig2.driver.kick(0);
    await settle(rig2.device);
    const dirty = rig2.mem.takeDirty();
    expect(q.takeUsed()).toEqual([{ id: rid, len: 1025 }]);
    expect(dirty.length).toBeGreaterThanOrEqual(2);
    expect(dirty[1] - dirty[0]).toBe(1024); // the data segment, as one range
  });

  it("keeps several requests in flight and completes them in the order the backend finishes", async () => {
    const disk = new MemoryBlockBackend(1 << 20);
    const gates: (() => void)[] = [];
    const slow = wrap(disk, { read: (off, dest) => new Promise<void>((resolve) => gates.push(() => resolve(disk.read(off, dest)))) });
    for (let i = 0; i < 4; i++) disk.data.fill(i + 1, i * 512, i * 512 + 512);
    const rig = blkRig(slow);
    const ids = [0, 1, 2, 3].map((s) => rig.submit(T.IN, s, { dataIn: [512] }));
    rig.q.publish();
    rig.driver.kick(0);
    await new Promise((r) => setImmediate(r));
    expect(rig.device.requestsInFlight).toBe(4);
    expect(gates.length).toBe(4);
    // Finish them backwards.
    for (let i = 3; i >= 0; i--) {
      gates[i]();
      await new Promise((r) => setImmediate(r));
    }
    await settle(rig.device);
    const used = rig.q.takeUsed();
    expect(used.map((u) => u.id)).toEqual([...ids].reverse());
    for (let i = 0; i < 4; i++) expect(rig.q.written(ids[i], 1)[0]).toBe(i + 1);
  });

  it("flushes through the backend", async () => {
    const disk = new MemoryBlockBackend(1 << 20);
    const rig = blkRig(disk);
    const id = rig.submit(T.FLUSH, 0);
    const res = await rig.run();
    expect(res.get(id)).toMatchObject({ status: S.OK, len: 1 });
    expect(disk.flushes).toBe(1);
  });

  it("answers GET_ID with the serial, zero padded", async () => {
    const rig = blkRig(new MemoryBlockBackend(1 << 20));
    const id = rig.submit(T.GET_ID, 0, { dataIn: [20] });
    const res = await rig.run();
    expect(res.get(id)!.status).toBe(S.OK);
    expect(res.get(id)!.len).toBe(21);
    expect(new TextDecoder().decode(res.get(id)!.data)).toBe("disk-serial-0001\0\0\0\0");
  });

  it("discards and writes zeroes over several ranges; validates flags and limits", async () => {
    const disk = new MemoryBlockBackend(1 << 20);
    disk.data.fill(0xff);
    const rig = blkRig(disk);
    const d = rig.submit(T.DISCARD, 0, { out: [range(0, 2), range(10, 1)] });
    const z = rig.submit(T.WRITE_ZEROES, 0, { out: [range(20, 4, 1)] });
    const badFlag = rig.submit(T.DISCARD, 0, { out: [range(30, 1, 1)] }); // unmap is not valid for discard
    const unknownFlag = rig.submit(T.WRITE_ZEROES, 0, { out: [range(30, 1, 4)] });
    const beyond = rig.submit(T.DISCARD, 0, { out: [range(2047, 2)] });
    const tooMany = rig.submit(T.DISCARD, 0, { out: Array.from({ length: 33 }, (_, i) => range(i, 1)) });
    const empty = rig.submit(T.DISCARD, 0);
    const res = await rig.run();
    expect(res.get(d)!.status).toBe(S.OK);
    expect(res.get(z)!.status).toBe(S.OK);
    expect(res.get(badFlag)!.status).toBe(S.UNSUPP);
    expect(res.get(unknownFlag)!.status).toBe(S.UNSUPP);
    expect(res.get(beyond)!.status).toBe(S.IOERR);
    expect(res.get(tooMany)!.status).toBe(S.IOERR);
    expect(res.get(empty)!.status).toBe(S.IOERR);
    const zeroAt = (s: number, n: number): boolean => disk.data.subarray(s * 512, (s + n) * 512).every((b) => b === 0);
    expect(zeroAt(0, 2) && zeroAt(10, 1) && zeroAt(20, 4)).toBe(true);
    expect(disk.data[2 * 512]).toBe(0xff);
    expect(disk.data[30 * 512]).toBe(0xff);
    expect(disk.data[2047 * 512]).toBe(0xff); // the out-of-range request touched nothing
  });

  it("refuses writes, discards and write-zeroes on a read-only disk, leaving it unchanged", async () => {
    const disk = new MemoryBlockBackend(1 << 20);
    const rig = blkRig(disk, { readOnly: true });
    const w = rig.submit(T.OUT, 0, { out: [new Uint8Array(512).fill(1)] });
    const d = rig.submit(T.DISCARD, 0, { out: [range(0, 1)] });
    const z = rig.submit(T.WRITE_ZEROES, 0, { out: [range(0, 1)] });
    const r = rig.submit(T.IN, 0, { dataIn: [512] });
    const f = rig.submit(T.FLUSH, 0);
    const res = await rig.run();
    expect([w, d, z].map((id) => res.get(id)!.status)).toEqual([S.IOERR, S.IOERR, S.IOERR]);
    expect(res.get(r)!.status).toBe(S.OK);
    expect(res.get(f)!.status).toBe(S.OK);
    expect(disk.data.every((b) => b === 0)).toBe(true);
  });

  it("reports out-of-range, unaligned, unknown and malformed requests to the guest, not the host", async () => {
    const disk = new MemoryBlockBackend(1 << 20);
    const rig = blkRig(disk);
    const errors: string[] = [];
    rig.device.events.on("requestError", (e) => errors.push(e.reason));
    const past = rig.submit(T.IN, 2048, { dataIn: [512] });
    const straddle = rig.submit(T.OUT, 2047, { out: [new Uint8Array(1024)] });
    const hugeSector = rig.submit(T.IN, 2 ** 53 - 1, { dataIn: [512] });
    const unaligned = rig.submit(T.IN, 0, { dataIn: [100] });
    const unknown = rig.submit(99, 0);
    const shortHeader = rig.q.add({ out: [new Uint8Array(8)], in: [1] });
    const noStatus = rig.q.add({ out: [header(T.IN, 0)] });
    const res = await rig.run();
    expect(res.get(past)!.status).toBe(S.IOERR);
    expect(res.get(straddle)!.status).toBe(S.IOERR);
    expect(res.get(hugeSector)!.status).toBe(S.IOERR);
    expect(res.get(unaligned)!.status).toBe(S.IOERR);
    expect(res.get(unknown)!.status).toBe(S.UNSUPP);
    expect(rig.q.written(shortHeader, 1)[0]).toBe(S.IOERR);
    expect(res.get(noStatus)!.len).toBe(0);
    expect(errors.length).toBe(6);
    expect(rig.device.needsResetReason).toBeUndefined();
    expect(disk.data.every((b) => b === 0)).toBe(true);
  });

  it("a failing backend gives IOERR and the device keeps serving", async () => {
    const disk = new MemoryBlockBackend(1 << 20);
    let fail = true;
    const flaky = wrap(disk, {
      read: (o, d) => (fail ? Promise.reject(new Error("EIO: disk on fire")) : disk.read(o, d)),
      flush: () => {
        throw new Error("sync throw");
      },
    });
    const rig = blkRig(flaky);
    const errors: string[] = [];
    rig.device.events.on("requestError", (e) => errors.push(e.reason));
    const a = rig.submit(T.IN, 0, { dataIn: [512] });
    const f = rig.submit(T.FLUSH, 0);
    let res = await rig.run();
    expect(res.get(a)!.status).toBe(S.IOERR);
    expect(res.get(f)!.status).toBe(S.IOERR);
    expect(errors.join("\n")).toMatch(/disk on fire/);
    fail = false;
    const b = rig.submit(T.IN, 0, { dataIn: [512] });
    res = await rig.run();
    expect(res.get(b)!.status).toBe(S.OK);
  });

  it("drops completions of requests started before a reset", async () => {
    const disk = new MemoryBlockBackend(1 << 20);
    const gates: (() => void)[] = [];
    const slow = wrap(disk, { read: (o, d) => new Promise<void>((r) => gates.push(() => r(disk.read(o, d)))) });
    const rig = blkRig(slow);
    rig.submit(T.IN, 0, { dataIn: [512] });
    rig.q.publish();
    rig.driver.kick(0);
    await new Promise((r) => setImmediate(r));
    rig.driver.write(0x70, 0); // reset
    expect(rig.device.resetInProgress).toBe(true);
    gates[0]();
    await settle(rig.device);
    expect(rig.device.resetInProgress).toBe(false);
    expect(rig.q.takeUsed()).toEqual([]);
    expect(rig.irqLevel()).toBe(false);
  });

  it("counts its requests as machine I/O (deterministic machines wait for them)", async () => {
    const disk = new MemoryBlockBackend(1 << 20);
    const rig = mmioRig(new VirtioBlkDevice({ disk }), 1 << 20);
    rig.driver.negotiate();
    const q = rig.driver.setupQueue(0);
    rig.driver.driverOk();
    q.add({ out: [header(T.IN, 0)], in: [512, 1] });
    q.publish();
    rig.driver.kick(0);
    expect(rig.machine.pendingIo).toBe(1);
    await settle(rig.device);
    expect(rig.machine.pendingIo).toBe(0);
  });

  it("re-issues in-flight requests after a snapshot restore", async () => {
    const disk = new MemoryBlockBackend(1 << 20);
    disk.data.fill(0x42, 0, 512);
    const never = wrap(disk, { read: () => new Promise<void>(() => {}) });
    const a = mmioRig(new VirtioBlkDevice({ disk: never }), 1 << 20);
    a.driver.negotiate({ eventIdx: true });
    const q = a.driver.setupQueue(0);
    a.driver.driverOk();
    const id = q.add({ out: [header(T.IN, 0)], in: [512, 1] });
    q.publish();
    a.driver.kick(0);
    await new Promise((r) => setImmediate(r));
    expect(a.device.requestsInFlight).toBe(1);
    const saved = structuredClone(a.transport.saveState());
    const b = mmioRig(new VirtioBlkDevice({ disk }), 1 << 20);
    b.mem.bytes.set(a.mem.bytes);
    b.transport.loadState(saved);
    await settle(b.device);
    // The driver's view of the (copied) queue sees the completion.
    const qb = Object.assign(Object.create(Object.getPrototypeOf(q)), q, { mem: b.mem }) as DriverQueue;
    const used = qb.takeUsed();
    expect(used).toEqual([{ id, len: 513 }]);
    expect(qb.written(id, 513)[0]).toBe(0x42);
    expect(qb.written(id, 513)[512]).toBe(S.OK);
  });

  it("keeps data intact over many random requests (model check against a plain buffer)", async () => {
    const size = 256 * 512;
    const disk = new MemoryBlockBackend(size);
    const model = new Uint8Array(size);
    const rig = blkRig(disk, { packed: true, eventIdx: true, queueSize: 32 });
    const rnd = seeded(99);
    for (let round = 0; round < 60; round++) {
      // Reads in a batch are issued before its one write: they see the state before the batch.
      const before = model.slice();
      const ops: { id: number; type: number; sector: number; n: number }[] = [];
      for (let k = 0; k < 6; k++) {
        const n = 1 + (rnd() % 8);
        const sector = rnd() % (256 - n);
        const kind = rnd() % 4;
        if (kind === 0) {
          const data = pattern(n * 512, rnd());
          model.set(data, sector * 512);
          ops.push({ id: rig.submit(T.OUT, sector, { out: [data] }), type: T.OUT, sector, n });
          // Later requests in the batch must not overlap a write in flight: read back next round.
          break;
        } else if (kind === 1) {
          model.fill(0, sector * 512, (sector + n) * 512);
          ops.push({ id: rig.submit(T.WRITE_ZEROES, 0, { out: [range(sector, n)] }), type: T.WRITE_ZEROES, sector, n });
          break;
        } else {
          ops.push({ id: rig.submit(T.IN, sector, { dataIn: [n * 512], indirect: kind === 3 }), type: T.IN, sector, n });
        }
      }
      const res = await rig.run();
      for (const op of ops) {
        const r = res.get(op.id)!;
        expect(r.status).toBe(S.OK);
        if (op.type === T.IN) expect(r.data).toEqual(before.subarray(op.sector * 512, (op.sector + op.n) * 512));
      }
      (rig.driver.alloc as unknown as { next: number }).next = 0x10000;
    }
    expect(disk.data).toEqual(model);
  });
});
