import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { assertDecodeEncode, assertEncodeDecode, assertThrowsOnlyQcow2Error, mutatedBytes } from '@qcow2/test-utils';
import {
  decodeSnapshotEntry,
  decodeSnapshotTable,
  encodeSnapshotEntry,
  encodeSnapshotTable,
  isQcow2Error,
  SNAPSHOT_NO_ICOUNT,
  snapshotEntrySize,
  snapshotVmStateSize,
  viewOf,
  type SnapshotEntry,
} from '@qcow2/format';
import { snapshotEntry } from './arbitraries.js';

function codeOf(run: () => unknown): string | undefined {
  try {
    run();
    return undefined;
  } catch (e) {
    if (!isQcow2Error(e)) throw e;
    return e.code;
  }
}

const table = fc.array(snapshotEntry, { maxLength: 5 });

/** A hand-built entry, laid out from the spec's byte positions. */
function rawEntry(fields: {
  l1Offset?: number;
  l1Size?: number;
  id?: number[];
  name?: number[];
  extra?: number[];
  extraSize?: number;
}): Uint8Array {
  const id = fields.id ?? [0x31];
  const name = fields.name ?? [0x61, 0x62];
  const extra = fields.extra ?? [];
  const len = 40 + extra.length + id.length + name.length;
  const bytes = new Uint8Array(Math.ceil(len / 8) * 8);
  const v = viewOf(bytes);
  v.setUint32(4, fields.l1Offset ?? 0x30000);
  v.setUint32(8, fields.l1Size ?? 1);
  v.setUint16(12, id.length);
  v.setUint16(14, name.length);
  v.setUint32(16, 1_700_000_000);
  v.setUint32(20, 123_456_789);
  v.setUint32(24, 0x1);
  v.setUint32(28, 0x2);
  v.setUint32(32, 4096);
  v.setUint32(36, fields.extraSize ?? extra.length);
  bytes.set(extra, 40);
  bytes.set(id, 40 + extra.length);
  bytes.set(name, 40 + extra.length + id.length);
  return bytes;
}

