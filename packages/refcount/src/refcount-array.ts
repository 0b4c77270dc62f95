import {
  getRefcount,
  hex,
  invalidArgument,
  MAX_CLUSTER_BITS,
  MIN_CLUSTER_BITS,
  Qcow2Error,
  refcountMax,
  setRefcount,
} from '@qcow2/format';
import { readEntry } from './entries.js';

/** The most bytes a RefcountArray holds (2 GiB): 2^34 clusters at 1 bit, 2^28 at 64 bits. */
export const MAX_REFCOUNT_ARRAY_BYTES: number = 2 ** 31;

/**
 * An in-memory refcount array (qemu's "IMRT", in-memory refcount table): one entry per host
 * cluster, packed exactly as refcount blocks are on disk (refcount_bits = 1 << order), so the
 * slice for refcount block `i` is bytes `[i × clusterSize, (i + 1) × clusterSize)` and can be
 * written to the image as it is. Memory is proportional to the host file: clusters × bits / 8.
 * Used for expected refcounts (check), for comparing and for rebuilding the refcount structure.
 */
export class RefcountArray {
  readonly clusterBits: number;
  readonly refcountOrder: number;
  /** Largest refcount an entry holds. */
  readonly max: number;
  /** Clusters per refcount block (entries per cluster-sized slice). */
  readonly blockEntries: number;
  #bytes: Uint8Array;
  #clusters: number;

  constructor(clusterBits: number, refcountOrder: number, clusters = 0) {
    if (!Number.isInteger(clusterBits) || clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
      throw invalidArgument(`refcount array: cluster bits ${String(clusterBits)} is not in ${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS}`);
    }
    this.max = refcountMax(refcountOrder);
    this.clusterBits = clusterBits;
    this.refcountOrder = refcountOrder;
    this.blockEntries = 2 ** (clusterBits + 3 - refcountOrder);
    this.#clusters = 0;
    this.#bytes = new Uint8Array(0);
    this.resize(clusters);
  }

  /** Clusters the array covers; entries past it read as 0. */
  get clusters(): number {
    return this.#clusters;
  }

  /** Bytes held for the entries (cluster-aligned, as written to refcount blocks). */
  get byteLength(): number {
    return this.#bytesFor(this.#clusters);
  }

  #bytesFor(clusters: number): number {
    const blocks = Math.ceil(clusters / this.blockEntries);
    return blocks * 2 ** this.clusterBits;
  }

  /**
   * Makes the array cover at least `clusters` clusters (new entries are 0). Refuses (UNSUPPORTED)
   * sizes above MAX_REFCOUNT_ARRAY_BYTES before allocating anything.
   */
  resize(clusters: number): void {
    if (!Number.isSafeInteger(clusters) || clusters < 0) {
      throw invalidArgument(`refcount array: ${String(clusters)} is not a number of clusters`);
    }
    if (clusters <= this.#clusters) return;
    const needed = this.#bytesFor(clusters);
    if (needed > MAX_REFCOUNT_ARRAY_BYTES) {
      throw new Qcow2Error(
        'UNSUPPORTED',
        `refcount array: ${clusters} clusters of ${1 << this.refcountOrder}-bit refcounts need ${needed} bytes, above the ${MAX_REFCOUNT_ARRAY_BYTES}-byte limit`,
      );
    }
    if (needed > this.#bytes.length) {
      // Grow geometrically so cluster-by-cluster growth stays linear overall.
      const capacity = Math.min(MAX_REFCOUNT_ARRAY_BYTES, Math.max(needed, this.#bytes.length * 2));
      let next: Uint8Array;
      try {
        next = new Uint8Array(capacity);
      } catch (cause) {
        try {
          next = new Uint8Array(needed);
        } catch {
          throw new Qcow2Error('UNSUPPORTED', `refcount array: cannot allocate ${needed} bytes`, { cause });
        }
      }
      next.set(this.#bytes.subarray(0, this.#bytesFor(this.#clusters)));
      this.#bytes = next;
    }
    this.#clusters = clusters;
  }

  #checkCluster(cluster: number): void {
    if (!Number.isSafeInteger(cluster) || cluster < 0) {
      throw invalidArgument(`refcount array: ${String(cluster)} is not a cluster index`);
    }
  }

  /** The refcount of `cluster`; 0 past the end. */
  get(cluster: number): number {
    if (cluster >= 0 && cluster < this.#clusters && Number.isInteger(cluster)) {
      return readEntry(this.#bytes, cluster, this.refcountOrder);
    }
    this.#checkCluster(cluster);
    return 0;
  }

  /** Sets the refcount of `cluster` (0..max), growing the array when needed. */
  set(cluster: number, value: number): void {
    this.#checkCluster(cluster);
    if (cluster >= this.#clusters) {
      if (value === 0) return;
      this.resize(cluster + 1);
    }
    setRefcount(this.#bytes, cluster, this.refcountOrder, value);
  }

  /**
   * Adds one to the refcount of `cluster`, growing the array when needed. Returns false, leaving
   * the entry at its maximum, when it already holds `max` (qemu's "overflow cluster").
   */
  increment(cluster: number): boolean {
    const value = this.get(cluster);
    if (value >= this.max) return false;
    this.set(cluster, value + 1);
    return true;
  }

  /**
   * The first cluster in `[from, end)` whose refcount is not 0, or `end` when there is none.
   * Skips zero bytes without decoding entries.
   */
  nextNonZero(from: number, end: number): number {
    const stop = Math.min(end, this.#clusters);
    let c = from;
    const order = this.refcountOrder;
    const bytes = this.#bytes;
    while (c < stop) {
      if (order <= 3) {
        const perByte = 8 >>> order;
        if (c % perByte === 0) {
          // Whole zero bytes at a time.
          let b = c / perByte;
          const lastByte = Math.ceil(stop / perByte);
          while (b < lastByte && bytes[b] === 0) b++;
          c = b * perByte;
          if (c >= stop) return end;
        }
      } else {
        const width = 1 << (order - 3);
        let at = c * width;
        const stopAt = stop * width;
        while (at < stopAt && bytes[at] === 0) at++;
        const next = Math.floor(at / width);
        if (next > c) {
          c = next;
          if (c >= stop) return end;
        }
      }
      if (readEntry(bytes, c, order) !== 0) return c;
      c++;
    }
    return end;
  }

  /**
   * The bytes of refcount block `index` (clusters `[index × blockEntries, (index + 1) ×
   * blockEntries)`), a view into the array: exactly what the on-disk block holds. Entries past
   * `clusters` read as 0.
   */
  blockBytes(index: number): Uint8Array {
    if (!Number.isSafeInteger(index) || index < 0) {
      throw invalidArgument(`refcount array: ${String(index)} is not a refcount block index`);
    }
    const size = 2 ** this.clusterBits;
    const start = index * size;
    if (start + size <= this.#bytes.length) return this.#bytes.subarray(start, start + size);
    // Past what is allocated: a fresh zero block (plus what part of it is allocated).
    const out = new Uint8Array(size);
    if (start < this.#bytes.length) out.set(this.#bytes.subarray(start));
    return out;
  }

  /** A copy (same width, same clusters). */
  clone(): RefcountArray {
    const copy = new RefcountArray(this.clusterBits, this.refcountOrder, this.#clusters);
    copy.#bytes.set(this.#bytes.subarray(0, this.#bytesFor(this.#clusters)));
    return copy;
  }

  /** `cluster 0x1f (offset 0x3e00)` for messages. */
  describe(cluster: number): string {
    return `cluster ${cluster} (host offset ${hex(cluster * 2 ** this.clusterBits)})`;
  }
}
