import { readU64, viewOf, writeU64 } from './binary.js';
import { corrupt, hex, invalidArgument, unsupported } from './errors.js';
import {
  INCOMPAT_COMPRESSION,
  INCOMPAT_DATA_FILE,
  INCOMPAT_EXTENDED_L2,
  AUTOCLEAR_DATA_FILE_RAW,
} from './features.js';
import {
  MAX_BACKING_FILE_NAME,
  MAX_CLUSTER_BITS,
  MAX_L1_SIZE_BYTES,
  MAX_REFCOUNT_ORDER,
  MAX_REFTABLE_SIZE_BYTES,
  MAX_SNAPSHOTS,
  MIN_CLUSTER_BITS,
  MIN_EXTENDED_L2_CLUSTER_BITS,
  QCOW_MAGIC,
  V2_HEADER_LENGTH,
  V2_REFCOUNT_ORDER,
  V3_MIN_HEADER_LENGTH,
} from './limits.js';

/**
 * The fixed qcow2 header (docs/interop/qcow2.txt, "Header"), field for field.
 *
 * Feature masks are `bigint` (0 ≤ mask < 2⁶⁴): the header is decoded once per open, never on a
 * hot path, and a bigint keeps every one of the 64 bits (unknown ones included) without a
 * hi/lo pair. Test a bit with `(header.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n`.
 *
 * Every other 64-bit field is a JS number; values above 2⁵³ are refused when decoding.
 */
export interface Qcow2Header {
  /** 2 (compat=0.10) or 3 (compat=1.1). */
  version: 2 | 3;
  /** Offset of the backing file name in the first cluster; 0 when there is no backing file. */
  backingFileOffset: number;
  /** Length of the backing file name in bytes (undefined by the spec, kept as read, when there is none). */
  backingFileSize: number;
  /** log2 of the cluster size. */
  clusterBits: number;
  /** Virtual disk size in bytes. */
  size: number;
  /** 0 none, 1 AES (legacy), 2 LUKS. See CRYPT_*. */
  cryptMethod: number;
  /** Entries in the active L1 table. */
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  /** v3 only (0n for v2). */
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  /** refcount_bits = 1 << refcountOrder. Always 4 for v2. */
  refcountOrder: number;
  /** 72 for v2; ≥ 104 and a multiple of 8 for v3 (qemu writes 112). */
  headerLength: number;
  /** Byte 104 (v3, when headerLength > 104); 0 (zlib) when absent. See COMPRESSION_TYPE_*. */
  compressionType: number;
  /**
   * The header bytes after compression_type (from byte 105) up to headerLength, kept byte for
   * byte so re-encoding preserves fields this implementation does not know. Its length is
   * always `headerLength - 105` for v3 headers longer than 104 bytes, and 0 otherwise (for qemu's
   * 112-byte header: 7 zero bytes of padding).
   */
  trailingBytes: Uint8Array;
}

/** crypt_method values. */
export const CRYPT_NONE = 0;
export const CRYPT_AES = 1;
export const CRYPT_LUKS = 2;

/** compression_type values. */
export const COMPRESSION_TYPE_ZLIB = 0;
export const COMPRESSION_TYPE_ZSTD = 1;

/** Byte offset of compression_type; fields at or past header_length are absent. */
export const COMPRESSION_TYPE_OFFSET = 104;

const TWO_POW_64 = 1n << 64n;

// Field offsets (docs/interop/qcow2.txt).
const OFF = {
  magic: 0,
  version: 4,
  backing_file_offset: 8,
  backing_file_size: 16,
  cluster_bits: 20,
  size: 24,
  crypt_method: 32,
  l1_size: 36,
  l1_table_offset: 40,
  refcount_table_offset: 48,
  refcount_table_clusters: 56,
  nb_snapshots: 60,
  snapshots_offset: 64,
  incompatible_features: 72,
  compatible_features: 80,
  autoclear_features: 88,
  refcount_order: 96,
  header_length: 100,
  compression_type: 104,
} as const;

