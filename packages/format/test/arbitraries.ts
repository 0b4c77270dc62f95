import fc from 'fast-check';
import { decodeByteString } from '@qcow2/format';
import type {
  BitmapDirectoryEntry,
  BitmapTableEntry,
  L1Entry,
  L2Entry,
  L2Options,
  SnapshotEntry,
  SubclusterBitmap,
} from '@qcow2/format';

/**
 * Shared fast-check arbitraries for the table structures: snapshots, L1/L2 entries, refcounts,
 * bitmaps. Each produces values the encoders accept (so decode(encode(x)) must equal x); the
 * `*Words` arbitraries build raw valid encodings bit by bit, independently of the encoders.
 */

export const clusterBits: fc.Arbitrary<number> = fc.integer({ min: 9, max: 21 });
export const refcountOrder: fc.Arbitrary<number> = fc.integer({ min: 0, max: 6 });
export const u32: fc.Arbitrary<number> = fc.nat({ max: 0x7fff_ffff }).chain((n) =>
  fc.constantFrom(n, n + 0x8000_0000, 0, 0xffff_ffff),
);
export const u64Big: fc.Arbitrary<bigint> = fc.oneof(
  fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
  fc.constantFrom(0n, (1n << 53n) - 1n, 1n << 53n, (1n << 64n) - 1n),
);

/** A non-negative safe integer, biased towards small values and the extremes. */
export const safeNat: fc.Arbitrary<number> = fc.oneof(
  fc.nat({ max: 1 << 20 }),
  fc.maxSafeNat(),
  fc.constantFrom(0, Number.MAX_SAFE_INTEGER, 2 ** 32, 2 ** 32 - 1),
);

/** A multiple of 2^bits in 0..2^53 − 1 (0 included). */
export function alignedOffset(bits: number, { nonZero = false } = {}): fc.Arbitrary<number> {
  const unit = 2 ** bits;
  const maxUnits = Math.floor(Number.MAX_SAFE_INTEGER / unit);
  return fc
    .oneof(fc.nat({ max: 4096 }), fc.maxSafeNat().map((n) => n % (maxUnits + 1)), fc.constant(maxUnits))
    .map((n) => (nonZero && n === 0 ? 1 : n) * unit);
}

// ---------------------------------------------------------------------------------------------
// L1

export function l1Entry(bits = 9): fc.Arbitrary<L1Entry> {
  return fc.record({ l2Offset: alignedOffset(bits), copied: fc.boolean() });
}

/** Raw valid L1 entries as [hi, lo]: bit 63, offset bits 9..52, aligned to 2^bits. */
export function l1Words(bits = 9): fc.Arbitrary<[number, number]> {
  return fc.tuple(fc.boolean(), alignedOffset(bits)).map(([copied, offset]) => [
    ((copied ? 0x8000_0000 : 0) | Math.floor(offset / 2 ** 32)) >>> 0,
    offset >>> 0,
  ]);
}

// ---------------------------------------------------------------------------------------------
// L2

export const subclusterBitmap: fc.Arbitrary<SubclusterBitmap> = fc
  .tuple(u32, u32)
  .map(([allocated, zero]) => ({ allocated: (allocated & ~zero) >>> 0, zero }));

/** Options covering standard and extended entries, with and without an external data file. */
export const l2Options: fc.Arbitrary<L2Options> = fc
  .record({ clusterBits, extended: fc.boolean(), externalDataFile: fc.boolean() })
  .map((o) => ({ ...o, clusterBits: o.extended ? Math.max(14, o.clusterBits) : o.clusterBits }));

