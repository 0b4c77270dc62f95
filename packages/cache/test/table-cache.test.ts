import { afterEach, describe, expect, it, vi } from 'vitest';
import { isQcow2Error, Qcow2Error, type Qcow2ErrorCode } from '@qcow2/format';
import { createTableCache, TableCache, type CacheEntry } from '@qcow2/cache';
import { ManualGate, RecordingStorage, type LogEvent } from './helpers/recording-storage.js';

const E = 512;

function storageWith(entries: number, fill = (i: number): number => i + 1): RecordingStorage {
  const s = new RecordingStorage({ size: entries * E });
  for (let i = 0; i < entries; i++) s.bytes.fill(fill(i), i * E, (i + 1) * E);
  return s;
}

async function rejection(p: Promise<unknown> | (() => unknown)): Promise<Qcow2Error> {
  try {
    if (typeof p === 'function') await p();
    else await p;
  } catch (e) {
    expect(isQcow2Error(e)).toBe(true);
    return e as Qcow2Error;
  }
  throw new Error('expected a rejection');
}

async function expectCode(p: Promise<unknown> | (() => unknown), code: Qcow2ErrorCode): Promise<Qcow2Error> {
  const e = await rejection(p);
  expect(e.code).toBe(code);
  return e;
}

/** Resolves after every pending microtask and one macrotask turn. */
const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 0));

function kinds(log: LogEvent[]): string[] {
  return log.map((e) => ('offset' in e && e.offset >= 0 ? `${e.kind}@${e.offset}` : e.kind));
}

afterEach(() => {
  vi.useRealTimers();
  vi.restoreAllMocks();
});

describe('options', () => {
  it('refuses bad entry sizes, capacities, intervals and storages with INVALID_ARGUMENT', async () => {
    const storage = new RecordingStorage();
    for (const entrySize of [0, 256, 1000, 4 * 1024 * 1024, 1.5, Number.NaN]) {
      await expectCode(() => createTableCache({ storage, capacity: 1 << 20, entrySize }), 'INVALID_ARGUMENT');
    }
    for (const capacity of [0, 511, -1, 2 ** 60, Number.POSITIVE_INFINITY]) {
      await expectCode(() => createTableCache({ storage, capacity, entrySize: E }), 'INVALID_ARGUMENT');
    }
    for (const cleanInterval of [-1, 0.5, 2 ** 32]) {
      await expectCode(() => createTableCache({ storage, capacity: E, entrySize: E, cleanInterval }), 'INVALID_ARGUMENT');
    }
    await expectCode(
      () => createTableCache({ storage: {} as RecordingStorage, capacity: E, entrySize: E }),
      'INVALID_ARGUMENT',
    );
  });

  it('holds floor(capacity / entrySize) entries', () => {
    const c = createTableCache({ storage: new RecordingStorage(), capacity: 3 * 4096 + 100, entrySize: 4096 });
    expect(c.maxEntries).toBe(3);
    expect(c.capacity).toBe(3 * 4096);
    expect(c.stats().bytesInUse).toBe(0);
  });
});

