import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { firstDifferingSector, firstNonzeroSector, isZero } from '../src/zero-scan.js';

function naiveFirstDiff(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length; i += 1) if (a[i] !== b[i]) return i - (i % 512);
  return -1;
}

describe('sector scans', () => {
  const sizes = fc.constantFrom(1, 511, 512, 513, 4096, 4097, 70000, 2 * 1024 * 1024 + 1000);
  it('match a byte-by-byte scan, rounded down to the 512-byte sector', () => {
    fc.assert(
      fc.property(sizes, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { maxLength: 4 }), (size, pokes) => {
        const a = new Uint8Array(size);
        const b = new Uint8Array(size);
        for (const [at, value] of pokes) b[at % size] = value;
        const first = naiveFirstDiff(a, b);
        expect(firstDifferingSector(a, b)).toBe(first);
        expect(firstNonzeroSector(b)).toBe(first);
        expect(isZero(b)).toBe(first < 0);
      }),
      { numRuns: 200 },
    );
  });

  it('ranges inside a buffer', () => {
    const bytes = new Uint8Array(10000);
    bytes[5000] = 1;
    expect(isZero(bytes, 0, 5000)).toBe(true);
    expect(isZero(bytes, 5000, 5001)).toBe(false);
    expect(isZero(bytes, 5001, 10000)).toBe(true);
    expect(isZero(bytes.subarray(4096), 0, 904)).toBe(true);
    expect(isZero(bytes.subarray(4096), 905, 5904)).toBe(true);
    expect(isZero(bytes.subarray(4096), 904, 905)).toBe(false);
  });
});
