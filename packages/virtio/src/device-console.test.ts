import { describe, expect, it } from "vitest";
import { MemoryCharBackend, streamCharBackend } from "./char-backend.js";
import { VirtioConsoleDevice, VirtioConsoleFeature } from "./device-console.js";
import { mmioRig } from "../test/loopback-device.js";
import { EventEmitter } from "node:events";

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array): string => new TextDecoder().decode(b);

function consoleRig(opts: { size?: { cols: number; rows: number }; inputBuffer?: number } = {}, packed = false) {
  const backend = new MemoryCharBackend();
  const device = new VirtioConsoleDevice({ backend, ...opts });
  const rig = mmioRig(device);
  rig.driver.negotiate({ packed, accept: [VirtioConsoleFeature.SIZE, VirtioConsoleFeature.EMERG_WRITE] });
  const rx = rig.driver.setupQueue(0);
  const tx = rig.driver.setupQueue(1);
  return { ...rig, backend, rx, tx };
}

describe("virtio-console", () => {
  it("reports its size and offers emergency write, not multiport", () => {
    const { driver, device } = consoleRig({ size: { cols: 132, rows: 43 } });
    expect(driver.read(0x008)).toBe(3);
    expect(driver.config(0, 2)).toBe(132);
    expect(driver.config(2, 2)).toBe(43);
    expect(device.hasFeature(VirtioConsoleFeature.SIZE)).toBe(true);
    expect(device.offers(VirtioConsoleFeature.MULTIPORT)).toBe(false);
    driver.driverOk();
    const gen = driver.read(0xfc);
    device.resize(80, 25);
    expect(driver.config(0, 4)).toBe(80 | (25 << 16));
    expect(driver.read(0xfc)).toBe(gen + 1);
    expect(driver.read(0x60) & 2).toBe(2);
  });

  for (const packed of [false, true]) {
    it(`sends guest output to the backend (${packed ? "packed" : "split"})`, () => {
      const { driver, tx, backend, irqLevel } = consoleRig({}, packed);
      driver.driverOk();
      const a = tx.add({ out: [enc("Hello from "), enc("hvc0\n")] });
      tx.add({ out: [enc("x".repeat(10_000))] });
      tx.publish();
      driver.kick(1);
      expect(backend.text).toBe("Hello from hvc0\n" + "x".repeat(10_000));
      expect(tx.takeUsed()[0]).toEqual({ id: a, len: 0 });
      expect(irqLevel()).toBe(true);
    });
  }

  it("delivers input into receive buffers, holding it until the guest posts buffers", () => {
    const { driver, rx, backend, device } = consoleRig();
    backend.send("typed before the driver was ready\n");
    expect(device.pendingInput).toBe(34);
    driver.driverOk();
    const a = rx.add({ in: [16] });
    rx.publish();
    driver.kick(0);
    expect(rx.takeUsed()).toEqual([{ id: a, len: 16 }]);
    expect(dec(rx.written(a, 16))).toBe("typed before the");
    const b = rx.add({ in: [64] });
    rx.publish();
    driver.kick(0);
    const [u] = rx.takeUsed();
    expect(dec(rx.written(b, u.len))).toBe(" driver was ready\n");
    // With buffers posted, input flows immediately.
    const c = rx.add({ in: [64] });
    rx.publish();
    driver.kick(0);
    backend.send("ls\n");
    expect(rx.takeUsed()).toEqual([{ id: c, len: 3 }]);
    expect(dec(rx.written(c, 3))).toBe("ls\n");
  });

  it("bounds buffered input: pauses the backend when full, drops beyond, resumes when drained", () => {
    const { driver, rx, backend, device } = consoleRig({ inputBuffer: 100 });
    driver.driverOk();
    backend.send(new Uint8Array(60).fill(0x61));
    expect(backend.paused).toBe(false);
    backend.send(new Uint8Array(60).fill(0x62));
    expect(backend.paused).toBe(true);
    expect(device.pendingInput).toBe(100);
    expect(device.droppedInput).toBe(20);
    rx.add({ in: [80] });
    rx.publish();
    driver.kick(0);
    expect(device.pendingInput).toBe(20);
    expect(backend.paused).toBe(false);
  });

  it("writes emergency output through the configuration space", () => {
    const { driver, backend } = consoleRig();
    driver.driverOk();
    for (const ch of enc("SOS")) driver.write(0x100 + 8, ch);
    expect(backend.text).toBe("SOS");
  });

  it("keeps pending input across a snapshot", () => {
    const a = consoleRig();
    a.backend.send("abc");
    const saved = structuredClone(a.transport.saveState());
    const b = consoleRig();
    b.transport.loadState(saved);
    expect(b.device.pendingInput).toBe(3);
  });

  it("bridges Node streams: socket-like input and output", () => {
    const input = Object.assign(new EventEmitter(), { pause: () => (paused = true), resume: () => (paused = false) });
    let paused = false;
    const written: Uint8Array[] = [];
    const backend = streamCharBackend({ input, output: { write: (c) => written.push(c) } });
    const device = new VirtioConsoleDevice({ backend, inputBuffer: 4 });
    input.emit("data", "hey!");
    expect(device.pendingInput).toBe(4);
    expect(paused).toBe(true);
    backend.write(enc("out"));
    expect(dec(written[0])).toBe("out");
  });

  it("takes the serial port's backend shape (write, attach, detach) as is", () => {
    const out: string[] = [];
    let receive: ((d: Uint8Array) => void) | undefined;
    const serialLike = { write: (d: Uint8Array) => out.push(dec(d)), attach: (r: (d: Uint8Array) => void) => (receive = r), detach: () => (receive = undefined) };
    const device = new VirtioConsoleDevice({ backend: serialLike });
    receive!(enc("in"));
    expect(device.pendingInput).toBe(2);
    const rig = mmioRig(device);
    rig.driver.negotiate();
    rig.driver.setupQueue(0);
    const tx = rig.driver.setupQueue(1);
    rig.driver.driverOk();
    tx.add({ out: [enc("out")] });
    tx.publish();
    rig.driver.kick(1);
    expect(out).toEqual(["out"]);
  });
});