describe('lookups', () => {
  it('reads an entry from storage on a miss and serves it from memory after', async () => {
    const storage = storageWith(4);
    const c = createTableCache({ storage, capacity: 4 * E, entrySize: E, name: 'L2 table' });
    expect(c.peek(E)).toBeUndefined();
    const e = await c.acquire(E);
    expect(e.offset).toBe(E);
    expect(e.bytes.length).toBe(E);
    expect(e.bytes.every((b) => b === 2)).toBe(true);
    expect(e.pins).toBe(1);
    c.release(e);
    expect(c.peek(E)).toBe(e);
    const again = await c.acquire(E);
    expect(again).toBe(e);
    c.release(again);
    expect(storage.readsAt.get(E)).toBe(1);
    expect(c.stats()).toMatchObject({ hits: 2, misses: 1, reads: 1, entries: 1, bytesInUse: E, pinned: 0 });
  });

  it('reads bytes past the end of the storage as zeros', async () => {
    const storage = storageWith(1);
    storage.length = E + 100; // a partial entry at the end
    storage.bytes.fill(9, E, E + 100);
    const c = createTableCache({ storage, capacity: 4 * E, entrySize: E });
    const e = await c.acquire(E);
    expect(e.bytes.subarray(0, 100).every((b) => b === 9)).toBe(true);
    expect(e.bytes.subarray(100).every((b) => b === 0)).toBe(true);
    const far = await c.acquire(100 * E);
    expect(far.bytes.every((b) => b === 0)).toBe(true);
  });

  it('refuses offsets that are not multiples of the entry size', async () => {
    const c = createTableCache({ storage: storageWith(2), capacity: 4 * E, entrySize: E, name: 'L2 table' });
    for (const offset of [1, E + 8, -E, 0.5, Number.NaN, 2 ** 60]) {
      const e = await expectCode(c.acquire(offset), 'INVALID_ARGUMENT');
      expect(e.message).toMatch(/^L2 table at /);
    }
    expect(c.stats().bytesInUse).toBe(0);
  });

  it('shares one storage read between concurrent acquires of one offset', async () => {
    const gate = new ManualGate();
    const storage = storageWith(4);
    storage.gate = gate.gate;
    const c = createTableCache({ storage, capacity: 2 * E, entrySize: E });
    const all = Promise.all([c.acquire(2 * E), c.acquire(2 * E), c.acquire(2 * E)]);
    await settle();
    expect(gate.pending).toBe(1);
    expect(c.stats().loading).toBe(1);
    gate.open();
    const [a, b, d] = await all;
    expect(a).toBe(b);
    expect(b).toBe(d);
    expect(a.pins).toBe(3);
    expect(storage.readsAt.get(2 * E)).toBe(1);
    expect(c.stats()).toMatchObject({ misses: 3, reads: 1, entries: 1 });
  });

  it('tryAcquire pins only on a hit; use() releases even when fn throws', async () => {
    const c = createTableCache({ storage: storageWith(2), capacity: 2 * E, entrySize: E });
    expect(c.tryAcquire(0)).toBeUndefined();
    const e = await c.acquire(0);
    c.release(e);
    const hit = c.tryAcquire(0);
    expect(hit).toBe(e);
    expect(e.pins).toBe(1);
    c.release(e);
    await expect(
      c.use(0, (entry) => {
        expect(entry.pins).toBe(1);
        throw new Qcow2Error('CORRUPT', 'boom');
      }),
    ).rejects.toThrow('boom');
    expect(e.pins).toBe(0);
    expect(await c.use(E, (entry) => entry.bytes[0])).toBe(2);
  });

  it('has() neither counts nor reorders', async () => {
    const c = createTableCache({ storage: storageWith(3), capacity: 2 * E, entrySize: E });
    c.release(await c.acquire(0));
    c.release(await c.acquire(E));
    const before = c.stats();
    expect(c.has(0)).toBe(true);
    expect(c.stats()).toEqual(before);
    c.release(await c.acquire(2 * E)); // evicts 0, still the least recently used
    expect(c.has(0)).toBe(false);
    expect(c.has(E)).toBe(true);
  });
});

describe('eviction', () => {
  it('evicts the least recently used entry', async () => {
    const c = createTableCache({ storage: storageWith(4), capacity: 2 * E, entrySize: E });
    c.release(await c.acquire(0));
    c.release(await c.acquire(E));
    expect(c.peek(0)).toBeDefined(); // 0 is now the most recent
    const old = c.peek(E)!;
    expect(c.peek(0)).toBeDefined();
    c.release(await c.acquire(2 * E));
    expect(c.has(E)).toBe(false);
    expect(old.cached).toBe(false);
    expect(c.has(0)).toBe(true);
    expect(c.stats()).toMatchObject({ evictions: 1, entries: 2, bytesInUse: 2 * E });
  });

  it('writes a dirty entry back before reusing its buffer', async () => {
    const storage = storageWith(4);
    const c = createTableCache({ storage, capacity: E, entrySize: E });
    const e = await c.acquire(0);
    e.bytes.fill(0xaa);
    c.markDirty(e);
    c.release(e);
    const next = await c.acquire(E);
    expect(next.bytes.every((b) => b === 2)).toBe(true);
    expect(storage.slice(0, E).every((b) => b === 0xaa)).toBe(true);
    expect(kinds(storage.log)).toEqual(['read@0', 'write-issue@0', 'write-done@0', 'read@512']);
    expect(c.stats()).toMatchObject({ writes: 1, evictions: 1, dirty: 0 });
  });

  it('never evicts a pinned entry: a miss waits for a release', async () => {
    const c = createTableCache({ storage: storageWith(4), capacity: 2 * E, entrySize: E });
    const a = await c.acquire(0);
    const b = await c.acquire(E);
    let got: CacheEntry | undefined;
    const pending = c.acquire(2 * E).then((e) => (got = e));
    await settle();
    expect(got).toBeUndefined();
    expect(a.cached && b.cached).toBe(true);
    expect(c.stats().bytesInUse).toBe(2 * E);
    c.release(b);
    await pending;
    expect(got?.offset).toBe(2 * E);
    expect(b.cached).toBe(false);
    expect(a.cached).toBe(true);
    expect(a.bytes[0]).toBe(1);
  });

  it('keeps memory within capacity whatever the number of offsets touched', async () => {
    const c = createTableCache({ storage: new RecordingStorage({ size: 0 }), capacity: 8 * E, entrySize: E });
    for (let i = 0; i < 500; i++) {
      const e = await c.acquire(i * 7 * E);
      if (i % 3 === 0) {
        e.bytes[0] = i & 0xff;
        c.markDirty(e);
      }
      c.release(e);
      expect(c.stats().bytesInUse).toBeLessThanOrEqual(8 * E);
    }
    expect(c.stats().entries).toBe(8);
  });
});

