import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isQcow2Error, refcountMax } from '@qcow2/format';
import type { Refcounts } from '@qcow2/refcount';
import { allRefcounts, makeImage, openImage, structureClusters, type TestImage } from './helpers.js';

/**
 * Model-based runs of allocClusters / allocAt / allocBytes / update / free / flush / reopen
 * against a Map of refcounts, on memory storage, for every refcount width and several cluster
 * sizes. Every allocated cluster gets a data tag written into it; the tags must survive (so no
 * refcount block or table was ever placed over a cluster in use). After each run, and again
 * after reopening from storage: every refcount equals the model plus one for each cluster of
 * the refcount structure, and no structure cluster is in use by the model.
 */

interface Model {
  refs: Map<number, number>;
  /** Clusters allocated whole, with the tag written at their start. */
  tags: Map<number, number>;
  max: number;
  bits: number;
  cs: number;
  nextTag: number;
}

interface Real {
  image: TestImage;
  refcounts: Refcounts;
  cacheEntries: number;
}

type Cmd = fc.AsyncCommand<Model, Real>;

const TAG_BYTES = 8;

function tagBytes(tag: number): Uint8Array {
  const b = new Uint8Array(TAG_BYTES);
  new DataView(b.buffer).setFloat64(0, tag);
  return b;
}

async function writeTag(real: Real, model: Model, cluster: number): Promise<void> {
  const tag = model.nextTag++;
  await real.image.storage.write(tagBytes(tag), cluster * model.cs);
  model.tags.set(cluster, tag);
}

function used(model: Model, c: number): number {
  return model.refs.get(c) ?? 0;
}

function inc(model: Model, c: number, by: number): void {
  const v = used(model, c) + by;
  if (v === 0) {
    model.refs.delete(c);
    model.tags.delete(c);
  } else model.refs.set(c, v);
}

function assertDisjoint(model: Model, real: Real, clusters: Iterable<number>): void {
  const meta = structureClusters(real.refcounts);
  for (const c of clusters) expect(meta.has(c), `cluster ${c} is both allocated and refcount metadata`).toBe(false);
}

/** Picks the k-th used cluster (cyclically), or undefined when nothing is used. */
function pickUsed(model: Model, k: number): number | undefined {
  // Cluster 0 stands for the header: it stays allocated.
  const list = [...model.refs.keys()].filter((c) => c !== 0).sort((a, b) => a - b);
  return list.length === 0 ? undefined : list[k % list.length];
}

async function expectError(p: Promise<unknown>, code: string, pattern?: RegExp): Promise<void> {
  let error: unknown;
  try {
    await p;
  } catch (e) {
    error = e;
  }
  expect(isQcow2Error(error), `expected a Qcow2Error ${code}, got ${String(error)}`).toBe(true);
  expect((error as { code: string }).code).toBe(code);
  if (pattern !== undefined) expect((error as Error).message).toMatch(pattern);
}

class AllocClusters implements Cmd {
  constructor(readonly n: number) {}
  check(): boolean {
    return true;
  }
  async run(model: Model, real: Real): Promise<void> {
    const offset = await real.refcounts.allocClusters(this.n);
    expect(offset % model.cs).toBe(0);
    const first = offset / model.cs;
    const range = Array.from({ length: this.n }, (_, i) => first + i);
    for (const c of range) expect(used(model, c), `allocClusters returned used cluster ${c}`).toBe(0);
    assertDisjoint(model, real, range);
    for (const c of range) {
      inc(model, c, 1);
      await writeTag(real, model, c);
      expect(await real.refcounts.get(c)).toBe(1);
    }
  }
  toString(): string {
    return `allocClusters(${this.n})`;
  }
}

