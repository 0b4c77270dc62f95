import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { assertDecodeEncode, assertEncodeDecode, assertThrowsOnlyQcow2Error, mutatedBytes } from '@qcow2/test-utils';
import {
  bitmapDirectoryEntrySize,
  decodeBitmapDirectory,
  decodeBitmapTable,
  decodeBitmapTableEntry,
  encodeBitmapDirectory,
  encodeBitmapDirectoryEntry,
  encodeBitmapTable,
  isQcow2Error,
  MAX_BITMAP_DIRECTORY_SIZE,
  viewOf,
  type BitmapDirectoryEntry,
} from '@qcow2/format';
import { bitmapDirectoryEntry, bitmapTableEntry, wordsToBytes } from './arbitraries.js';

function codeOf(run: () => unknown): string | undefined {
  try {
    run();
    return undefined;
  } catch (e) {
    if (!isQcow2Error(e)) throw e;
    return e.code;
  }
}

const directory = fc.array(bitmapDirectoryEntry, { maxLength: 5 }).filter((d) => d.every((e) => new TextEncoder().encode(e.name).length <= 1023));
const withCount = (entries: BitmapDirectoryEntry[]): Uint8Array & { count: number } =>
  Object.assign(encodeBitmapDirectory(entries), { count: entries.length });

function rawEntry(fields: { flags?: number; type?: number; granularity?: number; name?: number[]; extra?: number[]; tableSize?: number; tableOffset?: number; pad?: number }): Uint8Array {
  const name = fields.name ?? [0x62, 0x6d];
  const extra = fields.extra ?? [];
  const len = 24 + extra.length + name.length;
  const bytes = new Uint8Array(Math.ceil(len / 8) * 8);
  const v = viewOf(bytes);
  v.setUint32(4, fields.tableOffset ?? 0x50000);
  v.setUint32(8, fields.tableSize ?? 1);
  v.setUint32(12, fields.flags ?? 0x2);
  v.setUint8(16, fields.type ?? 1);
  v.setUint8(17, fields.granularity ?? 16);
  v.setUint16(18, name.length);
  v.setUint32(20, extra.length);
  bytes.set(extra, 24);
  bytes.set(name, 24 + extra.length);
  if (fields.pad !== undefined && len < bytes.length) bytes[len] = fields.pad;
  return bytes;
}

describe('bitmap directory', () => {
  it('decode(encode(directory)) is the directory', () => {
    assertDecodeEncode(directory, withCount, (b) => decodeBitmapDirectory(b, (b as ReturnType<typeof withCount>).count));
  });

  it('encode(decode(bytes)) is the bytes for valid directories', () => {
    assertEncodeDecode(
      directory.map(withCount),
      (b) => decodeBitmapDirectory(b, (b as ReturnType<typeof withCount>).count),
      encodeBitmapDirectory as (v: never) => Uint8Array,
    );
  });

  it('decoding arbitrary and mutated bytes throws only Qcow2Error', () => {
    assertThrowsOnlyQcow2Error(fc.uint8Array({ maxLength: 120 }), (b) => decodeBitmapDirectory(b, b[3] ?? 0));
    assertThrowsOnlyQcow2Error(
      mutatedBytes(directory.filter((d) => d.length > 0).map(encodeBitmapDirectory)),
      (b) => decodeBitmapDirectory(b, 1 + (b.byteLength % 2), { clusterBits: 16, tableOffset: 0x90000 }),
      { numRuns: 1000 },
    );
  });

  it('reads the fields from the spec byte positions', () => {
    const bytes = rawEntry({ flags: 0x7, granularity: 20, extra: [1, 2, 3] });
    expect(decodeBitmapDirectory(bytes, 1)).toEqual([
      {
        bitmapTableOffset: 0x50000,
        bitmapTableSize: 1,
        inUse: true,
        auto: true,
        extraDataCompatible: true,
        type: 1,
        granularityBits: 20,
        name: 'bm',
        extraData: Uint8Array.of(1, 2, 3),
      },
    ]);
    expect(bitmapDirectoryEntrySize(decodeBitmapDirectory(bytes, 1)[0]!)).toBe(32);
  });

  it('keeps names that are not UTF-8 byte for byte', () => {
    const bytes = rawEntry({ name: [0x62, 0x80, 0x6d] });
    const [entry] = decodeBitmapDirectory(bytes, 1);
    expect(entry!.name).toBe('b\ufffdm');
    expect(entry!.nameBytes).toEqual(Uint8Array.of(0x62, 0x80, 0x6d));
    expect(encodeBitmapDirectory([entry!])).toEqual(bytes);
  });

  it("enforces the spec's and qemu's limits", () => {
    expect(codeOf(() => decodeBitmapDirectory(rawEntry({ flags: 0x8 }), 1))).toBe('CORRUPT');
    expect(codeOf(() => decodeBitmapDirectory(rawEntry({ granularity: 8 }), 1))).toBe('UNSUPPORTED');
    expect(codeOf(() => decodeBitmapDirectory(rawEntry({ granularity: 32 }), 1))).toBe('UNSUPPORTED');
    expect(codeOf(() => decodeBitmapDirectory(rawEntry({ granularity: 64 }), 1))).toBe('CORRUPT');
    expect(codeOf(() => decodeBitmapDirectory(rawEntry({ name: [] }), 1))).toBe('CORRUPT');
    expect(codeOf(() => decodeBitmapDirectory(rawEntry({ name: new Array<number>(1024).fill(0x61) }), 1))).toBe('CORRUPT');
    expect(decodeBitmapDirectory(rawEntry({ name: new Array<number>(1023).fill(0x61) }), 1)[0]!.name).toHaveLength(1023);
    expect(codeOf(() => decodeBitmapDirectory(rawEntry({ tableSize: 0 }), 1))).toBe('CORRUPT');
    expect(codeOf(() => decodeBitmapDirectory(rawEntry({ tableOffset: 0 }), 1))).toBe('CORRUPT');
    expect(codeOf(() => decodeBitmapDirectory(rawEntry({ tableOffset: 0x50200 }), 1, { clusterBits: 16 }))).toBe('CORRUPT');
    expect(() => decodeBitmapDirectory(rawEntry({ pad: 1 }), 1, { tableOffset: 0x90000 })).toThrow(
      /bitmap directory entry at 0x90000: padding byte/,
    );
    // The directory must be exactly filled.
    const one = rawEntry({});
    const longer = new Uint8Array(one.byteLength + 8);
    longer.set(one);
    expect(codeOf(() => decodeBitmapDirectory(longer, 1))).toBe('CORRUPT');
    expect(codeOf(() => decodeBitmapDirectory(one, 2))).toBe('CORRUPT');
    expect(codeOf(() => decodeBitmapDirectory(one, 65536))).toBe('CORRUPT');
    expect(MAX_BITMAP_DIRECTORY_SIZE).toBe(1024 * 65535);
  });

  it('refuses to encode entries the decoder would refuse', () => {
    const base = decodeBitmapDirectory(rawEntry({}), 1)[0]!;
    for (const bad of [
      { name: '' },
      { name: 'x'.repeat(1024) },
      { granularityBits: 32 },
      { bitmapTableSize: 0 },
      { bitmapTableOffset: 0 },
      { bitmapTableOffset: 0x50100 },
      { type: 256 },
    ] as Partial<BitmapDirectoryEntry>[]) {
      expect(codeOf(() => encodeBitmapDirectoryEntry({ ...base, ...bad }))).toBe('INVALID_ARGUMENT');
    }
  });
});

