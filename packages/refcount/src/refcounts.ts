import { type CacheEntry, MIN_REFCOUNT_CACHE_ENTRIES, TableCache, type WriteGuard } from '@qcow2/cache';
import {
  compressedSizeShift,
  corrupt,
  getRefcount,
  hex,
  invalidArgument,
  MAX_CLUSTER_BITS,
  MAX_REFCOUNT_TABLE_ENTRIES,
  MAX_REFTABLE_SIZE_BYTES,
  MIN_CLUSTER_BITS,
  Qcow2Error,
  REFCOUNT_TABLE_ENTRY_SIZE,
  refcountMax,
  setRefcount,
  viewOf,
} from '@qcow2/format';
import type { Storage } from '@qcow2/storage';
import { checkDiscardType, type DiscardPolicy, DiscardQueue, type DiscardRegion, type DiscardType, resolveDiscardPolicy } from './discard.js';
import { flushStorage, ioError, readZeroPadded, writeAt, writeRefcountTableHeaderFields } from './io.js';
import { readEntry } from './entries.js';
import { SerialQueue } from './lock.js';
import { refcountMetadataSize } from './metadata-size.js';
import { RefcountArray } from './refcount-array.js';
import { rebuildRefcountStructure, type RebuildResult } from './rebuild.js';

/**
 * Called after a new refcount table has been written and flushed, to point the image header at
 * it (refcount_table_offset, refcount_table_clusters). It must make the change durable before
 * it resolves; the old table is freed afterwards. It must not call back into the Refcounts.
 */
export type TableMovedCallback = (tableOffset: number, tableClusters: number) => void | Promise<void>;

export interface RefcountsOptions {
  readonly storage: Storage;
  /** log2 of the cluster size, 9..21. */
  readonly clusterBits: number;
  /** refcount_order, 0..6 (refcount_bits = 1 << order). */
  readonly refcountOrder: number;
  /** refcount_table_offset from the header. */
  readonly tableOffset: number;
  /** refcount_table_clusters from the header. */
  readonly tableClusters: number;
  /**
   * The refcount block cache (entry size = cluster size). Without one, a cache of
   * `cacheSize` bytes is created and closed with the Refcounts.
   */
  readonly cache?: TableCache;
  /** Bytes of the cache created when `cache` is absent; default 4 clusters (qemu's minimum). */
  readonly cacheSize?: number;
  /**
   * The L2 table cache, for qemu's write order: decreases make refcount blocks wait for L2
   * tables; allocBytes makes L2 tables wait for refcount blocks; a freed cluster's L2 slices
   * are dropped; the L2 cache is flushed before a refcount block is allocated.
   */
  readonly l2Cache?: TableCache;
  /** qemu's pass-discard-* options. */
  readonly discard?: DiscardPolicy;
  /**
   * Points the header at a new refcount table. Default: write the two fields at offset 48 of
   * `storage` and flush (what qemu does).
   */
  readonly onTableMoved?: TableMovedCallback;
  /**
   * Asked before the refcount table is written (an entry in place, or a new table); refcount
   * blocks are guarded by the cache's own `writeGuard`.
   */
  readonly writeGuard?: WriteGuard;
}

/** A refcount table entry that cannot be used as it is. */
export interface RefcountTableProblem {
  readonly index: number;
  readonly message: string;
  /** False when the entry's offset cannot be used at all (unaligned, above 2^53). */
  readonly usable: boolean;
}

/** A cluster range of the refcount structure itself. */
export interface RefcountStructureRange {
  readonly kind: 'table' | 'block';
  readonly offset: number;
  readonly length: number;
  /** Table index of a block. */
  readonly index?: number;
}

/** [first cluster, end cluster) that block allocation must not use. */
type Avoid = readonly (readonly [number, number])[];

const NO_AVOID: Avoid = [];
const TWO_POW_32 = 0x1_0000_0000;

