import { describe, expect, it } from 'vitest';
import { createTableCache } from '@qcow2/cache';
import { isQcow2Error, refcountMax, viewOf } from '@qcow2/format';
import { createMemoryStorage } from '@qcow2/storage';
import { Refcounts, writeInitialRefcountStructure } from '@qcow2/refcount';
import { makeImage, openImage, structureClusters } from './helpers.js';
import { SparseStorage } from './sparse-storage.js';

async function rejection(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (e) {
    expect(isQcow2Error(e), String(e)).toBe(true);
    return e as { code: string; message: string };
  }
  throw new Error('expected a rejection');
}

const ORDERS = [0, 1, 2, 3, 4, 5, 6];

describe('Refcounts.open', () => {
  it('refuses bad header fields with Qcow2Errors naming them', async () => {
    const storage = createMemoryStorage();
    const base = { storage, clusterBits: 16, refcountOrder: 4, tableOffset: 65536, tableClusters: 1 };
    expect(await rejection(Refcounts.open({ ...base, tableOffset: 65536 + 512 }))).toMatchObject({
      code: 'CORRUPT',
      message: expect.stringMatching(/refcount table offset 0x10200 is not cluster-aligned/),
    });
    expect(await rejection(Refcounts.open({ ...base, tableClusters: 129 }))).toMatchObject({
      code: 'CORRUPT',
      message: expect.stringMatching(/129 clusters .* exceed qemu's 8388608-byte limit/),
    });
    expect(await rejection(Refcounts.open({ ...base, tableClusters: 0 }))).toMatchObject({
      code: 'CORRUPT',
      message: expect.stringMatching(/does not contain a reference count table/),
    });
    expect((await rejection(Refcounts.open({ ...base, refcountOrder: 7 }))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(Refcounts.open({ ...base, clusterBits: 22 }))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(Refcounts.open({ ...base, tableClusters: -1 }))).code).toBe('INVALID_ARGUMENT');
    const otherCache = createTableCache({ storage, capacity: 4096, entrySize: 512 });
    expect((await rejection(Refcounts.open({ ...base, cache: otherCache }))).code).toBe('INVALID_ARGUMENT');
  });

  it('reads a table past the end of the file as empty', async () => {
    const rc = await Refcounts.open({ storage: createMemoryStorage(), clusterBits: 9, refcountOrder: 4, tableOffset: 512, tableClusters: 2 });
    expect(rc.tableEntries).toBe(128);
    expect(await rc.get(5)).toBe(0);
    expect(rc.structure()).toEqual([{ kind: 'table', offset: 512, length: 1024 }]);
  });

  it('masks reserved bits (as qemu) and refuses unaligned or huge block offsets when used', async () => {
    const storage = createMemoryStorage();
    const table = new Uint8Array(4096);
    const view = viewOf(table);
    view.setUint32(4, 8192 | 0x3); // reserved bits set, block at cluster 2
    view.setUint32(12, 0x1200); // not cluster-aligned
    view.setUint32(16, 0xffff_ffff); // above 2^53
    await storage.write(table, 4096);
    const block = new Uint8Array(4096);
    block[1] = 7; // cluster 0: 16-bit refcount 7
    await storage.write(block, 8192);
    const rc = await Refcounts.open({ storage, clusterBits: 12, refcountOrder: 4, tableOffset: 4096, tableClusters: 1 });
    expect(rc.tableProblems()).toEqual([
      { index: 0, usable: true, message: 'refcount table entry 0 at 0x1000: reserved bits are set (0x3)' },
      { index: 1, usable: false, message: 'refcount table entry 1 at 0x1008: refcount block offset 0x1200 is not cluster-aligned' },
      { index: 2, usable: false, message: 'refcount table entry 2 at 0x1010: block offset 0xffffffff00000000 exceeds 2^53' },
    ]);
    expect(await rc.get(0)).toBe(7);
    expect(await rejection(rc.get(2048))).toMatchObject({ code: 'CORRUPT', message: expect.stringMatching(/entry 1 .*not cluster-aligned/) });
    expect(() => rc.blockOffset(2)).toThrow(/exceeds 2\^53/);
    // Growing the table keeps the entries it cannot use byte for byte; allocation refuses to use them.
    expect(await rejection(rc.allocClusters(3000))).toMatchObject({ code: 'CORRUPT' });
  });
});

describe('Refcounts updates', () => {
  for (const order of ORDERS) {
    it(`${1 << order}-bit: overflow is INVALID_ARGUMENT naming cluster and width, underflow CORRUPT, both all-or-nothing`, async () => {
      const image = await makeImage(9, order);
      const rc = await openImage(image);
      const max = refcountMax(order);
      const at = await rc.allocClusters(3);
      const c = at / 512;
      if (max > 1) await rc.update(at, 512, max - 1);
      expect(await rc.get(c)).toBe(max);
      const over = await rejection(rc.update(at - 512 * 0, 3 * 512, 1));
      expect(over.code).toBe('INVALID_ARGUMENT');
      expect(over.message).toBe(
        `refcount overflow: cluster ${c} (host offset 0x${at.toString(16)}) has refcount ${max}, adding 1 exceeds the maximum ${max} of ${1 << order}-bit refcounts`,
      );
      // The clusters after it were not changed (the first one failed); now a failure in the middle:
      if (max > 1) await rc.update(at + 1024, 512, max - 1);
      expect(await rejection(rc.update(at + 512, 1024, 1))).toMatchObject({ code: 'INVALID_ARGUMENT' });
      expect([await rc.get(c), await rc.get(c + 1), await rc.get(c + 2)]).toEqual([max, 1, max]);

      await rc.free(at + 512, 512, 'never');
      const under = await rejection(rc.free(at, 1024, 'never'));
      expect(under.code).toBe('CORRUPT');
      expect(under.message).toMatch(new RegExp(`refcount underflow: cluster ${c + 1} \\(host offset 0x${(at + 512).toString(16)}\\) has refcount 0`));
      expect([await rc.get(c), await rc.get(c + 1)]).toEqual([max, 0]);
      const none = await rejection(rc.free(1 << 30, 512, 'never'));
      expect(none).toMatchObject({ code: 'CORRUPT', message: expect.stringMatching(/no refcount block/) });
    });
  }

  it('refuses bad arguments and use after close', async () => {
    const rc = await openImage(await makeImage(9, 4));
    expect((await rejection(rc.update(-1, 512, 1))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(rc.update(0, 512, 0.5))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(rc.free(0, 512, 'sometimes' as never))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(rc.allocClusters(0))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(rc.allocAt(100, 1))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(rc.allocBytes(513))).code).toBe('INVALID_ARGUMENT');
    await rc.close();
    expect((await rejection(rc.get(0))).code).toBe('CLOSED');
  });
});

describe('allocation', () => {
  it('is first fit from the free cluster index, which moves back when clusters are freed', async () => {
    const rc = await openImage(await makeImage(9, 4));
    expect(await rc.allocClusters(1)).toBe(3 * 512);
    expect(await rc.allocClusters(4)).toBe(4 * 512);
    await rc.free(5 * 512, 512, 'never');
    expect(rc.freeClusterIndex).toBe(5);
    expect(await rc.allocClusters(2)).toBe(8 * 512); // the one-cluster hole is too small
    expect(await rc.allocClusters(1)).toBe(10 * 512); // qemu's index has moved past the hole
    await rc.free(4 * 512, 512, 'never');
    expect(await rc.allocClusters(2)).toBe(4 * 512); // 4 and 5
  });

  it('runs in call order after the operations queued before it, also when it could be done at once', async () => {
    const rc = await openImage(await makeImage(9, 4));
    expect(await rc.allocClusters(4)).toBe(3 * 512); // clusters 3..6; their block is cached now
    // Not awaited: the free is queued when the allocation is asked for, so the allocation sees cluster 4 free.
    const freeing = rc.free(4 * 512, 512, 'never');
    const at = rc.allocClusters(1);
    await freeing;
    expect(await at).toBe(4 * 512);
    expect(await rc.allocClusters(2)).toBe(7 * 512); // 5 and 6 are taken: the queued path searches on
    expect(await rc.allocClusters(3)).toBe(9 * 512); // free from the index on, in a cached block
    expect(await Promise.all([4, 5, 7, 8, 9, 10, 11, 12].map((c) => rc.get(c)))).toEqual([1, 1, 1, 1, 1, 1, 1, 0]);
    expect(rc.freeClusterIndex).toBe(12);
  });

  it('allocAt allocates the free prefix only', async () => {
    const rc = await openImage(await makeImage(9, 4));
    await rc.allocAt(10 * 512, 1);
    expect(await rc.allocAt(7 * 512, 5)).toBe(3);
    expect(await rc.allocAt(7 * 512, 5)).toBe(0);
    expect(await rc.allocAt(11 * 512, 0)).toBe(0);
    expect([7, 8, 9, 10, 11].map((c) => c)).toHaveLength(5);
    expect(await Promise.all([6, 7, 8, 9, 10, 11].map((c) => rc.get(c)))).toEqual([0, 1, 1, 1, 1, 0]);
  });

  for (const mode of ['update', 'allocAt'] as const) {
    it(`${mode} of clusters without a refcount block places the new block outside them`, async () => {
      // 64-bit refcounts in 512-byte clusters: 64 clusters per block.
      const rc = await openImage(await makeImage(9, 6));
      await rc.allocClusters(61); // clusters 3..63: the free index is at 64, a block boundary
      expect(rc.freeClusterIndex).toBe(64);
      if (mode === 'update') await rc.update(64 * 512, 4 * 512, 1);
      else expect(await rc.allocAt(64 * 512, 4)).toBe(4);
      expect(rc.blockOffset(1)).toBe(68 * 512);
      expect(await Promise.all([64, 65, 66, 67, 68, 69].map((c) => rc.get(c)))).toEqual([1, 1, 1, 1, 1, 0]);
    });
  }

  it('concurrent calls get disjoint clusters', async () => {
    const rc = await openImage(await makeImage(9, 6), { cacheEntries: 1 });
    const offsets = await Promise.all(Array.from({ length: 50 }, (_, i) => rc.allocClusters(1 + (i % 7))));
    const seen = new Set<number>();
    offsets.forEach((o, i) => {
      for (let k = 0; k < 1 + (i % 7); k++) {
        expect(seen.has(o / 512 + k)).toBe(false);
        seen.add(o / 512 + k);
      }
    });
    for (const c of structureClusters(rc).keys()) expect(seen.has(c)).toBe(false);
  });
});

describe('allocBytes', () => {
  it('packs compressed data, one reference per compressed cluster in each host cluster', async () => {
    const rc = await openImage(await makeImage(9, 4));
    const a = await rc.allocBytes(100);
    expect(a).toBe(3 * 512);
    expect(await rc.allocBytes(100)).toBe(a + 100);
    expect(await rc.get(3)).toBe(2);
    expect(rc.freeByteOffset).toBe(a + 200);
    // 400 bytes do not fit in the 312 left, and cluster 4 is free: the data spans both.
    expect(await rc.allocBytes(400)).toBe(a + 200);
    expect([await rc.get(3), await rc.get(4)]).toEqual([3, 1]);
    expect(rc.freeByteOffset).toBe(4 * 512 + 88);
    // Cluster 5 is taken: 500 bytes go to the start of a fresh cluster.
    await rc.allocClusters(1);
    expect(await rc.allocBytes(500)).toBe(6 * 512);
    // Filling a cluster exactly ends it.
    expect(await rc.allocBytes(12)).toBe(6 * 512 + 500);
    expect(rc.freeByteOffset).toBe(0);
    expect(await rc.allocBytes(1)).toBe(7 * 512);
  });

  it('starts a new cluster when the refcount is at its maximum (1-bit refcounts)', async () => {
    const rc = await openImage(await makeImage(9, 0));
    expect(await rc.allocBytes(10)).toBe(3 * 512);
    expect(await rc.allocBytes(10)).toBe(4 * 512);
  });

  it('never packs into a cluster that was freed in the meantime', async () => {
    const rc = await openImage(await makeImage(9, 4));
    const a = await rc.allocBytes(100);
    await rc.free(a, 100, 'never');
    expect(rc.freeByteOffset).toBe(0);
    expect(await rc.allocClusters(1)).toBe(a);
    const b = await rc.allocBytes(100);
    expect(Math.floor(b / 512)).not.toBe(a / 512);
    expect(await rc.get(a / 512)).toBe(1);
  });
});

describe('discards', () => {
  async function setup(discard?: { request?: boolean; snapshot?: boolean; other?: boolean }) {
    const storage = new SparseStorage();
    const s = await writeInitialRefcountStructure(storage, { clusterBits: 9, refcountOrder: 4 });
    const rc = await Refcounts.open({ storage, clusterBits: 9, refcountOrder: 4, ...s, ...(discard ? { discard } : {}) });
    return { storage, rc };
  }

  it("follow qemu's pass-discard defaults (request off, snapshot on, other off, always on)", async () => {
    const { storage, rc } = await setup();
    const at = await rc.allocClusters(8);
    await rc.free(at, 512, 'request');
    await rc.free(at + 512, 512, 'other');
    await rc.free(at + 1024, 512, 'never');
    expect(storage.discards).toEqual([]);
    await rc.free(at + 1536, 1024, 'snapshot');
    await rc.free(at + 3072, 512, 'always');
    expect(storage.discards).toEqual([
      [at + 1536, 1024],
      [at + 3072, 512],
    ]);
  });

  it('are sent only for clusters that reach refcount 0, and can be turned on per type', async () => {
    const { storage, rc } = await setup({ request: true, snapshot: false });
    const at = await rc.allocClusters(2);
    await rc.update(at, 512, 1);
    await rc.free(at, 1024, 'request');
    expect(storage.discards).toEqual([[at + 512, 512]]);
    await rc.free(at, 512, 'snapshot');
    expect(storage.discards).toHaveLength(1);
  });

  it('are coalesced while cached, and sent before the next allocation', async () => {
    const { storage, rc } = await setup();
    const at = await rc.allocClusters(6);
    rc.cacheDiscards = true;
    await rc.free(at + 1536, 512, 'snapshot');
    await rc.free(at, 512, 'snapshot');
    expect(rc.pendingDiscards()).toEqual([
      { offset: at + 1536, length: 512 },
      { offset: at, length: 512 },
    ]);
    await rc.free(at + 2048, 512, 'snapshot');
    await rc.free(at + 512, 1024, 'snapshot'); // joins both
    expect(storage.discards).toEqual([]);
    expect(rc.pendingDiscards()).toEqual([{ offset: at, length: 2560 }]);
    await rc.allocClusters(1);
    expect(storage.discards).toEqual([[at, 2560]]);
    await rc.free(at + 2560, 512, 'snapshot');
    await rc.processDiscards();
    expect(storage.discards).toEqual([
      [at, 2560],
      [at + 2560, 512],
    ]);
  });
});

describe('table growth', () => {
  for (const order of ORDERS) {
    it(`${1 << order}-bit refcounts in 512-byte clusters: blocks describe themselves, the table moves, the old one is freed`, async () => {
      const image = await makeImage(9, order);
      let rc = await openImage(image, { cacheEntries: 2 });
      const coverage = 64 * rc.blockEntries; // clusters one table cluster covers
      const chunks = order === 0 ? 2 : 6;
      const chunk = Math.ceil((coverage * 0.7) / 1) | 0;
      const allocated: [number, number][] = [];
      const tables: number[] = [rc.tableOffset];
      for (let i = 0; i < chunks; i++) {
        const at = await rc.allocClusters(chunk);
        allocated.push([at / 512, chunk]);
        if (rc.tableOffset !== tables[tables.length - 1]) tables.push(rc.tableOffset);
      }
      expect(tables.length).toBeGreaterThan(1);
      await rc.close();
      rc = await openImage(image);
      const meta = structureClusters(rc);
      const used = new Map<number, number>([[0, 1]]);
      for (const [first, n] of allocated) for (let c = first; c < first + n; c++) used.set(c, (used.get(c) ?? 0) + 1);
      for (const c of meta.keys()) expect(used.has(c)).toBe(false);
      let end = 0;
      for (const c of [...used.keys(), ...meta.keys()]) end = Math.max(end, c + 1);
      let bad = 0;
      await rc.scan(0, end + rc.blockEntries, (c, r) => {
        if (r !== (used.get(c) ?? 0) + (meta.get(c) ?? 0)) bad++;
      });
      expect(bad).toBe(0);
      // The first table (cluster 1) was freed: it is free or reused for the structure.
      expect(rc.tableOffset).not.toBe(512);
      expect(await rc.get(1)).toBe(meta.get(1) ?? 0);
    });
  }

  it('refuses to grow the table past 8 MiB with UNSUPPORTED', async () => {
    // 64-bit refcounts in 512-byte clusters: a block covers 64 clusters, an 8 MiB table 2^26.
    const rc = await openImage(await makeImage(9, 6));
    const e = await rejection(rc.update(2 ** 26 * 512, 512, 1));
    expect(e.code).toBe('UNSUPPORTED');
    expect(e.message).toMatch(/8388608-byte limit/);
  });

  it('calls onTableMoved with the new table, after the table is on disk', async () => {
    const storage = new SparseStorage();
    const s = await writeInitialRefcountStructure(storage, { clusterBits: 9, refcountOrder: 6 });
    const moves: { offset: number; clusters: number; firstEntry: number }[] = [];
    const rc = await Refcounts.open({
      storage,
      clusterBits: 9,
      refcountOrder: 6,
      ...s,
      onTableMoved: async (offset, clusters) => {
        const entry = new Uint8Array(8);
        await storage.read(entry, offset);
        moves.push({ offset, clusters, firstEntry: viewOf(entry).getUint32(4) });
      },
    });
    await rc.allocClusters(5000);
    expect(moves.length).toBeGreaterThan(0);
    expect(moves[moves.length - 1]).toEqual({ offset: rc.tableOffset, clusters: rc.tableClusters, firstEntry: 1024 });
  });
});
