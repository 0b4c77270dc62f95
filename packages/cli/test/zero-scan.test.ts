import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { firstDifferingSector, firstNonzeroSector, isZero, zeroRuns } from '../src/zero-scan.js';

function naiveFirstDiff(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length; i += 1) if (a[i] !== b[i]) return i - (i % 512);
  return -1;
}

/** The runs as the sector-by-sector scan defines them. */
function naiveZeroRuns(bytes: Uint8Array, minSparse: number): number[] {
  if (bytes.every((b) => b === 0)) return bytes.length === 0 ? [] : [0, bytes.length];
  const runs: number[] = [];
  let zeroStart = -1;
  for (let i = 0; i <= Math.ceil(bytes.length / 512); i++) {
    const s = i * 512;
    const zero = s < bytes.length && bytes.subarray(s, Math.min(s + 512, bytes.length)).every((b) => b === 0);
    if (zero) {
      if (zeroStart < 0) zeroStart = s;
      continue;
    }
    const end = Math.min(s, bytes.length);
    if (zeroStart >= 0 && end - zeroStart >= minSparse) runs.push(zeroStart, end);
    zeroStart = -1;
  }
  return runs;
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

  it('zeroRuns finds exactly the maximal zero-sector runs of at least minSparse bytes (aligned or not, any -S)', () => {
    const minSparse = fc.constantFrom(512, 1024, 4096, 8192, 65536, 32768 * 512);
    // Pokes in clusters, so that zero runs of every length (and at the ends) occur.
    const poke = fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 }), fc.integer({ min: 0, max: 40 }));
    fc.assert(
      fc.property(sizes, fc.nat({ max: 3 }), minSparse, fc.array(poke, { maxLength: 40 }), (size, shift, min, pokes) => {
        const backing = new Uint8Array(size + shift);
        const bytes = backing.subarray(shift);
        for (const [at, value, count] of pokes) {
          for (let i = 0; i <= count; i++) bytes[(at + i * 509) % size] = value;
        }
        expect(zeroRuns(bytes, min)).toEqual(naiveZeroRuns(bytes, min));
      }),
      { numRuns: 300 },
    );
  });

  it('zeroRuns: an all-zero buffer is one run even when shorter than minSparse; data between runs stays', () => {
    expect(zeroRuns(new Uint8Array(1000), 4096)).toEqual([0, 1000]);
    const bytes = new Uint8Array(64 * 1024);
    bytes[0] = 1; // sector 0 data
    bytes[8 * 512] = 1; // sectors 1..7 zero: 3.5 KiB, shorter than 4 KiB
    bytes[20 * 512 + 511] = 1; // sectors 9..19 zero: 5.5 KiB
    expect(zeroRuns(bytes, 4096)).toEqual([9 * 512, 20 * 512, 21 * 512, 64 * 1024]);
    expect(zeroRuns(bytes, 512)).toEqual([512, 8 * 512, 9 * 512, 20 * 512, 21 * 512, 64 * 1024]);
    expect(zeroRuns(bytes, 32768 * 512)).toEqual([]);
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
