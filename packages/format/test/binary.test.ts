import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isQcow2Error, Qcow2Error, readU64, viewOf, writeU64 } from '@qcow2/format';

describe('64-bit fields', () => {
  it('round-trips every safe integer', () => {
    fc.assert(
      fc.property(fc.maxSafeNat(), (n) => {
        const bytes = new Uint8Array(8);
        writeU64(viewOf(bytes), 0, n, 'x');
        expect(readU64(viewOf(bytes), 0, 'x')).toBe(n);
      }),
    );
  });

  it('refuses values above 2^53 with a Qcow2Error naming the field', () => {
    const bytes = new Uint8Array([0x00, 0x20, 0, 0, 0, 0, 0, 0]);
    expect(() => readU64(viewOf(bytes), 0, 'l1_table_offset')).toThrow(/l1_table_offset/);
    try {
      readU64(viewOf(bytes), 0, 'size');
    } catch (e) {
      expect(isQcow2Error(e)).toBe(true);
      expect((e as Qcow2Error).code).toBe('CORRUPT');
    }
  });
});

describe('UTF-8 strings', () => {
  it('agree with TextEncoder/TextDecoder', async () => {
    const { decodeString, encodeString } = await import('@qcow2/format');
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => {
        expect(Array.from(encodeString(s))).toEqual(Array.from(new TextEncoder().encode(s)));
      }),
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (b) => {
        expect(decodeString(b)).toBe(new TextDecoder().decode(b));
      }),
      { numRuns: 5000 },
    );
  });
});