type FieldName = keyof typeof OFF;

/** `header cluster_bits at 0x14` — how every message names a header field. */
function at(name: FieldName): string {
  return `header ${name} at ${hex(OFF[name])}`;
}

function readMask(view: DataView, offset: number): bigint {
  return (BigInt(view.getUint32(offset)) << 32n) | BigInt(view.getUint32(offset + 4));
}

function writeMask(view: DataView, offset: number, value: bigint, name: FieldName): void {
  if (typeof value !== 'bigint' || value < 0n || value >= TWO_POW_64) {
    throw invalidArgument(`${at(name)}: ${String(value)} is not a 64-bit mask`);
  }
  view.setUint32(offset, Number(value >> 32n));
  view.setUint32(offset + 4, Number(value & 0xffff_ffffn));
}

/**
 * Decodes the fixed header from the start of `bytes` (at least header_length bytes; the whole
 * first cluster is fine). Structural checks only: magic, version, header_length (v3: ≥ 104, a
 * multiple of 8, within `bytes`), 64-bit fields ≤ 2⁵³. Call {@link validateHeader} (or use
 * `decodeHeaderCluster`, which does) for qemu's semantic checks.
 */
export function decodeHeader(bytes: Uint8Array): Qcow2Header {
  if (bytes.byteLength < V2_HEADER_LENGTH) {
    throw corrupt(`header: needs at least ${V2_HEADER_LENGTH} bytes, got ${bytes.byteLength}`);
  }
  const view = viewOf(bytes);
  const magic = view.getUint32(OFF.magic);
  if (magic !== QCOW_MAGIC) {
    throw corrupt(`${at('magic')}: ${hex(magic)} is not the qcow2 magic ${hex(QCOW_MAGIC)} (image is not in qcow2 format)`);
  }
  const version = view.getUint32(OFF.version);
  if (version !== 2 && version !== 3) {
    throw unsupported(`${at('version')}: unsupported qcow2 version ${version} (expected 2 or 3)`);
  }
  const common = {
    backingFileOffset: readU64(view, OFF.backing_file_offset, at('backing_file_offset')),
    backingFileSize: view.getUint32(OFF.backing_file_size),
    clusterBits: view.getUint32(OFF.cluster_bits),
    size: readU64(view, OFF.size, at('size')),
    cryptMethod: view.getUint32(OFF.crypt_method),
    l1Size: view.getUint32(OFF.l1_size),
    l1TableOffset: readU64(view, OFF.l1_table_offset, at('l1_table_offset')),
    refcountTableOffset: readU64(view, OFF.refcount_table_offset, at('refcount_table_offset')),
    refcountTableClusters: view.getUint32(OFF.refcount_table_clusters),
    nbSnapshots: view.getUint32(OFF.nb_snapshots),
    snapshotsOffset: readU64(view, OFF.snapshots_offset, at('snapshots_offset')),
  };
  if (version === 2) {
    return {
      version,
      ...common,
      incompatibleFeatures: 0n,
      compatibleFeatures: 0n,
      autoclearFeatures: 0n,
      refcountOrder: V2_REFCOUNT_ORDER,
      headerLength: V2_HEADER_LENGTH,
      compressionType: COMPRESSION_TYPE_ZLIB,
      trailingBytes: new Uint8Array(0),
    };
  }
  if (bytes.byteLength < V3_MIN_HEADER_LENGTH) {
    throw corrupt(`header: a version 3 header needs at least ${V3_MIN_HEADER_LENGTH} bytes, got ${bytes.byteLength}`);
  }
  const headerLength = view.getUint32(OFF.header_length);
  if (headerLength < V3_MIN_HEADER_LENGTH) {
    throw corrupt(`${at('header_length')}: ${headerLength} is less than ${V3_MIN_HEADER_LENGTH} (qcow2 header too short)`);
  }
  if (headerLength % 8 !== 0) {
    throw corrupt(`${at('header_length')}: ${headerLength} is not a multiple of 8`);
  }
  if (headerLength > bytes.byteLength) {
    throw corrupt(`${at('header_length')}: ${headerLength} exceeds the ${bytes.byteLength} bytes available`);
  }
  const hasCompressionType = headerLength > COMPRESSION_TYPE_OFFSET;
  return {
    version,
    ...common,
    incompatibleFeatures: readMask(view, OFF.incompatible_features),
    compatibleFeatures: readMask(view, OFF.compatible_features),
    autoclearFeatures: readMask(view, OFF.autoclear_features),
    refcountOrder: view.getUint32(OFF.refcount_order),
    headerLength,
    compressionType: hasCompressionType ? view.getUint8(OFF.compression_type) : COMPRESSION_TYPE_ZLIB,
    trailingBytes: hasCompressionType
      ? bytes.slice(COMPRESSION_TYPE_OFFSET + 1, headerLength)
      : new Uint8Array(0),
  };
}

