import { describe, expect, it } from 'vitest';
import {
  createMemoryStorage,
  runConformance,
  storageConformanceCases,
  type ConformanceContext,
  type MemoryStorage,
  type Storage,
} from '@qcow2/storage';

const ctx: ConformanceContext = {
  create: async () => createMemoryStorage(),
  createReadOnly: async (bytes) => createMemoryStorage({ initial: bytes, readOnly: true }),
  reopen: async (storage: Storage) => {
    await storage.close();
    return createMemoryStorage({ initial: (storage as MemoryStorage).snapshot() });
  },
};

describe('memory storage: conformance', () => {
  for (const c of storageConformanceCases) {
    it.skipIf(!c.applies(ctx))(c.name, () => c.run(ctx));
  }
});

describe('runConformance', () => {
  it('reports every case, and all but the sparse one pass for memory storage', async () => {
    const results = await runConformance(ctx);
    expect(results.map((r) => r.name)).toEqual(storageConformanceCases.map((c) => c.name));
    const failed = results.filter((r) => r.status === 'failed');
    expect(failed).toEqual([]);
    expect(results.filter((r) => r.status === 'skipped').map((r) => r.name)).toEqual([
      'offsets beyond 4 GiB (sparse backends)',
    ]);
  });

  it('skips what a read-only context cannot run and passes the rest', async () => {
    const results = await runConformance({ createReadOnly: ctx.createReadOnly! });
    const byStatus = (status: string): string[] => results.filter((r) => r.status === status).map((r) => r.name);
    expect(byStatus('failed')).toEqual([]);
    expect(byStatus('passed')).toContain('short read at end of file returns the count and leaves the rest of dst untouched');
    expect(byStatus('passed')).toContain("read-only: write, truncate and discard reject 'READ_ONLY' and change nothing");
    expect(byStatus('skipped')).toContain('writes past end of file extend it with zeros in the gap');
    expect(byStatus('skipped')).toContain('data survives flush, close and reopen');
  });

  it('runs only the cases it is given', async () => {
    const results = await runConformance(ctx, { cases: storageConformanceCases.slice(0, 2) });
    expect(results).toHaveLength(2);
  });

  it('case names are unique', () => {
    const names = storageConformanceCases.map((c) => c.name);
    expect(new Set(names).size).toBe(names.length);
  });
});
