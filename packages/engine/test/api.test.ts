import { createMemoryStorage } from '@qcow2/storage';
import { describe, expect, it } from 'vitest';
import { openImage, probeFormat } from '../src/index.js';
import { buildImage } from './synthetic-image.js';

describe('probeFormat', () => {
  it('says qcow2 for the magic, raw for anything else (empty and short files included)', async () => {
    const image = await buildImage({ clusterBits: 9, clusters: [{ kind: 'unallocated' }] });
    expect(await probeFormat(createMemoryStorage({ initial: image.bytes }))).toBe('qcow2');
    expect(await probeFormat(createMemoryStorage({ initial: new Uint8Array([0x51, 0x46, 0x49]) }))).toBe('raw');
    expect(await probeFormat(createMemoryStorage())).toBe('raw');
    expect(await probeFormat(createMemoryStorage({ initial: new Uint8Array(4096).fill(7) }))).toBe('raw');
  });
});

describe('raw images', () => {
  it('have the file size rounded up to 512-byte sectors (as qemu), zeros past the end of the file', async () => {
    const bytes = new Uint8Array(1000).map((_, i) => (i * 7) & 0xff);
    const image = await openImage(createMemoryStorage({ initial: bytes }), { name: 'disk.raw' });
    expect(image.format).toBe('raw');
    expect(image.virtualSize).toBe(1024);
    expect(image.formatSpecific).toBeUndefined();
    expect(image.snapshots).toEqual([]);
    const all = await image.readBytes(0, 1024);
    expect(Buffer.from(all.subarray(0, 1000)).equals(Buffer.from(bytes))).toBe(true);
    expect(all.subarray(1000).every((b) => b === 0)).toBe(true);
    expect(await image.extents(0, 1024)).toEqual([{ offset: 0, length: 1024, kind: 'data', depth: 0, hostOffset: 0, filename: 'disk.raw' }]);
    await expect(image.openSnapshot('1')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await image.close();
    await expect(image.read(new Uint8Array(1), 0)).rejects.toMatchObject({ code: 'CLOSED' });
  });

  it('reads a qcow2 file as raw bytes when the format is forced', async () => {
    const built = await buildImage({ clusterBits: 9, clusters: [{ kind: 'data', seed: 3 }] });
    const image = await openImage(createMemoryStorage({ initial: built.bytes }), { format: 'raw' });
    expect(image.format).toBe('raw');
    expect(Buffer.from(await image.readBytes(0, 4)).toString('latin1')).toBe('QFI\xfb');
  });
});

describe('arguments', () => {
  it('refuses to open read-only storage for writing, and bad options, with Qcow2Errors', async () => {
    const built = await buildImage({ clusterBits: 16, clusters: [{ kind: 'data', seed: 3 }] });
    const storage = createMemoryStorage({ initial: built.bytes });
    const readOnly = createMemoryStorage({ initial: built.bytes, readOnly: true });
    await expect(openImage(readOnly, { readOnly: false })).rejects.toMatchObject({ code: 'READ_ONLY' });
    await expect(openImage(readOnly, { readOnly: false, format: 'raw' })).rejects.toMatchObject({ code: 'READ_ONLY' });
    await expect(openImage(storage, { maxBackingDepth: -1 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(openImage(storage, { l2CacheEntrySize: 3000 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(openImage(storage, { l2CacheEntrySize: 131072 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    const image = await openImage(storage, { l2CacheEntrySize: 512, l2CacheSize: 4096, cacheCleanInterval: 0 });
    expect(image.stats().l2Capacity).toBe(4096);
    await image.close();
  });

  it('rejects (never throws) reads outside the image or into something that is not a Uint8Array', async () => {
    const built = await buildImage({ clusterBits: 12, clusters: [{ kind: 'data', seed: 1 }, { kind: 'zero' }] });
    const image = await openImage(createMemoryStorage({ initial: built.bytes }));
    const bad: [Uint8Array, number][] = [
      [new Uint8Array(1), -1],
      [new Uint8Array(1), 8192],
      [new Uint8Array(2), 8191],
      [new Uint8Array(1), 0.5],
      [new Uint8Array(1), Number.NaN],
      [[1, 2] as unknown as Uint8Array, 0],
      [null as unknown as Uint8Array, 0],
    ];
    for (const [dst, offset] of bad) {
      let promise: Promise<void> | undefined;
      expect(() => {
        promise = image.read(dst, offset);
      }).not.toThrow();
      await expect(promise).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    }
    await expect(image.readBytes(8000, 500)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(image.extents(0, 8193)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect(await image.extents(100, 0)).toEqual([]);
    await expect(image.read(new Uint8Array(0), 8192)).resolves.toBeUndefined();
    await expect(image.read(new Uint8Array(10), 0)).resolves.toBeUndefined();
    await image.close();
  });

  it('reports qemu-img info fields', async () => {
    const built = await buildImage({ clusterBits: 14, extendedL2: true, compressionType: 1, clusters: [{ kind: 'zero' }] });
    const image = await openImage(createMemoryStorage({ initial: built.bytes }));
    expect(image.clusterSize).toBe(16384);
    expect(image.dirty).toBe(false);
    expect(image.formatSpecific).toEqual({
      compat: '1.1',
      'compression-type': 'zstd',
      'lazy-refcounts': false,
      'refcount-bits': 16,
      corrupt: false,
      'extended-l2': true,
    });
    await image.close();
  });
});
