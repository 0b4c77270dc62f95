/**
 * Limits of the qcow2 specification (docs/interop/qcow2.txt) and of QEMU's implementation
 * (block/qcow2.h). Every length or count read from an image is checked against these before
 * anything is allocated from it.
 */

export const QCOW_MAGIC = 0x514649fb; // "QFI\xfb"

/** Smallest and largest cluster_bits qemu opens (512 B .. 2 MiB). */
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;
/** Extended L2 entries need clusters of at least 16 KiB. */
export const MIN_EXTENDED_L2_CLUSTER_BITS = 14;

/** Header lengths. */
export const V2_HEADER_LENGTH = 72;
export const V3_MIN_HEADER_LENGTH = 104;
/** The header including compression_type (byte 104) rounded to 8: what qemu writes for v3. */
export const V3_HEADER_LENGTH = 112;

/** refcount_bits = 1 << refcount_order; the order may not exceed 6 (64 bits). */
export const MAX_REFCOUNT_ORDER = 6;
/** v2 images always have 16-bit refcounts. */
export const V2_REFCOUNT_ORDER = 4;

/** qemu refuses an active L1 table larger than 32 MiB (QCOW_MAX_L1_SIZE). */
export const MAX_L1_SIZE_BYTES = 0x2000000;
/** qemu refuses a refcount table larger than 8 MiB (QCOW_MAX_REFTABLE_SIZE). */
export const MAX_REFTABLE_SIZE_BYTES = 0x800000;

/** QCOW_MAX_SNAPSHOTS and QCOW_MAX_SNAPSHOTS_SIZE. */
export const MAX_SNAPSHOTS = 65536;
export const MAX_SNAPSHOTS_SIZE_BYTES: number = 1024 * 65536;
/** Snapshot extra data qemu accepts (QCOW_MAX_SNAPSHOT_EXTRA_DATA). */
export const MAX_SNAPSHOT_EXTRA_DATA = 1024;

/** Backing file name length limit (spec: must not be longer than 1023 bytes). */
export const MAX_BACKING_FILE_NAME = 1023;

/** Bitmaps: QCOW2_MAX_BITMAPS, BME_MAX_NAME_SIZE, the directory size limit, granularity bits. */
export const MAX_BITMAPS = 65535;
export const MAX_BITMAP_NAME_SIZE = 1023;
/** QCOW2_MAX_BITMAP_DIRECTORY_SIZE in block/qcow2.h is 1024 * QCOW2_MAX_BITMAPS (~64 MiB). */
export const MAX_BITMAP_DIRECTORY_SIZE: number = 1024 * 65535;
export const MIN_BITMAP_GRANULARITY_BITS = 9;
export const MAX_BITMAP_GRANULARITY_BITS = 31;

/** Feature name table entries are 48 bytes (type, bit, 46-byte name). */
export const FEATURE_NAME_ENTRY_SIZE = 48;
export const FEATURE_NAME_LENGTH = 46;

/** Largest integer an offset or size may have: fields above are refused, not rounded. */
export const MAX_SAFE_OFFSET: number = Number.MAX_SAFE_INTEGER;

/** L1/L2 entry masks (bits 9..55 hold a host offset). */
export const L1E_OFFSET_MASK_HI = 0x00ffffff; // bits 32..55 of the high word
export const L1E_OFFSET_MASK_LO = 0xfffffe00; // bits 9..31 of the low word
