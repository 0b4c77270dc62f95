import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeHeaderCluster,
  encodeHeaderCluster,
  encodeHeaderExtensions,
  encodeString,
  INCOMPAT_EXTENDED_L2,
  isQcow2Error,
  layoutHeaderCluster,
  QEMU_FEATURE_NAME_TABLE,
  readClusterSize,
  type HeaderCluster,
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
import { validHeaderCluster } from './header-arbitraries.js';

function header(overrides: Partial<Qcow2Header> = {}): Qcow2Header {
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

/** Mutations of valid clusters, kept small so the fuzzing stays fast. */
const smallValidClusters = (): fc.Arbitrary<HeaderCluster> => validHeaderCluster().filter((c) => c.header.clusterBits <= 12);

describe('header cluster laws', () => {
  it('decode(encode(c)) equals c for every valid cluster', () => {
    assertDecodeEncode(validHeaderCluster(), encodeHeaderCluster, (b) => decodeHeaderCluster(b), { numRuns: 300 });
  });

  it('encode(decode(bytes)) equals the bytes for every valid cluster', () => {
    // Up to 64 KiB clusters here: the law compares hex strings, slow for 2 MiB (decode∘encode above covers those).
    const upTo64k = validHeaderCluster().filter((c) => c.header.clusterBits <= 16);
    assertEncodeDecode(upTo64k.map(encodeHeaderCluster), (b) => decodeHeaderCluster(b), encodeHeaderCluster, {
      numRuns: 300,
    });
  });

  it('decoding arbitrary and mutated clusters throws only Qcow2Error', () => {
    assertThrowsOnlyQcow2Error(fc.uint8Array({ maxLength: 600 }), (b) => decodeHeaderCluster(b), { numRuns: 500 });
    assertThrowsOnlyQcow2Error(mutatedBytes(smallValidClusters().map(encodeHeaderCluster)), (b) => decodeHeaderCluster(b), {
      numRuns: 1000,
    });
  });

  it('whatever decodes can be rewritten, and the rewrite decodes to the same cluster', () => {
    fc.assert(
      fc.property(mutatedBytes(smallValidClusters().map(encodeHeaderCluster)), (bytes) => {
        let decoded: HeaderCluster;
        try {
          decoded = decodeHeaderCluster(bytes);
        } catch {
          return;
        }
        // qemu's qcow2_update_header rewrites the area as header, extensions, end marker, name,
        // and fails with ENOSPC when that does not fit: a header read without an end marker
        // (the area ended at backing_file_offset) can be 8 bytes too long to rewrite.
        const needed =
          decoded.header.headerLength +
          encodeHeaderExtensions(decoded.extensions).byteLength +
          (decoded.header.backingFileOffset === 0 ? 0 : decoded.header.backingFileSize);
        if (needed > 2 ** decoded.header.clusterBits) {
          expect(() => encodeHeaderCluster(decoded)).toThrow(/need \d+ bytes, the cluster has/);
          return;
        }
        expect(decodeHeaderCluster(encodeHeaderCluster(decoded))).toEqual(layoutHeaderCluster(decoded));
      }),
      { numRuns: 1000 },
    );
  });
});

describe('decodeHeaderCluster', () => {
  const nameBytes = encodeString('base.qcow2');

  it('reads an extension area that ends at backing_file_offset without an end marker, and refuses to rewrite it when the marker does not fit (qemu: ENOSPC)', () => {
    // v2, 512-byte clusters: extensions fill 72..504, the 1-byte name sits at 504 (found by fast-check).
    const bytes = new Uint8Array(512);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, 0x514649fb);
    view.setUint32(4, 2);
    view.setBigUint64(8, 504n); // backing_file_offset (high half) + backing_file_size below
    view.setUint32(8, 0);
    view.setUint32(12, 504);
    view.setUint32(16, 1);
    view.setUint32(20, 9);
    view.setBigUint64(24, 32768n); // size: one L2 table of 64 entries maps it
    view.setUint32(36, 1); // l1_size
    view.setBigUint64(40, 1536n); // l1_table_offset
    view.setBigUint64(48, 512n); // refcount_table_offset
    view.setUint32(56, 1); // refcount_table_clusters
    // One unknown extension of 424 bytes of data: 8 + 424 = 432 bytes, 72..504.
    view.setUint32(72, 0x12345678);
    view.setUint32(76, 424);
    bytes[504] = 0x62; // 'b'
    const decoded = decodeHeaderCluster(bytes);
    expect(decoded.backingFileName).toBe('b');
    expect(decoded.extensions).toHaveLength(1);
    expect(() => encodeHeaderCluster(decoded)).toThrow(/need 513 bytes, the cluster has 512/);
  });

  it('reads the backing file name from backing_file_offset/size', () => {
    const bytes = encodeHeaderCluster({
      header: header(),
      extensions: [{ kind: 'backing-format', name: 'qcow2' }],
      backingFileName: 'base.qcow2',
    });
    // 112-byte header, 8 + 8 for the format extension, 8 for the end marker.
    const view = new DataView(bytes.buffer);
    expect(view.getUint32(12)).toBe(136);
    expect(view.getUint32(16)).toBe(nameBytes.length);
    expect(hexOf(bytes.subarray(136, 136 + nameBytes.length))).toBe(hexOf(nameBytes));
    expect(bytes.subarray(136 + nameBytes.length).every((b) => b === 0)).toBe(true);
    const decoded = decodeHeaderCluster(bytes);
    expect(decoded.backingFileName).toBe('base.qcow2');
    expect(decoded.header.backingFileOffset).toBe(136);
  });

  it('reads a name stored anywhere in the cluster, and rewrites it where qemu would', () => {
    const bytes = encodeHeaderCluster({ header: header(), extensions: [] });
    const view = new DataView(bytes.buffer);
    view.setUint32(12, 0x8000);
    view.setUint32(16, nameBytes.length);
    bytes.set(nameBytes, 0x8000);
    const decoded = decodeHeaderCluster(bytes);
    expect(decoded.backingFileName).toBe('base.qcow2');
    const again = decodeHeaderCluster(encodeHeaderCluster(decoded));
    expect(again.header.backingFileOffset).toBe(120);
    expect(again.backingFileName).toBe('base.qcow2');
  });

  it('keeps a backing file name that is not UTF-8', () => {
    const raw = new Uint8Array([0x66, 0xe9, 0x2e, 0x69, 0x6d, 0x67]); // Latin-1 "fé.img"
    const cluster = layoutHeaderCluster({ header: header(), extensions: [], backingFileName: 'f\ufffd.img', backingFileNameBytes: raw });
    const bytes = encodeHeaderCluster(cluster);
    expect(decodeHeaderCluster(bytes)).toEqual(cluster);
  });

  it('names unknown incompatible features from the feature table even before the other checks', () => {
    const bytes = encodeHeaderCluster({
      header: header({ incompatibleFeatures: 1n << 20n, refcountOrder: 9 }),
      extensions: [{ kind: 'feature-names', entries: [...QEMU_FEATURE_NAME_TABLE, { type: 0, bit: 20, name: 'future thing' }] }],
    });
    const e = thrown(() => decodeHeaderCluster(bytes));
    expect(e.code).toBe('UNSUPPORTED');
    expect(e.message).toMatch(/Unsupported qcow2 feature\(s\): future thing$/);
    // With the bit declared supported, the next check speaks.
    expect(thrown(() => decodeHeaderCluster(bytes, { supportedIncompatibleFeatures: ~0n })).message).toMatch(/refcount_order/);
  });

  it('names features from a table that precedes a malformed extension, as qemu does', () => {
    const bytes = encodeHeaderCluster({
      header: header({ incompatibleFeatures: 1n << 20n }),
      extensions: [{ kind: 'feature-names', entries: [{ type: 0, bit: 20, name: 'future thing' }] }],
    });
    // Append a bitmaps extension with a bad length after the table, over the end marker.
    const at = 112 + 8 + 48;
    new DataView(bytes.buffer).setUint32(at, 0x23852875);
    new DataView(bytes.buffer).setUint32(at + 4, 3);
    expect(thrown(() => decodeHeaderCluster(bytes)).message).toMatch(/: future thing$/);
    expect(thrown(() => decodeHeaderCluster(bytes, { supportedIncompatibleFeatures: ~0n })).message).toMatch(/\(bitmaps\): length 3, expected 24/);
  });

  it('bounds the extension area by backing_file_offset', () => {
    const bytes = encodeHeaderCluster({
      header: header(),
      extensions: [{ kind: 'unknown', magic: 7, data: new Uint8Array(16) }],
      backingFileName: 'b',
    });
    // Move the name to before the end of the extension: the extension now overflows the area.
    new DataView(bytes.buffer).setUint32(12, 128);
    expect(thrown(() => decodeHeaderCluster(bytes)).message).toMatch(/header extension 0x00000007 at 0x70: length 16 runs past the end of the area at 0x80/);
  });

  it.each<[string, (b: Uint8Array, v: DataView) => void, RegExp]>([
    ['header_length > cluster size', (_b, v) => (v.setUint32(20, 9), v.setUint32(100, 520)), /header_length at 0x64: 520 exceeds the cluster size 512/],
    ['extended L2 with 8 KiB clusters', (_b, v) => (v.setUint32(20, 13), v.setUint32(76, Number(INCOMPAT_EXTENDED_L2))), /13 is below 14/],
    ['a short cluster', () => {}, /needs the whole first cluster \(65536 bytes\), got 4096/],
  ])('refuses %s', (name, poke, re) => {
    const full = encodeHeaderCluster({ header: header(), extensions: [] });
    const bytes = name === 'a short cluster' ? full.slice(0, 4096) : full;
    poke(bytes, new DataView(bytes.buffer));
    expect(thrown(() => decodeHeaderCluster(bytes)).message).toMatch(re);
  });
});

