import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createMemoryStorage } from '@qcow2/storage';
import { compareRefcounts, computeExpectedRefcounts, RefcountArray, Refcounts, writeInitialRefcountStructure } from '@qcow2/refcount';
import { isQcow2ErrorLike, mutatedBytes } from '@qcow2/test-utils';

/**
 * Damaged refcount structures (random byte changes in a valid table and blocks, random header
 * fields): opening and every operation either work or reject with a Qcow2Error.
 */

async function validImage(order: number): Promise<Uint8Array> {
  const storage = createMemoryStorage();
  const s = await writeInitialRefcountStructure(storage, { clusterBits: 9, refcountOrder: order });
  const rc = await Refcounts.open({ storage, clusterBits: 9, refcountOrder: order, ...s });
  for (let i = 0; i < 20; i++) await rc.allocClusters(1 + ((i * 37) % 90));
  await rc.allocBytes(300);
  await rc.close();
  return storage.snapshot();
}

describe('damaged refcount structures', () => {
  for (const order of [0, 4, 6]) {
    it(`${1 << order}-bit: only Qcow2Errors`, async () => {
      const valid = await validImage(order);
      await fc.assert(
        fc.asyncProperty(
          mutatedBytes(fc.constant(valid)),
          fc.integer({ min: 0, max: 40 }),
          fc.integer({ min: 0, max: 3 }),
          fc.array(fc.tuple(fc.constantFrom('get', 'alloc', 'at', 'bytes', 'free', 'inc', 'scan', 'check', 'rebuild'), fc.nat({ max: 5000 })), { maxLength: 12 }),
          async (bytes, tableCluster, tableClusters, ops) => {
            const storage = createMemoryStorage({ initial: bytes });
            const guard = async (p: () => Promise<unknown>): Promise<void> => {
              try {
                await p();
              } catch (e) {
                if (!isQcow2ErrorLike(e)) throw new Error(`not a Qcow2Error: ${String(e)}`, { cause: e });
              }
            };
            let rc: Refcounts | undefined;
            await guard(async () => {
              rc = await Refcounts.open({ storage, clusterBits: 9, refcountOrder: order, tableOffset: tableCluster * 512, tableClusters });
            });
            if (rc === undefined) return;
            const r = rc;
            for (const [op, n] of ops) {
              await guard(async () => {
                switch (op) {
                  case 'get':
                    return r.get(n);
                  case 'alloc':
                    return r.allocClusters(1 + (n % 50));
                  case 'at':
                    return r.allocAt(n * 512, 1 + (n % 7));
                  case 'bytes':
                    return r.allocBytes(1 + (n % 512));
                  case 'free':
                    return r.free(n * 512, 512, 'always');
                  case 'inc':
                    return r.update(n * 512, 1024, 1 + (n % 3));
                  case 'scan':
                    return r.scan(0, n, () => undefined);
                  case 'check': {
                    const e = await computeExpectedRefcounts({ clusterBits: 9, refcountOrder: order, fileSize: await storage.size(), refcounts: r }, (add) => add(0, 512));
                    return compareRefcounts(r, e.counts);
                  }
                  case 'rebuild': {
                    const counts = new RefcountArray(9, order, 8);
                    counts.set(0, 1);
                    return r.rebuild(counts);
                  }
                }
              });
            }
            await guard(() => r.close());
          },
        ),
        { numRuns: 150 },
      );
      expect(valid.length).toBeGreaterThan(0);
    });
  }
});
