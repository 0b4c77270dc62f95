import { createMemoryStorage, type Storage } from '@qcow2/storage';
import { describe, expect, it } from 'vitest';
import { checkRefcounts, openImage } from '../src/index.js';
import { writeFreshImage } from './fresh-image.js';

/** `inner` with its discards recorded (and passed on). */
function discardSpy(inner: ReturnType<typeof createMemoryStorage>): { storage: Storage; discards: [number, number][] } {
  const discards: [number, number][] = [];
  const storage: Storage = {
    get readOnly() {
      return inner.readOnly;
    },
    canDiscard: true,
    read: (dst, offset) => inner.read(dst, offset),
    write: (src, offset) => inner.write(src, offset),
    size: () => inner.size(),
    truncate: (n) => inner.truncate(n),
    flush: () => inner.flush(),
    close: async () => undefined,
    discard: (offset, length) => {
      discards.push([offset, length]);
      return inner.discard(offset, length);
    },
  };
  return { storage, discards };
}

describe('pass-discard-snapshot', () => {
  for (const pass of [true, false]) {
    it(`deleting a snapshot ${pass ? 'discards' : 'does not discard'} the clusters only it held (passDiscardSnapshot ${pass})`, async () => {
      const inner = createMemoryStorage();
      await writeFreshImage(inner, { size: 1 << 20, clusterBits: 12 });
      const { storage, discards } = discardSpy(inner);
      const image = await openImage(storage, { readOnly: false, passDiscardSnapshot: pass });
      await image.write(new Uint8Array(4 * 4096).fill(1), 0);
      await image.createSnapshot('s');
      await image.write(new Uint8Array(4 * 4096).fill(2), 0);
      const view = await image.openSnapshot('s');
      const held = (await view.extents(0, 4 * 4096)).filter((e) => e.kind === 'data').map((e) => [e.hostOffset!, e.length] as const);
      await view.close();
      expect(held.reduce((n, [, l]) => n + l, 0)).toBe(4 * 4096);
      discards.length = 0;
      await image.deleteSnapshot('s');
      if (!pass) {
        expect(discards).toEqual([]);
      } else {
        for (const [offset, length] of held) {
          expect(discards.some(([o, l]) => o <= offset && offset + length <= o + l), `host ${offset} discarded`).toBe(true);
        }
      }
      expect(await image.readBytes(0, 4)).toEqual(new Uint8Array(4).fill(2));
      await image.close();
      const check = await checkRefcounts(createMemoryStorage({ initial: inner.snapshot(), readOnly: true }));
      expect([check.leaks, check.corruptions, check.copiedFlags]).toEqual([[], [], []]);
    });
  }
});
