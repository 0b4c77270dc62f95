import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { firstDifferingSector, firstNonzeroSector, isZero, zeroSectors } from '../src/zero-scan.js';

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

  it('zeroSectors flags exactly the all-zero sectors (aligned or not, whole 64 KiB blocks or not)', () => {
    fc.assert(
      fc.property(sizes, fc.nat({ max: 3 }), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { maxLength: 40 }), (size, shift, pokes) => {
        const backing = new Uint8Array(size + shift);
        const bytes = backing.subarray(shift);
        for (const [at, value] of pokes) bytes[at % size] = value;
        const flags = zeroSectors(bytes);
        expect(flags.length).toBe(Math.ceil(size / 512));
        for (let s = 0; s < flags.length; s++) {
          const zero = bytes.subarray(s * 512, Math.min(size, s * 512 + 512)).every((b) => b === 0);
          if ((flags[s] === 1) !== zero) expect({ sector: s, flag: flags[s] }).toEqual({ sector: s, flag: zero ? 1 : 0 });
        }
      }),
      { numRuns: 150 },
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
