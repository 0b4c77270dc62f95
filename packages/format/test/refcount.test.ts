import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { assertDecodeEncode, assertEncodeDecode, assertThrowsOnlyQcow2Error, mutatedBytes } from '@qcow2/test-utils';
import {
  decodeRefcountBlock,
  decodeRefcountTable,
  decodeRefcountTableEntry,
  encodeRefcountBlock,
  encodeRefcountTable,
  encodeRefcountTableEntry,
  getRefcount,
  isQcow2Error,
  MAX_REFCOUNT_TABLE_ENTRIES,
  refcountBits,
  refcountBlockEntries,
  refcountBlockIndex,
  refcountMax,
  refcountTableIndex,
  setRefcount,
  viewOf,
} from '@qcow2/format';
import { refcountOrder, refcountTableOffset, wordsToBytes } from './arbitraries.js';

function codeOf(run: () => unknown): string | undefined {
  try {
    run();
    return undefined;
  } catch (e) {
    if (!isQcow2Error(e)) throw e;
    return e.code;
  }
}

/** A refcount that fits `order`, biased towards the extremes. */
function refcountValue(order: number): fc.Arbitrary<number> {
  const max = refcountMax(order);
  return fc.oneof(fc.constantFrom(0, 1, max, Math.max(0, max - 1)), fc.maxSafeNat().map((n) => n % (max + 1)));
}

