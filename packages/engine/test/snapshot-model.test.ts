import fc from 'fast-check';
import { isQcow2Error } from '@qcow2/format';
import { createMemoryStorage, type MemoryStorage } from '@qcow2/storage';
import { describe, expect, it } from 'vitest';
import { checkRefcounts, openImage, type Image } from '../src/index.js';
import { writeFreshImage } from './fresh-image.js';

/**
 * Model-based runs: guest writes, zero writes, discards and compressed writes interleaved with
 * snapshot create/apply/delete and close + reopen, against a model that keeps the flat disk and
 * a copy of it per snapshot. After every step the image reads as the model, and (whenever the
 * refcounts on disk are meant to be exact: not while lazy refcounts are dirty) our refcount walk
 * finds no leak, no corruption and no wrong COPIED flag; after snapshot steps and reopens every
 * snapshot reads as its copy.
 */

interface Config {
  clusterBits: number;
  version: 2 | 3;
  refcountOrder: number;
  extendedL2: boolean;
  lazy: boolean;
  clusters: number;
  l2Small: boolean;
}

type Op =
  | { kind: 'write'; offset: number; length: number; seed: number }
  | { kind: 'zero'; offset: number; length: number; unmap: boolean }
  | { kind: 'discard'; offset: number; length: number }
  | { kind: 'compressed'; cluster: number; seed: number }
  | { kind: 'create'; name: string }
  | { kind: 'apply'; name: string; byId: boolean }
  | { kind: 'delete'; name: string }
  | { kind: 'reopen' };

const NAMES = ['a', 'b', 'c', 'd'];

function bytesOf(seed: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    if (seed % 3 === 0) {
      out[i] = (seed + (i >> 7)) & 0xff; // compresses well
    } else {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      out[i] = x & 0xff;
    }
  }
  return out;
}

const configArb: fc.Arbitrary<Config> = fc
  .record({
    clusterBits: fc.constantFrom(9, 12, 14, 16),
    v3: fc.boolean(),
    refcountOrder: fc.constantFrom(0, 1, 2, 4, 6),
    extendedL2: fc.boolean(),
    lazy: fc.boolean(),
    clusters: fc.integer({ min: 4, max: 40 }),
    l2Small: fc.boolean(),
  })
  .map((c) => {
    const version: 2 | 3 = c.v3 ? 3 : 2;
    return {
      clusterBits: c.clusterBits,
      version,
      refcountOrder: version === 3 ? c.refcountOrder : 4,
      extendedL2: version === 3 && c.extendedL2 && c.clusterBits >= 14,
      lazy: version === 3 && c.lazy,
      // 512-byte clusters: several L2 tables; 64 KiB: at most 16 clusters (1 MiB).
      clusters: c.clusterBits === 16 ? Math.min(c.clusters, 16) : c.clusters * (c.clusterBits === 9 ? 4 : 1),
      l2Small: c.l2Small,
    };
  });

function opArb(cs: number, size: number): fc.Arbitrary<Op> {
  const range = fc
    .tuple(fc.nat({ max: size - 1 }), fc.integer({ min: 1, max: 3 * cs }), fc.boolean())
    .map(([o, l, aligned]) => {
      const offset = aligned ? Math.floor(o / cs) * cs : o;
      const length = Math.max(1, Math.min(aligned ? Math.max(cs, Math.floor(l / cs) * cs) : l, size - offset));
      return { offset, length };
    });
  const name = fc.constantFrom(...NAMES);
  return fc.oneof(
    { weight: 3, arbitrary: fc.tuple(range, fc.nat()).map(([r, seed]): Op => ({ kind: 'write', ...r, seed })) },
    { weight: 1, arbitrary: fc.tuple(range, fc.boolean()).map(([r, unmap]): Op => ({ kind: 'zero', ...r, unmap })) },
    { weight: 1, arbitrary: range.map((r): Op => ({ kind: 'discard', ...r })) },
    { weight: 1, arbitrary: fc.tuple(fc.nat({ max: size / cs - 1 }), fc.nat()).map(([cluster, seed]): Op => ({ kind: 'compressed', cluster, seed })) },
    { weight: 3, arbitrary: name.map((n): Op => ({ kind: 'create', name: n })) },
    { weight: 2, arbitrary: fc.tuple(name, fc.boolean()).map(([n, byId]): Op => ({ kind: 'apply', name: n, byId })) },
    { weight: 2, arbitrary: name.map((n): Op => ({ kind: 'delete', name: n })) },
    { weight: 1, arbitrary: fc.constant<Op>({ kind: 'reopen' }) },
  );
}