export function l2Entry(options: L2Options): fc.Arbitrary<L2Entry> {
  const bits = options.clusterBits;
  const extended = options.extended === true;
  const edf = options.externalDataFile === true;
  const shift = 70 - bits;
  const kinds: fc.Arbitrary<L2Entry>[] = [
    extended
      ? u32.map((zero): L2Entry => ({ kind: 'unallocated', subclusters: { allocated: 0, zero } }))
      : fc.constant<L2Entry>({ kind: 'unallocated' }),
    fc
      .record({ offset: alignedOffset(bits, { nonZero: !edf }), copied: fc.boolean(), subclusters: subclusterBitmap })
      .map(({ offset, copied, subclusters }): L2Entry => {
        const c = offset === 0 ? true : copied;
        return extended ? { kind: 'normal', offset, copied: c, subclusters } : { kind: 'normal', offset, copied: c };
      }),
  ];
  if (!extended) {
    kinds.push(fc.record({ kind: fc.constant('zero' as const), offset: alignedOffset(bits), copied: fc.boolean() }));
  }
  if (!edf) {
    kinds.push(
      fc.record({
        kind: fc.constant('compressed' as const),
        offset: fc.oneof(fc.nat({ max: 1 << 24 }), fc.maxSafeNat().map((n) => n % 2 ** Math.min(shift, 53))),
        additionalSectors: fc.integer({ min: 0, max: (1 << (bits - 8)) - 1 }),
      }),
    );
  }
  return fc.oneof(...kinds);
}

/** Options and a table (slice) of entries for them. */
export const l2Table: fc.Arbitrary<{ options: L2Options; entries: L2Entry[] }> = l2Options.chain((options) =>
  fc.record({ options: fc.constant(options), entries: fc.array(l2Entry(options), { maxLength: 16 }) }),
);

/**
 * Raw valid L2 entries as [hi, lo, bitmapHi, bitmapLo], built bit by bit from the spec's
 * layout rather than through the encoder.
 */
export function l2Words(options: L2Options): fc.Arbitrary<[number, number, number, number]> {
  const bits = options.clusterBits;
  const extended = options.extended === true;
  const edf = options.externalDataFile === true;
  const shift = 70 - bits;
  const std = fc
    .record({
      copied: fc.boolean(),
      zero: extended ? fc.constant(false) : fc.boolean(),
      offset: alignedOffset(bits),
      alloc: u32,
      zeros: u32,
    })
    .filter(({ copied, zero, offset }) => zero || offset !== 0 || !copied || edf)
    .map(({ copied, zero, offset, alloc, zeros }): [number, number, number, number] => {
      const hi = ((copied ? 0x8000_0000 : 0) | Math.floor(offset / 2 ** 32)) >>> 0;
      const lo = ((offset >>> 0) | (zero ? 1 : 0)) >>> 0;
      if (!extended) return [hi, lo, 0, 0];
      const allocated = offset === 0 && !(edf && copied) ? 0 : (alloc & ~zeros) >>> 0;
      return [hi, lo, zeros, allocated];
    });
  if (edf) return std;
  const compressed = fc
    .record({
      offset: fc.oneof(fc.nat({ max: 1 << 24 }), fc.maxSafeNat().map((n) => n % 2 ** Math.min(shift, 53))),
      sectors: fc.integer({ min: 0, max: (1 << (bits - 8)) - 1 }),
    })
    .map(({ offset, sectors }): [number, number, number, number] => [
      (0x4000_0000 | (sectors << (shift - 32)) | Math.floor(offset / 2 ** 32)) >>> 0,
      offset >>> 0,
      0,
      0,
    ]);
  return fc.oneof(std, compressed);
}

