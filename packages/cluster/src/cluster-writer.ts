import type { CacheEntry, TableCache, WriteGuard } from '@qcow2/cache';
import {
  compressedAdditionalSectorsFor,
  compressedByteLength,
  compressedHostOffset,
  compressedSizeShift,
  corrupt,
  hex,
  invalidArgument,
  isQcow2Error,
  L1_ENTRY_SIZE,
  L2_COMPRESSED,
  L2_NORMAL,
  L2_ZERO_ALLOC,
  l2EntryType,
  l2SubclusterType,
  L2E_COMPRESSED_HI,
  L2E_COPIED_HI,
  L2E_ZERO_LO,
  MAX_L1_ENTRIES,
  Qcow2Error,
  SUBCLUSTER_INVALID,
  unsupported,
} from '@qcow2/format';
import { type DiscardType, type Refcounts, resolveDiscardPolicy, type DiscardPolicy } from '@qcow2/refcount';
import type { Storage } from '@qcow2/storage';
import type { ActiveL1Table } from './active-l1.js';
import type { ClusterMap } from './cluster-map.js';
import { cowBounds, type CowBounds, type CowGeometry, subclusterRange, writtenBitmap } from './cow.js';
import { createRun } from './mapping-run.js';
import { Mutex } from './mutex.js';
import { RangeLock } from './range-lock.js';

/** What the writer needs from the image above it: its guest view, for copy-on-write. */
export interface GuestView {
  /**
   * Fills `dst` with what a read of the image returns at `offset` now (through the backing
   * chain). Only called for ranges inside the virtual size that the writer has locked.
   */
  read(dst: Uint8Array, offset: number): Promise<void>;
  /**
   * True when `[offset, offset + length)` reads as zeros without data anywhere in the chain
   * (qemu's is_zero: zero clusters, or unallocated down to the end of the chain).
   */
  isZero(offset: number, length: number): Promise<boolean>;
}

/** Compresses one cluster; null when it does not shrink (`@qcow2/compress`'s ClusterCodec fits). */
export interface ClusterCompressor {
  compress(src: Uint8Array): Promise<Uint8Array | null>;
}

export interface ClusterWriterOptions {
  /** The map over the active L1 table (its `l1` must be `l1` below). */
  readonly map: ClusterMap;
  readonly l1: ActiveL1Table;
  /** The L2 cache the map reads through. */
  readonly l2Cache: TableCache;
  /** The image's refcounts (opened with `l2Cache` as their L2 cache). */
  readonly refcounts: Refcounts;
  /** The image file: metadata and compressed clusters. */
  readonly storage: Storage;
  /** Where data clusters live: the external data file, else `storage`. */
  readonly dataStorage?: Storage;
  readonly version: 2 | 3;
  /** Guest bytes (qemu's total_sectors × 512). */
  readonly virtualSize: number;
  /** Data clusters live in an external data file at their guest offset, without refcounts. */
  readonly externalDataFile?: boolean;
  /** The external data file is a raw image that must read as the guest does (zeroes written there too). */
  readonly dataFileRaw?: boolean;
  /** A backing file is open: discarded clusters must read as zeros, not fall through to it. */
  readonly hasBacking?: boolean;
  readonly guest: GuestView;
  /** For compressed writes. */
  readonly compressor?: ClusterCompressor;
  /**
   * Where the data file ends as far as anything was ever written to it: clusters allocated at or
   * past it read as zeros, so copy-on-write zeros need not be written there (qemu writes them
   * with write_zeroes). Without it, they always are.
   */
  readonly writtenEnd?: () => number;
  /**
   * qemu's discard=unmap (BDRV_O_UNMAP): discard requests are carried out and writeZeroes may
   * deallocate. Default false: discard does nothing (discard=ignore).
   */
  readonly unmap?: boolean;
  /** qemu's pass-discard-* (for data clusters of an external data file; refcounts have their own). */
  readonly discardPolicy?: DiscardPolicy;
  /** Runs before the first change of each operation (dirty bit, autoclear bits). */
  readonly beforeChange?: () => Promise<void>;
  /**
   * Runs before host clusters are freed, once no guest reference to them is left: resolves when
   * no read that may still use them is in flight.
   */
  readonly beforeFree?: () => Promise<void>;
  /**
   * False while refcount updates may lag behind L2 tables (a dirty image with lazy refcounts):
   * then L2 tables do not wait for refcount blocks. Default: always true.
   */
  readonly accurateRefcounts?: () => boolean;
  /** Names the image in messages. */
  readonly name?: string;
  /** Asked before data, compressed clusters and L1 tables are written (metadata overlap checks). */
  readonly writeGuard?: WriteGuard;
}

const TWO_POW_32 = 0x1_0000_0000;
const OFFSET_MASK_HI = 0x00ff_ffff;
const OFFSET_MASK_LO = 0xffff_fe00;
const ABOVE_2_53_HI = 0x00e0_0000;
const ALL_ZERO_BITS = 0xffff_ffff;
const SUBCLUSTERS = 32;
/** Bytes of zeros written at a time when zeroes cannot be recorded in the L2 table. */
const ZERO_CHUNK = 1 << 20;
/** Above this, a write with copy-on-write goes out as head, body and tail instead of one copy. */
const MERGE_LIMIT = 1 << 20;
const RESOLVED: Promise<void> = Promise.resolve();
/** Frees waiting for a flush beyond which one is forced (memory stays bounded without flushes). */
const MAX_PENDING_FREES = 4096;

function u32(b: Uint8Array, i: number): number {
  return ((b[i]! << 24) | (b[i + 1]! << 16) | (b[i + 2]! << 8) | b[i + 3]!) >>> 0;
}

function setU32(b: Uint8Array, i: number, v: number): void {
  b[i] = v >>> 24;
  b[i + 1] = (v >>> 16) & 0xff;
  b[i + 2] = (v >>> 8) & 0xff;
  b[i + 3] = v & 0xff;
}

function isZero(bytes: Uint8Array): boolean {
  let i = 0;
  const n = bytes.length;
  if (bytes.byteOffset % 4 === 0) {
    const words = new Uint32Array(bytes.buffer, bytes.byteOffset, n >>> 2);
    for (let w = 0; w < words.length; w++) if (words[w] !== 0) return false;
    i = words.length * 4;
  }
  for (; i < n; i++) if (bytes[i] !== 0) return false;
  return true;
}

