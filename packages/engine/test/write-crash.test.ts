import fc from 'fast-check';
import { createMemoryStorage, type MemoryStorage, type Storage } from '@qcow2/storage';
import { describe, expect, it } from 'vitest';
import { checkRefcounts, openImage } from '../src/index.js';
import { writeFreshImage } from './fresh-image.js';

type Entry = { kind: 'write'; offset: number; bytes: Uint8Array } | { kind: 'flush' };

/** A memory storage that logs every write and flush, to replay the file as a crash left it. */
function logged(inner: MemoryStorage, log: Entry[]): Storage {
  return {
    readOnly: false,
    canDiscard: false,
    read: (dst, offset) => inner.read(dst, offset),
    write: async (src, offset) => {
      log.push({ kind: 'write', offset, bytes: src.slice() });
      await inner.write(src, offset);
    },
    size: () => inner.size(),
    truncate: (size) => inner.truncate(size),
    flush: async () => {
      log.push({ kind: 'flush' });
      await inner.flush();
    },
    close: () => inner.close(),
  };
}

/**
 * The file a crash at log position `at` may leave: everything before the last flush before
 * `at`, and any subset (`keep`) of the writes after it.
 */
function crashImage(initial: Uint8Array, log: readonly Entry[], at: number, keep: (i: number) => boolean): Uint8Array {
  let lastFlush = -1;
  for (let i = 0; i < at; i++) if (log[i]!.kind === 'flush') lastFlush = i;
  let size = initial.length;
  for (let i = 0; i < at; i++) {
    const e = log[i]!;
    if (e.kind === 'write' && (i < lastFlush || keep(i))) size = Math.max(size, e.offset + e.bytes.length);
  }
  const out = new Uint8Array(size);
  out.set(initial);
  for (let i = 0; i < at; i++) {
    const e = log[i]!;
    if (e.kind === 'write' && (i < lastFlush || keep(i))) out.set(e.bytes, e.offset);
  }
  return out;
}

type Op =
  | { kind: 'write'; offset: number; length: number; fill: number }
  | { kind: 'zero'; offset: number; length: number; unmap: boolean }
  | { kind: 'discard'; offset: number; length: number }
  | { kind: 'compressed'; cluster: number; fill: number }
  | { kind: 'flush' };

