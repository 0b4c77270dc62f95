import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { viewOf } from '@qcow2/format';
import {
  compareRefcounts,
  computeExpectedRefcounts,
  fixRefcounts,
  RefcountArray,
  rebuildRefcountStructure,
  type Refcounts,
} from '@qcow2/refcount';
import { headerFields, makeImage, openImage, structureClusters, type TestImage } from './helpers.js';
import { SparseStorage } from './sparse-storage.js';

/** An image with random allocations; returns the model of what is in use (cluster 0 = header). */
async function populated(clusterBits: number, order: number, sizes: number[], frees: number[]): Promise<{ image: TestImage; rc: Refcounts; used: Map<number, number> }> {
  const image = await makeImage(clusterBits, order);
  const rc = await openImage(image, { cacheEntries: 2 });
  const cs = 2 ** clusterBits;
  const used = new Map<number, number>([[0, 1]]);
  for (const n of sizes) {
    const at = (await rc.allocClusters(n)) / cs;
    for (let c = at; c < at + n; c++) used.set(c, 1);
  }
  const list = [...used.keys()].filter((c) => c !== 0);
  for (const k of frees) {
    if (list.length === 0) break;
    const c = list.splice(k % list.length, 1)[0]!;
    await rc.free(c * cs, cs, 'never');
    used.delete(c);
  }
  await rc.flush();
  // The data clusters are not written: make the file reach the last one, as a real image does.
  let end = 0;
  for (const c of used.keys()) end = Math.max(end, (c + 1) * cs);
  if ((await image.storage.size()) < end) await image.storage.truncate(end);
  return { image, rc, used };
}

async function expectedFor(rc: Refcounts, image: TestImage, used: Map<number, number>, withStructure: boolean) {
  const cs = rc.clusterSize;
  return computeExpectedRefcounts(
    { clusterBits: rc.clusterBits, refcountOrder: rc.refcountOrder, fileSize: await image.storage.size(), ...(withStructure ? { refcounts: rc } : {}) },
    (add) => {
      for (const [c, n] of used) for (let i = 0; i < n; i++) add(c * cs, cs, `cluster ${c}`);
    },
  );
}

describe('rebuild', () => {
  for (const order of [0, 3, 4, 6]) {
    it(`${1 << order}-bit, 512-byte clusters: a rebuilt structure counts exactly what is in use and nothing of the old one`, async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.integer({ min: 1, max: 900 }), { minLength: 1, maxLength: 12 }),
          fc.array(fc.nat(), { maxLength: 200 }),
          fc.boolean(),
          async (sizes, frees, zeroTable) => {
            const { image, rc, used } = await populated(9, order, sizes, frees);
            const old = structureClusters(rc);
            if (zeroTable) {
              // A wrecked refcount table: the rebuild must not need it.
              await image.storage.write(new Uint8Array(rc.tableClusters * 512), rc.tableOffset);
            }
            const { counts } = await expectedFor(rc, image, used, false);
            const before = counts.clone();
            const result = await rc.rebuild(counts);
            expect(await headerFields(image.storage)).toEqual({ tableOffset: result.tableOffset, tableClusters: result.tableClusters });
            await rc.close();
            const again = await openImage(image, { cacheEntries: 1 });
            const meta = structureClusters(again);
            for (const [c, n] of meta) {
              expect(n).toBe(1);
              expect(used.has(c), `new structure over cluster ${c} in use`).toBe(false);
              expect(old.has(c), `new structure over old structure cluster ${c}`).toBe(false);
            }
            // counts now equals what is on disk: the references plus the new structure.
            for (let c = 0; c < Math.max(counts.clusters, before.clusters); c++) {
              if (counts.get(c) !== before.get(c) + (meta.get(c) ?? 0)) expect(`cluster ${c}: ${counts.get(c)}`).toBe(`cluster ${c}: ${before.get(c) + (meta.get(c) ?? 0)}`);
            }
            const check = await expectedFor(again, image, used, true);
            expect(check.problems).toEqual([]);
            const cmp = await compareRefcounts(again, check.counts, { clusters: Math.ceil((await image.storage.size()) / 512) + 64 });
            expect(cmp.leaks).toEqual([]);
            expect(cmp.corruptions).toEqual([]);
            expect(cmp.unreadable).toEqual([]);
            // Allocation goes on normally afterwards.
            const at = await again.allocClusters(3);
            for (let c = at / 512; c < at / 512 + 3; c++) expect(used.has(c) || meta.has(c)).toBe(false);
          },
        ),
        { numRuns: order === 0 ? 6 : 15 },
      );
    });
  }

  it('places the table again when placing it made it grow, leaving no leak', async () => {
    // 64-bit refcounts, 512-byte clusters: 64 clusters per block, 64 table entries per cluster,
    // so one table cluster covers 4096 clusters. With clusters 0..4094 in use, the blocks fill
    // the first coverage up; the table itself then needs a block past it, which needs a second
    // table cluster.
    let placements = 0;
    for (const used of [4030, 4031, 4032, 4033, 4034, 4035, 4036, 4037, 4090, 4095]) {
      const storage = new SparseStorage();
      const counts = new RefcountArray(9, 6, used);
      for (let c = 0; c < used; c++) counts.set(c, 1);
      const before = counts.clone();
      const result = await rebuildRefcountStructure({ storage, counts });
      placements = Math.max(placements, result.tablePlacements);
      const table = viewOf(result.table);
      // Every block holds exactly the counts; nothing beyond what counts says is used.
      const blocks = new Set<number>();
      for (let i = 0; i < result.table.length / 8; i++) {
        const off = table.getUint32(i * 8) * 2 ** 32 + table.getUint32(i * 8 + 4);
        if (off === 0) continue;
        blocks.add(off / 512);
        const bytes = new Uint8Array(512);
        await storage.read(bytes, off);
        expect(bytes).toEqual(counts.blockBytes(i));
      }
      const wrong: number[] = [];
      for (let c = 0; c < counts.clusters; c++) {
        const isTable = c >= result.tableOffset / 512 && c < result.tableOffset / 512 + result.tableClusters;
        if (counts.get(c) !== before.get(c) + (blocks.has(c) ? 1 : 0) + (isTable ? 1 : 0)) wrong.push(c);
      }
      expect(wrong).toEqual([]);
    }
    expect(placements).toBeGreaterThan(1);
  });

  it('rebuilds an image with no counted cluster into a one-cluster table', async () => {
    const storage = new SparseStorage();
    const result = await rebuildRefcountStructure({ storage, counts: new RefcountArray(9, 4) });
    expect(result.tableClusters).toBe(1);
    expect(result.tableOffset).toBe(0);
  });
});

