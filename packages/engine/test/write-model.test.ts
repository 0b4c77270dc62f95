import fc from 'fast-check';
import { isQcow2Error } from '@qcow2/format';
import { createMemoryStorage, type MemoryStorage } from '@qcow2/storage';
import { describe, expect, it } from 'vitest';
import { checkRefcounts, openImage, type Image, type OpenOptions } from '../src/index.js';
import { handle, writeFreshImage } from './fresh-image.js';

/** Deterministic bytes from a seed; `compressible` ones are runs that deflate well. */
function bytesOf(seed: number, length: number, compressible = false): Uint8Array {
  const out = new Uint8Array(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    if (compressible) {
      out[i] = (seed + (i >> 7)) & 0xff;
    } else {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      out[i] = x & 0xff;
    }
  }
  return out;
}

interface Config {
  clusterBits: number;
  version: 2 | 3;
  refcountOrder: number;
  extendedL2: boolean;
  lazy: boolean;
  compressionType: 0 | 1;
  backing: 'none' | 'raw' | 'qcow2';
  clusters: number;
  cut: number;
  l2Small: boolean;
  /** preallocation=metadata: every cluster allocated (COPIED) up front. */
  prealloc: boolean;
  dataFile: 'none' | 'plain' | 'raw';
}

type Op =
  | { kind: 'write'; offset: number; length: number; seed: number }
  | { kind: 'zero'; offset: number; length: number; unmap: boolean }
  | { kind: 'discard'; offset: number; length: number }
  | { kind: 'compressed'; offset: number; length: number; seed: number; compressible: boolean }
  | { kind: 'read'; offset: number; length: number }
  | { kind: 'flush' }
  | { kind: 'reopen' }
  | { kind: 'crash' }
  | { kind: 'batch'; ops: Op[] };

const configArb: fc.Arbitrary<Config> = fc
  .record({
    clusterBits: fc.constantFrom(9, 12, 16),
    v3: fc.boolean(),
    refcountOrder: fc.constantFrom(0, 4, 6),
    extendedL2: fc.boolean(),
    lazy: fc.boolean(),
    compressionType: fc.constantFrom<0 | 1>(0, 1),
    backing: fc.constantFrom<Config['backing']>('none', 'raw', 'qcow2'),
    clusters: fc.integer({ min: 3, max: 40 }),
    cut: fc.integer({ min: 0, max: 3 }),
    l2Small: fc.boolean(),
    prealloc: fc.integer({ min: 0, max: 4 }),
    dataFile: fc.constantFrom<Config['dataFile']>('none', 'none', 'none', 'plain', 'raw'),
  })
  .map((c) => {
    const version: 2 | 3 = c.v3 ? 3 : 2;
    const extendedL2 = version === 3 && c.extendedL2 && c.clusterBits >= 14;
    return {
      clusterBits: c.clusterBits,
      version,
      refcountOrder: version === 3 ? c.refcountOrder : 4,
      extendedL2,
      lazy: version === 3 && c.lazy,
      compressionType: version === 3 ? c.compressionType : 0,
      backing: c.backing,
      clusters: c.clusterBits === 16 ? Math.min(c.clusters, 24) : c.clusters * 4,
      cut: c.cut,
      l2Small: c.l2Small,
      // qemu: preallocation with a backing file only with extended L2; data-file-raw without one.
      prealloc: c.prealloc === 0 && (c.backing === 'none' || extendedL2),
      dataFile: version < 3 || (c.dataFile === 'raw' && c.backing !== 'none') ? 'none' : c.dataFile,
    };
  });

function rangeArb(cs: number, size: number, maxClusters = 3): fc.Arbitrary<{ offset: number; length: number }> {
  const scs = cs >= 16384 ? cs / 32 : cs;
  return fc
    .tuple(
      fc.nat({ max: size - 1 }),
      fc.integer({ min: 1, max: maxClusters * cs }),
      fc.constantFrom<'any' | 'cluster' | 'subcluster' | 'sector'>('any', 'cluster', 'subcluster', 'sector'),
    )
    .map(([o, l, align]) => {
      const unit = align === 'cluster' ? cs : align === 'subcluster' ? scs : align === 'sector' ? 512 : 1;
      let offset = Math.floor(o / unit) * unit;
      if (offset >= size) offset = Math.floor((size - 1) / unit) * unit;
      let length = align === 'any' ? l : Math.max(unit, Math.round(l / unit) * unit);
      length = Math.max(1, Math.min(length, size - offset));
      return { offset, length };
    });
}