function checkU32(value: number, name: FieldName): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw invalidArgument(`${at(name)}: ${value} is not an unsigned 32-bit integer`);
  }
}

/**
 * Encodes the fixed header: exactly `header.headerLength` bytes (72 for v2). Refuses (with
 * INVALID_ARGUMENT) only what cannot be written faithfully: a value outside its field's width,
 * v3-only fields set on a v2 header, a header_length below 104 or not a multiple of 8, a
 * compression type with no byte to hold it, or `trailingBytes` of the wrong length.
 * Semantic validity is {@link validateHeader}'s job.
 */
export function encodeHeader(header: Qcow2Header): Uint8Array {
  const { version } = header;
  if (version !== 2 && version !== 3) {
    throw invalidArgument(`${at('version')}: ${String(version)} is not 2 or 3`);
  }
  if (version === 2) {
    if (
      header.incompatibleFeatures !== 0n ||
      header.compatibleFeatures !== 0n ||
      header.autoclearFeatures !== 0n ||
      header.refcountOrder !== V2_REFCOUNT_ORDER ||
      header.headerLength !== V2_HEADER_LENGTH ||
      header.compressionType !== COMPRESSION_TYPE_ZLIB ||
      header.trailingBytes.byteLength !== 0
    ) {
      throw invalidArgument(
        'header: a version 2 header has no feature masks, refcount_order 4, header_length 72, zlib compression and no trailing bytes',
      );
    }
  } else {
    const len = header.headerLength;
    checkU32(len, 'header_length');
    if (len < V3_MIN_HEADER_LENGTH || len % 8 !== 0) {
      throw invalidArgument(`${at('header_length')}: ${len} is not a multiple of 8 ≥ ${V3_MIN_HEADER_LENGTH}`);
    }
    const trailing = len > COMPRESSION_TYPE_OFFSET ? len - COMPRESSION_TYPE_OFFSET - 1 : 0;
    if (header.trailingBytes.byteLength !== trailing) {
      throw invalidArgument(
        `header: trailingBytes has ${header.trailingBytes.byteLength} bytes, header_length ${len} needs ${trailing}`,
      );
    }
    const ct = header.compressionType;
    if (!Number.isInteger(ct) || ct < 0 || ct > 0xff) {
      throw invalidArgument(`${at('compression_type')}: ${ct} is not a byte`);
    }
    if (len <= COMPRESSION_TYPE_OFFSET && ct !== COMPRESSION_TYPE_ZLIB) {
      throw invalidArgument(`${at('compression_type')}: ${ct} needs header_length > 104, got ${len}`);
    }
  }
  const bytes = new Uint8Array(header.headerLength);
  const view = viewOf(bytes);
  view.setUint32(OFF.magic, QCOW_MAGIC);
  view.setUint32(OFF.version, version);
  writeU64(view, OFF.backing_file_offset, header.backingFileOffset, at('backing_file_offset'));
  checkU32(header.backingFileSize, 'backing_file_size');
  view.setUint32(OFF.backing_file_size, header.backingFileSize);
  checkU32(header.clusterBits, 'cluster_bits');
  view.setUint32(OFF.cluster_bits, header.clusterBits);
  writeU64(view, OFF.size, header.size, at('size'));
  checkU32(header.cryptMethod, 'crypt_method');
  view.setUint32(OFF.crypt_method, header.cryptMethod);
  checkU32(header.l1Size, 'l1_size');
  view.setUint32(OFF.l1_size, header.l1Size);
  writeU64(view, OFF.l1_table_offset, header.l1TableOffset, at('l1_table_offset'));
  writeU64(view, OFF.refcount_table_offset, header.refcountTableOffset, at('refcount_table_offset'));
  checkU32(header.refcountTableClusters, 'refcount_table_clusters');
  view.setUint32(OFF.refcount_table_clusters, header.refcountTableClusters);
  checkU32(header.nbSnapshots, 'nb_snapshots');
  view.setUint32(OFF.nb_snapshots, header.nbSnapshots);
  writeU64(view, OFF.snapshots_offset, header.snapshotsOffset, at('snapshots_offset'));
  if (version === 3) {
    writeMask(view, OFF.incompatible_features, header.incompatibleFeatures, 'incompatible_features');
    writeMask(view, OFF.compatible_features, header.compatibleFeatures, 'compatible_features');
    writeMask(view, OFF.autoclear_features, header.autoclearFeatures, 'autoclear_features');
    checkU32(header.refcountOrder, 'refcount_order');
    view.setUint32(OFF.refcount_order, header.refcountOrder);
    view.setUint32(OFF.header_length, header.headerLength);
    if (header.headerLength > COMPRESSION_TYPE_OFFSET) {
      view.setUint8(OFF.compression_type, header.compressionType);
      bytes.set(header.trailingBytes, COMPRESSION_TYPE_OFFSET + 1);
    }
  }
  return bytes;
}

