import { corrupt, hex } from '@qcow2/format';
import { backwardBits, BackwardBitReader } from './zstd-bits.js';
import {
  decodeZstdBlockHeader,
  decodeZstdFrameHeader,
  ZSTD_MAX_BLOCK_SIZE,
  zstdBlockMaximumSize,
} from './zstd-frame.js';
import { FseTable, predefinedFseTables, readFseTable } from './zstd-fse.js';
import { decodeHuffmanLiterals, HuffmanTable, readHuffmanTable } from './zstd-huffman.js';
import { xxh64Low32 } from './xxh64.js';

/**
 * A Zstandard (RFC 8878) single-frame decoder that writes into a fixed buffer and must fill it
 * exactly: what qemu's zstd path does with a compressed cluster, but strict about a frame that
 * produces more. No dictionaries (qcow2 has none); a content checksum, when present, is verified. Every table and scratch buffer has a fixed
 * size; nothing is allocated from the frame's fields, and trailing bytes after the frame are
 * ignored.
 */

const LL_BASE = new Uint32Array([
  0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 20, 22, 24, 28, 32, 40, 48, 64, 128, 256,
  512, 1024, 2048, 4096, 8192, 16384, 32768, 65536,
]);
const LL_BITS = new Uint8Array([
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14,
  15, 16,
]);
const ML_BASE = new Uint32Array([
  3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
  32, 33, 34, 35, 37, 39, 41, 43, 47, 51, 59, 67, 83, 99, 131, 259, 515, 1027, 2051, 4099, 8195, 16387, 32771,
  65539,
]);
const ML_BITS = new Uint8Array([
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1,
  2, 2, 3, 3, 4, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
]);
/** 2^code: the offset value before its extra bits. */
const OF_BASE = Uint32Array.from({ length: 32 }, (_, code) => 2 ** code);
const MAX_LL_SYMBOL = 35;
const MAX_ML_SYMBOL = 52;
const MAX_OF_SYMBOL = 31;

/** State that lives across the blocks of one frame. */
class FrameState {
  readonly rep: [number, number, number] = [1, 4, 8];
  readonly huffman: HuffmanTable = new HuffmanTable();
  hasHuffman = false;
  readonly llOwn: FseTable = new FseTable();
  readonly ofOwn: FseTable = new FseTable();
  readonly mlOwn: FseTable = new FseTable();
  ll: FseTable | null = null;
  of: FseTable | null = null;
  ml: FseTable | null = null;

  reset(): this {
    this.rep[0] = 1;
    this.rep[1] = 4;
    this.rep[2] = 8;
    this.hasHuffman = false;
    this.ll = null;
    this.of = null;
    this.ml = null;
    return this;
  }
}

const frameState = new FrameState();
const sequenceBits = new BackwardBitReader();
let literalBuffer: Uint8Array | undefined;

/**
 * Decompresses the zstd frame at the start of `src` into `dst`, which must come out exactly
 * full. Returns the frame's length in bytes. `what` names the frame in error messages.
 */
