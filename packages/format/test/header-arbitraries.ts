import fc from 'fast-check';
import {
  AUTOCLEAR_BITMAPS,
  AUTOCLEAR_DATA_FILE_RAW,
  COMPAT_LAZY_REFCOUNTS,
  COMPRESSION_TYPE_ZSTD,
  CRYPT_LUKS,
  decodeByteString,
  encodeString,
  HEADER_EXT_BACKING_FORMAT,
  HEADER_EXT_BITMAPS,
  HEADER_EXT_DATA_FILE,
  HEADER_EXT_ENCRYPTION,
  HEADER_EXT_FEATURE_TABLE,
  INCOMPAT_COMPRESSION,
  INCOMPAT_CORRUPT,
  INCOMPAT_DATA_FILE,
  INCOMPAT_DIRTY,
  INCOMPAT_EXTENDED_L2,
  l1EntriesForVirtualSize,
  layoutHeaderCluster,
  encodeHeaderCluster,
  QEMU_FEATURE_NAME_TABLE,
  QCOW_MAGIC,
  type FeatureNameEntry,
  type HeaderCluster,
  type HeaderExtension,
  type Qcow2Header,
} from '@qcow2/format';

/** Shared fast-check arbitraries for the header, extension and header-cluster tests. */

export const u32 = (): fc.Arbitrary<number> => fc.integer({ min: 0, max: 0xffff_ffff });
export const byte = (): fc.Arbitrary<number> => fc.integer({ min: 0, max: 0xff });
export const mask64 = (): fc.Arbitrary<bigint> => fc.bigInt({ min: 0n, max: (1n << 64n) - 1n });
export const safe = (): fc.Arbitrary<number> =>
  fc.oneof(fc.integer({ min: 0, max: 0xffff_ffff }), fc.maxSafeNat(), fc.constant(Number.MAX_SAFE_INTEGER));

const KNOWN_MAGICS = new Set([
  0,
  HEADER_EXT_BACKING_FORMAT,
  HEADER_EXT_BITMAPS,
  HEADER_EXT_DATA_FILE,
  HEADER_EXT_ENCRYPTION,
  HEADER_EXT_FEATURE_TABLE,
]);

/** Any structurally valid fixed header (not necessarily one qemu would open). */
export function anyHeader(): fc.Arbitrary<Qcow2Header> {
  const common = fc.record({
    backingFileOffset: safe(),
    backingFileSize: u32(),
    clusterBits: u32(),
    size: safe(),
    cryptMethod: u32(),
    l1Size: u32(),
    l1TableOffset: safe(),
    refcountTableOffset: safe(),
    refcountTableClusters: u32(),
    nbSnapshots: u32(),
    snapshotsOffset: safe(),
  });
  const v2 = common.map(
    (c): Qcow2Header => ({
      version: 2,
      ...c,
      incompatibleFeatures: 0n,
      compatibleFeatures: 0n,
      autoclearFeatures: 0n,
      refcountOrder: 4,
      headerLength: 72,
      compressionType: 0,
      trailingBytes: new Uint8Array(0),
    }),
  );
  const v3 = fc
    .record({
      common,
      incompatibleFeatures: mask64(),
      compatibleFeatures: mask64(),
      autoclearFeatures: mask64(),
      refcountOrder: u32(),
      extraWords: fc.integer({ min: 0, max: 6 }),
      compressionType: byte(),
      seed: fc.uint8Array({ minLength: 64, maxLength: 64 }),
    })
    .map(({ common: c, extraWords, compressionType, seed, ...rest }): Qcow2Header => {
      const headerLength = 104 + 8 * extraWords;
      return {
        version: 3,
        ...c,
        ...rest,
        headerLength,
        compressionType: headerLength > 104 ? compressionType : 0,
        trailingBytes: headerLength > 104 ? seed.slice(0, headerLength - 105) : new Uint8Array(0),
      };
    });
  return fc.oneof(v2, v3);
}

