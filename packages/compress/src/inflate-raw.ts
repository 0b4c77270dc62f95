import { corrupt, hex } from '@qcow2/format';

/**
 * A raw DEFLATE (RFC 1951) decoder that writes into a fixed buffer and must fill it exactly:
 * what qemu's `inflate(Z_FINISH)` into a cluster does, but strict at both ends. It stops at the
 * end of the final block (trailing bytes are ignored), throws when the stream would produce more
 * than `dst.length` bytes, and allocates only fixed-size tables — never from the stream's fields.
 */

const MAX_BITS = 15;

/** Length codes 257..285: base lengths and extra bits. */
const LENGTH_BASE = new Uint16Array([
  3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
  163, 195, 227, 258,
]);
const LENGTH_EXTRA = new Uint8Array([
  0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
]);
/** Distance codes 0..29. */
const DIST_BASE = new Uint16Array([
  1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049,
  3073, 4097, 6145, 8193, 12289, 16385, 24577,
]);
const DIST_EXTRA = new Uint8Array([
  0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13,
]);
/** The order in which code length code lengths are sent. */
const CODE_LENGTH_ORDER = new Uint8Array([
  16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
]);

/**
 * A decoding table indexed by the next `bits` input bits (LSB first): each entry is
 * `symbol << 4 | codeLength`, 0 where no code maps (an incomplete code).
 */
interface HuffmanTable {
  table: Uint16Array;
  bits: number;
}

/** Reusable scratch: the decoder is synchronous, so one set per module is enough. */
const litLenTable: HuffmanTable = { table: new Uint16Array(1 << MAX_BITS), bits: 0 };
const distTable: HuffmanTable = { table: new Uint16Array(1 << MAX_BITS), bits: 0 };
const codeLenTable: HuffmanTable = { table: new Uint16Array(1 << 7), bits: 0 };
const lengths = new Uint8Array(288 + 32);
const blCount = new Uint16Array(MAX_BITS + 1);
const nextCode = new Uint16Array(MAX_BITS + 1);

let fixedLitLen: HuffmanTable | undefined;
let fixedDist: HuffmanTable | undefined;

/**
 * Builds a canonical Huffman decoding table from code lengths. Returns an error description
 * when the lengths do not make a code zlib accepts: over-subscribed, or incomplete (allowed, as
 * zlib allows it, only for a literal/length or distance code that is a single 1-bit code or
 * has no codes at all).
 */
function buildTable(
  out: HuffmanTable,
  codeLengths: Uint8Array,
  start: number,
  count: number,
  allowSingle: boolean,
): string | undefined {
  blCount.fill(0);
  let maxLen = 0;
  for (let i = 0; i < count; i++) {
    const len = codeLengths[start + i]!;
    blCount[len]!++;
    if (len > maxLen) maxLen = len;
  }
  blCount[0] = 0;
  // Over-subscription check (Kraft sum > 1).
  let left = 1;
  for (let len = 1; len <= MAX_BITS; len++) {
    left = (left << 1) - blCount[len]!;
    if (left < 0) return 'over-subscribed';
  }
  if (left > 0 && maxLen > 0 && !(allowSingle && maxLen === 1)) return 'incomplete';
  let code = 0;
  for (let len = 1; len <= MAX_BITS; len++) {
    code = (code + blCount[len - 1]!) << 1;
    nextCode[len] = code;
  }
  const bits = Math.max(maxLen, 1);
  const size = 1 << bits;
  const table = out.table;
  table.fill(0, 0, size);
  for (let sym = 0; sym < count; sym++) {
    const len = codeLengths[start + sym]!;
    if (len === 0) continue;
    const c = nextCode[len]!;
    nextCode[len] = c + 1;
    // Codes are sent MSB first into an LSB-first stream: index by the reversed code.
    let rev = 0;
    for (let i = 0; i < len; i++) rev |= ((c >>> i) & 1) << (len - 1 - i);
    const entry = (sym << 4) | len;
    for (let i = rev; i < size; i += 1 << len) table[i] = entry;
  }
  out.bits = bits;
  return undefined;
}

