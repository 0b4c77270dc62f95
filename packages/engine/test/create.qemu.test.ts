/**
 * createImage against `qemu-img create -f qcow2` 7.2: for each option set, qemu's file and ours
 * (in two directories, so relative backing/data file names are spelled the same) are byte for
 * byte identical — header cluster, refcount structure, L1 and L2 tables, file size, external
 * data file — `qemu-img info` agrees, and `qemu-img check` finds nothing on ours.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createNodeResolver, createNodeStorage } from '@qcow2/storage-node';
import { describeWithQemu, makeTempDir, qemuInfo } from '@qcow2/test-utils';
import { afterAll, expect, it } from 'vitest';
import { createImage, type CreateOptions } from '../src/index.js';

interface Case {
  name: string;
  /** qemu-img create's -o string (without size). */
  o: string;
  /** Size argument; absent: from the backing file. */
  size?: string;
  options: CreateOptions;
  /** Files both directories need first. */
  setup?: (dir: string) => void;
  /**
   * Compare only this many bytes from the start (all the metadata) and the qemu-img maps, for
   * files whose gigabytes of sparse data would only slow the test down.
   */
  head?: number;
}

const MiB = 1 << 20;
const GiB = 1 << 30;

function rawBacking(dir: string): void {
  writeFileSync(join(dir, 'base.raw'), new Uint8Array(3 * MiB + 512));
}

function qcowBacking(dir: string): void {
  const r = spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', 'base.qcow2', '5M'], { cwd: dir, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
}

