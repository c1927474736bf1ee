/** A listener function for events of payload type `T`. */
export type Listener<T> = (event: T) => void;

/**
 * A minimal typed event emitter that works in Node and browsers alike.
 * `Events` maps event names to payload types.
 */
export class Emitter<Events extends object> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never>>>();

  /**
   * Subscribes to an event.
   * @returns a function that removes the listener
   */
  on<K extends keyof Events>(name: K, listener: Listener<Events[K]>): () => void {
    let set = this.listeners.get(name);
    if (!set) this.listeners.set(name, (set = new Set()));
    set.add(listener as Listener<never>);
    return () => this.off(name, listener);
  }

  /** Subscribes to the next occurrence of an event only. */
  once<K extends keyof Events>(name: K, listener: Listener<Events[K]>): () => void {
    const off = this.on(name, (e) => {
      off();
      listener(e);
    });
    return off;
  }

  /** Removes a listener added with {@link Emitter.on}. */
  off<K extends keyof Events>(name: K, listener: Listener<Events[K]>): void {
    this.listeners.get(name)?.delete(listener as Listener<never>);
  }

  /** Calls every listener of `name` with `event`, in subscription order. */
  emit<K extends keyof Events>(name: K, event: Events[K]): void {
    const set = this.listeners.get(name);
    if (!set) return;
    for (const l of [...set]) (l as Listener<Events[K]>)(event);
  }
}
