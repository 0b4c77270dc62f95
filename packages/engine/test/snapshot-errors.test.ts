import fc from 'fast-check';
import { isQcow2Error } from '@qcow2/format';
import { createMemoryStorage } from '@qcow2/storage';
import { describe, expect, it } from 'vitest';
import { openImage, type Image } from '../src/index.js';
import { handle, writeFreshImage } from './fresh-image.js';

const MiB = 1024 * 1024;

async function rejection(promise: Promise<unknown>): Promise<{ name: string; code: string; message: string }> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isQcow2Error(error), String(error)).toBe(true);
  return error as { name: string; code: string; message: string };
}

async function freshImage(options: { version?: 2 | 3 } = {}): Promise<{ storage: ReturnType<typeof createMemoryStorage>; image: Image }> {
  const storage = createMemoryStorage();
  await writeFreshImage(storage, { size: MiB, clusterBits: 12, ...options });
  const image = await openImage(handle(storage), { readOnly: false });
  return { storage, image };
}

describe('snapshot operations refused with a Qcow2Error', () => {
  it('read-only images: READ_ONLY; closed images: CLOSED', async () => {
    const { storage, image } = await freshImage();
    await image.createSnapshot('s');
    await image.close();
    const ro = await openImage(handle(storage));
    expect(ro.snapshots.map((s) => s.name)).toEqual(['s']);
    expect((await rejection(ro.createSnapshot('t'))).code).toBe('READ_ONLY');
    expect((await rejection(ro.applySnapshot('s'))).code).toBe('READ_ONLY');
    expect((await rejection(ro.deleteSnapshot('s'))).code).toBe('READ_ONLY');
    const view = await ro.openSnapshot('s');
    expect((await rejection(view.createSnapshot('t'))).code).toBe('READ_ONLY');
    await ro.close();
    expect((await rejection(ro.createSnapshot('t'))).code).toBe('CLOSED');
    expect((await rejection(image.applySnapshot('s'))).code).toBe('CLOSED');
  });

  it('names in use, bad names and options: INVALID_ARGUMENT; absent snapshots: NOT_FOUND (delete by name only, as qemu-img -d)', async () => {
    const { image } = await freshImage();
    await image.write(new Uint8Array(4096).fill(1), 0);
    expect(await image.createSnapshot('one')).toMatchObject({ id: '1', name: 'one' });
    expect(await image.createSnapshot('2')).toMatchObject({ id: '2', name: '2' });
    const dup = await rejection(image.createSnapshot('one'));
    expect(dup.code).toBe('INVALID_ARGUMENT');
    expect(dup.message).toMatch(/already exists \(id 1\)/);
    expect((await rejection(image.createSnapshot('x'.repeat(256)))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(image.createSnapshot('ok', { dateSec: -1 }))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(image.createSnapshot('ok', { dateNsec: 2 ** 32 }))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(image.createSnapshot('ok', { vmClockNsec: 0.5 }))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(image.createSnapshot(42 as unknown as string))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(image.applySnapshot('three'))).code).toBe('NOT_FOUND');
    expect((await rejection(image.deleteSnapshot('three'))).code).toBe('NOT_FOUND');
    // qemu-img snapshot -d 1 looks for the name "1" only; -a 1 takes id 1 first.
    expect((await rejection(image.deleteSnapshot('1'))).message).toMatch(/snapshot not found/);
    await image.applySnapshot('2'); // the id 2, whose name is also "2"
    await image.applySnapshot('1');
    expect(image.snapshots.map((s) => s.id)).toEqual(['1', '2']);
    await image.deleteSnapshot('2');
    expect(image.snapshots.map((s) => s.id)).toEqual(['1']);
    // Highest id + 1: the deleted id 2 is given again.
    expect((await image.createSnapshot('again')).id).toBe('2');
    await image.close();
  });

  it('images with an external data file and raw images: UNSUPPORTED', async () => {
    const storage = createMemoryStorage();
    const dataStorage = createMemoryStorage();
    await writeFreshImage(storage, { size: MiB, clusterBits: 12, dataFile: 'plain', dataStorage });
    const image = await openImage(handle(storage), { readOnly: false, resolver: async () => handle(dataStorage) });
    await image.write(new Uint8Array(512).fill(1), 0);
    for (const op of [image.createSnapshot('s'), image.applySnapshot('s'), image.deleteSnapshot('s')]) {
      const e = await rejection(op);
      expect([e.code, e.message]).toEqual(['UNSUPPORTED', expect.stringMatching(/Operation not supported/)]);
    }
    expect(image.snapshots).toEqual([]);
    await image.close();
    const raw = await openImage(createMemoryStorage({ initial: new Uint8Array(MiB) }), { readOnly: false });
    expect(raw.format).toBe('raw');
    for (const op of [raw.createSnapshot('s'), raw.applySnapshot('s'), raw.deleteSnapshot('s')]) {
      expect((await rejection(op)).code).toBe('UNSUPPORTED');
    }
    await raw.close();
  });

  it('a version 2 image is not resized to apply a snapshot of another disk size (qemu refuses it)', async () => {
    const { storage, image } = await freshImage({ version: 2 });
    await image.write(new Uint8Array(4096).fill(7), 0);
    await image.createSnapshot('s');
    await image.close();
    // The header says 512 KiB now (its L1 table still covers 1 MiB).
    const bytes = storage.snapshot();
    new DataView(bytes.buffer).setUint32(28, MiB / 2);
    const patched = createMemoryStorage({ initial: bytes });
    const again = await openImage(patched, { readOnly: false });
    expect(again.virtualSize).toBe(MiB / 2);
    const e = await rejection(again.applySnapshot('s'));
    expect([e.code, e.message]).toEqual(['UNSUPPORTED', expect.stringMatching(/Can't resize a v2 image which has snapshots/)]);
    await again.close();
  });

  it('writes issued while a snapshot is taken wait for it; the snapshot does not see them', async () => {
    const { image } = await freshImage();
    await image.write(new Uint8Array(8192).fill(1), 0);
    const created = image.createSnapshot('s');
    const written = image.write(new Uint8Array(4096).fill(2), 0);
    const zeroed = image.writeZeroes(4096, 4096);
    await Promise.all([created, written, zeroed]);
    const view = await image.openSnapshot('s');
    expect([...(await view.readBytes(0, 8192)).subarray(4090, 4100)]).toEqual(new Array(10).fill(1));
    expect([...(await image.readBytes(4090, 10))]).toEqual([2, 2, 2, 2, 2, 2, 0, 0, 0, 0]);
    await image.close();
  });

  it('arbitrary names and ids: only Qcow2Error, and the image stays usable', async () => {
    const { image } = await freshImage();
    await image.write(new Uint8Array(4096).fill(3), 8192);
    await fc.assert(
      fc.asyncProperty(fc.constantFrom<'create' | 'apply' | 'delete'>('create', 'apply', 'delete'), fc.string({ maxLength: 300 }), async (kind, name) => {
        try {
          if (kind === 'create') await image.createSnapshot(name);
          else if (kind === 'apply') await image.applySnapshot(name);
          else await image.deleteSnapshot(name);
        } catch (error) {
          expect(isQcow2Error(error), String(error)).toBe(true);
        }
      }),
      { numRuns: 60 },
    );
    expect(new Set(image.snapshots.map((s) => s.name)).size).toBe(image.snapshots.length);
    expect(new Set(image.snapshots.map((s) => s.id)).size).toBe(image.snapshots.length);
    await image.close();
  });
});