const caseArb = configArb.chain((config) => {
  const size = config.clusters * 2 ** config.clusterBits;
  return fc.record({ config: fc.constant(config), ops: fc.array(opArb(2 ** config.clusterBits, size), { minLength: 1, maxLength: 30 }) });
});

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));
}

async function readAll(image: Image): Promise<Uint8Array> {
  const out = new Uint8Array(image.virtualSize).fill(0xa5);
  await image.read(out, 0);
  return out;
}

async function expectClean(storage: MemoryStorage, what: string): Promise<void> {
  const check = await checkRefcounts(createMemoryStorage({ initial: storage.snapshot(), readOnly: true }));
  expect(check.problems, `${what}: reference problems`).toEqual([]);
  expect(check.corruptions, `${what}: refcounts below references`).toEqual([]);
  expect(check.leaks, `${what}: leaked clusters`).toEqual([]);
  expect(check.copiedFlags, `${what}: COPIED flags`).toEqual([]);
}

/** A refusal the configuration allows: a refcount that would pass the width's maximum. */
function expectOverflow(error: unknown, config: Config, what: string): void {
  expect(isQcow2Error(error), `${what}: ${String(error)}`).toBe(true);
  expect(config.refcountOrder, `${what}: refused at ${2 ** config.refcountOrder}-bit refcounts`).toBeLessThanOrEqual(2);
  expect((error as { code: string }).code).toBe('INVALID_ARGUMENT');
  expect((error as Error).message).toMatch(/refcount/);
}

