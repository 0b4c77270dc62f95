/** One generation of reads: how many are in flight, and who waits for them to end. */
export interface ReadEpoch {
  count: number;
  waiters: (() => void)[] | undefined;
}

const RESOLVED: Promise<void> = Promise.resolve();

/**
 * Tracks reads in flight so that host clusters are reused only once no read can still be using
 * them (an RCU-like grace period): a read enters the current epoch before it looks anything up
 * and leaves it when its I/O is done; `quiesce` starts a new epoch and resolves when every read
 * of the earlier ones has left. Reads never wait.
 */
export class ReadEpochs {
  #current: ReadEpoch = { count: 0, waiters: undefined };
  /** Earlier epochs with reads still in flight. */
  #draining: ReadEpoch[] = [];

  enter(): ReadEpoch {
    const epoch = this.#current;
    epoch.count++;
    return epoch;
  }

  leave(epoch: ReadEpoch): void {
    if (--epoch.count !== 0 || epoch === this.#current) return;
    const i = this.#draining.indexOf(epoch);
    if (i >= 0) this.#draining.splice(i, 1);
    const waiters = epoch.waiters;
    epoch.waiters = undefined;
    if (waiters !== undefined) for (const wake of waiters) wake();
  }

  /** Resolves once every read that entered before this call has left. */
  quiesce(): Promise<void> {
    const epoch = this.#current;
    if (epoch.count === 0 && this.#draining.length === 0) return RESOLVED;
    this.#current = { count: 0, waiters: undefined };
    if (epoch.count > 0) this.#draining.push(epoch);
    const pending = this.#draining.slice();
    if (pending.length === 0) return RESOLVED;
    return Promise.all(pending.map((e) => new Promise<void>((resolve) => (e.waiters ??= []).push(resolve)))).then(() => undefined);
  }
}
