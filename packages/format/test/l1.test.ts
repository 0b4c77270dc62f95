import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  assertDecodeEncode,
  assertEncodeDecode,
  assertThrowsOnlyQcow2Error,
  mutatedBytes,
} from '@qcow2/test-utils';
import {
  decodeL1Entry,
  decodeL1Table,
  encodeL1Entry,
  encodeL1Table,
  isQcow2Error,
  l1Copied,
  l1L2Offset,
  l1L2OffsetAt,
  MAX_L1_ENTRIES,
  viewOf,
} from '@qcow2/format';
import { clusterBits, l1Entry, l1Words, wordsToBytes } from './arbitraries.js';

function codeOf(run: () => unknown): string | undefined {
  try {
    run();
    return undefined;
  } catch (e) {
    if (!isQcow2Error(e)) throw e;
    return e.code;
  }
}

describe('L1 entries', () => {
  it('decode(encode(table)) is the table', () => {
    assertDecodeEncode(
      fc.array(l1Entry(), { maxLength: 32 }),
      encodeL1Table,
      (bytes) => decodeL1Table(bytes, bytes.byteLength / 8),
    );
  });

  it('encode(decode(bytes)) is the bytes, for valid bytes built from the spec layout', () => {
    const valid = clusterBits.chain((bits) =>
      fc.array(l1Words(bits), { maxLength: 32 }).map((w) => ({ bits, bytes: wordsToBytes(w, 2) })),
    );
    fc.assert(
      fc.property(valid, ({ bits, bytes }) => {
        const entries = decodeL1Table(bytes, bytes.byteLength / 8, { clusterBits: bits });
        expect(encodeL1Table(entries)).toEqual(bytes);
      }),
    );
    assertEncodeDecode(
      fc.array(l1Words(), { maxLength: 8 }).map((w) => wordsToBytes(w, 2)),
      (bytes) => decodeL1Table(bytes, bytes.byteLength / 8),
      encodeL1Table as (v: never) => Uint8Array,
    );
  });

  it('decoding arbitrary and mutated bytes throws only Qcow2Error', () => {
    const run = (bytes: Uint8Array): unknown =>
      decodeL1Table(bytes, Math.floor(bytes.byteLength / 8) + (bytes.byteLength % 3), { clusterBits: 16, tableOffset: 0x30000 });
    assertThrowsOnlyQcow2Error(fc.uint8Array({ maxLength: 80 }), run);
    assertThrowsOnlyQcow2Error(mutatedBytes(fc.array(l1Words(16), { maxLength: 8 }).map((w) => wordsToBytes(w, 2))), run);
  });

  it('reads the fields from the spec bit positions', () => {
    // COPIED | offset 0x12_3456_7800_0000 >> ... : hi 0x8012_3456, lo 0x789a_be00
    const bytes = Uint8Array.of(0x80, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbe, 0x00);
    expect(decodeL1Entry(viewOf(bytes), 0)).toEqual({ l2Offset: 0x12_3456_789a_be00, copied: true });
    expect(l1L2Offset(0x8012_3456, 0x789a_beff)).toBe(0x12_3456_789a_be00);
    expect(l1L2OffsetAt(viewOf(bytes), 0)).toBe(0x12_3456_789a_be00);
    expect(l1Copied(0x8000_0000)).toBe(true);
    expect(l1Copied(0x7fff_ffff)).toBe(false);
  });

  it('refuses reserved bits, offsets above 2^53 and misaligned offsets, naming the entry', () => {
    const entry = (hi: number, lo: number): DataView => viewOf(wordsToBytes([[hi, lo]], 2));
    for (const [hi, lo] of [
      [0x0100_0000, 0],
      [0x4000_0000, 0],
      [0, 0x1],
      [0, 0x100],
    ] as const) {
      expect(codeOf(() => decodeL1Entry(entry(hi, lo), 0))).toBe('CORRUPT');
    }
    expect(() => decodeL1Entry(entry(0x0020_0000, 0), 0, { tableOffset: 0x30000 })).toThrow(
      /L1 entry at 0x30000 index 0: .*exceeds 2\^53/,
    );
    expect(() => l1L2Offset(0x0080_0000, 0)).toThrow(/exceeds 2\^53/);
    expect(() => decodeL1Entry(entry(0, 0x1_0200), 0, { clusterBits: 16, tableOffset: 0x30000 })).toThrow(
      'L1 entry at 0x30000 index 0: L2 offset 0x10200 is not cluster-aligned',
    );
    expect(decodeL1Entry(entry(0, 0x1_0200), 0, { clusterBits: 9 }).l2Offset).toBe(0x1_0200);
  });

  it('checks the count against qemu\'s 32 MiB limit and the bytes before allocating', () => {
    expect(MAX_L1_ENTRIES).toBe(4 * 1024 * 1024);
    expect(codeOf(() => decodeL1Table(new Uint8Array(16), MAX_L1_ENTRIES + 1))).toBe('CORRUPT');
    expect(codeOf(() => decodeL1Table(new Uint8Array(16), 3))).toBe('CORRUPT');
    expect(codeOf(() => decodeL1Table(new Uint8Array(16), -1))).toBe('INVALID_ARGUMENT');
  });

  it('refuses to encode what does not fit', () => {
    const view = viewOf(new Uint8Array(8));
    expect(codeOf(() => encodeL1Entry(view, 0, { l2Offset: 0x201, copied: false }))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => encodeL1Entry(view, 0, { l2Offset: 2 ** 53, copied: false }))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => encodeL1Entry(view, 1, { l2Offset: 0, copied: false }))).toBe('INVALID_ARGUMENT');
  });
});
