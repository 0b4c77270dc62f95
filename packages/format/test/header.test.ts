import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  AUTOCLEAR_DATA_FILE_RAW,
  decodeHeader,
  encodeHeader,
  INCOMPAT_COMPRESSION,
  INCOMPAT_DATA_FILE,
  INCOMPAT_EXTENDED_L2,
  isQcow2Error,
  l1EntriesForVirtualSize,
  l1TableBytes,
  refcountTableBytes,
  refcountTableEntries,
  validateHeader,
  type Qcow2Error,
  type Qcow2Header,
} from '@qcow2/format';
import {
  assertDecodeEncode,
  assertEncodeDecode,
  assertThrowsOnlyQcow2Error,
  hexOf,
  mutatedBytes,
} from '@qcow2/test-utils';
import { anyHeader, headerLikeBytes } from './header-arbitraries.js';

/** A v3 header like the one `qemu-img create -f qcow2 x 1G` writes. */
function qemuLike(overrides: Partial<Qcow2Header> = {}): Qcow2Header {
  return {
    version: 3,
    backingFileOffset: 0,
    backingFileSize: 0,
    clusterBits: 16,
    size: 1 << 30,
    cryptMethod: 0,
    l1Size: 2,
    l1TableOffset: 0x30000,
    refcountTableOffset: 0x10000,
    refcountTableClusters: 1,
    nbSnapshots: 0,
    snapshotsOffset: 0,
    incompatibleFeatures: 0n,
    compatibleFeatures: 0n,
    autoclearFeatures: 0n,
    refcountOrder: 4,
    headerLength: 112,
    compressionType: 0,
    trailingBytes: new Uint8Array(7),
    ...overrides,
  };
}

function thrown(run: () => unknown): Qcow2Error {
  try {
    run();
  } catch (e) {
    if (isQcow2Error(e)) return e;
    throw new Error(`not a Qcow2Error: ${String(e)}`);
  }
  throw new Error('did not throw');
}

describe('decodeHeader / encodeHeader laws', () => {
  it('decode(encode(h)) equals h for every structurally valid header', () => {
    assertDecodeEncode(anyHeader(), encodeHeader, decodeHeader, { numRuns: 500 });
  });

  it('encode(decode(bytes)) gives back the header bytes, whatever they are', () => {
    assertEncodeDecode(
      headerLikeBytes().filter((b) => {
        try {
          decodeHeader(b);
          return true;
        } catch {
          return false;
        }
      }),
      decodeHeader,
      encodeHeader,
      { numRuns: 500 },
    );
  });

  it('decoding arbitrary bytes throws only Qcow2Error', () => {
    assertThrowsOnlyQcow2Error(fc.uint8Array({ maxLength: 160 }), decodeHeader, { numRuns: 1000 });
    assertThrowsOnlyQcow2Error(headerLikeBytes(), (b) => validateHeader(decodeHeader(b)), { numRuns: 1000 });
  });

  it('decoding and validating mutated headers throws only Qcow2Error', () => {
    assertThrowsOnlyQcow2Error(
      mutatedBytes(anyHeader().map(encodeHeader)),
      (b) => validateHeader(decodeHeader(b)),
      { numRuns: 2000 },
    );
    assertThrowsOnlyQcow2Error(mutatedBytes(fc.constant(encodeHeader(qemuLike()))), (b) => validateHeader(decodeHeader(b)), {
      numRuns: 2000,
    });
  });
});

