import { spawnSync } from 'node:child_process';
import { closeSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { describeWithQemu, makeTempDir, qemuImg, qemuInfo, qemuIo } from '@qcow2/test-utils';
import { afterAll, expect, it } from 'vitest';
import {
  canonicalExtents,
  checkExtentShape,
  firstDifference,
  openFile,
  qemuMap,
  qemuRaw,
  readAll,
  readPoisoned,
} from './helpers.js';
import { prng, qemuIoArgs, randomOps } from './random-ops.js';

const K = 1024;
const M = 1024 * K;
const T = 1024 * 1024 * M;

describeWithQemu('internal snapshots, external data files, dirty images, huge sparse images', () => {
  const tmp = makeTempDir('qcow2-engine-features-');
  afterAll(() => tmp.cleanup());
  const path = (name: string): string => join(tmp.dir, name);

  it('reads each internal snapshot as qemu-img convert -l does, by id or name, and lists them as qemu-img info', async () => {
    const file = path('snap.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=16k', file, String(4 * M)]);
    qemuIo(qemuIoArgs(file, randomOps({ seed: 31, virtualSize: 4 * M, clusterSize: 16 * K, count: 30, zeroes: true, compressed: true })), { allowExit: [1] });
    qemuImg(['snapshot', '-c', 'first', file]);
    qemuIo(qemuIoArgs(file, randomOps({ seed: 32, virtualSize: 4 * M, clusterSize: 16 * K, count: 30, zeroes: true, compressed: true })), { allowExit: [1] });
    qemuImg(['snapshot', '-c', 'second', file]);
    qemuImg(['resize', '-q', file, String(5 * M)]);
    qemuIo(qemuIoArgs(file, randomOps({ seed: 33, virtualSize: 5 * M, clusterSize: 16 * K, count: 30, zeroes: true })), { allowExit: [1] });

    const image = await openFile(file);
    try {
      const info = qemuInfo(file) as { snapshots: Record<string, number | string>[] };
      expect(image.snapshots.map((s) => ({
        id: s.id,
        name: s.name,
        'vm-state-size': s.vmStateSize,
        'date-sec': s.dateSec,
        'date-nsec': s.dateNsec,
        'vm-clock-sec': Math.floor(s.vmClockNsec / 1e9),
        'vm-clock-nsec': s.vmClockNsec % 1e9,
      }))).toEqual(info.snapshots.map((s) => ({
        id: s['id'],
        name: s['name'],
        'vm-state-size': s['vm-state-size'],
        'date-sec': s['date-sec'],
        'date-nsec': s['date-nsec'],
        'vm-clock-sec': s['vm-clock-sec'],
        'vm-clock-nsec': s['vm-clock-nsec'],
      })));
      expect(image.snapshots.map((s) => s.diskSize)).toEqual([4 * M, 4 * M]);

      for (const [key, name] of [['first', 'first'], ['2', 'second']] as const) {
        const view = await image.openSnapshot(key);
        const expected = qemuRaw(tmp.dir, file, ['-l', `snapshot.name=${name}`]);
        expect(view.virtualSize).toBe(expected.length);
        expect(firstDifference(await readAll(view, 50000), expected), `snapshot ${key}`).toBe(-1);
        await view.close();
        await expect(view.read(new Uint8Array(1), 0)).rejects.toMatchObject({ code: 'CLOSED' });
      }
      // The active image is untouched by the views.
      expect(firstDifference(await readAll(image), qemuRaw(tmp.dir, file))).toBe(-1);
      await expect(image.openSnapshot('third')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    } finally {
      await image.close();
    }
  });

  it.each([
    ['an external data file', 'data_file=ext1.raw', 'ext1'],
    ['a raw external data file', 'data_file=ext2.raw,data_file_raw=on', 'ext2'],
  ])('reads an image with %s as qemu does, and maps it as qemu does', async (_name, options, base) => {
    const file = path(`${base}.qcow2`);
    // qemu 7.2 opens a relative data file name relative to the current directory (we resolve it
    // relative to the image, as the resolver does backing files): run qemu from the image's directory.
    const cwd = process.cwd();
    process.chdir(tmp.dir);
    const image = await (async () => {
      try {
        qemuImg(['create', '-q', '-f', 'qcow2', '-o', options, file, String(6 * M)]);
        qemuIo(qemuIoArgs(file, randomOps({ seed: 41, virtualSize: 6 * M, clusterSize: 64 * K, count: 50, zeroes: true })));
        return await openFile(file);
      } finally {
        process.chdir(cwd);
      }
    })();
    process.chdir(tmp.dir);
    try {
      expect(image.formatSpecific).toMatchObject({ 'data-file': `${base}.raw`, 'data-file-raw': options.includes('raw=on') });
      expect(firstDifference(await readAll(image, 70000), qemuRaw(tmp.dir, file))).toBe(-1);
      const extents = await image.extents(0, image.virtualSize);
      checkExtentShape(extents);
      expect(extents.filter((e) => e.kind === 'data').every((e) => e.filename === path(`${base}.raw`))).toBe(true);
      if (!options.includes('raw=on')) {
        // (With data_file_raw, qemu-img map also gives unallocated runs the guest offset: the CLI does that.)
        expect(canonicalExtents(extents)).toEqual(qemuMap(file));
      }
    } finally {
      process.chdir(cwd);
      await image.close();
    }
    const noResolver = await openFile(file, { resolver: undefined as never }).catch((e: unknown) => e);
    expect(noResolver).toMatchObject({ code: 'NOT_FOUND' });
    expect((noResolver as Error).message).toMatch(new RegExp(`external data file '${base}.raw'`));
  });

  it('reports what qemu-img info reports: format-specific data, backing file and format, cluster size', async () => {
    const cwd = process.cwd();
    process.chdir(tmp.dir);
    try {
      const variants: [string, string[]][] = [
        ['info-v2.qcow2', ['-o', 'compat=0.10,cluster_size=4k']],
        ['info-v3.qcow2', ['-o', 'lazy_refcounts=on,refcount_bits=64,compression_type=zstd']],
        ['info-ext.qcow2', ['-o', 'extended_l2=on,data_file=info-ext.data,data_file_raw=on,refcount_bits=1']],
        ['info-backed.qcow2', ['-b', 'info-v2.qcow2', '-F', 'qcow2']],
      ];
      for (const [name, args] of variants) {
        qemuImg(['create', '-q', '-f', 'qcow2', ...args, name, String(3 * M)]);
      }
      qemuImg(['bitmap', '--add', 'info-v3.qcow2', 'first']);
      qemuImg(['bitmap', '--add', '-g', '512k', '--disable', 'info-v3.qcow2', 'second']);
      for (const [name] of variants) {
        const info = qemuInfo(name) as {
          'cluster-size': number;
          'virtual-size': number;
          'backing-filename'?: string;
          'backing-filename-format'?: string;
          'format-specific': { data: Record<string, unknown> };
          'dirty-flag': boolean;
        };
        const image = await openFile(name);
        try {
          expect(image.formatSpecific, name).toEqual(info['format-specific'].data);
          expect(image.clusterSize).toBe(info['cluster-size']);
          expect(image.virtualSize).toBe(info['virtual-size']);
          expect(image.backingFile).toBe(info['backing-filename']);
          expect(image.backingFormat).toBe(info['backing-filename-format']);
          expect(image.dirty).toBe(info['dirty-flag']);
        } finally {
          await image.close();
        }
      }
    } finally {
      process.chdir(cwd);
    }
  });

  it('opens an image left dirty by a killed qemu-io (lazy refcounts) read-only, and reads it as qemu does', async () => {
    const file = path('dirty.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on,cluster_size=4k', file, String(2 * M)]);
    const r = spawnSync('qemu-io', ['-c', 'write -P 0x5a 0 300k', '-c', 'write -P 0x5b 1M 9k', '-c', 'sigraise 9', file]);
    expect(r.signal ?? r.status).not.toBe(0);
    expect((qemuInfo(file) as { 'dirty-flag': boolean })['dirty-flag']).toBe(true);
    const image = await openFile(file);
    try {
      expect(image.dirty).toBe(true);
      expect(image.formatSpecific).toMatchObject({ 'lazy-refcounts': true });
      const ours = await readAll(image);
      expect(ours[0]).toBe(0x5a);
      expect(ours[M + 9 * K - 1]).toBe(0x5b);
      expect(firstDifference(ours, qemuRaw(tmp.dir, file))).toBe(-1);
    } finally {
      await image.close();
    }
  });

  it('maps and reads a sparse 4 TiB image as qemu does, reading only the L2 tables it needs', async () => {
    const file = path('sparse.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', file, String(4 * T)]);
    const writes: [number, number][] = [
      [0, 64 * K],
      [T + 12345, 100 * K],
      [2 * T - 4 * K, 8 * K],
      [4 * T - 64 * K, 64 * K],
    ];
    qemuIo(writes.flatMap(([offset, length], i) => ['-c', `write -P ${i + 1} ${offset} ${length}`]).concat([file]));
    const raw = path('sparse.raw');
    qemuImg(['convert', '-O', 'raw', file, raw]);
    const fd = openSync(raw, 'r');
    const image = await openFile(file);
    try {
      expect(image.virtualSize).toBe(4 * T);
      const extents = await image.extents(0, image.virtualSize);
      expect(canonicalExtents(extents)).toEqual(qemuMap(file));
      // The 5 L2 tables the writes allocated (16 slices of 4 KiB each: the 32 MiB default cache
      // does not cover 4 TiB, so qemu's rule makes its entries 4 KiB), nothing for the empty terabytes.
      expect(image.stats().l2Misses).toBe(5 * 16);
      const rand = prng(51);
      const ranges: [number, number][] = [...writes.map(([o, l]): [number, number] => [Math.max(0, o - 1000), l + 2000])];
      for (let i = 0; i < 50; i++) ranges.push([Math.floor(rand() * (4 * T - M)), Math.floor(rand() * M)]);
      const misses = image.stats().l2Misses;
      for (const [offset, length] of ranges) {
        const n = Math.min(length, 4 * T - offset);
        const expected = new Uint8Array(n);
        readSync(fd, expected, 0, n, offset);
        expect(firstDifference(await readPoisoned(image, offset, n), expected), `read ${n} at ${offset}`).toBe(-1);
      }
      expect(image.stats().l2Misses).toBe(misses);
    } finally {
      closeSync(fd);
      await image.close();
    }
  });
});
