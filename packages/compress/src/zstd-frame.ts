import { corrupt, hex } from '@qcow2/format';

/**
 * Zstandard frame header and block headers (RFC 8878 §3.1.1): enough to find where a frame ends,
 * so the junk qcow2 leaves after it (the L2 descriptor counts 512-byte sectors) can be cut off
 * before the bytes go to a decoder that insists on exact input.
 */

export const ZSTD_MAGIC = 0xfd2fb528;
/** Blocks never regenerate more than 128 KiB (Block_Maximum_Size's upper bound). */
export const ZSTD_MAX_BLOCK_SIZE: number = 128 * 1024;
/**
 * The largest window qemu's libzstd decodes by default (ZSTD_WINDOWLOG_LIMIT_DEFAULT = 27). A
 * frame asking for more is refused, as qemu refuses it; nothing is ever allocated from it.
 */
export const ZSTD_MAX_WINDOW_SIZE: number = 1 << 27;

export interface ZstdFrameHeader {
  /** Bytes of magic number plus frame header: where the first block header starts. */
  readonly headerLength: number;
  /** Frame_Content_Size, or null when the frame does not record it. */
  readonly contentSize: number | null;
  /** Window_Size (for single-segment frames, the content size). */
  readonly windowSize: number;
  readonly singleSegment: boolean;
  /** Whether a 4-byte XXH64 content checksum follows the last block. */
  readonly hasChecksum: boolean;
  /** Dictionary_ID, 0 when absent. */
  readonly dictionaryId: number;
}

function readLE(src: Uint8Array, at: number, n: number): number {
  let v = 0;
  for (let i = n - 1; i >= 0; i--) v = v * 256 + src[at + i]!;
  return v;
}

/**
 * Decodes the magic number and frame header at the start of `src`. `what` names the frame in
 * errors. Throws CORRUPT for anything but a well-formed zstd frame header.
 */
export function decodeZstdFrameHeader(src: Uint8Array, what = 'zstd frame'): ZstdFrameHeader {
  if (src.length < 6) {
    throw corrupt(`${what}: ${src.length} bytes is too short for a frame header`);
  }
  const magic = (src[0]! | (src[1]! << 8) | (src[2]! << 16) | (src[3]! << 24)) >>> 0;
  if (magic !== ZSTD_MAGIC) {
    throw corrupt(`${what}: magic number ${hex(magic)} at offset 0x0 is not ${hex(ZSTD_MAGIC)}`);
  }
  const fhd = src[4]!;
  const fcsFlag = fhd >>> 6;
  const singleSegment = (fhd & 0x20) !== 0;
  if ((fhd & 0x08) !== 0) {
    throw corrupt(`${what}: reserved bit 3 of the frame header descriptor (offset 0x4) is set`);
  }
  const hasChecksum = (fhd & 0x04) !== 0;
  const dictFlag = fhd & 3;
  let at = 5;
  let windowSize = 0;
  if (!singleSegment) {
    const wd = src[at]!;
    at += 1;
    const exponent = wd >>> 3;
    const windowLog = 10 + exponent;
    const windowBase = 2 ** windowLog;
    windowSize = windowBase + (windowBase / 8) * (wd & 7);
  }
  const dictBytes = dictFlag === 3 ? 4 : dictFlag;
  const fcsBytes = fcsFlag === 0 ? (singleSegment ? 1 : 0) : 1 << fcsFlag;
  const headerLength = at + dictBytes + fcsBytes;
  if (src.length < headerLength) {
    throw corrupt(`${what}: frame header needs ${headerLength} bytes, only ${src.length} available`);
  }
  const dictionaryId = readLE(src, at, dictBytes);
  at += dictBytes;
  let contentSize: number | null = null;
  if (fcsBytes === 8) {
    const hi = readLE(src, at + 4, 4);
    if (hi > 0x1f_ffff) {
      throw corrupt(`${what}: Frame_Content_Size at offset ${hex(at)} exceeds 2^53`);
    }
    contentSize = hi * 0x1_0000_0000 + readLE(src, at, 4);
  } else if (fcsBytes > 0) {
    contentSize = readLE(src, at, fcsBytes) + (fcsBytes === 2 ? 256 : 0);
  }
  if (singleSegment) windowSize = contentSize ?? 0;
  if (windowSize > ZSTD_MAX_WINDOW_SIZE) {
    throw corrupt(`${what}: window size ${hex(windowSize)} exceeds the ${hex(ZSTD_MAX_WINDOW_SIZE)} bytes qemu's zstd decodes`);
  }
  return { headerLength, contentSize, windowSize, singleSegment, hasChecksum, dictionaryId };
}

export interface ZstdBlockHeader {
  readonly last: boolean;
  /** 0 raw, 1 RLE, 2 compressed (3, reserved, is refused). */
  readonly type: 0 | 1 | 2;
  /** Block_Size: for RLE the regenerated size, otherwise the bytes of content. */
  readonly size: number;
}

/** Decodes the 3-byte block header at `at`. */
export function decodeZstdBlockHeader(src: Uint8Array, at: number, what = 'zstd frame'): ZstdBlockHeader {
  if (at + 3 > src.length) {
    throw corrupt(`${what}: truncated: block header at offset ${hex(at)} needs 3 bytes, only ${Math.max(0, src.length - at)} available`);
  }
  const h = src[at]! | (src[at + 1]! << 8) | (src[at + 2]! << 16);
  const type = (h >>> 1) & 3;
  if (type === 3) {
    throw corrupt(`${what}: block at offset ${hex(at)} has the reserved block type 3`);
  }
  return { last: (h & 1) !== 0, type: type as 0 | 1 | 2, size: h >>> 3 };
}

/** Block_Maximum_Size for a frame: the smaller of the window and 128 KiB. */
export function zstdBlockMaximumSize(header: ZstdFrameHeader): number {
  return Math.min(header.windowSize, ZSTD_MAX_BLOCK_SIZE);
}

/**
 * The exact length in bytes of the zstd frame at the start of `src` (header, blocks and
 * checksum), found by walking the block headers. Throws CORRUPT when the frame is malformed or
 * runs past the end of `src`.
 */
export function zstdFrameLength(src: Uint8Array, what = 'zstd frame'): number {
  const header = decodeZstdFrameHeader(src, what);
  const blockMax = zstdBlockMaximumSize(header);
  let at = header.headerLength;
  for (;;) {
    const block = decodeZstdBlockHeader(src, at, what);
    if (block.size > blockMax) {
      throw corrupt(`${what}: block at offset ${hex(at)} has size ${hex(block.size)}, above Block_Maximum_Size ${hex(blockMax)}`);
    }
    at += 3 + (block.type === 1 ? 1 : block.size);
    if (at > src.length) {
      throw corrupt(`${what}: truncated: block ending at offset ${hex(at)} runs past the ${hex(src.length)} bytes available`);
    }
    if (block.last) break;
  }
  if (header.hasChecksum) {
    at += 4;
    if (at > src.length) {
      throw corrupt(`${what}: truncated: content checksum ends at offset ${hex(at)}, past the ${hex(src.length)} bytes available`);
    }
  }
  return at;
}