function fixedTables(): [HuffmanTable, HuffmanTable] {
  if (fixedLitLen === undefined || fixedDist === undefined) {
    const l = new Uint8Array(288);
    l.fill(8, 0, 144);
    l.fill(9, 144, 256);
    l.fill(7, 256, 280);
    l.fill(8, 280, 288);
    const lit: HuffmanTable = { table: new Uint16Array(1 << 9), bits: 0 };
    buildTable(lit, l, 0, 288, false);
    const d = new Uint8Array(32).fill(5); // 30 and 31 are valid codes, invalid symbols
    const dist: HuffmanTable = { table: new Uint16Array(1 << 5), bits: 0 };
    buildTable(dist, d, 0, 32, false);
    fixedLitLen = lit;
    fixedDist = dist;
  }
  return [fixedLitLen, fixedDist];
}

/** The 24 bits of `src` from bit `pos` on (LSB first); zeros past the end. */
function word24(src: Uint8Array, pos: number): number {
  const i = pos >>> 3;
  return ((src[i]! | (src[i + 1]! << 8) | (src[i + 2]! << 16) | (src[i + 3]! << 24)) >>> (pos & 7)) & 0xffffff;
}

/**
 * Inflates the raw deflate stream at the start of `src` into `dst`, which must come out exactly
 * full. Returns the number of input bytes the stream occupied (whole bytes, the last one possibly
 * partly used). `what` names the stream in error messages.
 */
