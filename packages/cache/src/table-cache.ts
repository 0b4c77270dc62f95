import { hex, invalidArgument, isQcow2Error, MAX_CLUSTER_BITS, Qcow2Error } from '@qcow2/format';
import type { Storage } from '@qcow2/storage';
import { type CacheEntry, Slot } from './cache-entry.js';
import { MAX_CACHE_CLEAN_INTERVAL, MAX_CACHE_ENTRIES, MIN_L2_CACHE_ENTRY_SIZE } from './cache-config.js';
import { startTicker, type Ticker } from './ticker.js';
import type { MetadataStructure, WriteGuard } from './write-guard.js';

export interface TableCacheOptions {
  /** Where the tables live. Several caches may share one storage. */
  readonly storage: Storage;
  /**
   * Bytes the cache may hold (qemu's `l2-cache-size` / `refcount-cache-size`): it holds
   * `floor(capacity / entrySize)` entries, at least one.
   */
  readonly capacity: number;
  /**
   * Bytes of one entry: the cluster size, or for L2 tables a slice of it
   * (`l2-cache-entry-size`). A power of two from 512 to 2 MiB; every offset is a multiple of it.
   */
  readonly entrySize: number;
  /**
   * `cache-clean-interval` in seconds: every interval, entries unused since the previous tick
   * are written back if dirty and dropped. 0 (the default) disables it. The timer never keeps a
   * process alive and stops on `close()` / `dispose()`.
   */
  readonly cleanInterval?: number;
  /** What the entries are, for messages: `'L2 table'`, `'refcount block'`. Default `'table'`. */
  readonly name?: string;
  /** Receives the errors of background cleaning (the entries concerned stay dirty). */
  readonly onBackgroundError?: (error: Qcow2Error) => void;
  /** Asked before every write-back (metadata overlap checks); a refusal fails the write-back. */
  readonly writeGuard?: WriteGuard;
  /** What the entries are, for `writeGuard` (they may overwrite their own kind). */
  readonly structure?: MetadataStructure;
}

/** Counters for the CLI and benchmarks. */
export interface CacheStats {
  /** Lookups served from memory (`peek`, `tryAcquire`, `acquire` hits). */
  readonly hits: number;
  /** `acquire`s that found nothing cached (several may share one read). */
  readonly misses: number;
  /** Storage reads issued. */
  readonly reads: number;
  /** Entries written back to storage. */
  readonly writes: number;
  /** Entries dropped to make room for another. */
  readonly evictions: number;
  /** Entries dropped by `cleanUnused` (the clean interval). */
  readonly cleaned: number;
  /** Entries cached now. */
  readonly entries: number;
  /** Entries holding changes not yet written back. */
  readonly dirty: number;
  /** Entries pinned by at least one caller. */
  readonly pinned: number;
  /** Reads in flight. */
  readonly loading: number;
  /** Bytes of entry buffers the cache holds now (cached and loading), never above `capacity`. */
  readonly bytesInUse: number;
  /** `maxEntries × entrySize`. */
  readonly capacity: number;
}

interface Loading {
  /** Callers waiting for this read; each gets the entry with one pin. */
  waiters: number;
  promise: Promise<Slot>;
}

const RESOLVED: Promise<void> = Promise.resolve();
const MAX_ENTRY_SIZE = 2 ** MAX_CLUSTER_BITS;
const noop = (): void => {};

function validEntrySize(n: number): boolean {
  return Number.isSafeInteger(n) && n >= MIN_L2_CACHE_ENTRY_SIZE && n <= MAX_ENTRY_SIZE && (n & (n - 1)) === 0;
}

/**
 * An LRU cache of fixed-size metadata tables over a Storage: qemu's Qcow2Cache, used for L2
 * tables (or slices of them) and refcount blocks.
 *
 * Lifetime of `entry.bytes`: an entry from `peek` is not pinned and may be evicted and its
 * buffer reused as soon as the caller awaits anything; use it synchronously, or pin it
 * (`tryAcquire` / `acquire`, then `release`) to keep it across awaits. A pinned entry is never
 * evicted, discarded or reused. After changing an entry's bytes call `markDirty(entry)`.
 *
 * Write order: `setDependency(other)` makes every write-back of this cache wait until `other`
 * has been written back and the storage flushed; `dependOnStorageFlush()` makes the next
 * write-back wait for a storage flush. Call them before changing the entries that depend on it.
 */
