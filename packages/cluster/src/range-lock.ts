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

/** -Infinity as a constant: a unary minus only evaluated when the lock empties would lack feedback too. */
const NO_HIGH = -Infinity;

function overlaps(aFirst: number, aLast: number, bFirst: number, bLast: number): boolean {
  return aFirst <= bLast && bFirst <= aLast;
}

/** A granted range: its place in the lock's held list, for removal in O(1). */
class Held implements RangeHandle {
  readonly first: number;
  readonly last: number;
  index: number;
  readonly #lock: RangeLock;

  constructor(lock: RangeLock, first: number, last: number, index: number) {
    this.#lock = lock;
    this.first = first;
    this.last = last;
    this.index = index;
  }

  release(): void {
    if (this.index < 0) return;
    this.#lock.unhold(this);
  }
}

/**
 * Exclusive locks on ranges of integers (guest cluster indices): a request is granted when it
 * overlaps no held range and no earlier request still waiting, so overlapping requests are served
 * in the order they were made and disjoint ones run at the same time (qemu's in-flight
 * allocation dependencies, made coarser: a whole request waits, not just its overlapping part).
 *
 * Held ranges are kept unordered with bounds of their span, so the common case of a request
 * beyond every held range (sequential I/O) is granted without a scan.
 */
export class RangeLock {
  #held: Held[] = [];
  #waiting: Request[] = [];
  /** No held range starts below this / ends above this (bounds, not exact while any is held). */
  #low = Infinity;
  #high = -Infinity;

  /** Ranges held or waited for. */
  get size(): number {
    return this.#held.length + this.#waiting.length;
  }

  /** True when `[first, last]` overlaps a held range (for tests and the read path). */
  isLocked(first: number, last: number): boolean {
    return !this.#freeOfHeld(first, last);
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

  /** Releases `held` (called once, by Held.release). */
  unhold(held: Held): void {
    const list = this.#held;
    const i = held.index;
    held.index = -1;
    const moved = list.pop()!;
    if (moved !== held) {
      list[i] = moved;
      moved.index = i;
    }
    // Stored on every release (not only once empty): a store that runs each time keeps its
    // type feedback, so optimized callers are not deoptimized the first time the lock empties.
    const empty = list.length === 0;
    this.#low = empty ? Infinity : this.#low;
    this.#high = empty ? NO_HIGH : this.#high;
    if (this.#waiting.length > 0) this.#wake();
  }

  #freeOfHeld(first: number, last: number): boolean {
    if (first > this.#high || last < this.#low) return true;
    const list = this.#held;
    for (let i = 0; i < list.length; i++) {
      const h = list[i]!;
      if (first <= h.last && h.first <= last) return false;
    }
    return true;
  }

  /** Free of held ranges and of the first `before` waiting requests. */
  #free(first: number, last: number, before: number): boolean {
    if (!this.#freeOfHeld(first, last)) return false;
    for (let i = 0; i < before; i++) {
      const w = this.#waiting[i]!;
      if (overlaps(first, last, w.first, w.last)) return false;
    }
    return true;
  }

  #grant(first: number, last: number): RangeHandle {
    const held = new Held(this, first, last, this.#held.length);
    this.#held.push(held);
    if (first < this.#low) this.#low = first;
    if (last > this.#high) this.#high = last;
    return held;
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
