import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeHeaderCluster, Qcow2Error, QEMU_FEATURE_NAME_TABLE } from '@qcow2/format';
import { createMemoryStorage, type Storage, type StorageResolver } from '@qcow2/storage';
import { describeWithQemu, makeTempDir, qemuImg, qemuIo } from '@qcow2/test-utils';
import { afterAll, describe, expect, it } from 'vitest';
import { openImage, type Image } from '../src/index.js';
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

/** Replaces the backing format extension's magic with an unknown one: qemu (and we) then probe the format. */
function dropBackingFormatExtension(file: string): void {
  const bytes = readFileSync(file);
  const at = bytes.indexOf(Buffer.from([0xe2, 0x79, 0x2a, 0xca]), 104);
  if (at < 0) throw new Error('no backing format extension');
  bytes[at + 3] = 0xcb;
  writeFileSync(file, bytes);
}

async function expectSameAsQemu(dir: string, file: string, image: Image, seed: number): Promise<void> {
  const expected = qemuRaw(dir, file);
  expect(image.virtualSize).toBe(expected.length);
  for (const chunk of [1 << 20, 40000]) {
    expect(firstDifference(await readAll(image, chunk), expected), `request size ${chunk}`).toBe(-1);
  }
  const rand = prng(seed);
  for (let i = 0; i < 100; i++) {
    const offset = Math.floor(rand() * expected.length);
    const length = Math.min(expected.length - offset, Math.floor(rand() * 300 * K));
    expect(firstDifference(await readPoisoned(image, offset, length), expected.subarray(offset, offset + length))).toBe(-1);
  }
  const extents = await image.extents(0, image.virtualSize);
  checkExtentShape(extents);
  expect(canonicalExtents(extents)).toEqual(qemuMap(file));
}

