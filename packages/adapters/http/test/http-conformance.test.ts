import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runConformance, storageConformanceCases, type ConformanceContext } from '@qcow2/storage';
import { createHttpStorage } from '@qcow2/storage-http';
import { startRangeServer, type RangeServer } from './range-server.js';

let server: RangeServer;
beforeAll(async () => {
  server = await startRangeServer();
});
afterAll(() => server.close());
let counter = 0;

// Small blocks and a small cache, so the suite's reads cross block boundaries, coalesce and evict.
function context(options: Parameters<typeof createHttpStorage>[1]): ConformanceContext {
  return {
    createReadOnly: (bytes) => createHttpStorage(server.add(`/conformance-${counter++}.bin`, bytes), options),
  };
}

const variants = {
  'default options': {},
  '4 KiB blocks, 64 KiB cache, 16 KiB requests': { blockSize: 4096, cacheBytes: 65536, maxCoalesce: 16384 },
  'no cache': { cacheBytes: 0 },
} as const;

for (const [name, options] of Object.entries(variants)) {
  describe(`http storage: conformance (${name})`, () => {
    const ctx = context(options);
    for (const c of storageConformanceCases) {
      it.skipIf(!c.applies(ctx))(c.name, () => c.run(ctx));
    }
  });
}

describe('http storage: runConformance', () => {
  it('runs every read-only case and passes them all; the writable ones are skipped', async () => {
    const results = await runConformance(context({}));
    const failed = results.filter((r) => r.status === 'failed');
    expect(failed).toEqual([]);
    const passed = results.filter((r) => r.status === 'passed').map((r) => r.name);
    expect(passed).toContain("read-only: write, truncate and discard reject 'READ_ONLY' and change nothing");
    expect(passed).toContain('multi-MiB transfers in one call');
    expect(results.find((r) => r.name.startsWith('writes past end'))?.status).toBe('skipped');
  });
});