describe('dirty entries and write-back', () => {
  it('writeBack writes dirty entries without flushing; flush also flushes the storage', async () => {
    const storage = storageWith(4);
    const c = createTableCache({ storage, capacity: 4 * E, entrySize: E });
    for (const off of [2 * E, 0]) {
      const e = await c.acquire(off);
      e.bytes[0] = 0x55;
      c.markDirty(e);
      c.release(e);
    }
    expect(c.stats().dirty).toBe(2);
    storage.log.length = 0;
    await c.writeBack();
    expect(kinds(storage.log)).toEqual(['write-issue@0', 'write-issue@1024', 'write-done@0', 'write-done@1024']);
    expect(c.stats().dirty).toBe(0);
    storage.log.length = 0;
    await c.writeBack();
    expect(storage.log).toEqual([]);
    await c.flush();
    expect(kinds(storage.log)).toEqual(['flush-issue', 'flush-done']);
  });

  it('a failed write-back keeps the entry dirty and the storage error as it was', async () => {
    const storage = storageWith(2);
    const c = createTableCache({ storage, capacity: 2 * E, entrySize: E });
    const e = await c.acquire(0);
    e.bytes[0] = 0x77;
    c.markDirty(e);
    c.release(e);
    storage.failures.write = 1;
    const err = await expectCode(c.flush(), 'IO');
    expect(err.message).toBe('injected write failure');
    expect(e.dirty).toBe(true);
    expect(c.stats().dirty).toBe(1);
    expect(storage.bytes[0]).toBe(1);
    await c.flush();
    expect(e.dirty).toBe(false);
    expect(storage.bytes[0]).toBe(0x77);
  });

  it('a failed eviction write-back fails the miss and keeps the victim', async () => {
    const storage = storageWith(3);
    const c = createTableCache({ storage, capacity: E, entrySize: E });
    const e = await c.acquire(0);
    e.bytes[0] = 0x11;
    c.markDirty(e);
    c.release(e);
    storage.failures.write = 1;
    await expectCode(c.acquire(E), 'IO');
    expect(c.has(0) && e.dirty).toBe(true);
    expect(c.stats()).toMatchObject({ bytesInUse: E, loading: 0 });
    const next = await c.acquire(E);
    expect(storage.bytes[0]).toBe(0x11);
    expect(next.bytes[0]).toBe(2);
  });

  it('wraps errors that are not Qcow2Errors as IO, with the cause', async () => {
    const storage = storageWith(2);
    const plain = new Error('disk on fire');
    storage.read = () => Promise.reject(plain);
    const c = createTableCache({ storage, capacity: 2 * E, entrySize: E, name: 'refcount block' });
    const err = await expectCode(c.acquire(E), 'IO');
    expect(err.message).toBe('refcount block at 0x200: storage read failed: disk on fire');
    expect(err.cause).toBe(plain);
    expect(c.stats()).toMatchObject({ bytesInUse: 0, loading: 0, entries: 0 });
  });

  it('a failed read frees its buffer and the next acquire reads again', async () => {
    const storage = storageWith(2);
    const c = createTableCache({ storage, capacity: E, entrySize: E });
    storage.failures.read = 1;
    const [r1, r2] = await Promise.allSettled([c.acquire(0), c.acquire(0)]);
    expect(r1.status).toBe('rejected');
    expect(r2.status).toBe('rejected');
    expect(c.stats()).toMatchObject({ bytesInUse: 0, entries: 0 });
    expect((await c.acquire(0)).bytes[0]).toBe(1);
  });

  it('a change made while a write-back is in flight keeps the entry dirty', async () => {
    const gate = new ManualGate();
    const storage = storageWith(2);
    const c = createTableCache({ storage, capacity: 2 * E, entrySize: E });
    const e = await c.acquire(0);
    e.bytes[0] = 1;
    c.markDirty(e);
    storage.gate = gate.gate;
    const wb = c.writeBack();
    await settle();
    e.bytes[0] = 2; // the write in flight carries the snapshot taken before this change
    c.markDirty(e);
    gate.open();
    await wb;
    expect(e.dirty).toBe(true);
    expect(storage.log.filter((x) => x.kind === 'write-issue').map((x) => (x as { data: Uint8Array }).data[0])).toEqual([1]);
    await c.writeBack();
    expect(e.dirty).toBe(false);
    expect(storage.bytes[0]).toBe(2);
  });

  it('markDirty and release refuse entries that are not (or no longer) theirs', async () => {
    const storage = storageWith(3);
    const c = createTableCache({ storage, capacity: E, entrySize: E });
    const other = createTableCache({ storage, capacity: E, entrySize: E });
    const e = await c.acquire(0);
    await expectCode(() => other.markDirty(e), 'INVALID_ARGUMENT');
    await expectCode(() => other.release(e), 'INVALID_ARGUMENT');
    c.release(e);
    await expectCode(() => c.release(e), 'INVALID_ARGUMENT');
    c.release(await c.acquire(E)); // evicts e
    await expectCode(() => c.markDirty(e), 'INVALID_ARGUMENT');
  });

  it('refuses changes on read-only storage (READ_ONLY)', async () => {
    const storage = new RecordingStorage({ size: 4 * E, readOnly: true });
    const c = createTableCache({ storage, capacity: 2 * E, entrySize: E });
    const e = await c.acquire(0);
    await expectCode(() => c.markDirty(e), 'READ_ONLY');
    await expectCode(c.acquireEmpty(E), 'READ_ONLY');
  });
});