/** Concatenates [hi, lo, bitmapHi, bitmapLo] words into table bytes (8 or 16 bytes each). */
export function wordsToBytes(words: readonly (readonly number[])[], perEntry: 2 | 4): Uint8Array {
  const bytes = new Uint8Array(words.length * perEntry * 4);
  const view = new DataView(bytes.buffer);
  words.forEach((w, i) => {
    for (let k = 0; k < perEntry; k++) view.setUint32((i * perEntry + k) * 4, w[k]!);
  });
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// Refcounts

/** A refcount table entry: a 512-aligned block offset or 0. */
export const refcountTableOffset: fc.Arbitrary<number> = alignedOffset(9);

// ---------------------------------------------------------------------------------------------
// Snapshots

/** Strings without lone surrogates (which UTF-8 cannot carry), short and long. */
const name = (maxLength: number): fc.Arbitrary<string> =>
  fc.oneof(fc.string({ maxLength }), fc.string({ unit: 'grapheme', maxLength }));

/**
 * A name as the decoders return it: a string, plus the raw bytes when they are not its UTF-8
 * encoding (arbitrary bytes, invalid UTF-8 included).
 */
export function byteString(maxLength: number, minLength = 0): fc.Arbitrary<{ name: string; nameBytes?: Uint8Array }> {
  return fc.oneof(
    name(maxLength)
      .filter((n) => new TextEncoder().encode(n).length >= minLength && new TextEncoder().encode(n).length <= maxLength * 4)
      .map((n) => ({ name: n })),
    fc.uint8Array({ minLength, maxLength }).map(decodeByteString),
  );
}

export const snapshotEntry: fc.Arbitrary<SnapshotEntry> = fc
  .record({
    l1TableOffset: alignedOffset(9),
    l1Size: fc.integer({ min: 0, max: 0x40_0000 }),
    id: byteString(20),
    name: byteString(40),
    dateSec: u32,
    dateNsec: u32,
    vmClockNsec: u64Big,
    vmStateSize: u32,
    known: fc.integer({ min: 0, max: 3 }),
    vmStateSizeLarge: safeNat,
    diskSize: safeNat,
    icount: u64Big,
    unknownLength: fc.nat({ max: 1000 }),
    seed: fc.integer({ min: 0, max: 255 }),
  })
  .map((r): SnapshotEntry => {
    // Unknown extra data after an absent known field must stay shorter than that field.
    const unknownLength = r.known < 3 ? r.unknownLength % 8 : r.unknownLength;
    const unknownExtraData = Uint8Array.from({ length: unknownLength }, (_, i) => (r.seed + i * 37) & 0xff);
    const entry: SnapshotEntry = {
      l1TableOffset: r.l1TableOffset,
      l1Size: r.l1Size,
      id: r.id.name,
      name: r.name.name,
      dateSec: r.dateSec,
      dateNsec: r.dateNsec,
      vmClockNsec: r.vmClockNsec,
      vmStateSize: r.vmStateSize,
      unknownExtraData,
    };
    if (r.id.nameBytes !== undefined) entry.idBytes = r.id.nameBytes;
    if (r.name.nameBytes !== undefined) entry.nameBytes = r.name.nameBytes;
    if (r.known >= 1) entry.vmStateSizeLarge = r.vmStateSizeLarge;
    if (r.known >= 2) entry.diskSize = r.diskSize;
    if (r.known >= 3) entry.icount = r.icount;
    return entry;
  });

// ---------------------------------------------------------------------------------------------
// Bitmaps

export const bitmapDirectoryEntry: fc.Arbitrary<BitmapDirectoryEntry> = fc
  .record({
    bitmapTableOffset: alignedOffset(9, { nonZero: true }),
    bitmapTableSize: fc.integer({ min: 1, max: 0x800_0000 }),
    inUse: fc.boolean(),
    auto: fc.boolean(),
    extraDataCompatible: fc.boolean(),
    type: fc.oneof(fc.constant(1), fc.integer({ min: 0, max: 255 })),
    granularityBits: fc.integer({ min: 9, max: 31 }),
    name: byteString(40, 1),
    extraData: fc.oneof(fc.constant(new Uint8Array(0)), fc.uint8Array({ maxLength: 40 })),
  })
  .map(({ name: n, ...rest }): BitmapDirectoryEntry => (n.nameBytes === undefined ? { ...rest, name: n.name } : { ...rest, name: n.name, nameBytes: n.nameBytes }));

export const bitmapTableEntry: fc.Arbitrary<BitmapTableEntry> = fc.oneof(
  fc.constant<BitmapTableEntry>({ kind: 'zeros' }),
  fc.constant<BitmapTableEntry>({ kind: 'ones' }),
  alignedOffset(9, { nonZero: true }).map((offset): BitmapTableEntry => ({ kind: 'data', offset })),
);
