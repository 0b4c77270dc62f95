import fc from 'fast-check';
import {
  compressedByteLength,
  decodeL2Entry,
  encodeL1Entry,
  encodeL2Entry,
  isQcow2Error,
  viewOf,
  type L2Entry,
} from '@qcow2/format';
import { createTableCache, type TableCache } from '@qcow2/cache';
import { createMemoryStorage } from '@qcow2/storage';
import { describe, expect, it } from 'vitest';
import { createClusterMap, createL1Table, createRun, type MappingRun } from '../src/index.js';

/** An image in memory: L1 table at 0, L2 tables in the following clusters. */
interface Fixture {
  clusterBits: number;
  extended: boolean;
  sliceSize: number;
  file: Uint8Array;
  l1Size: number;
  /** L1 entry → L2 entries (undefined: the L1 entry is 0). */
  tables: (L2Entry[] | undefined)[];
  externalDataFile: boolean;
}

/** A TableCache over the fixture's bytes, big enough to hold every slice. */
function cacheOver(file: Uint8Array, sliceSize: number): TableCache {
  return createTableCache({
    storage: createMemoryStorage({ initial: file, readOnly: true }),
    capacity: Math.max(2 * sliceSize, file.length),
    entrySize: sliceSize,
  });
}

function buildFile(f: Omit<Fixture, 'file'>): Uint8Array {
  const cs = 2 ** f.clusterBits;
  const file = new Uint8Array(cs * (1 + f.tables.length));
  const l1 = viewOf(file);
  f.tables.forEach((table, i) => {
    if (table === undefined) return;
    const l2Offset = cs * (1 + i);
    encodeL1Entry(l1, i, { l2Offset, copied: true });
    const view = viewOf(file.subarray(l2Offset, l2Offset + cs));
    table.forEach((entry, j) =>
      encodeL2Entry(view, j, entry, { clusterBits: f.clusterBits, extended: f.extended, externalDataFile: f.externalDataFile }),
    );
  });
  return file;
}

const FIXED_BITMAP_FULL = 0xffff_ffff;
/** Random entries at the start of each table; the rest are unallocated. */
const USED_ENTRIES = 80;

/** Arbitrary valid entries; host offsets come from a small pool so that runs are contiguous. */
function entryArb(clusterBits: number, extended: boolean, index: number): fc.Arbitrary<L2Entry> {
  const cs = 2 ** clusterBits;
  const host = fc.oneof(
    fc.constant(0x100_0000 + index * cs), // contiguous with neighbours
    fc.integer({ min: 1, max: 4096 }).map((k) => 0x200_0000 + k * cs),
    fc.constant(2 ** 52 + index * cs), // large offsets stay exact
  );
  const bitmap = fc
    .tuple(fc.constantFrom(0, FIXED_BITMAP_FULL, 0x0000_ffff, 0xffff_0000), fc.nat({ max: FIXED_BITMAP_FULL }))
    .chain(([a, b]) => fc.constantFrom(a, b))
    .map((x) => x >>> 0);
  if (extended) {
    return fc.oneof(
      bitmap.map((zero) => ({ kind: 'unallocated', subclusters: { allocated: 0, zero } }) as L2Entry),
      fc.tuple(host, bitmap, bitmap).map(
        ([offset, a, z]) =>
          ({ kind: 'normal', offset, copied: true, subclusters: { allocated: a >>> 0, zero: (z & ~a) >>> 0 } }) as L2Entry,
      ),
      fc
        .tuple(fc.integer({ min: 0x100_0000, max: 0x1000_0000 }), fc.integer({ min: 0, max: 2 ** (clusterBits - 8) - 1 }))
        .map(([offset, additionalSectors]) => ({ kind: 'compressed', offset, additionalSectors }) as L2Entry),
    );
  }
  return fc.oneof(
    fc.constant({ kind: 'unallocated' } as L2Entry),
    fc.constant({ kind: 'zero', offset: 0, copied: false } as L2Entry),
    host.map((offset) => ({ kind: 'zero', offset, copied: true }) as L2Entry),
    host.map((offset) => ({ kind: 'normal', offset, copied: true }) as L2Entry),
    host.map((offset) => ({ kind: 'normal', offset, copied: true }) as L2Entry),
    fc
      .tuple(fc.integer({ min: 0x100_0000, max: 0x1000_0000 }), fc.integer({ min: 0, max: 2 ** (clusterBits - 8) - 1 }))
      .map(([offset, additionalSectors]) => ({ kind: 'compressed', offset, additionalSectors }) as L2Entry),
  );
}

