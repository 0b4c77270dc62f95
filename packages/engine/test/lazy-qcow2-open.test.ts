import { createMemoryStorage } from '@qcow2/storage';
import { describe, expect, it, vi } from 'vitest';
import { openImage } from '../src/index.js';
import { writeFreshImage } from './fresh-image.js';

// Counts the loads of the qcow2 open (and with it the cluster map, caches, refcounts, snapshots).
const loads = vi.hoisted(() => ({ count: 0 }));
vi.mock('../src/open-qcow2.js', async (importOriginal) => {
  loads.count++;
  return importOriginal();
});

describe('the qcow2 code is loaded by the first qcow2 open', () => {
  it('not by a raw open; a qcow2 open loads it and reads as before', async () => {
    const raw = await openImage(createMemoryStorage({ initial: new Uint8Array(4096).fill(9) }));
    expect(raw.format).toBe('raw');
    await raw.close();
    expect(loads.count).toBe(0);

    const storage = createMemoryStorage();
    await writeFreshImage(storage, { size: 1 << 20 });
    const image = await openImage(storage, { readOnly: false });
    expect(image.format).toBe('qcow2');
    const data = new Uint8Array(512).fill(5);
    await image.write(data, 4096);
    const back = new Uint8Array(512);
    await image.read(back, 4096);
    expect(back).toEqual(data);
    await image.close();
    expect(loads.count).toBe(1);
  });
});