export class TableCache {
  readonly storage: Storage;
  readonly name: string;
  readonly entrySize: number;
  /** How many entries fit. */
  readonly maxEntries: number;
  /** `maxEntries × entrySize` bytes. */
  readonly capacity: number;
  /** Seconds between cleaning passes; 0 when off. */
  readonly cleanInterval: number;

  readonly #onBackgroundError: ((error: Qcow2Error) => void) | undefined;
  readonly #guard: WriteGuard | undefined;
  readonly #structure: MetadataStructure | undefined;
  readonly #map = new Map<number, Slot>();
  /** LRU order: head is the least recently used. */
  #head: Slot | undefined = undefined;
  #tail: Slot | undefined = undefined;
  readonly #inflight = new Map<number, Loading>();
  /** Entry buffers held: cached entries plus reads in flight. Never above maxEntries. */
  #slots = 0;
  /** Misses waiting for an entry to become evictable. */
  #waiters: (() => void)[] = [];
  #clock = 0;
  #cleanMark = 0;
  #epoch = 0;
  #dirtyCount = 0;
  #pinnedCount = 0;

  #depends: TableCache | undefined = undefined;
  #dependsEpoch = 0;
  #flushWanted = 0;
  #flushDone = 0;
  #dependencyRun: Promise<void> | undefined = undefined;

  #ticker: Ticker | undefined = undefined;
  #cleaning = false;
  #closed = false;

  #hits = 0;
  #misses = 0;
  #reads = 0;
  #writes = 0;
  #evictions = 0;
  #cleaned = 0;

  constructor(options: TableCacheOptions) {
    const { storage, capacity, entrySize } = options;
    if (
      typeof storage !== 'object' ||
      storage === null ||
      typeof storage.read !== 'function' ||
      typeof storage.write !== 'function' ||
      typeof storage.flush !== 'function'
    ) {
      throw invalidArgument('table cache: storage is not a Storage');
    }
    const name = options.name ?? 'table';
    if (!validEntrySize(entrySize)) {
      throw invalidArgument(
        `${name} cache: entry size ${String(entrySize)} is not a power of two from 512 to 2 MiB`,
      );
    }
    if (!Number.isSafeInteger(capacity) || capacity < entrySize) {
      throw invalidArgument(
        `${name} cache: capacity ${String(capacity)} is not a number of bytes holding at least one ${entrySize}-byte entry`,
      );
    }
    const interval = options.cleanInterval ?? 0;
    if (!Number.isSafeInteger(interval) || interval < 0 || interval > MAX_CACHE_CLEAN_INTERVAL) {
      throw invalidArgument(`${name} cache: clean interval ${String(interval)} is not 0..${MAX_CACHE_CLEAN_INTERVAL} seconds`);
    }
    this.storage = storage;
    this.name = name;
    this.entrySize = entrySize;
    this.maxEntries = Math.min(Math.floor(capacity / entrySize), MAX_CACHE_ENTRIES);
    this.capacity = this.maxEntries * entrySize;
    this.cleanInterval = interval;
    this.#onBackgroundError = options.onBackgroundError;
    this.#guard = options.writeGuard;
    this.#structure = options.structure;
    if (interval > 0) this.#ticker = startTicker(interval * 1000, () => this.#backgroundClean());
  }

  // ---------------------------------------------------------------- lookups

  /**
   * The cached entry at `offset`, or undefined: synchronous, no I/O, no allocation. Counts a
   * hit and marks the entry as recently used. Not pinned: valid until the caller next awaits.
   */
  peek(offset: number): CacheEntry | undefined {
    const slot = this.#map.get(offset);
    if (slot === undefined) return undefined;
    this.#hits++;
    this.#touch(slot);
    return slot;
  }