const geometryArb = fc.oneof(
  fc.record({ clusterBits: fc.constantFrom(9, 10, 12), extended: fc.constant(false) }),
  fc.record({ clusterBits: fc.constantFrom(14, 15), extended: fc.constant(true) }),
);

const fixtureArb: fc.Arbitrary<Fixture> = geometryArb.chain(({ clusterBits, extended }) => {
  const cs = 2 ** clusterBits;
  const entries = cs / (extended ? 16 : 8);
  // Keep tables small for speed: only the first `used` entries are random, the rest unallocated.
  const used = Math.min(entries, USED_ENTRIES);
  const sliceSizes = [512, 1024, cs].filter((s) => s <= cs);
  const table = fc
    .tuple(...Array.from({ length: used }, (_, i) => entryArb(clusterBits, extended, i)))
    .map((head) => [...head, ...Array.from({ length: entries - used }, () => ({ kind: 'unallocated' }) as L2Entry)]);
  return fc
    .record({
      sliceSize: fc.constantFrom(...sliceSizes),
      tables: fc.array(fc.option(table, { nil: undefined, freq: 3 }), { minLength: 1, maxLength: 3 }),
      l1Extra: fc.nat({ max: 2 }),
    })
    .map(({ sliceSize, tables, l1Extra }) => {
      const base = { clusterBits, extended, sliceSize, tables, l1Size: tables.length, externalDataFile: false };
      // l1Extra: the L1 table claims fewer entries than the file holds (entries past l1_size).
      const l1Size = Math.max(0, tables.length - l1Extra);
      return { ...base, l1Size, file: buildFile(base) };
    });
});

interface ModelByte {
  kind: MappingRun['kind'];
  host: number; // host offset of this subcluster's first byte, or -1
  compressed?: { offset: number; length: number };
}

const decodedCache = new WeakMap<Fixture, Map<number, L2Entry>>();

/** The reference: what the format codec's decoded entry says about subcluster `sc` of cluster `c`. */
function model(f: Fixture, guestCluster: number, sc: number): ModelByte {
  const cs = 2 ** f.clusterBits;
  const entries = cs / (f.extended ? 16 : 8);
  const l1Index = Math.floor(guestCluster / entries);
  const table = l1Index < f.l1Size ? f.tables[l1Index] : undefined;
  if (table === undefined) return { kind: 'unallocated', host: -1 };
  const l2Index = guestCluster % entries;
  const l2Offset = cs * (1 + l1Index);
  let decoded = decodedCache.get(f);
  if (decoded === undefined) decodedCache.set(f, (decoded = new Map()));
  let entry = decoded.get(guestCluster);
  if (entry === undefined) {
    entry = decodeL2Entry(viewOf(f.file.subarray(l2Offset, l2Offset + cs)), l2Index, {
      clusterBits: f.clusterBits,
      extended: f.extended,
    });
    decoded.set(guestCluster, entry);
  }
  const scSize = f.extended ? cs / 32 : cs;
  const bit = 1 << sc;
  switch (entry.kind) {
    case 'compressed': {
      const view = viewOf(f.file.subarray(l2Offset, l2Offset + cs));
      const at = l2Index * (f.extended ? 16 : 8);
      return {
        kind: 'compressed',
        host: -1,
        compressed: { offset: entry.offset, length: compressedByteLength(view.getUint32(at), view.getUint32(at + 4), f.clusterBits) },
      };
    }
    case 'zero':
      return { kind: 'zero', host: entry.offset === 0 ? -1 : entry.offset };
    case 'normal':
      if (entry.subclusters === undefined) return { kind: 'data', host: entry.offset };
      if ((entry.subclusters.zero & bit) !== 0) return { kind: 'zero', host: entry.offset + sc * scSize };
      if ((entry.subclusters.allocated & bit) !== 0) return { kind: 'data', host: entry.offset + sc * scSize };
      return { kind: 'unallocated', host: entry.offset + sc * scSize };
    default:
      if (entry.subclusters !== undefined && (entry.subclusters.zero & bit) !== 0) return { kind: 'zero', host: -1 };
      return { kind: 'unallocated', host: -1 };
  }
}

