import { corrupt, invalidArgument } from './errors.js';

/**
 * Big-endian helpers over a DataView. 64-bit fields are read as hi·2³² + lo and refused above
 * 2⁵³ (Number.MAX_SAFE_INTEGER) instead of being rounded; BigInt stays out of this path.
 */

const TWO_POW_32 = 0x1_0000_0000;

/** A DataView over exactly the bytes of `bytes` (no copy). */
export function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * Reads an unsigned 64-bit big-endian field. `field` names it in the error when the value does
 * not fit in a JS number exactly.
 */
export function readU64(view: DataView, offset: number, field: string): number {
  const hi = view.getUint32(offset);
  const lo = view.getUint32(offset + 4);
  if (hi > 0x1f_ffff) {
    throw corrupt(
      `${field}: value 0x${hi.toString(16).padStart(8, '0')}${lo.toString(16).padStart(8, '0')} exceeds 2^53`,
    );
  }
  return hi * TWO_POW_32 + lo;
}

/** The two 32-bit halves of a 64-bit field, for bit masks (feature bits, table entries). */
export function readU64Parts(view: DataView, offset: number): [hi: number, lo: number] {
  return [view.getUint32(offset), view.getUint32(offset + 4)];
}

/** Writes a non-negative safe integer as an unsigned 64-bit big-endian field. */
export function writeU64(view: DataView, offset: number, value: number, field: string): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw invalidArgument(`${field}: ${value} is not an unsigned integer ≤ 2^53`);
  }
  view.setUint32(offset, Math.floor(value / TWO_POW_32));
  view.setUint32(offset + 4, value >>> 0);
}

export function writeU64Parts(view: DataView, offset: number, hi: number, lo: number): void {
  view.setUint32(offset, hi >>> 0);
  view.setUint32(offset + 4, lo >>> 0);
}

/** Checks that `length` bytes at `offset` lie within `bytes`, naming the structure otherwise. */
export function need(bytes: Uint8Array, offset: number, length: number, what: string): void {
  if (offset < 0 || length < 0 || offset + length > bytes.byteLength) {
    throw corrupt(
      `${what}: needs ${length} bytes at offset 0x${offset.toString(16)}, only ${Math.max(0, bytes.byteLength - offset)} available`,
    );
  }
}

/** Rounds `value` up to a multiple of `align` (a power of two, or any positive integer). */
export function alignUp(value: number, align: number): number {
  return Math.ceil(value / align) * align;
}

export function isAligned(value: number, align: number): boolean {
  return value % align === 0;
}

/**
 * Decodes UTF-8 (names in qcow2 are byte strings; invalid sequences become U+FFFD). Written out
 * here because TextDecoder is not part of the ECMAScript library this package is typed against.
 */
export function decodeString(bytes: Uint8Array): string {
  // The WHATWG decoder's algorithm, so the replacement characters fall where TextDecoder's do.
  let out = '';
  let i = 0;
  const n = bytes.length;
  while (i < n) {
    const b0 = bytes[i]!;
    i += 1;
    if (b0 < 0x80) {
      out += String.fromCharCode(b0);
      continue;
    }
    let need: number;
    let cp: number;
    let lower = 0x80;
    let upper = 0xbf;
    if (b0 >= 0xc2 && b0 <= 0xdf) {
      need = 1;
      cp = b0 & 0x1f;
    } else if (b0 >= 0xe0 && b0 <= 0xef) {
      need = 2;
      cp = b0 & 0x0f;
      if (b0 === 0xe0) lower = 0xa0;
      if (b0 === 0xed) upper = 0x9f;
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
      need = 3;
      cp = b0 & 0x07;
      if (b0 === 0xf0) lower = 0x90;
      if (b0 === 0xf4) upper = 0x8f;
    } else {
      out += '\ufffd';
      continue;
    }
    let ok = true;
    for (let k = 0; k < need; k++) {
      const b = bytes[i];
      if (b === undefined || b < lower || b > upper) {
        ok = false;
        break;
      }
      cp = (cp << 6) | (b & 0x3f);
      lower = 0x80;
      upper = 0xbf;
      i += 1;
    }
    out += ok ? String.fromCodePoint(cp) : '\ufffd';
  }
  return out;
}

/** Encodes a string as UTF-8 (lone surrogates become U+FFFD, as TextEncoder does). */
export function encodeString(value: string): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < value.length; i++) {
    let cp = value.charCodeAt(i);
    if (cp >= 0xd800 && cp <= 0xdbff && i + 1 < value.length) {
      const lo = value.charCodeAt(i + 1);
      if (lo >= 0xdc00 && lo <= 0xdfff) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        i++;
      }
    }
    if (cp >= 0xd800 && cp <= 0xdfff) cp = 0xfffd;
    if (cp < 0x80) out.push(cp);
    else if (cp < 0x800) out.push(0xc0 | (cp >> 6), 0x80 | (cp & 0x3f));
    else if (cp < 0x10000) out.push(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
    else
      out.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3f), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
  }
  return Uint8Array.from(out);
}