const CASES: Case[] = [
  { name: 'defaults, 1 GiB', o: '', size: '1G', options: { size: GiB } },
  { name: 'size 0', o: '', size: '0', options: { size: 0 } },
  { name: 'size not a multiple of the cluster', o: '', size: '1000k', options: { size: 1000 * 1024 } },
  { name: '512-byte clusters', o: 'cluster_size=512', size: '64M', options: { size: 64 * MiB, clusterSize: 512 } },
  { name: '4 KiB clusters (no feature table)', o: 'cluster_size=4k', size: '1G', options: { size: GiB, clusterSize: 4096 } },
  { name: '8 KiB clusters', o: 'cluster_size=8k', size: '1G', options: { size: GiB, clusterSize: 8192 } },
  { name: '2 MiB clusters, 1 TiB', o: 'cluster_size=2M', size: '1T', options: { size: 2 ** 40, clusterSize: 2 * MiB } },
  { name: 'compat 0.10', o: 'compat=0.10', size: '1G', options: { size: GiB, compat: '0.10' } },
  { name: 'compat 0.10, 512-byte clusters', o: 'compat=0.10,cluster_size=512', size: '10M', options: { size: 10 * MiB, compat: '0.10', clusterSize: 512 } },
  ...[1, 2, 4, 8, 32, 64].map(
    (bits): Case => ({ name: `refcount_bits=${bits}`, o: `refcount_bits=${bits}`, size: '1G', options: { size: GiB, refcountBits: bits } }),
  ),
  { name: 'extended L2', o: 'extended_l2=on', size: '1G', options: { size: GiB, extendedL2: true } },
  { name: 'extended L2, 16 KiB clusters', o: 'extended_l2=on,cluster_size=16k', size: '3G', options: { size: 3 * GiB, extendedL2: true, clusterSize: 16384 } },
  { name: 'lazy refcounts', o: 'lazy_refcounts=on', size: '1G', options: { size: GiB, lazyRefcounts: true } },
  { name: 'zstd', o: 'compression_type=zstd', size: '1G', options: { size: GiB, compressionType: 'zstd' } },
  {
    name: 'raw backing file with format',
    o: 'backing_file=base.raw,backing_fmt=raw',
    size: '8M',
    options: { size: 8 * MiB, backingFile: 'base.raw', backingFormat: 'raw' },
    setup: rawBacking,
  },
  {
    name: 'size from a raw backing file (rounded up to 512)',
    o: 'backing_file=base.raw,backing_fmt=raw',
    options: { backingFile: 'base.raw', backingFormat: 'raw' },
    setup: rawBacking,
  },
  {
    name: 'size from a qcow2 backing file',
    o: 'backing_file=base.qcow2,backing_fmt=qcow2',
    options: { backingFile: 'base.qcow2', backingFormat: 'qcow2' },
    setup: qcowBacking,
  },
  {
    name: 'backing file, v2, 512-byte clusters',
    o: 'backing_file=base.qcow2,backing_fmt=qcow2,compat=0.10,cluster_size=512',
    size: '4M',
    options: { size: 4 * MiB, backingFile: 'base.qcow2', backingFormat: 'qcow2', compat: '0.10', clusterSize: 512 },
    setup: qcowBacking,
  },
  { name: 'external data file', o: 'data_file=data.raw', size: '32M', options: { size: 32 * MiB, dataFile: 'data.raw' } },
  {
    name: 'external raw data file (metadata implied)',
    o: 'data_file=data.raw,data_file_raw=on',
    size: '1G',
    options: { size: GiB, dataFile: 'data.raw', dataFileRaw: true },
  },
  {
    name: 'external data file, falloc',
    o: 'data_file=data.raw,preallocation=falloc,cluster_size=4k',
    size: '6M',
    options: { size: 6 * MiB, dataFile: 'data.raw', preallocation: 'falloc', clusterSize: 4096 },
  },
  {
    name: 'metadata, two L2 tables',
    o: 'preallocation=metadata',
    size: '700M',
    options: { size: 700 * MiB, preallocation: 'metadata' },
    head: 1 * MiB,
  },
  {
    name: 'metadata, extended L2, with a backing file',
    o: 'preallocation=metadata,extended_l2=on,cluster_size=16k,backing_file=base.raw,backing_fmt=raw',
    size: '40M',
    options: { size: 40 * MiB, preallocation: 'metadata', extendedL2: true, clusterSize: 16384, backingFile: 'base.raw', backingFormat: 'raw' },
    setup: rawBacking,
  },
  {
    name: 'metadata, 512-byte clusters: refcount blocks and table grow',
    o: 'preallocation=metadata,cluster_size=512',
    size: '10M',
    options: { size: 10 * MiB, preallocation: 'metadata', clusterSize: 512 },
  },
  {
    name: 'metadata, 512-byte clusters, 64-bit refcounts',
    o: 'preallocation=metadata,cluster_size=512,refcount_bits=64',
    size: '3M',
    options: { size: 3 * MiB, preallocation: 'metadata', clusterSize: 512, refcountBits: 64 },
  },
  {
    name: 'metadata, 1-bit refcounts, lazy',
    o: 'preallocation=metadata,refcount_bits=1,lazy_refcounts=on,cluster_size=4k',
    size: '300M',
    options: { size: 300 * MiB, preallocation: 'metadata', refcountBits: 1, lazyRefcounts: true, clusterSize: 4096 },
  },
  {
    name: 'metadata, 2 MiB clusters (runs cut at 1023 clusters, chunks at INT_MAX)',
    o: 'preallocation=metadata,cluster_size=2M',
    size: '2560M',
    options: { size: 2560 * MiB, preallocation: 'metadata', clusterSize: 2 * MiB },
    head: 16 * MiB,
  },
  {
    name: 'large L1 with 512-byte clusters (refcount table grows)',
    o: 'cluster_size=512',
    size: '8G',
    options: { size: 8 * GiB, clusterSize: 512 },
  },
  { name: 'falloc', o: 'preallocation=falloc', size: '20M', options: { size: 20 * MiB, preallocation: 'falloc' } },
  { name: 'full, 4 KiB clusters', o: 'preallocation=full,cluster_size=4k', size: '24M', options: { size: 24 * MiB, preallocation: 'full', clusterSize: 4096 } },
  {
    name: 'full, lazy refcounts, size not a multiple of the cluster',
    o: 'preallocation=full,lazy_refcounts=on',
    size: '3146752',
    options: { size: 3146752, preallocation: 'full', lazyRefcounts: true },
  },
  { name: 'full, size 0', o: 'preallocation=full', size: '0', options: { size: 0, preallocation: 'full' } },
  {
    name: 'full, 512-byte clusters, 8-bit refcounts',
    o: 'preallocation=full,cluster_size=512,refcount_bits=8',
    size: '3M',
    options: { size: 3 * MiB, preallocation: 'full', clusterSize: 512, refcountBits: 8 },
  },
  {
    name: 'falloc, extended L2 (L2 tables past the data)',
    o: 'preallocation=falloc,extended_l2=on,cluster_size=16k',
    size: '40M',
    options: { size: 40 * MiB, preallocation: 'falloc', extendedL2: true, clusterSize: 16384 },
  },
];