/** Random bytes with the magic, a version and (v3) a well-formed header_length: decodable headers. */
export function headerLikeBytes(): fc.Arbitrary<Uint8Array> {
  return fc
    .tuple(fc.constantFrom(2, 3), fc.integer({ min: 0, max: 8 }), fc.uint8Array({ minLength: 200, maxLength: 200 }))
    .map(([version, extraWords, random]) => {
      const bytes = random.slice();
      const view = new DataView(bytes.buffer);
      view.setUint32(0, QCOW_MAGIC);
      view.setUint32(4, version);
      // Keep 64-bit fields within 2^53 most of the time, so decoding gets past them.
      for (const at of [8, 24, 40, 48, 64]) view.setUint8(at, 0), view.setUint8(at + 1, view.getUint8(at + 1) & 0x1f);
      if (version === 3) view.setUint32(100, 104 + 8 * extraWords);
      return bytes.subarray(0, version === 2 ? 72 : 104 + 8 * extraWords);
    });
}

/** A name that round-trips through UTF-8: from a string, or from arbitrary bytes (then nameBytes is kept). */
export function byteName(maxBytes: number): fc.Arbitrary<{ name: string; nameBytes?: Uint8Array }> {
  return fc.oneof(
    fc.string({ unit: 'grapheme', maxLength: maxBytes }).map((s) => decodeByteString(encodeString(s).subarray(0, maxBytes))),
    fc.uint8Array({ maxLength: maxBytes }).map((b) => decodeByteString(b)),
  );
}

/** A feature name table entry with a canonical name (no nameBytes). */
export function featureEntry(): fc.Arbitrary<FeatureNameEntry> {
  return fc.record({
    type: byte(),
    bit: byte(),
    name: fc
      .string({ unit: 'grapheme', maxLength: 20 })
      .filter((s) => !s.includes('\0') && encodeString(s).byteLength <= 46),
  });
}

export function unknownExtension(): fc.Arbitrary<HeaderExtension> {
  return fc.record({
    kind: fc.constant('unknown' as const),
    magic: u32().filter((m) => !KNOWN_MAGICS.has(m)),
    data: fc.uint8Array({ maxLength: 40 }),
  });
}

/** Any structurally valid extension. */
export function anyExtension(): fc.Arbitrary<HeaderExtension> {
  return fc.oneof(
    byteName(40).map((n): HeaderExtension => ({ kind: 'backing-format', ...n })),
    byteName(40).map((n): HeaderExtension => ({ kind: 'data-file', ...n })),
    fc.array(featureEntry(), { maxLength: 6 }).map((entries): HeaderExtension => ({ kind: 'feature-names', entries })),
    fc
      .record({ nbBitmaps: u32(), reserved: u32(), bitmapDirectorySize: safe(), bitmapDirectoryOffset: safe() })
      .map((b): HeaderExtension => ({ kind: 'bitmaps', ...b })),
    fc.record({ offset: safe(), length: safe() }).map((e): HeaderExtension => ({ kind: 'encryption', ...e })),
    unknownExtension(),
  );
}

/** Raw bytes of one structurally valid extension (type, length, data, zero padding). */
export function rawExtension(): fc.Arbitrary<Uint8Array> {
  const clampU64 = (b: Uint8Array, at: number): void => {
    b[at] = 0;
    b[at + 1] = b[at + 1]! & 0x1f;
  };
  const data: fc.Arbitrary<[number, Uint8Array]> = fc.oneof(
    fc.tuple(u32().filter((m) => !KNOWN_MAGICS.has(m)), fc.uint8Array({ maxLength: 40 })),
    fc.tuple(fc.constant(HEADER_EXT_BACKING_FORMAT), fc.uint8Array({ maxLength: 40 })),
    fc.tuple(fc.constant(HEADER_EXT_DATA_FILE), fc.uint8Array({ maxLength: 40 })),
    fc
      .integer({ min: 0, max: 4 })
      .chain((n) => fc.tuple(fc.constant(HEADER_EXT_FEATURE_TABLE), fc.uint8Array({ minLength: 48 * n, maxLength: 48 * n }))),
    fc.tuple(
      fc.constant(HEADER_EXT_BITMAPS),
      fc.uint8Array({ minLength: 24, maxLength: 24 }).map((b) => (clampU64(b, 8), clampU64(b, 16), b)),
    ),
    fc.tuple(
      fc.constant(HEADER_EXT_ENCRYPTION),
      fc.uint8Array({ minLength: 16, maxLength: 16 }).map((b) => (clampU64(b, 0), clampU64(b, 8), b)),
    ),
  );
  return data.map(([magic, d]) => {
    const out = new Uint8Array(8 + Math.ceil(d.byteLength / 8) * 8);
    const view = new DataView(out.buffer);
    view.setUint32(0, magic);
    view.setUint32(4, d.byteLength);
    out.set(d, 8);
    return out;
  });
}

