import type { StorageResolver } from '@qcow2/storage';

export type ImageFormat = 'qcow2' | 'raw';

export interface OpenOptions {
  /** Default true. Only read-only opening exists for now: false is refused with UNSUPPORTED. */
  readOnly?: boolean;
  /** Forced format; probed from the first bytes when absent. */
  format?: ImageFormat;
  /** Name (path, URL…) of this image: passed as `from` to the resolver for its backing file and data file. */
  name?: string;
  /**
   * Opens backing files and external data files. Without one, an image with a backing file
   * opens only with `backing: false` (its unallocated clusters then read as zeros); otherwise
   * it is refused with NOT_FOUND naming the backing file. An image with an external data file
   * needs one.
   */
  resolver?: StorageResolver;
  /** false: do not open the backing chain (unallocated clusters read as zeros). Default true. */
  backing?: boolean;
  /** Deepest backing chain opened (default 32); a deeper one is refused, and so is a loop. */
  maxBackingDepth?: number;
  /** L2 cache size in bytes (qemu's l2-cache-size; default: what covers the image, up to 32 MiB). */
  l2CacheSize?: number;
  /** Accepted for qemu option compatibility; a read-only image reads no refcount blocks. */
  refcountCacheSize?: number;
  /** L2 cache entry size in bytes (qemu's l2-cache-entry-size: a power of two, 512..cluster size). */
  l2CacheEntrySize?: number;
  /** Seconds after which idle cache entries are dropped (qemu's cache-clean-interval, default 600; 0 = never). */
  cacheCleanInterval?: number;
  /**
   * Also refuse (CORRUPT) what qemu reads past: reserved bits in L1/L2 entries, and L2 tables or
   * clusters starting past the end of their file. Default false: read as qemu reads.
   */
  strict?: boolean;
}

export type ExtentKind = 'data' | 'zero' | 'unallocated';

export interface Extent {
  /** Guest offset. */
  offset: number;
  length: number;
  /**
   * data: bytes come from a file; zero: reads as zeros and is allocated or marked zero in some
   * layer; unallocated: nothing in the chain (reads as zeros).
   */
  kind: ExtentKind;
  /** 0 = this image, 1 = its backing file, … (qemu-img map's "depth"). */
  depth: number;
  /**
   * Host offset, in the file that holds the cluster (the data file for external data), of the
   * first byte: for uncompressed data, and (as qemu-img map reports it) for preallocated zero
   * clusters and for unallocated subclusters of an allocated cluster.
   */
  hostOffset?: number;
  /** True for data stored compressed (no hostOffset then). */
  compressed?: boolean;
  /** The name (as given to the resolver, or `name`) of the file at `depth` that holds the bytes. */
  filename?: string;
}

export interface SnapshotInfo {
  id: string;
  name: string;
  vmStateSize: number;
  dateSec: number;
  dateNsec: number;
  /** Nanoseconds; a number (exact up to 2^53 ns, 104 days of guest time). */
  vmClockNsec: number;
  /** The virtual disk size when the snapshot was taken. */
  diskSize: number;
  /** qemu's record/replay instruction counter, when the snapshot has one. */
  icount?: number;
}

export interface ImageStats {
  l2Hits: number;
  l2Misses: number;
  /** L2 slices read from the file. */
  l2Reads: number;
  l2Evictions: number;
  /** L2 slices in the cache now, and their bytes. */
  l2Entries: number;
  l2BytesInUse: number;
  /** The L2 cache capacity in bytes. */
  l2Capacity: number;
  /** Compressed clusters decompressed, and reads served from the last decompressed cluster. */
  decompressions: number;
  decompressedHits: number;
}

export interface Image {
  readonly format: ImageFormat;
  readonly virtualSize: number;
  readonly readOnly: boolean;
  /** qcow2 only. */
  readonly clusterSize?: number;
  /** The backing file name as stored in the image. */
  readonly backingFile?: string;
  /** The backing format from the header extension. */
  readonly backingFormat?: string;
  /** The opened backing image, when opened. */
  readonly backing?: Image;
  readonly snapshots: readonly SnapshotInfo[];
  /**
   * qemu-img info's format-specific data, with qemu's field names: compat, compression-type,
   * lazy-refcounts, bitmaps, refcount-bits, data-file, data-file-raw, corrupt, extended-l2.
   * undefined for raw images.
   */
  readonly formatSpecific?: Record<string, unknown>;
  /** The dirty bit (lazy refcounts left unflushed) is set. */
  readonly dirty: boolean;
  /** Fills `dst` with guest bytes at `offset`; a range past virtualSize is refused INVALID_ARGUMENT. */
  read(dst: Uint8Array, offset: number): Promise<void>;
  /** Allocating convenience form of `read`. */
  readBytes(offset: number, length: number): Promise<Uint8Array>;
  /**
   * The runs over [offset, offset + length), in order, covering it: adjacent runs with equal
   * kind, depth, file and contiguous host offsets merged; unallocated L1 ranges skipped without
   * reading anything.
   */
  extents(offset: number, length: number): Promise<Extent[]>;
  /** A read-only view of an internal snapshot's content (by id, else by name); NOT_FOUND if absent. */
  openSnapshot(idOrName: string): Promise<Image>;
  /** Cache counters, for the CLI and benchmarks. */
  stats(): ImageStats;
  /** Closes this image and the backing chain and data file it opened. Closing twice is a no-op. */
  close(): Promise<void>;
}
