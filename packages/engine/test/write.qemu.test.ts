import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createNodeResolver, createNodeStorage } from '@qcow2/storage-node';
import { describeWithQemu, makeTempDir, qemuCheck, qemuImg, qemuIo } from '@qcow2/test-utils';
import { expect, it } from 'vitest';
import { checkRefcounts, openImage, type OpenOptions } from '../src/index.js';
import { applyScript, qemuIoArgs, randomScript, sourceBytes, type IoOp } from './io-script.js';

interface Case {
  name: string;
  /** qemu-img create -o options. */
  options: string;
  size: number;
  seed: number;
  count?: number;
  compressed?: boolean;
  /** A backing chain under the image: a raw file, a qcow2 file, or raw under qcow2. */
  backing?: 'raw' | 'qcow2' | 'chain';
  /** Data written by qemu-io before the copy (normal, compressed and zero clusters). */
  prefill?: boolean;
  /** Internal snapshots taken by qemu-img around the prefill. */
  snapshots?: boolean;
  /** External data file (data_file=…), raw or not. */
  dataFile?: 'plain' | 'raw';
  /** A first qemu-io command run by both before the script (e.g. a large write). */
  first?: IoOp[];
  /** Open options for our side. */
  open?: OpenOptions;
  /** cache=unsafe on both sides (no flushes: what a large write costs is then the write). */
  unsafe?: boolean;
  /** The refcount table must have grown beyond its first cluster. */
  tableGrows?: boolean;
  maxClusters?: number;
}

const MiB = 1024 * 1024;

function clusterSizeOf(options: string): number {
  const m = /cluster_size=(\d+)([kKmM]?)/.exec(options);
  if (m === null) return 65536;
  const unit = m[2] === '' ? 1 : /k/i.test(m[2]!) ? 1024 : MiB;
  return Number(m[1]) * unit;
}

function runCase(c: Case): void {
  it(c.name, async () => {
    const { dir, cleanup } = makeTempDir('qcow2-write-');
    try {
      const a = join(dir, 'a.qcow2');
      const b = join(dir, 'b.qcow2');
      const cs = clusterSizeOf(c.options);
      const extended = /extended_l2=on/.test(c.options);
      const maxClusters = c.maxClusters ?? 3;
      const source = join(dir, 'source.bin');
      const sourceData = sourceBytes(maxClusters * cs);
      writeFileSync(source, sourceData);

      // The backing chain, filled by qemu-io.
      const backingArgs: string[] = [];
      if (c.backing !== undefined) {
        const base = join(dir, 'base.raw');
        qemuImg(['create', '-q', '-f', 'raw', base, String(c.size - 3 * 512)]);
        qemuIo(['-f', 'raw', '-c', `write -s ${source} 0 ${Math.min(sourceData.length, c.size - 3 * 512)}`, '-c', `write -P 7 ${c.size / 2} ${c.size / 4}`, base]);
        if (c.backing === 'raw') {
          backingArgs.push('-b', base, '-F', 'raw');
        } else {
          const mid = join(dir, 'mid.qcow2');
          qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', ...(c.backing === 'chain' ? ['-b', base, '-F', 'raw'] : []), mid, String(c.size)]);
          qemuIo(['-c', `write -P 9 ${cs / 2} ${3 * cs}`, '-c', `write -c -P 11 ${Math.floor(c.size / 3 / 4096) * 4096} 4096`, '-c', `write -z ${c.size / 4} ${cs}`, mid]);
          backingArgs.push('-b', mid, '-F', 'qcow2');
        }
      }

      const create = (file: string, dataFile?: string): void => {
        const options = dataFile === undefined ? c.options : `${c.options},data_file=${dataFile}${c.dataFile === 'raw' ? ',data_file_raw=on' : ''}`;
        qemuImg(['create', '-q', '-f', 'qcow2', '-o', options, ...backingArgs, file, String(c.size)]);
      };
      if (c.dataFile !== undefined) {
        create(a, join(dir, 'a.data'));
        create(b, join(dir, 'b.data'));
      } else {
        create(a);
      }
      if (c.prefill === true) {
        const prefill = randomScript({ size: c.size, clusterSize: cs, subclusterSize: extended ? cs / 32 : cs, count: 12, seed: c.seed + 1000, compressed: c.dataFile === undefined, maxClusters });
        if (c.snapshots === true) qemuImg(['snapshot', '-c', 's0', a]);
        qemuIo([...qemuIoArgs(prefill.slice(0, 6), source), a], { allowExit: [1] });
        if (c.snapshots === true) qemuImg(['snapshot', '-c', 's1', a]);
        qemuIo([...qemuIoArgs(prefill.slice(6), source), a], { allowExit: [1] });
      }
      if (c.dataFile === undefined) copyFileSync(a, b);
      const snapshotsBefore = c.snapshots === true ? ['s0', 's1'].map((s) => convert(dir, a, s)) : [];

      const script = [
        ...(c.first ?? []),
        ...randomScript({
          size: c.size,
          clusterSize: cs,
          subclusterSize: extended ? cs / 32 : cs,
          count: c.count ?? 40,
          seed: c.seed,
          compressed: c.compressed === true && c.dataFile === undefined,
          maxClusters,
        }),
      ];
      const qemuOut = qemuIo([...(c.unsafe === true ? ['-t', 'unsafe'] : []), ...qemuIoArgs(script, source), a], { allowExit: [1] });
      const qemuFailures = qemuOut.split('\n').filter((l) => /failed/.test(l)).length;
      // The oracle must be sound: qemu 7.2 can corrupt its own image (see the test below).
      expect(qemuCheck(a).exitCode, 'qemu-img check of the image qemu-io wrote').toBe(0);

      const storage = await createNodeStorage(b);
      const resolver = createNodeResolver({ allowAbsolute: true });
      const image = await openImage(storage, {
        readOnly: false,
        discard: 'unmap',
        name: b,
        resolver,
        dataFileResolver: createNodeResolver({ allowAbsolute: true, readOnly: false }),
        ...(c.unsafe === true ? { cacheMode: 'unsafe' as const } : {}),
        ...c.open,
      });
      let failures: number;
      try {
        failures = await applyScript(image, script, sourceData);
      } finally {
        await image.close();
        await storage.close();
      }
      expect(failures, 'compressed writes refused over allocated clusters, as by qemu-io').toBe(qemuFailures);

      if (c.tableGrows === true) {
        const header = readFileSync(b).subarray(0, 64);
        expect(new DataView(header.buffer, header.byteOffset).getUint32(56), 'refcount_table_clusters').toBeGreaterThan(1);
      }
      qemuImg(['compare', a, b]);
      const check = qemuCheck(b);
      expect(check.json['leaks'] ?? 0, JSON.stringify(check.json)).toBe(0);
      expect(check.json['corruptions'] ?? 0, JSON.stringify(check.json)).toBe(0);
      expect(check.json['check-errors'] ?? 0, JSON.stringify(check.json)).toBe(0);
      expect(check.exitCode).toBe(0);
      const ours = await createNodeStorage(b, { readOnly: true });
      try {
        const result = await checkRefcounts(ours);
        expect([result.leaks, result.corruptions, result.copiedFlags, result.problems]).toEqual([[], [], [], []]);
      } finally {
        await ours.close();
      }
      // Internal snapshots keep their content.
      for (const [i, s] of ['s0', 's1'].entries()) {
        if (c.snapshots !== true) break;
        expect(Buffer.from(convert(dir, b, s)).equals(Buffer.from(snapshotsBefore[i]!)), `snapshot ${s}`).toBe(true);
      }
    } finally {
      cleanup();
    }
  });
}

