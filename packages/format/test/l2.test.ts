import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { assertDecodeEncode, assertThrowsOnlyQcow2Error, mutatedBytes } from '@qcow2/test-utils';
import {
  compressedAdditionalSectors,
  compressedAdditionalSectorsFor,
  compressedByteLength,
  compressedHostOffset,
  decodeL2Entry,
  decodeL2Table,
  encodeL2Entry,
  encodeL2Table,
  isQcow2Error,
  L2_COMPRESSED,
  L2_NORMAL,
  L2_UNALLOCATED,
  L2_ZERO_ALLOC,
  L2_ZERO_PLAIN,
  l1IndexOf,
  l2EntriesPerTable,
  l2EntryProblem,
  l2EntryType,
  l2EntryTypeAt,
  l2HostOffset,
  l2HostOffsetAt,
  l2IndexOf,
  l2SubclusterType,
  l2SubclusterTypeAt,
  subclusterIndexOf,
  SUBCLUSTER_COMPRESSED,
  SUBCLUSTER_INVALID,
  SUBCLUSTER_NORMAL,
  SUBCLUSTER_UNALLOCATED_ALLOC,
  SUBCLUSTER_UNALLOCATED_PLAIN,
  SUBCLUSTER_ZERO_ALLOC,
  SUBCLUSTER_ZERO_PLAIN,
  viewOf,
  type L2Entry,
  type L2Options,
} from '@qcow2/format';
import { l2Options, l2Table, l2Words, u32, wordsToBytes } from './arbitraries.js';

function codeOf(run: () => unknown): string | undefined {
  try {
    run();
    return undefined;
  } catch (e) {
    if (!isQcow2Error(e)) throw e;
    return e.code;
  }
}

const words = (w: number[], extended = false): DataView => viewOf(wordsToBytes([w], extended ? 4 : 2));