  /** `peek`, pinning the entry when cached. Pair with `release`. */
  tryAcquire(offset: number): CacheEntry | undefined {
    const slot = this.#map.get(offset);
    if (slot === undefined) return undefined;
    this.#hits++;
    this.#touch(slot);
    this.#pin(slot);
    return slot;
  }

  /**
   * The entry at `offset`, pinned, reading it from storage on a miss (bytes past the end of the
   * storage read as zeros, as qemu's do). Concurrent acquires of one offset share one read.
   * A miss in a full cache evicts the least recently used unpinned entry, writing it back
   * first when dirty (after its dependencies). Pair with `release`.
   */
  acquire(offset: number): Promise<CacheEntry> {
    const slot = this.#map.get(offset);
    if (slot !== undefined) {
      this.#hits++;
      this.#touch(slot);
      this.#pin(slot);
      return Promise.resolve(slot);
    }
    return this.#acquireMiss(offset, false);
  }

  /**
   * A zero-filled entry at `offset`, pinned, without reading storage: for a table just
   * allocated. Fill it, then `markDirty` it. Rejects when the entry is cached and pinned.
   */
  acquireEmpty(offset: number): Promise<CacheEntry> {
    return this.#acquireMiss(offset, true);
  }

  /** Unpins an entry from `acquire`, `acquireEmpty` or `tryAcquire`. */
  release(entry: CacheEntry): void {
    const slot = this.#own(entry);
    if (slot.pins <= 0) {
      throw invalidArgument(`${this.name} at ${hex(slot.offset)}: released more often than acquired`);
    }
    if (--slot.pins === 0 && slot.resident) {
      this.#pinnedCount--;
      slot.lastUse = ++this.#clock;
      if (this.#waiters.length > 0) this.#wake();
    }
  }

  /** Runs `fn` with the entry pinned, releasing it afterwards (also when `fn` throws). */
  async use<T>(offset: number, fn: (entry: CacheEntry) => T | Promise<T>): Promise<T> {
    const entry = this.tryAcquire(offset) ?? (await this.acquire(offset));
    try {
      return await fn(entry);
    } finally {
      this.release(entry);
    }
  }

  /** True when `offset` is cached. No side effects (no hit counted, no LRU change). */
  has(offset: number): boolean {
    return this.#map.has(offset);
  }

  // ---------------------------------------------------------------- changes

  /** Records that `entry.bytes` changed: it will be written back before it leaves the cache. */
  markDirty(entry: CacheEntry): void {
    const slot = this.#own(entry);
    if (!slot.resident) {
      throw invalidArgument(`${this.name} at ${hex(slot.offset)}: entry is no longer cached`);
    }
    if (this.storage.readOnly) {
      throw new Qcow2Error('READ_ONLY', `${this.name} at ${hex(slot.offset)}: the storage is read-only`);
    }
    if (slot.cleanEpoch >= slot.dirtyEpoch) this.#dirtyCount++;
    slot.dirtyEpoch = ++this.#epoch;
  }

  /**
   * Forgets the entry at `offset` without writing it back: the table was freed. Waits for a
   * read or write-back of it in flight, so no stale write lands after this resolves. Rejects
   * when the entry is pinned.
   */
  async discard(offset: number): Promise<void> {
    for (;;) {
      const loading = this.#inflight.get(offset);
      if (loading !== undefined) {
        await loading.promise.then(noop, noop);
        continue;
      }
      const slot = this.#map.get(offset);
      if (slot === undefined) return;
      if (slot.pins > 0) {
        throw invalidArgument(`${this.name} at ${hex(offset)}: cannot discard, the entry is in use`);
      }
      if (slot.writing !== undefined) {
        await slot.writing.then(noop, noop);
        continue;
      }
      this.#unlink(slot);
      this.#slots--;
      this.#wake();
      return;
    }
  }

  // ---------------------------------------------------------------- write order

  /**
   * Makes this cache depend on `dependency` (qemu's qcow2_cache_set_dependency): before any
   * entry of this cache is written back, `dependency` is written back and its storage flushed.
   * To keep dependencies acyclic, first flushes `dependency`'s own dependency, and this cache's
   * previous one when it differs. Resolves at once (no allocation) when nothing must be flushed.
   */
  setDependency(dependency: TableCache): Promise<void> {
    if (typeof dependency !== 'object' || dependency === null || !(#depends in dependency) || dependency === this) {
      return Promise.reject(invalidArgument(`${this.name} cache: a cache cannot depend on ${dependency === this ? 'itself' : 'a non-cache'}`));
    }
    if (dependency.#depends === undefined && (this.#depends === undefined || this.#depends === dependency)) {
      this.#depends = dependency;
      this.#dependsEpoch++;
      return RESOLVED;
    }
    return this.#setDependencySlow(dependency);
  }

  async #setDependencySlow(dependency: TableCache): Promise<void> {
    for (;;) {
      if (dependency.#depends !== undefined) {
        await dependency.#runDependencies();
        continue;
      }
      if (this.#depends !== undefined && this.#depends !== dependency) {
        await this.#runDependencies();
        continue;
      }
      this.#depends = dependency;
      this.#dependsEpoch++;
      return;
    }
  }

  /** The next write-back of this cache first flushes the storage (qemu's depends_on_flush). */
  dependOnStorageFlush(): void {
    this.#flushWanted++;
  }

  /** The cache this one depends on, if any. */
  get dependency(): TableCache | undefined {
    return this.#depends;
  }

  // ---------------------------------------------------------------- write-back

  /**
   * Writes back every entry dirty now (dependencies first), without flushing the storage, so
   * the engine can write back several caches and flush once. Rejects with the first failure;
   * entries that failed stay dirty.
   */
  writeBack(): Promise<void> {
    if (this.#dirtyCount === 0) return RESOLVED;
    return this.#writeBackAll();
  }

  /** `writeBack()`, then `storage.flush()`: durable when it resolves (qemu's qcow2_cache_flush). */
  async flush(): Promise<void> {
    await this.writeBack();
    await this.#storageFlush();
  }

  /**
   * Writes back dirty entries and drops every entry (qemu's qcow2_cache_empty, without the
   * storage flush). Rejects when entries are pinned.
   */
  async clear(): Promise<void> {
    for (;;) {
      if (this.#pinnedCount > 0) {
        throw invalidArgument(`${this.name} cache: cannot clear, ${this.#pinnedCount} entries are in use`);
      }
      if (this.#inflight.size > 0) {
        await Promise.all([...this.#inflight.values()].map((l) => l.promise.then(noop, noop)));
        continue;
      }
      if (this.#dirtyCount > 0) {
        await this.writeBack();
        continue;
      }
      let busy: Promise<void> | undefined;
      for (let s = this.#head; s !== undefined && busy === undefined; s = s.next) busy = s.writing;
      if (busy !== undefined) {
        await busy.then(noop, noop);
        continue;
      }
      for (let s = this.#head; s !== undefined; ) {
        const next = s.next;
        this.#unlink(s);
        this.#slots--;
        s = next;
      }
      this.#wake();
      return;
    }
  }

  /**
   * One cleaning pass (what the clean interval runs): entries not used since the previous pass
   * are written back when dirty, then dropped. Rejects with the first write-back failure,
   * after dropping what it could.
   */
  async cleanUnused(): Promise<void> {
    const mark = this.#cleanMark;
    this.#cleanMark = this.#clock;
    const idle = (s: Slot): boolean => s.resident && s.pins === 0 && s.lastUse <= mark;
    let failure: unknown;
    const dirty: Slot[] = [];
    for (let s = this.#head; s !== undefined; s = s.next) if (idle(s) && s.dirty) dirty.push(s);
    if (dirty.length > 0) {
      const results = await Promise.allSettled(dirty.map((s) => this.#writeSlot(s)));
      failure = results.find((r) => r.status === 'rejected')?.reason;
    }
    for (let s = this.#head; s !== undefined; ) {
      const next = s.next;
      if (idle(s) && !s.dirty && s.writing === undefined && !s.evicting) {
        this.#unlink(s);
        this.#slots--;
        this.#cleaned++;
      }
      s = next;
    }
    this.#wake();
    if (failure !== undefined) throw failure;
  }

  /** Stops the clean timer, writes back and drops every entry; later acquires reject (CLOSED). */
  async close(): Promise<void> {
    this.#ticker?.stop();
    this.#ticker = undefined;
    if (this.#closed) return;
    await this.clear();
    this.#closed = true;
  }

  /**
   * Stops the clean timer and forgets everything, dirty entries included, without I/O: for an
   * image abandoned after a failure. Later acquires reject (CLOSED).
   */
  dispose(): void {
    this.#ticker?.stop();
    this.#ticker = undefined;
    this.#closed = true;
    for (let s = this.#head; s !== undefined; ) {
      const next = s.next;
      this.#unlink(s);
      s = next;
    }
    this.#pinnedCount = 0;
    this.#slots = 0;
    this.#wake();
  }

  // ---------------------------------------------------------------- stats

  stats(): CacheStats {
    return {
      hits: this.#hits,
      misses: this.#misses,
      reads: this.#reads,
      writes: this.#writes,
      evictions: this.#evictions,
      cleaned: this.#cleaned,
      entries: this.#map.size,
      dirty: this.#dirtyCount,
      pinned: this.#pinnedCount,
      loading: this.#inflight.size,
      bytesInUse: this.#slots * this.entrySize,
      capacity: this.capacity,
    };
  }

  /** Zeroes the counters (hits, misses, reads, writes, evictions, cleaned). */
  resetStats(): void {
    this.#hits = this.#misses = this.#reads = this.#writes = this.#evictions = this.#cleaned = 0;
  }

  // ---------------------------------------------------------------- internals

  #own(entry: CacheEntry): Slot {
    if (!(entry instanceof Slot) || entry.owner !== this) {
      throw invalidArgument(`${this.name} cache: the entry does not belong to this cache`);
    }
    return entry;
  }

  #touch(slot: Slot): void {
    if (slot !== this.#tail) {
      this.#remove(slot);
      this.#append(slot);
    }
    slot.lastUse = ++this.#clock;
  }

  #pin(slot: Slot): void {
    if (slot.pins++ === 0) this.#pinnedCount++;
  }

  #append(slot: Slot): void {
    slot.prev = this.#tail;
    slot.next = undefined;
    if (this.#tail === undefined) this.#head = slot;
    else this.#tail.next = slot;
    this.#tail = slot;
  }

  #remove(slot: Slot): void {
    if (slot.prev === undefined) this.#head = slot.next;
    else slot.prev.next = slot.next;
    if (slot.next === undefined) this.#tail = slot.prev;
    else slot.next.prev = slot.prev;
    slot.prev = slot.next = undefined;
  }

  /** Takes a cached entry out (map, LRU list, dirty count). The caller accounts for its buffer. */
  #unlink(slot: Slot): void {
    this.#map.delete(slot.offset);
    this.#remove(slot);
    slot.resident = false;
    if (slot.dirty) {
      this.#dirtyCount--;
      slot.cleanEpoch = slot.dirtyEpoch;
    }
  }

  #wake(): void {
    if (this.#waiters.length === 0) return;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }

  #checkOffset(offset: number): void {
    if (!Number.isSafeInteger(offset) || offset < 0 || offset % this.entrySize !== 0) {
      throw invalidArgument(
        `${this.name} at ${typeof offset === 'number' && Number.isSafeInteger(offset) ? hex(offset) : String(offset)}: offset is not a multiple of the entry size ${hex(this.entrySize)}`,
      );
    }
  }

  async #acquireMiss(offset: number, empty: boolean): Promise<Slot> {
    if (this.#closed) throw new Qcow2Error('CLOSED', `${this.name} cache: used after close`);
    this.#checkOffset(offset);
    if (empty && this.storage.readOnly) {
      throw new Qcow2Error('READ_ONLY', `${this.name} at ${hex(offset)}: cannot create a table, the storage is read-only`);
    }
    for (;;) {
      const slot = this.#map.get(offset);
      if (slot !== undefined) {
        if (empty) {
          if (slot.pins > 0) {
            throw invalidArgument(`${this.name} at ${hex(offset)}: cannot reuse as an empty table, the entry is in use`);
          }
          slot.bytes.fill(0);
        } else {
          this.#hits++;
        }
        this.#touch(slot);
        this.#pin(slot);
        return slot;
      }
      const loading = this.#inflight.get(offset);
      if (loading !== undefined) {
        if (empty) {
          // Let the read finish, then zero the entry it produced.
          await loading.promise.then(noop, noop);
          continue;
        }
        this.#misses++;
        loading.waiters++;
        return loading.promise;
      }
      if (!empty) this.#misses++;
      const created: Loading = { waiters: 1, promise: undefined as unknown as Promise<Slot> };
      this.#inflight.set(offset, created);
      created.promise = this.#fill(offset, empty, created);
      return created.promise;
    }
  }

  async #fill(offset: number, empty: boolean, loading: Loading): Promise<Slot> {
    let buffer: Uint8Array | undefined;
    try {
      buffer = await this.#reserve();
      if (empty) buffer.fill(0);
      else await this.#read(buffer, offset);
      if (this.#closed) throw new Qcow2Error('CLOSED', `${this.name} cache: closed while reading ${hex(offset)}`);
    } catch (error) {
      this.#inflight.delete(offset);
      if (buffer !== undefined && !this.#closed) {
        this.#slots--;
        this.#wake();
      }
      throw error;
    }
    this.#inflight.delete(offset);
    const slot = new Slot(this, offset, buffer);
    slot.pins = loading.waiters;
    this.#pinnedCount++;
    slot.lastUse = ++this.#clock;
    this.#map.set(offset, slot);
    this.#append(slot);
    return slot;
  }

  async #read(buffer: Uint8Array, offset: number): Promise<void> {
    let count: number;
    try {
      count = await this.storage.read(buffer, offset);
    } catch (error) {
      throw this.#ioError(error, `${this.name} at ${hex(offset)}: storage read failed`);
    }
    this.#reads++;
    if (!(count >= buffer.length)) buffer.fill(0, count > 0 ? count : 0);
  }

  /** A buffer for a new entry: a fresh one while below capacity, else the LRU victim's. */
  async #reserve(): Promise<Uint8Array> {
    for (;;) {
      if (this.#closed) throw new Qcow2Error('CLOSED', `${this.name} cache: used after close`);
      if (this.#slots < this.maxEntries) {
        this.#slots++;
        return new Uint8Array(this.entrySize);
      }
      const victim = this.#victim();
      if (victim === undefined) {
        await new Promise<void>((resolve) => this.#waiters.push(resolve));
        continue;
      }
      if (victim.dirty) {
        victim.evicting = true;
        try {
          await this.#writeSlot(victim);
        } finally {
          victim.evicting = false;
          this.#wake();
        }
        if (!victim.resident || victim.pins > 0 || victim.dirty || victim.writing !== undefined) continue;
      }
      this.#unlink(victim);
      this.#evictions++;
      return victim.bytes;
    }
  }

  #victim(): Slot | undefined {
    for (let s = this.#head; s !== undefined; s = s.next) {
      if (s.pins === 0 && s.writing === undefined && !s.evicting) return s;
    }
    return undefined;
  }

  async #writeBackAll(): Promise<void> {
    const dirty: Slot[] = [];
    for (let s = this.#head; s !== undefined; s = s.next) if (s.dirty) dirty.push(s);
    dirty.sort((a, b) => a.offset - b.offset);
    const results = await Promise.allSettled(dirty.map((s) => this.#writeSlot(s)));
    for (const r of results) if (r.status === 'rejected') throw r.reason;
  }

  /** Resolves once the entry's bytes as of now are in storage (or it left the cache). */
  #writeSlot(slot: Slot): Promise<void> {
    if (!slot.dirty) return RESOLVED;
    return this.#writeUntil(slot, slot.dirtyEpoch);
  }

  async #writeUntil(slot: Slot, target: number): Promise<void> {
    while (slot.resident && slot.cleanEpoch < target) {
      if (slot.writing === undefined) {
        const write: Promise<void> = this.#writeOnce(slot).finally(() => {
          if (slot.writing === write) slot.writing = undefined;
          this.#wake();
        });
        slot.writing = write;
      }
      await slot.writing;
    }
  }

  async #writeOnce(slot: Slot): Promise<void> {
    // Dependencies are checked again after every wait: the check and the snapshot of the bytes
    // below happen in one synchronous step, so a dependency set meanwhile is never skipped.
    while (this.#depends !== undefined || this.#flushWanted > this.#flushDone) {
      await this.#runDependencies();
    }
    if (!slot.resident) return;
    const epoch = slot.dirtyEpoch;
    if (slot.cleanEpoch >= epoch) return;
    const snapshot = slot.bytes.slice();
    const refused = this.#guard?.(slot.offset, snapshot.length, this.#structure);
    if (refused !== undefined) await refused;
    try {
      await this.storage.write(snapshot, slot.offset);
    } catch (error) {
      throw this.#ioError(error, `${this.name} at ${hex(slot.offset)}: write-back failed`);
    }
    this.#writes++;
    if (!slot.resident) return;
    slot.cleanEpoch = epoch;
    if (slot.cleanEpoch >= slot.dirtyEpoch) this.#dirtyCount--;
  }

