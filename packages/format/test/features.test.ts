import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  AUTOCLEAR_BITMAPS,
  AUTOCLEAR_DATA_FILE_RAW,
  checkIncompatibleFeatures,
  COMPAT_LAZY_REFCOUNTS,
  hasFeature,
  INCOMPAT_COMPRESSION,
  INCOMPAT_CORRUPT,
  INCOMPAT_DATA_FILE,
  INCOMPAT_DIRTY,
  INCOMPAT_EXTENDED_L2,
  isQcow2Error,
  KNOWN_AUTOCLEAR_FEATURES,
  KNOWN_COMPATIBLE_FEATURES,
  KNOWN_INCOMPATIBLE_FEATURES,
  QEMU_FEATURE_NAME_TABLE,
  type FeatureNameEntry,
  type Qcow2Error,
} from '@qcow2/format';

function message(mask: bigint, table?: FeatureNameEntry[], supported?: bigint): string | undefined {
  try {
    checkIncompatibleFeatures({ incompatibleFeatures: mask }, table, supported);
    return undefined;
  } catch (e) {
    expect(isQcow2Error(e)).toBe(true);
    expect((e as Qcow2Error).code).toBe('UNSUPPORTED');
    return (e as Qcow2Error).message;
  }
}

describe('feature bits', () => {
  it('have the spec values', () => {
    expect([INCOMPAT_DIRTY, INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE, INCOMPAT_COMPRESSION, INCOMPAT_EXTENDED_L2]).toEqual([
      1n,
      2n,
      4n,
      8n,
      16n,
    ]);
    expect(COMPAT_LAZY_REFCOUNTS).toBe(1n);
    expect([AUTOCLEAR_BITMAPS, AUTOCLEAR_DATA_FILE_RAW]).toEqual([1n, 2n]);
    expect(KNOWN_INCOMPATIBLE_FEATURES).toBe(0x1fn);
    expect(KNOWN_COMPATIBLE_FEATURES).toBe(1n);
    expect(KNOWN_AUTOCLEAR_FEATURES).toBe(3n);
    expect(hasFeature(0x12n, INCOMPAT_CORRUPT)).toBe(true);
    expect(hasFeature(0x12n, INCOMPAT_DIRTY)).toBe(false);
  });

  it('the qemu feature name table names every known bit once', () => {
    const byType = [KNOWN_INCOMPATIBLE_FEATURES, KNOWN_COMPATIBLE_FEATURES, KNOWN_AUTOCLEAR_FEATURES];
    const seen = [0n, 0n, 0n];
    for (const e of QEMU_FEATURE_NAME_TABLE) {
      const bit = 1n << BigInt(e.bit);
      expect(seen[e.type]! & bit).toBe(0n);
      seen[e.type] = seen[e.type]! | bit;
    }
    expect(seen).toEqual(byType);
  });
});

describe('checkIncompatibleFeatures', () => {
  it('accepts every combination of known bits', () => {
    for (let m = 0n; m < 32n; m++) expect(message(m)).toBeUndefined();
  });

  it("refuses an unknown bit in qemu's words", () => {
    expect(message(1n << 15n)).toMatch(/Unsupported qcow2 feature\(s\): Unknown incompatible feature: 8000$/);
    expect(message((1n << 63n) | 1n)).toMatch(/Unknown incompatible feature: 8000000000000000$/);
  });

  it('names bits from the feature name table, in table order, then the rest as a mask', () => {
    const table: FeatureNameEntry[] = [
      { type: 1, bit: 5, name: 'a compatible one' },
      { type: 0, bit: 6, name: 'six' },
      { type: 0, bit: 0, name: 'dirty bit' },
      { type: 0, bit: 40, name: 'forty' },
    ];
    expect(message((1n << 40n) | (1n << 6n) | (1n << 5n) | 1n, table)).toMatch(
      /Unsupported qcow2 feature\(s\): six, forty, Unknown incompatible feature: 20$/,
    );
  });

  it('stops reading the table at an entry with an empty name, as qemu does', () => {
    const table: FeatureNameEntry[] = [
      { type: 0, bit: 0, name: '' },
      { type: 0, bit: 6, name: 'six' },
    ];
    expect(message(1n << 6n, table)).toMatch(/: Unknown incompatible feature: 40$/);
  });

  it('honours a narrower supported set', () => {
    expect(message(INCOMPAT_EXTENDED_L2, QEMU_FEATURE_NAME_TABLE.slice(), KNOWN_INCOMPATIBLE_FEATURES & ~INCOMPAT_EXTENDED_L2)).toMatch(
      /Unsupported qcow2 feature\(s\): extended L2 entries$/,
    );
  });

  it('refuses exactly the masks with unknown bits, and accounts for every unknown bit', () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
        fc.array(fc.record({ type: fc.integer({ min: 0, max: 3 }), bit: fc.integer({ min: 0, max: 70 }), name: fc.constantFrom('x', 'y', 'z') })),
        (mask, table) => {
          const msg = message(mask, table);
          const unknown = mask & ~KNOWN_INCOMPATIBLE_FEATURES;
          expect(msg === undefined).toBe(unknown === 0n);
          if (msg === undefined) return;
          let named = 0n;
          for (const e of table) {
            if (e.type === 0 && e.bit <= 63 && (unknown & (1n << BigInt(e.bit))) !== 0n) named |= 1n << BigInt(e.bit);
          }
          const rest = /Unknown incompatible feature: ([0-9a-f]+)$/.exec(msg);
          expect(rest === null ? 0n : BigInt(`0x${rest[1]!}`)).toBe(unknown & ~named);
        },
      ),
      { numRuns: 500 },
    );
  });
});