describe('encodeHeaderCluster', () => {
  it('refuses contents that do not fit in the cluster', () => {
    const e = thrown(() =>
      encodeHeaderCluster({ header: header({ clusterBits: 9, l1Size: 1 << 15 }), extensions: [{ kind: 'feature-names', entries: [...QEMU_FEATURE_NAME_TABLE] }], backingFileName: 'x'.repeat(100) }),
    );
    expect(e.code).toBe('INVALID_ARGUMENT');
    expect(e.message).toMatch(/need 612 bytes, the cluster has 512/);
  });

  it('refuses a backing file name over 1023 bytes and a bad cluster_bits', () => {
    expect(thrown(() => encodeHeaderCluster({ header: header(), extensions: [], backingFileName: 'x'.repeat(1024) })).code).toBe('INVALID_ARGUMENT');
    expect(thrown(() => encodeHeaderCluster({ header: header({ clusterBits: 22 }), extensions: [] })).code).toBe('INVALID_ARGUMENT');
  });

  it('writes backing_file_offset and size 0 without a backing file', () => {
    const bytes = encodeHeaderCluster({ header: header({ backingFileOffset: 0x300, backingFileSize: 5 }), extensions: [] });
    expect(decodeHeaderCluster(bytes).header).toMatchObject({ backingFileOffset: 0, backingFileSize: 0 });
  });
});

describe('readClusterSize', () => {
  it('reads the cluster size from the first 24 bytes', () => {
    const bytes = encodeHeaderCluster({ header: header({ clusterBits: 12, l1Size: 128, l1TableOffset: 0x3000, refcountTableOffset: 0x1000 }), extensions: [] });
    expect(readClusterSize(bytes.subarray(0, 24))).toBe(4096);
  });

  it.each([
    [new Uint8Array(23), /at least 24 bytes/],
    [new Uint8Array(24), /magic at 0x0/],
  ])('refuses %#', (bytes, re) => {
    expect(thrown(() => readClusterSize(bytes)).message).toMatch(re);
  });

  it('throws only Qcow2Error', () => {
    assertThrowsOnlyQcow2Error(mutatedBytes(fc.constant(encodeHeaderCluster({ header: header(), extensions: [] }).subarray(0, 32))), readClusterSize);
  });
});
