/**
 * Byte-range scans at 512-byte sector granularity, as qemu-img compare and convert do them,
 * with native memcmp (Buffer#compare against a block of zeros) doing the bulk work: a JavaScript
 * byte loop is ~10x slower. No Buffer object is made per range: each scan makes at most one view
 * of the caller's bytes and compares ranges of it by offset.
 */

const SECTOR = 512;
/** Bytes compared per native call. */
const ZERO_BLOCK = 65536;
const ZEROS = Buffer.alloc(ZERO_BLOCK);

function bufferOf(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
}

/** True when buf[start, end) is all zeros (native compares, ZERO_BLOCK bytes at a time). */
function zeroIn(buf: Buffer, start: number, end: number): boolean {
  for (let at = start; at < end; at += ZERO_BLOCK) {
    const stop = Math.min(end, at + ZERO_BLOCK);
    if (ZEROS.compare(buf, at, stop, 0, stop - at) !== 0) return false;
  }
  return true;
}

/**
 * True when bytes[start, end) are all zero: the first, middle and last bytes first (a data
 * range usually stops there, as qemu's buffer_is_zero), then a native compare.
 */
function rangeIsZero(bytes: Uint8Array, buf: Buffer | undefined, start: number, end: number): boolean {
  if (end <= start) return true;
  if (bytes[start] !== 0 || bytes[end - 1] !== 0 || bytes[(start + end) >>> 1] !== 0) return false;
  if (end - start <= 64) {
    for (let i = start + 1; i < end - 1; i += 1) if (bytes[i] !== 0) return false;
    return true;
  }
  return zeroIn(buf ?? bufferOf(bytes), start, end);
}

/** True when bytes[start, end) are all zero. */
export function isZero(bytes: Uint8Array, start: number = 0, end: number = bytes.length): boolean {
  return rangeIsZero(bytes, undefined, start, end);
}

/** compare_buffers: the offset of the first 512-byte sector where `a` and `b` differ, or -1. */
export function firstDifferingSector(a: Uint8Array, b: Uint8Array): number {
  const bufA = bufferOf(a);
  const bufB = bufferOf(b);
  if (bufA.compare(bufB, 0, a.length, 0, a.length) === 0) return -1;
  for (let s = 0; s < a.length; s += SECTOR) {
    const e = Math.min(s + SECTOR, a.length);
    if (bufA.compare(bufB, s, e, s, e) !== 0) return s;
  }
  return -1;
}

/** find_nonzero: the offset of the first 512-byte sector that is not all zeros, or -1. */
export function firstNonzeroSector(bytes: Uint8Array): number {
  const buf = bufferOf(bytes);
  if (zeroIn(buf, 0, bytes.length)) return -1;
  for (let s = 0; s < bytes.length; s += SECTOR) {
    if (!rangeIsZero(bytes, buf, s, Math.min(s + SECTOR, bytes.length))) return s;
  }
  return -1;
}

/**
 * The runs of all-zero 512-byte sectors of `bytes` that are at least `minSparse` bytes long
 * (`minSparse` a positive multiple of 512; a short last sector counts with its own length), as
 * [start, end) byte offsets one after the other: [start0, end0, start1, end1, ...]. Each run is
 * maximal (the sectors on either side of it are not all zeros). An all-zero `bytes` is one run
 * whatever its length.
 *
 * Only every (minSparse / 512)-th sector is looked at first: any run of that many sectors
 * contains one of them, so a buffer of data costs one probe (usually a byte or three) per
 * `minSparse` bytes; a zero probe is then grown both ways, by native compares.
 */
export function zeroRuns(bytes: Uint8Array, minSparse: number): number[] {
  const length = bytes.length;
  const runs: number[] = [];
  if (length === 0) return runs;
  const step = Math.max(1, Math.floor(minSparse / SECTOR));
  const sectors = Math.ceil(length / SECTOR);
  let buf: Buffer | undefined;
  const zero = (s: number): boolean => {
    const start = s * SECTOR;
    buf ??= bufferOf(bytes);
    return rangeIsZero(bytes, buf, start, Math.min(start + SECTOR, length));
  };
  /** Sectors below this one are classified (the one just below, if any, is not all zeros). */
  let known = 0;
  for (let probe = 0; probe < sectors; probe += step) {
    probe = nextCandidate(bytes, Math.max(probe, Math.ceil(known / step) * step), step);
    if (probe >= sectors || !zero(probe)) continue;
    let first = probe;
    const low = Math.max(known, probe - step + 1);
    while (first > low && zero(first - 1)) first--;
    // Forward: 64 KiB at a time while all zeros, then the first sector with data by bisection.
    let endByte = (probe + 1) * SECTOR;
    buf ??= bufferOf(bytes);
    while (endByte < length && bytes[endByte] === 0) {
      const blockEnd = Math.min(length, endByte + ZERO_BLOCK);
      if (zeroIn(buf, endByte, blockEnd)) {
        endByte = blockEnd;
        continue;
      }
      endByte = firstSectorWithData(buf, endByte, blockEnd);
      break;
    }
    endByte = Math.min(endByte, length);
    known = Math.ceil(endByte / SECTOR) + 1;
    const startByte = first * SECTOR;
    if (endByte - startByte >= minSparse || (startByte === 0 && endByte === length)) runs.push(startByte, endByte);
  }
  return runs;
}

/**
 * The start of the first sector of [from, to) that is not all zeros, knowing that one is (`from`
 * a sector start; `to` a sector start or the end of the buffer): halves compared natively.
 */
function firstSectorWithData(buf: Buffer, from: number, to: number): number {
  while (to - from > SECTOR) {
    const mid = from + Math.max(1, Math.floor((to - from) / (2 * SECTOR))) * SECTOR;
    if (zeroIn(buf, from, mid)) from = mid;
    else to = mid;
  }
  return from;
}

/**
 * The first sector at or after `sector`, stepping `step` sectors, whose first, middle and last
 * bytes are zero (a candidate for an all-zero sector), or one past the end. The one loop that
 * runs over data, kept apart and small: it is what gets hot, and it is cheap to optimize.
 */
function nextCandidate(bytes: Uint8Array, sector: number, step: number): number {
  const length = bytes.length;
  const stride = step * SECTOR;
  let at = sector * SECTOR;
  for (; at < length; at += stride) {
    const end = Math.min(at + SECTOR, length);
    if (bytes[at] === 0 && bytes[end - 1] === 0 && bytes[(at + end) >>> 1] === 0) break;
  }
  return Math.ceil(at / SECTOR);
}
