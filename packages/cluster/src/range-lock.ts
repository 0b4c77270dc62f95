/** A held range lock; `release` it exactly once. */
export interface RangeHandle {
  readonly first: number;
  readonly last: number;
  release(): void;
}

interface Request {
  first: number;
  last: number;
  grant: (handle: RangeHandle) => void;
}

function overlaps(aFirst: number, aLast: number, bFirst: number, bLast: number): boolean {
  return aFirst <= bLast && bFirst <= aLast;
}

/**
 * Exclusive locks on ranges of integers (guest cluster indices): a request is granted when it
 * overlaps no held range and no earlier request still waiting, so overlapping requests are served
 * in the order they were made and disjoint ones run at the same time (qemu's in-flight
 * allocation dependencies, made coarser: a whole request waits, not just its overlapping part).
 */
export class RangeLock {
  #held: RangeHandle[] = [];
  #waiting: Request[] = [];

  /** Ranges held or waited for. */
  get size(): number {
    return this.#held.length + this.#waiting.length;
  }

  /** True when `[first, last]` overlaps a held range (for tests and the read path). */
  isLocked(first: number, last: number): boolean {
    for (const h of this.#held) if (overlaps(first, last, h.first, h.last)) return true;
    return false;
  }

  /**
   * Locks `[first, last]` (inclusive) at once when nothing holds or waits for an overlapping
   * range; else undefined (then {@link acquire} waits in line).
   */
  tryAcquire(first: number, last: number): RangeHandle | undefined {
    return this.#free(first, last, this.#waiting.length) ? this.#grant(first, last) : undefined;
  }

  /** Locks `[first, last]` (inclusive), waiting for overlapping holders and earlier waiters. */
  acquire(first: number, last: number): Promise<RangeHandle> {
    if (this.#free(first, last, this.#waiting.length)) return Promise.resolve(this.#grant(first, last));
    return new Promise((resolve) => this.#waiting.push({ first, last, grant: resolve }));
  }

  /** Free of held ranges and of the first `before` waiting requests. */
  #free(first: number, last: number, before: number): boolean {
    for (const h of this.#held) if (overlaps(first, last, h.first, h.last)) return false;
    for (let i = 0; i < before; i++) {
      const w = this.#waiting[i]!;
      if (overlaps(first, last, w.first, w.last)) return false;
    }
    return true;
  }

  #grant(first: number, last: number): RangeHandle {
    let released = false;
    const handle: RangeHandle = {
      first,
      last,
      release: () => {
        if (released) return;
        released = true;
        const i = this.#held.indexOf(handle);
        if (i >= 0) this.#held.splice(i, 1);
        this.#wake();
      },
    };
    this.#held.push(handle);
    return handle;
  }

  #wake(): void {
    for (let i = 0; i < this.#waiting.length; ) {
      const w = this.#waiting[i]!;
      if (this.#free(w.first, w.last, i)) {
        this.#waiting.splice(i, 1);
        w.grant(this.#grant(w.first, w.last));
      } else {
        i++;
      }
    }
  }
}
