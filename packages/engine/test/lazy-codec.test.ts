import { createMemoryStorage } from '@qcow2/storage';
import { describe, expect, it, vi } from 'vitest';
import { openImage } from '../src/index.js';
import { handle, writeFreshImage } from './fresh-image.js';

// Counts the loads of @qcow2/compress: the engine imports it only for compressed clusters.
const loads = vi.hoisted(() => ({ count: 0 }));
vi.mock('@qcow2/compress', async (importOriginal) => {
  loads.count++;
  return importOriginal();
});

describe('compression codecs are loaded on first use', () => {
  it('not by open, plain writes and reads; then once, by a compressed write, for both its paths', async () => {
    const inner = createMemoryStorage();
    await writeFreshImage(inner, { size: 1 << 20, compressionType: 1 });
    const image = await openImage(handle(inner), { readOnly: false });
    const plain = new Uint8Array(65536).fill(3);
    await image.write(plain, 0);
    const back = new Uint8Array(65536);
    await image.read(back, 0);
    expect(back).toEqual(plain);
    expect(loads.count).toBe(0);

    const packed = new Uint8Array(65536).map((_, i) => i % 7);
    await image.writeCompressed(packed, 65536);
    await image.close();
    expect(loads.count).toBe(1);

    const again = await openImage(handle(inner));
    await again.read(back, 65536);
    expect(back).toEqual(packed);
    expect(again.stats().decompressions).toBe(1);
    const map = await again.extents(65536, 65536);
    expect(map[0]).toMatchObject({ compressed: true });
    await again.close();
    expect(loads.count).toBe(1);
  });
});
