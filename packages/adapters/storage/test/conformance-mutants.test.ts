import { describe, expect, it } from 'vitest';
import { runConformance, storageConformanceCases, type ConformanceContext } from '@qcow2/storage';
import { createBuggyStorage, type Bug } from './buggy-storage.js';

function contextFor(bugs: readonly Bug[]): ConformanceContext {
  return {
    create: async () => createBuggyStorage(bugs),
    createReadOnly: async (bytes) => createBuggyStorage(bugs, bytes, true),
  };
}

async function failures(bugs: readonly Bug[]): Promise<string[]> {
  const results = await runConformance(contextFor(bugs));
  return results.filter((r) => r.status === 'failed').map((r) => r.name);
}

const caseNamed = (fragment: string): string => {
  const found = storageConformanceCases.filter((c) => c.name.includes(fragment));
  expect(found, fragment).toHaveLength(1);
  return found[0]!.name;
};

describe('the conformance suite catches broken storages', () => {
  it('passes the bug-free reference storage', async () => {
    expect(await failures([])).toEqual([]);
  });

  const expectations: [Bug, string][] = [
    ['read-count-ignores-eof', 'short read at end of file'],
    ['read-clears-dst-tail', 'short read at end of file'],
    ['close-does-nothing', 'close: every later call'],
    ['closed-rejects-io', 'close: every later call'],
    ['sync-throw-read-only', 'read-only: write, truncate'],
    ['read-only-truncate-allowed', 'read-only: write, truncate'],
    ['negative-offset-reads-zero', 'invalid offsets'],
    ['write-keeps-src', 'write copies src'],
    ['truncate-keeps-stale-bytes', 'truncate down then up'],
    ['truncate-keeps-stale-bytes', 'writes past end of file extend it with zeros'],
    ['discard-missing', 'capabilities are explicit'],
    ['discard-extends', 'discard (when canDiscard)'],
    ['racy-grow', 'concurrent reads and writes'],
    ['size-is-capacity', 'size follows every write and truncate'],
    ['dst-byte-offset-ignored', 'subarray views'],
    ['zero-length-write-extends', 'zero-length reads and writes'],
  ];
  for (const [bug, fragment] of expectations) {
    it(`${bug} fails "${fragment}"`, async () => {
      expect(await failures([bug])).toContain(caseNamed(fragment));
    });
  }

  it('a failed case carries an Error that says what differed', async () => {
    const results = await runConformance(contextFor(['read-clears-dst-tail']), {
      cases: [storageConformanceCases.find((c) => c.name.startsWith('short read'))!],
    });
    expect(results[0]!.status).toBe('failed');
    expect(String(results[0]!.error)).toMatch(/dst past the bytes read: expected every byte to be 238, byte 0 .* is 0/);
  });
});