function isSize(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/**
 * Whether entries [from, to) of a refcount block are all 0. 16-bit refcounts (the default) are
 * read in place; the loop is its own small function so that the JIT compiles it, not the switch
 * of readEntry inlined into #allocInCachedBlock.
 */
function allZero(bytes: Uint8Array, from: number, to: number, order: number): boolean {
  if (order === 4) {
    for (let i = from * 2; i < to * 2; i++) if (bytes[i] !== 0) return false;
    return true;
  }
  for (let c = from; c < to; c++) if (readEntry(bytes, c, order) !== 0) return false;
  return true;
}

/** Sets entries [from, to) of a refcount block to 1 (see allZero). */
function setOnes(bytes: Uint8Array, from: number, to: number, order: number): void {
  if (order === 4) {
    for (let c = from; c < to; c++) {
      bytes[c * 2] = 0;
      bytes[c * 2 + 1] = 1;
    }
    return;
  }
  for (let c = from; c < to; c++) setRefcount(bytes, c, order, 1);
}

function inAvoid(cluster: number, avoid: Avoid): boolean {
  for (const [start, end] of avoid) if (cluster >= start && cluster < end) return true;
  return false;
}

/**
 * The refcounts of a qcow2 image: its refcount table (held in memory) and refcount blocks
 * (through a TableCache), as qemu's block/qcow2-refcount.c keeps them. Every width 1..64 bits,
 * cluster sizes 512 B..2 MiB.
 *
 * Operations run one at a time (calls made concurrently queue up). They reject only with a
 * Qcow2Error: CORRUPT for inconsistent metadata (a refcount that would drop below 0, a refcount
 * block offset that is not cluster-aligned), INVALID_ARGUMENT for a refcount that would exceed
 * the width's maximum ("refcount overflow") and for bad arguments, UNSUPPORTED when the
 * refcount table would exceed qemu's 8 MiB, IO from the storage.
 *
 * Write order (crash safety, as qemu): a new refcount block is written and flushed before the
 * table entry that points to it; a new table and its blocks are written and flushed before the
 * header is switched; the old table is freed only after that.
 */
export class Refcounts {
  readonly storage: Storage;
  readonly clusterBits: number;
  readonly clusterSize: number;
  readonly refcountOrder: number;
  /** refcount_bits. */
  readonly refcountBits: number;
  /** Largest refcount an entry holds (2^bits − 1; 2^53 − 1 for 64 bits). */
  readonly refcountMax: number;
  /** Clusters described by one refcount block. */
  readonly blockEntries: number;
  /** The refcount block cache. */
  readonly cache: TableCache;

  readonly #ownsCache: boolean;
  readonly #l2Cache: TableCache | undefined;
  readonly #passDiscard: Readonly<Record<DiscardType, boolean>>;
  readonly #onTableMoved: TableMovedCallback;
  readonly #guard: WriteGuard | undefined;
  readonly #queue = new SerialQueue();
  readonly #discards = new DiscardQueue();

  #tableOffset = 0;
  #tableSize = 0;
  /** The table as on disk (entries big-endian, reserved bits kept). */
  #tableBytes: Uint8Array = new Uint8Array(0);
  /** Decoded block offsets; 0 = none, -1 = unusable (see #problems). */
  #offsets: Float64Array = new Float64Array(0);
  #problems = new Map<number, RefcountTableProblem>();
  /** Index of the last non-zero entry, -1 when none (qemu's max_refcount_table_index). */
  #maxIndex = -1;
  #version = 0;

  #freeClusterIndex = 0;
  #freeByteOffset = 0;
  #cacheDiscards = false;
  #closed = false;

  private constructor(options: RefcountsOptions, cache: TableCache, ownsCache: boolean) {
    this.storage = options.storage;
    this.clusterBits = options.clusterBits;
    this.clusterSize = 2 ** options.clusterBits;
    this.refcountOrder = options.refcountOrder;
    this.refcountBits = 1 << options.refcountOrder;
    this.refcountMax = refcountMax(options.refcountOrder);
    this.blockEntries = 2 ** (options.clusterBits + 3 - options.refcountOrder);
    this.cache = cache;
    this.#ownsCache = ownsCache;
    this.#l2Cache = options.l2Cache;
    this.#passDiscard = resolveDiscardPolicy(options.discard);
    this.#guard = options.writeGuard;
    const storage = options.storage;
    this.#onTableMoved = options.onTableMoved ?? ((offset, clusters) => writeRefcountTableHeaderFields(storage, offset, clusters));
  }

  /**
   * Loads the refcount table described by the header fields in `options` (qemu's
   * qcow2_refcount_init). An image without a table (0 clusters) is refused (CORRUPT): use
   * `rebuildRefcountStructure` to give it one. The table size is checked against qemu's 8 MiB limit before anything
   * is allocated; parts of the table past the end of the file read as zeros. Table entries with
   * reserved bits set are used with those bits masked (as qemu does); entries that are not
   * cluster-aligned or lie above 2^53 are kept but refused (CORRUPT) when used. Both are listed
   * by `tableProblems()`.
   */
  static async open(options: RefcountsOptions): Promise<Refcounts> {
    if (typeof options !== 'object' || options === null) throw invalidArgument('refcounts: options are missing');
    const { storage, clusterBits, refcountOrder, tableOffset, tableClusters } = options;
    if (typeof storage !== 'object' || storage === null || typeof storage.read !== 'function') {
      throw invalidArgument('refcounts: storage is not a Storage');
    }
    if (!Number.isInteger(clusterBits) || clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
      throw invalidArgument(`refcounts: cluster bits ${String(clusterBits)} is not in ${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS}`);
    }
    refcountMax(refcountOrder); // checks the order
    const clusterSize = 2 ** clusterBits;
    if (!isSize(tableOffset)) throw invalidArgument(`refcount table offset ${String(tableOffset)} is not an offset`);
    if (!isSize(tableClusters)) throw invalidArgument(`refcount table clusters ${String(tableClusters)} is not a count`);
    if (tableClusters === 0) {
      // Everything would look free, the header included (qemu refuses to open such an image).
      throw corrupt('image does not contain a reference count table (refcount_table_clusters is 0)');
    }
    if (tableOffset % clusterSize !== 0) {
      throw corrupt(`refcount table offset ${hex(tableOffset)} is not cluster-aligned (cluster size ${clusterSize})`);
    }
    if (tableClusters * clusterSize > MAX_REFTABLE_SIZE_BYTES) {
      throw corrupt(
        `refcount table at ${hex(tableOffset)}: ${tableClusters} clusters (${tableClusters * clusterSize} bytes) exceed qemu's ${MAX_REFTABLE_SIZE_BYTES}-byte limit`,
      );
    }
    if (options.discard !== undefined) resolveDiscardPolicy(options.discard);
    if (options.onTableMoved !== undefined && typeof options.onTableMoved !== 'function') {
      throw invalidArgument('refcounts: onTableMoved is not a function');
    }
    let cache = options.cache;
    let owns = false;
    if (cache !== undefined) {
      if (!(cache instanceof TableCache) || cache.entrySize !== clusterSize || cache.storage !== storage) {
        throw invalidArgument(`refcounts: the cache must be a TableCache over the same storage with ${clusterSize}-byte entries`);
      }
    } else {
      const capacity = options.cacheSize ?? MIN_REFCOUNT_CACHE_ENTRIES * clusterSize;
      cache = new TableCache({ storage, capacity, entrySize: clusterSize, name: 'refcount block' });
      owns = true;
    }
    const refcounts = new Refcounts(options, cache, owns);
    const bytes = new Uint8Array(tableClusters * clusterSize);
    if (bytes.length > 0) await readZeroPadded(storage, bytes, tableOffset, `refcount table at ${hex(tableOffset)}`);
    refcounts.#adoptTable(tableOffset, bytes);
    return refcounts;
  }

  // ------------------------------------------------------------------ state

  /** refcount_table_offset. */
  get tableOffset(): number {
    return this.#tableOffset;
  }

  /** refcount_table_clusters. */
  get tableClusters(): number {
    return (this.#tableSize * REFCOUNT_TABLE_ENTRY_SIZE) / this.clusterSize;
  }

  /** Entries in the refcount table. */
  get tableEntries(): number {
    return this.#tableSize;
  }

  /** Changes whenever the table or one of its entries changes (for callers that index `structure()`). */
  get structureVersion(): number {
    return this.#version;
  }

  /** Where the next first-fit search starts (qemu's free_cluster_index), a cluster index. */
  get freeClusterIndex(): number {
    return this.#freeClusterIndex;
  }

  /** Where allocBytes continues (qemu's free_byte_offset); 0 when it starts a new cluster. */
  get freeByteOffset(): number {
    return this.#freeByteOffset;
  }

  /**
   * While true, discards of freed clusters are queued (and coalesced) instead of being sent
   * at the end of each update (qemu's cache_discards, used around snapshot operations). They
   * are sent by `processDiscards()`, or before the next allocation. Setting it back to false
   * does not send them.
   */
  get cacheDiscards(): boolean {
    return this.#cacheDiscards;
  }

  set cacheDiscards(value: boolean) {
    if (typeof value !== 'boolean') throw invalidArgument(`refcounts: cacheDiscards ${String(value)} is not a boolean`);
    this.#cacheDiscards = value;
  }

  /** Discard regions waiting to be sent. */
  pendingDiscards(): DiscardRegion[] {
    return this.#discards.regions();
  }

  /** Entries of the refcount table that are not valid, in index order. */
  tableProblems(): RefcountTableProblem[] {
    return [...this.#problems.values()].sort((a, b) => a.index - b.index);
  }

  /**
   * The offset of refcount block `index` (0 when it is not allocated or past the table).
   * CORRUPT for an unusable entry.
   */
  blockOffset(index: number): number {
    if (!isSize(index)) throw invalidArgument(`refcount table index ${String(index)} is not an index`);
    return this.#blockOffset(index);
  }

  /** The clusters of the refcount structure: the table, then each usable block in table order. */
  structure(): RefcountStructureRange[] {
    const out: RefcountStructureRange[] = [];
    if (this.#tableSize > 0) {
      out.push({ kind: 'table', offset: this.#tableOffset, length: this.#tableSize * REFCOUNT_TABLE_ENTRY_SIZE });
    }
    for (let i = 0; i < this.#tableSize; i++) {
      const offset = this.#offsets[i]!;
      if (offset > 0) out.push({ kind: 'block', offset, length: this.clusterSize, index: i });
    }
    return out;
  }

  // ------------------------------------------------------------------ public operations

  /** The refcount of host cluster `clusterIndex` (0 past the table or without a block). */
  get(clusterIndex: number): Promise<number> {
    return this.#run(async () => {
      if (!isSize(clusterIndex)) throw invalidArgument(`refcount of cluster ${String(clusterIndex)}: not a cluster index`);
      return this.#get(clusterIndex);
    });
  }

  /**
   * Calls `visit(cluster, refcount)` for every cluster in `[first, end)`, in order, reading each
   * refcount block once. `refcount` is -1 where it cannot be read (an unusable table entry, a
   * failed block read), as qemu's check counts "Can't get refcount" errors and goes on.
   */
  scan(first: number, end: number, visit: (cluster: number, refcount: number) => void): Promise<void> {
    return this.#run(async () => {
      if (!isSize(first) || !isSize(end)) throw invalidArgument(`refcount scan: ${String(first)}..${String(end)} is not a cluster range`);
      if (typeof visit !== 'function') throw invalidArgument('refcount scan: visit is not a function');
      const be = this.blockEntries;
      const order = this.refcountOrder;
      for (let c = first; c < end; ) {
        const index = Math.floor(c / be);
        const base = index * be;
        const stop = Math.min(end, base + be);
        let block = -1;
        let entry: CacheEntry | undefined;
        try {
          block = this.#blockOffset(index);
          if (block !== 0) entry = await this.#acquire(block);
        } catch {
          block = -1;
        }
        try {
          for (; c < stop; c++) {
            visit(c, block < 0 ? -1 : entry === undefined ? 0 : readEntry(entry.bytes, c - base, order));
          }
        } finally {
          if (entry !== undefined) this.cache.release(entry);
        }
      }
    });
  }

  /**
   * Adds `delta` (an integer, negative to decrease) to the refcount of every cluster touched by
   * `[offset, offset + length)` (qemu's update_refcount). All or nothing: on failure the
   * clusters already changed are changed back. Above refcountMax: INVALID_ARGUMENT ("refcount
   * overflow", naming the cluster and width); below 0: CORRUPT. Missing refcount blocks are
   * allocated for increases (never inside the range itself). `type` decides whether clusters
   * that drop to 0 are discarded on the storage.
   */
  update(offset: number, length: number, delta: number, type: DiscardType = 'never'): Promise<void> {
    return this.#run(async () => {
      this.#checkRange(offset, length, 'refcount update');
      if (!Number.isSafeInteger(delta)) throw invalidArgument(`refcount update: delta ${String(delta)} is not an integer`);
      checkDiscardType(type);
      if (delta === 0 || length === 0) return;
      await this.#update(offset, length, delta, type, NO_AVOID);
    });
  }

  /** Decreases by one the refcount of every cluster touched by the range (qcow2_free_clusters). */
  free(offset: number, length: number, type: DiscardType): Promise<void> {
    return this.#run(async () => {
      this.#checkRange(offset, length, 'free');
      checkDiscardType(type);
      if (length === 0) return;
      await this.#update(offset, length, -1, type, NO_AVOID);
    });
  }

  /**
   * Allocates `count` contiguous clusters, first fit from the free cluster index (qemu's
   * qcow2_alloc_clusters); their refcounts become 1. Returns the host offset of the first.
   */
  allocClusters(count: number): Promise<number> {
    return this.#run(async () => {
      if (!Number.isSafeInteger(count) || count < 1 || count * this.clusterSize > Number.MAX_SAFE_INTEGER) {
        throw invalidArgument(`allocate clusters: ${String(count)} is not a positive number of clusters`);
      }
      const cached = this.#allocInCachedBlock(count);
      if (cached >= 0) return cached * this.clusterSize;
      const first = await this.#findFree(count, NO_AVOID);
      await this.#update(first * this.clusterSize, count * this.clusterSize, 1, 'never', NO_AVOID);
      return first * this.clusterSize;
    });
  }

  /**
   * Allocates as many of the `count` clusters at `offset` as are free, stopping at the first
   * one in use (qemu's qcow2_alloc_clusters_at). Returns how many were allocated (0..count).
   */
  allocAt(offset: number, count: number): Promise<number> {
    return this.#run(async () => {
      if (!isSize(offset) || offset % this.clusterSize !== 0) {
        throw invalidArgument(`allocate at ${String(offset)}: not a cluster-aligned offset`);
      }
      if (!isSize(count) || offset + count * this.clusterSize > Number.MAX_SAFE_INTEGER) {
        throw invalidArgument(`allocate at ${hex(offset)}: ${String(count)} is not a number of clusters`);
      }
      if (count === 0) return 0;
      const first = offset / this.clusterSize;
      let free = 0;
      while (free < count && (await this.#get(first + free)) === 0) free++;
      if (free > 0) await this.#update(offset, free * this.clusterSize, 1, 'never', NO_AVOID);
      return free;
    });
  }

  /**
   * Allocates `size` bytes (1..clusterSize) for a compressed cluster (qemu's qcow2_alloc_bytes):
   * packed after the previous allocation while it fits, possibly spilling into the next cluster
   * when that one is the next free one, else at the start of a newly allocated cluster. The
   * refcount of every host cluster the bytes touch goes up by one, so a cluster holding n
   * compressed clusters has refcount n. Returns the host byte offset.
   */
  allocBytes(size: number): Promise<number> {
    return this.#run(async () => {
      if (!Number.isSafeInteger(size) || size < 1 || size > this.clusterSize) {
        throw invalidArgument(`allocate bytes: size ${String(size)} is not in 1..${this.clusterSize}`);
      }
      const cs = this.clusterSize;
      let offset = this.#freeByteOffset;
      if (offset !== 0 && (await this.#get(Math.floor(offset / cs))) >= this.refcountMax) offset = 0;
      let freeInCluster = cs - (offset % cs);
      if (offset === 0 || freeInCluster < size) {
        const fresh = (await this.#findFree(1, NO_AVOID)) * cs;
        if (fresh === 0) {
          throw corrupt('allocate bytes: preventing invalid allocation of compressed cluster at offset 0');
        }
        if (offset === 0 || Math.ceil(offset / cs) * cs !== fresh) {
          offset = fresh;
          freeInCluster = cs;
        } else {
          freeInCluster += cs;
        }
      }
      const limit = 2 ** compressedSizeShift(this.clusterBits);
      if (offset + size > limit) {
        throw new Qcow2Error('UNSUPPORTED', `allocate bytes: offset ${hex(offset)} is beyond what a compressed cluster descriptor can address (${hex(limit)})`);
      }
      await this.#update(offset, size, 1, 'never', NO_AVOID);
      if (this.#l2Cache !== undefined) await this.#l2Cache.setDependency(this.cache);
      this.#freeByteOffset = (offset + size) % cs === 0 ? 0 : offset + size;
      return offset;
    });
  }

  /** Sends the queued discards to the storage (qemu's qcow2_process_discards). */
  processDiscards(): Promise<void> {
    return this.#run(() => this.#discards.process(this.storage));
  }

  /** Writes back dirty refcount blocks (after their dependencies) and flushes the storage. */
  flush(): Promise<void> {
    return this.#run(() => this.cache.flush());
  }

  /**
   * Replaces the refcount structure with one built from `counts` (see rebuildRefcountStructure),
   * placed where it overlaps neither a cluster counted there nor the current structure, and
   * switches to it. The cache is emptied first (dirty blocks written back).
   */
  rebuild(counts: RefcountArray): Promise<RebuildResult> {
    return this.#run(async () => {
      if (!(counts instanceof RefcountArray) || counts.clusterBits !== this.clusterBits || counts.refcountOrder !== this.refcountOrder) {
        throw invalidArgument(
          `rebuild: the counts must be a RefcountArray with cluster bits ${this.clusterBits} and refcount order ${this.refcountOrder}`,
        );
      }
      await this.cache.clear();
      const avoid = this.structure().map((r) => [r.offset, r.length] as const);
      const guard = this.#guard;
      const result = await rebuildRefcountStructure({
        storage: this.storage,
        counts,
        avoid,
        onTableMoved: this.#onTableMoved,
        ...(guard === undefined ? {} : { writeGuard: (offset: number, length: number) => guard(offset, length) }),
      });
      this.#adoptTable(result.tableOffset, result.table);
      this.#freeClusterIndex = 0;
      this.#freeByteOffset = 0;
      return result;
    });
  }

  /** Flushes, then releases the cache when the Refcounts created it. Later calls reject (CLOSED). */
  close(): Promise<void> {
    return this.#queue.run(async () => {
      if (this.#closed) return;
      await this.cache.flush();
      await this.#discards.process(this.storage);
      this.#closed = true;
      if (this.#ownsCache) await this.cache.close();
    });
  }

  /** Forgets everything without I/O (an image abandoned after a failure). */
  dispose(): void {
    this.#closed = true;
    this.#discards.take();
    if (this.#ownsCache) this.cache.dispose();
  }

  // ------------------------------------------------------------------ internals

  #run<T>(fn: () => Promise<T>): Promise<T> {
    return this.#queue.run(async () => {
      if (this.#closed) throw new Qcow2Error('CLOSED', 'refcounts: used after close');
      return fn();
    });
  }

  #checkRange(offset: number, length: number, what: string): void {
    if (!isSize(offset) || !isSize(length) || offset + length > Number.MAX_SAFE_INTEGER) {
      throw invalidArgument(`${what}: range ${String(offset)}+${String(length)} is not within 0..2^53`);
    }
  }

  #adoptTable(tableOffset: number, bytes: Uint8Array): void {
    const size = bytes.length / REFCOUNT_TABLE_ENTRY_SIZE;
    const offsets = new Float64Array(size);
    const problems = new Map<number, RefcountTableProblem>();
    const view = viewOf(bytes);
    let maxIndex = -1;
    for (let i = 0; i < size; i++) {
      const hi = view.getUint32(i * 8);
      const lo = view.getUint32(i * 8 + 4);
      if (hi === 0 && lo === 0) continue;
      maxIndex = i;
      const where = `refcount table entry ${i} at ${hex(tableOffset + i * 8)}`;
      if (hi > 0x1f_ffff) {
        problems.set(i, { index: i, usable: false, message: `${where}: block offset 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} exceeds 2^53` });
        offsets[i] = -1;
        continue;
      }
      const offset = hi * TWO_POW_32 + ((lo & ~0x1ff) >>> 0);
      if ((lo & 0x1ff) !== 0) {
        problems.set(i, { index: i, usable: true, message: `${where}: reserved bits are set (${hex(lo & 0x1ff)})` });
      }
      if (offset % this.clusterSize !== 0) {
        problems.set(i, { index: i, usable: false, message: `${where}: refcount block offset ${hex(offset)} is not cluster-aligned` });
        offsets[i] = -1;
        continue;
      }
      offsets[i] = offset;
    }
    this.#tableOffset = tableOffset;
    this.#tableSize = size;
    this.#tableBytes = bytes;
    this.#offsets = offsets;
    this.#problems = problems;
    this.#maxIndex = maxIndex;
    this.#version++;
  }

  #blockOffset(index: number): number {
    if (index >= this.#tableSize) return 0;
    const offset = this.#offsets[index]!;
    if (offset < 0) throw corrupt(this.#problems.get(index)?.message ?? `refcount table entry ${index} is unusable`);
    return offset;
  }

  async #acquire(offset: number): Promise<CacheEntry> {
    return this.cache.tryAcquire(offset) ?? (await this.cache.acquire(offset));
  }

  async #get(cluster: number): Promise<number> {
    const index = Math.floor(cluster / this.blockEntries);
    const block = this.#blockOffset(index);
    if (block === 0) return 0;
    const at = cluster - index * this.blockEntries;
    const cached = this.cache.peek(block);
    if (cached !== undefined) return readEntry(cached.bytes, at, this.refcountOrder);
    const entry = await this.cache.acquire(block);
    try {
      return readEntry(entry.bytes, at, this.refcountOrder);
    } finally {
      this.cache.release(entry);
    }
  }

  /**
   * allocClusters' section in one synchronous step when it needs no I/O: the `count` clusters
   * from the free cluster index are all free and described by one refcount block that exists and
   * is cached (sequential allocation on a growing image). Their refcounts become 1 and the index
   * moves past them, as #findFree + #update would do. Returns the first cluster, or -1 with
   * nothing changed (then #findFree + #update do it, checks and errors included).
   */
  #allocInCachedBlock(count: number): number {
    if (this.#cacheDiscards && this.#discards.size > 0) return -1;
    const be = this.blockEntries;
    const order = this.refcountOrder;
    const first = this.#freeClusterIndex;
    const index = Math.floor(first / be);
    const base = index * be;
    if (first + count > base + be || index >= this.#tableSize) return -1;
    const block = this.#offsets[index]!;
    if (block <= 0) return -1;
    const entry = this.cache.tryAcquire(block);
    if (entry === undefined) return -1;
    try {
      const bytes = entry.bytes;
      if (!allZero(bytes, first - base, first - base + count, order)) return -1;
      // Marked dirty first: a refusal (read-only storage) comes before anything has changed,
      // and the general path then names it.
      try {
        this.cache.markDirty(entry);
      } catch {
        return -1;
      }
      setOnes(bytes, first - base, first - base + count, order);
    } finally {
      this.cache.release(entry);
    }
    this.#freeClusterIndex = first + count;
    return first;
  }

  /**
   * First fit of `count` free clusters from the free cluster index, which moves past them
   * (qemu's alloc_clusters_noref): nothing is marked used. Clusters in `avoid` count as used.
   */
  async #findFree(count: number, avoid: Avoid): Promise<number> {
    if (this.#cacheDiscards && this.#discards.size > 0) await this.#discards.process(this.storage);
    const be = this.blockEntries;
    const order = this.refcountOrder;
    const maxCluster = Math.floor(Number.MAX_SAFE_INTEGER / this.clusterSize);
    let run = 0;
    while (run < count) {
      const c = this.#freeClusterIndex;
      if (c + count - run > maxCluster) {
        throw new Qcow2Error('UNSUPPORTED', `allocate ${count} clusters: no free range below 2^53 (search reached cluster ${c})`);
      }
      const index = Math.floor(c / be);
      const base = index * be;
      const end = base + be;
      const block = this.#blockOffset(index);
      const entry = block === 0 ? undefined : await this.#acquire(block);
      let i = c;
      try {
        for (; i < end && run < count; i++) {
          if ((avoid.length > 0 && inAvoid(i, avoid)) || (entry !== undefined && readEntry(entry.bytes, i - base, order) !== 0)) {
            run = 0;
          } else {
            run++;
          }
        }
      } finally {
        if (entry !== undefined) this.cache.release(entry);
      }
      this.#freeClusterIndex = i;
    }
    return this.#freeClusterIndex - count;
  }

  /**
   * qemu's update_refcount: adds `delta` to each cluster of the range, allocating missing
   * blocks for increases (outside the range and `avoid`), undoing on failure.
   */
  async #update(offset: number, length: number, delta: number, type: DiscardType, avoid: Avoid): Promise<void> {
    const cs = this.clusterSize;
    const be = this.blockEntries;
    const order = this.refcountOrder;
    const first = Math.floor(offset / cs);
    const last = Math.floor((offset + length - 1) / cs);
    if (delta < 0 && this.#l2Cache !== undefined) await this.cache.setDependency(this.#l2Cache);
    const blockAvoid: Avoid = delta > 0 ? [...avoid, [first, last + 1]] : avoid;
    const freed: number[] = [];
    let entry: CacheEntry | undefined;
    let entryIndex = -1;
    let done = first;
    try {
      for (let c = first; c <= last; c++) {
        const index = Math.floor(c / be);
        if (index !== entryIndex) {
          if (entry !== undefined) this.cache.release(entry);
          entry = undefined;
          entryIndex = -1;
          if (delta > 0) await this.#ensureBlock(index, blockAvoid);
          const block = this.#blockOffset(index);
          if (block === 0) {
            throw corrupt(`refcount underflow: ${this.#describe(c)} has refcount 0 (no refcount block), cannot decrease it by ${-delta}`);
          }
          entry = await this.#acquire(block);
          entryIndex = index;
        }
        const at = c - index * be;
        const old = getRefcount(entry!.bytes, at, order);
        const value = old + delta;
        if (value < 0) {
          throw corrupt(`refcount underflow: ${this.#describe(c)} has refcount ${old}, cannot decrease it by ${-delta}`);
        }
        if (value > this.refcountMax) {
          throw invalidArgument(
            `refcount overflow: ${this.#describe(c)} has refcount ${old}, adding ${delta} exceeds the maximum ${this.refcountMax} of ${this.refcountBits}-bit refcounts`,
          );
        }
        setRefcount(entry!.bytes, at, order, value);
        this.cache.markDirty(entry!);
        done = c + 1;
        if (value === 0) freed.push(c);
      }
    } catch (error) {
      if (entry !== undefined) this.cache.release(entry);
      entry = undefined;
      if (done > first) {
        try {
          await this.#update(first * cs, (done - first) * cs, -delta, 'never', NO_AVOID);
        } catch {
          // Best effort, as qemu's undo in update_refcount.
        }
      }
      throw error;
    }
    if (entry !== undefined) this.cache.release(entry);
    if (freed.length > 0) await this.#afterFree(freed, type);
  }

  /** Bookkeeping for clusters whose refcount reached 0. */
  async #afterFree(freed: readonly number[], type: DiscardType): Promise<void> {
    const cs = this.clusterSize;
    const pass = this.#passDiscard[type];
    for (const c of freed) {
      if (c < this.#freeClusterIndex) this.#freeClusterIndex = c;
      // Never pack more compressed data into a cluster that was freed (it may be reused whole).
      if (this.#freeByteOffset !== 0 && Math.floor(this.#freeByteOffset / cs) === c) this.#freeByteOffset = 0;
      const offset = c * cs;
      // A freed refcount block or L2 table must not be written back over the cluster's next use.
      if (this.cache.has(offset)) {
        try {
          await this.cache.discard(offset);
        } catch {
          // Pinned elsewhere: left to its holder.
        }
      }
      const l2 = this.#l2Cache;
      if (l2 !== undefined) {
        for (let slice = offset; slice < offset + cs; slice += l2.entrySize) {
          if (!l2.has(slice)) continue;
          try {
            await l2.discard(slice);
          } catch {
            // Pinned by the cluster layer: left to its holder.
          }
        }
      }
      if (pass) this.#discards.add(offset, cs);
    }
    if (!this.#cacheDiscards && this.#discards.size > 0) await this.#discards.process(this.storage);
  }

  /**
   * Makes sure refcount block `index` exists, allocating it (and growing the table) when it
   * does not (qemu's alloc_refcount_block). The new block is placed first fit outside `avoid`.
   */
  async #ensureBlock(index: number, avoid: Avoid): Promise<void> {
    if (index < this.#tableSize && this.#blockOffset(index) !== 0) return;
    if (index >= MAX_REFCOUNT_TABLE_ENTRIES) {
      throw new Qcow2Error(
        'UNSUPPORTED',
        `refcount block ${index} would need a refcount table above qemu's ${MAX_REFTABLE_SIZE_BYTES}-byte limit`,
      );
    }
    const cs = this.clusterSize;
    const be = this.blockEntries;
    // The refcount table is about to change: L2 tables go first (qemu flushes the L2 cache here).
    if (this.#l2Cache !== undefined) await this.#l2Cache.flush();
    const cluster = await this.#findFree(1, avoid);
    const blockOffset = cluster * cs;
    const ownIndex = Math.floor(cluster / be);
    let entry: CacheEntry;
    if (ownIndex === index) {
      // The block describes itself.
      entry = await this.cache.acquireEmpty(blockOffset);
      setRefcount(entry.bytes, cluster - ownIndex * be, this.refcountOrder, 1);
    } else {
      // Described by another block (which may have to be allocated first).
      await this.#update(blockOffset, cs, 1, 'never', avoid);
      if (index < this.#tableSize && this.#blockOffset(index) !== 0) {
        // Growing the table for the other block created this one too.
        await this.#update(blockOffset, cs, -1, 'never', NO_AVOID);
        return;
      }
      await this.cache.flush();
      entry = await this.cache.acquireEmpty(blockOffset);
    }
    try {
      this.cache.markDirty(entry);
      await this.cache.flush();
    } finally {
      this.cache.release(entry);
    }
    if (index < this.#tableSize) {
      await this.#hookBlock(index, blockOffset);
      return;
    }
    // The table must grow: new structures go after everything described so far, and after
    // the ranges being allocated.
    let start = Math.max(index + 1, ownIndex + 1) * be;
    for (const [, end] of avoid) start = Math.max(start, end);
    await this.#refcountArea(start * cs, 0, false, index, blockOffset);
  }

  /** Points table entry `index` at a block already written and flushed; flushes the entry. */
  async #hookBlock(index: number, blockOffset: number): Promise<void> {
    const entry = new Uint8Array(REFCOUNT_TABLE_ENTRY_SIZE);
    const view = viewOf(entry);
    view.setUint32(0, Math.floor(blockOffset / TWO_POW_32));
    view.setUint32(4, blockOffset >>> 0);
    const at = this.#tableOffset + index * REFCOUNT_TABLE_ENTRY_SIZE;
    const refused = this.#guard?.(at, REFCOUNT_TABLE_ENTRY_SIZE, 'refcount-table');
    if (refused !== undefined) await refused;
    await writeAt(this.storage, entry, at, `refcount table entry ${index} at ${hex(at)}`);
    await flushStorage(this.storage, `refcount table entry ${index} at ${hex(at)}`);
    this.#tableBytes.set(entry, index * REFCOUNT_TABLE_ENTRY_SIZE);
    this.#offsets[index] = blockOffset;
    this.#problems.delete(index);
    if (index > this.#maxIndex) this.#maxIndex = index;
    this.#version++;
  }

  /**
   * qemu's qcow2_refcount_area: from `startOffset` (past everything in use), new refcount blocks
   * and a new, larger table that describe themselves and `additionalClusters` clusters after
   * them; written and flushed, then the header is switched and the old table freed. With
   * `newOffset` > 0, entry `newIndex` of the new table points at that (already written) block.
   * Returns the offset after the new structures.
   */
  async #refcountArea(
    startOffset: number,
    additionalClusters: number,
    exactSize: boolean,
    newIndex: number,
    newOffset: number,
  ): Promise<number> {
    const cs = this.clusterSize;
    const be = this.blockEntries;
    const order = this.refcountOrder;
    const perTableCluster = cs / REFCOUNT_TABLE_ENTRY_SIZE;
    const total = refcountMetadataSize(startOffset / cs + additionalClusters, this.clusterBits, order, !exactSize).blocks;
    let tableSize = exactSize ? total : total + Math.ceil(total / 2);
    tableSize = Math.ceil(tableSize / perTableCluster) * perTableCluster;
    if (tableSize * REFCOUNT_TABLE_ENTRY_SIZE > MAX_REFTABLE_SIZE_BYTES) {
      throw new Qcow2Error(
        'UNSUPPORTED',
        `refcount table growth: ${tableSize} entries (${tableSize * REFCOUNT_TABLE_ENTRY_SIZE} bytes) exceed qemu's ${MAX_REFTABLE_SIZE_BYTES}-byte limit`,
      );
    }
    const tableClusters = tableSize / perTableCluster;
    const areaIndex = Math.floor(startOffset / cs / be);

    const table = new Uint8Array(tableSize * REFCOUNT_TABLE_ENTRY_SIZE);
    const keep = Math.min(tableSize, this.#maxIndex + 1);
    table.set(this.#tableBytes.subarray(0, keep * REFCOUNT_TABLE_ENTRY_SIZE));
    const offsets = new Float64Array(tableSize);
    offsets.set(this.#offsets.subarray(0, keep));
    const view = viewOf(table);
    const setEntry = (i: number, offset: number): void => {
      view.setUint32(i * 8, Math.floor(offset / TWO_POW_32));
      view.setUint32(i * 8 + 4, offset >>> 0);
      offsets[i] = offset;
    };
    if (newOffset > 0) setEntry(newIndex, newOffset);

    let additionalBlocks = 0;
    for (let i = areaIndex; i < total; i++) {
      if (offsets[i]! < 0) throw corrupt(this.#problems.get(i)?.message ?? `refcount table entry ${i} is unusable`);
      if (offsets[i] === 0) additionalBlocks++;
    }
    const tableOffset = startOffset + additionalBlocks * cs;
    const endOffset = tableOffset + tableClusters * cs;

    let blockOffset = startOffset;
    for (let i = areaIndex; i < total; i++) {
      let entry: CacheEntry;
      const existing = offsets[i]!;
      if (existing !== 0) {
        entry = await this.#acquire(existing);
      } else {
        entry = await this.cache.acquireEmpty(blockOffset);
        this.cache.markDirty(entry);
        setEntry(i, blockOffset);
        blockOffset += cs;
      }
      try {
        const firstCovered = i * be * cs;
        if (firstCovered < endOffset) {
          let j = firstCovered < startOffset ? (startOffset - firstCovered) / cs : 0;
          const endIndex = Math.min((endOffset - firstCovered) / cs, be);
          for (; j < endIndex; j++) {
            if (getRefcount(entry.bytes, j, order) !== 0) {
              throw corrupt(`refcount table growth: ${this.#describe(i * be + j)} past the end of the image is already in use`);
            }
            setRefcount(entry.bytes, j, order, 1);
          }
          this.cache.markDirty(entry);
        }
      } finally {
        this.cache.release(entry);
      }
    }

    // Blocks first, then the table, then the header.
    await this.cache.flush();
    const refused = this.#guard?.(tableOffset, table.length);
    if (refused !== undefined) await refused;
    await writeAt(this.storage, table, tableOffset, `new refcount table at ${hex(tableOffset)}`);
    await flushStorage(this.storage, `new refcount table at ${hex(tableOffset)}`);
    try {
      await this.#onTableMoved(tableOffset, tableClusters);
    } catch (error) {
      throw ioError(error, `refcount table growth: switching the header to the new table at ${hex(tableOffset)} failed`);
    }
    await flushStorage(this.storage, 'header');

    const oldOffset = this.#tableOffset;
    const oldBytes = this.#tableSize * REFCOUNT_TABLE_ENTRY_SIZE;
    this.#adoptTable(tableOffset, table);
    if (oldBytes > 0) await this.#update(oldOffset, oldBytes, -1, 'other', NO_AVOID);
    return endOffset;
  }

  #describe(cluster: number): string {
    return `cluster ${cluster} (host offset ${hex(cluster * this.clusterSize)})`;
  }
}

/** Opens the refcounts of an image; see `Refcounts.open`. */
export function openRefcounts(options: RefcountsOptions): Promise<Refcounts> {
  return Refcounts.open(options);
}