describe('L2 entries: codec laws', () => {
  it('decode(encode(table)) is the table, standard and extended, with and without a data file', () => {
    assertDecodeEncode(
      l2Table,
      ({ entries, options }) => {
        // Carry the options along in the encoding so decode can use them.
        const bytes = encodeL2Table(entries, options);
        return Object.assign(bytes, { options });
      },
      (bytes) => {
        const { options } = bytes as Uint8Array & { options: L2Options };
        return { options, entries: decodeL2Table(bytes, options) };
      },
      { numRuns: 300 },
    );
  });

  it('encode(decode(bytes)) is the bytes, for valid entries built from the spec layout', () => {
    const valid = l2Options.chain((options) =>
      fc
        .array(l2Words(options), { maxLength: 16 })
        .map((w) => ({ options, bytes: wordsToBytes(w, options.extended === true ? 4 : 2) })),
    );
    fc.assert(
      fc.property(valid, ({ options, bytes }) => {
        expect(encodeL2Table(decodeL2Table(bytes, options), options)).toEqual(bytes);
      }),
      { numRuns: 300 },
    );
  });

  it('decoding arbitrary and mutated bytes throws only Qcow2Error', () => {
    for (const options of [
      { clusterBits: 16 },
      { clusterBits: 9 },
      { clusterBits: 21 },
      { clusterBits: 16, extended: true, tableOffset: 0x50000 },
      { clusterBits: 14, extended: true, externalDataFile: true },
    ] satisfies L2Options[]) {
      const run = (bytes: Uint8Array): unknown => decodeL2Table(bytes, options);
      assertThrowsOnlyQcow2Error(fc.uint8Array({ maxLength: 96 }), run, { numRuns: 200 });
      assertThrowsOnlyQcow2Error(
        mutatedBytes(
          fc.array(l2Words(options), { maxLength: 6 }).map((w) => wordsToBytes(w, options.extended === true ? 4 : 2)),
        ),
        run,
        { numRuns: 200 },
      );
    }
  });

  it('the hot-path functions agree with the decoded form on valid entries', () => {
    const valid = l2Options.chain((options) => fc.record({ options: fc.constant(options), w: l2Words(options), sc: fc.nat({ max: 31 }) }));
    fc.assert(
      fc.property(valid, ({ options, w, sc }) => {
        const extended = options.extended === true;
        const edf = options.externalDataFile === true;
        const [hi, lo, bhi, blo] = w as [number, number, number, number];
        const view = viewOf(wordsToBytes([w], extended ? 4 : 2));
        const entry = decodeL2Entry(view, 0, options);
        expect(l2EntryProblem(hi, lo, bhi, blo, options)).toBeUndefined();
        const type = l2EntryType(hi, lo, extended, edf);
        expect(l2EntryTypeAt(view, 0, extended, edf)).toBe(type);
        const expectedType: Record<L2Entry['kind'], number[]> = {
          unallocated: [L2_UNALLOCATED],
          zero: [L2_ZERO_PLAIN, L2_ZERO_ALLOC],
          normal: [L2_NORMAL],
          compressed: [L2_COMPRESSED],
        };
        expect(expectedType[entry.kind]).toContain(type);
        const sub = l2SubclusterTypeAt(view, 0, extended ? sc : 0, extended, edf);
        expect(l2SubclusterType(hi, lo, bhi, blo, extended ? sc : 0, extended, edf)).toBe(sub);
        expect(sub).not.toBe(SUBCLUSTER_INVALID);
        if (entry.kind === 'compressed') {
          expect(compressedHostOffset(hi, lo, options.clusterBits)).toBe(entry.offset);
          expect(sub).toBe(SUBCLUSTER_COMPRESSED);
        } else if (entry.kind !== 'unallocated') {
          expect(l2HostOffset(hi, lo)).toBe(entry.offset);
          expect(l2HostOffsetAt(view, 0, extended)).toBe(entry.offset);
        }
        if (extended && entry.kind === 'normal') {
          const bit = 2 ** sc;
          const z = (entry.subclusters!.zero & bit) !== 0;
          const a = (entry.subclusters!.allocated & bit) !== 0;
          expect(sub).toBe(z ? SUBCLUSTER_ZERO_ALLOC : a ? SUBCLUSTER_NORMAL : SUBCLUSTER_UNALLOCATED_ALLOC);
        }
        if (extended && entry.kind === 'unallocated') {
          const z = (entry.subclusters!.zero & 2 ** sc) !== 0;
          expect(sub).toBe(z ? SUBCLUSTER_ZERO_PLAIN : SUBCLUSTER_UNALLOCATED_PLAIN);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('the hot-path functions on arbitrary words return or throw only Qcow2Error', () => {
    fc.assert(
      fc.property(u32, u32, u32, u32, fc.integer({ min: 9, max: 21 }), fc.boolean(), (hi, lo, bhi, blo, bits, ext) => {
        for (const run of [
          () => l2EntryType(hi, lo, ext),
          () => l2SubclusterType(hi, lo, bhi, blo, 31, ext),
          () => l2HostOffset(hi, lo),
          () => compressedHostOffset(hi, lo, bits),
          () => compressedByteLength(hi, lo, bits),
          () => l2EntryProblem(hi, lo, bhi, blo, { clusterBits: bits, extended: ext }),
        ]) {
          codeOf(run);
        }
      }),
    );
  });
});

describe('L2 entries: the spec layout', () => {
  it('standard descriptors: COPIED bit 63, ZERO bit 0, offset bits 9..55', () => {
    const opts = { clusterBits: 16 };
    expect(decodeL2Entry(words([0x8000_0001, 0x0005_0000]), 0, opts)).toEqual({ kind: 'normal', offset: 0x1_0005_0000, copied: true });
    expect(decodeL2Entry(words([0, 0x0005_0001]), 0, opts)).toEqual({ kind: 'zero', offset: 0x5_0000, copied: false });
    expect(decodeL2Entry(words([0, 1]), 0, opts)).toEqual({ kind: 'zero', offset: 0, copied: false });
    expect(decodeL2Entry(words([0, 0]), 0, opts)).toEqual({ kind: 'unallocated' });
    expect(l2EntryType(0, 1, false)).toBe(L2_ZERO_PLAIN);
    expect(l2EntryType(0, 0x5_0001, false)).toBe(L2_ZERO_ALLOC);
    // Bit 0 means nothing to qemu's type logic with extended entries.
    expect(l2EntryType(0, 0x5_0001, true)).toBe(L2_NORMAL);
  });

  it('compressed descriptors split at x = 62 - (cluster_bits - 8), length as qemu computes it', () => {
    // 64 KiB clusters: x = 54. Offset 0x1_0000_1345, 3 additional sectors.
    const hi = 0x4000_0000 | (3 << 22) | 0x1;
    const lo = 0x0000_1345;
    expect(compressedHostOffset(hi, lo, 16)).toBe(0x1_0000_1345);
    expect(compressedAdditionalSectors(hi, 16)).toBe(3);
    expect(compressedByteLength(hi, lo, 16)).toBe(4 * 512 - 0x145);
    expect(compressedAdditionalSectorsFor(0x1_0000_1345, 4 * 512 - 0x145)).toBe(3);
    expect(compressedAdditionalSectorsFor(0x1_0000_1345, 1)).toBe(0);
    expect(compressedAdditionalSectorsFor(0x1_0000_1200, 512)).toBe(0);
    expect(compressedAdditionalSectorsFor(0x1_0000_1200, 513)).toBe(1);
    expect(decodeL2Entry(words([hi, lo]), 0, { clusterBits: 16 })).toEqual({
      kind: 'compressed',
      offset: 0x1_0000_1345,
      additionalSectors: 3,
    });
    // 512-byte clusters: x = 61, one sector bit; offset bits 56..60 must be zero.
    expect(compressedAdditionalSectors(0x6000_0000, 9)).toBe(1);
    expect(compressedHostOffset(0x6000_0000, 7, 9)).toBe(7);
    expect(() => decodeL2Entry(words([0x4100_0000, 0]), 0, { clusterBits: 9, tableOffset: 0x40000 })).toThrow(
      /L2 entry at 0x40000 index 0: .*bits above 55/,
    );
    // 2 MiB clusters: x = 49, 13 sector bits (49..61).
    expect(compressedAdditionalSectors(0x7fff_ffff, 21)).toBe(0x1fff);
    expect(compressedHostOffset(0x7fff_ffff, 0xffff_ffff, 21)).toBe(2 ** 49 - 1);
    // COPIED is never valid on a compressed cluster.
    expect(codeOf(() => decodeL2Entry(words([0xc000_0000, 0x200]), 0, { clusterBits: 16 }))).toBe('CORRUPT');
  });

  it('extended entries: which bitmap combinations are valid', () => {
    const ext = { clusterBits: 16, extended: true };
    // Normal cluster: alloc bit 0 and zero bit 1.
    expect(decodeL2Entry(words([0, 0x5_0000, 0x2, 0x1], true), 0, ext)).toEqual({
      kind: 'normal',
      offset: 0x5_0000,
      copied: false,
      subclusters: { allocated: 1, zero: 2 },
    });
    expect(l2SubclusterType(0, 0x5_0000, 0x2, 0x1, 0, true)).toBe(SUBCLUSTER_NORMAL);
    expect(l2SubclusterType(0, 0x5_0000, 0x2, 0x1, 1, true)).toBe(SUBCLUSTER_ZERO_ALLOC);
    expect(l2SubclusterType(0, 0x5_0000, 0x2, 0x1, 2, true)).toBe(SUBCLUSTER_UNALLOCATED_ALLOC);
    // Allocated and zero for the same subcluster: invalid.
    expect(l2SubclusterType(0, 0x5_0000, 0x1, 0x1, 5, true)).toBe(SUBCLUSTER_INVALID);
    expect(() => decodeL2Entry(words([0, 0x5_0000, 0x8000_0000, 0x8000_0000], true), 0, ext)).toThrow(
      /0x80000000 are marked both allocated and zero/,
    );
    // Unallocated cluster: zero bits fine, allocation bits invalid.
    expect(decodeL2Entry(words([0, 0, 0xffff_ffff, 0], true), 0, ext)).toEqual({
      kind: 'unallocated',
      subclusters: { allocated: 0, zero: 0xffff_ffff },
    });
    expect(l2SubclusterType(0, 0, 0x4, 0, 2, true)).toBe(SUBCLUSTER_ZERO_PLAIN);
    expect(l2SubclusterType(0, 0, 0, 0x4, 2, true)).toBe(SUBCLUSTER_INVALID);
    expect(codeOf(() => decodeL2Entry(words([0, 0, 0, 0x4], true), 0, ext))).toBe('CORRUPT');
    // Compressed: the bitmap must be all zeros.
    expect(codeOf(() => decodeL2Entry(words([0x4000_0000, 0x1234, 0, 1], true), 0, ext))).toBe('CORRUPT');
    expect(l2SubclusterType(0x4000_0000, 0x1234, 0, 0, 7, true)).toBe(SUBCLUSTER_COMPRESSED);
    // No ZERO flag in extended entries.
    expect(codeOf(() => decodeL2Entry(words([0, 0x5_0001, 0, 0], true), 0, ext))).toBe('CORRUPT');
    expect(codeOf(() => encodeL2Entry(viewOf(new Uint8Array(16)), 0, { kind: 'zero', offset: 0, copied: false }, ext))).toBe(
      'INVALID_ARGUMENT',
    );
  });

  it('refuses reserved bits, offsets above 2^53, misaligned offsets and COPIED on unallocated entries', () => {
    const opts = { clusterBits: 16, tableOffset: 0x40000 };
    for (const w of [
      [0x0100_0000, 0x5_0000],
      [0x2000_0000, 0],
      [0, 0x5_0002],
      [0, 0x5_0100],
      [0x0020_0000, 0],
      [0x8000_0000, 0],
    ]) {
      expect(codeOf(() => decodeL2Entry(words(w), 0, opts))).toBe('CORRUPT');
    }
    expect(() => decodeL2Entry(words([0, 0x5_0200]), 3 - 3, opts)).toThrow(
      'L2 entry at 0x40000 index 0: host offset 0x50200 is not cluster-aligned',
    );
    // With an external data file, offset 0 + COPIED is a normal cluster.
    expect(decodeL2Entry(words([0x8000_0000, 0]), 0, { clusterBits: 16, externalDataFile: true })).toEqual({
      kind: 'normal',
      offset: 0,
      copied: true,
    });
    expect(l2EntryType(0x8000_0000, 0, false, true)).toBe(L2_NORMAL);
    expect(l2EntryType(0x8000_0000, 0, false, false)).toBe(L2_UNALLOCATED);
  });

  it('refuses to encode what would not decode back', () => {
    const view = viewOf(new Uint8Array(16));
    const o = { clusterBits: 16 };
    for (const [entry, options] of [
      [{ kind: 'normal', offset: 0, copied: true }, o],
      [{ kind: 'normal', offset: 0x200, copied: false }, o],
      [{ kind: 'normal', offset: 0x10000, copied: false, subclusters: { allocated: 1, zero: 0 } }, o],
      [{ kind: 'normal', offset: 0x10000, copied: false, subclusters: { allocated: 1, zero: 1 } }, { ...o, extended: true }],
      [{ kind: 'unallocated', subclusters: { allocated: 1, zero: 0 } }, { ...o, extended: true }],
      [{ kind: 'compressed', offset: 2 ** 54, additionalSectors: 0 }, o],
      [{ kind: 'compressed', offset: 0, additionalSectors: 256 }, o],
      [{ kind: 'compressed', offset: 0, additionalSectors: 0 }, { ...o, externalDataFile: true }],
      [{ kind: 'normal', offset: 0x10000, copied: false }, { clusterBits: 8 }],
    ] as [L2Entry, L2Options][]) {
      expect(codeOf(() => encodeL2Entry(view, 0, entry, options))).toBe('INVALID_ARGUMENT');
    }
  });

  it('maps guest offsets to L1, L2 and subcluster indexes', () => {
    expect(l2EntriesPerTable(16, false)).toBe(8192);
    expect(l2EntriesPerTable(16, true)).toBe(4096);
    expect(l1IndexOf(0x1234_5678, 16, false)).toBe(0);
    expect(l2IndexOf(0x1234_5678, 16, false)).toBe(0x1234);
    expect(l1IndexOf(0x1234_5678, 16, true)).toBe(1);
    expect(l2IndexOf(0x1234_5678, 16, true)).toBe(0x234);
    expect(subclusterIndexOf(0x1234_5678, 16)).toBe(0x5678 >> 11);
    expect(l1IndexOf(2 ** 50 + 5, 9, false)).toBe(2 ** 35);
  });
});