describe('snapshot table', () => {
  it('decode(encode(table)) is the table', () => {
    assertDecodeEncode(table, encodeSnapshotTable, (bytes) => {
      // Count entries by walking (the codec is told the count, as the header gives it).
      let count = 0;
      for (let at = 0; at < bytes.byteLength; count++) at = Math.ceil(decodeSnapshotEntry(bytes, at).end / 8) * 8;
      return decodeSnapshotTable(bytes, count);
    });
  });

  it('encode(decode(bytes)) is the bytes for valid tables', () => {
    const valid = table.map((entries) => ({ entries, bytes: encodeSnapshotTable(entries) }));
    assertEncodeDecode(
      valid.map(({ entries, bytes }) => Object.assign(bytes, { count: entries.length })),
      (bytes) => decodeSnapshotTable(bytes, (bytes as Uint8Array & { count: number }).count),
      encodeSnapshotTable as (v: never) => Uint8Array,
    );
  });

  it('decoding arbitrary and mutated bytes throws only Qcow2Error', () => {
    assertThrowsOnlyQcow2Error(fc.uint8Array({ maxLength: 200 }), (b) => decodeSnapshotTable(b, b[0] ?? 0));
    assertThrowsOnlyQcow2Error(
      mutatedBytes(table.filter((t) => t.length > 0).map(encodeSnapshotTable)),
      (b) => decodeSnapshotTable(b, 1 + (b.byteLength % 3), { clusterBits: 16, tableOffset: 0x70000 }),
      { numRuns: 1000 },
    );
  });

  it('reads every field from the spec byte positions', () => {
    const extra = [
      ...[0, 0, 0, 1, 0, 0, 0, 0], // vm_state_size_large = 2^32
      ...[0, 0, 0, 0, 0, 0x10, 0, 0], // disk_size = 1 MiB
      ...[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // icount = -1
      ...[0xde, 0xad], // unknown
    ];
    const bytes = rawEntry({ extra });
    const [entry] = decodeSnapshotTable(bytes, 1);
    expect(entry).toEqual({
      l1TableOffset: 0x30000,
      l1Size: 1,
      id: '1',
      name: 'ab',
      dateSec: 1_700_000_000,
      dateNsec: 123_456_789,
      vmClockNsec: 0x1_0000_0002n,
      vmStateSize: 4096,
      vmStateSizeLarge: 2 ** 32,
      diskSize: 0x10_0000,
      icount: SNAPSHOT_NO_ICOUNT,
      unknownExtraData: Uint8Array.of(0xde, 0xad),
    } satisfies SnapshotEntry);
    expect(snapshotVmStateSize(entry!)).toBe(2 ** 32);
    expect(encodeSnapshotTable([entry!])).toEqual(bytes);
    expect(snapshotEntrySize(entry!)).toBe(bytes.byteLength);
  });

  it('keeps ids and names that are not UTF-8 byte for byte', () => {
    const bytes = rawEntry({ id: [0xff, 0x31], name: [0x61, 0xc3] });
    const [entry] = decodeSnapshotTable(bytes, 1);
    expect(entry!.id).toBe('\ufffd1');
    expect(entry!.idBytes).toEqual(Uint8Array.of(0xff, 0x31));
    expect(entry!.name).toBe('a\ufffd');
    expect(entry!.nameBytes).toEqual(Uint8Array.of(0x61, 0xc3));
    expect(encodeSnapshotTable([entry!])).toEqual(bytes);
    expect(decodeSnapshotTable(rawEntry({}), 1)[0]).not.toHaveProperty('nameBytes');
  });

  it('keeps each known extra field only when extra_data_size covers all its bytes', () => {
    const twelve = rawEntry({ extra: [0, 0, 0, 0, 0, 0, 0, 9, 1, 2, 3, 4] });
    const [e] = decodeSnapshotTable(twelve, 1);
    expect(e!.vmStateSizeLarge).toBe(9);
    expect(e!.diskSize).toBeUndefined();
    expect(e!.icount).toBeUndefined();
    expect([...e!.unknownExtraData]).toEqual([1, 2, 3, 4]);
    expect(snapshotVmStateSize(e!)).toBe(9);
    expect(encodeSnapshotTable([e!])).toEqual(twelve);
    const none = decodeSnapshotTable(rawEntry({}), 1)[0]!;
    expect(none.vmStateSizeLarge).toBeUndefined();
    expect(snapshotVmStateSize(none)).toBe(4096);
  });

  it('reads entries at 8-byte boundaries and needs no padding after the last', () => {
    const a = rawEntry({ name: [0x61] }); // 42 bytes + 6 padding
    const b = rawEntry({ id: [0x32], name: [0x62, 0x63, 0x64] });
    const bytes = new Uint8Array(a.byteLength + 44);
    bytes.set(a);
    bytes.set(b.subarray(0, 44), a.byteLength);
    const entries = decodeSnapshotTable(bytes, 2);
    expect(entries.map((e) => [e.id, e.name])).toEqual([
      ['1', 'a'],
      ['2', 'bcd'],
    ]);
  });

  it("enforces qemu's limits before allocating", () => {
    expect(codeOf(() => decodeSnapshotTable(new Uint8Array(40), 65537))).toBe('CORRUPT');
    expect(codeOf(() => decodeSnapshotTable(new Uint8Array(40), 2))).toBe('CORRUPT');
    expect(codeOf(() => decodeSnapshotTable(rawEntry({ extraSize: 1025 }), 1))).toBe('UNSUPPORTED');
    // extra data, id or name running past the bytes available
    expect(codeOf(() => decodeSnapshotTable(rawEntry({ extraSize: 1000 }), 1))).toBe('CORRUPT');
    const longName = rawEntry({});
    viewOf(longName).setUint16(14, 0xffff);
    expect(codeOf(() => decodeSnapshotTable(longName, 1))).toBe('CORRUPT');
    expect(() => decodeSnapshotTable(rawEntry({ l1Size: 4 * 1024 * 1024 + 1 }), 1, { tableOffset: 0x70000 })).toThrow(
      /snapshot table entry at 0x70000: l1_size 4194305 exceeds/,
    );
    expect(decodeSnapshotTable(rawEntry({ l1Size: 4 * 1024 * 1024 }), 1)[0]!.l1Size).toBe(4 * 1024 * 1024);
    expect(codeOf(() => decodeSnapshotTable(rawEntry({ l1Offset: 0x30200 }), 1, { clusterBits: 16 }))).toBe('CORRUPT');
    expect(codeOf(() => decodeSnapshotTable(rawEntry({ l1Offset: 0x30100 }), 1))).toBe('CORRUPT');
    expect(decodeSnapshotTable(rawEntry({ l1Offset: 0x30200 }), 1, { clusterBits: 9 })[0]!.l1TableOffset).toBe(0x30200);
  });

  it('refuses to encode entries that would not decode back', () => {
    const base: SnapshotEntry = {
      l1TableOffset: 0x30000,
      l1Size: 1,
      id: '1',
      name: 'a',
      dateSec: 0,
      dateNsec: 0,
      vmClockNsec: 0n,
      vmStateSize: 0,
      unknownExtraData: new Uint8Array(0),
    };
    for (const bad of [
      { diskSize: 1 },
      { vmStateSizeLarge: 1, icount: 0n },
      { unknownExtraData: new Uint8Array(8) },
      { vmStateSizeLarge: 1, diskSize: 1, icount: 0n, unknownExtraData: new Uint8Array(1001) },
      { vmClockNsec: -1n },
      { vmClockNsec: 1n << 64n },
      { l1TableOffset: 0x30001 },
      { l1Size: 2 ** 32 },
      { name: 'x'.repeat(65536) },
      { dateSec: -1 },
    ] as Partial<SnapshotEntry>[]) {
      expect(codeOf(() => encodeSnapshotEntry({ ...base, ...bad }))).toBe('INVALID_ARGUMENT');
    }
  });
});