/** qemu-img info without what names the directory or measures the host file. */
function info(file: string): Record<string, unknown> {
  const json = qemuInfo(file);
  delete json['filename'];
  delete json['actual-size'];
  delete json['full-backing-filename'];
  return json;
}

/** qemu-img check run where the image is (qemu opens a relative data file name from there). */
function check(dir: string, file: string): { status: number | null; json: Record<string, unknown> } {
  const r = spawnSync('qemu-img', ['check', '--output=json', file], { cwd: dir, encoding: 'utf8' });
  return { status: r.status, json: JSON.parse(r.stdout || '{}') as Record<string, unknown> };
}

describeWithQemu('createImage lays out images as qemu-img create -f qcow2', () => {
  const tmp = makeTempDir('qcow2-create-');
  afterAll(() => tmp.cleanup());
  let n = 0;

  it.each(CASES.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    n += 1;
    const qdir = join(tmp.dir, `q${n}`);
    const odir = join(tmp.dir, `o${n}`);
    mkdirSync(qdir);
    mkdirSync(odir);
    c.setup?.(qdir);
    c.setup?.(odir);
    const args = ['create', '-q', '-f', 'qcow2', ...(c.o === '' ? [] : ['-o', c.o]), 'img.qcow2', ...(c.size === undefined ? [] : [c.size])];
    const q = spawnSync('qemu-img', args, { cwd: qdir, encoding: 'utf8' });
    expect(q.stderr).toBe('');

    const file = join(odir, 'img.qcow2');
    const storage = await createNodeStorage(file, { create: true });
    await createImage(storage, {
      ...c.options,
      name: file,
      resolver: createNodeResolver(),
      openDataFile: (name) => createNodeStorage(join(odir, name), { create: true }),
    });
    await storage.close();

    expect(statSync(file).size).toBe(statSync(join(qdir, 'img.qcow2')).size);
    expect(firstDifference(file, join(qdir, 'img.qcow2'), c.head)).toBe(-1);
    if (c.head !== undefined) expect(map(odir)).toEqual(map(qdir));
    if (c.options.dataFile !== undefined) {
      expect(statSync(join(odir, c.options.dataFile)).size).toBe(statSync(join(qdir, c.options.dataFile)).size);
    }
    expect(info(file)).toEqual(info(join(qdir, 'img.qcow2')));
    const checked = check(odir, 'img.qcow2');
    expect(checked.json).toMatchObject({ 'check-errors': 0 });
    expect(checked.json['leaks'] ?? 0).toBe(0);
    expect(checked.json['corruptions'] ?? 0).toBe(0);
    expect(checked.status).toBe(0);
  });
});

function map(dir: string): string {
  const r = spawnSync('qemu-img', ['map', '--output=json', 'img.qcow2'], { cwd: dir, encoding: 'utf8' });
  return r.stdout;
}

/** The first byte at which two files differ (-1 when equal), read 8 MiB at a time, up to `limit`. */
function firstDifference(a: string, b: string, limit = Number.MAX_SAFE_INTEGER): number {
  const fa = openSync(a, 'r');
  const fb = openSync(b, 'r');
  try {
    const ba = Buffer.alloc(8 * MiB);
    const bb = Buffer.alloc(8 * MiB);
    for (let at = 0; ; at += ba.length) {
      const na = readSync(fa, ba, 0, ba.length, at);
      const nb = readSync(fb, bb, 0, bb.length, at);
      if (na !== nb || !ba.subarray(0, na).equals(bb.subarray(0, nb))) {
        for (let i = 0; i < Math.min(na, nb); i++) if (ba[i] !== bb[i]) return at + i;
        return at + Math.min(na, nb);
      }
      if (na < ba.length || at + na >= limit) return -1;
    }
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
}