export function inflateRawInto(src: Uint8Array, dst: Uint8Array, what = 'deflate stream'): number {
  const inLen = src.length;
  const totalBits = inLen * 8;
  const outLen = dst.length;
  // The position in bits. Reads past the end see zeros (typed arrays give undefined → 0 in
  // bitwise operations); every step checks `pos > totalBits` before trusting what it read.
  let pos = 0;
  let out = 0;

  const truncated = (): Error =>
    corrupt(`${what}: truncated after ${hex(inLen)} input bytes (${hex(out)} of ${hex(outLen)} bytes produced)`);
  const at = (): string => hex(Math.min(pos >>> 3, inLen));

  let final = 0;
  do {
    const head = word24(src, pos);
    final = head & 1;
    const type = (head >>> 1) & 3;
    pos += 3;
    if (pos > totalBits) throw truncated();
    if (type === 0) {
      // Stored: skip to a byte boundary, then LEN, NLEN and the bytes.
      let p = (pos + 7) >>> 3;
      if (p + 4 > inLen) throw truncated();
      const len = src[p]! | (src[p + 1]! << 8);
      const nlen = src[p + 2]! | (src[p + 3]! << 8);
      if ((len ^ 0xffff) !== nlen) {
        throw corrupt(`${what}: stored block at input byte ${hex(p)} has LEN ${hex(len)} and NLEN ${hex(nlen)} that do not match`);
      }
      p += 4;
      if (p + len > inLen) throw truncated();
      if (out + len > outLen) {
        throw corrupt(`${what}: produces more than the ${hex(outLen)}-byte cluster (stored block at input byte ${hex(p - 4)})`);
      }
      dst.set(src.subarray(p, p + len), out);
      out += len;
      pos = (p + len) * 8;
      continue;
    }
    let lit: HuffmanTable;
    let dist: HuffmanTable;
    if (type === 1) {
      [lit, dist] = fixedTables();
    } else if (type === 2) {
      const h = word24(src, pos);
      const hlit = (h & 31) + 257;
      const hdist = ((h >>> 5) & 31) + 1;
      const hclen = ((h >>> 10) & 15) + 4;
      pos += 14;
      if (hlit > 286 || hdist > 30) {
        throw corrupt(`${what}: dynamic block declares ${hlit} literal/length and ${hdist} distance codes (at most 286 and 30)`);
      }
      lengths.fill(0, 0, 19);
      for (let i = 0; i < hclen; i++) {
        lengths[CODE_LENGTH_ORDER[i]!] = word24(src, pos) & 7;
        pos += 3;
      }
      if (pos > totalBits) throw truncated();
      const codeLenError = buildTable(codeLenTable, lengths, 0, 19, false);
      if (codeLenError !== undefined) {
        throw corrupt(`${what}: ${codeLenError} code length code at input byte ${at()}`);
      }
      const clTab = codeLenTable.table;
      const clMask = (1 << codeLenTable.bits) - 1;
      const total = hlit + hdist;
      let i = 0;
      while (i < total) {
        const w = word24(src, pos);
        const entry = clTab[w & clMask]!;
        const len = entry & 15;
        if (len === 0) throw corrupt(`${what}: invalid code length code at input byte ${at()}`);
        pos += len;
        const sym = entry >>> 4;
        if (sym < 16) {
          lengths[i++] = sym;
        } else {
          let repeat: number;
          let value = 0;
          const extra = w >>> len;
          if (sym === 16) {
            if (i === 0) throw corrupt(`${what}: code length repeat with no previous length at input byte ${at()}`);
            value = lengths[i - 1]!;
            repeat = 3 + (extra & 3);
            pos += 2;
          } else if (sym === 17) {
            repeat = 3 + (extra & 7);
            pos += 3;
          } else {
            repeat = 11 + (extra & 127);
            pos += 7;
          }
          if (i + repeat > total) {
            throw corrupt(`${what}: code lengths overrun ${total} codes at input byte ${at()}`);
          }
          lengths.fill(value, i, i + repeat);
          i += repeat;
        }
        if (pos > totalBits) throw truncated();
      }
      if (lengths[256] === 0) {
        throw corrupt(`${what}: dynamic block has no end-of-block code (input byte ${at()})`);
      }
      const litError = buildTable(litLenTable, lengths, 0, hlit, true);
      if (litError !== undefined) {
        throw corrupt(`${what}: ${litError} literal/length code at input byte ${at()}`);
      }
      const distError = buildTable(distTable, lengths, hlit, hdist, true);
      if (distError !== undefined) {
        throw corrupt(`${what}: ${distError} distance code at input byte ${at()}`);
      }
      lit = litLenTable;
      dist = distTable;
    } else {
      throw corrupt(`${what}: reserved block type 3 at input byte ${hex((pos - 3) >>> 3)}`);
    }

    // The literal/length loop: one 24-bit read per symbol (a code plus its extra bits fit).
    const litTab = lit.table;
    const litMask = (1 << lit.bits) - 1;
    const distTab = dist.table;
    const distMask = (1 << dist.bits) - 1;
    for (;;) {
      let w = word24(src, pos);
      const entry = litTab[w & litMask]!;
      const len = entry & 15;
      if (len === 0) throw corrupt(`${what}: invalid literal/length code at input byte ${at()}`);
      pos += len;
      const sym = entry >>> 4;
      if (sym < 256) {
        if (pos > totalBits) throw truncated();
        if (out >= outLen) {
          throw corrupt(`${what}: produces more than the ${hex(outLen)}-byte cluster (input byte ${at()})`);
        }
        dst[out++] = sym;
        continue;
      }
      if (sym === 256) {
        if (pos > totalBits) throw truncated();
        break;
      }
      const li = sym - 257;
      if (li >= 29) throw corrupt(`${what}: invalid length symbol ${sym} at input byte ${at()}`);
      const lenExtra = LENGTH_EXTRA[li]!;
      const length = LENGTH_BASE[li]! + ((w >>> len) & ((1 << lenExtra) - 1));
      pos += lenExtra;
      w = word24(src, pos);
      const dEntry = distTab[w & distMask]!;
      const dLen = dEntry & 15;
      if (dLen === 0) throw corrupt(`${what}: invalid distance code at input byte ${at()}`);
      pos += dLen;
      const dSym = dEntry >>> 4;
      if (dSym >= 30) throw corrupt(`${what}: invalid distance symbol ${dSym} at input byte ${at()}`);
      const distExtra = DIST_EXTRA[dSym]!;
      const distance = DIST_BASE[dSym]! + (word24(src, pos) & ((1 << distExtra) - 1));
      pos += distExtra;
      if (pos > totalBits) throw truncated();
      if (distance > out) {
        throw corrupt(`${what}: distance ${distance} reaches before the start of the cluster (at output ${hex(out)})`);
      }
      if (out + length > outLen) {
        throw corrupt(`${what}: produces more than the ${hex(outLen)}-byte cluster (match at output ${hex(out)})`);
      }
      let from = out - distance;
      if (distance >= length) {
        if (length < 32) {
          for (let k = 0; k < length; k++) dst[out + k] = dst[from + k]!;
        } else {
          dst.copyWithin(out, from, from + length);
        }
        out += length;
      } else {
        const end = out + length;
        while (out < end) dst[out++] = dst[from++]!;
      }
    }
  } while (final === 0);

  if (out !== outLen) {
    throw corrupt(`${what}: ends after ${hex(out)} bytes, the cluster is ${hex(outLen)} bytes`);
  }
  return (pos + 7) >>> 3;
}