async function runCase(c: { config: Config; ops: Op[] }): Promise<void> {
  const { config } = c;
  const cs = 2 ** config.clusterBits;
  const size = config.clusters * cs;
  const storage = createMemoryStorage();
  await writeFreshImage(storage, {
    size,
    clusterBits: config.clusterBits,
    version: config.version,
    refcountOrder: config.refcountOrder,
    extendedL2: config.extendedL2,
    lazyRefcounts: config.lazy,
  });
  const open = (): Promise<Image> =>
    openImage(storage, { readOnly: false, discard: 'unmap', ...(config.l2Small ? { l2CacheSize: 1024, l2CacheEntrySize: 512 } : {}) });
  let disk = new Uint8Array(size);
  const snaps = new Map<string, { id: string; bytes: Uint8Array }>();
  let nextId = 1;
  let image = await open();

  const checkSnapshots = async (what: string): Promise<void> => {
    expect(image.snapshots.map((s) => [s.id, s.name, s.diskSize, s.vmStateSize]), what).toEqual(
      [...snaps].map(([name, s]) => [s.id, name, size, 0]),
    );
    for (const [name, s] of snaps) {
      const view = await image.openSnapshot(s.id);
      expect(equal(await readAll(view), s.bytes), `${what}: snapshot ${name} reads as when it was taken`).toBe(true);
      await view.close();
    }
  };

  for (const [step, op] of c.ops.entries()) {
    const what = `step ${step} ${JSON.stringify(op)}`;
    switch (op.kind) {
      case 'write':
        await image.write(bytesOf(op.seed, op.length), op.offset);
        disk.set(bytesOf(op.seed, op.length), op.offset);
        break;
      case 'zero':
        await image.writeZeroes(op.offset, op.length, { mayUnmap: op.unmap });
        disk.fill(0, op.offset, op.offset + op.length);
        break;
      case 'discard': {
        await image.discard(op.offset, op.length);
        const from = Math.ceil(op.offset / cs) * cs;
        const to = Math.floor((op.offset + op.length) / cs) * cs;
        if (from < to) disk.fill(0, from, to);
        break;
      }
      case 'compressed': {
        const data = bytesOf(op.seed, cs);
        try {
          await image.writeCompressed(data, op.cluster * cs);
          disk.set(data, op.cluster * cs);
        } catch (error) {
          // qemu refuses a compressed write over an allocated cluster; nothing changes.
          expect(isQcow2Error(error) ? [error.code, error.message] : error).toEqual(['IO', expect.stringMatching(/already allocated/)]);
        }
        break;
      }
      case 'create':
        try {
          const info = await image.createSnapshot(op.name, { dateSec: step, dateNsec: 0 });
          expect(snaps.has(op.name), `${what}: a name in use must be refused`).toBe(false);
          expect(info).toMatchObject({ id: String(nextId), name: op.name, diskSize: size, vmStateSize: 0, dateSec: step });
          snaps.set(op.name, { id: info.id, bytes: disk.slice() });
          nextId += 1;
        } catch (error) {
          if (snaps.has(op.name)) expect(isQcow2Error(error) && error.code, what).toBe('INVALID_ARGUMENT');
          else expectOverflow(error, config, what);
        }
        break;
      case 'apply': {
        const s = snaps.get(op.name);
        const key = s !== undefined && op.byId ? s.id : op.name;
        try {
          await image.applySnapshot(key);
          expect(s, `${what}: applied a snapshot the model does not have`).toBeDefined();
          disk = s!.bytes.slice();
        } catch (error) {
          if (s === undefined) expect(isQcow2Error(error) && error.code, what).toBe('NOT_FOUND');
          else expectOverflow(error, config, what);
        }
        break;
      }
      case 'delete': {
        const s = snaps.get(op.name);
        try {
          await image.deleteSnapshot(op.name);
          expect(s, `${what}: deleted a snapshot the model does not have`).toBeDefined();
          snaps.delete(op.name);
          // qemu's ids: highest + 1, so deleting the newest one frees its id.
          nextId = Math.max(0, ...[...snaps.values()].map((x) => Number(x.id))) + 1;
        } catch (error) {
          expect(s, `${what}: ${String(error)}`).toBeUndefined();
          expect(isQcow2Error(error) && error.code, what).toBe('NOT_FOUND');
        }
        break;
      }
      case 'reopen':
        await image.close();
        await expectClean(storage, `${what}: after close`);
        image = await open();
        break;
    }
    if (op.kind === 'create' && snaps.size === 0) nextId = 1;
    expect(equal(await readAll(image), disk), `${what}: the image reads as the model`).toBe(true);
    if (op.kind === 'create' || op.kind === 'apply' || op.kind === 'delete' || op.kind === 'reopen') await checkSnapshots(what);
    await image.flush();
    if (!image.dirty) await expectClean(storage, what);
  }
  await image.close();
  await expectClean(storage, 'at the end');
  image = await open();
  await checkSnapshots('at the end');
  expect(equal(await readAll(image), disk)).toBe(true);
  await image.close();
}

describe('snapshots against a model keeping a copy of the disk per snapshot', () => {
  it('random interleavings over cluster sizes, refcount widths, extended L2, lazy refcounts, v2', async () => {
    await fc.assert(fc.asyncProperty(caseArb, runCase), { numRuns: Number(process.env["SNAPSHOT_MODEL_RUNS"] ?? 60) });
  });

  it('refcount_bits=1: snapshots only while there is no L2 table, then refused with nothing changed', async () => {
    await runCase({
      config: { clusterBits: 12, version: 3, refcountOrder: 0, extendedL2: false, lazy: false, clusters: 8, l2Small: false },
      ops: [
        { kind: 'create', name: 'a' },
        { kind: 'write', offset: 0, length: 5000, seed: 1 },
        { kind: 'create', name: 'b' },
        { kind: 'apply', name: 'a', byId: true },
        { kind: 'create', name: 'c' },
        { kind: 'delete', name: 'a' },
        { kind: 'reopen' },
      ],
    });
  });
});