class AllocAt implements Cmd {
  /** `nearFree`: `at` counts back from the free cluster index instead of from 0. */
  constructor(
    readonly pos: number,
    readonly n: number,
    readonly nearFree: boolean,
  ) {}
  check(): boolean {
    return true;
  }
  async run(model: Model, real: Real): Promise<void> {
    const at = this.nearFree ? Math.max(0, real.refcounts.freeClusterIndex - (this.pos % 8)) : this.pos;
    const meta = structureClusters(real.refcounts);
    let expected = 0;
    while (expected < this.n && used(model, at + expected) === 0 && !meta.has(at + expected)) expected++;
    const got = await real.refcounts.allocAt(at * model.cs, this.n);
    expect(got).toBe(expected);
    const range = Array.from({ length: got }, (_, i) => at + i);
    assertDisjoint(model, real, range);
    for (const c of range) {
      inc(model, c, 1);
      await writeTag(real, model, c);
    }
  }
  toString(): string {
    return `allocAt(${this.nearFree ? 'free-' : ''}${this.pos}, ${this.n})`;
  }
}

class AllocBytes implements Cmd {
  constructor(readonly fraction: number) {}
  check(): boolean {
    return true;
  }
  async run(model: Model, real: Real): Promise<void> {
    const size = Math.max(1, Math.round(model.cs * this.fraction));
    const before = real.refcounts.freeByteOffset;
    const offset = await real.refcounts.allocBytes(size);
    expect(offset).toBeGreaterThan(0);
    const first = Math.floor(offset / model.cs);
    const last = Math.floor((offset + size - 1) / model.cs);
    // Either packed right after the previous compressed data, or at the start of a free cluster.
    if (offset % model.cs !== 0) expect(offset).toBe(before);
    for (let c = first; c <= last; c++) {
      if (c > first || offset % model.cs === 0) expect(used(model, c), `allocBytes reused cluster ${c}`).toBe(0);
    }
    assertDisjoint(model, real, Array.from({ length: last - first + 1 }, (_, i) => first + i));
    for (let c = first; c <= last; c++) inc(model, c, 1);
  }
  toString(): string {
    return `allocBytes(${this.fraction})`;
  }
}

class Increase implements Cmd {
  constructor(
    readonly k: number,
    readonly by: number,
  ) {}
  check(model: Model): boolean {
    return model.refs.size > 1;
  }
  async run(model: Model, real: Real): Promise<void> {
    const c = pickUsed(model, this.k)!;
    const by = this.by > model.max ? model.max : this.by;
    if (used(model, c) + by > model.max) {
      await expectError(real.refcounts.update(c * model.cs, 1, by), 'INVALID_ARGUMENT', new RegExp(`refcount overflow: cluster ${c} .*${model.bits}-bit`));
      expect(await real.refcounts.get(c)).toBe(used(model, c));
      return;
    }
    await real.refcounts.update(c * model.cs, 1, by);
    inc(model, c, by);
  }
  toString(): string {
    return `increase(#${this.k}, +${this.by})`;
  }
}

/** Claims free clusters as used with update(+1): blocks for them must be placed elsewhere. */
class Claim implements Cmd {
  constructor(
    readonly beyond: number,
    readonly n: number,
  ) {}
  check(): boolean {
    return true;
  }
  async run(model: Model, real: Real): Promise<void> {
    const meta = structureClusters(real.refcounts);
    let top = 0;
    for (const c of model.refs.keys()) top = Math.max(top, c);
    for (const c of meta.keys()) top = Math.max(top, c);
    const first = top + 1 + this.beyond;
    const range = Array.from({ length: this.n }, (_, i) => first + i);
    await real.refcounts.update(first * model.cs, this.n * model.cs, 1);
    assertDisjoint(model, real, range);
    for (const c of range) {
      inc(model, c, 1);
      await writeTag(real, model, c);
    }
  }
  toString(): string {
    return `claim(+${this.beyond}, ${this.n})`;
  }
}

