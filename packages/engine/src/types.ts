import type { MetadataStructure } from '@qcow2/cache';
import type { StorageResolver } from '@qcow2/storage';

export type ImageFormat = 'qcow2' | 'raw';

export interface OpenOptions {
  /**
   * Default true. false opens the image for writing (qcow2 and raw): the storage must be
   * writable, and so must the external data file the resolver (or `dataFileResolver`) opens.
   * A qcow2 image with the corrupt bit is refused; one with the dirty bit has its refcounts
   * rebuilt (as `qemu-img check -r all` would) before the open resolves.
   */
  readOnly?: boolean;
  /** qemu's lazy-refcounts runtime option; default: the image's compatible feature bit. Version 3 only. */
  lazyRefcounts?: boolean;
  /**
   * qemu's discard= option: 'unmap' carries out discard requests and lets writeZeroes
   * deallocate (`mayUnmap`), and makes pass-discard-request default to true. Default 'ignore'
   * (discard() does nothing). qemu-io opens images with discard=unmap.
   */
  discard?: 'ignore' | 'unmap';
  /** qemu's pass-discard-request: discard freed host clusters of guest discards in the file. Default: discard === 'unmap'. */
  passDiscardRequest?: boolean;
  /** qemu's pass-discard-snapshot. Default true. */
  passDiscardSnapshot?: boolean;
  /** qemu's pass-discard-other (freed metadata, clusters replaced by copy-on-write). Default false. */
  passDiscardOther?: boolean;
  /**
   * qemu's cache modes as far as flushes go: 'writeback' (default) and 'none' make flush()
   * durable; 'unsafe' turns every storage flush into a no-op (qemu's cache.no-flush).
   */
  cacheMode?: 'writeback' | 'unsafe' | 'none';
  /**
   * Opens the external data file of a writable image (it must be writable). Default: `resolver`,
   * which must then hand out writable storages.
   */
  dataFileResolver?: StorageResolver;
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
  /**
   * qemu's overlap-check: before every write to the image file (guest data and metadata), the
   * range is checked against the metadata structures this selects — 'constant': the header,
   * the active L1 table, the refcount table, the snapshot table and the bitmap directory;
   * 'cached' (default): also the active L2 tables, the refcount blocks and the snapshots' L1
   * tables; 'all': also the snapshots' L2 tables; 'none': nothing. A write that would land on one
   * (other than the structure being written in place) is refused (CORRUPT, qemu's "Preventing
   * invalid write on metadata (overlaps with …)"), the image is marked corrupt (incompatible
   * feature bit 1, version 3) and takes no more writes; reads go on. Writable images only.
   */
  overlapCheck?: 'none' | 'constant' | 'cached' | 'all';
  /** qemu's overlap-check.<structure> switches: each one given overrides what `overlapCheck` selects. */
  overlapChecks?: Partial<Record<OverlapStructure, boolean>>;
  /**
   * Called once, when a fatal corruption event marks the image corrupt (qemu's
   * BLOCK_IMAGE_CORRUPTED event, which qemu-img and qemu-io report as "qcow2: Marking image as
   * corrupt: <message>; further corruption events will be suppressed"). Further events are
   * suppressed, as in qemu. An exception thrown by the callback is ignored.
   */
  onCorruption?: (event: CorruptionEvent) => void;
}

/** A corruption event (qemu's BLOCK_IMAGE_CORRUPTED). */
export interface CorruptionEvent {
  /** qemu's message, e.g. "Preventing invalid write on metadata (overlaps with active L1 table)". */
  message: string;
  /** Host offset and length of the refused write. */
  offset: number;
  length: number;
  /** The image takes no more writes (always true for the events this implementation signals). */
  fatal: boolean;
}

/** The metadata structures of the overlap checks, as qemu's overlap-check.<structure> options name them. */
export type OverlapStructure = MetadataStructure;

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

/** Options of {@link Image.createSnapshot}. */
export interface CreateSnapshotOptions {
  /** Defaults as qemu-img snapshot -c: date = now (seconds, and microseconds × 1000 as nanoseconds). */
  dateSec?: number;
  dateNsec?: number;
  /** Guest clock in nanoseconds; default 0 (qemu-img). */
  vmClockNsec?: number;
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
  /** The internal snapshots, in table order (reflects creates, applies and deletes made through this Image). */
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
  /**
   * qemu-img snapshot -c NAME: a new internal snapshot of the current content; its id is the
   * highest numeric id + 1 (as qemu allocates it), VM state size 0, disk size the current virtual
   * size. Crash-safe. READ_ONLY on a read-only image; UNSUPPORTED for raw images and images with
   * an external data file; INVALID_ARGUMENT for a name already in use (qemu-img itself allows
   * duplicates) or, with refcount_bits=1, an image with any L2 table (qemu: EINVAL).
   */
  createSnapshot(name: string, options?: CreateSnapshotOptions): Promise<SnapshotInfo>;
  /**
   * qemu-img snapshot -a: the image's content (and virtual size) become the snapshot's. Found by
   * id, else by name (qemu's find_snapshot_by_id_or_name); NOT_FOUND if absent.
   */
  applySnapshot(idOrName: string): Promise<void>;
  /**
   * qemu-img snapshot -d: found as qemu 7.2's qemu-img finds it, by name only (bdrv_snapshot_find:
   * `-d 1` deletes the snapshot named "1", not the one with id 1); NOT_FOUND if absent.
   */
  deleteSnapshot(idOrName: string): Promise<void>;
  /** Cache counters, for the CLI and benchmarks. */
  stats(): ImageStats;
  /**
   * Writes guest bytes at `offset`, allocating clusters (with copy-on-write of the untouched
   * parts from the backing chain, shared, compressed or zero clusters). READ_ONLY when opened
   * read-only; INVALID_ARGUMENT past the virtual size.
   */
  write(src: Uint8Array, offset: number): Promise<void>;
  /**
   * qemu-io's write -z: the range reads as zeros afterwards (zero flag or subcluster zero bits
   * in version 3; in version 2 clusters are deallocated when nothing shows through, else zeros
   * are written). `mayUnmap` (qemu-io -u, BDRV_REQ_MAY_UNMAP) lets allocated clusters be freed
   * when the image was opened with discard 'unmap'.
   */
  writeZeroes(offset: number, length: number, options?: { mayUnmap?: boolean }): Promise<void>;
  /**
   * qemu-io's discard: whole clusters only (as qemu), honouring the pass-discard options; does
   * nothing unless the image was opened with discard 'unmap' (nor on a version 2 image with a
   * backing file).
   */
  discard(offset: number, length: number): Promise<void>;
  /**
   * qemu-io's write -c: `offset` cluster-aligned, whole clusters (a partial last cluster at the
   * end of the image is padded); a cluster that does not shrink is written uncompressed. As in
   * qemu, a cluster that is already allocated is refused (IO).
   */
  writeCompressed(src: Uint8Array, offset: number): Promise<void>;
  /** Resolves when everything written before the call is durable (metadata in crash-safe order). */
  flush(): Promise<void>;
  /**
   * Closes this image and the backing chain and data file it opened, after the operations in
   * flight; a writable image is flushed first and (lazy refcounts) its dirty bit cleared.
   * Closing twice is a no-op.
   */
  close(): Promise<void>;
}
