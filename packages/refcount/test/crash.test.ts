import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createMemoryStorage, type Storage } from '@qcow2/storage';
import { Refcounts, writeInitialRefcountStructure, writeRefcountTableHeaderFields } from '@qcow2/refcount';
import { headerFields, structureClusters } from './helpers.js';

/**
 * Crash safety. A storage wrapper keeps, besides the current contents, the contents a crash
 * could leave: everything up to the last completed flush ("durable"), everything written so far
 * ("latest"), and the durable contents plus a random subset of the writes since. At every write
 * and flush, each of those images must open and be consistent for what the caller may already
 * reference: every cluster whose allocation was followed by a completed flush (the point where
 * the engine may write an L2 entry to it) has a refcount, and no refcount block or table lies
 * over such a cluster or is itself counted as free. Leaks are allowed.
 */

class CrashStorage implements Storage {
  readonly readOnly = false;
  readonly canDiscard = false;
  readonly inner = createMemoryStorage();
  durable: Uint8Array = new Uint8Array(0);
  pending: { bytes: Uint8Array; offset: number }[] = [];
  checks = 0;
  /** Set once the image exists: crash images are checked from then on. */
  armed = false;
  constructor(
    readonly check: (image: Uint8Array) => Promise<void>,
    readonly rand: () => number,
  ) {}

  read(dst: Uint8Array, offset: number): Promise<number> {
    return this.inner.read(dst, offset);
  }
  async write(src: Uint8Array, offset: number): Promise<void> {
    await this.inner.write(src, offset);
    this.pending.push({ bytes: src.slice(), offset });
    await this.#checkAll();
  }
  size(): Promise<number> {
    return this.inner.size();
  }
  truncate(size: number): Promise<void> {
    return this.inner.truncate(size);
  }
  async flush(): Promise<void> {
    this.durable = this.inner.snapshot();
    this.pending = [];
    await this.#checkAll();
  }
  close(): Promise<void> {
    return this.inner.close();
  }

  static apply(base: Uint8Array, writes: { bytes: Uint8Array; offset: number }[]): Uint8Array {
    let end = base.length;
    for (const w of writes) end = Math.max(end, w.offset + w.bytes.length);
    const out = new Uint8Array(end);
    out.set(base);
    for (const w of writes) out.set(w.bytes, w.offset);
    return out;
  }

  /** After a flush all three images are the same; after a write, "durable" has not changed. */
  async #checkAll(): Promise<void> {
    if (!this.armed) return;
    this.checks++;
    if (this.pending.length === 0) {
      await this.check(this.durable);
      return;
    }
    if (this.rand() < 0.7) return; // a sample of the write points keeps this fast
    await this.check(this.inner.snapshot());
    if (this.pending.length > 1) {
      await this.check(CrashStorage.apply(this.durable, this.pending.filter(() => this.rand() < 0.5)));
    }
  }
}

async function consistent(image: Uint8Array, referenced: ReadonlySet<number>, clusterBits: number, order: number): Promise<void> {
  if (image.length === 0) return; // nothing durable yet
  const storage = createMemoryStorage({ initial: image });
  const rc = await Refcounts.open({ storage, clusterBits, refcountOrder: order, ...(await headerFields(storage)) });
  expect(rc.tableProblems()).toEqual([]);
  const meta = structureClusters(rc);
  for (const [c, n] of meta) {
    if (n !== 1 || referenced.has(c)) expect(`structure cluster ${c} used ${n} times, referenced ${referenced.has(c)}`).toBe('');
  }
  let end = 0;
  for (const c of [...referenced, ...meta.keys()]) end = Math.max(end, c + 1);
  const problems: string[] = [];
  await rc.scan(0, end, (c, r) => {
    if ((referenced.has(c) || meta.has(c)) && r < 1) problems.push(`cluster ${c} is in use with refcount ${r}`);
  });
  expect(problems).toEqual([]);
  rc.dispose();
}

describe('crash images', () => {
  // [order, largest allocation, allocations]: enough for the 16- and 64-bit tables to grow.
  for (const [order, most, count] of [
    [0, 40, 12],
    [6, 700, 8], // 8 × 600..700 clusters: more than one table cluster (4096) covers
  ] as const) {
    it(`${1 << order}-bit refcounts, 512-byte clusters: every crash image is consistent through table growth`, async () => {
      let grown = 0;
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.tuple(fc.integer({ min: order === 6 ? 600 : 1, max: most }), fc.nat(), fc.boolean()), { minLength: count, maxLength: count }),
          fc.integer(),
          async (ops, seed) => {
            let state = seed >>> 0;
            const rand = () => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32);
            const referenced = new Set<number>([0]);
            const storage = new CrashStorage((image) => consistent(image, referenced, 9, order), rand);
            const s = await writeInitialRefcountStructure(storage, { clusterBits: 9, refcountOrder: order });
            await writeRefcountTableHeaderFields(storage, s.tableOffset, s.tableClusters);
            await storage.flush();
            storage.armed = true;
            const rc = await Refcounts.open({ storage, clusterBits: 9, refcountOrder: order, ...s, cacheSize: 1024 });
            for (const [n, pick, free] of ops) {
              const at = (await rc.allocClusters(n)) / 512;
              await rc.flush(); // the engine's dependency: refcounts durable before the L2 entry
              for (let c = at; c < at + n; c++) referenced.add(c);
              if (free) {
                const list = [...referenced].filter((c) => c !== 0);
                const c = list[pick % list.length]!;
                referenced.delete(c); // the L2 entry is gone (durably) before the refcount drops
                await rc.free(c * 512, 512, 'never');
              }
            }
            await rc.flush();
            expect(storage.checks).toBeGreaterThan(ops.length);
            if (order > 0) grown += rc.tableOffset !== 512 ? 1 : 0;
          },
        ),
        { numRuns: 4 },
      );
      if (order > 0) expect(grown).toBe(4);
    });
  }
});