describe('crash safety: what any crash leaves opens consistently, with every flushed byte', () => {
  it('no refcount below its references at any crash point; flushed content survives (repair for lazy refcounts)', async () => {
    const clusterBits = 12;
    const cs = 2 ** clusterBits;
    const size = 48 * cs;
    const range = fc
      .tuple(fc.nat({ max: size - 1 }), fc.integer({ min: 1, max: 3 * cs }))
      .map(([o, l]) => ({ offset: o, length: Math.min(l, size - o) }));
    const opArb: fc.Arbitrary<Op> = fc.oneof(
      fc.tuple(range, fc.integer({ min: 1, max: 255 })).map(([r, fill]): Op => ({ kind: 'write', ...r, fill })),
      fc.tuple(range, fc.integer({ min: 1, max: 255 })).map(([r, fill]): Op => ({ kind: 'write', ...r, fill })),
      fc.tuple(range, fc.boolean()).map(([r, unmap]): Op => ({ kind: 'zero', ...r, unmap })),
      range.map((r): Op => ({ kind: 'discard', ...r })),
      fc.tuple(fc.nat({ max: size / cs - 1 }), fc.integer({ min: 1, max: 255 })).map(([cluster, fill]): Op => ({ kind: 'compressed', cluster, fill })),
      fc.constant<Op>({ kind: 'flush' }),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          lazy: fc.boolean(),
          refcountOrder: fc.constantFrom(0, 4),
          ops: fc.array(opArb, { minLength: 3, maxLength: 30 }),
          crashes: fc.array(fc.tuple(fc.double({ min: 0, max: 1, noNaN: true }), fc.nat()), { minLength: 4, maxLength: 8 }),
        }),
        async ({ lazy, refcountOrder, ops, crashes }) => {
          const inner = createMemoryStorage();
          await writeFreshImage(inner, { size, clusterBits, refcountOrder, lazyRefcounts: lazy });
          const initial = inner.snapshot();
          const log: Entry[] = [];
          const image = await openImage(logged(inner, log), { readOnly: false, discard: 'unmap' });
          const model = new Uint8Array(size);
          /** Per completed image flush: where the log stood, the model then, and the op count. */
          const flushes: { at: number; model: Uint8Array; op: number }[] = [];
          /** Guest ranges written by each op. */
          const touched: [number, number][] = [];
          for (const [i, op] of ops.entries()) {
            switch (op.kind) {
              case 'write':
                await image.write(new Uint8Array(op.length).fill(op.fill), op.offset);
                model.fill(op.fill, op.offset, op.offset + op.length);
                touched.push([op.offset, op.offset + op.length]);
                break;
              case 'zero':
                await image.writeZeroes(op.offset, op.length, { mayUnmap: op.unmap });
                model.fill(0, op.offset, op.offset + op.length);
                touched.push([op.offset, op.offset + op.length]);
                break;
              case 'discard': {
                await image.discard(op.offset, op.length);
                const from = Math.ceil(op.offset / cs) * cs;
                const to = Math.floor((op.offset + op.length) / cs) * cs;
                if (from < to) model.fill(0, from, to);
                touched.push([op.offset, op.offset + op.length]);
                break;
              }
              case 'compressed':
                try {
                  await image.writeCompressed(new Uint8Array(cs).fill(op.fill), op.cluster * cs);
                  model.fill(op.fill, op.cluster * cs, (op.cluster + 1) * cs);
                } catch (error) {
                  if ((error as { code?: string }).code !== 'IO') throw error;
                }
                touched.push([op.cluster * cs, (op.cluster + 1) * cs]);
                break;
              case 'flush':
                await image.flush();
                flushes.push({ at: log.length, model: model.slice(), op: i });
                touched.push([0, 0]);
                break;
            }
          }
          await image.close();
          const end = log.length;

          // Right before storage flushes (where the most is unflushed), and anywhere.
          const flushPoints = log.flatMap((e, i) => (e.kind === 'flush' ? [i] : []));
          const points: [number, number][] = crashes.map(([where, seed]) => [Math.round(where * end), seed]);
          for (let k = 0; k < flushPoints.length; k += Math.max(1, Math.floor(flushPoints.length / 10))) {
            points.push([flushPoints[k]!, crashes[k % crashes.length]![1]]);
          }
          for (const [at, seed] of points) {
            const file = crashImage(initial, log, at, (i) => ((i * 2654435761) ^ seed) % 3 !== 0);
            const crashed = createMemoryStorage({ initial: file });
            const dirty = (new DataView(file.buffer).getUint32(76) & 1) !== 0;
            if (!dirty) {
              // Without a dirty bit the refcounts must be usable as they are: leaks at worst.
              const check = await checkRefcounts(createMemoryStorage({ initial: file, readOnly: true }));
              expect(check.problems, `crash at ${at}/${end}`).toEqual([]);
              expect(check.corruptions, `crash at ${at}/${end}: refcount below references`).toEqual([]);
              expect(check.copiedFlags.filter((c) => c.refcount > 1), `crash at ${at}/${end}: COPIED on a shared cluster`).toEqual([]);
            } else {
              expect(lazy, 'only lazy refcounts leave the dirty bit').toBe(true);
            }
            // Opening for writing repairs a dirty image; the content of the last flush survives
            // wherever later operations did not write.
            const reopened = await openImage(crashed, { readOnly: false });
            expect(reopened.dirty).toBe(false);
            const content = await reopened.readBytes(0, size);
            await reopened.close();
            const flush = [...flushes].reverse().find((f) => f.at <= at);
            if (flush !== undefined) {
              const later = touched.slice(flush.op + 1).filter(([a, b]) => b > a);
              for (let x = 0; x < size; x += 512) {
                if (later.some(([a, b]) => x + 512 > a && x < b)) continue;
                const got = content.subarray(x, x + 512);
                const want = flush.model.subarray(x, x + 512);
                if (!Buffer.from(got).equals(Buffer.from(want))) {
                  expect.fail(`crash at ${at}/${end}: flushed bytes at ${x} lost`);
                }
              }
            }
            const after = await checkRefcounts(createMemoryStorage({ initial: crashed.snapshot(), readOnly: true }));
            expect([after.corruptions, after.copiedFlags, after.problems], `after repair, crash at ${at}/${end}`).toEqual([[], [], []]);
            if (dirty) expect(after.leaks).toEqual([]);
          }
        },
      ),
      { numRuns: 60 },
    );
  });
});