describe('acquireEmpty', () => {
  it('gives a zero-filled entry without reading', async () => {
    const storage = storageWith(4);
    const c = createTableCache({ storage, capacity: 2 * E, entrySize: E });
    const e = await c.acquireEmpty(3 * E);
    expect(e.bytes.every((b) => b === 0)).toBe(true);
    expect(storage.readsAt.size).toBe(0);
    e.bytes[5] = 5;
    c.markDirty(e);
    c.release(e);
    await c.flush();
    expect(storage.slice(3 * E, E)[5]).toBe(5);
  });

  it('zeroes a cached entry, but refuses one in use', async () => {
    const c = createTableCache({ storage: storageWith(2), capacity: 2 * E, entrySize: E });
    const e = await c.acquire(0);
    await expectCode(c.acquireEmpty(0), 'INVALID_ARGUMENT');
    c.release(e);
    const z = await c.acquireEmpty(0);
    expect(z).toBe(e);
    expect(z.bytes.every((b) => b === 0)).toBe(true);
  });

  it('a concurrent acquire of a table being created shares the empty entry', async () => {
    const storage = storageWith(2);
    const c = createTableCache({ storage, capacity: 2 * E, entrySize: E });
    const [a, b] = await Promise.all([c.acquireEmpty(E), c.acquire(E)]);
    expect(a).toBe(b);
    expect(a.pins).toBe(2);
    expect(storage.readsAt.size).toBe(0);
  });
});

