import { corrupt, hex } from '@qcow2/format';
import { backwardBits, BackwardBitReader } from './zstd-bits.js';
import { FseTable, readFseTable } from './zstd-fse.js';

/**
 * Huffman-coded literals (RFC 8878 §4.2): the tree description (weights, direct or
 * FSE-compressed) and the decoding of 1 or 4 backward streams. Tables have fixed capacity.
 */

const HUF_MAX_BITS = 11;
const HUF_TABLE_SIZE = 1 << HUF_MAX_BITS;

export class HuffmanTable {
  maxBits = 0;
  /** Indexed by the next maxBits bits: the symbol and how many bits its code uses. */
  readonly symbol: Uint8Array = new Uint8Array(HUF_TABLE_SIZE);
  readonly nbBits: Uint8Array = new Uint8Array(HUF_TABLE_SIZE);
}

const weights = new Uint8Array(256);
const rankStart = new Uint32Array(HUF_MAX_BITS + 2);
const weightTable = new FseTable();
const bits = new BackwardBitReader();

/**
 * Reads a Huffman tree description at `src[at..end)` into `table`; returns bytes consumed.
 */
export function readHuffmanTable(
  table: HuffmanTable,
  src: Uint8Array,
  at: number,
  end: number,
  what: string,
): number {
  if (at >= end) throw corrupt(`${what}: Huffman tree description at offset ${hex(at)} is missing`);
  const headerByte = src[at]!;
  let count: number;
  let consumed: number;
  if (headerByte >= 128) {
    // Direct representation: 4 bits per weight.
    count = headerByte - 127;
    consumed = 1 + ((count + 1) >>> 1);
    if (at + consumed > end) {
      throw corrupt(`${what}: Huffman weights at offset ${hex(at)} run past offset ${hex(end)}`);
    }
    for (let i = 0; i < count; i++) {
      const byte = src[at + 1 + (i >>> 1)]!;
      weights[i] = i % 2 === 0 ? byte >>> 4 : byte & 15;
    }
  } else {
    // FSE-compressed weights: a table description, then two interleaved states.
    const size = headerByte;
    consumed = 1 + size;
    const streamEnd = at + consumed;
    if (streamEnd > end || size === 0) {
      throw corrupt(`${what}: Huffman weights at offset ${hex(at)} (${size} bytes) run past offset ${hex(end)}`);
    }
    const descBytes = readFseTable(weightTable, src, at + 1, streamEnd, 6, 255, what);
    bits.reset(src, at + 1 + descBytes, streamEnd, what);
    const log = weightTable.accuracyLog;
    let s1 = bits.read(log);
    let s2 = bits.read(log);
    if (bits.position < 0) throw corrupt(`${what}: Huffman weight stream at offset ${hex(at)} is too short`);
    const sym = weightTable.symbol;
    const nb = weightTable.nbBits;
    const base = weightTable.baseline;
    count = 0;
    for (;;) {
      if (count > 254) throw corrupt(`${what}: Huffman weight stream at offset ${hex(at)} encodes more than 255 weights`);
      weights[count++] = sym[s1]!;
      s1 = base[s1]! + bits.read(nb[s1]!);
      if (bits.position < 0) {
        weights[count++] = sym[s2]!;
        break;
      }
      if (count > 254) throw corrupt(`${what}: Huffman weight stream at offset ${hex(at)} encodes more than 255 weights`);
      weights[count++] = sym[s2]!;
      s2 = base[s2]! + bits.read(nb[s2]!);
      if (bits.position < 0) {
        weights[count++] = sym[s1]!;
        break;
      }
    }
    if (count > 255) throw corrupt(`${what}: Huffman weight stream at offset ${hex(at)} encodes more than 255 weights`);
  }
  buildHuffmanTable(table, count, at, what);
  return consumed;
}

