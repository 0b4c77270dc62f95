/**
 * One cached table (or table slice): what callers see is `CacheEntry`; `Slot` is the cache's
 * own bookkeeping behind it (LRU links, pins, dirty epochs, write-back in flight).
 */

/** A cached table. Its `bytes` belong to the cache; see `TableCache` for how long they stay valid. */
export interface CacheEntry {
  /** Byte offset of the table (slice) in the storage. */
  readonly offset: number;
  /** The table's bytes: a view owned by the cache, modified in place by callers. */
  readonly bytes: Uint8Array;
  /** True while it holds changes not yet written back. */
  readonly dirty: boolean;
  /** How many `acquire`s have not been `release`d yet. */
  readonly pins: number;
  /** False once the entry left the cache (evicted, discarded, cleared): stop using `bytes`. */
  readonly cached: boolean;
}

/** @internal */
export class Slot implements CacheEntry {
  readonly owner: object;
  readonly offset: number;
  readonly bytes: Uint8Array;
  pins = 0;
  /** Epoch of the last `markDirty`; the entry is dirty while `cleanEpoch < dirtyEpoch`. */
  dirtyEpoch = 0;
  /** Epoch whose bytes are known to be in storage. */
  cleanEpoch = 0;
  /** Value of the cache's use clock when last touched. */
  lastUse = 0;
  resident = true;
  /** Set while a write-back of this entry is in flight. */
  writing: Promise<void> | undefined = undefined;
  /** Set while a miss is writing this entry back in order to take its buffer. */
  evicting = false;
  prev: Slot | undefined = undefined;
  next: Slot | undefined = undefined;

  constructor(owner: object, offset: number, bytes: Uint8Array) {
    this.owner = owner;
    this.offset = offset;
    this.bytes = bytes;
  }

  get dirty(): boolean {
    return this.cleanEpoch < this.dirtyEpoch;
  }

  get cached(): boolean {
    return this.resident;
  }
}