describe('decodeHeader: layout', () => {
  it('reads every field at its offset (v3)', () => {
    const bytes = new Uint8Array(120);
    const v = new DataView(bytes.buffer);
    v.setUint32(0, 0x514649fb);
    v.setUint32(4, 3);
    v.setUint32(8, 0x1);
    v.setUint32(12, 0x2); // backing_file_offset = 2^32 + 2
    v.setUint32(16, 7); // backing_file_size
    v.setUint32(20, 12); // cluster_bits
    v.setUint32(28, 0x4000_0000); // size
    v.setUint32(32, 2); // crypt
    v.setUint32(36, 9); // l1_size
    v.setUint32(44, 0x5000); // l1_table_offset
    v.setUint32(52, 0x1000); // refcount_table_offset
    v.setUint32(56, 3); // refcount_table_clusters
    v.setUint32(60, 4); // nb_snapshots
    v.setUint32(68, 0x9000); // snapshots_offset
    v.setUint32(72, 0x8000_0000); // incompatible: bit 63
    v.setUint32(76, 0x11);
    v.setUint32(84, 1); // compatible
    v.setUint32(88, 0xffff_ffff); // autoclear: all
    v.setUint32(92, 0xffff_ffff);
    v.setUint32(96, 6); // refcount_order
    v.setUint32(100, 120); // header_length
    v.setUint8(104, 1); // zstd
    bytes.set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], 105);
    const h = decodeHeader(bytes);
    expect(h).toEqual({
      version: 3,
      backingFileOffset: 2 ** 32 + 2,
      backingFileSize: 7,
      clusterBits: 12,
      size: 0x4000_0000,
      cryptMethod: 2,
      l1Size: 9,
      l1TableOffset: 0x5000,
      refcountTableOffset: 0x1000,
      refcountTableClusters: 3,
      nbSnapshots: 4,
      snapshotsOffset: 0x9000,
      incompatibleFeatures: (1n << 63n) | 0x11n,
      compatibleFeatures: 1n,
      autoclearFeatures: (1n << 64n) - 1n,
      refcountOrder: 6,
      headerLength: 120,
      compressionType: 1,
      trailingBytes: new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]),
    });
    expect(hexOf(encodeHeader(h))).toBe(hexOf(bytes));
  });

  it('a v2 header is 72 bytes with the v3 fields at their defaults, whatever follows', () => {
    const bytes = encodeHeader(qemuLike({ headerLength: 112 }));
    const v2 = bytes.slice();
    new DataView(v2.buffer).setUint32(4, 2);
    const h = decodeHeader(v2);
    expect(h.version).toBe(2);
    expect(h.headerLength).toBe(72);
    expect(h.refcountOrder).toBe(4);
    expect(h.incompatibleFeatures).toBe(0n);
    expect(h.compressionType).toBe(0);
    expect(encodeHeader(h).byteLength).toBe(72);
  });

  it('compression_type is absent (zlib) when header_length is 104', () => {
    const bytes = encodeHeader(qemuLike({ headerLength: 104, trailingBytes: new Uint8Array(0) }));
    expect(bytes.byteLength).toBe(104);
    const longer = new Uint8Array(112);
    longer.set(bytes);
    longer[104] = 1; // past header_length: not a field
    expect(decodeHeader(longer).compressionType).toBe(0);
  });
});

describe('decodeHeader: structural refusals name the field and value', () => {
  const good = encodeHeader(qemuLike());
  const poke = (at: number, value: number): Uint8Array => {
    const b = good.slice();
    new DataView(b.buffer).setUint32(at, value);
    return b;
  };
  it.each([
    ['bad magic', poke(0, 0x514649fc), 'CORRUPT', /magic at 0x0: 0x514649fc/],
    ['version 1', poke(4, 1), 'UNSUPPORTED', /version at 0x4: unsupported qcow2 version 1/],
    ['version 4', poke(4, 4), 'UNSUPPORTED', /version at 0x4: unsupported qcow2 version 4/],
    ['header_length 96', poke(100, 96), 'CORRUPT', /header_length at 0x64: 96 is less than 104/],
    ['header_length 108', poke(100, 108), 'CORRUPT', /header_length at 0x64: 108 is not a multiple of 8/],
    ['header_length past the bytes', poke(100, 120), 'CORRUPT', /header_length at 0x64: 120 exceeds the 112 bytes/],
    ['size above 2^53', poke(24, 0x0020_0000), 'CORRUPT', /size at 0x18: value 0x0020000040000000 exceeds 2\^53/],
    ['l1_table_offset above 2^53', poke(40, 0xffff_ffff), 'CORRUPT', /l1_table_offset at 0x28: value 0xffffffff/],
    ['refcount_table_offset above 2^53', poke(48, 0x0100_0000), 'CORRUPT', /refcount_table_offset at 0x30/],
    ['snapshots_offset above 2^53', poke(64, 0x0100_0000), 'CORRUPT', /snapshots_offset at 0x40/],
    ['backing_file_offset above 2^53', poke(8, 0x0100_0000), 'CORRUPT', /backing_file_offset at 0x8/],
    ['truncated', good.subarray(0, 60), 'CORRUPT', /at least 72 bytes, got 60/],
    ['truncated v3', good.subarray(0, 90), 'CORRUPT', /version 3 header needs at least 104 bytes, got 90/],
  ] as const)('%s', (_name, bytes, code, message) => {
    const e = thrown(() => decodeHeader(bytes));
    expect(e.code).toBe(code);
    expect(e.message).toMatch(message);
  });
});

