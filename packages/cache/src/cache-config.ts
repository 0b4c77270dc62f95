import { hex, invalidArgument, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS } from '@qcow2/format';

/**
 * QEMU's rules for sizing the two metadata caches from the runtime options `cache-size`,
 * `l2-cache-size`, `refcount-cache-size`, `l2-cache-entry-size` and `cache-clean-interval`
 * (block/qcow2.c `read_cache_sizes` and `qcow2_update_options_prepare`, QEMU 7.2 on Linux).
 */

const MiB = 1024 * 1024;

/** Default upper bound of the L2 cache: 32 MiB (qemu's DEFAULT_L2_CACHE_MAX_SIZE on Linux). */
export const DEFAULT_L2_CACHE_MAX_SIZE: number = 32 * MiB;
/** Default `cache-clean-interval` in seconds (qemu's DEFAULT_CACHE_CLEAN_INTERVAL on Linux). */
export const DEFAULT_CACHE_CLEAN_INTERVAL = 600;
/** The L2 cache holds at least 2 entries, enough for copy-on-write (MIN_L2_CACHE_SIZE). */
export const MIN_L2_CACHE_ENTRIES = 2;
/** The refcount cache holds at least 4 clusters, enough for refcount table growth. */
export const MIN_REFCOUNT_CACHE_ENTRIES = 4;
/** `cache-clean-interval` may not exceed UINT_MAX seconds. */
export const MAX_CACHE_CLEAN_INTERVAL = 0xffff_ffff;
/** Entry counts above INT_MAX are refused, as qemu does. */
export const MAX_CACHE_ENTRIES = 0x7fff_ffff;
/** Smallest L2 cache entry (slice) size. */
export const MIN_L2_CACHE_ENTRY_SIZE: number = 1 << MIN_CLUSTER_BITS;
/** When the L2 cache cannot cover the whole image, qemu slices L2 tables into 4 KiB entries. */
export const DEFAULT_L2_CACHE_PARTIAL_ENTRY_SIZE = 4096;

export interface CacheConfigOptions {
  /** The image's cluster size in bytes. */
  readonly clusterSize: number;
  /** The image's virtual size in bytes (qemu rounds it up to 512-byte sectors). */
  readonly virtualSize: number;
  /** Extended L2 entries (16 bytes instead of 8). */
  readonly extendedL2?: boolean;
  /** `cache-size`: the combined size of both caches, split as qemu splits it. */
  readonly cacheSize?: number;
  /** `l2-cache-size`: maximum bytes of the L2 cache (default 32 MiB, capped by what the image needs). */
  readonly l2CacheSize?: number;
  /** `refcount-cache-size`: bytes of the refcount block cache (default: 4 clusters). */
  readonly refcountCacheSize?: number;
  /** `l2-cache-entry-size`: a power of two from 512 to the cluster size. */
  readonly l2CacheEntrySize?: number;
  /** `cache-clean-interval` in seconds; 0 disables cleaning (default 600). */
  readonly cacheCleanInterval?: number;
}

/** The sizes qemu would use; pass them to `createTableCache`. */
export interface CacheConfig {
  /** Bytes of the L2 cache: `l2CacheEntries × l2CacheEntrySize`. */
  readonly l2CacheSize: number;
  readonly l2CacheEntrySize: number;
  readonly l2CacheEntries: number;
  /** Bytes of the refcount block cache: `refcountCacheEntries × clusterSize`. */
  readonly refcountCacheSize: number;
  /** Refcount blocks are always cached whole: the entry size is the cluster size. */
  readonly refcountCacheEntrySize: number;
  readonly refcountCacheEntries: number;
  /** Seconds; 0 means never. */
  readonly cacheCleanInterval: number;
}

function size(value: number | undefined, option: string): number | undefined {
  if (value === undefined) return undefined;
  if (!Number.isSafeInteger(value) || value < 0) {
    throw invalidArgument(`${option}: ${String(value)} is not a size in bytes`);
  }
  return value;
}

function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0 && n <= 2 ** 30;
}

/**
 * Computes the cache sizes qemu 7.2 uses for an image, from the same options and with the same
 * refusals (messages name qemu's option names):
 *
 * - L2 cache: `min(l2-cache-size ?? 32 MiB, what covers the whole image)`, where the whole image
 *   needs `roundUp(ceil(virtualSize / clusterSize) × l2EntrySize, clusterSize)` bytes.
 * - `cache-size` alone gives the L2 cache as much as covers the image and the refcount cache the
 *   rest, or, when it is too small for that plus 4 clusters, 4 clusters (at most all of it) to
 *   the refcount cache and the remainder to L2. With `l2-cache-size` or `refcount-cache-size`
 *   the other gets what is left; all three at once is refused.
 * - When the L2 cache does not cover the image and no entry size was given, entries are
 *   `min(clusterSize, 4096)` bytes.
 * - Sizes are divided into entries (rounding down), then raised to at least 2 L2 entries and 4
 *   refcount blocks.
 */