export function zstdDecompressInto(src: Uint8Array, dst: Uint8Array, what = 'zstd frame'): number {
  const header = decodeZstdFrameHeader(src, what);
  if (header.dictionaryId !== 0) {
    throw corrupt(`${what}: frame needs dictionary ${header.dictionaryId}; qcow2 clusters use none`);
  }
  if (header.contentSize !== null && header.contentSize !== dst.length) {
    throw corrupt(`${what}: Frame_Content_Size is ${hex(header.contentSize)}, the cluster is ${hex(dst.length)} bytes`);
  }
  const blockMax = zstdBlockMaximumSize(header);
  const state = frameState.reset();
  const outLen = dst.length;
  let at = header.headerLength;
  let out = 0;
  for (;;) {
    const block = decodeZstdBlockHeader(src, at, what);
    const start = at + 3;
    if (block.size > blockMax) {
      throw corrupt(`${what}: block at offset ${hex(at)} has size ${hex(block.size)}, above Block_Maximum_Size ${hex(blockMax)}`);
    }
    if (block.type === 1) {
      if (start + 1 > src.length) throw corrupt(`${what}: truncated: RLE block at offset ${hex(at)} has no byte`);
      if (out + block.size > outLen) throw overflow(what, outLen, at);
      dst.fill(src[start]!, out, out + block.size);
      out += block.size;
      at = start + 1;
    } else {
      const end = start + block.size;
      if (end > src.length) {
        throw corrupt(`${what}: truncated: block at offset ${hex(at)} ends at ${hex(end)}, past the ${hex(src.length)} bytes available`);
      }
      if (block.type === 0) {
        if (out + block.size > outLen) throw overflow(what, outLen, at);
        dst.set(src.subarray(start, end), out);
        out += block.size;
      } else {
        const before = out;
        out = decodeCompressedBlock(src, start, end, dst, out, blockMax, state, what);
        if (out - before > blockMax) {
          throw corrupt(`${what}: block at offset ${hex(at)} regenerates ${hex(out - before)} bytes, above Block_Maximum_Size ${hex(blockMax)}`);
        }
      }
      at = end;
    }
    if (block.last) break;
  }
  if (header.hasChecksum && at + 4 > src.length) {
    throw corrupt(`${what}: truncated: content checksum at offset ${hex(at)} needs 4 bytes`);
  }
  if (out !== outLen) {
    throw corrupt(`${what}: frame ends after ${hex(out)} bytes, the cluster is ${hex(outLen)} bytes`);
  }
  if (header.hasChecksum) {
    // libzstd (and so qemu) verifies a checksum when the frame has one; qemu never writes one.
    const stored = (src[at]! | (src[at + 1]! << 8) | (src[at + 2]! << 16) | (src[at + 3]! << 24)) >>> 0;
    const actual = xxh64Low32(dst);
    if (stored !== actual) {
      throw corrupt(`${what}: content checksum ${hex(stored)} at offset ${hex(at)} does not match the data (${hex(actual)})`);
    }
    at += 4;
  }
  return at;
}

function overflow(what: string, outLen: number, at: number): Error {
  return corrupt(`${what}: produces more than the ${hex(outLen)}-byte cluster (block at offset ${hex(at)})`);
}

