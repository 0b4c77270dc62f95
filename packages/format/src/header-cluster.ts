import { viewOf } from './binary.js';
import { corrupt, hex, invalidArgument, unsupported } from './errors.js';
import {
  decodeByteString,
  decodeHeaderExtensions,
  decodeHeaderExtensionsLeniently,
  encodeByteString,
  encodeHeaderExtensions,
  featureNameTableOf,
  validateHeaderExtensions,
  type HeaderExtension,
} from './extensions.js';
import { checkIncompatibleFeatures, KNOWN_INCOMPATIBLE_FEATURES } from './features.js';
import {
  decodeHeader,
  encodeHeader,
  validateHeaderBasics,
  validateHeaderTables,
  type Qcow2Header,
  type ValidateHeaderOptions,
} from './header.js';
import { MAX_BACKING_FILE_NAME, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS, QCOW_MAGIC } from './limits.js';

/**
 * Everything in the first cluster of a qcow2 image: the header, the header extensions (in the
 * order they appear, without the end marker) and the backing file name.
 */
export interface HeaderCluster {
  header: Qcow2Header;
  extensions: HeaderExtension[];
  /** The backing file name decoded as UTF-8; absent when backing_file_offset is 0. */
  backingFileName?: string;
  /** The raw name, present only when its bytes are not the UTF-8 encoding of `backingFileName`. */
  backingFileNameBytes?: Uint8Array;
}

export interface DecodeHeaderClusterOptions extends ValidateHeaderOptions {
  /**
   * Incompatible feature bits the caller can handle; any other set bit is refused with qemu's
   * message. Defaults to every bit this package knows (KNOWN_INCOMPATIBLE_FEATURES). Pass
   * `~0n` to decode an image whatever its feature bits (e.g. to print information about it).
   */
  supportedIncompatibleFeatures?: bigint;
}

/** The smallest read that `readClusterSize` can work from. */
export const HEADER_CLUSTER_SIZE_PROBE = 24;

/**
 * The cluster size of an image from the first 24 bytes of its file, so an opener knows how much
 * to read for `decodeHeaderCluster`. Checks magic, version and cluster_bits (9..21).
 */
export function readClusterSize(prefix: Uint8Array): number {
  if (prefix.byteLength < HEADER_CLUSTER_SIZE_PROBE) {
    throw corrupt(`header: needs at least ${HEADER_CLUSTER_SIZE_PROBE} bytes to find the cluster size, got ${prefix.byteLength}`);
  }
  const view = viewOf(prefix);
  const magic = view.getUint32(0);
  if (magic !== QCOW_MAGIC) {
    throw corrupt(`header magic at 0x0: ${hex(magic)} is not the qcow2 magic ${hex(QCOW_MAGIC)} (image is not in qcow2 format)`);
  }
  const version = view.getUint32(4);
  if (version !== 2 && version !== 3) {
    throw unsupported(`header version at 0x4: unsupported qcow2 version ${version} (expected 2 or 3)`);
  }
  const bits = view.getUint32(20);
  if (bits < MIN_CLUSTER_BITS) {
    throw corrupt(`header cluster_bits at 0x14: ${bits} is below the minimum ${MIN_CLUSTER_BITS} (512-byte clusters)`);
  }
  if (bits > MAX_CLUSTER_BITS) {
    throw unsupported(`header cluster_bits at 0x14: ${bits} is above ${MAX_CLUSTER_BITS} (unsupported cluster size: 2^${bits})`);
  }
  return 2 ** bits;
}

/**
 * Decodes and validates the first cluster, making every check qemu's qcow2_do_open makes on it,
 * in qemu's order: the fixed header (magic, version, cluster size, header length, backing file
 * offset, compression type), then unknown incompatible feature bits (named from the image's
 * feature name table), then the table limits, then the extensions, then the backing file name.
 *
 * `bytes` must hold at least the first cluster (a file shorter than that should be padded with
 * zeros, as qemu reads past its end); bytes after the first cluster are ignored.
 */