/** Claims clusters past what the refcount table covers now, so the table must grow. */
class Jump implements Cmd {
  constructor(
    readonly fraction: number,
    readonly n: number,
  ) {}
  check(): boolean {
    return true;
  }
  async run(model: Model, real: Real): Promise<void> {
    const rc = real.refcounts;
    const covered = rc.tableEntries * rc.blockEntries;
    if (covered * (1 + this.fraction) > 2 ** 21) return; // keep the verification scan short
    const first = Math.floor(covered * (1 + this.fraction));
    if ([...model.refs.keys()].some((c) => c >= first && c < first + this.n)) return;
    if ([...structureClusters(rc).keys()].some((c) => c >= first && c < first + this.n)) return;
    const range = Array.from({ length: this.n }, (_, i) => first + i);
    await rc.update(first * model.cs, this.n * model.cs, 1);
    assertDisjoint(model, real, range);
    for (const c of range) {
      inc(model, c, 1);
      await writeTag(real, model, c);
    }
  }
  toString(): string {
    return `jump(${this.fraction}, ${this.n})`;
  }
}

class Free implements Cmd {
  constructor(
    readonly k: number,
    readonly n: number,
  ) {}
  check(model: Model): boolean {
    return model.refs.size > 1;
  }
  async run(model: Model, real: Real): Promise<void> {
    const first = pickUsed(model, this.k)!;
    const meta = structureClusters(real.refcounts);
    let n = 0;
    while (n < this.n && !meta.has(first + n)) n++;
    const range = Array.from({ length: n }, (_, i) => first + i);
    if (range.some((c) => used(model, c) === 0)) {
      const before = await Promise.all(range.map((c) => real.refcounts.get(c)));
      await expectError(real.refcounts.free(first * model.cs, n * model.cs, 'other'), 'CORRUPT', /refcount underflow/);
      expect(await Promise.all(range.map((c) => real.refcounts.get(c)))).toEqual(before);
      return;
    }
    await real.refcounts.free(first * model.cs, n * model.cs, 'other');
    for (const c of range) inc(model, c, -1);
  }
  toString(): string {
    return `free(#${this.k}, ${this.n})`;
  }
}

class Flush implements Cmd {
  check(): boolean {
    return true;
  }
  async run(_model: Model, real: Real): Promise<void> {
    await real.refcounts.flush();
  }
  toString(): string {
    return 'flush';
  }
}

class Reopen implements Cmd {
  check(): boolean {
    return true;
  }
  async run(_model: Model, real: Real): Promise<void> {
    await real.refcounts.close();
    real.refcounts = await openImage(real.image, { cacheEntries: real.cacheEntries });
  }
  toString(): string {
    return 'reopen';
  }
}

async function verify(model: Model, real: Real): Promise<void> {
  const rc = real.refcounts;
  const meta = structureClusters(rc);
  for (const [c, n] of meta) {
    expect(n, `cluster ${c} is used twice by the refcount structure`).toBe(1);
    expect(used(model, c), `refcount structure cluster ${c} is in use`).toBe(0);
  }
  const size = await real.image.storage.size();
  let end = Math.ceil(size / model.cs);
  for (const c of model.refs.keys()) end = Math.max(end, c + 1);
  for (const c of meta.keys()) end = Math.max(end, c + 1);
  end += 64; // and past that: nothing
  const actual = await allRefcounts(rc, end);
  for (let c = 0; c < end; c++) {
    const expected = used(model, c) + (meta.get(c) ?? 0);
    if (actual[c] !== expected) expect(`cluster ${c}: refcount ${actual[c]}`).toBe(`cluster ${c}: refcount ${expected}`);
  }
  const tag = new Uint8Array(TAG_BYTES);
  for (const [c, expected] of model.tags) {
    tag.fill(0);
    await real.image.storage.read(tag, c * model.cs);
    const got = new DataView(tag.buffer).getFloat64(0);
    if (got !== expected) expect(`cluster ${c} data tag ${got}`).toBe(`cluster ${c} data tag ${expected}`);
  }
}

