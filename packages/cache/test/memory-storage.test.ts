import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isQcow2Error } from '@qcow2/format';
import { createMemoryStorage } from '@qcow2/storage';
import { createTableCache } from '@qcow2/cache';

/** The cache over @qcow2/storage's memory storage: the Storage the engine's tests will use. */

const CLUSTER = 65536;
const SLICE = 4096;

describe('TableCache over createMemoryStorage', () => {
  it('L2 tables cached in 4 KiB slices: random 8-byte entry updates survive eviction, flush and a fresh cache', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.nat({ max: 3 }), fc.nat({ max: CLUSTER / 8 - 1 }), fc.nat()), { minLength: 1, maxLength: 200 }),
        fc.integer({ min: 1, max: 6 }),
        async (updates, entries) => {
          const tables = [1, 2, 5, 9].map((c) => c * CLUSTER);
          const storage = createMemoryStorage({ initial: new Uint8Array(10 * CLUSTER) });
          const reference = new Uint8Array(10 * CLUSTER);
          const cache = createTableCache({ storage, capacity: entries * SLICE, entrySize: SLICE, name: 'L2 table' });
          for (const [t, index, value] of updates) {
            const at = tables[t]! + index * 8;
            const slice = at - (at % SLICE);
            const entry = cache.tryAcquire(slice) ?? (await cache.acquire(slice));
            new DataView(entry.bytes.buffer, entry.bytes.byteOffset).setUint32((at % SLICE) + 4, value);
            cache.markDirty(entry);
            cache.release(entry);
            new DataView(reference.buffer).setUint32(at + 4, value);
            expect(cache.stats().bytesInUse).toBeLessThanOrEqual(entries * SLICE);
          }
          await cache.flush();
          const snap = storage.snapshot();
          const firstDiff = snap.findIndex((b, i) => b !== reference[i]);
          expect(firstDiff).toBe(-1);
          const fresh = createTableCache({ storage, capacity: entries * SLICE, entrySize: SLICE });
          for (const [t, index] of updates) {
            const at = tables[t]! + index * 8;
            const got = await fresh.use(at - (at % SLICE), (e) => e.bytes.slice(at % SLICE, (at % SLICE) + 8));
            expect(Array.from(got)).toEqual(Array.from(reference.slice(at, at + 8)));
          }
        },
      ),
      { numRuns: 50 },
    );
  });

  it("passes the storage's own Qcow2Errors through: full disk (IO), closed (CLOSED), read-only (READ_ONLY)", async () => {
    const full = createMemoryStorage({ maxSize: CLUSTER });
    const cache = createTableCache({ storage: full, capacity: 2 * CLUSTER, entrySize: CLUSTER });
    const e = await cache.acquireEmpty(4 * CLUSTER);
    cache.markDirty(e);
    cache.release(e);
    const err = await cache.flush().catch((x: unknown) => x);
    expect(isQcow2Error(err) && err.code).toBe('IO');
    expect((err as Error).message).toMatch(/memory storage/);
    expect(e.dirty).toBe(true);

    const closed = createMemoryStorage({ initial: new Uint8Array(CLUSTER) });
    await closed.close();
    const c2 = createTableCache({ storage: closed, capacity: CLUSTER, entrySize: CLUSTER });
    const err2 = await c2.acquire(0).catch((x: unknown) => x);
    expect(isQcow2Error(err2) && err2.code).toBe('CLOSED');

    const ro = createMemoryStorage({ initial: new Uint8Array(CLUSTER), readOnly: true });
    const c3 = createTableCache({ storage: ro, capacity: CLUSTER, entrySize: CLUSTER });
    const entry = await c3.acquire(0);
    expect(() => c3.markDirty(entry)).toThrow(expect.objectContaining({ code: 'READ_ONLY' }));
  });
});
