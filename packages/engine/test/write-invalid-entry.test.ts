import { createMemoryStorage, type MemoryStorage } from '@qcow2/storage';
import { describe, expect, it } from 'vitest';
import { openImage } from '../src/index.js';
import { handle, writeFreshImage } from './fresh-image.js';

const CS = 65536;

function u32(bytes: Uint8Array, at: number): number {
  return new DataView(bytes.buffer, bytes.byteOffset).getUint32(at);
}

/** Host offset of the L2 entry of guest cluster `cluster` (L1 entry 0's table). */
function l2EntryAt(bytes: Uint8Array, cluster: number): number {
  const l1 = u32(bytes, 40) * 2 ** 32 + u32(bytes, 44);
  const l2 = (u32(bytes, l1) & 0xff_ffff) * 2 ** 32 + (u32(bytes, l1 + 4) & 0xffff_fe00);
  return l2 + cluster * 16;
}

async function extendedImage(): Promise<MemoryStorage> {
  const storage = createMemoryStorage();
  await writeFreshImage(storage, { size: 8 * CS, extendedL2: true });
  const image = await openImage(handle(storage), { readOnly: false });
  await image.write(new Uint8Array(CS).fill(7), 0);
  await image.write(new Uint8Array(512).fill(8), 3 * CS);
  await image.close();
  return storage;
}

describe('a write over an extended L2 entry whose bitmap contradicts it', () => {
  it('allocated, COPIED, a subcluster both allocated and zero: refused as corrupt', async () => {
    const storage = await extendedImage();
    const at = l2EntryAt(storage.snapshot(), 0);
    await storage.write(new Uint8Array([0, 0, 0, 1]), at + 8); // zero bit of subcluster 0, which is allocated
    const image = await openImage(handle(storage), { readOnly: false });
    await expect(image.write(new Uint8Array(512).fill(9), 100 * 512)).rejects.toThrow(
      /L2 entry for guest offset 0x0: invalid cluster entry \(subcluster bitmap contradicts the entry\)/,
    );
    await image.close().catch(() => undefined);
  });

  it('unallocated (not COPIED) with allocation bits: refused as corrupt', async () => {
    const storage = await extendedImage();
    const at = l2EntryAt(storage.snapshot(), 1);
    expect(u32(storage.snapshot(), at)).toBe(0);
    await storage.write(new Uint8Array([0, 0, 0, 1]), at + 12); // allocation bit without a cluster
    const image = await openImage(handle(storage), { readOnly: false });
    await expect(image.write(new Uint8Array(512).fill(9), CS)).rejects.toThrow(
      /L2 entry for guest offset 0x10000: invalid cluster entry \(subcluster bitmap contradicts the entry\)/,
    );
    await image.close().catch(() => undefined);
  });
});
