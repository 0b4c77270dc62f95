/**
 * 64-bit values as qemu's check prints and compares them. Offsets in L1/L2 entries reach 2^56
 * (compressed descriptors up to 2^61), past what a JS number holds exactly: such values are kept
 * as a bigint and never used for I/O (they lie far past the end of any file), only printed.
 */

/** A host offset: a number when below 2^53, else a bigint. */
export type HostOffset = number | bigint;

const TWO_POW_32 = 0x1_0000_0000;

/** `hi * 2^32 + lo` as a number when exact, else a bigint. */
export function u64(hi: number, lo: number): HostOffset {
  return hi <= 0x1f_ffff ? hi * TWO_POW_32 + lo : (BigInt(hi) << 32n) | BigInt(lo);
}

/** printf's `%" PRIx64`: lower-case hex, no prefix. */
export function hex64(hi: number, lo: number): string {
  return hi === 0 ? (lo >>> 0).toString(16) : hi.toString(16) + (lo >>> 0).toString(16).padStart(8, '0');
}

/** `%" PRIx64` of an offset. */
export function hexOf(value: HostOffset): string {
  return value.toString(16);
}

/** `%#" PRIx64`: `0x` prefix except for zero, as glibc prints it. */
export function hexAlt(value: HostOffset): string {
  return value === 0 || value === 0n ? '0' : `0x${value.toString(16)}`;
}

/** `offset + delta` keeping exactness. */
export function addOffset(offset: HostOffset, delta: number): HostOffset {
  if (typeof offset === 'bigint') return offset + BigInt(delta);
  const sum = offset + delta;
  return Number.isSafeInteger(sum) ? sum : BigInt(offset) + BigInt(delta);
}

/** Equality of two offsets of either representation. */
export function sameOffset(a: HostOffset, b: HostOffset): boolean {
  return typeof a === typeof b ? a === b : BigInt(a) === BigInt(b);
}

/** `offset % clusterSize !== 0`. */
export function offsetIntoCluster(offset: HostOffset, clusterSize: number): boolean {
  return typeof offset === 'bigint' ? offset % BigInt(clusterSize) !== 0n : offset % clusterSize !== 0;
}

/** `offset >> clusterBits`, exact for every 64-bit offset below 2^(53 + clusterBits). */
export function clusterIndexOf(offset: HostOffset, clusterBits: number): number {
  if (typeof offset === 'number') return Math.floor(offset / 2 ** clusterBits);
  const index = offset >> BigInt(clusterBits);
  return index <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(index) : Number.MAX_SAFE_INTEGER;
}

/** glibc's strerror text for the errno values a check reports. */
export const EIO_TEXT = 'Input/output error';
export const EINVAL_TEXT = 'Invalid argument';
export const EFBIG_TEXT = 'File too large';
export const ENOMEM_TEXT = 'Cannot allocate memory';