function check(ok: boolean, run: MappingRun, at: number): void {
  if (!ok) throw new Error(`run ${JSON.stringify(run)} disagrees with the model at ${at}`);
}

function checkRuns(f: Fixture, offset: number, length: number, runs: MappingRun[]): void {
  const cs = 2 ** f.clusterBits;
  const scSize = f.extended ? cs / 32 : cs;
  let at = offset;
  for (const run of runs) {
    expect(run.offset).toBe(at);
    expect(run.length).toBeGreaterThan(0);
    // Every subcluster the run touches agrees with the model.
    const entries = cs / (f.extended ? 16 : 8);
    for (let sub = Math.floor(run.offset / scSize) * scSize; sub < run.offset + run.length; sub += scSize) {
      const cluster = Math.floor(sub / cs);
      const l1Index = Math.floor(cluster / entries);
      if (cluster % entries >= USED_ENTRIES || l1Index >= f.l1Size || f.tables[l1Index] === undefined) {
        // Nothing mapped up to the next table: skip ahead (the model says unallocated).
        check(run.kind === 'unallocated' && run.hostOffset === -1, run, sub);
        sub = Math.max(sub, (l1Index + 1) * entries * cs - scSize);
        continue;
      }
      const m = model(f, cluster, Math.floor((sub % cs) / scSize));
      check(run.kind === m.kind, run, sub);
      const first = Math.max(sub, run.offset);
      if (m.kind === 'compressed') {
        check(Math.floor(run.offset / cs) === Math.floor((run.offset + run.length - 1) / cs), run, sub);
        check(run.hostOffset === m.compressed!.offset && run.compressedLength === m.compressed!.length, run, sub);
      } else if (m.host >= 0) {
        check(run.hostOffset + (first - run.offset) === m.host + (first - sub), run, sub);
      } else {
        check(run.hostOffset === -1, run, sub);
      }
    }
    at += run.length;
  }
  expect(at).toBe(offset + length);
  // Runs are maximal within a slice: two neighbours in one slice could not have been one run.
  const sliceSpan = (f.sliceSize / (f.extended ? 16 : 8)) * cs;
  for (let i = 0; i + 1 < runs.length; i++) {
    const a = runs[i]!;
    const b = runs[i + 1]!;
    const boundary = b.offset;
    if (boundary % sliceSpan === 0) continue;
    const mergeable =
      a.kind === b.kind &&
      a.kind !== 'compressed' &&
      (a.hostOffset === -1) === (b.hostOffset === -1) &&
      (a.hostOffset === -1 || a.hostOffset + a.length === b.hostOffset);
    expect(mergeable, `runs ${JSON.stringify(a)} and ${JSON.stringify(b)} should have been one`).toBe(false);
  }
}