/** Builds the table from `count` transmitted weights plus the implied last one. */
function buildHuffmanTable(table: HuffmanTable, count: number, at: number, what: string): void {
  let sum = 0;
  for (let i = 0; i < count; i++) {
    const w = weights[i]!;
    if (w > HUF_MAX_BITS) throw corrupt(`${what}: Huffman weight ${w} at offset ${hex(at)} exceeds ${HUF_MAX_BITS}`);
    if (w > 0) sum += 1 << (w - 1);
  }
  if (sum === 0) throw corrupt(`${what}: Huffman tree at offset ${hex(at)} has no symbols`);
  const maxBits = 32 - Math.clz32(sum); // highest bit of sum, plus one
  if (maxBits > HUF_MAX_BITS) {
    throw corrupt(`${what}: Huffman tree at offset ${hex(at)} needs ${maxBits}-bit codes (at most ${HUF_MAX_BITS})`);
  }
  const rest = (1 << maxBits) - sum;
  if ((rest & (rest - 1)) !== 0) {
    throw corrupt(`${what}: Huffman weights at offset ${hex(at)} do not complete a tree`);
  }
  const lastWeight = 32 - Math.clz32(rest); // log2(rest) + 1
  weights[count] = lastWeight;
  const symbols = count + 1;
  // Symbols of weight 1 (the longest codes) come first, each weight's symbols in order.
  rankStart.fill(0);
  for (let i = 0; i < symbols; i++) {
    const w = weights[i]!;
    if (w > 0) rankStart[w]! += 1 << (w - 1);
  }
  let next = 0;
  for (let w = 1; w <= maxBits; w++) {
    const n = rankStart[w]!;
    rankStart[w] = next;
    next += n;
  }
  for (let i = 0; i < symbols; i++) {
    const w = weights[i]!;
    if (w === 0) continue;
    const span = 1 << (w - 1);
    const start = rankStart[w]!;
    rankStart[w] = start + span;
    const nb = maxBits + 1 - w;
    // Plain loops: spans are mostly a few entries, where fill()'s call costs more than the work.
    const symbolOf = table.symbol;
    const bitsOf = table.nbBits;
    for (let k = start; k < start + span; k++) {
      symbolOf[k] = i;
      bitsOf[k] = nb;
    }
  }
  table.maxBits = maxBits;
}

const streamBits = new BackwardBitReader();

/** Decodes one Huffman stream `src[start, end)` into `out[from, to)`. */
function decodeStream(
  table: HuffmanTable,
  src: Uint8Array,
  start: number,
  end: number,
  out: Uint8Array,
  from: number,
  to: number,
  what: string,
): void {
  let position = streamBits.reset(src, start, end, what).position;
  const maxBits = table.maxBits;
  const sym = table.symbol;
  const nb = table.nbBits;
  const mask = (1 << maxBits) - 1;
  let i = from;
  // Fast path while a whole code's bits lie inside the stream: 3 bytes cover 7 + 11 bits.
  for (; i < to; i++) {
    const low = position - maxBits;
    if (low < 0) break;
    const b = start + (low >>> 3);
    const idx = ((src[b]! | (src[b + 1]! << 8) | (src[b + 2]! << 16)) >>> (low & 7)) & mask;
    out[i] = sym[idx]!;
    position -= nb[idx]!;
  }
  for (; i < to; i++) {
    const idx = backwardBits(src, start, position - maxBits, maxBits);
    out[i] = sym[idx]!;
    position -= nb[idx]!;
  }
  if (position !== 0) {
    throw corrupt(`${what}: Huffman stream at offset ${hex(start)} ${position < 0 ? 'is too short' : 'has unused bits'} for ${to - from} literals`);
  }
}

/**
 * Decodes Huffman-coded literals `src[start, end)` (1 stream, or 4 behind a 6-byte jump
 * table) into `out[0, size)`.
 */
export function decodeHuffmanLiterals(
  table: HuffmanTable,
  src: Uint8Array,
  start: number,
  end: number,
  streams: 1 | 4,
  out: Uint8Array,
  size: number,
  what: string,
): void {
  if (streams === 1) {
    decodeStream(table, src, start, end, out, 0, size, what);
    return;
  }
  if (start + 6 > end) throw corrupt(`${what}: literals jump table at offset ${hex(start)} is truncated`);
  const s1 = src[start]! | (src[start + 1]! << 8);
  const s2 = src[start + 2]! | (src[start + 3]! << 8);
  const s3 = src[start + 4]! | (src[start + 5]! << 8);
  const b1 = start + 6;
  const b2 = b1 + s1;
  const b3 = b2 + s2;
  const b4 = b3 + s3;
  if (b4 >= end) throw corrupt(`${what}: literals jump table at offset ${hex(start)} points past offset ${hex(end)}`);
  const segment = (size + 3) >>> 2;
  if (segment * 3 > size) {
    throw corrupt(`${what}: ${size} literals at offset ${hex(start)} are too few for 4 streams`);
  }
  decodeStream(table, src, b1, b2, out, 0, segment, what);
  decodeStream(table, src, b2, b3, out, segment, 2 * segment, what);
  decodeStream(table, src, b3, b4, out, 2 * segment, 3 * segment, what);
  decodeStream(table, src, b4, end, out, 3 * segment, size, what);
}
