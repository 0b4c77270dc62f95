import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { createNodeStorage } from '@qcow2/storage-node';
import { describeWithQemu, makeTempDir, qemuCheck, qemuImg, qemuIo } from '@qcow2/test-utils';
import { expect, it } from 'vitest';
import { openImage } from '../src/index.js';
import { applyScript, qemuIoArgs } from './io-script.js';
import { MiB, runCase, type Case, type IoOp } from './write-differential.js';

describeWithQemu('qemu-io scripts by qemu-io and by the engine: backing chains, internal snapshots, data files, small caches, refcount table growth', () => {
  const cases: Case[] = [
    { name: 'compat 0.10 over a raw backing file (zeroes written, discard ignored)', options: 'compat=0.10', size: 4 * MiB, seed: 3, backing: 'raw', prefill: true },
    { name: 'extended L2, 64 KiB clusters, over a qcow2 backing file', options: 'extended_l2=on', size: 8 * MiB, seed: 112, backing: 'qcow2', prefill: true, compressed: true },
    { name: 'extended L2, 2 MiB clusters, over a raw backing file', options: 'extended_l2=on,cluster_size=2M', size: 16 * MiB, seed: 14, backing: 'raw', prefill: true, count: 25, maxClusters: 2 },
    { name: 'zlib compressed writes, 512-byte clusters over a raw/qcow2 chain', options: 'cluster_size=512', size: 128 * 1024, seed: 17, backing: 'chain', prefill: true, compressed: true },
    { name: 'over a raw ← qcow2 backing chain', options: 'cluster_size=16384', size: 4 * MiB, seed: 18, backing: 'chain', prefill: true },
    { name: 'over qemu-made internal snapshots (which keep their content)', options: 'cluster_size=4096', size: 2 * MiB, seed: 19, prefill: true, snapshots: true, compressed: true },
    { name: 'over internal snapshots, extended L2 and a backing file', options: 'extended_l2=on,cluster_size=16384', size: 2 * MiB, seed: 20, backing: 'qcow2', prefill: true, snapshots: true, compressed: true },
    { name: 'external data file', options: 'cluster_size=4096', size: 2 * MiB, seed: 21, dataFile: 'plain' },
    { name: 'external raw data file', options: 'cluster_size=4096', size: 2 * MiB, seed: 22, dataFile: 'raw' },
    { name: 'small caches (512-byte L2 slices, 2 entries)', options: 'cluster_size=65536', size: 8 * MiB, seed: 23, prefill: true, compressed: true, open: { l2CacheSize: 1024, l2CacheEntrySize: 512, refcountCacheSize: 4 * 65536 } },
    {
      name: 'the refcount table grows: 512-byte clusters, 48 MiB written',
      options: 'cluster_size=512',
      size: 64 * MiB,
      seed: 24,
      count: 20,
      unsafe: true,
      tableGrows: true,
      first: [{ kind: 'write', offset: 0, length: 48 * MiB, pattern: 5 }],
    },
  ];
  for (const c of cases) runCase(c);

  it('stays consistent where qemu 7.2 packs a compressed cluster into a data cluster (alloc_bytes reusing a freed cluster)', async () => {
    const { dir, cleanup } = makeTempDir('qcow2-write-');
    try {
      const a = join(dir, 'a.qcow2');
      const b = join(dir, 'b.qcow2');
      qemuImg(['create', '-q', '-f', 'qcow2', a, '1M']);
      copyFileSync(a, b);
      const script: IoOp[] = [
        // A compressed cluster: qemu's free_byte_offset now points into its host cluster X.
        { kind: 'compressed', offset: 0, length: 65536, pattern: 1 },
        // Overwritten: copied to a new cluster, X freed.
        { kind: 'write', offset: 0, length: 65536, pattern: 2 },
        // A new data cluster takes X.
        { kind: 'write', offset: 65536, length: 65536, pattern: 3 },
        // qemu packs this one into X, after the first compressed stream: over the data.
        { kind: 'compressed', offset: 131072, length: 65536, pattern: 4 },
      ];
      qemuIo([...qemuIoArgs(script), a]);
      expect(qemuCheck(a).exitCode, 'qemu 7.2 reports its own OFLAG_COPIED error').not.toBe(0);
      const storage = await createNodeStorage(b);
      const image = await openImage(storage, { readOnly: false, discard: 'unmap' });
      await applyScript(image, script);
      const content = await image.readBytes(0, 3 * 65536);
      await image.close();
      await storage.close();
      for (const [i, p] of [2, 3, 4].entries()) {
        expect(content.subarray(i * 65536, (i + 1) * 65536).every((x) => x === p), `cluster ${i}`).toBe(true);
      }
      const check = qemuCheck(b);
      expect(check.exitCode, JSON.stringify(check.json)).toBe(0);
    } finally {
      cleanup();
    }
  });
});
