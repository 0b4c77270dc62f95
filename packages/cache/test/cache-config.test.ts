import { describe, expect, it } from 'vitest';
import { isQcow2Error } from '@qcow2/format';
import { resolveCacheConfig, type CacheConfigOptions } from '@qcow2/cache';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;

function refused(options: CacheConfigOptions): string {
  try {
    resolveCacheConfig(options);
  } catch (e) {
    expect(isQcow2Error(e)).toBe(true);
    return (e as Error).message;
  }
  throw new Error('expected a refusal');
}

describe('resolveCacheConfig (qemu 7.2 read_cache_sizes)', () => {
  it('defaults: the L2 cache covers a small image in whole-cluster entries, 4 refcount blocks', () => {
    // 1 GiB / 64 KiB = 16384 L2 entries × 8 bytes = 128 KiB of L2 tables: two clusters.
    expect(resolveCacheConfig({ clusterSize: 64 * KiB, virtualSize: GiB })).toEqual({
      l2CacheSize: 128 * KiB,
      l2CacheEntrySize: 64 * KiB,
      l2CacheEntries: 2,
      refcountCacheSize: 256 * KiB,
      refcountCacheEntrySize: 64 * KiB,
      refcountCacheEntries: 4,
      cacheCleanInterval: 600,
    });
  });

  it('defaults: 32 MiB of 4 KiB slices when the image needs more', () => {
    // 1 TiB needs 128 MiB of L2 tables.
    const c = resolveCacheConfig({ clusterSize: 64 * KiB, virtualSize: TiB });
    expect(c).toMatchObject({ l2CacheSize: 32 * MiB, l2CacheEntrySize: 4096, l2CacheEntries: 8192 });
  });

  it('rounds the L2 need up to whole clusters and the virtual size up to sectors', () => {
    // 1280 MiB with 64 KiB clusters needs 160 KiB of entries: three clusters (qemu commit b70d0820).
    expect(resolveCacheConfig({ clusterSize: 64 * KiB, virtualSize: 1280 * MiB })).toMatchObject({
      l2CacheSize: 192 * KiB,
      l2CacheEntries: 3,
    });
    // One byte more than 64 MiB of 4 KiB clusters is one more L2 entry, so one more table.
    expect(resolveCacheConfig({ clusterSize: 4 * KiB, virtualSize: 64 * MiB + 1 })).toMatchObject({
      l2CacheSize: 132 * KiB,
      l2CacheEntrySize: 4 * KiB,
    });
  });

  it('extended L2 entries need twice the cache', () => {
    expect(resolveCacheConfig({ clusterSize: 64 * KiB, virtualSize: GiB, extendedL2: true })).toMatchObject({
      l2CacheSize: 256 * KiB,
      l2CacheEntries: 4,
    });
  });

  it('never fewer than 2 L2 entries and 4 refcount blocks', () => {
    const c = resolveCacheConfig({ clusterSize: 64 * KiB, virtualSize: MiB, l2CacheSize: 0, refcountCacheSize: 1 });
    // An L2 cache smaller than the image needs is sliced into 4 KiB entries, then raised to 2.
    expect(c).toMatchObject({ l2CacheEntries: 2, l2CacheEntrySize: 4096, l2CacheSize: 8192, refcountCacheEntries: 4 });
    expect(resolveCacheConfig({ clusterSize: 512, virtualSize: 0 })).toMatchObject({
      l2CacheEntries: 2,
      l2CacheEntrySize: 512,
    });
  });

  it('cache-size alone: L2 gets what covers the image, refcounts the rest', () => {
    const c = resolveCacheConfig({ clusterSize: 64 * KiB, virtualSize: GiB, cacheSize: 10 * MiB });
    expect(c).toMatchObject({ l2CacheSize: 128 * KiB, l2CacheEntrySize: 64 * KiB, refcountCacheEntries: 158 });
  });

  it('cache-size alone, too small: 4 clusters to refcounts, the rest to L2 in 4 KiB slices', () => {
    const c = resolveCacheConfig({ clusterSize: 64 * KiB, virtualSize: TiB, cacheSize: MiB });
    expect(c).toMatchObject({
      l2CacheSize: 768 * KiB,
      l2CacheEntrySize: 4096,
      l2CacheEntries: 192,
      refcountCacheSize: 256 * KiB,
    });
  });

  it('cache-size with one of the other two: the other gets the remainder', () => {
    expect(
      resolveCacheConfig({ clusterSize: 64 * KiB, virtualSize: TiB, cacheSize: 4 * MiB, l2CacheSize: MiB }),
    ).toMatchObject({ l2CacheSize: MiB, refcountCacheSize: 3 * MiB });
    // The L2 part is capped by what the image needs; refcounts still get cache-size minus that.
    expect(
      resolveCacheConfig({ clusterSize: 64 * KiB, virtualSize: GiB, cacheSize: 4 * MiB, l2CacheSize: MiB }),
    ).toMatchObject({ l2CacheSize: 128 * KiB, refcountCacheSize: 4 * MiB - 128 * KiB });
    expect(
      resolveCacheConfig({ clusterSize: 64 * KiB, virtualSize: TiB, cacheSize: 4 * MiB, refcountCacheSize: MiB }),
    ).toMatchObject({ l2CacheSize: 3 * MiB, refcountCacheSize: MiB, l2CacheEntrySize: 4096 });
  });

  it('an explicit entry size is kept', () => {
    expect(
      resolveCacheConfig({ clusterSize: 64 * KiB, virtualSize: TiB, l2CacheEntrySize: 16 * KiB }),
    ).toMatchObject({ l2CacheEntrySize: 16 * KiB, l2CacheEntries: 2048 });
  });

  it("refuses what qemu refuses, with qemu's messages", () => {
    const base = { clusterSize: 64 * KiB, virtualSize: GiB };
    expect(refused({ ...base, cacheSize: MiB, l2CacheSize: 512 * KiB, refcountCacheSize: 512 * KiB })).toBe(
      'cache-size, l2-cache-size and refcount-cache-size may not be set at the same time',
    );
    expect(refused({ ...base, cacheSize: MiB, l2CacheSize: 2 * MiB })).toBe('l2-cache-size may not exceed cache-size');
    expect(refused({ ...base, cacheSize: MiB, refcountCacheSize: 2 * MiB })).toBe(
      'refcount-cache-size may not exceed cache-size',
    );
    for (const l2CacheEntrySize of [256, 1000, 128 * KiB]) {
      expect(refused({ ...base, l2CacheEntrySize })).toBe(
        'L2 cache entry size must be a power of two between 512 and the cluster size (65536)',
      );
    }
    expect(refused({ ...base, cacheCleanInterval: 2 ** 32 })).toMatch(/^Cache clean interval too big/);
    expect(refused({ clusterSize: 512, virtualSize: 2 ** 52, l2CacheSize: 2 ** 40, l2CacheEntrySize: 512 })).toBe(
      'L2 cache size too big',
    );
    expect(refused({ clusterSize: 3000, virtualSize: GiB })).toMatch(/cluster size/);
    expect(refused({ ...base, virtualSize: -1 })).toMatch(/virtual size/);
    expect(refused({ ...base, cacheSize: 1.5 })).toMatch(/^cache-size/);
  });

  it('passes the clean interval through (0 disables)', () => {
    expect(resolveCacheConfig({ clusterSize: 512, virtualSize: 0, cacheCleanInterval: 0 }).cacheCleanInterval).toBe(0);
  });
});