describe('encodeHeader refuses what it cannot write faithfully', () => {
  it.each([
    ['a v2 header with feature bits', qemuLike({ version: 2, headerLength: 72, trailingBytes: new Uint8Array(0), incompatibleFeatures: 1n })],
    ['header_length 100', qemuLike({ headerLength: 100, trailingBytes: new Uint8Array(0) })],
    ['header_length 116', qemuLike({ headerLength: 116, trailingBytes: new Uint8Array(11) })],
    ['trailingBytes of the wrong length', qemuLike({ trailingBytes: new Uint8Array(3) })],
    ['compression type without its byte', qemuLike({ headerLength: 104, trailingBytes: new Uint8Array(0), compressionType: 1 })],
    ['a mask of 65 bits', qemuLike({ compatibleFeatures: 1n << 64n })],
    ['a negative mask', qemuLike({ autoclearFeatures: -1n })],
    ['size above 2^53', qemuLike({ size: 2 ** 53 + 2 })],
    ['l1_size above 2^32', qemuLike({ l1Size: 2 ** 32 })],
    ['compression type 256', qemuLike({ compressionType: 256 })],
  ])('%s', (_name, header) => {
    expect(thrown(() => encodeHeader(header)).code).toBe('INVALID_ARGUMENT');
  });
});

describe('validateHeader: every qemu refusal, naming the field and value', () => {
  it('accepts what qemu-img writes', () => {
    expect(() => validateHeader(qemuLike())).not.toThrow();
  });

  it.each<[string, Partial<Qcow2Header>, string, RegExp]>([
    ['cluster_bits 8', { clusterBits: 8 }, 'CORRUPT', /cluster_bits at 0x14: 8 is below the minimum 9/],
    ['cluster_bits 22', { clusterBits: 22 }, 'UNSUPPORTED', /cluster_bits at 0x14: 22 is above 21/],
    ['header_length > cluster size', { clusterBits: 9, headerLength: 520, trailingBytes: new Uint8Array(415), l1Size: 1 << 15 }, 'CORRUPT', /header_length at 0x64: 520 exceeds the cluster size 512/],
    ['backing_file_offset past the cluster', { backingFileOffset: 0x10008, backingFileSize: 1 }, 'CORRUPT', /backing_file_offset at 0x8: 0x10008 is past the first cluster/],
    ['backing_file_offset inside the header', { backingFileOffset: 64, backingFileSize: 1 }, 'CORRUPT', /backing_file_offset at 0x8: 0x40 lies inside the header/],
    ['backing_file_size 1024', { backingFileOffset: 0x200, backingFileSize: 1024 }, 'CORRUPT', /backing_file_size at 0x10: 1024 exceeds 1023/],
    ['backing name past the first cluster', { backingFileOffset: 0xfff8, backingFileSize: 9 }, 'CORRUPT', /backing_file_size at 0x10: 9 bytes at 0xfff8 run past the first cluster/],
    ['compression bit without a compression type', { incompatibleFeatures: INCOMPAT_COMPRESSION }, 'CORRUPT', /compression type bit \(3\) is set but compression_type is 0/],
    ['compression type without its bit', { compressionType: 1 }, 'CORRUPT', /compression_type is 1 but the compression type bit \(3\) is not set/],
    ['unknown compression type', { compressionType: 2, incompatibleFeatures: INCOMPAT_COMPRESSION }, 'UNSUPPORTED', /compression_type at 0x68: unknown compression type 2/],
    ['extended L2 with 8 KiB clusters', { clusterBits: 13, incompatibleFeatures: INCOMPAT_EXTENDED_L2, l1Size: 128, l1TableOffset: 0x6000, refcountTableOffset: 0x2000 }, 'CORRUPT', /cluster_bits at 0x14: 13 is below 14, the minimum with extended L2/],
    ['refcount_order 7', { refcountOrder: 7 }, 'CORRUPT', /refcount_order at 0x60: 7 exceeds 6/],
    ['crypt_method 3', { cryptMethod: 3 }, 'UNSUPPORTED', /crypt_method at 0x20: unknown encryption method 3/],
    ['no refcount table', { refcountTableClusters: 0 }, 'CORRUPT', /refcount_table_clusters at 0x38: 0/],
    ['refcount table > 8 MiB', { refcountTableClusters: 129 }, 'CORRUPT', /refcount_table_clusters at 0x38: 129 clusters exceed the 8388608-byte/],
    ['misaligned refcount table', { refcountTableOffset: 0x10200 }, 'CORRUPT', /refcount_table_offset at 0x30: 0x10200 is not cluster-aligned/],
    ['nb_snapshots 65537', { nbSnapshots: 65537 }, 'CORRUPT', /nb_snapshots at 0x3c: 65537 exceeds the limit of 65536/],
    ['misaligned snapshot table', { nbSnapshots: 1, snapshotsOffset: 0x50001 }, 'CORRUPT', /snapshots_offset at 0x40: 0x50001 is not cluster-aligned/],
    ['L1 > 32 MiB', { l1Size: 4 * 1024 * 1024 + 1 }, 'CORRUPT', /l1_size at 0x24: 4194305 entries exceed the 33554432-byte/],
    ['misaligned L1 table', { l1TableOffset: 0x30008 }, 'CORRUPT', /l1_table_offset at 0x28: 0x30008 is not cluster-aligned/],
    ['L1 too small for the size', { l1Size: 1 }, 'CORRUPT', /l1_size at 0x24: 1 entries cannot map size 1073741824, which needs 2/],
    ['a size no L1 can map', { clusterBits: 9, size: 2 ** 53 - 1, l1Size: 1 }, 'UNSUPPORTED', /size at 0x18: .* \(image is too big\)/],
    ['raw data file bit without a data file', { autoclearFeatures: AUTOCLEAR_DATA_FILE_RAW }, 'CORRUPT', /autoclear_features at 0x58: the raw external data bit/],
    ['raw data file with a backing file', { autoclearFeatures: AUTOCLEAR_DATA_FILE_RAW, incompatibleFeatures: INCOMPAT_DATA_FILE, backingFileOffset: 0x200, backingFileSize: 3 }, 'CORRUPT', /raw external data bit \(1\) is set on an image with a backing file/],
  ])('%s', (_name, overrides, code, message) => {
    const e = thrown(() => validateHeader(qemuLike(overrides)));
    expect(e.code).toBe(code);
    expect(e.message).toMatch(message);
  });

  it('in check mode, accepts a missing refcount table and ignores the snapshot table limits', () => {
    expect(() => validateHeader(qemuLike({ refcountTableClusters: 0 }), { check: true })).not.toThrow();
    expect(() => validateHeader(qemuLike({ nbSnapshots: 70000, snapshotsOffset: 3 }), { check: true })).not.toThrow();
  });

  it('accepts the limits themselves', () => {
    expect(() =>
      validateHeader(
        qemuLike({
          refcountTableClusters: 128,
          nbSnapshots: 65536,
          l1Size: 4 * 1024 * 1024,
          backingFileOffset: 0x10000 - 1023,
          backingFileSize: 1023,
          refcountOrder: 6,
        }),
      ),
    ).not.toThrow();
    expect(() => validateHeader(qemuLike({ clusterBits: 14, incompatibleFeatures: INCOMPAT_EXTENDED_L2, l1Size: 256, refcountTableOffset: 0x4000, l1TableOffset: 0x8000 }))).not.toThrow();
  });
});