describe('bitmap table', () => {
  it('round-trips both ways', () => {
    assertDecodeEncode(fc.array(bitmapTableEntry, { maxLength: 16 }), encodeBitmapTable, (b) => decodeBitmapTable(b, b.byteLength / 8));
    assertEncodeDecode(
      fc
        .array(fc.oneof(fc.constant([0, 0]), fc.constant([0, 1]), fc.tuple(fc.nat({ max: 0x1f_ffff }), fc.integer({ min: 1, max: 0x7f_ffff }).map((n) => n * 512))), { maxLength: 16 })
        .map((w) => wordsToBytes(w, 2)),
      (b) => decodeBitmapTable(b, b.byteLength / 8),
      encodeBitmapTable as (v: never) => Uint8Array,
    );
  });

  it('decoding arbitrary and mutated bytes throws only Qcow2Error', () => {
    const run = (b: Uint8Array): unknown => decodeBitmapTable(b, (b.byteLength >> 3) + (b.byteLength & 1), { clusterBits: 16 });
    assertThrowsOnlyQcow2Error(fc.uint8Array({ maxLength: 80 }), run);
    assertThrowsOnlyQcow2Error(mutatedBytes(fc.array(bitmapTableEntry, { maxLength: 8 }).map(encodeBitmapTable)), run);
  });

  it('bit 0 means all ones only without an offset; reserved bits are refused', () => {
    const e = (hi: number, lo: number): DataView => viewOf(wordsToBytes([[hi, lo]], 2));
    expect(decodeBitmapTableEntry(e(0, 0), 0)).toEqual({ kind: 'zeros' });
    expect(decodeBitmapTableEntry(e(0, 1), 0)).toEqual({ kind: 'ones' });
    expect(decodeBitmapTableEntry(e(1, 0x200), 0)).toEqual({ kind: 'data', offset: 2 ** 32 + 0x200 });
    expect(codeOf(() => decodeBitmapTableEntry(e(0, 0x201), 0))).toBe('CORRUPT');
    expect(codeOf(() => decodeBitmapTableEntry(e(0, 0x2), 0))).toBe('CORRUPT');
    expect(codeOf(() => decodeBitmapTableEntry(e(0x0100_0000, 0), 0))).toBe('CORRUPT');
    expect(codeOf(() => decodeBitmapTableEntry(e(0x0020_0000, 0), 0))).toBe('CORRUPT');
    expect(() => decodeBitmapTableEntry(e(0, 0x1_0200), 0, { clusterBits: 16, tableOffset: 0x60000 })).toThrow(
      'bitmap table entry at 0x60000 index 0: offset 0x10200 is not cluster-aligned',
    );
    expect(codeOf(() => decodeBitmapTable(new Uint8Array(8), 0x800_0001))).toBe('CORRUPT');
  });
});