function opArb(cs: number, size: number, depth = 0): fc.Arbitrary<Op> {
  const range = rangeArb(cs, size, depth > 0 ? 2 : 3);
  const simple: fc.Arbitrary<Op>[] = [
    fc.tuple(range, fc.nat()).map(([r, seed]): Op => ({ kind: 'write', ...r, seed })),
    fc.tuple(range, fc.nat()).map(([r, seed]): Op => ({ kind: 'write', ...r, seed })),
    fc.tuple(range, fc.boolean()).map(([r, unmap]): Op => ({ kind: 'zero', ...r, unmap })),
    range.map((r): Op => ({ kind: 'discard', ...r })),
    range.map((r): Op => ({ kind: 'read', ...r })),
  ];
  if (depth > 0) return fc.oneof(...simple);
  const clusters = Math.ceil(size / cs);
  return fc.oneof(
    ...simple,
    fc.tuple(fc.nat({ max: clusters - 1 }), fc.integer({ min: 1, max: 2 }), fc.nat(), fc.boolean()).map(([c, n, seed, compressible]): Op => {
      const offset = c * cs;
      const length = Math.min(n * cs, size - offset);
      // Whole clusters, or the partial last one.
      return { kind: 'compressed', offset, length: length % cs === 0 || offset + length === size ? length : cs, seed, compressible };
    }),
    fc.constant<Op>({ kind: 'flush' }),
    fc.constant<Op>({ kind: 'reopen' }),
    fc.constant<Op>({ kind: 'crash' }),
    // Concurrent operations, mostly within a few clusters of each other.
    fc
      .tuple(fc.nat({ max: clusters - 1 }), fc.boolean())
      .chain(([c, near]) => {
        const start = near ? c * cs : 0;
        const windowSize = near ? Math.min(size - start, 3 * cs) : size;
        return fc.array(
          opArb(cs, windowSize, 1).map((o) => ('offset' in o ? { ...o, offset: o.offset + start } : o)),
          { minLength: 2, maxLength: 4 },
        );
      })
      .map((ops): Op => ({ kind: 'batch', ops })),
  );
}

const caseArb = configArb.chain((config) => {
  const cs = 2 ** config.clusterBits;
  const size = config.clusters * cs - config.cut * 512;
  return fc.record({
    config: fc.constant(config),
    backingSize: fc.integer({ min: Math.max(512, size - 3 * cs), max: size + cs }).map((n) => Math.floor(n / 512) * 512),
    ops: fc.array(opArb(cs, size), { minLength: 1, maxLength: 25 }),
  });
});

/** The flat model: what the guest must read. */
class Model {
  readonly bytes: Uint8Array;
  constructor(
    readonly config: Config,
    base: Uint8Array,
  ) {
    this.bytes = base;
  }

  get size(): number {
    return this.bytes.length;
  }

  /** Applies `op` to `target` (the model, or a window of it starting at `start`). */
  apply(op: Op, target: Uint8Array = this.bytes, start = 0): void {
    const cs = 2 ** this.config.clusterBits;
    switch (op.kind) {
      case 'write':
        target.set(bytesOf(op.seed, op.length), op.offset - start);
        break;
      case 'compressed':
        target.set(bytesOf(op.seed, op.length, op.compressible), op.offset - start);
        break;
      case 'zero':
        target.fill(0, op.offset - start, op.offset + op.length - start);
        break;
      case 'discard': {
        if (this.config.version < 3 && this.config.backing !== 'none') break;
        const from = Math.ceil(op.offset / cs) * cs;
        let to = Math.floor((op.offset + op.length) / cs) * cs;
        if (op.offset + op.length === this.size && this.size % cs !== 0) to = this.size;
        if (from < to) target.fill(0, from - start, to - start);
        break;
      }
      default:
        break;
    }
  }
}

function permutations<T>(items: readonly T[]): T[][] {
  if (items.length <= 1) return [items.slice()];
  const out: T[][] = [];
  for (let i = 0; i < items.length; i++) {
    const rest = [...items.slice(0, i), ...items.slice(i + 1)];
    for (const p of permutations(rest)) out.push([items[i]!, ...p]);
  }
  return out;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));
}