describe('sizes derived from a header', () => {
  it('l1EntriesForVirtualSize is qemu size_to_l1', () => {
    // 64 KiB clusters: one L2 table maps 8192 clusters = 512 MiB.
    expect(l1EntriesForVirtualSize(0, 16)).toBe(0);
    expect(l1EntriesForVirtualSize(1, 16)).toBe(1);
    expect(l1EntriesForVirtualSize(512 * 2 ** 20, 16)).toBe(1);
    expect(l1EntriesForVirtualSize(512 * 2 ** 20 + 1, 16)).toBe(2);
    // Extended L2 entries are 16 bytes: half the coverage.
    expect(l1EntriesForVirtualSize(512 * 2 ** 20, 16, true)).toBe(2);
    // 512-byte clusters: 64 entries × 512 B = 32 KiB per L1 entry.
    expect(l1EntriesForVirtualSize(2 ** 53 - 1, 9)).toBe(2 ** 38);
    fc.assert(
      fc.property(fc.maxSafeNat(), fc.integer({ min: 9, max: 21 }), fc.boolean(), (size, bits, ext) => {
        const per = 2 ** (2 * bits - (ext ? 4 : 3));
        const n = l1EntriesForVirtualSize(size, bits, ext);
        expect(n * per).toBeGreaterThanOrEqual(size);
        expect(Math.max(0, n - 1) * per).toBeLessThan(Math.max(1, size));
      }),
    );
  });

  it('table byte sizes', () => {
    const h = qemuLike({ l1Size: 10, refcountTableClusters: 3 });
    expect(l1TableBytes(h)).toBe(80);
    expect(refcountTableBytes(h)).toBe(3 * 65536);
    expect(refcountTableEntries(h)).toBe(3 * 8192);
  });
});