/** Cluster size in bytes (1 << clusterBits). */
export function clusterSizeOf(header: Pick<Qcow2Header, 'clusterBits'>): number {
  return 2 ** header.clusterBits;
}

/**
 * The number of L1 entries a virtual size needs (qemu's size_to_l1): each L1 entry covers one
 * L2 table, i.e. (cluster size / L2 entry size) clusters. qemu refuses an image whose l1_size
 * is smaller than this ("L1 table is too small").
 */
export function l1EntriesForVirtualSize(virtualSize: number, clusterBits: number, extendedL2 = false): number {
  const l2Bits = clusterBits - (extendedL2 ? 4 : 3);
  // A power-of-two divisor is exact in floating point, so ceil() is exact for any safe integer.
  return Math.ceil(virtualSize / 2 ** (clusterBits + l2Bits));
}

/** Bytes of the active L1 table (l1_size × 8). */
export function l1TableBytes(header: Pick<Qcow2Header, 'l1Size'>): number {
  return header.l1Size * 8;
}

/** Bytes of the refcount table (refcount_table_clusters × cluster size). */
export function refcountTableBytes(header: Pick<Qcow2Header, 'refcountTableClusters' | 'clusterBits'>): number {
  return header.refcountTableClusters * 2 ** header.clusterBits;
}

/** Entries of the refcount table (8 bytes each). */
export function refcountTableEntries(header: Pick<Qcow2Header, 'refcountTableClusters' | 'clusterBits'>): number {
  return refcountTableBytes(header) / 8;
}

export interface ValidateHeaderOptions {
  /**
   * Open for `qemu-img check` (qemu's BDRV_O_CHECK): accept refcount_table_clusters = 0 and skip
   * the snapshot table limits, so a repair can still open the image.
   */
  check?: boolean;
}