async function readAll(image: Image): Promise<Uint8Array> {
  const out = new Uint8Array(image.virtualSize).fill(0xa5);
  await image.read(out, 0);
  return out;
}

async function expectClean(storage: MemoryStorage, what: string): Promise<void> {
  const copy = createMemoryStorage({ initial: storage.snapshot(), readOnly: true });
  const check = await checkRefcounts(copy);
  expect(check.problems, `${what}: reference problems`).toEqual([]);
  expect(check.corruptions, `${what}: refcounts below references`).toEqual([]);
  expect(check.leaks, `${what}: leaked clusters`).toEqual([]);
  expect(check.copiedFlags, `${what}: COPIED flags`).toEqual([]);
}

async function runCase(c: { config: Config; backingSize: number; ops: Op[] }): Promise<void> {
  const { config } = c;
  const cs = 2 ** config.clusterBits;
  const size = config.clusters * cs - config.cut * 512;

  // The backing file and the model's starting point.
  let backingBytes: Uint8Array | undefined;
  const base = new Uint8Array(size);
  if (config.backing === 'raw') {
    backingBytes = bytesOf(7, c.backingSize);
    base.set(backingBytes.subarray(0, Math.min(size, c.backingSize)));
  } else if (config.backing === 'qcow2') {
    const s = createMemoryStorage();
    await writeFreshImage(s, { size: c.backingSize, clusterBits: 12 });
    const b = await openImage(s, { readOnly: false });
    for (let at = 0; at < c.backingSize; at += 3 * 4096 + 1000) {
      const n = Math.min(5000, c.backingSize - at);
      await b.write(bytesOf(at, n), at);
    }
    const content = await readAll(b);
    await b.close();
    backingBytes = s.snapshot();
    base.set(content.subarray(0, Math.min(size, c.backingSize)));
  }

  const storage = createMemoryStorage();
  const dataStorage = createMemoryStorage();
  await writeFreshImage(storage, {
    ...(config.prealloc ? { preallocation: 'metadata' as const } : {}),
    ...(config.dataFile === 'none' ? {} : { dataFile: config.dataFile, dataStorage }),
    size,
    clusterBits: config.clusterBits,
    version: config.version,
    refcountOrder: config.refcountOrder,
    extendedL2: config.extendedL2,
    lazyRefcounts: config.lazy,
    compressionType: config.compressionType,
    ...(config.backing === 'none' ? {} : { backingFile: 'base', backingFormat: config.backing }),
  });
  const options = (): OpenOptions => ({
    readOnly: false,
    discard: 'unmap',
    resolver: async (name) => (name === 'data' ? handle(dataStorage) : createMemoryStorage({ initial: backingBytes!, readOnly: true })),
    ...(config.l2Small ? { l2CacheSize: 1024, l2CacheEntrySize: 512 } : {}),
  });
  const model = new Model(config, base);
  let image = await openImage(storage, options());
  expect(image.virtualSize).toBe(size);

  const run = async (op: Op): Promise<void> => {
    switch (op.kind) {
      case 'write':
        await image.write(bytesOf(op.seed, op.length), op.offset);
        model.apply(op);
        break;
      case 'zero':
        await image.writeZeroes(op.offset, op.length, { mayUnmap: op.unmap });
        model.apply(op);
        break;
      case 'discard':
        await image.discard(op.offset, op.length);
        model.apply(op);
        break;
      case 'compressed':
        try {
          await image.writeCompressed(bytesOf(op.seed, op.length, op.compressible), op.offset);
          model.apply(op);
        } catch (error) {
          // qemu refuses a compressed write over an allocated cluster, and any with a data
          // file; the content is unchanged.
          if (!isQcow2Error(error)) throw error;
          if (config.dataFile !== 'none') expect(error.code).toBe('UNSUPPORTED');
          else expect([error.code, error.message]).toEqual(['IO', expect.stringMatching(/already allocated/)]);
        }
        break;
      case 'read': {
        const dst = new Uint8Array(op.length).fill(0x5a);
        await image.read(dst, op.offset);
        expect(equal(dst, model.bytes.subarray(op.offset, op.offset + op.length)), `read ${op.length} at ${op.offset}`).toBe(true);
        break;
      }
      case 'flush':
        await image.flush();
        break;
      case 'reopen':
        await image.close();
        await expectClean(storage, 'after close');
        image = await openImage(storage, options());
        expect(image.dirty).toBe(false);
        break;
      case 'crash': {
        // What a crash right after this flush leaves must open consistently with every byte.
        await image.flush();
        const crashed = createMemoryStorage({ initial: storage.snapshot() });
        // (The data file is shared: it holds what the crashed image's clusters point at.)
        if (!config.lazy) await expectClean(crashed, 'flushed image');
        const reopened = await openImage(crashed, options());
        expect(reopened.dirty).toBe(false);
        expect(equal(await readAll(reopened), model.bytes), 'content after crash').toBe(true);
        await reopened.close();
        await expectClean(crashed, 'repaired image');
        break;
      }
      case 'batch': {
        const windowStart = Math.min(...op.ops.map((o) => ('offset' in o ? o.offset : size)));
        const windowEnd = Math.max(...op.ops.map((o) => ('offset' in o ? o.offset + o.length : 0)));
        const before = model.bytes.slice(windowStart, windowEnd);
        const reads = new Map<Op, Uint8Array>();
        await Promise.all(
          op.ops.map((o) => {
            if (o.kind === 'write') return image.write(bytesOf(o.seed, o.length), o.offset);
            if (o.kind === 'zero') return image.writeZeroes(o.offset, o.length, { mayUnmap: o.unmap });
            if (o.kind === 'discard') return image.discard(o.offset, o.length);
            if (o.kind === 'read') {
              const dst = new Uint8Array(o.length);
              reads.set(o, dst);
              return image.read(dst, o.offset);
            }
            throw new Error(`unexpected ${o.kind} in a batch`);
          }),
        );
        const changes = op.ops.filter((o) => o.kind !== 'read');
        const actual = await image.readBytes(windowStart, windowEnd - windowStart);
        // Every state a serial order goes through (for the reads), and the final ones.
        const finals: Uint8Array[] = [];
        const states: Uint8Array[] = [before];
        for (const order of permutations(changes)) {
          const state = before.slice();
          for (const o of order) {
            model.apply(o, state, windowStart);
            states.push(state.slice());
          }
          finals.push(state);
        }
        const match = finals.find((f) => equal(f, actual));
        expect(match, `batch result equals a serial order: ${JSON.stringify(op.ops)}`).toBeDefined();
        model.bytes.set(match!, windowStart);
        // A concurrent read never sees a half-linked cluster: each sector it returns is that
        // sector in some serial state (reads take no lock, so a read spanning several runs may
        // see the writes between them; qemu does not order overlapping requests either).
        for (const [o, dst] of reads) {
          if (o.kind !== 'read') continue;
          for (let at = o.offset; at < o.offset + o.length; ) {
            const end = Math.min(o.offset + o.length, (Math.floor(at / 512) + 1) * 512);
            const got = dst.subarray(at - o.offset, end - o.offset);
            const ok = states.some((s) => equal(s.subarray(at - windowStart, end - windowStart), got));
            expect(ok, `concurrent read at ${at}..${end} sees a serial state`).toBe(true);
            at = end;
          }
        }
        break;
      }
    }
  };

  try {
    for (const op of c.ops) await run(op);
    expect(equal(await readAll(image), model.bytes), 'final content').toBe(true);
  } finally {
    await image.close();
  }
  await expectClean(storage, 'final');
  const reopened = await openImage(createMemoryStorage({ initial: storage.snapshot(), readOnly: true }), {
    resolver: async (name) => (name === 'data' ? handle(dataStorage) : createMemoryStorage({ initial: backingBytes!, readOnly: true })),
  });
  if (config.dataFile === 'raw') {
    // A raw data file reads as the guest does.
    expect(equal(dataStorage.snapshot().subarray(0, size), model.bytes), 'raw data file').toBe(true);
  }
  expect(reopened.dirty).toBe(false);
  expect(equal(await readAll(reopened), model.bytes), 'content after reopening').toBe(true);
  await reopened.close();
}

describe('writes against a flat model (memory storage, no qemu)', () => {
  it('write, zero, discard, compressed write, flush, reopen, crash and concurrent batches keep content and refcounts exact', async () => {
    await fc.assert(fc.asyncProperty(caseArb, runCase), { numRuns: 150 });
  });
});