describe('compare and fix', () => {
  it('lists leaks and corruptions per cluster as qemu-img check does, and fixes them', async () => {
    const { image, rc, used } = await populated(9, 4, [20, 5], []);
    const list = [...used.keys()].filter((c) => c !== 0).sort((a, b) => a - b);
    const [leak, low, zero] = [list[0]!, list[1]!, list[2]!];
    used.set(low, 3); // referenced 3 times, refcount 1: a corruption qemu can fix
    await rc.update(leak * 512, 512, 2); // refcount 3, referenced once: a leak
    await rc.free(zero * 512, 512, 'never'); // referenced, refcount 0: needs a rebuild
    const stray = (await rc.allocClusters(1)) / 512; // not referenced at all: a leak
    expect(stray).toBe(zero);
    await rc.free(stray * 512, 512, 'never');
    const leaked = (await rc.allocClusters(1)) / 512;
    const expected = await expectedFor(rc, image, used, true);
    const cmp = await compareRefcounts(rc, expected.counts);
    expect(cmp.leaks).toEqual([{ cluster: leak, offset: leak * 512, refcount: 3, reference: 1 }].concat(leaked === zero ? [] : []));
    expect(cmp.corruptions).toEqual(
      [
        { cluster: low, offset: low * 512, refcount: 1, reference: 3 },
        ...(leaked === zero ? [] : [{ cluster: zero, offset: zero * 512, refcount: 0, reference: 1 }]),
      ].sort((a, b) => a.cluster - b.cluster),
    );
    const fixed = await fixRefcounts(rc, cmp, { leaks: true, corruptions: true });
    expect(fixed).toEqual({ leaksFixed: 1, corruptionsFixed: 1 });
    const after = await compareRefcounts(rc, (await expectedFor(rc, image, used, true)).counts);
    expect(after.leaks).toEqual([]);
    expect(after.corruptions.every((m) => m.refcount === 0)).toBe(true);
  });

  it('reports a referenced cluster with refcount 0 as needing a rebuild', async () => {
    const { image, rc, used } = await populated(9, 4, [10], []);
    const c = [...used.keys()].filter((x) => x !== 0)[3]!;
    await rc.free(c * 512, 512, 'never');
    const cmp = await compareRefcounts(rc, (await expectedFor(rc, image, used, true)).counts);
    expect(cmp.corruptions).toEqual([{ cluster: c, offset: c * 512, refcount: 0, reference: 1 }]);
    expect(cmp.rebuildNeeded).toBe(true);
    expect(await fixRefcounts(rc, cmp, { corruptions: true })).toEqual({ leaksFixed: 0, corruptionsFixed: 0 });
  });

  it('reports overflowing references, references out of range, and refcount blocks used twice', async () => {
    for (const order of [0, 4]) {
      const { image, rc } = await populated(9, order, [4], []);
      const blockOffset = rc.blockOffset(0);
      const expected = await computeExpectedRefcounts(
        { clusterBits: 9, refcountOrder: order, fileSize: await image.storage.size(), refcounts: rc },
        (add) => {
          add(3 * 512, 512, 'L2 entry');
          add(3 * 512, 512, 'L2 entry');
          add(5000 * 512, 512, 'L2 entry'); // past the end of the file
          add(blockOffset, 512, 'L1 entry');
        },
      );
      if (order === 0) {
        // 1-bit refcounts: the second reference overflows, and so does the block's own count.
        expect(expected.problems.map((p) => [p.kind, p.offset])).toEqual([
          ['overflow', 3 * 512],
          ['out-of-range', 5000 * 512],
          ['overflow', blockOffset],
        ]);
        expect(expected.problems[0]!.message).toBe('L2 entry: overflow cluster offset 0x600 (more than 1 references)');
        expect(expected.problemCount).toBe(3);
      } else {
        expect(expected.problems.map((p) => [p.kind, p.offset])).toEqual([
          ['out-of-range', 5000 * 512],
          ['refcount-block-shared', blockOffset],
        ]);
        expect(expected.problems[1]!.message).toBe(`refcount block 0 at 0x${blockOffset.toString(16)}: refcount=2`);
        expect(expected.rebuildNeeded).toBe(true);
        expect(expected.counts.get(3)).toBe(2);
      }
    }
  });
});
