import { corrupt, hex } from '@qcow2/format';

/**
 * Finite State Entropy tables (RFC 8878 §4.1): reading a normalized distribution, building the
 * decoding table, and the predefined distributions for literal lengths, match lengths and
 * offsets. Tables have fixed capacity (2^9 states), never sized by the stream.
 */

export const FSE_MAX_ACCURACY_LOG = 9;
const FSE_MAX_STATES = 1 << FSE_MAX_ACCURACY_LOG;

export class FseTable {
  accuracyLog = 0;
  readonly symbol: Uint8Array = new Uint8Array(FSE_MAX_STATES);
  readonly nbBits: Uint8Array = new Uint8Array(FSE_MAX_STATES);
  readonly baseline: Uint16Array = new Uint16Array(FSE_MAX_STATES);

  /** A table that always yields `symbol` and reads no bits (RLE mode). */
  setRle(symbol: number): this {
    this.accuracyLog = 0;
    this.symbol[0] = symbol;
    this.nbBits[0] = 0;
    this.baseline[0] = 0;
    return this;
  }
}

/** Scratch for distributions and the state counters (one decode at a time). */
const normScratch = new Int16Array(256);
const nextScratch = new Uint16Array(256);

/**
 * Reads a normalized distribution ("FSE table description") at `src[at..end)` into `norm`;
 * returns [bytes consumed, accuracy log, symbol count].
 */
export function readFseDistribution(
  src: Uint8Array,
  at: number,
  end: number,
  maxAccuracyLog: number,
  maxSymbol: number,
  norm: Int16Array,
  what: string,
): [bytes: number, accuracyLog: number, symbols: number] {
  const totalBits = (end - at) * 8;
  let bitPos = 0;
  const bits = (n: number): number => {
    // Reads n (<= 16) bits LSB-first without consuming; zeros past the end (checked below).
    const i = at + (bitPos >>> 3);
    const word = (src[i] ?? 0) | ((src[i + 1] ?? 0) << 8) | ((src[i + 2] ?? 0) << 16);
    return (word >>> (bitPos & 7)) & ((1 << n) - 1);
  };
  if (at >= end) throw corrupt(`${what}: FSE table description at offset ${hex(at)} is empty`);
  const accuracyLog = bits(4) + 5;
  bitPos += 4;
  if (accuracyLog > maxAccuracyLog) {
    throw corrupt(`${what}: FSE accuracy log ${accuracyLog} at offset ${hex(at)} exceeds ${maxAccuracyLog}`);
  }
  let remaining = (1 << accuracyLog) + 1;
  let threshold = 1 << accuracyLog;
  let nbBits = accuracyLog + 1;
  let symbol = 0;
  let previousZero = false;
  while (remaining > 1 && symbol <= maxSymbol) {
    if (previousZero) {
      let repeat = bits(2);
      bitPos += 2;
      let zeros = repeat;
      while (repeat === 3) {
        repeat = bits(2);
        bitPos += 2;
        zeros += repeat;
        if (bitPos > totalBits) break;
      }
      if (symbol + zeros > maxSymbol + 1) {
        throw corrupt(`${what}: FSE table description at offset ${hex(at)} has zero-probability run past symbol ${maxSymbol}`);
      }
      for (let k = 0; k < zeros; k++) norm[symbol++] = 0;
      previousZero = false;
      if (symbol > maxSymbol) break;
    }
    const max = 2 * threshold - 1 - remaining;
    let count: number;
    const low = bits(nbBits - 1);
    if (low < max) {
      count = low;
      bitPos += nbBits - 1;
    } else {
      count = bits(nbBits);
      if (count >= threshold) count -= max;
      bitPos += nbBits;
    }
    count -= 1; // -1 encodes "less than 1" probability
    remaining -= count < 0 ? -count : count;
    norm[symbol++] = count;
    previousZero = count === 0;
    while (remaining < threshold) {
      nbBits -= 1;
      threshold >>= 1;
    }
    if (bitPos > totalBits) break;
  }
  if (bitPos > totalBits) {
    throw corrupt(`${what}: FSE table description at offset ${hex(at)} runs past offset ${hex(end)}`);
  }
  if (remaining !== 1) {
    throw corrupt(`${what}: FSE table description at offset ${hex(at)} has probabilities that do not add up to 2^${accuracyLog}`);
  }
  for (let s = symbol; s <= maxSymbol; s++) norm[s] = 0;
  return [(bitPos + 7) >>> 3, accuracyLog, symbol];
}

/** Builds the decoding table of a normalized distribution (RFC 8878 §4.1.1). */
export function buildFseTable(
  table: FseTable,
  norm: Int16Array,
  symbols: number,
  accuracyLog: number,
  what: string,
): FseTable {
  const size = 1 << accuracyLog;
  const mask = size - 1;
  const symbolOf = table.symbol;
  let high = size - 1;
  const next = nextScratch;
  for (let s = 0; s < symbols; s++) {
    const p = norm[s]!;
    if (p === -1) {
      symbolOf[high--] = s;
      next[s] = 1;
    } else {
      next[s] = p;
    }
  }
  const step = (size >>> 1) + (size >>> 3) + 3;
  let pos = 0;
  for (let s = 0; s < symbols; s++) {
    const p = norm[s]!;
    for (let i = 0; i < p; i++) {
      symbolOf[pos] = s;
      do pos = (pos + step) & mask;
      while (pos > high);
    }
  }
  if (pos !== 0) throw corrupt(`${what}: FSE distribution does not spread over its table`);
  for (let u = 0; u < size; u++) {
    const s = symbolOf[u]!;
    const state = next[s]!;
    next[s] = state + 1;
    const nb = accuracyLog - (31 - Math.clz32(state));
    table.nbBits[u] = nb;
    table.baseline[u] = (state << nb) - size;
  }
  table.accuracyLog = accuracyLog;
  return table;
}

/** Reads a distribution and builds its table in one step. Returns bytes consumed. */
export function readFseTable(
  table: FseTable,
  src: Uint8Array,
  at: number,
  end: number,
  maxAccuracyLog: number,
  maxSymbol: number,
  what: string,
): number {
  const [bytes, log, symbols] = readFseDistribution(src, at, end, maxAccuracyLog, maxSymbol, normScratch, what);
  buildFseTable(table, normScratch, symbols, log, what);
  return bytes;
}

function predefined(dist: number[], accuracyLog: number): FseTable {
  const norm = Int16Array.from(dist);
  return buildFseTable(new FseTable(), norm, dist.length, accuracyLog, 'predefined distribution');
}

let predefinedTables: [FseTable, FseTable, FseTable] | undefined;

/** The predefined literal length, offset and match length tables (RFC 8878 §3.1.1.3.2.2). */
export function predefinedFseTables(): [ll: FseTable, of: FseTable, ml: FseTable] {
  if (predefinedTables === undefined) {
    predefinedTables = [
      predefined(
        [4, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 2, 1, 1, 1, 1, 1, -1, -1, -1, -1],
        6,
      ),
      predefined([1, 1, 1, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1], 5),
      predefined(
        [
          1, 4, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
          1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1,
        ],
        6,
      ),
    ];
  }
  return predefinedTables;
}