function commands(cs: number): fc.Arbitrary<Iterable<Cmd>> {
  // Keep the tags written into allocated clusters within ~64 MiB of memory storage.
  const span = Math.min(6000, Math.floor(2 ** 26 / cs));
  const big = Math.max(2, Math.min(700, Math.floor(span / 8)));
  const list: fc.Arbitrary<Cmd>[] = [
      fc.integer({ min: 1, max: Math.min(40, big) }).map((n) => new AllocClusters(n)),
      fc.integer({ min: Math.ceil(big / 7), max: big }).map((n) => new AllocClusters(n)),
      fc.tuple(fc.nat({ max: span }), fc.integer({ min: 1, max: 30 }), fc.boolean()).map(([at, n, near]) => new AllocAt(at, n, near)),
      fc.double({ min: 0.001, max: 1, noNaN: true }).map((f) => new AllocBytes(f)),
      fc.tuple(fc.nat(), fc.integer({ min: 1, max: 5 })).map(([k, by]) => new Increase(k, by)),
      fc.tuple(fc.nat({ max: Math.floor(span / 2) }), fc.integer({ min: 1, max: 20 })).map(([b, n]) => new Claim(b, n)),
      fc.tuple(fc.nat(), fc.integer({ min: 1, max: 8 })).map(([k, n]) => new Free(k, n)),
      fc.tuple(fc.double({ min: 0, max: 1.5, noNaN: true }), fc.integer({ min: 1, max: 100 })).map(([f, n]) => new Jump(f, n)),
      fc.constant(new Flush()),
      fc.constant(new Reopen()),
  ];
  return fc.commands(list, { maxCommands: 60 });
}

async function runModel(clusterBits: number, order: number, cacheEntries: number, cmds: Iterable<Cmd>): Promise<void> {
  const image = await makeImage(clusterBits, order);
  const refcounts = await openImage(image, { cacheEntries });
  const cs = 2 ** clusterBits;
  const model: Model = { refs: new Map([[0, 1]]), tags: new Map(), max: refcountMax(order), bits: 1 << order, cs, nextTag: 1 };
  const real: Real = { image, refcounts, cacheEntries };
  await fc.asyncModelRun(() => ({ model, real }), cmds);
  await real.refcounts.flush();
  await verify(model, real);
  await real.refcounts.close();
  real.refcounts = await openImage(image, { cacheEntries: 1 });
  await verify(model, real);
  expect(real.refcounts.tableProblems()).toEqual([]);
  stats.runs++;
  if (real.refcounts.tableClusters > 1 || real.refcounts.tableOffset !== cs) stats.moved++;
  stats.maxTable = Math.max(stats.maxTable, real.refcounts.tableClusters);
}

const stats = { runs: 0, moved: 0, maxTable: 0 };

describe('Refcounts against a model', () => {
  for (const order of [0, 1, 2, 3, 4, 5, 6]) {
    it(`512-byte clusters, ${1 << order}-bit refcounts`, async () => {
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 1, max: 4 }), commands(512), (entries, cmds) => runModel(9, order, entries, cmds)),
        { numRuns: 20 },
      );
    });
  }
  for (const [bits, order] of [
    [12, 4],
    [16, 0],
    [16, 6],
    [21, 3],
  ] as const) {
    it(`${2 ** bits}-byte clusters, ${1 << order}-bit refcounts`, async () => {
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 1, max: 3 }), commands(2 ** bits), (entries, cmds) => runModel(bits, order, entries, cmds)),
        { numRuns: bits === 21 ? 2 : 5 },
      );
    });
  }
  it('moved the refcount table in a good share of those runs', () => {
    expect(stats.runs).toBeGreaterThan(100);
    expect(stats.moved / stats.runs).toBeGreaterThan(0.2);
    expect(stats.maxTable).toBeGreaterThan(2);
  });
});
