import { createMemoryStorage, type Storage } from '@qcow2/storage';
import { describe, expect, it } from 'vitest';
import { openImage } from '../src/index.js';
import { writeFreshImage } from './fresh-image.js';
import { buildImage } from './synthetic-image.js';

// Qcow2Image.read serves the common request (its L2 slice cached, one data run) inline with its
// own checks; these tests make sure the inline path refuses and waits exactly as the full one.

async function warmImage(): Promise<Awaited<ReturnType<typeof openImage>>> {
  const built = await buildImage({ clusterBits: 9, clusters: [{ kind: 'data', seed: 1 }, { kind: 'data', seed: 2 }] });
  const image = await openImage(createMemoryStorage({ initial: built.bytes, readOnly: true }), { name: 'warm.qcow2' });
  await image.read(new Uint8Array(512), 0); // the L2 slice is cached from here on
  return image;
}

describe('the read fast path', () => {
  it('refuses bad offsets of a warmed image as the checked path does', async () => {
    const image = await warmImage();
    for (const offset of [1.5, -512, Number.NaN, 2 ** 53, 1024]) {
      await expect(image.read(new Uint8Array(512), offset)).rejects.toMatchObject({
        code: 'INVALID_ARGUMENT',
        message: expect.stringContaining('qcow2 image warm.qcow2: read'),
      });
    }
    await expect(image.read(new Uint16Array(256) as unknown as Uint8Array, 0)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    // Still served: the data of the second cluster.
    const out = new Uint8Array(512);
    await expect(image.read(out, 512)).resolves.toBeUndefined();
    expect(out.some((b) => b !== 0)).toBe(true);
    await image.close();
  });

  it('refuses reads after close, of the image and of a closed snapshot view, naming the image', async () => {
    const image = await warmImage();
    await image.close();
    await expect(image.read(new Uint8Array(512), 0)).rejects.toMatchObject({ code: 'CLOSED', message: 'qcow2 image warm.qcow2: read after close' });

    const storage = createMemoryStorage();
    await writeFreshImage(storage, { size: 4 * 65536 });
    const writable = await openImage(storage, { readOnly: false, name: 'w.qcow2' });
    await writable.write(new Uint8Array(65536).fill(5), 0);
    await writable.createSnapshot('s');
    const view = await writable.openSnapshot('s');
    const out = new Uint8Array(65536);
    await view.read(out, 0);
    expect(out[0]).toBe(5);
    await view.close();
    await expect(view.read(out, 0)).rejects.toMatchObject({ code: 'CLOSED' });
    await writable.close();
  });

  it('keeps a read of a writable image in its epoch until its I/O is done', async () => {
    const inner = createMemoryStorage();
    await writeFreshImage(inner, { size: 4 * 65536 });
    let hold: (() => void) | undefined;
    let holding = false;
    // A storage whose reads wait for the test while `holding` is set.
    const gatedRead = async (dst: Uint8Array, offset: number): Promise<number> => {
      if (holding) await new Promise<void>((resolve) => (hold = resolve));
      return inner.read(dst, offset);
    };
    const gated = new Proxy(inner, {
      get(target, key) {
        if (key === 'read') return gatedRead;
        const value: unknown = Reflect.get(target, key, target);
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    }) as Storage;
    const image = await openImage(gated, { readOnly: false });
    await image.write(new Uint8Array(65536).fill(9), 65536);
    await image.read(new Uint8Array(65536), 65536); // L2 slice cached: the next read takes the fast path
    holding = true;
    const out = new Uint8Array(65536);
    const read = image.read(out, 65536);
    let quiesced = false;
    const quiesce = (image as unknown as { quiesceReads(): Promise<void> }).quiesceReads().then(() => (quiesced = true));
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(hold).toBeDefined();
    expect(quiesced).toBe(false);
    holding = false;
    hold!();
    await read;
    await quiesce;
    expect(quiesced).toBe(true);
    expect(out[0]).toBe(9);
    await image.close();
  });
});