describe('flush dependencies', () => {
  async function dirty(c: TableCache, offset: number, value: number): Promise<CacheEntry> {
    const e = await c.acquire(offset);
    e.bytes[0] = value;
    c.markDirty(e);
    c.release(e);
    return e;
  }

  it('writes and flushes the dependency before any entry of the dependent cache', async () => {
    const storage = storageWith(8);
    const refcounts = createTableCache({ storage, capacity: 2 * E, entrySize: E, name: 'refcount block' });
    const l2 = createTableCache({ storage, capacity: 2 * E, entrySize: E, name: 'L2 table' });
    await dirty(refcounts, 4 * E, 1);
    await l2.setDependency(refcounts);
    expect(l2.dependency).toBe(refcounts);
    await dirty(l2, 0, 2);
    storage.log.length = 0;
    await l2.writeBack();
    expect(kinds(storage.log)).toEqual([
      'write-issue@2048',
      'write-done@2048',
      'flush-issue',
      'flush-done',
      'write-issue@0',
      'write-done@0',
    ]);
    expect(l2.dependency).toBeUndefined();
    // Satisfied: the next write-back of l2 does not flush refcounts again.
    await dirty(l2, 0, 3);
    storage.log.length = 0;
    await l2.writeBack();
    expect(kinds(storage.log)).toEqual(['write-issue@0', 'write-done@0']);
  });

  it('a dependency renewed while it is being flushed is flushed again', async () => {
    const gate = new ManualGate();
    const storage = storageWith(8);
    const refcounts = createTableCache({ storage, capacity: 2 * E, entrySize: E });
    const l2 = createTableCache({ storage, capacity: 2 * E, entrySize: E });
    const r = await dirty(refcounts, 4 * E, 1);
    await l2.setDependency(refcounts);
    const x = await dirty(l2, 0, 1);
    storage.gate = gate.gate;
    storage.log.length = 0;
    const wb = l2.writeBack(); // flushing refcounts: v1 of the block is on its way
    await settle();
    r.bytes[0] = 2; // a new allocation...
    refcounts.markDirty(r);
    await l2.setDependency(refcounts);
    x.bytes[0] = 2; // ...referenced by the L2 table
    l2.markDirty(x);
    gate.open();
    await wb;
    const firstL2Write = storage.log.findIndex((e) => e.kind === 'write-issue' && e.offset === 0);
    const block2 = storage.log.findIndex((e) => e.kind === 'write-issue' && e.offset === 4 * E && e.data[0] === 2);
    const flushAfter = storage.log.findIndex((e, i) => e.kind === 'flush-done' && i > block2);
    expect(block2).toBeGreaterThanOrEqual(0);
    expect(flushAfter).toBeGreaterThan(block2);
    expect(firstL2Write).toBeGreaterThan(flushAfter);
  });

  it('an eviction of a dependent entry flushes the dependency first', async () => {
    const storage = storageWith(8);
    const refcounts = createTableCache({ storage, capacity: 2 * E, entrySize: E });
    const l2 = createTableCache({ storage, capacity: E, entrySize: E });
    await dirty(refcounts, 4 * E, 1);
    await l2.setDependency(refcounts);
    await dirty(l2, 0, 2);
    storage.log.length = 0;
    c_release(await l2.acquire(E));
    expect(kinds(storage.log)).toEqual([
      'write-issue@2048',
      'write-done@2048',
      'flush-issue',
      'flush-done',
      'write-issue@0',
      'write-done@0',
      'read@512',
    ]);
    function c_release(e: CacheEntry): void {
      l2.release(e);
    }
  });

  it('dependOnStorageFlush flushes once before the next write-back', async () => {
    const storage = storageWith(4);
    const c = createTableCache({ storage, capacity: 4 * E, entrySize: E });
    await dirty(c, 0, 1);
    c.dependOnStorageFlush();
    storage.log.length = 0;
    await c.writeBack();
    expect(kinds(storage.log)).toEqual(['flush-issue', 'flush-done', 'write-issue@0', 'write-done@0']);
    await dirty(c, E, 1);
    storage.log.length = 0;
    await c.writeBack();
    expect(kinds(storage.log)).toEqual(['write-issue@512', 'write-done@512']);
  });

  it('keeps dependencies acyclic the way qemu does', async () => {
    const storage = storageWith(8);
    const refcounts = createTableCache({ storage, capacity: 2 * E, entrySize: E });
    const l2 = createTableCache({ storage, capacity: 2 * E, entrySize: E });
    await dirty(refcounts, 4 * E, 1);
    await l2.setDependency(refcounts);
    await dirty(l2, 0, 2);
    storage.log.length = 0;
    // Freeing clusters reverses the order: refcount decreases after the L2 change.
    await refcounts.setDependency(l2);
    expect(kinds(storage.log)).toEqual(['write-issue@2048', 'write-done@2048', 'flush-issue', 'flush-done']);
    expect(l2.dependency).toBeUndefined();
    expect(refcounts.dependency).toBe(l2);
    await dirty(refcounts, 5 * E, 3);
    storage.log.length = 0;
    await refcounts.writeBack();
    expect(kinds(storage.log)).toEqual([
      'write-issue@0',
      'write-done@0',
      'flush-issue',
      'flush-done',
      'write-issue@2560',
      'write-done@2560',
    ]);
  });

  it('setDependency resolves at once, without allocating, when nothing must be flushed', async () => {
    const storage = storageWith(2);
    const a = createTableCache({ storage, capacity: E, entrySize: E });
    const b = createTableCache({ storage, capacity: E, entrySize: E });
    const p1 = a.setDependency(b);
    const p2 = a.setDependency(b);
    expect(p1).toBe(p2);
    await p1;
    await expectCode(a.setDependency(a), 'INVALID_ARGUMENT');
    await expectCode(a.setDependency({} as TableCache), 'INVALID_ARGUMENT');
  });

  it('a failed dependency flush fails the write-back and keeps everything dirty', async () => {
    const storage = storageWith(8);
    const refcounts = createTableCache({ storage, capacity: 2 * E, entrySize: E });
    const l2 = createTableCache({ storage, capacity: 2 * E, entrySize: E });
    const r = await dirty(refcounts, 4 * E, 1);
    await l2.setDependency(refcounts);
    const e = await dirty(l2, 0, 2);
    storage.failures.flush = 1;
    await expectCode(l2.writeBack(), 'IO');
    expect(e.dirty).toBe(true);
    expect(r.dirty).toBe(false); // written, but not yet known durable
    expect(l2.dependency).toBe(refcounts);
    expect(storage.log.some((x) => x.kind === 'write-issue' && x.offset === 0)).toBe(false);
    await l2.writeBack();
    expect(e.dirty).toBe(false);
  });
});