/** A whole extension area: raw extensions then the end marker. */
export function rawExtensionArea(): fc.Arbitrary<Uint8Array> {
  return fc.array(rawExtension(), { maxLength: 6 }).map((parts) => {
    const total = parts.reduce((n, p) => n + p.byteLength, 8);
    const out = new Uint8Array(total);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.byteLength;
    }
    return out;
  });
}

const MAX_REFTABLE_BYTES = 8 * 1024 * 1024;

/**
 * A header cluster qemu would open (every check of decodeHeaderCluster passes), laid out as
 * encodeHeaderCluster writes it.
 */
export function validHeaderCluster(): fc.Arbitrary<HeaderCluster> {
  return fc
    .record({
      clusterBits: fc.oneof({ weight: 12, arbitrary: fc.integer({ min: 9, max: 16 }) }, { weight: 1, arbitrary: fc.integer({ min: 17, max: 21 }) }),
      version: fc.constantFrom(2 as const, 3 as const),
      dirty: fc.boolean(),
      corrupt: fc.boolean(),
      dataFile: fc.boolean(),
      zstd: fc.boolean(),
      extendedL2: fc.boolean(),
      lazy: fc.boolean(),
      bitmapsBit: fc.boolean(),
      raw: fc.boolean(),
      unknownCompat: mask64(),
      refcountOrder: fc.integer({ min: 0, max: 6 }),
      extraWords: fc.integer({ min: 0, max: 3 }),
      trailingSeed: fc.uint8Array({ minLength: 32, maxLength: 32 }),
      l1Size: fc.integer({ min: 0, max: 2000 }),
      sizeFraction: fc.double({ min: 0, max: 1, noNaN: true }),
      l1Cluster: fc.integer({ min: 0, max: 1 << 20 }),
      reftableCluster: fc.integer({ min: 0, max: 1 << 20 }),
      reftableClusters: fc.integer({ min: 1, max: 64 }),
      nbSnapshots: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 65536 })),
      snapshotsCluster: fc.integer({ min: 0, max: 1 << 20 }),
      crypt: fc.constantFrom(0, 1, 2),
      cryptCluster: fc.integer({ min: 1, max: 1 << 20 }),
      cryptLength: fc.integer({ min: 0, max: 0xffff_ffff }),
      backingName: fc.option(byteName(60), { nil: undefined }),
      backingFormat: fc.option(byteName(15).filter((n) => (n.nameBytes ?? encodeString(n.name)).byteLength <= 15), {
        nil: undefined,
      }),
      dataFileName: fc.option(byteName(30), { nil: undefined }),
      featureTable: fc.oneof(
        fc.constant(undefined),
        fc.constant(QEMU_FEATURE_NAME_TABLE.map((e) => ({ ...e }))),
        fc.array(featureEntry(), { maxLength: 3 }),
      ),
      bitmaps: fc.record({
        nbBitmaps: fc.integer({ min: 1, max: 65535 }),
        directoryCluster: fc.integer({ min: 0, max: 1 << 20 }),
        bitmapDirectorySize: fc.integer({ min: 0, max: 1024 * 65535 }),
      }),
      unknown: fc.array(unknownExtension(), { maxLength: 2 }),
      order: fc.array(fc.nat(), { minLength: 8, maxLength: 8 }),
    })
    .map((r): HeaderCluster => {
      const cs = 2 ** r.clusterBits;
      const v3 = r.version === 3;
      const extendedL2 = v3 && r.extendedL2 && r.clusterBits >= 14;
      const dataFile = v3 && r.dataFile;
      const backing = r.backingName;
      const raw = dataFile && r.raw && backing === undefined;
      let incompatible = 0n;
      if (v3) {
        if (r.dirty) incompatible |= INCOMPAT_DIRTY;
        if (r.corrupt) incompatible |= INCOMPAT_CORRUPT;
        if (dataFile) incompatible |= INCOMPAT_DATA_FILE;
        if (r.zstd) incompatible |= INCOMPAT_COMPRESSION;
        if (extendedL2) incompatible |= INCOMPAT_EXTENDED_L2;
      }
      const headerLength = v3 ? 104 + 8 * (r.zstd ? Math.max(1, r.extraWords) : r.extraWords) : 72;
      const l2Bits = r.clusterBits - (extendedL2 ? 4 : 3);
      const maxSize = Math.min(Number.MAX_SAFE_INTEGER, r.l1Size * 2 ** (r.clusterBits + l2Bits));
      const size = Math.floor(maxSize * r.sizeFraction);
      const header: Qcow2Header = {
        version: r.version,
        backingFileOffset: 0,
        backingFileSize: 0,
        clusterBits: r.clusterBits,
        size,
        cryptMethod: r.crypt,
        l1Size: Math.max(r.l1Size, l1EntriesForVirtualSize(size, r.clusterBits, extendedL2)),
        l1TableOffset: r.l1Cluster * cs,
        refcountTableOffset: r.reftableCluster * cs,
        refcountTableClusters: Math.min(r.reftableClusters, MAX_REFTABLE_BYTES / cs),
        nbSnapshots: r.nbSnapshots,
        snapshotsOffset: r.snapshotsCluster * cs,
        incompatibleFeatures: incompatible,
        compatibleFeatures: v3 ? (r.lazy ? COMPAT_LAZY_REFCOUNTS : 0n) | (r.unknownCompat & ~1n) : 0n,
        autoclearFeatures: v3 ? (r.bitmapsBit ? AUTOCLEAR_BITMAPS : 0n) | (raw ? AUTOCLEAR_DATA_FILE_RAW : 0n) : 0n,
        refcountOrder: v3 ? r.refcountOrder : 4,
        headerLength,
        compressionType: v3 && r.zstd ? COMPRESSION_TYPE_ZSTD : 0,
        trailingBytes: headerLength > 104 ? r.trailingSeed.slice(0, headerLength - 105) : new Uint8Array(0),
      };
      const known: HeaderExtension[] = [];
      if (r.backingFormat !== undefined && backing !== undefined) known.push({ kind: 'backing-format', ...r.backingFormat });
      if (r.dataFileName !== undefined) known.push({ kind: 'data-file', ...r.dataFileName });
      if (r.crypt === CRYPT_LUKS) known.push({ kind: 'encryption', offset: r.cryptCluster * cs, length: r.cryptLength });
      if (r.featureTable !== undefined) known.push({ kind: 'feature-names', entries: r.featureTable });
      if (r.bitmapsBit) {
        known.push({
          kind: 'bitmaps',
          nbBitmaps: r.bitmaps.nbBitmaps,
          reserved: 0,
          bitmapDirectorySize: r.bitmaps.bitmapDirectorySize,
          bitmapDirectoryOffset: r.bitmaps.directoryCluster * cs,
        });
      }
      const all = [...known, ...r.unknown];
      // A deterministic shuffle from `order`.
      const keyed = all.map((ext, i) => ({ ext, key: r.order[i % r.order.length]! * 16 + i }));
      keyed.sort((a, b) => a.key - b.key);
      const cluster: HeaderCluster = { header, extensions: keyed.map((k) => k.ext) };
      if (backing !== undefined) {
        cluster.backingFileName = backing.name;
        if (backing.nameBytes !== undefined) cluster.backingFileNameBytes = backing.nameBytes;
      }
      return layoutHeaderCluster(cluster);
    })
    .filter((c) => {
      try {
        encodeHeaderCluster(c);
        return true;
      } catch {
        return false; // does not fit in the cluster
      }
    });
}
