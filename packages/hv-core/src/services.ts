import { TypevisorError } from "./errors.js";

/**
 * A typed name for a service that one plugin offers and others use, such as
 * the PCI bus or the guest memory. Packages that never import each other meet
 * through keys defined here in hv-core.
 */
export class ServiceKey<T> {
  /** Phantom field that carries the service type; never set. */
  declare readonly __type?: T;

  /** @param name - the service name, also usable in a plugin's `requires` */
  constructor(readonly name: string) {}
}

/** Raised when a service is looked up before anyone provided it, or provided twice. */
export class ServiceError extends TypevisorError {}

/** The services a machine's plugins have provided, by key. */
export class ServiceRegistry {
  private readonly services = new Map<string, unknown>();

  /**
   * Registers `value` as the implementation of `key`.
   * @throws ServiceError `SERVICE_DUPLICATE` when the key is already provided
   */
  provide<T>(key: ServiceKey<T>, value: T): void {
    if (this.services.has(key.name)) {
      throw new ServiceError("SERVICE_DUPLICATE", `service "${key.name}" is already provided`);
    }
    this.services.set(key.name, value);
  }

  /**
   * Returns the implementation of `key`.
   * @throws ServiceError `SERVICE_MISSING` naming the key when nobody provides it
   */
  get<T>(key: ServiceKey<T>): T {
    if (!this.services.has(key.name)) {
      throw new ServiceError("SERVICE_MISSING", `service "${key.name}" is not provided by any plugin (add a plugin that provides "${key.name}")`);
    }
    return this.services.get(key.name) as T;
  }

  /** Returns the implementation of `key`, or `undefined` when absent. */
  find<T>(key: ServiceKey<T>): T | undefined {
    return this.services.get(key.name) as T | undefined;
  }

  /** Removes a service (used by plugin teardown). */
  remove<T>(key: ServiceKey<T>): void {
    this.services.delete(key.name);
  }
}