describe('discard, clear, close', () => {
  it('discard drops a dirty entry without writing it', async () => {
    const storage = storageWith(2);
    const c = createTableCache({ storage, capacity: 2 * E, entrySize: E });
    const e = await c.acquire(0);
    e.bytes[0] = 0x99;
    c.markDirty(e);
    await expectCode(c.discard(0), 'INVALID_ARGUMENT');
    c.release(e);
    await c.discard(0);
    expect(c.has(0)).toBe(false);
    expect(c.stats()).toMatchObject({ dirty: 0, entries: 0, bytesInUse: 0 });
    await c.flush();
    expect(storage.log.some((x) => x.kind === 'write-issue')).toBe(false);
    await c.discard(7 * E); // not cached: nothing to do
  });

  it('discard waits for a write-back in flight', async () => {
    const gate = new ManualGate();
    const storage = storageWith(2);
    const c = createTableCache({ storage, capacity: 2 * E, entrySize: E });
    const e = await c.acquire(0);
    c.markDirty(e);
    c.release(e);
    storage.gate = gate.gate;
    const wb = c.writeBack();
    await settle();
    let discarded = false;
    const d = c.discard(0).then(() => (discarded = true));
    await settle();
    expect(discarded).toBe(false);
    gate.open();
    await Promise.all([wb, d]);
    expect(kinds(storage.log).slice(-1)).toEqual(['write-done@0']);
    expect(c.has(0)).toBe(false);
  });

  it('clear writes back and drops everything; refuses while entries are pinned', async () => {
    const storage = storageWith(4);
    const c = createTableCache({ storage, capacity: 4 * E, entrySize: E });
    const e = await c.acquire(0);
    e.bytes[0] = 0x42;
    c.markDirty(e);
    await expectCode(c.clear(), 'INVALID_ARGUMENT');
    c.release(e);
    c.release(await c.acquire(E));
    await c.clear();
    expect(storage.bytes[0]).toBe(0x42);
    expect(c.stats()).toMatchObject({ entries: 0, bytesInUse: 0, dirty: 0 });
    expect(e.cached).toBe(false);
  });

  it('close writes back, then refuses use with CLOSED', async () => {
    const storage = storageWith(4);
    const c = createTableCache({ storage, capacity: 4 * E, entrySize: E });
    const e = await c.acquire(0);
    e.bytes[0] = 0x43;
    c.markDirty(e);
    c.release(e);
    await c.close();
    await c.close();
    expect(storage.bytes[0]).toBe(0x43);
    await expectCode(c.acquire(0), 'CLOSED');
    await expectCode(c.acquireEmpty(0), 'CLOSED');
    expect(c.peek(0)).toBeUndefined();
  });

  it('dispose forgets dirty entries without I/O', async () => {
    const storage = storageWith(4);
    const c = createTableCache({ storage, capacity: 4 * E, entrySize: E });
    const e = await c.acquire(0);
    c.markDirty(e);
    c.dispose();
    c.release(e);
    expect(c.stats()).toMatchObject({ entries: 0, dirty: 0, bytesInUse: 0, pinned: 0 });
    expect(storage.log.filter((x) => x.kind !== 'read')).toEqual([]);
    await expectCode(c.acquire(0), 'CLOSED');
  });
});