describeWithQemu('backing chains', () => {
  const tmp = makeTempDir('qcow2-engine-backing-');
  afterAll(() => tmp.cleanup());
  const path = (name: string): string => join(tmp.dir, name);

  it('reads a three-deep chain over a raw base like qemu, with depths as qemu-img map reports them', async () => {
    qemuImg(['create', '-q', '-f', 'raw', path('c1-base.raw'), String(6 * M)]);
    // Fully written (no holes), so that qemu's map of the raw file says data everywhere, as ours does.
    qemuIo(['-f', 'raw', '-c', `write -P 0x31 0 ${6 * M}`, path('c1-base.raw')]);
    qemuIo(['-f', 'raw', '-c', `write -P 0x32 ${M + 123} 5000`, path('c1-base.raw')]);
    qemuImg(['create', '-q', '-f', 'qcow2', '-b', 'c1-base.raw', '-F', 'raw', path('c1-mid.qcow2')]);
    qemuIo(qemuIoArgs(path('c1-mid.qcow2'), randomOps({ seed: 21, virtualSize: 6 * M, clusterSize: 64 * K, count: 40, zeroes: true, compressed: true })), { allowExit: [1] });
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', '-b', 'c1-mid.qcow2', '-F', 'qcow2', path('c1-top.qcow2')]);
    qemuIo(qemuIoArgs(path('c1-top.qcow2'), randomOps({ seed: 22, virtualSize: 6 * M, clusterSize: 4 * K, count: 60, zeroes: true, compressed: true })), { allowExit: [1] });

    const image = await openFile(path('c1-top.qcow2'));
    try {
      expect(image.backingFile).toBe('c1-mid.qcow2');
      expect(image.backingFormat).toBe('qcow2');
      expect(image.backing?.format).toBe('qcow2');
      expect(image.backing?.backing?.format).toBe('raw');
      await expectSameAsQemu(tmp.dir, path('c1-top.qcow2'), image, 23);
    } finally {
      await image.close();
    }
  });

  it('reads backing files shorter than the overlay as zeros past their end (qcow2 and raw, odd sizes)', async () => {
    // A raw base of 1000 bytes: qemu sizes it 1024 (whole sectors); the rest reads as zeros.
    writeFileSync(path('c2-base.raw'), Buffer.alloc(1000, 0x41));
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', '-b', 'c2-base.raw', '-F', 'raw', path('c2-mid.qcow2'), String(3 * M)]);
    qemuIo(['-c', `write -P 0x42 ${M} 4096`, '-c', 'write -P 0x43 700 100', path('c2-mid.qcow2')]);
    qemuImg(['create', '-q', '-f', 'qcow2', '-b', 'c2-mid.qcow2', '-F', 'qcow2', path('c2-top.qcow2'), String(8 * M + 512)]);
    qemuIo(['-c', `write -P 0x44 ${2 * M} 100k`, '-c', `write -P 0x45 ${7 * M} 64k`, path('c2-top.qcow2')]);
    const image = await openFile(path('c2-top.qcow2'));
    try {
      expect(image.backing?.backing?.virtualSize).toBe(1024);
      await expectSameAsQemu(tmp.dir, path('c2-top.qcow2'), image, 24);
    } finally {
      await image.close();
    }
  });

  it('reads a three-deep qcow2 chain with different cluster sizes, extended L2 and zstd in the middle', async () => {
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512,compat=0.10', path('c7-base.qcow2'), String(3 * M)]);
    qemuIo(qemuIoArgs(path('c7-base.qcow2'), randomOps({ seed: 71, virtualSize: 3 * M, clusterSize: 512, count: 60, compressed: true, zeroes: true })), { allowExit: [1] });
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=32k,extended_l2=on,compression_type=zstd', '-b', 'c7-base.qcow2', '-F', 'qcow2', path('c7-mid.qcow2'), String(4 * M)]);
    qemuIo(qemuIoArgs(path('c7-mid.qcow2'), randomOps({ seed: 72, virtualSize: 4 * M, clusterSize: 32 * K, count: 60, compressed: true, zeroes: true, subclusters: true })), { allowExit: [1] });
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=2M', '-b', 'c7-mid.qcow2', '-F', 'qcow2', path('c7-top.qcow2'), String(6 * M)]);
    qemuIo(qemuIoArgs(path('c7-top.qcow2'), randomOps({ seed: 73, virtualSize: 6 * M, clusterSize: 2 * M, count: 6, zeroes: true })), { allowExit: [1] });
    const image = await openFile(path('c7-top.qcow2'));
    try {
      await expectSameAsQemu(tmp.dir, path('c7-top.qcow2'), image, 74);
    } finally {
      await image.close();
    }
  });

  it('probes the backing format when the image has no backing format extension', async () => {
    qemuImg(['create', '-q', '-f', 'qcow2', path('c3-base.qcow2'), String(2 * M)]);
    qemuIo(['-c', 'write -P 0x51 0 1M', path('c3-base.qcow2')]);
    qemuImg(['create', '-q', '-f', 'qcow2', '-b', 'c3-base.qcow2', '-F', 'qcow2', path('c3-top.qcow2')]);
    qemuIo(['-c', 'write -P 0x52 64k 64k', path('c3-top.qcow2')]);
    dropBackingFormatExtension(path('c3-top.qcow2'));
    const image = await openFile(path('c3-top.qcow2'));
    try {
      expect(image.backingFormat).toBeUndefined();
      expect(image.backing?.format).toBe('qcow2');
      await expectSameAsQemu(tmp.dir, path('c3-top.qcow2'), image, 25);
    } finally {
      await image.close();
    }
  });

  it('with backing: false, reads unallocated clusters as zeros, as qemu with backing=null', async () => {
    const top = path('c3-top.qcow2');
    const image = await openFile(top, { backing: false });
    try {
      expect(image.backing).toBeUndefined();
      expect(image.backingFile).toBe('c3-base.qcow2');
      const expected = qemuRaw(tmp.dir, `driver=qcow2,file.filename=${top},backing=`, ['--image-opts']);
      expect(firstDifference(await readAll(image), expected)).toBe(-1);
    } finally {
      await image.close();
    }
  });

  it('refuses an image with a backing file without a resolver (NOT_FOUND naming it), and a missing backing file', async () => {
    const bytes = new Uint8Array(readFileSync(path('c3-top.qcow2')));
    const error = await openImage(createMemoryStorage({ initial: bytes }), { name: 'top.qcow2' }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'NOT_FOUND' });
    expect((error as Error).message).toMatch(/backing file 'c3-base.qcow2' of top.qcow2: no resolver/);
    const image = await openImage(createMemoryStorage({ initial: bytes }), { backing: false });
    expect(image.backing).toBeUndefined();
    await image.close();

    qemuImg(['create', '-q', '-f', 'qcow2', '-u', '-b', 'nowhere.qcow2', '-F', 'qcow2', path('c4-orphan.qcow2'), String(M)]);
    const missing = await openFile(path('c4-orphan.qcow2')).catch((e: unknown) => e);
    expect(missing).toMatchObject({ code: 'NOT_FOUND' });
    expect((missing as Error).message).toMatch(/backing file 'nowhere.qcow2'/);
  });

  it('refuses an image that is its own backing file, and a loop of two, as qemu-io does', async () => {
    qemuImg(['create', '-q', '-f', 'qcow2', path('c5-self.qcow2'), String(M)]);
    qemuImg(['rebase', '-u', '-b', 'c5-self.qcow2', '-F', 'qcow2', path('c5-self.qcow2')]);
    qemuImg(['create', '-q', '-f', 'qcow2', path('c5-a.qcow2'), String(M)]);
    qemuImg(['create', '-q', '-f', 'qcow2', path('c5-b.qcow2'), String(M)]);
    qemuImg(['rebase', '-u', '-b', 'c5-b.qcow2', '-F', 'qcow2', path('c5-a.qcow2')]);
    qemuImg(['rebase', '-u', '-b', 'c5-a.qcow2', '-F', 'qcow2', path('c5-b.qcow2')]);
    for (const name of ['c5-self.qcow2', 'c5-a.qcow2']) {
      // qemu-io (read-write) refuses both; read-only it would recurse without end.
      expect(() => qemuIo(['-c', 'read 0 512', path(name)])).toThrow();
      const error = await openFile(path(name)).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'CORRUPT' });
      expect((error as Error).message).toMatch(/infinite loop/);
    }
    // Also when the caller gives no name: the loop is found one level down.
    const resolver: StorageResolver = async () => createMemoryStorage({ initial: new Uint8Array(readFileSync(path('c5-self.qcow2'))) });
    const anonymous = await openImage(createMemoryStorage({ initial: new Uint8Array(readFileSync(path('c5-self.qcow2'))) }), { resolver }).catch((e: unknown) => e);
    expect(anonymous).toMatchObject({ code: 'CORRUPT' });
  });

  it('refuses a chain deeper than maxBackingDepth and opens one exactly that deep', async () => {
    qemuImg(['create', '-q', '-f', 'qcow2', path('c6-0.qcow2'), String(M)]);
    for (let i = 1; i <= 4; i++) {
      qemuImg(['create', '-q', '-f', 'qcow2', '-b', `c6-${i - 1}.qcow2`, '-F', 'qcow2', path(`c6-${i}.qcow2`)]);
    }
    const deep = await openFile(path('c6-4.qcow2'), { maxBackingDepth: 3 }).catch((e: unknown) => e);
    expect(deep).toMatchObject({ code: 'UNSUPPORTED' });
    expect((deep as Error).message).toMatch(/deeper than maxBackingDepth \(3\)/);
    const ok = await openFile(path('c6-4.qcow2'), { maxBackingDepth: 4 });
    expect(ok.backing?.backing?.backing?.backing?.backingFile).toBeUndefined();
    await ok.close();
  });
});