export function decodeHeaderCluster(bytes: Uint8Array, options: DecodeHeaderClusterOptions = {}): HeaderCluster {
  const header = decodeHeader(bytes);
  validateHeaderBasics(header);
  const clusterSize = 2 ** header.clusterBits;
  if (bytes.byteLength < clusterSize) {
    throw corrupt(`header cluster: needs the whole first cluster (${clusterSize} bytes), got ${bytes.byteLength}`);
  }
  const cluster = bytes.subarray(0, clusterSize);
  const start = header.headerLength;
  const end = header.backingFileOffset !== 0 ? header.backingFileOffset : clusterSize;

  const supported = options.supportedIncompatibleFeatures ?? KNOWN_INCOMPATIBLE_FEATURES;
  if ((header.incompatibleFeatures & ~supported) !== 0n) {
    const table = featureNameTableOf(decodeHeaderExtensionsLeniently(cluster, start, end));
    checkIncompatibleFeatures(header, table, supported);
  }
  validateHeaderTables(header, options);

  const { extensions } = decodeHeaderExtensions(cluster, start, end);
  validateHeaderExtensions(header, extensions);

  const result: HeaderCluster = { header, extensions };
  if (header.backingFileOffset !== 0) {
    const name = decodeByteString(
      cluster.subarray(header.backingFileOffset, header.backingFileOffset + header.backingFileSize),
    );
    result.backingFileName = name.name;
    if (name.nameBytes !== undefined) result.backingFileNameBytes = name.nameBytes;
  }
  return result;
}

function backingNameBytes(cluster: HeaderCluster): Uint8Array | undefined {
  if (cluster.backingFileName === undefined) {
    if (cluster.backingFileNameBytes !== undefined) {
      throw invalidArgument('header cluster: backingFileNameBytes without backingFileName');
    }
    return undefined;
  }
  const bytes =
    cluster.backingFileNameBytes === undefined
      ? encodeByteString({ name: cluster.backingFileName })
      : encodeByteString({ name: cluster.backingFileName, nameBytes: cluster.backingFileNameBytes });
  if (bytes.byteLength > MAX_BACKING_FILE_NAME) {
    throw invalidArgument(`header cluster: backing file name of ${bytes.byteLength} bytes exceeds ${MAX_BACKING_FILE_NAME}`);
  }
  return bytes;
}

/**
 * The cluster with backing_file_offset and backing_file_size set where `encodeHeaderCluster`
 * puts the name: right after the extension area's end marker (0 and 0 without a backing file),
 * as qemu's qcow2_update_header does. This is the header an encoded cluster decodes to.
 */
export function layoutHeaderCluster(cluster: HeaderCluster): HeaderCluster {
  const name = backingNameBytes(cluster);
  const areaEnd = cluster.header.headerLength + encodeHeaderExtensions(cluster.extensions).byteLength;
  return {
    ...cluster,
    header: {
      ...cluster.header,
      backingFileOffset: name === undefined ? 0 : areaEnd,
      backingFileSize: name === undefined ? 0 : name.byteLength,
    },
  };
}

/**
 * Encodes the first cluster as qemu's qcow2_update_header writes it: the header, the extensions
 * in the given order (each padded to 8 bytes with zeros), the end marker, the backing file name,
 * zeros to the end of the cluster. backing_file_offset/size are computed from that layout
 * (see `layoutHeaderCluster`), whatever the header says. Refuses with INVALID_ARGUMENT a
 * cluster_bits outside 9..21 or contents that do not fit in one cluster.
 */
export function encodeHeaderCluster(cluster: HeaderCluster): Uint8Array {
  const bits = cluster.header.clusterBits;
  if (!Number.isInteger(bits) || bits < MIN_CLUSTER_BITS || bits > MAX_CLUSTER_BITS) {
    throw invalidArgument(`header cluster_bits at 0x14: ${bits} is outside ${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS}`);
  }
  const clusterSize = 2 ** bits;
  const name = backingNameBytes(cluster);
  const extensions = encodeHeaderExtensions(cluster.extensions);
  const headerLength = cluster.header.headerLength;
  const areaEnd = headerLength + extensions.byteLength;
  const total = areaEnd + (name?.byteLength ?? 0);
  if (total > clusterSize) {
    throw invalidArgument(
      `header cluster: header (${headerLength} bytes), extensions (${extensions.byteLength}) and backing file name (${name?.byteLength ?? 0}) need ${total} bytes, the cluster has ${clusterSize}`,
    );
  }
  const header = encodeHeader({
    ...cluster.header,
    backingFileOffset: name === undefined ? 0 : areaEnd,
    backingFileSize: name === undefined ? 0 : name.byteLength,
  });
  const out = new Uint8Array(clusterSize);
  out.set(header, 0);
  out.set(extensions, header.byteLength);
  if (name !== undefined) out.set(name, areaEnd);
  return out;
}