function decodeCompressedBlock(
  src: Uint8Array,
  start: number,
  end: number,
  dst: Uint8Array,
  out: number,
  blockMax: number,
  state: FrameState,
  what: string,
): number {
  // --- Literals section ---
  let p = start;
  if (p >= end) throw corrupt(`${what}: compressed block at offset ${hex(start)} is empty`);
  const b0 = src[p]!;
  const litType = b0 & 3;
  const sizeFormat = (b0 >>> 2) & 3;
  let litSrc: Uint8Array;
  let litPos: number;
  let litSize: number;
  if (litType < 2) {
    let headerSize: number;
    if ((sizeFormat & 1) === 0) {
      litSize = b0 >>> 3;
      headerSize = 1;
    } else if (sizeFormat === 1) {
      headerSize = 2;
      litSize = (b0 >>> 4) | ((src[p + 1] ?? 0) << 4);
    } else {
      headerSize = 3;
      litSize = (b0 >>> 4) | ((src[p + 1] ?? 0) << 4) | ((src[p + 2] ?? 0) << 12);
    }
    p += headerSize;
    if (litSize > blockMax) {
      throw corrupt(`${what}: literals at offset ${hex(start)} regenerate ${hex(litSize)} bytes, above Block_Maximum_Size ${hex(blockMax)}`);
    }
    if (litType === 0) {
      if (p + litSize > end) throw corrupt(`${what}: raw literals at offset ${hex(start)} run past the block end ${hex(end)}`);
      litSrc = src;
      litPos = p;
      p += litSize;
    } else {
      if (p + 1 > end) throw corrupt(`${what}: RLE literals at offset ${hex(start)} run past the block end ${hex(end)}`);
      litSrc = literals();
      litSrc.fill(src[p]!, 0, litSize);
      litPos = 0;
      p += 1;
    }
  } else {
    let headerSize: number;
    let compressedSize: number;
    let streams: 1 | 4 = 4;
    const b1 = src[p + 1] ?? 0;
    const b2 = src[p + 2] ?? 0;
    if (sizeFormat < 2) {
      headerSize = 3;
      if (sizeFormat === 0) streams = 1;
      litSize = (b0 >>> 4) | ((b1 & 0x3f) << 4);
      compressedSize = (b1 >>> 6) | (b2 << 2);
    } else if (sizeFormat === 2) {
      headerSize = 4;
      const b3 = src[p + 3] ?? 0;
      litSize = (b0 >>> 4) | (b1 << 4) | ((b2 & 3) << 12);
      compressedSize = (b2 >>> 2) | (b3 << 6);
    } else {
      headerSize = 5;
      const b3 = src[p + 3] ?? 0;
      const b4 = src[p + 4] ?? 0;
      litSize = (b0 >>> 4) | (b1 << 4) | ((b2 & 0x3f) << 12);
      compressedSize = (b2 >>> 6) | (b3 << 2) | (b4 << 10);
    }
    p += headerSize;
    if (litSize > blockMax) {
      throw corrupt(`${what}: literals at offset ${hex(start)} regenerate ${hex(litSize)} bytes, above Block_Maximum_Size ${hex(blockMax)}`);
    }
    const litEnd = p + compressedSize;
    if (litEnd > end) {
      throw corrupt(`${what}: compressed literals at offset ${hex(start)} (${hex(compressedSize)} bytes) run past the block end ${hex(end)}`);
    }
    if (litType === 2) {
      p += readHuffmanTable(state.huffman, src, p, litEnd, what);
      state.hasHuffman = true;
    } else if (!state.hasHuffman) {
      throw corrupt(`${what}: treeless literals at offset ${hex(start)} with no previous Huffman table`);
    }
    litSrc = literals();
    decodeHuffmanLiterals(state.huffman, src, p, litEnd, streams, litSrc, litSize, what);
    litPos = 0;
    p = litEnd;
  }
  const litEnd = litPos + litSize;

  // --- Sequences section header ---
  if (p >= end) throw corrupt(`${what}: block at offset ${hex(start)} has no sequences section`);
  const s0 = src[p]!;
  let nbSeq: number;
  if (s0 < 128) {
    nbSeq = s0;
    p += 1;
  } else if (s0 < 255) {
    if (p + 2 > end) throw corrupt(`${what}: sequences header at offset ${hex(p)} is truncated`);
    nbSeq = ((s0 - 128) << 8) + src[p + 1]!;
    p += 2;
  } else {
    if (p + 3 > end) throw corrupt(`${what}: sequences header at offset ${hex(p)} is truncated`);
    nbSeq = src[p + 1]! + (src[p + 2]! << 8) + 0x7f00;
    p += 3;
  }
  if (nbSeq === 0) {
    if (p !== end) throw corrupt(`${what}: block at offset ${hex(start)} has ${end - p} bytes after a sequences section with no sequences`);
    if (out + litSize > dst.length) throw overflow(what, dst.length, start);
    dst.set(litSrc.subarray(litPos, litEnd), out);
    return out + litSize;
  }
  if (p >= end) throw corrupt(`${what}: sequences header at offset ${hex(p)} has no compression modes`);
  const modes = src[p++]!;
  if ((modes & 3) !== 0) throw corrupt(`${what}: reserved bits of the compression modes at offset ${hex(p - 1)} are set`);
  const [preLL, preOF, preML] = predefinedFseTables();
  let table: FseTable;
  [table, p] = sequenceTable((modes >>> 6) & 3, state.ll, state.llOwn, preLL, src, p, end, 9, MAX_LL_SYMBOL, 'literal length', what);
  const ll = (state.ll = table);
  [table, p] = sequenceTable((modes >>> 4) & 3, state.of, state.ofOwn, preOF, src, p, end, 8, MAX_OF_SYMBOL, 'offset', what);
  const of = (state.of = table);
  [table, p] = sequenceTable((modes >>> 2) & 3, state.ml, state.mlOwn, preML, src, p, end, 9, MAX_ML_SYMBOL, 'match length', what);
  const ml = (state.ml = table);

  // --- Sequences bitstream (position kept in a local: this is the hot loop) ---
  const bitsStart = p;
  let pos = sequenceBits.reset(src, p, end, what).position;
  pos -= ll.accuracyLog;
  let llState = backwardBits(src, bitsStart, pos, ll.accuracyLog);
  pos -= of.accuracyLog;
  let ofState = backwardBits(src, bitsStart, pos, of.accuracyLog);
  pos -= ml.accuracyLog;
  let mlState = backwardBits(src, bitsStart, pos, ml.accuracyLog);
  const rep = state.rep;
  const outLen = dst.length;
  const llSym = ll.symbol;
  const llNb = ll.nbBits;
  const llBase = ll.baseline;
  const ofSym = of.symbol;
  const ofNb = of.nbBits;
  const ofBase = of.baseline;
  const mlSym = ml.symbol;
  const mlNb = ml.nbBits;
  const mlBase = ml.baseline;
  for (let i = 0; i < nbSeq; i++) {
    const llCode = llSym[llState]!;
    const ofCode = ofSym[ofState]!;
    const mlCode = mlSym[mlState]!;
    pos -= ofCode;
    const offsetValue = OF_BASE[ofCode]! + backwardBits(src, bitsStart, pos, ofCode);
    const mlBits = ML_BITS[mlCode]!;
    pos -= mlBits;
    const matchLength = ML_BASE[mlCode]! + (mlBits === 0 ? 0 : backwardBits(src, bitsStart, pos, mlBits));
    const llBits = LL_BITS[llCode]!;
    pos -= llBits;
    const literalLength = LL_BASE[llCode]! + (llBits === 0 ? 0 : backwardBits(src, bitsStart, pos, llBits));
    let offset: number;
    if (offsetValue > 3) {
      offset = offsetValue - 3;
      rep[2] = rep[1];
      rep[1] = rep[0];
      rep[0] = offset;
    } else {
      const index = offsetValue - 1 + (literalLength === 0 ? 1 : 0);
      if (index === 0) {
        offset = rep[0];
      } else {
        offset = index === 3 ? rep[0] - 1 : rep[index]!;
        if (index !== 1) rep[2] = rep[1];
        rep[1] = rep[0];
        rep[0] = offset;
      }
    }
    if (i + 1 < nbSeq) {
      let n = llNb[llState]!;
      pos -= n;
      llState = llBase[llState]! + backwardBits(src, bitsStart, pos, n);
      n = mlNb[mlState]!;
      pos -= n;
      mlState = mlBase[mlState]! + backwardBits(src, bitsStart, pos, n);
      n = ofNb[ofState]!;
      pos -= n;
      ofState = ofBase[ofState]! + backwardBits(src, bitsStart, pos, n);
    }
    if (pos < 0) {
      throw corrupt(`${what}: sequences bitstream at offset ${hex(p)} is too short for ${nbSeq} sequences (at sequence ${i})`);
    }
    // Execute: literals, then the match.
    if (litPos + literalLength > litEnd) {
      throw corrupt(`${what}: sequence ${i} in block at offset ${hex(start)} uses more literals than the ${litSize} decoded`);
    }
    if (out + literalLength + matchLength > outLen) throw overflow(what, outLen, start);
    if (literalLength < 64) {
      for (let k = 0; k < literalLength; k++) dst[out + k] = litSrc[litPos + k]!;
    } else {
      dst.set(litSrc.subarray(litPos, litPos + literalLength), out);
    }
    out += literalLength;
    litPos += literalLength;
    if (offset === 0 || offset > out) {
      throw corrupt(`${what}: sequence ${i} in block at offset ${hex(start)} has offset ${offset}, reaching before the start of the cluster (at output ${hex(out)})`);
    }
    let from = out - offset;
    if (offset >= matchLength && matchLength >= 64) {
      dst.copyWithin(out, from, from + matchLength);
      out += matchLength;
    } else {
      const stop = out + matchLength;
      while (out < stop) dst[out++] = dst[from++]!;
    }
  }
  if (pos !== 0) {
    throw corrupt(`${what}: sequences bitstream at offset ${hex(p)} has ${pos} unused bits after ${nbSeq} sequences`);
  }
  const rest = litEnd - litPos;
  if (out + rest > outLen) throw overflow(what, outLen, start);
  dst.set(litSrc.subarray(litPos, litEnd), out);
  return out + rest;
}

function literals(): Uint8Array {
  literalBuffer ??= new Uint8Array(ZSTD_MAX_BLOCK_SIZE);
  return literalBuffer;
}

function sequenceTable(
  mode: number,
  previous: FseTable | null,
  own: FseTable,
  predefined: FseTable,
  src: Uint8Array,
  p: number,
  end: number,
  maxLog: number,
  maxSymbol: number,
  name: string,
  what: string,
): [FseTable, number] {
  switch (mode) {
    case 0:
      return [predefined, p];
    case 1: {
      if (p >= end) throw corrupt(`${what}: ${name} RLE symbol at offset ${hex(p)} is missing`);
      const symbol = src[p]!;
      if (symbol > maxSymbol) throw corrupt(`${what}: ${name} RLE symbol ${symbol} at offset ${hex(p)} exceeds ${maxSymbol}`);
      return [own.setRle(symbol), p + 1];
    }
    case 2:
      return [own, p + readFseTable(own, src, p, end, maxLog, maxSymbol, `${what}: ${name} table`)];
    default:
      if (previous === null) {
        throw corrupt(`${what}: ${name} table at offset ${hex(p)} repeats a table no earlier block defined`);
      }
      return [previous, p];
  }
}