function isSize(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function hasHostBits(hi: number, lo: number): boolean {
  return (hi & OFFSET_MASK_HI) !== 0 || (lo & OFFSET_MASK_LO) !== 0;
}

/** An L2 table slice pinned for changes, and the index of the wanted entry in it. */
interface SliceRef {
  slice: CacheEntry;
  index: number;
}

/**
 * The write side of a qcow2 image's cluster mapping (qemu's qcow2-cluster.c and the write half
 * of qcow2.c): allocating writes with copy-on-write, zero writes, discards, compressed writes,
 * new and copied L2 tables, L1 growth. Guest data is written before the L2 entry that points at
 * it; refcounts are raised before the reference (the L2 cache depends on the refcount cache)
 * and lowered after it is gone.
 *
 * Concurrency: every operation locks the guest clusters it touches (overlapping operations run
 * in call order, others at the same time); L1 and L2-table changes are serialized by a mutex.
 * Reads take no lock: entries change in one synchronous step once the data is in place, and
 * clusters that lose their last reference are freed only after `beforeFree` (reads in flight).
 */
export class ClusterWriter {
  readonly clusterSize: number;
  readonly subclusterSize: number;
  readonly virtualSize: number;
  readonly #o: ClusterWriterOptions;
  readonly #clusterBits: number;
  readonly #l1: ActiveL1Table;
  readonly #cache: TableCache;
  readonly #refcounts: Refcounts;
  readonly #data: Storage;
  readonly #extended: boolean;
  readonly #entrySize: number;
  readonly #l2Entries: number;
  readonly #l1Span: number;
  readonly #sliceEntries: number;
  readonly #dataFile: boolean;
  readonly #geometry: CowGeometry;
  readonly #passDiscard: Readonly<Record<DiscardType, boolean>>;
  readonly #what: string;
  readonly #locks = new RangeLock();
  readonly #metadata = new Mutex();
  #zeros: Uint8Array | undefined;
  /** Host ranges to free once the L2 tables that dropped them are durable: offset, length, type. */
  #pending: [number, number, DiscardType][] = [];
  #inflight = 0;
  #idle: (() => void)[] = [];
  /** Scratch for #readWords. */
  #words = new Uint32Array(64);
  /** The last `beforeChange` promise seen settled (fulfilled). */
  #prepared: Promise<void> | undefined;
  /** Clusters asked for in this turn's allocation batch, and the batch (see #runAllocs). */
  #allocCount = 0;
  #allocBatch: Promise<number> | undefined;
  #closed = false;

  constructor(options: ClusterWriterOptions) {
    const map = options.map;
    this.#o = options;
    this.#clusterBits = map.clusterBits;
    this.clusterSize = map.clusterSize;
    this.subclusterSize = map.subclusterSize;
    this.virtualSize = options.virtualSize;
    this.#l1 = options.l1;
    this.#cache = options.l2Cache;
    this.#refcounts = options.refcounts;
    this.#data = options.dataStorage ?? options.storage;
    this.#extended = map.extendedL2;
    this.#entrySize = map.l2EntrySize;
    this.#l2Entries = map.l2Entries;
    this.#l1Span = map.l1Span;
    this.#sliceEntries = options.l2Cache.entrySize / map.l2EntrySize;
    this.#dataFile = options.externalDataFile === true;
    this.#geometry = { clusterBits: map.clusterBits, extendedL2: map.extendedL2, externalDataFile: this.#dataFile };
    this.#passDiscard = resolveDiscardPolicy(options.discardPolicy);
    this.#what = `qcow2 image${options.name === undefined ? '' : ` ${options.name}`}`;
    if (map.l1 !== options.l1) throw invalidArgument('cluster writer: the map must read through the writer\'s L1 table');
    if (options.refcounts.clusterSize !== this.clusterSize) {
      throw invalidArgument('cluster writer: the refcounts have another cluster size');
    }
  }

  /** Operations in flight. */
  get busy(): boolean {
    return this.#inflight > 0;
  }

  /** True while some guest range is locked by a change in flight (reads may take a slower path). */
  get changing(): boolean {
    return this.#locks.size > 0;
  }

  // ------------------------------------------------------------------ public operations

  /** Writes `src` at guest `offset`, allocating (with copy-on-write) where needed. */
  write(src: Uint8Array, offset: number): Promise<void> {
    return this.#operation('write', offset, src.length, (at, length) => this.#writeRange(src, 0, at, length));
  }

  /**
   * Makes `[offset, offset + length)` read as zeros (qemu's write_zeroes): the zero flag or zero
   * subcluster bits (version 3), deallocation (version 2 without a backing file), or zeros
   * written where neither can express it. `mayUnmap` (BDRV_REQ_MAY_UNMAP, honoured with
   * `unmap`) lets allocated clusters be freed.
   */
  writeZeroes(offset: number, length: number, mayUnmap = false): Promise<void> {
    const unmap = mayUnmap && this.#o.unmap === true;
    return this.#operation('write zeroes', offset, length, (at, n) => this.#zeroRange(at, n, unmap));
  }

  /**
   * Discards whole clusters (qemu's pdiscard): they read as zeros afterwards (version 3, or no
   * backing file) and their host clusters are freed. Partial clusters are left alone, except the
   * partial last cluster of the image when the range covers it. Nothing happens without
   * `unmap`, nor on a version 2 image with a backing file.
   */
  discard(offset: number, length: number): Promise<void> {
    const bad = this.#rangeProblem('discard', offset, length);
    if (bad !== undefined) return Promise.reject(bad);
    if (this.#o.unmap !== true || length === 0) return RESOLVED;
    if (this.#o.version < 3 && this.#o.hasBacking === true) return RESOLVED;
    const cs = this.clusterSize;
    const start = Math.ceil(offset / cs) * cs;
    let end = Math.floor((offset + length) / cs) * cs;
    if (offset + length === this.virtualSize && this.virtualSize % cs !== 0) end = this.virtualSize;
    if (start >= end) return RESOLVED;
    return this.#operation('discard', start, end - start, (at, n) => this.#discardClusters(at, n, 'request', false));
  }

  /**
   * Writes whole clusters compressed (qemu's write -c): `offset` cluster-aligned, `src` a
   * multiple of the cluster size or ending at the end of the image. A cluster that does not
   * shrink is written uncompressed. Compressed data is packed at byte granularity (clusters
   * share host clusters). A cluster that is already allocated is refused (IO), as qemu refuses.
   */
  async writeCompressed(src: Uint8Array, offset: number): Promise<void> {
    const cs = this.clusterSize;
    const bad = this.#rangeProblem('compressed write', offset, src.length);
    if (bad !== undefined) throw bad;
    if (offset % cs !== 0) {
      throw invalidArgument(`${this.#what}: compressed write at ${hex(offset)}: the offset is not cluster-aligned (${cs}-byte clusters)`);
    }
    if (src.length % cs !== 0 && offset + src.length !== this.virtualSize) {
      throw invalidArgument(
        `${this.#what}: compressed write of ${src.length} bytes at ${hex(offset)}: not whole clusters and not ending at the end of the image`,
      );
    }
    if (this.#dataFile) throw unsupported(`${this.#what}: compressed writes are not possible with an external data file`);
    const compressor = this.#o.compressor;
    if (compressor === undefined) throw unsupported(`${this.#what}: no compressor for compressed writes`);
    if (src.length === 0) return;
    // Compress before locking: other requests go on meanwhile.
    const streams: (Uint8Array | null)[] = [];
    for (let pos = 0; pos < src.length; pos += cs) {
      let cluster = src.subarray(pos, Math.min(pos + cs, src.length));
      if (cluster.length < cs) {
        const padded = new Uint8Array(cs);
        padded.set(cluster);
        cluster = padded;
      }
      try {
        streams.push(await compressor.compress(cluster));
      } catch (error) {
        throw wrap(error, `${this.#what}: compressing the cluster at guest offset ${hex(offset + pos)}`);
      }
    }
    await this.#operation('compressed write', offset, src.length, async () => {
      // All or nothing: refuse before writing anything when a cluster is in the way.
      for (let i = 0, pos = 0; pos < src.length; i++, pos += cs) {
        const stream = streams[i]!;
        if (stream !== null && stream.length < cs) await this.#checkUnallocated(offset + pos);
      }
      for (let i = 0, pos = 0; pos < src.length; i++, pos += cs) {
        const n = Math.min(cs, src.length - pos);
        const stream = streams[i]!;
        if (stream === null || stream.length >= cs) await this.#writeRange(src, pos, offset + pos, n);
        else await this.#writeCompressedCluster(stream, offset + pos);
      }
    });
  }

  /**
   * Grows the active L1 table to at least `minEntries` entries (qemu's qcow2_grow_l1_table):
   * the new table is written and flushed, then the header is pointed at it, then the old one is
   * freed. `exact`: exactly `minEntries`, else 1.5× steps as qemu grows it.
   */
  growL1(minEntries: number, exact = false): Promise<void> {
    if (!isSize(minEntries)) return Promise.reject(invalidArgument(`${this.#what}: grow L1: ${String(minEntries)} is not a number of entries`));
    return this.#metadata.run(() => this.#growL1(minEntries, exact));
  }

  /** Resolves once no operation is in flight. */
  drain(): Promise<void> {
    if (this.#inflight === 0) return RESOLVED;
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  /** Refuses later operations (CLOSED), waits for those in flight and frees what they released. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.drain();
    await this.releaseFrees();
  }

  // ------------------------------------------------------------------ operation frame

  #rangeProblem(operation: string, offset: number, length: number): Qcow2Error | undefined {
    if (this.#closed) return new Qcow2Error('CLOSED', `${this.#what}: ${operation} after close`);
    if (!isSize(offset)) return invalidArgument(`${this.#what}: ${operation}: offset ${String(offset)} is not an integer ≥ 0`);
    if (!isSize(length)) return invalidArgument(`${this.#what}: ${operation} at ${hex(offset)}: length ${String(length)} is not an integer ≥ 0`);
    if (offset + length > this.virtualSize) {
      return invalidArgument(
        `${this.#what}: ${operation}: ${length} bytes at ${hex(offset)} end past the virtual size ${this.virtualSize} (${hex(this.virtualSize)})`,
      );
    }
    return undefined;
  }

  /**
   * Runs `body` over the range with its clusters locked. Without anything to wait for first
   * (`beforeChange` already settled, the range free), `body` starts at once and its promise gets
   * one reaction; otherwise see #operationWaiting.
   */
  #operation(operation: string, offset: number, length: number, body: (offset: number, length: number) => Promise<unknown>): Promise<void> {
    const bad = this.#rangeProblem(operation, offset, length);
    if (bad !== undefined) return Promise.reject(bad);
    if (length === 0) return RESOLVED;
    const before = this.#o.beforeChange;
    if (before !== undefined && before() !== this.#prepared) return this.#operationWaiting(operation, offset, length, body);
    const cs = this.clusterSize;
    const lock = this.#locks.tryAcquire(Math.floor(offset / cs), Math.floor((offset + length - 1) / cs));
    if (lock === undefined) return this.#operationWaiting(operation, offset, length, body);
    this.#inflight++;
    let running: Promise<unknown>;
    try {
      running = body(offset, length);
    } catch (error) {
      lock.release();
      this.#left();
      return Promise.reject(wrap(error, `${this.#what}: ${operation} of ${length} bytes at ${hex(offset)}`));
    }
    return running.then(
      () => {
        lock.release();
        this.#left();
      },
      (error: unknown) => {
        lock.release();
        this.#left();
        throw wrap(error, `${this.#what}: ${operation} of ${length} bytes at ${hex(offset)}`);
      },
    );
  }

  /** An operation is over: wake `drain` callers once none is left. */
  #left(): void {
    if (--this.#inflight === 0 && this.#idle.length > 0) {
      const idle = this.#idle;
      this.#idle = [];
      for (const wake of idle) wake();
    }
  }

  /** #operation when it must wait for `beforeChange` or for the range lock. */
  async #operationWaiting(
    operation: string,
    offset: number,
    length: number,
    body: (offset: number, length: number) => Promise<unknown>,
  ): Promise<void> {
    this.#inflight++;
    try {
      const before = this.#o.beforeChange;
      if (before !== undefined) {
        // The same promise again once it has settled: no need to wait a turn for it each time.
        const prepared = before();
        if (prepared !== this.#prepared) {
          await prepared;
          this.#prepared = prepared;
        }
      }
      const cs = this.clusterSize;
      const first = Math.floor(offset / cs);
      const last = Math.floor((offset + length - 1) / cs);
      const lock = this.#locks.tryAcquire(first, last) ?? (await this.#locks.acquire(first, last));
      try {
        await body(offset, length);
      } finally {
        lock.release();
      }
    } catch (error) {
      throw wrap(error, `${this.#what}: ${operation} of ${length} bytes at ${hex(offset)}`);
    } finally {
      this.#left();
    }
  }

  // ------------------------------------------------------------------ L1 / L2 tables

  /** The L2 table of L1 entry `index` when it can be changed in place (COPIED), else -1. */
  #writableL2(index: number): number {
    const l1 = this.#l1;
    if (index >= l1.size || !l1.copied(index)) return -1;
    const hi = l1.view.getUint32(index * 8);
    const lo = l1.view.getUint32(index * 8 + 4);
    if ((hi & ABOVE_2_53_HI) !== 0 || (hi & OFFSET_MASK_HI) === 0 && (lo & OFFSET_MASK_LO) === 0) return -1;
    const offset = (hi & OFFSET_MASK_HI) * TWO_POW_32 + ((lo & OFFSET_MASK_LO) >>> 0);
    return offset % this.clusterSize === 0 ? offset : -1;
  }

  /**
   * {@link #slice} without waiting: undefined when the L2 table must be made writable first or
   * the slice is not cached.
   */
  #sliceNow(offset: number): SliceRef | undefined {
    const l2 = this.#writableL2(Math.floor(offset / this.#l1Span));
    if (l2 < 0) return undefined;
    const l2Index = Math.floor(offset / this.clusterSize) % this.#l2Entries;
    const first = l2Index - (l2Index % this.#sliceEntries);
    const slice = this.#cache.tryAcquire(l2 + first * this.#entrySize);
    return slice === undefined ? undefined : { slice, index: l2Index - first };
  }

  /** The slice holding the entry of guest `offset`, in an L2 table that may be changed, pinned. */
  async #slice(offset: number): Promise<SliceRef> {
    const l1Index = Math.floor(offset / this.#l1Span);
    let l2 = this.#writableL2(l1Index);
    if (l2 < 0) l2 = await this.#metadata.run(() => this.#makeL2Writable(l1Index));
    const l2Index = Math.floor(offset / this.clusterSize) % this.#l2Entries;
    const first = l2Index - (l2Index % this.#sliceEntries);
    const at = l2 + first * this.#entrySize;
    const slice = this.#cache.tryAcquire(at) ?? (await this.#cache.acquire(at));
    return { slice, index: l2Index - first };
  }

  /**
   * qemu's get_cluster_table + l2_allocate: a new L2 table for L1 entry `index` (empty, or a
   * copy of the shared table it replaces), written and flushed before the L1 entry points at it;
   * the shared table loses this reference afterwards.
   */
  async #makeL2Writable(index: number): Promise<number> {
    if (index >= this.#l1.size) await this.#growL1(index + 1, false);
    const ready = this.#writableL2(index);
    if (ready >= 0) return ready;
    const cs = this.clusterSize;
    const l1 = this.#l1;
    const old = l1.l2Offset(index, cs);
    const oldCopied = l1.copied(index);
    const fresh = await this.#refcounts.allocClusters(1);
    if (fresh === 0) throw corrupt(`${this.#what}: L2 table for L1 index ${index} would be allocated at offset 0`);
    try {
      // The allocation is durable before anything refers to the cluster.
      await this.#refcounts.flush();
      const sliceSize = this.#cache.entrySize;
      for (let s = 0; s < cs; s += sliceSize) {
        const dst = await this.#cache.acquireEmpty(fresh + s);
        try {
          if (old !== 0) {
            const src = this.#cache.tryAcquire(old + s) ?? (await this.#cache.acquire(old + s));
            dst.bytes.set(src.bytes);
            this.#cache.release(src);
          }
          this.#cache.markDirty(dst);
        } finally {
          this.#cache.release(dst);
        }
      }
      await this.#cache.flush();
      l1.set(index, fresh, true);
      await this.#writeL1Entry(index);
    } catch (error) {
      l1.set(index, old, oldCopied);
      await this.#refcounts.free(fresh, cs, 'always').catch(() => undefined);
      throw error;
    }
    if (old !== 0) await this.#freeRanges([[old, cs]], 'other');
    return fresh;
  }

  async #writeL1Entry(index: number): Promise<void> {
    const { offset, bytes } = this.#l1.sectorOf(index);
    const refused = this.#o.writeGuard?.(offset, bytes.length, 'active-l1');
    if (refused !== undefined) await refused;
    await this.#io(() => this.#o.storage.write(bytes, offset), `L1 entry ${index} at ${hex(offset)}: write`);
    await this.#io(() => this.#o.storage.flush(), `L1 entry ${index}: flush`);
  }

  async #growL1(minEntries: number, exact: boolean): Promise<void> {
    const l1 = this.#l1;
    if (minEntries <= l1.size) return;
    if (minEntries > MAX_L1_ENTRIES) {
      throw unsupported(`${this.#what}: an L1 table of ${minEntries} entries exceeds qemu's ${MAX_L1_ENTRIES * 8}-byte limit`);
    }
    let size = minEntries;
    if (!exact) {
      size = Math.max(1, l1.size);
      while (minEntries > size) size = Math.floor((size * 3 + 1) / 2);
      size = Math.min(size, MAX_L1_ENTRIES);
    }
    const cs = this.clusterSize;
    const bytes = new Uint8Array(size * L1_ENTRY_SIZE);
    bytes.set(l1.bytes);
    const offset = await this.#refcounts.allocClusters(Math.ceil(bytes.length / cs));
    try {
      await this.#refcounts.flush();
      const refused = this.#o.writeGuard?.(offset, bytes.length);
      if (refused !== undefined) await refused;
      await this.#io(() => this.#o.storage.write(bytes, offset), `new L1 table at ${hex(offset)}: write`);
      await this.#io(() => this.#o.storage.flush(), `new L1 table at ${hex(offset)}: flush`);
      // Header: l1_size (u32 at 36) and l1_table_offset (u64 at 40), together.
      const fields = new Uint8Array(12);
      setU32(fields, 0, size);
      setU32(fields, 4, Math.floor(offset / TWO_POW_32));
      setU32(fields, 8, offset >>> 0);
      await this.#io(() => this.#o.storage.write(fields, 36), 'header l1_size and l1_table_offset at 0x24: write');
      await this.#io(() => this.#o.storage.flush(), 'header l1_size and l1_table_offset: flush');
    } catch (error) {
      await this.#refcounts.free(offset, bytes.length, 'other').catch(() => undefined);
      throw error;
    }
    const oldOffset = l1.offset;
    const oldBytes = l1.size * L1_ENTRY_SIZE;
    l1.replace(offset, size, bytes);
    if (oldBytes > 0) await this.#refcounts.free(oldOffset, oldBytes, 'other');
  }

  // ------------------------------------------------------------------ writes

  #writeRange(src: Uint8Array, pos: number, offset: number, length: number): Promise<unknown> {
    // Within one cluster: one chunk writes it all.
    if ((offset % this.clusterSize) + length <= this.clusterSize) return this.#writeChunk(src, pos, offset, length);
    return this.#writeChunks(src, pos, offset, length);
  }

  async #writeChunks(src: Uint8Array, pos: number, offset: number, length: number): Promise<void> {
    let done = 0;
    while (done < length) done += await this.#writeChunk(src, pos + done, offset + done, length - done);
  }

  /**
   * One step of a write (qemu's qcow2_alloc_host_offset, handle_copied / handle_alloc, then the
   * data and qcow2_alloc_cluster_link_l2): the clusters from `offset` on, within one L2 slice,
   * that are all kept or all newly allocated. Returns the bytes written. The allocating path is
   * here; kept clusters go to #writeKept (a smaller function for the JIT to compile).
   */
  async #writeChunk(src: Uint8Array, pos: number, offset: number, remaining: number): Promise<number> {
    const cs = this.clusterSize;
    const inCluster = offset % cs;
    const clusterStart = offset - inCluster;
    const ref = this.#sliceNow(offset) ?? (await this.#slice(offset));
    const scanned = this.#scan(ref, inCluster, remaining, clusterStart);
    const keep = scanned < 0;
    const count = keep ? -scanned : scanned;
    const words = this.#words;
    const bytes = Math.min(remaining, count * cs - inCluster);
    // Only an extended entry's bitmap can make a subcluster type INVALID.
    if (this.#extended) this.#checkEntries(words, count, offset);
    const cow = cowBounds(words, count, inCluster, bytes, keep, this.#geometry);
    if (keep) return this.#writeKept(src, pos, offset, count, bytes, cow);

    let host: number;
    if (this.#dataFile) {
      host = clusterStart;
    } else {
      // See #runAllocs: this request's place in the turn's batch.
      const place = this.#allocCount;
      this.#allocCount += count;
      this.#allocBatch ??= RESOLVED.then(this.#runAllocs);
      host = (await this.#allocBatch) + place * cs;
      if (host === 0) throw corrupt(`${this.#what}: data cluster for guest offset ${hex(clusterStart)} would be allocated at offset 0`);
    }
    const target = host + inCluster;
    const direct = cow.from === inCluster && cow.to === inCluster + bytes;
    try {
      if (direct) {
        // #writeData without its own async frame: the guard, then the write, errors named below.
        const body = pos === 0 && bytes === src.length ? src : src.subarray(pos, pos + bytes);
        const refused = this.#o.writeGuard?.(target, bytes, 'data');
        if (refused !== undefined) await refused;
        await this.#data.write(body, target);
      } else {
        // Never written: it reads as zeros already (checked now, before anything is written there).
        const fresh = this.#o.writtenEnd !== undefined && host + cow.from >= this.#o.writtenEnd();
        await this.#writeWithCow(src, pos, bytes, offset, clusterStart, host, cow, fresh);
      }
    } catch (error) {
      if (!this.#dataFile) await this.#refcounts.free(host, count * cs, 'never').catch(() => undefined);
      throw direct ? wrap(error, `${this.#what}: data at host offset ${hex(target)}: write`) : error;
    }
    if (!this.#linkNow(offset, count, host, cow, false)) await this.#link(offset, count, host, cow, false);
    return bytes;
  }

  /**
   * The entries of the chunk from `ref` (released here): how many clusters from the first are all
   * kept (COPIED, host-contiguous; returned negative) or all need a new cluster (positive). Their
   * words are left in #words.
   */
  #scan(ref: SliceRef, inCluster: number, remaining: number, clusterStart: number): number {
    const cs = this.clusterSize;
    let count = 1;
    let keep: boolean;
    try {
      const b = ref.slice.bytes;
      const maxCount = Math.min(Math.ceil((inCluster + remaining) / cs), this.#sliceEntries - ref.index);
      const es = this.#entrySize;
      let p = ref.index * es;
      let expected = 0;
      if ((u32(b, p) & L2E_COPIED_HI) === 0) {
        // Not COPIED: a new cluster whatever the type (qemu's cluster_needs_new_alloc), and so
        // for the entries after it that are not COPIED either; the loop below goes on from there.
        keep = false;
        while (count < maxCount && (u32(b, p + es) & L2E_COPIED_HI) === 0) {
          p += es;
          count++;
        }
      } else {
        keep = !this.#needsNewCluster(u32(b, p), u32(b, p + 4));
        if (keep) expected = this.#hostOf(u32(b, p), u32(b, p + 4), clusterStart) + cs;
      }
      for (; count < maxCount; count++) {
        p += this.#entrySize;
        const hi = u32(b, p);
        const lo = u32(b, p + 4);
        if (this.#needsNewCluster(hi, lo) === keep) break;
        if (keep) {
          if (this.#hostOf(hi, lo, clusterStart + count * cs) !== expected) break;
          expected += cs;
        }
      }
      this.#readWords(b, ref.index, count);
    } finally {
      this.#cache.release(ref.slice);
    }
    return keep ? -count : count;
  }

  /** #writeChunk over `count` kept clusters (written in place, entries changed only for copy-on-write). */
  async #writeKept(src: Uint8Array, pos: number, offset: number, count: number, bytes: number, cow: CowBounds): Promise<number> {
    const cs = this.clusterSize;
    const inCluster = offset % cs;
    const clusterStart = offset - inCluster;
    const words = this.#words;
    const host = this.#hostOf(words[0]!, words[1]!, clusterStart);
    if (cow.skip) {
      await this.#writeData(pos === 0 && bytes === src.length ? src : src.subarray(pos, pos + bytes), host + inCluster);
      return bytes;
    }
    await this.#writeWithCow(src, pos, bytes, offset, clusterStart, host, cow);
    if (!this.#linkNow(offset, count, host, cow, true)) await this.#link(offset, count, host, cow, true);
    return bytes;
  }

  /**
   * Allocates the data clusters asked for in this turn (refcount 1): the writes in flight that
   * reach their allocation in one turn share one `allocClusters` of their total, handed out in
   * request order: the same first-fit layout as one by one on an image without
   * free holes, one refcount update instead of one per request. Every request of a batch awaits
   * the same promise (the batch's first cluster) and adds its own place in the batch.
   */
  readonly #runAllocs = (): Promise<number> => {
    const total = this.#allocCount;
    this.#allocCount = 0;
    this.#allocBatch = undefined;
    return this.#refcounts.allocClusters(total);
  };

  /** qemu's cluster_needs_new_alloc: only clusters with refcount 1 (COPIED) are written in place. */
  #needsNewCluster(hi: number, lo: number): boolean {
    const type = l2EntryType(hi, lo, this.#extended, this.#dataFile);
    if (type === L2_NORMAL || type === L2_ZERO_ALLOC) return (hi & L2E_COPIED_HI) === 0;
    return true;
  }

  /** Host offset of a NORMAL / ZERO_ALLOC entry, checked as the read path checks it. */
  #hostOf(hi: number, lo: number, guestCluster: number): number {
    if ((hi & ABOVE_2_53_HI) !== 0) {
      throw corrupt(`${this.#what}: L2 entry for guest offset ${hex(guestCluster)}: host offset exceeds 2^53`);
    }
    const host = (hi & OFFSET_MASK_HI) * TWO_POW_32 + ((lo & OFFSET_MASK_LO) >>> 0);
    if (host % this.clusterSize !== 0) {
      throw corrupt(`${this.#what}: L2 entry for guest offset ${hex(guestCluster)}: host offset ${hex(host)} is not cluster-aligned`);
    }
    if (this.#dataFile && host !== guestCluster) {
      throw corrupt(
        `${this.#what}: L2 entry for guest offset ${hex(guestCluster)}: external data file host offset ${hex(host)} does not match the guest offset`,
      );
    }
    return host;
  }

  /**
   * The entries' words, in a scratch array shared by all writes: valid until the caller next
   * awaits (every use is synchronous, right after the read).
   */
  #readWords(b: Uint8Array, index: number, count: number): Uint32Array {
    let words = this.#words;
    if (words.length < count * 4) {
      words = new Uint32Array(Math.max(count * 4, words.length * 2));
      this.#words = words;
    }
    for (let i = 0; i < count; i++) {
      const p = (index + i) * this.#entrySize;
      words[i * 4] = u32(b, p);
      words[i * 4 + 1] = u32(b, p + 4);
      words[i * 4 + 2] = this.#extended ? u32(b, p + 8) : 0;
      words[i * 4 + 3] = this.#extended ? u32(b, p + 12) : 0;
    }
    return words;
  }

  #checkEntries(words: Uint32Array, count: number, offset: number): void {
    for (let i = 0; i < count; i++) {
      const type = l2SubclusterType(words[i * 4]!, words[i * 4 + 1]!, words[i * 4 + 2]!, words[i * 4 + 3]!, 0, this.#extended, this.#dataFile);
      if (type === SUBCLUSTER_INVALID) {
        const guest = Math.floor(offset / this.clusterSize + i) * this.clusterSize;
        throw corrupt(`${this.#what}: L2 entry for guest offset ${hex(guest)}: invalid cluster entry (subcluster bitmap contradicts the entry)`);
      }
    }
  }

  async #writeData(src: Uint8Array, host: number): Promise<void> {
    const refused = this.#o.writeGuard?.(host, src.length, 'data');
    if (refused !== undefined) await refused;
    try {
      await this.#data.write(src, host);
    } catch (error) {
      throw wrap(error, `${this.#what}: data at host offset ${hex(host)}: write`);
    }
  }

  /** Writes the request's bytes with the copy-on-write bytes around them at `host`. */
  async #writeWithCow(
    src: Uint8Array,
    pos: number,
    bytes: number,
    offset: number,
    clusterStart: number,
    host: number,
    cow: CowBounds,
    fresh = false,
  ): Promise<void> {
    const inCluster = offset - clusterStart;
    const headLength = inCluster - cow.from;
    const tailLength = cow.to - (inCluster + bytes);
    const body = pos === 0 && bytes === src.length ? src : src.subarray(pos, pos + bytes);
    if (headLength === 0 && tailLength === 0) {
      await this.#writeData(body, host + inCluster);
      return;
    }
    if (fresh) {
      // Copy-on-write of zeros into clusters that read as zeros: only what is not zero is written.
      // Nothing to copy when the guest reads zeros over the whole range (block status, no reads:
      // 100 000 allocating 4 KiB writes spent ~60% of their time zero-filling and scanning heads and tails).
      if (await this.#guestZero(clusterStart + cow.from, cow.to - cow.from)) {
        await this.#writeData(body, host + inCluster);
        return;
      }
      const head = new Uint8Array(headLength);
      const tail = new Uint8Array(tailLength);
      if (headLength > 0) await this.#readGuest(head, clusterStart + cow.from);
      if (tailLength > 0) await this.#readGuest(tail, offset + bytes);
      const zeroHead = isZero(head);
      const zeroTail = isZero(tail);
      if (!zeroHead) await this.#writeData(head, host + cow.from);
      await this.#writeData(body, host + inCluster);
      if (!zeroTail) await this.#writeData(tail, host + inCluster + bytes);
      return;
    }
    if (cow.to - cow.from <= MERGE_LIMIT) {
      const buffer = new Uint8Array(cow.to - cow.from);
      if (headLength > 0) await this.#readGuest(buffer.subarray(0, headLength), clusterStart + cow.from);
      buffer.set(body, headLength);
      if (tailLength > 0) await this.#readGuest(buffer.subarray(headLength + bytes), offset + bytes);
      await this.#writeData(buffer, host + cow.from);
      return;
    }
    if (headLength > 0) {
      const head = new Uint8Array(headLength);
      await this.#readGuest(head, clusterStart + cow.from);
      await this.#writeData(head, host + cow.from);
    }
    await this.#writeData(body, host + inCluster);
    if (tailLength > 0) {
      const tail = new Uint8Array(tailLength);
      await this.#readGuest(tail, offset + bytes);
      await this.#writeData(tail, host + inCluster + bytes);
    }
  }

  /** The guest reads zeros over [offset, offset + length) (past the end of the image it does). */
  async #guestZero(offset: number, length: number): Promise<boolean> {
    const inside = Math.max(0, Math.min(length, this.virtualSize - offset));
    return inside === 0 || (await this.#o.guest.isZero(offset, inside));
  }

  /** The guest view; past the end of the image (the rest of a partial last cluster): zeros. */
  async #readGuest(dst: Uint8Array, offset: number): Promise<void> {
    const inside = Math.max(0, Math.min(dst.length, this.virtualSize - offset));
    if (inside > 0) await this.#o.guest.read(inside === dst.length ? dst : dst.subarray(0, inside), offset);
    if (inside < dst.length) dst.fill(0, inside);
  }

  /**
   * qemu's qcow2_alloc_cluster_link_l2: points the entries at the written clusters (COPIED set,
   * ZERO cleared, the written subclusters allocated), then frees what they pointed at before.
   */
  /**
   * {@link #link} in one synchronous step when it needs no wait (the L2 cache already depends on
   * the refcount cache, which depends on nothing; the slice is cached and writable; nothing is
   * freed): true when done, false when nothing was changed (then call #link).
   */
  #linkNow(offset: number, count: number, host: number, cow: CowBounds, keep: boolean): boolean {
    const accurate = this.#o.accurateRefcounts?.() ?? true;
    if (!keep && !this.#dataFile && accurate) {
      const refcountCache = this.#refcounts.cache;
      const current = this.#cache.dependency;
      if ((current !== undefined && current !== refcountCache) || refcountCache.dependency !== undefined) return false;
    }
    const ref = this.#sliceNow(offset);
    if (ref === undefined) return false;
    try {
      const b = ref.slice.bytes;
      if (!keep) {
        for (let i = 0; i < count; i++) {
          const p = (ref.index + i) * this.#entrySize;
          const hi = u32(b, p);
          if (hasHostBits(hi, u32(b, p + 4)) || (hi & L2E_COMPRESSED_HI) !== 0) return false;
        }
      }
      // Resolves at once: the dependency is already in place (checked above).
      if (!keep && !this.#dataFile && accurate) void this.#cache.setDependency(this.#refcounts.cache);
      this.#cache.dependOnStorageFlush();
      this.#setEntries(b, ref.index, count, host, cow);
      this.#cache.markDirty(ref.slice);
    } finally {
      this.#cache.release(ref.slice);
    }
    return true;
  }

  /** Points `count` entries from `index` of slice `b` at the clusters from `host` (see #link). */
  #setEntries(b: Uint8Array, index: number, count: number, host: number, cow: CowBounds): void {
    const cs = this.clusterSize;
    for (let i = 0; i < count; i++) {
      const p = (index + i) * this.#entrySize;
      const at = host + i * cs;
      setU32(b, p, (Math.floor(at / TWO_POW_32) | L2E_COPIED_HI) >>> 0);
      setU32(b, p + 4, at >>> 0);
      if (this.#extended) {
        const [zeroBits, allocBits] = writtenBitmap(u32(b, p + 8), u32(b, p + 12), i, cow.from, cow.to, this.#clusterBits);
        setU32(b, p + 8, zeroBits);
        setU32(b, p + 12, allocBits);
      }
    }
  }

  async #link(offset: number, count: number, host: number, cow: CowBounds, keep: boolean): Promise<void> {
    const accurate = this.#o.accurateRefcounts?.() ?? true;
    if (!keep && !this.#dataFile && accurate) await this.#cache.setDependency(this.#refcounts.cache);
    // The data is durable before the entry that points at it.
    this.#cache.dependOnStorageFlush();
    const cs = this.clusterSize;
    const ref = await this.#slice(offset);
    const freed: [number, number][] = [];
    try {
      const b = ref.slice.bytes;
      for (let i = 0; i < count; i++) {
        const p = (ref.index + i) * this.#entrySize;
        const hi = u32(b, p);
        const lo = u32(b, p + 4);
        if (!keep && (hasHostBits(hi, lo) || (hi & L2E_COMPRESSED_HI) !== 0)) freed.push([hi, lo]);
        const at = host + i * cs;
        setU32(b, p, (Math.floor(at / TWO_POW_32) | L2E_COPIED_HI) >>> 0);
        setU32(b, p + 4, at >>> 0);
        if (this.#extended) {
          const [zeroBits, allocBits] = writtenBitmap(u32(b, p + 8), u32(b, p + 12), i, cow.from, cow.to, this.#clusterBits);
          setU32(b, p + 8, zeroBits);
          setU32(b, p + 12, allocBits);
        }
      }
      this.#cache.markDirty(ref.slice);
    } finally {
      this.#cache.release(ref.slice);
    }
    if (freed.length > 0) await this.#freeEntries(freed, 'never');
  }

  /** qemu's qcow2_alloc_compressed_cluster_offset refuses (EIO) a cluster with a host offset. */
  async #checkUnallocated(offset: number): Promise<void> {
    const l1Index = Math.floor(offset / this.#l1Span);
    if (this.#l1.l2Offset(l1Index, this.clusterSize) === 0) return;
    const run = createRun();
    await this.#o.map.lookup(offset, 1, run);
    if (run.kind === 'unallocated' && run.hostOffset < 0) return;
    if (run.kind === 'zero' && run.hostOffset < 0) return;
    throw new Qcow2Error('IO', `${this.#what}: compressed write at ${hex(offset)}: the cluster is already allocated (a compressed write cannot overwrite it)`);
  }

  async #writeCompressedCluster(stream: Uint8Array, offset: number): Promise<void> {
    const host = await this.#refcounts.allocBytes(stream.length);
    try {
      const refused = this.#o.writeGuard?.(host, stream.length, 'data');
      if (refused !== undefined) await refused;
      await this.#io(() => this.#o.storage.write(stream, host), `compressed cluster at host offset ${hex(host)}: write`);
    } catch (error) {
      await this.#refcounts.free(host, stream.length, 'never').catch(() => undefined);
      throw error;
    }
    if (this.#o.accurateRefcounts?.() ?? true) await this.#cache.setDependency(this.#refcounts.cache);
    this.#cache.dependOnStorageFlush();
    const sectors = compressedAdditionalSectorsFor(host, stream.length);
    const shift = compressedSizeShift(this.#clusterBits) - 32;
    const ref = await this.#slice(offset);
    try {
      const b = ref.slice.bytes;
      const p = ref.index * this.#entrySize;
      setU32(b, p, (L2E_COMPRESSED_HI | (sectors << shift) | Math.floor(host / TWO_POW_32)) >>> 0);
      setU32(b, p + 4, host >>> 0);
      if (this.#extended) {
        setU32(b, p + 8, 0);
        setU32(b, p + 12, 0);
      }
      this.#cache.markDirty(ref.slice);
    } finally {
      this.#cache.release(ref.slice);
    }
  }

  // ------------------------------------------------------------------ zeroes and discard

  /** The block layer's split of a write_zeroes request at subcluster boundaries. */
  async #zeroRange(offset: number, length: number, mayUnmap: boolean): Promise<void> {
    const scs = this.subclusterSize;
    const end = offset + length;
    const tail = end % scs;
    let at = offset;
    while (at < end) {
      let num = end - at;
      const head = at % scs;
      if (head !== 0) num = Math.min(num, scs - head);
      else if (tail !== 0 && num > scs) num -= tail;
      await this.#zeroPiece(at, num, mayUnmap);
      at += num;
    }
  }

  /** qemu's qcow2_co_pwrite_zeroes for one piece, falling back to writing zeros. */
  async #zeroPiece(offset: number, length: number, mayUnmap: boolean): Promise<void> {
    const scs = this.subclusterSize;
    const head = offset % scs;
    let tail = Math.ceil((offset + length) / scs) * scs - (offset + length);
    if (offset + length === this.virtualSize) tail = 0;
    if (head !== 0 || tail !== 0) {
      const start = offset - head;
      const end = Math.min(offset + length + tail, this.virtualSize);
      if (
        (head === 0 || (await this.#o.guest.isZero(start, head))) &&
        (offset + length >= end || (await this.#o.guest.isZero(offset + length, end - offset - length))) &&
        (await this.#zeroOrUnallocated(start)) &&
        (await this.#zeroize(start, end - start, mayUnmap))
      ) {
        return;
      }
      await this.#writeZeroBuffers(offset, length);
      return;
    }
    if (!(await this.#zeroize(offset, length, mayUnmap))) await this.#writeZeroBuffers(offset, length);
  }

  /** The subcluster at `offset` is unallocated or zero (not data, not compressed). */
  async #zeroOrUnallocated(offset: number): Promise<boolean> {
    const run = createRun();
    await this.#o.map.lookup(offset, 1, run);
    return run.kind === 'unallocated' || run.kind === 'zero';
  }

  async #writeZeroBuffers(offset: number, length: number): Promise<void> {
    this.#zeros ??= new Uint8Array(ZERO_CHUNK);
    for (let done = 0; done < length; ) {
      const n = Math.min(ZERO_CHUNK, length - done);
      await this.#writeRange(this.#zeros, 0, offset + done, n);
      done += n;
    }
  }

  /**
   * qemu's qcow2_subcluster_zeroize: subcluster-aligned (except at the image end). False when the
   * L2 table cannot express it (version 2 with a backing file, a partial compressed cluster):
   * then zeros must be written.
   */
  async #zeroize(offset: number, length: number, mayUnmap: boolean): Promise<boolean> {
    if (this.#o.dataFileRaw === true) {
      // The raw data file reads as the guest does.
      this.#zeros ??= new Uint8Array(ZERO_CHUNK);
      for (let done = 0; done < length; ) {
        const n = Math.min(ZERO_CHUNK, length - done);
        await this.#writeData(this.#zeros.subarray(0, n), offset + done);
        done += n;
      }
    }
    if (this.#o.version < 3) {
      if (this.#o.hasBacking === true) return false;
      await this.#discardClusters(offset, length, 'request', false);
      return true;
    }
    const cs = this.clusterSize;
    const scs = this.subclusterSize;
    let end = offset + length;
    const head = Math.min(end, Math.ceil(offset / cs) * cs) - offset;
    let at = offset + head;
    const tail = end >= this.virtualSize ? 0 : end - Math.max(at, Math.floor(end / cs) * cs);
    end -= tail;
    if (head > 0 && !(await this.#zeroSubclusters(offset, Math.ceil(head / scs)))) return false;
    let clusters = Math.ceil((end - at) / cs);
    while (clusters > 0) {
      const n = await this.#zeroInSlice(at, clusters, mayUnmap);
      clusters -= n;
      at += n * cs;
    }
    if (tail > 0 && !(await this.#zeroSubclusters(end, Math.ceil(tail / scs)))) return false;
    return true;
  }

  /** qemu's zero_l2_subclusters: zero bits for part of one cluster (extended L2 entries). */
  async #zeroSubclusters(offset: number, count: number): Promise<boolean> {
    const sc = Math.floor((offset % this.clusterSize) / this.subclusterSize);
    const ref = await this.#slice(offset);
    try {
      const b = ref.slice.bytes;
      const p = ref.index * this.#entrySize;
      const hi = u32(b, p);
      const lo = u32(b, p + 4);
      if (l2EntryType(hi, lo, this.#extended, this.#dataFile) === L2_COMPRESSED) return false;
      const range = subclusterRange(sc, Math.min(SUBCLUSTERS, sc + count));
      const zeroBits = (u32(b, p + 8) | range) >>> 0;
      const allocBits = (u32(b, p + 12) & ~range) >>> 0;
      if (zeroBits !== u32(b, p + 8) || allocBits !== u32(b, p + 12)) {
        setU32(b, p + 8, zeroBits);
        setU32(b, p + 12, allocBits);
        this.#cache.markDirty(ref.slice);
      }
      return true;
    } finally {
      this.#cache.release(ref.slice);
    }
  }

  /** qemu's zero_in_l2_slice: whole clusters read as zeros; returns how many were handled. */
  async #zeroInSlice(offset: number, clusters: number, mayUnmap: boolean): Promise<number> {
    const ref = await this.#slice(offset);
    const freed: [number, number][] = [];
    let n: number;
    try {
      const b = ref.slice.bytes;
      n = Math.min(clusters, this.#sliceEntries - ref.index);
      let dirty = false;
      for (let i = 0; i < n; i++) {
        const p = (ref.index + i) * this.#entrySize;
        const hi = u32(b, p);
        const lo = u32(b, p + 4);
        const type = l2EntryType(hi, lo, this.#extended, this.#dataFile);
        const unmap = type === L2_COMPRESSED || (mayUnmap && (type === L2_NORMAL || type === L2_ZERO_ALLOC));
        let newHi = unmap ? 0 : hi;
        let newLo = unmap ? 0 : lo;
        let zeroBits = 0;
        let allocBits = 0;
        if (this.#extended) zeroBits = ALL_ZERO_BITS;
        else newLo = (newLo | L2E_ZERO_LO) >>> 0;
        const same =
          newHi === hi && newLo === lo && (!this.#extended || (u32(b, p + 8) === zeroBits && u32(b, p + 12) === allocBits));
        if (same) continue;
        newHi >>>= 0;
        setU32(b, p, newHi);
        setU32(b, p + 4, newLo);
        if (this.#extended) {
          setU32(b, p + 8, zeroBits);
          setU32(b, p + 12, allocBits);
        }
        dirty = true;
        if (unmap) freed.push([hi, lo]);
      }
      if (dirty) this.#cache.markDirty(ref.slice);
    } finally {
      this.#cache.release(ref.slice);
    }
    if (freed.length > 0) await this.#freeEntries(freed, 'request');
    return n;
  }

  /** qemu's qcow2_cluster_discard over whole clusters (the last one may be partial at the image end). */
  async #discardClusters(offset: number, length: number, type: DiscardType, full: boolean): Promise<void> {
    const cs = this.clusterSize;
    let clusters = Math.ceil(length / cs);
    let at = offset;
    while (clusters > 0) {
      const n = await this.#discardInSlice(at, clusters, type, full);
      clusters -= n;
      at += n * cs;
    }
  }

  /** qemu's discard_in_l2_slice. */
  async #discardInSlice(offset: number, clusters: number, type: DiscardType, full: boolean): Promise<number> {
    const ref = await this.#slice(offset);
    const freed: [number, number][] = [];
    let n: number;
    try {
      const b = ref.slice.bytes;
      n = Math.min(clusters, this.#sliceEntries - ref.index);
      let dirty = false;
      for (let i = 0; i < n; i++) {
        const p = (ref.index + i) * this.#entrySize;
        const hi = u32(b, p);
        const lo = u32(b, p + 4);
        const zeroBits = this.#extended ? u32(b, p + 8) : 0;
        const allocBits = this.#extended ? u32(b, p + 12) : 0;
        const kind = l2EntryType(hi, lo, this.#extended, this.#dataFile);
        const allocated = kind === L2_NORMAL || kind === L2_ZERO_ALLOC || kind === L2_COMPRESSED;
        let newHi = hi;
        let newLo = lo;
        let newZero = zeroBits;
        let newAlloc = allocBits;
        if (full) {
          newHi = newLo = newZero = newAlloc = 0;
        } else if (this.#o.hasBacking === true || allocated) {
          newHi = 0;
          newAlloc = 0;
          if (this.#extended) {
            newLo = 0;
            newZero = ALL_ZERO_BITS;
          } else {
            newLo = this.#o.version >= 3 ? L2E_ZERO_LO : 0;
          }
        }
        if (newHi === hi && newLo === lo && newZero === zeroBits && newAlloc === allocBits) continue;
        setU32(b, p, newHi);
        setU32(b, p + 4, newLo);
        if (this.#extended) {
          setU32(b, p + 8, newZero);
          setU32(b, p + 12, newAlloc);
        }
        dirty = true;
        freed.push([hi, lo]);
      }
      if (dirty) this.#cache.markDirty(ref.slice);
    } finally {
      this.#cache.release(ref.slice);
    }
    if (freed.length > 0) await this.#freeEntries(freed, type);
    return n;
  }

  // ------------------------------------------------------------------ freeing

  /**
   * qemu's qcow2_free_any_cluster for entries no L2 table points at any more, deferred: the
   * host clusters are freed (refcounts lowered, discards sent) by {@link releaseFrees} once the
   * L2 tables that dropped them are durable. Freed at once, a cluster could be reused and
   * overwritten while the L2 table on disk still points at it, and a crash would then lose
   * data that was flushed before.
   */
  async #freeEntries(entries: readonly (readonly [number, number])[], type: DiscardType): Promise<void> {
    const cs = this.clusterSize;
    const dataDiscards: number[] = [];
    for (const [hi, lo] of entries) {
      const kind = l2EntryType(hi, lo, this.#extended, this.#dataFile);
      if (kind === L2_COMPRESSED) {
        if (this.#dataFile) continue;
        this.#pending.push([compressedHostOffset(hi, lo, this.#clusterBits), compressedByteLength(hi, lo, this.#clusterBits), type]);
      } else if (kind === L2_NORMAL || kind === L2_ZERO_ALLOC) {
        if ((hi & ABOVE_2_53_HI) !== 0) continue; // past any file: nothing to free
        const host = (hi & OFFSET_MASK_HI) * TWO_POW_32 + ((lo & OFFSET_MASK_LO) >>> 0);
        if (host % cs !== 0) throw corrupt(`${this.#what}: cannot free unaligned cluster ${hex(host)}`);
        // A data file cluster belongs to its guest cluster alone: nothing else can reuse it, and
        // the guest asked for zeros (discard, unmapping zero write) or overwrote it (never
        // discarded), so its discard may go out at once.
        if (this.#dataFile) dataDiscards.push(host);
        else this.#pending.push([host, cs, type]);
      }
    }
    const data = this.#data;
    if (dataDiscards.length > 0 && this.#passDiscard[type] && data.canDiscard && typeof data.discard === 'function') {
      if (this.#o.beforeFree !== undefined) await this.#o.beforeFree();
      for (const host of dataDiscards) {
        try {
          await data.discard(host, cs);
        } catch {
          // Advisory, as qemu's bdrv_pdiscard.
        }
      }
    }
    if (this.#pending.length >= MAX_PENDING_FREES) await this.releaseFrees();
  }

  /** Host clusters waiting for {@link releaseFrees}. */
  get pendingFrees(): number {
    return this.#pending.length;
  }

  /**
   * Frees the host clusters that lost their last guest reference: first the L2 tables are
   * written back and the image file flushed (the references are gone on disk), then, once no
   * read that may still use them is in flight, their refcounts are lowered (discards passed on
   * as the policy says). Runs on flush, on close, and when many frees are waiting.
   */
  async releaseFrees(): Promise<void> {
    if (this.#pending.length === 0) return;
    const taken = this.#pending;
    this.#pending = [];
    try {
      await this.#cache.writeBack();
      await this.#io(() => this.#o.storage.flush(), 'flush before freeing clusters');
      if (this.#o.beforeFree !== undefined) await this.#o.beforeFree();
    } catch (error) {
      this.#pending.push(...taken);
      throw error;
    }
    for (const [offset, length, type] of taken) await this.#refcounts.free(offset, length, type);
  }

  /** Lowers the refcounts of host ranges no reference on disk points at, once reads that may use them are done. */
  async #freeRanges(ranges: readonly (readonly [number, number])[], type: DiscardType): Promise<void> {
    if (this.#o.beforeFree !== undefined) await this.#o.beforeFree();
    for (const [offset, length] of ranges) await this.#refcounts.free(offset, length, type);
  }

  async #io(fn: () => Promise<void>, what: string): Promise<void> {
    try {
      await fn();
    } catch (error) {
      throw wrap(error, `${this.#what}: ${what}`);
    }
  }
}

/** Any failure as a Qcow2Error (IO for foreign errors), the code of a Qcow2Error kept. */
function wrap(error: unknown, message: string): Qcow2Error {
  if (isQcow2Error(error)) return error;
  const detail = error instanceof Error ? error.message : String(error);
  return new Qcow2Error('IO', `${message}: ${detail}`, { cause: error });
}

/** A {@link ClusterWriter}. */
export function createClusterWriter(options: ClusterWriterOptions): ClusterWriter {
  return new ClusterWriter(options);
}