describe('backing files through a caller resolver', () => {
  /** Normalizes `a/b/../c` to `a/c`. */
  const normalize = (path: string): string => {
    const out: string[] = [];
    for (const part of path.split('/')) {
      if (part === '..') out.pop();
      else if (part !== '.' && part !== '') out.push(part);
    }
    return out.join('/');
  };

  /** A resolver over named in-memory files (relative to `from`'s directory) that records calls and closes. */
  function memoryResolver(files: Record<string, Uint8Array>): {
    resolver: StorageResolver;
    calls: [string, string | undefined][];
    open: Set<Storage>;
  } {
    const calls: [string, string | undefined][] = [];
    const open = new Set<Storage>();
    const resolver: StorageResolver = async (name, from) => {
      calls.push([name, from]);
      const dir = from === undefined ? '' : from.slice(0, from.lastIndexOf('/') + 1);
      const bytes = files[normalize(dir + name)];
      if (bytes === undefined) throw new Qcow2Error('NOT_FOUND', `no file ${name}`);
      const storage = createMemoryStorage({ initial: bytes, readOnly: true });
      open.add(storage);
      const close = storage.close.bind(storage);
      storage.close = async () => {
        open.delete(storage);
        await close();
      };
      return storage;
    };
    return { resolver, calls, open };
  }

  /** A minimal qcow2 image: header cluster, an empty refcount table, an L1 table of one zero entry. */
  function qcow2(backing: string, format: string): Uint8Array {
    const cluster = encodeHeaderCluster({
      header: {
        version: 3,
        backingFileOffset: 0,
        backingFileSize: 0,
        clusterBits: 16,
        size: 65536,
        cryptMethod: 0,
        l1Size: 1,
        l1TableOffset: 3 * 65536,
        refcountTableOffset: 65536,
        refcountTableClusters: 1,
        nbSnapshots: 0,
        snapshotsOffset: 0,
        incompatibleFeatures: 0n,
        compatibleFeatures: 0n,
        autoclearFeatures: 0n,
        refcountOrder: 4,
        headerLength: 112,
        compressionType: 0,
        trailingBytes: new Uint8Array(7),
      },
      extensions: [
        { kind: 'backing-format', name: format },
        { kind: 'feature-names', entries: [...QEMU_FEATURE_NAME_TABLE] },
      ],
      backingFileName: backing,
    });
    const bytes = new Uint8Array(4 * 65536);
    bytes.set(cluster);
    return bytes;
  }

  it('passes each image name as `from`, combines relative names as qemu does, and closes what it opened', async () => {
    const files: Record<string, Uint8Array> = {
      'dir/base.raw': new Uint8Array(4096).fill(0x61),
      'dir/sub/mid.qcow2': qcow2('../base.raw', 'raw'),
    };
    const { resolver, calls, open } = memoryResolver(files);
    const top = createMemoryStorage({ initial: qcow2('sub/mid.qcow2', 'qcow2') });
    const image = await openImage(top, { name: 'dir/top.qcow2', resolver });
    // The resolver sees names as stored, each with the naming image's (combined) name.
    expect(calls).toEqual([
      ['sub/mid.qcow2', 'dir/top.qcow2'],
      ['../base.raw', 'dir/sub/mid.qcow2'],
    ]);
    expect(open.size).toBe(2);
    const bytes = await image.readBytes(0, 65536);
    expect(bytes.subarray(0, 4096).every((b) => b === 0x61)).toBe(true);
    expect(bytes.subarray(4096).every((b) => b === 0)).toBe(true);
    expect(await image.extents(0, 65536)).toEqual([
      { offset: 0, length: 4096, kind: 'data', depth: 2, hostOffset: 0, filename: 'dir/sub/../base.raw' },
      { offset: 4096, length: 61440, kind: 'unallocated', depth: 1, filename: 'dir/sub/mid.qcow2' },
    ]);
    await image.close();
    expect(open.size).toBe(0);
    await image.close(); // twice is a no-op
    // The caller's storage stays the caller's to close.
    await expect(top.read(new Uint8Array(1), 0)).resolves.toBe(1);
    await expect(image.read(new Uint8Array(1), 0)).rejects.toMatchObject({ code: 'CLOSED' });
  });

  it('closes what it opened when a deeper level fails, and names the level', async () => {
    const files: Record<string, Uint8Array> = {
      'mid.qcow2': qcow2('base.qcow2', 'qcow2'),
      'base.qcow2': new Uint8Array(512), // not a qcow2 image
    };
    const { resolver, open } = memoryResolver(files);
    const error = await openImage(createMemoryStorage({ initial: qcow2('mid.qcow2', 'qcow2') }), { name: 'top.qcow2', resolver }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'CORRUPT' });
    expect((error as Error).message).toMatch(/^backing file 'mid.qcow2' of top.qcow2: backing file 'base.qcow2' of mid.qcow2: .*not the qcow2 magic/);
    expect(open.size).toBe(0);
  });
});