/**
 * The checks qcow2_do_open makes before it reads the extensions (and before it looks at the
 * incompatible feature bits): cluster size, header length, backing file offset, compression
 * type. {@link validateHeader} runs these, then {@link validateHeaderTables}; an opener that
 * follows qemu's order checks the feature bits in between (as `decodeHeaderCluster` does).
 */
export function validateHeaderBasics(header: Qcow2Header): void {
  const bits = header.clusterBits;
  if (bits < MIN_CLUSTER_BITS) {
    throw corrupt(`${at('cluster_bits')}: ${bits} is below the minimum ${MIN_CLUSTER_BITS} (512-byte clusters)`);
  }
  if (bits > MAX_CLUSTER_BITS) {
    throw unsupported(`${at('cluster_bits')}: ${bits} is above ${MAX_CLUSTER_BITS} (unsupported cluster size: 2^${bits})`);
  }
  const clusterSize = 2 ** bits;
  if (header.headerLength > clusterSize) {
    throw corrupt(`${at('header_length')}: ${header.headerLength} exceeds the cluster size ${clusterSize}`);
  }
  if (header.backingFileOffset > clusterSize) {
    throw corrupt(`${at('backing_file_offset')}: ${hex(header.backingFileOffset)} is past the first cluster (${hex(clusterSize)})`);
  }
  if (header.backingFileOffset !== 0 && header.backingFileOffset < header.headerLength) {
    throw corrupt(
      `${at('backing_file_offset')}: ${hex(header.backingFileOffset)} lies inside the header (header_length ${header.headerLength})`,
    );
  }
  const ct = header.compressionType;
  if (ct !== COMPRESSION_TYPE_ZLIB && ct !== COMPRESSION_TYPE_ZSTD) {
    throw unsupported(`${at('compression_type')}: unknown compression type ${ct}`);
  }
  const bit = (header.incompatibleFeatures & INCOMPAT_COMPRESSION) !== 0n;
  if (ct === COMPRESSION_TYPE_ZLIB && bit) {
    throw corrupt(`${at('incompatible_features')}: the compression type bit (3) is set but compression_type is 0 (zlib)`);
  }
  if (ct !== COMPRESSION_TYPE_ZLIB && !bit) {
    throw corrupt(`${at('incompatible_features')}: compression_type is ${ct} but the compression type bit (3) is not set`);
  }
}

/**
 * The checks qcow2_do_open makes after the feature bits: subcluster size, refcount order,
 * crypt method, table sizes and alignment, L1 size against the virtual size, backing file name
 * bounds, data-file bits. Assumes {@link validateHeaderBasics} passed.
 */
