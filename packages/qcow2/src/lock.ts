// A shared/exclusive lock for async requests: reads of the mapping run
// together, anything that changes metadata runs alone. FIFO, so a stream of
// reads cannot starve a writer.

/** Shared/exclusive async lock. */
export class RwLock {
  private readers = 0;
  private writer = false;
  private readonly queue: { exclusive: boolean; wake: () => void }[] = [];

  /** Waits for shared access; returns the release function. */
  shared(): Promise<() => void> {
    if (!this.writer && this.queue.length === 0) {
      this.readers++;
      return Promise.resolve(() => this.releaseShared());
    }
    return new Promise((resolve) => this.queue.push({ exclusive: false, wake: () => resolve(() => this.releaseShared()) }));
  }

  /** Takes shared access at once if nothing waits or writes; returns the release function, or null. */
  tryShared(): (() => void) | null {
    if (this.writer || this.queue.length > 0) return null;
    this.readers++;
    return this.releaseSharedFn;
  }

  private readonly releaseSharedFn = () => this.releaseShared();

  /** Waits for exclusive access; returns the release function. */
  exclusive(): Promise<() => void> {
    if (!this.writer && this.readers === 0 && this.queue.length === 0) {
      this.writer = true;
      return Promise.resolve(() => this.releaseExclusive());
    }
    return new Promise((resolve) => this.queue.push({ exclusive: true, wake: () => resolve(() => this.releaseExclusive()) }));
  }

  private releaseShared(): void {
    this.readers--;
    this.drain();
  }

  private releaseExclusive(): void {
    this.writer = false;
    this.drain();
  }

  private drain(): void {
    while (this.queue.length > 0 && !this.writer) {
      const next = this.queue[0];
      if (next.exclusive) {
        if (this.readers > 0) return;
        this.queue.shift();
        this.writer = true;
        next.wake();
        return;
      }
      this.queue.shift();
      this.readers++;
      next.wake();
    }
  }
}
