import { TypevisorError } from "./errors.js";

/**
 * A plain, serializable value: what component state is made of. No class
 * instances, functions, `undefined` or cycles; bytes as `Uint8Array`.
 */
export type StateValue = null | boolean | number | string | Uint8Array | StateValue[] | { [key: string]: StateValue };

/** One component's saved state, tagged with who saved it and in which format version. */
export interface SavedState {
  /** The component's {@link Snapshottable.stateId}. */
  readonly id: string;
  /** The format version the data was written in. */
  readonly version: number;
  /** The component's state. */
  readonly data: StateValue;
}

/**
 * Anything that holds guest-visible state: vCPUs, devices, timers. It saves
 * a plain value and can be rebuilt from one. Bump `stateVersion` whenever the
 * shape of the data changes; implement `migrateState` to read older versions.
 */
export interface Snapshottable<T extends StateValue = StateValue> {
  /** Unique id within a machine, e.g. `"cpu0"`, `"pic-master"`, `"virtio-blk@0000:00:03.0"`. */
  readonly stateId: string;
  /** Version of the format `saveState` produces. */
  readonly stateVersion: number;
  /** Returns the current state as a plain value. */
  saveState(): T;
  /** Replaces the current state; the data may come from an untrusted file, so validate it. */
  loadState(data: T): void;
  /** Upgrades data written in an older `version` to the current format. */
  migrateState?(data: StateValue, version: number): T;
}

/** Raised when saved state cannot be restored: wrong version, unknown or missing component, malformed data. */
export class StateError extends TypevisorError {}

/** Saves one component, tagging the data with its id and version. */
export function saveComponent(component: Snapshottable): SavedState {
  return { id: component.stateId, version: component.stateVersion, data: component.saveState() };
}

/**
 * Restores one component from saved state, migrating older versions when the
 * component knows how.
 * @throws StateError `STATE_VERSION` naming the component and both versions
 */
export function restoreComponent(component: Snapshottable, saved: SavedState): void {
  if (saved.id !== component.stateId) {
    throw new StateError("STATE_ID", `state for "${saved.id}" cannot be loaded into "${component.stateId}"`);
  }
  let data = saved.data;
  if (saved.version !== component.stateVersion) {
    if (saved.version < component.stateVersion && component.migrateState) {
      data = component.migrateState(data, saved.version);
    } else {
      throw new StateError(
        "STATE_VERSION",
        `state of "${component.stateId}" has version ${saved.version}, but this build reads version ${component.stateVersion}${saved.version > component.stateVersion ? " (saved by a newer typevisor)" : ""}`,
      );
    }
  }
  component.loadState(data);
}

/**
 * Checks that `value` is a {@link StateValue} (plain, acyclic, no functions or
 * class instances other than `Uint8Array`), bounded in depth.
 * @returns the path of the first offending value, or `undefined` when plain
 */
export function findNonPlainState(value: unknown, path = "$", depth = 0): string | undefined {
  if (depth > 64) return `${path} (nested deeper than 64 levels)`;
  if (value === null || typeof value === "boolean" || typeof value === "string") return undefined;
  if (typeof value === "number") return undefined;
  if (value instanceof Uint8Array) return value.constructor === Uint8Array ? undefined : path;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const bad = findNonPlainState(value[i], `${path}[${i}]`, depth + 1);
      if (bad) return bad;
    }
    return undefined;
  }
  if (typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    for (const [k, v] of Object.entries(value)) {
      const bad = findNonPlainState(v, `${path}.${k}`, depth + 1);
      if (bad) return bad;
    }
    return undefined;
  }
  return path;
}

/**
 * The set of a machine's stateful components. Saving collects every
 * component; restoring requires exactly the same set of ids.
 */
export class StateRegistry {
  private readonly components = new Map<string, Snapshottable>();

  /**
   * Adds a component.
   * @throws StateError `STATE_DUPLICATE` when the id is taken
   */
  register(component: Snapshottable): void {
    if (this.components.has(component.stateId)) {
      throw new StateError("STATE_DUPLICATE", `two components use state id "${component.stateId}"`);
    }
    this.components.set(component.stateId, component);
  }

  /** Removes a component (device unplug). */
  unregister(component: Snapshottable): void {
    if (this.components.get(component.stateId) === component) this.components.delete(component.stateId);
  }

  /** Ids of the registered components, in registration order. */
  get ids(): string[] {
    return [...this.components.keys()];
  }

  /** Saves every component, in registration order. */
  saveAll(): SavedState[] {
    return [...this.components.values()].map(saveComponent);
  }

  /**
   * Restores every component.
   * @throws StateError `STATE_UNKNOWN` for saved state no component claims,
   *   `STATE_MISSING` for a component with no saved state, or the component's own error
   */
  restoreAll(states: readonly SavedState[]): void {
    const seen = new Set<string>();
    for (const s of states) {
      if (!this.components.has(s.id)) throw new StateError("STATE_UNKNOWN", `saved state names component "${s.id}", which this machine does not have`);
      if (seen.has(s.id)) throw new StateError("STATE_DUPLICATE", `saved state names component "${s.id}" twice`);
      seen.add(s.id);
    }
    for (const id of this.components.keys()) {
      if (!seen.has(id)) throw new StateError("STATE_MISSING", `saved state has nothing for component "${id}"`);
    }
    for (const s of states) restoreComponent(this.components.get(s.id)!, s);
  }
}
