import { join } from 'node:path';
import { describeWithQemu, makeTempDir, qemuImg, qemuIo } from '@qcow2/test-utils';
import { afterAll, describe, expect, it } from 'vitest';
import { canonicalExtents, checkExtentShape, firstDifference, openFile, qemuMap, qemuRaw, readAll, readPoisoned } from './helpers.js';
import { prng, qemuIoArgs, randomOps } from './random-ops.js';

interface Case {
  name: string;
  options: string[];
  size: number;
  clusterSize: number;
  compressed?: boolean;
  subclusters?: boolean;
  zeroes?: boolean;
  seed: number;
  /** qemu-io commands (default 60; fewer for 2 MiB clusters, where each costs a 2 MiB copy). */
  ops?: number;
}

const K = 1024;
const M = 1024 * K;

/**
 * Images written by qemu-io at test time across cluster sizes 512 B..2 MiB, refcount widths
 * 1..64, v2 and v3, extended L2 entries, zlib and zstd, preallocated metadata, virtual sizes
 * that are not a multiple of the cluster size: every byte we read equals `qemu-img convert -O
 * raw`, and our extents agree with `qemu-img map --output=json`.
 */
const cases: Case[] = [
  { name: '512 B clusters, refcount_bits=16', options: ['cluster_size=512'], size: 3 * M, clusterSize: 512, compressed: true, zeroes: true, seed: 1 },
  { name: '1 KiB clusters, refcount_bits=8', options: ['cluster_size=1k', 'refcount_bits=8'], size: 3 * M, clusterSize: K, compressed: true, zeroes: true, seed: 2 },
  { name: '4 KiB clusters, refcount_bits=1', options: ['cluster_size=4k', 'refcount_bits=1'], size: 6 * M, clusterSize: 4 * K, compressed: true, zeroes: true, seed: 3 },
  { name: '64 KiB clusters, refcount_bits=2', options: ['refcount_bits=2'], size: 16 * M, clusterSize: 64 * K, compressed: true, zeroes: true, seed: 4 },
  { name: '16 KiB clusters, refcount_bits=4, zstd', options: ['cluster_size=16k', 'refcount_bits=4', 'compression_type=zstd'], size: 8 * M, clusterSize: 16 * K, compressed: true, zeroes: true, seed: 5 },
  { name: '128 KiB clusters, refcount_bits=32', options: ['cluster_size=128k', 'refcount_bits=32'], size: 24 * M, clusterSize: 128 * K, compressed: true, zeroes: true, seed: 6 },
  { name: '2 MiB clusters, refcount_bits=64', options: ['cluster_size=2M', 'refcount_bits=64'], size: 40 * M, clusterSize: 2 * M, compressed: true, zeroes: true, seed: 7, ops: 20 },
  { name: 'version 2 (compat=0.10), 64 KiB clusters', options: ['compat=0.10'], size: 12 * M, clusterSize: 64 * K, compressed: true, zeroes: true, seed: 8 },
  { name: 'version 2, 4 KiB clusters', options: ['compat=0.10', 'cluster_size=4k'], size: 4 * M, clusterSize: 4 * K, compressed: true, zeroes: true, seed: 9 },
  { name: 'extended L2, 64 KiB clusters', options: ['extended_l2=on'], size: 12 * M, clusterSize: 64 * K, compressed: true, subclusters: true, zeroes: true, seed: 10 },
  { name: 'extended L2, 16 KiB clusters, zstd', options: ['extended_l2=on', 'cluster_size=16k', 'compression_type=zstd'], size: 6 * M, clusterSize: 16 * K, compressed: true, subclusters: true, zeroes: true, seed: 11 },
  { name: 'extended L2, 2 MiB clusters', options: ['extended_l2=on', 'cluster_size=2M'], size: 24 * M, clusterSize: 2 * M, subclusters: true, zeroes: true, seed: 12, ops: 25 },
  { name: 'virtual size not a multiple of the cluster size', options: [], size: 5 * M + 123 * 512, clusterSize: 64 * K, compressed: true, zeroes: true, seed: 13 },
  { name: 'preallocation=metadata', options: ['preallocation=metadata'], size: 8 * M, clusterSize: 64 * K, zeroes: true, seed: 14 },
  { name: 'preallocation=metadata, extended L2', options: ['preallocation=metadata', 'extended_l2=on', 'cluster_size=32k'], size: 4 * M, clusterSize: 32 * K, subclusters: true, zeroes: true, seed: 15 },
  { name: 'zstd, 64 KiB clusters', options: ['compression_type=zstd'], size: 16 * M, clusterSize: 64 * K, compressed: true, zeroes: true, seed: 16 },
];

describeWithQemu('reads equal qemu-img convert, extents equal qemu-img map', () => {
  const tmp = makeTempDir('qcow2-engine-matrix-');
  afterAll(() => tmp.cleanup());

  describe.each(cases)('$name', (c) => {
    it('reads every byte as qemu does, in any request size, and maps it as qemu does', async () => {
      const file = join(tmp.dir, `m${c.seed}.qcow2`);
      qemuImg(['create', '-q', '-f', 'qcow2', ...(c.options.length > 0 ? ['-o', c.options.join(',')] : []), file, String(c.size)]);
      const ops = randomOps({
        seed: c.seed,
        virtualSize: c.size,
        clusterSize: c.clusterSize,
        count: c.ops ?? 60,
        ...(c.compressed === undefined ? {} : { compressed: c.compressed }),
        ...(c.subclusters === undefined ? {} : { subclusters: c.subclusters }),
        ...(c.zeroes === undefined ? {} : { zeroes: c.zeroes }),
      });
      // A compressed write over an allocated cluster fails in qemu (exit 1); the image is still the oracle.
      qemuIo(qemuIoArgs(file, ops), { allowExit: [1] });
      const expected = qemuRaw(tmp.dir, file);

      const image = await openFile(file);
      try {
        expect(image.virtualSize).toBe(expected.length);
        expect(image.clusterSize).toBe(c.clusterSize);
        for (const chunk of [1 << 20, 65536, 12345]) {
          expect(firstDifference(await readAll(image, chunk), expected), `request size ${chunk}`).toBe(-1);
        }
        // Random ranges, any alignment.
        const rand = prng(c.seed * 7919);
        for (let i = 0; i < 200; i++) {
          const offset = Math.floor(rand() * expected.length);
          const length = Math.min(expected.length - offset, Math.floor(rand() * Math.min(3 * c.clusterSize, 256 * 1024)));
          const got = await readPoisoned(image, offset, length);
          expect(firstDifference(got, expected.subarray(offset, offset + length)), `read ${length} at ${offset}`).toBe(-1);
        }
        const extents = await image.extents(0, image.virtualSize);
        checkExtentShape(extents);
        expect(canonicalExtents(extents)).toEqual(qemuMap(file));
      } finally {
        await image.close();
      }
      // Again through the smallest L2 cache qemu allows (two 512-byte slices): every lookup
      // crosses slices and evicts.
      const tiny = await openFile(file, { l2CacheSize: 1024, l2CacheEntrySize: 512 });
      try {
        expect(firstDifference(await readAll(tiny, 100_000), expected), 'tiny cache').toBe(-1);
        expect(tiny.stats().l2Capacity).toBe(1024);
        const extents = await tiny.extents(0, tiny.virtualSize);
        expect(canonicalExtents(extents)).toEqual(canonicalExtents(await (async () => {
          const again = await openFile(file);
          try {
            return await again.extents(0, again.virtualSize);
          } finally {
            await again.close();
          }
        })()));
      } finally {
        await tiny.close();
      }
    });
  });
});