describe('ClusterMap lookups against the decoded-entry model', () => {
  it('cover every range with runs that agree with every subcluster, maximal within a slice', async () => {
    await fc.assert(
      fc.asyncProperty(
        fixtureArb,
        fc.nat(),
        fc.nat(),
        fc.boolean(),
        async (f, a, b, warm) => {
          const cs = 2 ** f.clusterBits;
          const span = (cs / (f.extended ? 16 : 8)) * cs;
          const total = span * (f.tables.length + 1);
          // Offsets around the interesting part: the first entries of each table, and beyond.
          const pick = (n: number): number => {
            const table = n % (f.tables.length + 1);
            return table * span + ((n >>> 3) % (100 * cs));
          };
          const x = Math.min(pick(a), total);
          const y = Math.min(pick(b), total);
          const offset = Math.min(x, y);
          const length = Math.max(1, Math.abs(x - y));
          const l2Cache = cacheOver(f.file, f.sliceSize);
          const map = createClusterMap({
            clusterBits: f.clusterBits,
            extendedL2: f.extended,
            l1: createL1Table(f.file, 0, f.l1Size),
            l2Cache,
          });
          if (warm) await map.runs(offset, length);
          const misses = l2Cache.stats().misses;
          const runs = await map.runs(offset, length);
          checkRuns(f, offset, length, runs);
          // A second pass over the same range is served from the cache.
          if (warm) expect(l2Cache.stats().misses).toBe(misses);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('maps a request that ends in the cluster it starts in (the per-request fast path) as the model says', async () => {
    await fc.assert(
      fc.asyncProperty(fixtureArb, fc.nat(), fc.nat(), fc.nat(), async (f, c, a, b) => {
        const cs = 2 ** f.clusterBits;
        const span = (cs / (f.extended ? 16 : 8)) * cs;
        // A cluster among the random entries of some table, a range inside it.
        const cluster = (c % f.tables.length) * (span / cs) + ((c >>> 2) % USED_ENTRIES);
        const start = a % cs;
        const length = 1 + (b % (cs - start));
        const offset = cluster * cs + start;
        const map = createClusterMap({
          clusterBits: f.clusterBits,
          extendedL2: f.extended,
          l1: createL1Table(f.file, 0, f.l1Size),
          l2Cache: cacheOver(f.file, f.sliceSize),
        });
        const run = createRun();
        await map.lookup(offset, length, run);
        expect(run.offset).toBe(offset);
        checkRuns(f, offset, run.length, [run]);
        // A whole-cluster request of a data cluster is one run of the cluster.
        if (start === 0 && length === cs && run.kind === 'data') expect(run.length).toBe(cs);
      }),
      { numRuns: 300 },
    );
  });

  it('answers synchronously when the slice is in memory, and only then', async () => {
    const f: Omit<Fixture, 'file'> = {
      clusterBits: 16,
      extended: false,
      sliceSize: 4096,
      l1Size: 1,
      externalDataFile: false,
      tables: [Array.from({ length: 8192 }, (_, i) => ({ kind: 'normal', offset: (i + 10) * 65536, copied: true }) as L2Entry)],
    };
    const file = buildFile(f);
    const l2Cache = cacheOver(file, f.sliceSize);
    const map = createClusterMap({ clusterBits: 16, l1: createL1Table(file, 0, 1), l2Cache });
    const run = createRun();
    expect(map.lookupCached(65536 * 3 + 5, 1 << 30, run)).toBe(false);
    expect(run.length).toBe(0);
    await map.lookup(65536 * 3 + 5, 1 << 30, run);
    expect(l2Cache.stats()).toMatchObject({ misses: 1, pinned: 0 });
    expect(map.lookupCached(65536 * 3 + 5, 1 << 30, run)).toBe(true);
    // One 4 KiB slice maps 512 clusters: the run stops at the slice end.
    expect(run).toEqual({ kind: 'data', offset: 65536 * 3 + 5, length: 512 * 65536 - (65536 * 3 + 5), hostOffset: 13 * 65536 + 5, compressedLength: 0 });
    // Past the L1 table: unallocated, without touching the cache.
    const { hits, misses } = l2Cache.stats();
    expect(map.lookupCached(2 ** 40, 12345, run)).toBe(true);
    expect(run).toMatchObject({ kind: 'unallocated', offset: 2 ** 40, length: 12345, hostOffset: -1 });
    expect(l2Cache.stats()).toMatchObject({ hits, misses });
  });

  it('runs over zero L1 entries in one run without reading anything', async () => {
    const tables: (L2Entry[] | undefined)[] = [undefined, undefined, undefined, [{ kind: 'normal', offset: 1 << 20, copied: true }]];
    const f = { clusterBits: 9, extended: false, sliceSize: 512, l1Size: 4, externalDataFile: false, tables };
    const file = buildFile(f);
    const l2Cache = cacheOver(file, 512);
    const map = createClusterMap({ clusterBits: 9, l1: createL1Table(file, 0, 4), l2Cache });
    const span = 64 * 512;
    const runs = await map.runs(100, 4 * span);
    expect(runs.map((r) => [r.kind, r.offset, r.length])).toEqual([
      ['unallocated', 100, 3 * span - 100],
      ['data', 3 * span, 512],
      ['unallocated', 3 * span + 512, 63 * 512],
      ['unallocated', 4 * span, 100],
    ]);
    expect(l2Cache.stats().misses).toBe(1);
  });
});

/** One L2 table at 0x200 (cluster 1) of a 512-byte-cluster image, entries given raw. */
function rawFixture(
  entries: [number, number, number?, number?][],
  options: { clusterBits?: number; extended?: boolean; l1Entry?: [number, number] } = {},
): { file: Uint8Array; clusterBits: number; extended: boolean } {
  const clusterBits = options.clusterBits ?? 9;
  const extended = options.extended === true;
  const cs = 2 ** clusterBits;
  const file = new Uint8Array(cs * 2);
  const view = viewOf(file);
  const [l1Hi, l1Lo] = options.l1Entry ?? [0x8000_0000, cs];
  view.setUint32(0, l1Hi);
  view.setUint32(4, l1Lo);
  entries.forEach(([hi, lo, bHi, bLo], i) => {
    const at = cs + i * (extended ? 16 : 8);
    view.setUint32(at, hi >>> 0);
    view.setUint32(at + 4, lo >>> 0);
    if (extended) {
      view.setUint32(at + 8, (bHi ?? 0) >>> 0);
      view.setUint32(at + 12, (bLo ?? 0) >>> 0);
    }
  });
  return { file, clusterBits, extended };
}

async function lookupError(
  fixture: { file: Uint8Array; clusterBits: number; extended: boolean },
  offset: number,
  extra: { version?: 2 | 3; externalDataFile?: boolean; strict?: boolean } = {},
): Promise<unknown> {
  const cs = 2 ** fixture.clusterBits;
  const map = createClusterMap({
    clusterBits: fixture.clusterBits,
    extendedL2: fixture.extended,
    l1: createL1Table(fixture.file, 0, 1),
    l2Cache: cacheOver(fixture.file, Math.min(cs, 4096)),
    imageFileSize: fixture.file.length,
    ...extra,
  });
  try {
    await map.runs(offset, cs);
    return undefined;
  } catch (error) {
    return error;
  }
}

describe('ClusterMap refuses what qemu refuses when it reads, naming the table and the index', () => {
  it.each([
    ['an L2 table offset that is not cluster-aligned', rawFixture([], { clusterBits: 10, l1Entry: [0, 0x600] }), 0, {}, /L1 entry at 0x0 index 0: L2 table offset 0x600 is not cluster-aligned/],
    ['an L2 table offset above 2^53 (strict)', rawFixture([], { l1Entry: [0x0020_0000, 0x200] }), 0, { strict: true }, /L1 entry at 0x0 index 0: L2 table offset .* exceeds 2\^53/],
    ['an L2 table offset above 2^53, not cluster-aligned', rawFixture([], { clusterBits: 10, l1Entry: [0x0020_0000, 0x200] }), 0, {}, /L1 entry at 0x0 index 0: L2 table offset 0x0020000000000200 is not cluster-aligned/],
    ['a host offset that is not cluster-aligned', rawFixture([[0, 0], [0x8000_0000, 0x50200]], { clusterBits: 10 }), 1024, {}, /L2 entry at 0x400 index 1: host offset 0x50200 is not cluster-aligned/],
    ['a host offset above 2^53 (strict)', rawFixture([[0x0020_0000, 0x200]]), 0, { strict: true }, /L2 entry at 0x200 index 0: host offset .* exceeds 2\^53/],
    ['a host offset above 2^53, not cluster-aligned', rawFixture([[0x0020_0000, 0x200]], { clusterBits: 10 }), 0, {}, /L2 entry at 0x400 index 0: host offset 0x0020000000000200 is not cluster-aligned/],
    ['a zero flag in a version 2 image', rawFixture([[0, 1]]), 0, { version: 2 }, /L2 entry at 0x200 index 0: zero cluster entry/],
    ['an external data file offset other than the guest offset', rawFixture([[0x8000_0000, 0x400]]), 0, { externalDataFile: true }, /L2 entry at 0x200 index 0: external data file host offset 0x400 does not match the guest offset 0x0/],
    ['a compressed cluster with an external data file', rawFixture([[0x4000_0000, 0x400]]), 0, { externalDataFile: true }, /L2 entry at 0x200 index 0: compressed cluster in an image with an external data file/],
    ['allocated and zero bits for one subcluster', rawFixture([[0x8000_0000, 0x10000, 1, 1]], { clusterBits: 14, extended: true }), 0, {}, /L2 entry at 0x4000 index 0: subcluster bitmap 0x0000000100000001 contradicts/],
    ['allocation bits in an unallocated cluster', rawFixture([[0, 0, 0, 4]], { clusterBits: 14, extended: true }), 0, {}, /L2 entry at 0x4000 index 0: subcluster bitmap/],
  ] as const)('%s', async (_name, fixture, offset, extra, message) => {
    const error = await lookupError(fixture, offset, extra);
    expect(isQcow2Error(error)).toBe(true);
    expect((error as { code: string }).code).toBe('CORRUPT');
    expect((error as Error).message).toMatch(message);
  });

  it('reads reserved bits and offsets past the end of the file as qemu does, unless strict', async () => {
    const reservedL2 = rawFixture([[0x8000_0000, 0x10002]]);
    expect(await lookupError(reservedL2, 0)).toBeUndefined();
    expect(((await lookupError(reservedL2, 0, { strict: true })) as Error).message).toMatch(
      /L2 entry at 0x200 index 0: reserved bits are set/,
    );
    const reservedL1 = rawFixture([], { l1Entry: [0x8100_0000, 0x200] });
    expect(await lookupError(reservedL1, 0)).toBeUndefined();
    expect(((await lookupError(reservedL1, 0, { strict: true })) as Error).message).toMatch(
      /L1 entry at 0x0 index 0: reserved bits are set/,
    );
    const pastEnd = rawFixture([[0x8000_0000, 0x10000]]);
    expect(await lookupError(pastEnd, 0)).toBeUndefined();
    expect(((await lookupError(pastEnd, 0, { strict: true })) as Error).message).toMatch(
      /L2 entry at 0x200 index 0: host offset 0x10000 is past the end of the file \(0x400\)/,
    );
    const tablePastEnd = rawFixture([], { l1Entry: [0, 0x2000] });
    expect(((await lookupError(tablePastEnd, 0, { strict: true })) as Error).message).toMatch(
      /L1 entry at 0x0 index 0: L2 table offset 0x2000 is past the end of the file/,
    );
  });

  it('reads offsets of 2^53 and more as past the end of the file, as qemu does (zeros), unless strict', async () => {
    const l1Huge = rawFixture([], { l1Entry: [0x0100_0000, 0x200] });
    const hostHuge = rawFixture([[0x8080_0000, 0x200], [0x8000_0000, 0x400]]);
    const run = async (fixture: typeof l1Huge): Promise<[string, number, number, number][]> => {
      const map = createClusterMap({ clusterBits: 9, l1: createL1Table(fixture.file, 0, 1), l2Cache: cacheOver(fixture.file, 512) });
      return (await map.runs(0, 3 * 512)).map((r) => [r.kind, r.offset, r.length, r.hostOffset]);
    };
    expect(await run(l1Huge)).toEqual([['unallocated', 0, 1536, -1]]);
    expect(await run(hostHuge)).toEqual([
      ['zero', 0, 512, -1],
      ['data', 512, 512, 0x400],
      ['unallocated', 1024, 512, -1],
    ]);
  });

  it('with an external data file, offset 0 with COPIED is data at host offset 0', async () => {
    const fixture = rawFixture([[0x8000_0000, 0], [0x8000_0000, 0x200], [0, 0]]);
    const map = createClusterMap({
      clusterBits: 9,
      l1: createL1Table(fixture.file, 0, 1),
      l2Cache: cacheOver(fixture.file, 512),
      externalDataFile: true,
    });
    const runs = await map.runs(0, 3 * 512);
    expect(runs.map((r) => [r.kind, r.offset, r.length, r.hostOffset])).toEqual([
      ['data', 0, 1024, 0],
      ['unallocated', 1024, 512, -1],
    ]);
  });

  it('never throws anything but a Qcow2Error, whatever the table bytes', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(9, 14),
        fc.uint8Array({ minLength: 16, maxLength: 256 }),
        fc.boolean(),
        fc.boolean(),
        async (clusterBits, bytes, externalDataFile, strict) => {
          const extended = clusterBits === 14;
          const cs = 2 ** clusterBits;
          const file = new Uint8Array(2 * cs);
          viewOf(file).setUint32(4, cs);
          file.set(bytes, cs);
          const map = createClusterMap({
            clusterBits,
            extendedL2: extended,
            l1: createL1Table(file, 0, 1),
            l2Cache: cacheOver(file, 512),
            externalDataFile,
            strict,
            imageFileSize: file.length,
          });
          try {
            await map.runs(0, (bytes.length / (extended ? 16 : 8)) * cs);
          } catch (error) {
            if (!isQcow2Error(error)) throw error;
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