function convert(dir: string, file: string, snapshot: string): Uint8Array {
  const out = join(dir, `${snapshot}-${Math.random().toString(36).slice(2)}.raw`);
  qemuImg(['convert', '-O', 'raw', '-l', snapshot, file, out]);
  return new Uint8Array(readFileSync(out));
}

describeWithQemu('qemu-io scripts applied by qemu-io and by the engine give identical images; ours pass qemu-img check', () => {
  const cases: Case[] = [
    { name: 'compat 1.1, 64 KiB clusters, over written, compressed and zero clusters', options: 'compat=1.1', size: 8 * MiB, seed: 1, prefill: true, compressed: true },
    { name: 'compat 0.10, 64 KiB clusters (zeroes deallocate or are written)', options: 'compat=0.10', size: 8 * MiB, seed: 2, prefill: true, compressed: true },
    { name: 'compat 0.10 over a raw backing file (zeroes written, discard ignored)', options: 'compat=0.10', size: 4 * MiB, seed: 3, backing: 'raw', prefill: true },
    { name: '512-byte clusters', options: 'cluster_size=512', size: 256 * 1024, seed: 4, prefill: true, compressed: true, count: 60 },
    { name: '4 KiB clusters, 1-bit refcounts', options: 'cluster_size=4096,refcount_bits=1', size: MiB, seed: 5, prefill: true, compressed: true },
    { name: '4 KiB clusters, 2-bit refcounts', options: 'cluster_size=4096,refcount_bits=2', size: MiB, seed: 6, prefill: true, compressed: true },
    { name: '4 KiB clusters, 4-bit refcounts', options: 'cluster_size=4096,refcount_bits=4', size: MiB, seed: 7, prefill: true, compressed: true },
    { name: '4 KiB clusters, 8-bit refcounts', options: 'cluster_size=4096,refcount_bits=8', size: MiB, seed: 8, prefill: true, compressed: true },
    { name: '4 KiB clusters, 32-bit refcounts', options: 'cluster_size=4096,refcount_bits=32', size: MiB, seed: 9, prefill: true, compressed: true },
    { name: '512-byte clusters, 64-bit refcounts', options: 'cluster_size=512,refcount_bits=64', size: 256 * 1024, seed: 10, prefill: true, compressed: true },
    { name: '2 MiB clusters', options: 'cluster_size=2M', size: 32 * MiB, seed: 11, prefill: true, compressed: true, count: 25, maxClusters: 2 },
    { name: 'extended L2, 64 KiB clusters, over a qcow2 backing file', options: 'extended_l2=on', size: 8 * MiB, seed: 112, backing: 'qcow2', prefill: true, compressed: true },
    { name: 'extended L2, 32 KiB clusters, 1-bit refcounts', options: 'extended_l2=on,cluster_size=32768,refcount_bits=1', size: 4 * MiB, seed: 13, prefill: true, compressed: true },
    { name: 'extended L2, 2 MiB clusters, over a raw backing file', options: 'extended_l2=on,cluster_size=2M', size: 16 * MiB, seed: 14, backing: 'raw', prefill: true, count: 25, maxClusters: 2 },
    { name: 'lazy refcounts', options: 'lazy_refcounts=on,cluster_size=4096', size: 2 * MiB, seed: 15, prefill: true, compressed: true },
    { name: 'zstd compressed writes', options: 'compression_type=zstd,cluster_size=16384', size: 2 * MiB, seed: 16, prefill: true, compressed: true },
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
