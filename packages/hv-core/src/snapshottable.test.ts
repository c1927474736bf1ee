import { describe, expect, it } from "vitest";
import { findNonPlainState, restoreComponent, saveComponent, StateError, StateRegistry, type Snapshottable, type StateValue } from "./snapshottable.js";

class Counter implements Snapshottable<{ count: number; bytes: Uint8Array }> {
  count = 0;
  bytes = new Uint8Array(4);
  constructor(
    readonly stateId: string,
    readonly stateVersion = 2,
  ) {}
  saveState() {
    return { count: this.count, bytes: this.bytes.slice() };
  }
  loadState(data: { count: number; bytes: Uint8Array }) {
    if (typeof data.count !== "number") throw new StateError("STATE_DATA", `${this.stateId}: count is not a number`);
    this.count = data.count;
    this.bytes = data.bytes.slice();
  }
  migrateState(data: StateValue, version: number) {
    if (version !== 1) throw new StateError("STATE_VERSION", `cannot migrate version ${version}`);
    const old = data as { n: number };
    return { count: old.n, bytes: new Uint8Array(4) };
  }
}

describe("Snapshottable", () => {
  it("round-trips through structured clone", () => {
    const c = new Counter("c");
    c.count = 5;
    c.bytes.set([1, 2, 3, 4]);
    const saved = structuredClone(saveComponent(c));
    const d = new Counter("c");
    restoreComponent(d, saved);
    expect(d.count).toBe(5);
    expect([...d.bytes]).toEqual([1, 2, 3, 4]);
    expect(findNonPlainState(saved)).toBeUndefined();
  });

  it("names component and both versions on a newer version", () => {
    const c = new Counter("pic");
    expect(() => restoreComponent(c, { id: "pic", version: 3, data: {} })).toThrowError(
      'state of "pic" has version 3, but this build reads version 2 (saved by a newer typevisor)',
    );
  });

  it("migrates an older version when the component knows how", () => {
    const c = new Counter("pit");
    restoreComponent(c, { id: "pit", version: 1, data: { n: 9 } });
    expect(c.count).toBe(9);
    const noMigrate = new Counter("x", 2);
    (noMigrate as { migrateState?: unknown }).migrateState = undefined;
    expect(() => restoreComponent(noMigrate, { id: "x", version: 1, data: {} })).toThrowError(/version 1.*version 2/);
  });

  it("finds the path of non-plain values", () => {
    expect(findNonPlainState({ a: [1, { b: new Date() }] })).toBe("$.a[1].b");
    expect(findNonPlainState({ f: () => 1 })).toBe("$.f");
    expect(findNonPlainState({ u: undefined })).toBe("$.u");
    expect(findNonPlainState({ v: new Uint16Array(2) })).toBe("$.v");
  });

  it("registry requires exactly the saved set of components", () => {
    const reg = new StateRegistry();
    const a = new Counter("a");
    reg.register(a);
    reg.register(new Counter("b"));
    expect(() => reg.register(new Counter("a"))).toThrowError(/two components use state id "a"/);
    const saved = reg.saveAll();
    expect(saved.map((s) => s.id)).toEqual(["a", "b"]);
    expect(() => reg.restoreAll(saved.slice(0, 1))).toThrowError(/nothing for component "b"/);
    expect(() => reg.restoreAll([...saved, { id: "zz", version: 2, data: null }])).toThrowError(/"zz", which this machine does not have/);
    a.count = 100;
    reg.restoreAll(saved);
    expect(a.count).toBe(0);
  });
});
