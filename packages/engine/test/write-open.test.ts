import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { createMemoryStorage, type MemoryStorage } from '@qcow2/storage';
import { createNodeStorage } from '@qcow2/storage-node';
import { describeWithQemu, makeTempDir, qemuCheck, qemuImg, qemuIo } from '@qcow2/test-utils';
import { describe, expect, it } from 'vitest';
import { checkRefcounts, openImage } from '../src/index.js';
import { writeFreshImage } from './fresh-image.js';

const CS = 65536;

function u32(bytes: Uint8Array, at: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset).getUint32(at);
}

async function fresh(options: Parameters<typeof writeFreshImage>[1]): Promise<MemoryStorage> {
  const storage = createMemoryStorage();
  await writeFreshImage(storage, options);
  return storage;
}

describe('opening for writing', () => {
  it('lazy refcounts: the dirty bit is set (and flushed) before the first change and cleared by close', async () => {
    const storage = await fresh({ size: 4 * CS, lazyRefcounts: true });
    const image = await openImage(storage, { readOnly: false });
    expect(image.readOnly).toBe(false);
    expect(image.dirty).toBe(false);
    expect(u32(storage.snapshot(), 76) & 1).toBe(0);
    await image.write(new Uint8Array(100).fill(1), 0);
    expect(image.dirty).toBe(true);
    expect(u32(storage.snapshot(), 76) & 1).toBe(1);
    await image.flush();
    expect(u32(storage.snapshot(), 76) & 1, 'flush keeps it: refcounts stay lazy').toBe(1);
    await image.close();
    expect(u32(storage.snapshot(), 76) & 1).toBe(0);
    const check = await checkRefcounts(storage);
    expect([check.leaks, check.corruptions, check.copiedFlags]).toEqual([[], [], []]);
  });

  it('lazyRefcounts option: overrides the image bit; refused for version 2', async () => {
    const storage = await fresh({ size: 4 * CS });
    const image = await openImage(storage, { readOnly: false, lazyRefcounts: true });
    await image.write(new Uint8Array(1), 0);
    expect(image.dirty).toBe(true);
    await image.close();
    expect(u32(storage.snapshot(), 76) & 1).toBe(0);
    const v2 = await fresh({ size: 4 * CS, version: 2 });
    await expect(openImage(v2, { readOnly: false, lazyRefcounts: true })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('refuses an image with the corrupt bit for writing (reading is fine)', async () => {
    const storage = await fresh({ size: 4 * CS });
    const bytes = storage.snapshot();
    new DataView(bytes.buffer).setUint32(76, 2);
    const corrupt = createMemoryStorage({ initial: bytes });
    await expect(openImage(corrupt, { readOnly: false })).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringMatching(/corrupt/) });
    const image = await openImage(corrupt);
    await image.close();
  });

  it('clears the autoclear bits it does not maintain on the first change, not on open', async () => {
    const storage = await fresh({ size: 4 * CS });
    const bytes = storage.snapshot();
    const view = new DataView(bytes.buffer);
    view.setUint32(88, 0x8000_0000); // bit 63, unknown
    view.setUint32(92, 0x1); // bit 0: bitmaps, but no bitmaps extension: nothing to keep
    const target = createMemoryStorage({ initial: bytes });
    const opened = await openImage(target, { readOnly: false });
    expect(u32(target.snapshot(), 88)).toBe(0x8000_0000);
    await opened.write(new Uint8Array(10), 0);
    expect([u32(target.snapshot(), 88), u32(target.snapshot(), 92)]).toEqual([0, 0]);
    await opened.close();
  });

  it('refuses writes to read-only images and snapshot views (READ_ONLY), bad ranges (INVALID_ARGUMENT), use after close (CLOSED)', async () => {
    const storage = await fresh({ size: 4 * CS });
    const readOnly = await openImage(storage);
    for (const call of [
      () => readOnly.write(new Uint8Array(1), 0),
      () => readOnly.writeZeroes(0, 1),
      () => readOnly.discard(0, CS),
      () => readOnly.writeCompressed(new Uint8Array(CS), 0),
    ]) {
      await expect(call()).rejects.toMatchObject({ code: 'READ_ONLY' });
    }
    await readOnly.flush();
    await readOnly.close();
    const image = await openImage(storage, { readOnly: false });
    await expect(image.write(new Uint8Array(2), 4 * CS - 1)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(image.write('x' as unknown as Uint8Array, 0)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(image.writeZeroes(-1, 1)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(image.discard(0, 4 * CS + 1)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(image.writeCompressed(new Uint8Array(100), 0)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(image.writeCompressed(new Uint8Array(CS), 512)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await image.close();
    await expect(image.write(new Uint8Array(1), 0)).rejects.toMatchObject({ code: 'CLOSED' });
    await expect(image.flush()).rejects.toMatchObject({ code: 'CLOSED' });
  });

  it('strict mode keeps reading tables and clusters the writes appended past the end of the file at open', async () => {
    const storage = await fresh({ size: 8 * CS, clusterBits: 16 });
    const image = await openImage(storage, { readOnly: false, strict: true, l2CacheSize: 1024, l2CacheEntrySize: 512 });
    for (let i = 0; i < 8; i++) await image.write(new Uint8Array(CS).fill(i + 1), i * CS);
    for (let i = 0; i < 8; i++) expect((await image.readBytes(i * CS, CS)).every((x) => x === i + 1)).toBe(true);
    await image.close();
  });

  it('discard does nothing without discard: unmap (qemu discard=ignore); writeZeroes then keeps clusters allocated', async () => {
    const storage = await fresh({ size: 4 * CS });
    const image = await openImage(storage, { readOnly: false });
    await image.write(new Uint8Array(2 * CS).fill(7), 0);
    await image.discard(0, 2 * CS);
    expect((await image.readBytes(0, 2 * CS)).every((x) => x === 7)).toBe(true);
    await image.writeZeroes(0, CS, { mayUnmap: true });
    const extents = await image.extents(0, 2 * CS);
    expect(extents[0]).toMatchObject({ kind: 'zero', length: CS });
    expect(extents[0]!.hostOffset, 'the zeroed cluster stays allocated').toBeDefined();
    await image.close();
  });

  it('writes raw images (zero writes, discard with unmap, flush); compressed writes are UNSUPPORTED', async () => {
    const storage = createMemoryStorage({ initial: new Uint8Array(3000).fill(9) });
    const image = await openImage(storage, { readOnly: false, format: 'raw', discard: 'unmap' });
    expect(image.virtualSize).toBe(3072);
    await image.write(new Uint8Array(100).fill(1), 3000 - 28);
    expect(await storage.size()).toBe(3072);
    await image.writeZeroes(0, 10);
    await image.discard(10, 10);
    await image.writeZeroes(20, 10, { mayUnmap: true });
    await expect(image.writeCompressed(new Uint8Array(512), 0)).rejects.toMatchObject({ code: 'UNSUPPORTED' });
    await image.flush();
    await image.close();
    const out = storage.snapshot();
    expect(out.subarray(0, 30).every((x) => x === 0)).toBe(true);
    expect(out[30]).toBe(9);
    expect(out.subarray(2972, 3072).every((x) => x === 1)).toBe(true);
  });

  it('keeps snapshot views read-only and their content as it was', async () => {
    const { dir, cleanup } = makeTempDir();
    try {
      const path = join(dir, 's.qcow2');
      spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', path, '1M']);
      spawnSync('qemu-io', ['-c', 'write -P 5 0 256k', path]);
      const made = spawnSync('qemu-img', ['snapshot', '-c', 'snap', path]);
      if (made.status !== 0) return; // no qemu: covered by the qemu tests below
      const storage = createMemoryStorage({ initial: new Uint8Array(readFileSync(path)) });
      const image = await openImage(storage, { readOnly: false });
      await image.write(new Uint8Array(CS).fill(6), 0);
      await image.writeZeroes(CS, CS);
      const view = await image.openSnapshot('snap');
      expect(view.readOnly).toBe(true);
      await expect(view.write(new Uint8Array(1), 0)).rejects.toMatchObject({ code: 'READ_ONLY' });
      expect((await view.readBytes(0, 2 * CS)).every((x) => x === 5)).toBe(true);
      expect((await image.readBytes(0, CS)).every((x) => x === 6)).toBe(true);
      await image.close();
      const check = await checkRefcounts(storage);
      expect([check.leaks, check.corruptions, check.copiedFlags]).toEqual([[], [], []]);
    } finally {
      cleanup();
    }
  });
});

describeWithQemu('dirty images (against qemu)', () => {
  it('repairs an image qemu-io left dirty (lazy refcounts, aborted) before writing; qemu-img check is then clean', async () => {
    const { dir, cleanup } = makeTempDir();
    try {
      const path = join(dir, 'dirty.qcow2');
      qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on,cluster_size=4096', path, '4M']);
      // qemu-io's abort leaves the image as a crash would: dirty, refcounts unwritten.
      spawnSync('qemu-io', ['-c', 'write -P 3 0 1M', '-c', 'write -P 4 2M 100k', '-c', 'flush', '-c', 'abort', path]);
      const before = qemuCheck(path);
      expect(before.exitCode, 'qemu-img check sees the unrepaired refcounts').not.toBe(0);
      const raw = readFileSync(path);
      expect(u32(raw, 76) & 1).toBe(1);
      const storage = await createNodeStorage(path);
      const readOnly = await openImage(storage);
      expect(readOnly.dirty).toBe(true);
      await readOnly.close();
      const image = await openImage(storage, { readOnly: false });
      expect(image.dirty).toBe(false);
      expect(u32(readFileSync(path), 76) & 1, 'repaired, then marked clean').toBe(0);
      await image.write(new Uint8Array(4096).fill(8), 3 * 1024 * 1024);
      await image.close();
      await storage.close();
      const after = qemuCheck(path);
      expect(after.exitCode, JSON.stringify(after.json)).toBe(0);
      qemuIo(['-c', 'read -P 3 0 1M', '-c', 'read -P 4 2M 100k', '-c', 'read -P 8 3M 4k', path]);
    } finally {
      cleanup();
    }
  });

  it('leaves images that qemu-img check finds clean after a lazy-refcount session closed by us', async () => {
    const { dir, cleanup } = makeTempDir();
    try {
      const path = join(dir, 'lazy.qcow2');
      qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', path, '8M']);
      const storage = await createNodeStorage(path);
      const image = await openImage(storage, { readOnly: false });
      await image.write(new Uint8Array(3 * CS).fill(1), 1000);
      await image.writeCompressed(new Uint8Array(CS).fill(2), 5 * CS);
      await image.flush();
      // A copy now is what a crash would leave: dirty, and qemu repairs it.
      writeFileSync(join(dir, 'crash.qcow2'), readFileSync(path));
      await image.close();
      await storage.close();
      expect(qemuCheck(path).exitCode).toBe(0);
      expect(u32(readFileSync(join(dir, 'crash.qcow2')), 76) & 1).toBe(1);
      qemuImg(['check', '-q', '-r', 'all', join(dir, 'crash.qcow2')]);
      qemuIo(['-c', 'read -P 1 1000 196608', '-c', `read -P 2 ${5 * CS} ${CS}`, join(dir, 'crash.qcow2')]);
    } finally {
      cleanup();
    }
  });
});
