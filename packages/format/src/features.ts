import { unsupported } from './errors.js';

/**
 * Feature bits of the v3 header (docs/interop/qcow2.txt, bytes 72..95). Masks are bigints,
 * like the header fields they test: `(header.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n`.
 */

/** Incompatible feature bits: an implementation must refuse an image with an unknown one set. */
export const INCOMPAT_DIRTY_BIT = 0;
export const INCOMPAT_CORRUPT_BIT = 1;
export const INCOMPAT_DATA_FILE_BIT = 2;
export const INCOMPAT_COMPRESSION_BIT = 3;
export const INCOMPAT_EXTENDED_L2_BIT = 4;

export const INCOMPAT_DIRTY: bigint = 1n << 0n;
export const INCOMPAT_CORRUPT: bigint = 1n << 1n;
export const INCOMPAT_DATA_FILE: bigint = 1n << 2n;
export const INCOMPAT_COMPRESSION: bigint = 1n << 3n;
export const INCOMPAT_EXTENDED_L2: bigint = 1n << 4n;

/** Compatible feature bits: unknown ones may be ignored. */
export const COMPAT_LAZY_REFCOUNTS_BIT = 0;
export const COMPAT_LAZY_REFCOUNTS: bigint = 1n << 0n;

/** Autoclear feature bits: a writer must clear the ones it does not know. */
export const AUTOCLEAR_BITMAPS_BIT = 0;
export const AUTOCLEAR_DATA_FILE_RAW_BIT = 1;
export const AUTOCLEAR_BITMAPS: bigint = 1n << 0n;
export const AUTOCLEAR_DATA_FILE_RAW: bigint = 1n << 1n;

/** The bits this implementation knows (the same sets as qemu's QCOW2_*_MASK). */
export const KNOWN_INCOMPATIBLE_FEATURES: bigint =
  INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTENDED_L2;
export const KNOWN_COMPATIBLE_FEATURES: bigint = COMPAT_LAZY_REFCOUNTS;
export const KNOWN_AUTOCLEAR_FEATURES: bigint = AUTOCLEAR_BITMAPS | AUTOCLEAR_DATA_FILE_RAW;

/** Feature name table entry types (byte 0 of an entry). */
export const FEATURE_TYPE_INCOMPATIBLE = 0;
export const FEATURE_TYPE_COMPATIBLE = 1;
export const FEATURE_TYPE_AUTOCLEAR = 2;

/** One 48-byte entry of the feature name table extension. */
export interface FeatureNameEntry {
  /** 0 incompatible, 1 compatible, 2 autoclear (other values are kept as read). */
  type: number;
  /** Bit number within the selected mask (0..63 per the spec; other values are kept as read). */
  bit: number;
  /** The name, up to its first NUL byte, decoded as UTF-8. */
  name: string;
  /**
   * The raw 46-byte name field, present only when `name` does not re-encode to it (invalid
   * UTF-8, or non-zero bytes after the terminating NUL), so re-encoding stays byte-exact.
   */
  nameBytes?: Uint8Array;
}

/**
 * The feature name table qemu writes (qcow2_update_header) into every v3 image with clusters
 * larger than 4 KiB, in qemu's order.
 */
export const QEMU_FEATURE_NAME_TABLE: readonly FeatureNameEntry[] = [
  { type: FEATURE_TYPE_INCOMPATIBLE, bit: INCOMPAT_DIRTY_BIT, name: 'dirty bit' },
  { type: FEATURE_TYPE_INCOMPATIBLE, bit: INCOMPAT_CORRUPT_BIT, name: 'corrupt bit' },
  { type: FEATURE_TYPE_INCOMPATIBLE, bit: INCOMPAT_DATA_FILE_BIT, name: 'external data file' },
  { type: FEATURE_TYPE_INCOMPATIBLE, bit: INCOMPAT_COMPRESSION_BIT, name: 'compression type' },
  { type: FEATURE_TYPE_INCOMPATIBLE, bit: INCOMPAT_EXTENDED_L2_BIT, name: 'extended L2 entries' },
  { type: FEATURE_TYPE_COMPATIBLE, bit: COMPAT_LAZY_REFCOUNTS_BIT, name: 'lazy refcounts' },
  { type: FEATURE_TYPE_AUTOCLEAR, bit: AUTOCLEAR_BITMAPS_BIT, name: 'bitmaps' },
  { type: FEATURE_TYPE_AUTOCLEAR, bit: AUTOCLEAR_DATA_FILE_RAW_BIT, name: 'raw external data' },
];

/** True when any bit of `feature` is set in `mask`: `hasFeature(header.incompatibleFeatures, INCOMPAT_DIRTY)`. */
export function hasFeature(mask: bigint, feature: bigint): boolean {
  return (mask & feature) !== 0n;
}

/**
 * Refuses an image whose incompatible_features has a bit outside `supported` (by default every
 * bit this package knows), with qemu's message: the names of the offending bits from the
 * image's feature name table where it has them, then the rest as a hex mask:
 * `Unsupported qcow2 feature(s): my feature, Unknown incompatible feature: 8000`.
 *
 * Like qemu's report_unsupported_feature, the table is read up to its first entry with an
 * empty name.
 */
export function checkIncompatibleFeatures(
  header: { incompatibleFeatures: bigint },
  featureTable?: readonly FeatureNameEntry[],
  supported: bigint = KNOWN_INCOMPATIBLE_FEATURES,
): void {
  let mask = header.incompatibleFeatures & ~supported;
  if (mask === 0n) return;
  const parts: string[] = [];
  for (const entry of featureTable ?? []) {
    if (entry.name === '') break;
    if (entry.type !== FEATURE_TYPE_INCOMPATIBLE || entry.bit > 63) continue;
    const bit = 1n << BigInt(entry.bit);
    if ((mask & bit) !== 0n) {
      parts.push(entry.name);
      mask &= ~bit;
    }
  }
  if (mask !== 0n) parts.push(`Unknown incompatible feature: ${mask.toString(16)}`);
  throw unsupported(`header incompatible_features at 0x48: Unsupported qcow2 feature(s): ${parts.join(', ')}`);
}
