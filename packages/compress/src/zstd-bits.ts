import { corrupt, hex } from '@qcow2/format';

/**
 * Zstandard's backward bitstream (RFC 8878 §4.1): written forward, read from the end. The last
 * byte carries a 1-bit end marker above the data; bits are then read from high positions to
 * low. Reading past the start yields zero bits and leaves `position` negative ("overflow"),
 * which callers test for.
 */
export class BackwardBitReader {
  private src: Uint8Array = new Uint8Array(0);
  private start = 0;
  /** Unread bits below the current position; negative after an overflow. */
  position = 0;

  /** Starts reading the stream `src[start, end)`. */
  reset(src: Uint8Array, start: number, end: number, what: string): this {
    if (end <= start) throw corrupt(`${what}: empty bitstream at offset ${hex(start)}`);
    const last = src[end - 1]!;
    if (last === 0) {
      throw corrupt(`${what}: bitstream ending at offset ${hex(end)} has no end marker (last byte is 0)`);
    }
    this.src = src;
    this.start = start;
    this.position = (end - start - 1) * 8 + (31 - Math.clz32(last));
    return this;
  }

  /** The `n` (0..24) bits below `position`, without consuming them. */
  peek(n: number): number {
    const pos = this.position - n;
    if (pos >= 0) {
      const src = this.src;
      const i = this.start + (pos >>> 3);
      const word = src[i]! | ((src[i + 1] ?? 0) << 8) | ((src[i + 2] ?? 0) << 16) | ((src[i + 3] ?? 0) << 24);
      return (word >>> (pos & 7)) & ((1 << n) - 1);
    }
    // Past the start: the available bits, shifted up, with zeros below.
    const have = this.position;
    if (have <= 0) return 0;
    const src = this.src;
    const i = this.start;
    const word = src[i]! | ((src[i + 1] ?? 0) << 8) | ((src[i + 2] ?? 0) << 16) | ((src[i + 3] ?? 0) << 24);
    return ((word & ((1 << have) - 1)) << (n - have)) >>> 0;
  }

  /** Consumes `n` bits (after a peek). */
  skip(n: number): void {
    this.position -= n;
  }

  /** Reads `n` (0..31) bits. */
  read(n: number): number {
    if (n === 0) return 0;
    if (n > 24) {
      const hi = this.read(n - 24);
      return hi * 0x100_0000 + this.read(24);
    }
    const v = this.peek(n);
    this.position -= n;
    return v;
  }
}

/**
 * The `n` (0..31) bits of a backward stream starting at byte `start` whose lowest bit is at bit
 * position `low` (which may be negative: bits below 0 read as zero). A plain function over
 * integers, for the hot loops that keep their position in a local.
 */
export function backwardBits(src: Uint8Array, start: number, low: number, n: number): number {
  if (n > 24) {
    return backwardBits(src, start, low + 24, n - 24) * 0x100_0000 + backwardBits(src, start, low, 24);
  }
  if (low >= 0) {
    const i = start + (low >>> 3);
    // Bytes past the end of src read as undefined, which bitwise operators treat as 0.
    return ((src[i]! | (src[i + 1]! << 8) | (src[i + 2]! << 16) | (src[i + 3]! << 24)) >>> (low & 7)) & ((1 << n) - 1);
  }
  const have = low + n;
  if (have <= 0) return 0;
  const i = start;
  const word = src[i]! | (src[i + 1]! << 8) | (src[i + 2]! << 16) | (src[i + 3]! << 24);
  return ((word & ((1 << have) - 1)) << (n - have)) >>> 0;
}