export function resolveCacheConfig(options: CacheConfigOptions): CacheConfig {
  const { clusterSize, virtualSize } = options;
  if (
    !isPowerOfTwo(clusterSize) ||
    clusterSize < 1 << MIN_CLUSTER_BITS ||
    clusterSize > 2 ** MAX_CLUSTER_BITS
  ) {
    throw invalidArgument(`cluster size ${String(clusterSize)} is not a power of two from 512 to 2 MiB`);
  }
  if (!Number.isSafeInteger(virtualSize) || virtualSize < 0) {
    throw invalidArgument(`virtual size ${String(virtualSize)} is not a size in bytes`);
  }
  const combined = size(options.cacheSize, 'cache-size');
  const l2Setting = size(options.l2CacheSize, 'l2-cache-size');
  const refcountSetting = size(options.refcountCacheSize, 'refcount-cache-size');
  const entrySizeSetting = size(options.l2CacheEntrySize, 'l2-cache-entry-size');

  const l2EntryBytes = options.extendedL2 === true ? 16 : 8;
  const sectors = Math.ceil(virtualSize / 512);
  const diskBytes = sectors * 512;
  const maxL2Entries = Math.ceil(diskBytes / clusterSize);
  const maxL2Cache = Math.ceil((maxL2Entries * l2EntryBytes) / clusterSize) * clusterSize;
  const minRefcountCache = MIN_REFCOUNT_CACHE_ENTRIES * clusterSize;

  let refcountCacheSize = refcountSetting ?? 0;
  let l2CacheSize = Math.min(maxL2Cache, l2Setting ?? DEFAULT_L2_CACHE_MAX_SIZE);

  if (combined !== undefined) {
    if (l2Setting !== undefined && refcountSetting !== undefined) {
      throw invalidArgument(
        'cache-size, l2-cache-size and refcount-cache-size may not be set at the same time',
      );
    } else if (l2Setting !== undefined && l2Setting > combined) {
      throw invalidArgument('l2-cache-size may not exceed cache-size');
    } else if (refcountCacheSize > combined) {
      throw invalidArgument('refcount-cache-size may not exceed cache-size');
    }
    if (l2Setting !== undefined) {
      refcountCacheSize = combined - l2CacheSize;
    } else if (refcountSetting !== undefined) {
      l2CacheSize = combined - refcountCacheSize;
    } else if (combined >= maxL2Cache + minRefcountCache) {
      l2CacheSize = maxL2Cache;
      refcountCacheSize = combined - l2CacheSize;
    } else {
      refcountCacheSize = Math.min(combined, minRefcountCache);
      l2CacheSize = combined - refcountCacheSize;
    }
  }

  let l2CacheEntrySize = entrySizeSetting ?? clusterSize;
  if (l2CacheSize < maxL2Cache && entrySizeSetting === undefined) {
    l2CacheEntrySize = Math.min(clusterSize, DEFAULT_L2_CACHE_PARTIAL_ENTRY_SIZE);
  }
  if (
    l2CacheEntrySize < MIN_L2_CACHE_ENTRY_SIZE ||
    l2CacheEntrySize > clusterSize ||
    !isPowerOfTwo(l2CacheEntrySize)
  ) {
    throw invalidArgument(
      `L2 cache entry size must be a power of two between ${MIN_L2_CACHE_ENTRY_SIZE} and the cluster size (${clusterSize})`,
    );
  }

  const l2CacheEntries = Math.max(MIN_L2_CACHE_ENTRIES, Math.floor(l2CacheSize / l2CacheEntrySize));
  if (l2CacheEntries > MAX_CACHE_ENTRIES) throw invalidArgument('L2 cache size too big');
  const refcountCacheEntries = Math.max(
    MIN_REFCOUNT_CACHE_ENTRIES,
    Math.floor(refcountCacheSize / clusterSize),
  );
  if (refcountCacheEntries > MAX_CACHE_ENTRIES) throw invalidArgument('Refcount cache size too big');

  const interval = options.cacheCleanInterval ?? DEFAULT_CACHE_CLEAN_INTERVAL;
  if (!Number.isSafeInteger(interval) || interval < 0) {
    throw invalidArgument(`cache-clean-interval: ${String(interval)} is not a number of seconds`);
  }
  if (interval > MAX_CACHE_CLEAN_INTERVAL) {
    throw invalidArgument(`Cache clean interval too big (${hex(interval)} seconds)`);
  }

  return {
    l2CacheSize: l2CacheEntries * l2CacheEntrySize,
    l2CacheEntrySize,
    l2CacheEntries,
    refcountCacheSize: refcountCacheEntries * clusterSize,
    refcountCacheEntrySize: clusterSize,
    refcountCacheEntries,
    cacheCleanInterval: interval,
  };
}
