import fc from 'fast-check';
import { isQcow2Error } from '@qcow2/format';
import { createMemoryStorage } from '@qcow2/storage';
import { describe, expect, it } from 'vitest';
import { openImage, type Extent } from '../src/index.js';
import { buildImage, type ClusterSpec } from './synthetic-image.js';

const specArb = (extended: boolean): fc.Arbitrary<ClusterSpec> =>
  fc.oneof(
    fc.constant<ClusterSpec>({ kind: 'unallocated' }),
    fc.constant<ClusterSpec>({ kind: 'zero' }),
    fc.constant<ClusterSpec>({ kind: 'zero-alloc' }),
    fc.nat().map<ClusterSpec>((seed) => ({ kind: 'data', seed })),
    fc.nat().map<ClusterSpec>((seed) => ({ kind: 'data', seed })),
    fc.nat().map<ClusterSpec>((seed) => ({ kind: 'compressed', seed })),
    ...(extended
      ? [
          fc
            .tuple(fc.nat(), fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 32, maxLength: 32 }))
            .map<ClusterSpec>(([seed, states]) => ({ kind: 'subclusters', seed, states })),
        ]
      : []),
  );

const imageArb = fc
  .oneof(
    fc.record({ clusterBits: fc.constantFrom(9, 10, 12), extended: fc.constant(false) }),
    fc.record({ clusterBits: fc.constantFrom(14, 15), extended: fc.constant(true) }),
  )
  .chain(({ clusterBits, extended }) =>
    fc.record({
      clusterBits: fc.constant(clusterBits),
      extended: fc.constant(extended),
      compressionType: fc.constantFrom<0 | 1>(0, 1),
      clusters: fc.array(specArb(extended), { minLength: 1, maxLength: clusterBits >= 14 ? 24 : 200 }),
      cut: fc.nat({ max: 2 ** (clusterBits - 9) - 1 }),
      shuffle: fc.nat(),
    }),
  );

/** Reads the image in random requests (some concurrent) and compares with the model. */
describe('the engine against a flat model of synthetic images (no qemu)', () => {
  it('reads, concurrently or not, through any cache size, exactly the modelled bytes', async () => {
    await fc.assert(
      fc.asyncProperty(imageArb, fc.array(fc.tuple(fc.nat(), fc.nat()), { minLength: 1, maxLength: 40 }), async (spec, requests) => {
        const cs = 2 ** spec.clusterBits;
        const image = await buildImage({
          clusterBits: spec.clusterBits,
          extendedL2: spec.extended,
          compressionType: spec.compressionType,
          clusters: spec.clusters,
          virtualSize: spec.clusters.length * cs - spec.cut * 512,
          shuffle: spec.shuffle,
        });
        for (const cache of [{}, { l2CacheSize: 1024, l2CacheEntrySize: 512 }]) {
          const opened = await openImage(createMemoryStorage({ initial: image.bytes, readOnly: true }), cache);
          expect(opened.virtualSize).toBe(image.virtualSize);
          const ranges = requests.map(([a, b]): [number, number] => {
            const offset = a % image.virtualSize;
            return [offset, b % Math.min(image.virtualSize - offset + 1, 4 * cs)];
          });
          // One after the other…
          for (const [offset, length] of ranges) {
            const dst = new Uint8Array(length).fill(0xa5);
            await opened.read(dst, offset);
            expect(Buffer.from(dst).equals(Buffer.from(image.model.subarray(offset, offset + length))), `read ${length} at ${offset}`).toBe(true);
          }
          // …and all at once, sharing the cache, the compressed-cluster buffers and the run state.
          const all = ranges.map(([offset, length]) => ({ offset, dst: new Uint8Array(length).fill(0x5a) }));
          await Promise.all(all.map(({ offset, dst }) => opened.read(dst, offset)));
          for (const { offset, dst } of all) {
            expect(Buffer.from(dst).equals(Buffer.from(image.model.subarray(offset, offset + dst.length)))).toBe(true);
          }
          checkExtents(await opened.extents(0, image.virtualSize), spec.clusters, cs, image.virtualSize);
          await opened.close();
        }
      }),
      { numRuns: 60 },
    );
  });

  it('never throws, only rejects with Qcow2Error, for any damage to a synthetic image', async () => {
    const base = await buildImage({
      clusterBits: 12,
      clusters: [{ kind: 'data', seed: 1 }, { kind: 'compressed', seed: 2 }, { kind: 'zero' }, { kind: 'zero-alloc' }, { kind: 'unallocated' }],
    });
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.nat({ max: base.bytes.length - 1 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 12 }),
        fc.boolean(),
        async (edits, strict) => {
          const bytes = base.bytes.slice();
          for (const [at, value] of edits) bytes[at] = value;
          try {
            const image = await openImage(createMemoryStorage({ initial: bytes }), { strict });
            const dst = new Uint8Array(Math.min(image.virtualSize, 1 << 20));
            const reading = image.read(dst, 0);
            expect(reading).toBeInstanceOf(Promise);
            await reading.catch((e: unknown) => {
              if (!isQcow2Error(e)) throw e;
            });
            await image.extents(0, Math.min(image.virtualSize, 1 << 24)).catch((e: unknown) => {
              if (!isQcow2Error(e)) throw e;
            });
            await image.close();
          } catch (error) {
            if (!isQcow2Error(error)) throw error;
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});

/** Each extent agrees with the specs of the clusters it covers. */
function checkExtents(extents: readonly Extent[], clusters: readonly ClusterSpec[], cs: number, virtualSize: number): void {
  let at = 0;
  for (const e of extents) {
    expect(e.offset).toBe(at);
    expect(e.depth).toBe(0);
    for (let sub = e.offset; sub < e.offset + e.length; sub += 512) {
      const c = clusters[Math.floor(sub / cs)]!;
      let expected: Extent['kind'];
      if (c.kind === 'subclusters') {
        const state = c.states[Math.floor((sub % cs) / (cs / 32))] ?? 0;
        expected = state === 2 ? 'data' : state === 1 ? 'zero' : 'unallocated';
      } else {
        expected = c.kind === 'data' || c.kind === 'compressed' ? 'data' : c.kind === 'unallocated' ? 'unallocated' : 'zero';
      }
      if (e.kind !== expected) throw new Error(`extent ${JSON.stringify(e)} at ${sub}: expected ${expected} (${c.kind})`);
    }
    at += e.length;
  }
  expect(at).toBe(virtualSize);
}