export function validateHeaderTables(header: Qcow2Header, options: ValidateHeaderOptions = {}): void {
  const bits = header.clusterBits;
  const clusterSize = 2 ** bits;
  const extendedL2 = (header.incompatibleFeatures & INCOMPAT_EXTENDED_L2) !== 0n;
  if (extendedL2 && bits < MIN_EXTENDED_L2_CLUSTER_BITS) {
    throw corrupt(
      `${at('cluster_bits')}: ${bits} is below ${MIN_EXTENDED_L2_CLUSTER_BITS}, the minimum with extended L2 entries (subclusters would be smaller than 512 bytes)`,
    );
  }
  if (header.refcountOrder > MAX_REFCOUNT_ORDER) {
    throw corrupt(`${at('refcount_order')}: ${header.refcountOrder} exceeds ${MAX_REFCOUNT_ORDER} (refcounts wider than 64 bits)`);
  }
  if (header.cryptMethod > CRYPT_LUKS) {
    throw unsupported(`${at('crypt_method')}: unknown encryption method ${header.cryptMethod}`);
  }
  const misaligned = (value: number): boolean => value % clusterSize !== 0;

  if (header.refcountTableClusters === 0 && options.check !== true) {
    throw corrupt(`${at('refcount_table_clusters')}: 0 (image does not contain a reference count table)`);
  }
  if (header.refcountTableClusters > MAX_REFTABLE_SIZE_BYTES / clusterSize) {
    throw corrupt(
      `${at('refcount_table_clusters')}: ${header.refcountTableClusters} clusters exceed the ${MAX_REFTABLE_SIZE_BYTES}-byte refcount table limit`,
    );
  }
  if (misaligned(header.refcountTableOffset)) {
    throw corrupt(`${at('refcount_table_offset')}: ${hex(header.refcountTableOffset)} is not cluster-aligned`);
  }
  if (options.check !== true) {
    if (header.nbSnapshots > MAX_SNAPSHOTS) {
      throw corrupt(`${at('nb_snapshots')}: ${header.nbSnapshots} exceeds the limit of ${MAX_SNAPSHOTS} snapshots`);
    }
    if (misaligned(header.snapshotsOffset)) {
      throw corrupt(`${at('snapshots_offset')}: ${hex(header.snapshotsOffset)} is not cluster-aligned`);
    }
  }
  if (header.l1Size > MAX_L1_SIZE_BYTES / 8) {
    throw corrupt(`${at('l1_size')}: ${header.l1Size} entries exceed the ${MAX_L1_SIZE_BYTES}-byte L1 table limit`);
  }
  if (misaligned(header.l1TableOffset)) {
    throw corrupt(`${at('l1_table_offset')}: ${hex(header.l1TableOffset)} is not cluster-aligned`);
  }
  const needed = l1EntriesForVirtualSize(header.size, bits, extendedL2);
  if (needed > 0x7fff_ffff) {
    throw unsupported(`${at('size')}: ${header.size} bytes needs ${needed} L1 entries (image is too big)`);
  }
  if (header.l1Size < needed) {
    throw corrupt(`${at('l1_size')}: ${header.l1Size} entries cannot map size ${header.size}, which needs ${needed} (L1 table is too small)`);
  }
  if (header.backingFileOffset !== 0) {
    const len = header.backingFileSize;
    if (len > MAX_BACKING_FILE_NAME) {
      throw corrupt(`${at('backing_file_size')}: ${len} exceeds ${MAX_BACKING_FILE_NAME} bytes (backing file name too long)`);
    }
    if (len > clusterSize - header.backingFileOffset) {
      throw corrupt(
        `${at('backing_file_size')}: ${len} bytes at ${hex(header.backingFileOffset)} run past the first cluster (${hex(clusterSize)})`,
      );
    }
  }
  const dataFile = (header.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n;
  const raw = (header.autoclearFeatures & AUTOCLEAR_DATA_FILE_RAW) !== 0n;
  if (raw && !dataFile) {
    throw corrupt(`${at('autoclear_features')}: the raw external data bit (1) is set without the external data file bit (data-file-raw requires a data file)`);
  }
  if (raw && header.backingFileOffset !== 0) {
    throw corrupt(`${at('autoclear_features')}: the raw external data bit (1) is set on an image with a backing file`);
  }
}

/**
 * Every check qemu's qcow2_do_open makes on the fixed header, each a Qcow2Error naming the
 * field and the value: cluster_bits 9..21, header_length ≤ cluster size, backing file offset
 * and name within the first cluster (≤ 1023 bytes), compression type known and matching its
 * feature bit, extended L2 with clusters ≥ 16 KiB, refcount_order ≤ 6, crypt_method ≤ 2, table
 * offsets cluster-aligned, refcount table ≤ 8 MiB (and present), nb_snapshots ≤ 65536,
 * L1 ≤ 32 MiB and large enough for the virtual size, raw data-file bit only with a data file
 * (and, as the spec says, not with a backing file).
 *
 * Unknown incompatible feature bits are `checkIncompatibleFeatures`'s job (it needs the
 * feature name table from the extensions); `decodeHeaderCluster` runs both, in qemu's order.
 */
export function validateHeader(header: Qcow2Header, options: ValidateHeaderOptions = {}): void {
  validateHeaderBasics(header);
  validateHeaderTables(header, options);
}