  /** Satisfies the dependency and the pending storage flush; one run at a time per cache. */
  #runDependencies(): Promise<void> {
    if (this.#depends === undefined && this.#flushWanted <= this.#flushDone) return RESOLVED;
    if (this.#dependencyRun === undefined) {
      const run: Promise<void> = this.#flushDependencies().finally(() => {
        if (this.#dependencyRun === run) this.#dependencyRun = undefined;
      });
      this.#dependencyRun = run;
    }
    return this.#dependencyRun;
  }

  async #flushDependencies(): Promise<void> {
    for (;;) {
      const dependency = this.#depends;
      if (dependency !== undefined) {
        const epoch = this.#dependsEpoch;
        const wanted = this.#flushWanted;
        await dependency.flush();
        if (this.#depends === dependency && this.#dependsEpoch === epoch) this.#depends = undefined;
        if (dependency.storage === this.storage && wanted > this.#flushDone) this.#flushDone = wanted;
        continue;
      }
      if (this.#flushWanted > this.#flushDone) {
        await this.#storageFlush();
        continue;
      }
      return;
    }
  }

  async #storageFlush(): Promise<void> {
    const wanted = this.#flushWanted;
    try {
      await this.storage.flush();
    } catch (error) {
      throw this.#ioError(error, `${this.name} cache: storage flush failed`);
    }
    if (wanted > this.#flushDone) this.#flushDone = wanted;
  }

  #ioError(error: unknown, message: string): Qcow2Error {
    if (isQcow2Error(error)) return error;
    const detail = error instanceof Error ? error.message : String(error);
    return new Qcow2Error('IO', `${message}: ${detail}`, { cause: error });
  }

  #backgroundClean(): Promise<void> {
    if (this.#cleaning || this.#closed) return RESOLVED;
    this.#cleaning = true;
    return this.cleanUnused()
      .catch((error: unknown) => {
        const report = this.#onBackgroundError;
        if (report === undefined) return;
        try {
          report(isQcow2Error(error) ? error : this.#ioError(error, `${this.name} cache: cleaning failed`));
        } catch {
          // A failing reporter must not break the timer.
        }
      })
      .finally(() => {
        this.#cleaning = false;
      });
  }
}

/** Creates a table cache; see `TableCache`. */
export function createTableCache(options: TableCacheOptions): TableCache {
  return new TableCache(options);
}
