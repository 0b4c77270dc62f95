import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { getRefcount, isQcow2Error, refcountBlockEntries, refcountMax } from '@qcow2/format';
import { DiscardQueue, RefcountArray, refcountMetadataSize, resolveDiscardPolicy } from '@qcow2/refcount';
import { describeWithQemu, qemuImg } from '@qcow2/test-utils';

describe('RefcountArray', () => {
  it('matches a Map of refcounts for every width, and its block slices are on-disk blocks', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 6 }),
        fc.integer({ min: 9, max: 12 }),
        fc.array(fc.tuple(fc.nat({ max: 50_000 }), fc.nat()), { maxLength: 200 }),
        (order, clusterBits, sets) => {
          const a = new RefcountArray(clusterBits, order);
          const model = new Map<number, number>();
          const max = refcountMax(order);
          for (const [c, v] of sets) {
            const value = v % (Math.min(max, 1000) + 1);
            a.set(c, value);
            if (value === 0) model.delete(c);
            else model.set(c, value);
          }
          for (const [c, v] of model) expect(a.get(c)).toBe(v);
          const be = refcountBlockEntries(clusterBits, order);
          for (const [c, v] of model) expect(getRefcount(a.blockBytes(Math.floor(c / be)), c % be, order)).toBe(v);
          // nextNonZero finds exactly the non-zero clusters, in order.
          const found: number[] = [];
          for (let c = a.nextNonZero(0, a.clusters); c < a.clusters; c = a.nextNonZero(c + 1, a.clusters)) found.push(c);
          expect(found).toEqual([...model.keys()].sort((x, y) => x - y));
          expect(a.clone().get(found[0] ?? 0)).toBe(a.get(found[0] ?? 0));
        },
      ),
      { numRuns: 60 },
    );
  });

  it('saturates at the maximum, refuses bad input with Qcow2Errors', () => {
    const a = new RefcountArray(9, 1);
    expect([a.increment(5), a.increment(5), a.increment(5), a.increment(5)]).toEqual([true, true, true, false]);
    expect(a.get(5)).toBe(3);
    for (const f of [() => a.set(-1, 1), () => a.set(1, 4), () => a.get(1.5), () => new RefcountArray(8, 4), () => new RefcountArray(9, 7), () => a.resize(2 ** 40)]) {
      let error: unknown;
      try {
        f();
      } catch (e) {
        error = e;
      }
      expect(isQcow2Error(error)).toBe(true);
    }
  });
});

describe('refcountMetadataSize', () => {
  it('is the smallest fixed point: blocks and table cover the clusters and themselves', () => {
    fc.assert(
      fc.property(fc.nat({ max: 2 ** 40 }), fc.integer({ min: 9, max: 21 }), fc.integer({ min: 0, max: 6 }), (clusters, bits, order) => {
        const { blocks, tableClusters, bytes } = refcountMetadataSize(clusters, bits, order);
        const perBlock = refcountBlockEntries(bits, order);
        const perTable = 2 ** bits / 8;
        expect(blocks * perBlock).toBeGreaterThanOrEqual(clusters + blocks + tableClusters);
        expect(tableClusters * perTable).toBeGreaterThanOrEqual(blocks);
        expect(bytes).toBe((blocks + tableClusters) * 2 ** bits);
        if (blocks > 0) {
          // One block fewer cannot cover everything.
          const fewer = blocks - 1;
          expect(fewer * perBlock >= clusters + fewer + Math.ceil(fewer / perTable)).toBe(false);
        }
        const generous = refcountMetadataSize(clusters, bits, order, true);
        expect(generous.blocks).toBeGreaterThanOrEqual(blocks);
      }),
    );
  });
});

describeWithQemu('refcountMetadataSize against qemu-img measure', () => {
  it('gives the refcount part of what qemu-img measure reports for full preallocation', () => {
    for (const [bits, order, size] of [
      [16, 4, 2 ** 34],
      [9, 0, 2 ** 30],
      [12, 6, 2 ** 31],
      [21, 3, 2 ** 40],
    ] as const) {
      const cs = 2 ** bits;
      const out = JSON.parse(
        qemuImg(['measure', '--output=json', '-O', 'qcow2', '-o', `cluster_size=${cs},refcount_bits=${1 << order}`, '--size', String(size)]),
      ) as { 'fully-allocated': number };
      // qemu: header + L1 + L2 tables + data, then refcounts for all of that (qcow2_calc_prealloc_size).
      const l2Entries = cs / 8;
      const dataClusters = size / cs;
      const l2Tables = Math.ceil(dataClusters / l2Entries);
      const l1Clusters = Math.ceil((l2Tables * 8) / cs);
      const meta = cs + l1Clusters * cs + l2Tables * cs;
      const refcount = refcountMetadataSize((meta + size) / cs, bits, order, false).bytes;
      expect(meta + size + refcount).toBe(out['fully-allocated']);
    }
  });
});

describe('DiscardQueue', () => {
  it('keeps exactly the freed clusters, as separate non-touching regions', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.nat({ max: 300 }), { maxLength: 120 }), (clusters) => {
        const q = new DiscardQueue();
        for (const c of clusters) q.add(c * 512, 512);
        const regions = q.regions().sort((a, b) => a.offset - b.offset);
        const covered: number[] = [];
        for (const r of regions) for (let o = r.offset; o < r.offset + r.length; o += 512) covered.push(o / 512);
        expect(covered).toEqual([...clusters].sort((a, b) => a - b));
        for (let i = 1; i < regions.length; i++) expect(regions[i]!.offset).toBeGreaterThan(regions[i - 1]!.offset + regions[i - 1]!.length);
      }),
    );
  });

  it("resolves qemu's pass-discard defaults and refuses non-booleans", () => {
    expect(resolveDiscardPolicy()).toEqual({ never: false, always: true, request: false, snapshot: true, other: false });
    expect(resolveDiscardPolicy({ request: true, snapshot: false, other: true })).toEqual({ never: false, always: true, request: true, snapshot: false, other: true });
    expect(() => resolveDiscardPolicy({ other: 'yes' as never })).toThrow(/other is yes, not a boolean/);
  });
});