describe('refcount blocks', () => {
  it('get/set at every width agree with an array of numbers and leave other entries untouched', () => {
    const scenario = refcountOrder.chain((order) =>
      fc.record({
        order: fc.constant(order),
        bytes: fc.integer({ min: 8, max: 64 }).map((n) => n & ~7),
        initial: fc.uint8Array({ minLength: 64, maxLength: 64 }),
        ops: fc.array(fc.tuple(fc.nat(), refcountValue(order)), { minLength: 1, maxLength: 40 }),
      }),
    );
    fc.assert(
      fc.property(scenario, ({ order, bytes, initial, ops }) => {
        const block = initial.slice(0, bytes);
        if (order === 6) {
          // Keep the random initial 64-bit entries below 2^53 so every entry is readable.
          for (let i = 0; i < bytes; i += 8) {
            block[i] = 0;
            block[i + 1] = block[i + 1]! & 0x1f;
          }
        }
        const bits = refcountBits(order);
        const entries = (bytes * 8) / bits;
        // Reference model: decode each entry from the bits directly, LSB first within a byte
        // for sub-byte widths and big-endian otherwise (docs/interop/qcow2.txt).
        const model: number[] = [];
        for (let i = 0; i < entries; i++) {
          let v = 0;
          if (bits < 8) {
            const bit0 = i * bits;
            for (let b = bits - 1; b >= 0; b--) v = v * 2 + ((block[(bit0 + b) >> 3]! >> ((bit0 + b) & 7)) & 1);
          } else {
            for (let k = 0; k < bits / 8; k++) v = v * 256 + block[(i * bits) / 8 + k]!;
          }
          model.push(v);
        }
        expect(decodeRefcountBlock(block, order)).toEqual(model);
        for (const [at, value] of ops) {
          const index = at % entries;
          setRefcount(block, index, order, value);
          model[index] = value;
          let mismatch = -1;
          for (let i = 0; i < entries && mismatch < 0; i++) if (getRefcount(block, i, order) !== model[i]) mismatch = i;
          expect(mismatch).toBe(-1);
        }
        expect(encodeRefcountBlock(model, order)).toEqual(block);
      }),
      { numRuns: 300 },
    );
  });

  it('packs sub-byte refcounts from the least significant bit', () => {
    const b = new Uint8Array(2);
    setRefcount(b, 0, 0, 1);
    expect(b[0]).toBe(0x01);
    setRefcount(b, 1, 0, 1);
    setRefcount(b, 15, 0, 1);
    expect([...b]).toEqual([0x03, 0x80]);
    const c = new Uint8Array(1);
    setRefcount(c, 1, 1, 3);
    expect(c[0]).toBe(0x0c);
    const d = new Uint8Array(1);
    setRefcount(d, 0, 2, 0xa);
    setRefcount(d, 1, 2, 0x5);
    expect(d[0]).toBe(0x5a);
    expect(getRefcount(Uint8Array.of(0x12, 0x34), 0, 4)).toBe(0x1234);
    expect(getRefcount(Uint8Array.of(0xff, 0xff, 0xff, 0xfe), 0, 5)).toBe(0xffff_fffe);
    expect(getRefcount(Uint8Array.of(0, 0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), 0, 6)).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('refuses values above the width and above 2^53, and out-of-range indexes', () => {
    for (let order = 0; order <= 6; order++) {
      const block = new Uint8Array(8);
      expect(codeOf(() => setRefcount(block, 0, order, refcountMax(order) + 1))).toBe('INVALID_ARGUMENT');
      expect(codeOf(() => setRefcount(block, 0, order, -1))).toBe('INVALID_ARGUMENT');
      expect(codeOf(() => setRefcount(block, 0, order, 0.5))).toBe('INVALID_ARGUMENT');
      expect(codeOf(() => getRefcount(block, 64 >> order, order))).toBe('INVALID_ARGUMENT');
      expect(codeOf(() => getRefcount(block, -1, order))).toBe('INVALID_ARGUMENT');
      expect([...block]).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    }
    expect(refcountMax(0)).toBe(1);
    expect(refcountMax(4)).toBe(0xffff);
    expect(refcountMax(5)).toBe(0xffff_ffff);
    expect(codeOf(() => setRefcount(new Uint8Array(8), 0, 6, 2 ** 53))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => getRefcount(Uint8Array.of(0, 0x20, 0, 0, 0, 0, 0, 0), 0, 6))).toBe('CORRUPT');
    expect(codeOf(() => getRefcount(new Uint8Array(8), 0, 7))).toBe('INVALID_ARGUMENT');
  });

  it('locates the refcount of a host cluster as the spec computes it', () => {
    // 64 KiB clusters, 16-bit refcounts: 32768 entries per block.
    expect(refcountBlockEntries(16, 4)).toBe(32768);
    const offset = 5 * 32768 * 65536 + 123 * 65536 + 77;
    expect(refcountTableIndex(offset, 16, 4)).toBe(5);
    expect(refcountBlockIndex(offset, 16, 4)).toBe(123);
    // 512-byte clusters, 64-bit refcounts: 64 entries per block.
    expect(refcountBlockEntries(9, 6)).toBe(64);
    expect(refcountTableIndex(2 ** 50, 9, 6)).toBe(2 ** 35);
    expect(refcountBlockIndex(2 ** 50 + 70 * 512, 9, 6)).toBe(6);
  });
});

describe('refcount table entries', () => {
  it('round-trip both ways', () => {
    assertDecodeEncode(fc.array(refcountTableOffset, { maxLength: 32 }), encodeRefcountTable, (b) =>
      decodeRefcountTable(b, b.byteLength / 8),
    );
    assertEncodeDecode(
      fc
        .array(fc.tuple(fc.nat({ max: 0x1f_ffff }), fc.nat({ max: 0x7f_ffff })), { maxLength: 16 })
        .map((w) => wordsToBytes(w.map(([hi, lo]) => [hi, lo * 512]), 2)),
      (b) => decodeRefcountTable(b, b.byteLength / 8),
      encodeRefcountTable as (v: never) => Uint8Array,
    );
  });

  it('decoding arbitrary and mutated bytes throws only Qcow2Error', () => {
    const run = (b: Uint8Array): unknown => decodeRefcountTable(b, (b.byteLength >> 3) + (b.byteLength & 1), { clusterBits: 12 });
    assertThrowsOnlyQcow2Error(fc.uint8Array({ maxLength: 80 }), run);
    assertThrowsOnlyQcow2Error(mutatedBytes(fc.array(refcountTableOffset, { maxLength: 8 }).map(encodeRefcountTable)), run);
  });

  it('refuses reserved bits 0..8, offsets above 2^53, misaligned offsets and oversized tables', () => {
    expect(() => decodeRefcountTableEntry(viewOf(wordsToBytes([[0, 0x1_0001]], 2)), 0, { tableOffset: 0x20000 })).toThrow(
      /refcount table entry at 0x20000 index 0: reserved bits 0\.\.8/,
    );
    expect(codeOf(() => decodeRefcountTableEntry(viewOf(wordsToBytes([[0x8000_0000, 0]], 2)), 0))).toBe('CORRUPT');
    expect(() => decodeRefcountTableEntry(viewOf(wordsToBytes([[0, 0x1_0200]], 2)), 0, { clusterBits: 16 })).toThrow(
      'refcount table entry index 0: refcount block offset 0x10200 is not cluster-aligned',
    );
    expect(MAX_REFCOUNT_TABLE_ENTRIES).toBe(1024 * 1024);
    expect(codeOf(() => decodeRefcountTable(new Uint8Array(8), MAX_REFCOUNT_TABLE_ENTRIES + 1))).toBe('CORRUPT');
    expect(codeOf(() => decodeRefcountTable(new Uint8Array(8), 2))).toBe('CORRUPT');
    expect(codeOf(() => encodeRefcountTableEntry(viewOf(new Uint8Array(8)), 0, 0x1_0100))).toBe('INVALID_ARGUMENT');
  });
});
