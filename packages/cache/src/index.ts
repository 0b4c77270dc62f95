export type { CacheEntry } from './cache-entry.js';
export { createTableCache, TableCache } from './table-cache.js';
export type { CacheStats, TableCacheOptions } from './table-cache.js';
export {
  DEFAULT_CACHE_CLEAN_INTERVAL,
  DEFAULT_L2_CACHE_MAX_SIZE,
  DEFAULT_L2_CACHE_PARTIAL_ENTRY_SIZE,
  MAX_CACHE_CLEAN_INTERVAL,
  MAX_CACHE_ENTRIES,
  MIN_L2_CACHE_ENTRIES,
  MIN_L2_CACHE_ENTRY_SIZE,
  MIN_REFCOUNT_CACHE_ENTRIES,
  resolveCacheConfig,
} from './cache-config.js';
export type { CacheConfig, CacheConfigOptions } from './cache-config.js';
export type { MetadataStructure, WriteGuard } from './write-guard.js';