describe('cleaning unused entries', () => {
  it('drops entries unused since the previous pass, writing dirty ones back first', async () => {
    const storage = storageWith(4);
    const c = createTableCache({ storage, capacity: 4 * E, entrySize: E });
    const a = await c.acquire(0);
    a.bytes[0] = 0x66;
    c.markDirty(a);
    c.release(a);
    c.release(await c.acquire(E));
    const pinned = await c.acquire(2 * E);
    await c.cleanUnused(); // first pass: everything was used since the start
    expect(c.stats().entries).toBe(3);
    expect(c.peek(E)).toBeDefined(); // used again: survives the next pass
    await c.cleanUnused();
    expect(c.has(0)).toBe(false);
    expect(c.has(E)).toBe(true);
    expect(c.has(2 * E)).toBe(true); // pinned
    expect(storage.bytes[0]).toBe(0x66);
    expect(c.stats()).toMatchObject({ cleaned: 1, entries: 2, bytesInUse: 2 * E, dirty: 0 });
    c.release(pinned);
  });

  it('keeps an idle dirty entry whose write-back fails, and reports it from the timer', async () => {
    vi.useFakeTimers();
    const storage = storageWith(2);
    const errors: Qcow2Error[] = [];
    const c = createTableCache({
      storage,
      capacity: 2 * E,
      entrySize: E,
      cleanInterval: 1,
      onBackgroundError: (e) => errors.push(e),
    });
    const e = await c.acquire(0);
    c.markDirty(e);
    c.release(e);
    storage.failures.write = 1;
    await vi.advanceTimersByTimeAsync(2100);
    expect(errors.map((x) => x.message)).toEqual(['injected write failure']);
    expect(c.has(0)).toBe(true);
    await vi.advanceTimersByTimeAsync(1000);
    expect(c.has(0)).toBe(false);
    expect(storage.bytes.subarray(0, E).every((b) => b === 1)).toBe(true);
    c.dispose();
  });

  it('runs on the clean interval and stops on close', async () => {
    vi.useFakeTimers();
    const storage = storageWith(2);
    const c = createTableCache({ storage, capacity: 2 * E, entrySize: E, cleanInterval: 5 });
    c.release(await c.acquire(0));
    expect(vi.getTimerCount()).toBe(1);
    await vi.advanceTimersByTimeAsync(5000);
    expect(c.has(0)).toBe(true);
    await vi.advanceTimersByTimeAsync(5000);
    expect(c.has(0)).toBe(false);
    await c.close();
    expect(vi.getTimerCount()).toBe(0);
  });

  it('chains waits longer than setTimeout allows', async () => {
    vi.useFakeTimers();
    const c = createTableCache({ storage: storageWith(2), capacity: 2 * E, entrySize: E, cleanInterval: 30 * 86400 });
    c.release(await c.acquire(0));
    await vi.advanceTimersByTimeAsync(2 * 30 * 86400 * 1000 + 10);
    expect(c.has(0)).toBe(false);
    c.dispose();
    expect(vi.getTimerCount()).toBe(0);
  });

  it('does not keep a Node process alive', () => {
    const spy = vi.spyOn(globalThis, 'setTimeout');
    const c = createTableCache({ storage: storageWith(1), capacity: E, entrySize: E, cleanInterval: 600 });
    const handle = spy.mock.results[0]?.value as { hasRef(): boolean };
    expect(handle.hasRef()).toBe(false);
    c.dispose();
  });
});
