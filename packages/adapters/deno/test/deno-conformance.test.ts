import { afterAll, describe, expect, it } from 'vitest';
import { storageConformanceCases } from '@qcow2/storage';
import { makeTempDir } from '@qcow2/test-utils';
import { runDenoScript } from './deno-harness.js';

// The conformance suite inside the real Deno binary, over the built packages: every case must
// pass (none is skipped: Deno files are writable, reopenable and sparse).
const tmp = makeTempDir('qcow2-deno-conformance-');
afterAll(() => tmp.cleanup());

interface CaseResult {
  name: string;
  status: 'passed' | 'failed' | 'skipped';
  error?: string;
}

const script = `
import { runConformance } from '@qcow2/storage';
import { createDenoStorage } from '@qcow2/storage-deno';

const dir = Deno.args[0];
let counter = 0;
const fresh = () => dir + '/file-' + counter++ + '.bin';
const ctx = {
  create: () => createDenoStorage(fresh(), { create: true }),
  createReadOnly: async (bytes) => {
    const path = fresh();
    Deno.writeFileSync(path, bytes);
    return createDenoStorage(path, { readOnly: true });
  },
  reopen: async (storage) => {
    await storage.close();
    return createDenoStorage(storage.path);
  },
  sparse: true,
};
const results = await runConformance(ctx);
console.log(JSON.stringify({
  deno: Deno.version.deno,
  results: results.map((r) => ({
    name: r.name,
    status: r.status,
    error: r.error === undefined ? undefined : String(r.error && r.error.stack ? r.error.stack : r.error),
  })),
}));
`;

describe('deno storage: conformance in Deno', () => {
  it('runs every case of the suite in the Deno binary and passes them all', async () => {
    const { result } = await runDenoScript<{ deno: string; results: CaseResult[] }>({
      script,
      allow: [tmp.dir],
      args: [tmp.dir],
    });
    expect(result.deno).toBe('2.9.6');
    expect(result.results.filter((r) => r.status !== 'passed')).toEqual([]);
    expect(result.results.map((r) => r.name)).toEqual(storageConformanceCases.map((c) => c.name));
  });
});
