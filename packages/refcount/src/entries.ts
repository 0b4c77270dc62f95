/**
 * Unchecked refcount entry access for the hot loops of this package (scans, allocation, walks):
 * the caller guarantees 0 ≤ index < entries of `bytes`. A 64-bit refcount above 2^53 is refused
 * (CORRUPT), as by getRefcount.
 * Same layout as @qcow2/format's getRefcount/setRefcount (sub-byte entries from the least
 * significant bit; wider entries big-endian).
 */

import { corrupt } from '@qcow2/format';

const TWO_POW_32 = 0x1_0000_0000;

export function readEntry(bytes: Uint8Array, index: number, order: number): number {
  switch (order) {
    case 0:
      return (bytes[index >>> 3]! >>> (index & 7)) & 1;
    case 1:
      return (bytes[index >>> 2]! >>> ((index & 3) << 1)) & 3;
    case 2:
      return (bytes[index >>> 1]! >>> ((index & 1) << 2)) & 15;
    case 3:
      return bytes[index]!;
    case 4: {
      const at = index << 1;
      return (bytes[at]! << 8) | bytes[at + 1]!;
    }
    case 5: {
      const at = index << 2;
      return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>> 0;
    }
    default: {
      const at = index * 8;
      const hi = ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>> 0;
      const lo = ((bytes[at + 4]! << 24) | (bytes[at + 5]! << 16) | (bytes[at + 6]! << 8) | bytes[at + 7]!) >>> 0;
      if (hi > 0x1f_ffff) {
        throw corrupt(`refcount block index ${index}: 64-bit refcount 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} exceeds 2^53`);
      }
      return hi * TWO_POW_32 + lo;
    }
  }
}
