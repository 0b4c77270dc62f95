/**
 * XXH64 (seed 0), the hash behind zstd's Content_Checksum, in 32-bit halves: no BigInt, no
 * allocation. Only the low 32 bits are returned, which is what a zstd frame stores.
 */

// The primes as [hi, lo].
const P1H = 0x9e3779b1;
const P1L = 0x85ebca87;
const P2H = 0xc2b2ae3d;
const P2L = 0x27d4eb4f;
const P3H = 0x165667b1;
const P3L = 0x9e3779f9;
const P4H = 0x85ebca77;
const P4L = 0xc2b2ae63;
const P5H = 0x27d4eb2f;
const P5L = 0x165667c5;

// Results of the 64-bit helpers (high and low halves), to avoid returning pairs.
let rh = 0;
let rl = 0;

function add(ah: number, al: number, bh: number, bl: number): void {
  const lo = (al >>> 0) + (bl >>> 0);
  rl = lo >>> 0;
  rh = (ah + bh + (lo > 0xffffffff ? 1 : 0)) >>> 0;
}

/** The low 64 bits of a × b. */
function mul(ah: number, al: number, bh: number, bl: number): void {
  const a0 = al & 0xffff;
  const a1 = al >>> 16;
  const b0 = bl & 0xffff;
  const b1 = bl >>> 16;
  const p00 = a0 * b0;
  const mid = a0 * b1 + a1 * b0; // < 2^33
  const low = p00 + (mid % 0x10000) * 0x10000; // < 2^33
  rl = low >>> 0;
  const carry = Math.floor(low / 0x1_0000_0000);
  rh = (a1 * b1 + Math.floor(mid / 0x10000) + carry + Math.imul(ah, bl) + Math.imul(al, bh)) >>> 0;
}

function rotl(h: number, l: number, r: number): void {
  if (r === 32) {
    rh = l >>> 0;
    rl = h >>> 0;
    return;
  }
  if (r > 32) {
    const t = h;
    h = l;
    l = t;
    r -= 32;
  }
  rh = ((h << r) | (l >>> (32 - r))) >>> 0;
  rl = ((l << r) | (h >>> (32 - r))) >>> 0;
}

/** round(acc, input) = rotl(acc + input * P2, 31) * P1 */
function round(ah: number, al: number, ih: number, il: number): void {
  mul(ih, il, P2H, P2L);
  add(ah, al, rh, rl);
  rotl(rh, rl, 31);
  mul(rh, rl, P1H, P1L);
}

function lane(src: Uint8Array, at: number): void {
  rl = (src[at]! | (src[at + 1]! << 8) | (src[at + 2]! << 16) | (src[at + 3]! << 24)) >>> 0;
  rh = (src[at + 4]! | (src[at + 5]! << 8) | (src[at + 6]! << 16) | (src[at + 7]! << 24)) >>> 0;
}

/** The low 32 bits of XXH64(bytes, seed 0). */
export function xxh64Low32(bytes: Uint8Array): number {
  const len = bytes.length;
  let p = 0;
  let hh: number;
  let hl: number;
  if (len >= 32) {
    add(P1H, P1L, P2H, P2L);
    let v1h = rh;
    let v1l = rl;
    let v2h = P2H;
    let v2l = P2L;
    let v3h = 0;
    let v3l = 0;
    // 0 - P1
    add(~P1H >>> 0, ~P1L >>> 0, 0, 1);
    let v4h = rh;
    let v4l = rl;
    const limit = len - 32;
    while (p <= limit) {
      lane(bytes, p);
      round(v1h, v1l, rh, rl);
      v1h = rh;
      v1l = rl;
      lane(bytes, p + 8);
      round(v2h, v2l, rh, rl);
      v2h = rh;
      v2l = rl;
      lane(bytes, p + 16);
      round(v3h, v3l, rh, rl);
      v3h = rh;
      v3l = rl;
      lane(bytes, p + 24);
      round(v4h, v4l, rh, rl);
      v4h = rh;
      v4l = rl;
      p += 32;
    }
    rotl(v1h, v1l, 1);
    hh = rh;
    hl = rl;
    rotl(v2h, v2l, 7);
    add(hh, hl, rh, rl);
    hh = rh;
    hl = rl;
    rotl(v3h, v3l, 12);
    add(hh, hl, rh, rl);
    hh = rh;
    hl = rl;
    rotl(v4h, v4l, 18);
    add(hh, hl, rh, rl);
    hh = rh;
    hl = rl;
    for (const [vh, vl] of [
      [v1h, v1l],
      [v2h, v2l],
      [v3h, v3l],
      [v4h, v4l],
    ] as const) {
      // h = (h ^ round(0, v)) * P1 + P4
      round(0, 0, vh, vl);
      mul((hh ^ rh) >>> 0, (hl ^ rl) >>> 0, P1H, P1L);
      add(rh, rl, P4H, P4L);
      hh = rh;
      hl = rl;
    }
  } else {
    hh = P5H;
    hl = P5L;
  }
  // h += len (len < 2^32 here: clusters are at most 2 MiB)
  add(hh, hl, Math.floor(len / 0x1_0000_0000), len >>> 0);
  hh = rh;
  hl = rl;
  while (p + 8 <= len) {
    lane(bytes, p);
    round(0, 0, rh, rl);
    // h = rotl(h ^ k1, 27) * P1 + P4
    rotl((hh ^ rh) >>> 0, (hl ^ rl) >>> 0, 27);
    mul(rh, rl, P1H, P1L);
    add(rh, rl, P4H, P4L);
    hh = rh;
    hl = rl;
    p += 8;
  }
  if (p + 4 <= len) {
    const k = (bytes[p]! | (bytes[p + 1]! << 8) | (bytes[p + 2]! << 16) | (bytes[p + 3]! << 24)) >>> 0;
    // h = rotl(h ^ (k * P1), 23) * P2 + P3
    mul(0, k, P1H, P1L);
    rotl((hh ^ rh) >>> 0, (hl ^ rl) >>> 0, 23);
    mul(rh, rl, P2H, P2L);
    add(rh, rl, P3H, P3L);
    hh = rh;
    hl = rl;
    p += 4;
  }
  while (p < len) {
    // h = rotl(h ^ (byte * P5), 11) * P1
    mul(0, bytes[p]!, P5H, P5L);
    rotl((hh ^ rh) >>> 0, (hl ^ rl) >>> 0, 11);
    mul(rh, rl, P1H, P1L);
    hh = rh;
    hl = rl;
    p += 1;
  }
  // Avalanche.
  hl = (hl ^ (hh >>> 1)) >>> 0; // h ^= h >> 33
  mul(hh, hl, P2H, P2L);
  hh = rh;
  hl = rl;
  hl = (hl ^ ((hl >>> 29) | (hh << 3))) >>> 0; // h ^= h >> 29
  hh = (hh ^ (hh >>> 29)) >>> 0;
  mul(hh, hl, P3H, P3L);
  hh = rh;
  hl = rl;
  hl = (hl ^ hh) >>> 0; // h ^= h >> 32
  return hl;
}
