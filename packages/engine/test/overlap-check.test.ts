import { describe, expect, it } from 'vitest';
import { ActiveL1Table } from '@qcow2/cluster';
import { isQcow2Error } from '@qcow2/format';
import type { Refcounts } from '@qcow2/refcount';
import {
  createOverlapGuard,
  METADATA_STRUCTURES,
  OverlapChecker,
  QEMU_METADATA_NAMES,
  resolveOverlapChecks,
  structureBit,
  type CorruptionSink,
} from '../src/overlap-check.js';

const CS = 0x10000;

/** The refcount parts the checker reads, without an image behind them. */
function fakeRefcounts(tableOffset: number, tableEntries: number, blocks: number[]): Refcounts & { setBlocks(b: number[]): void } {
  let version = 0;
  let list = blocks;
  return {
    tableOffset,
    tableEntries,
    get structureVersion() {
      return version;
    },
    structure: () => [
      { kind: 'table', offset: tableOffset, length: tableEntries * 8 },
      ...list.map((offset, index) => ({ kind: 'block', offset, length: CS, index })),
    ],
    setBlocks(b: number[]) {
      list = b;
      version++;
    },
  } as unknown as Refcounts & { setBlocks(b: number[]): void };
}

/** Layout of a fresh qemu image: reftable 0x10000, refblock 0x20000, L1 0x30000, L2 0x40000. */
function checker(mode: Parameters<typeof resolveOverlapChecks>[0] = 'cached', extra: Partial<ConstructorParameters<typeof OverlapChecker>[0]> = {}) {
  const l1 = new ActiveL1Table(0x30000, 16, new Uint8Array(16 * 8));
  l1.set(0, 0x40000, true);
  const refcounts = fakeRefcounts(0x10000, 8192, [0x20000]);
  const c = new OverlapChecker({
    mask: resolveOverlapChecks(mode, undefined),
    clusterSize: CS,
    l1,
    snapshotTable: { offset: 0x90000, length: 0x70 },
    snapshotL1s: [{ offset: 0xa0000, size: 16 }],
    inactiveL2: [0xb0000],
    bitmapDirectory: () => ({ offset: 0xc0000, length: 64 }),
    ...extra,
  });
  c.attach(refcounts);
  return { c, l1, refcounts };
}

describe('resolveOverlapChecks', () => {
  it("has qemu's templates and lets each switch override its bit", () => {
    const bits = (names: string[]): number => names.reduce((m, n) => m | structureBit(n as never), 0);
    const constant = ['main-header', 'active-l1', 'refcount-table', 'snapshot-table', 'bitmap-directory'];
    const cached = [...constant, 'active-l2', 'refcount-block', 'inactive-l1'];
    expect(resolveOverlapChecks('none', undefined)).toBe(0);
    expect(resolveOverlapChecks('constant', undefined)).toBe(bits(constant));
    expect(resolveOverlapChecks('cached', undefined)).toBe(bits(cached));
    expect(resolveOverlapChecks(undefined, undefined)).toBe(bits(cached));
    expect(resolveOverlapChecks('all', undefined)).toBe(bits([...cached, 'inactive-l2']));
    expect(resolveOverlapChecks('none', { 'main-header': true })).toBe(1);
    expect(resolveOverlapChecks('all', { 'inactive-l2': false, 'main-header': false })).toBe(bits(cached) & ~1);
    expect(METADATA_STRUCTURES.map(structureBit)).toEqual([1, 2, 4, 8, 16, 32, 64, 128, 256]);
  });

  it('refuses an unknown mode (qemu\'s words), an unknown structure and a non-boolean switch', () => {
    const error = (f: () => unknown): string => {
      try {
        f();
      } catch (e) {
        expect(isQcow2Error(e) && e.code).toBe('INVALID_ARGUMENT');
        return (e as Error).message;
      }
      throw new Error('no error');
    };
    expect(error(() => resolveOverlapChecks('some', undefined))).toBe(
      "Unsupported value 'some' for qcow2 option 'overlap-check'. Allowed are any of the following: none, constant, cached, all",
    );
    expect(error(() => resolveOverlapChecks('cached', { header: true }))).toContain("'overlap-check.header'");
    expect(error(() => resolveOverlapChecks('cached', { 'active-l1': 'on' }))).toContain("'overlap-check.active-l1' expects a boolean");
    expect(error(() => resolveOverlapChecks('cached', 3))).toContain('overlapChecks');
  });
});

describe('OverlapChecker', () => {
  it('names the structure a write lands on, first in qemu\'s order; the header only from its own cluster', () => {
    const { c } = checker('all');
    expect(c.find(0, 512)).toBe('main-header');
    expect(c.find(CS - 1, 2)).toBe('main-header');
    expect(c.find(0x10000 + 4096, 8)).toBe('refcount-table');
    expect(c.find(0x20000, CS)).toBe('refcount-block');
    expect(c.find(0x30000 + 512, 512)).toBe('active-l1');
    expect(c.find(0x40000 + CS - 1, 1)).toBe('active-l2');
    expect(c.find(0x90000 + 0x8000, 512)).toBe('snapshot-table'); // same cluster, past the table's bytes: rounded as qemu
    expect(c.find(0xa0000, 512)).toBe('inactive-l1');
    expect(c.find(0xb0000, 512)).toBe('inactive-l2');
    expect(c.find(0xc0000, 512)).toBe('bitmap-directory');
    expect(c.find(0xd0000, 10 * CS)).toBeUndefined();
    expect(c.find(0x8ffff, 2)).toBe('snapshot-table'); // both clusters it touches count
    expect(c.find(0x30000, 0)).toBeUndefined();
    // A write over everything: the first in qemu's order.
    expect(c.find(CS, 20 * CS)).toBe('active-l1');
  });

  it("ignores the structure written in its own place (qemu's ign), nothing else", () => {
    const { c } = checker();
    expect(c.find(0x40000, CS, structureBit('active-l2'))).toBeUndefined();
    expect(c.find(0x40000, CS, structureBit('refcount-block'))).toBe('active-l2');
    expect(c.find(0x30000, 512, structureBit('active-l1'))).toBeUndefined();
    expect(c.find(0x10000, 8, structureBit('refcount-table'))).toBeUndefined();
    expect(c.find(0x400, 8, structureBit('refcount-table'))).toBe('main-header');
  });

  it('checks only what the mode selects', () => {
    expect(checker('none').c.find(0, 512)).toBeUndefined();
    const constant = checker('constant').c;
    expect(constant.find(0x40000, 512)).toBeUndefined();
    expect(constant.find(0x20000, 512)).toBeUndefined();
    expect(constant.find(0x30000, 512)).toBe('active-l1');
    const cached = checker('cached').c;
    expect(cached.find(0xb0000, 512)).toBeUndefined();
    expect(cached.find(0xa0000, 512)).toBe('inactive-l1');
  });

  it('follows L1 entries, L1 moves, refcount blocks and snapshot changes', () => {
    const { c, l1, refcounts } = checker();
    expect(c.find(0x50000, 512)).toBeUndefined();
    l1.set(3, 0x50000, true);
    expect(c.find(0x50000, 512)).toBe('active-l2');
    l1.set(3, 0, false);
    expect(c.find(0x50000, 512)).toBeUndefined();
    refcounts.setBlocks([0x20000, 0x60000]);
    expect(c.find(0x60000, 512)).toBe('refcount-block');
    l1.replace(0x70000, 16, new Uint8Array(16 * 8));
    expect(c.find(0x30000, 512)).toBeUndefined();
    expect(c.find(0x70000, 512)).toBe('active-l1');
    expect(c.find(0x40000, 512)).toBeUndefined(); // the new table has no entries
    c.setSnapshots({ offset: 0xe0000, length: 100 }, []);
    expect(c.find(0x90000, 512)).toBeUndefined();
    expect(c.find(0xa0000, 512)).toBeUndefined();
    expect(c.find(0xe0000, 512)).toBe('snapshot-table');
  });

  it('a large write over many clusters walks the index, not the range', () => {
    const { c } = checker();
    const start = performance.now();
    expect(c.find(0x100000, 2 ** 40)).toBeUndefined();
    expect(c.find(0x40000, 2 ** 40)).toBe('snapshot-table');
    expect(c.find(0x40000, 2 ** 40, structureBit('snapshot-table') | structureBit('inactive-l1'))).toBe('active-l2');
    expect(c.find(0x50000, 2 ** 40, structureBit('snapshot-table') | structureBit('inactive-l1') | structureBit('bitmap-directory'))).toBeUndefined();
    expect(performance.now() - start).toBeLessThan(1000);
  });
});

describe('createOverlapGuard', () => {
  function sink(): CorruptionSink & { events: string[]; corrupt: boolean } {
    const s = {
      events: [] as string[],
      corrupt: false,
      refusal: () => (s.corrupt ? Promise.reject(new Error('refused: corrupt')) : undefined),
      signalCorruption: (message: string, offset: number, length: number): Promise<never> => {
        s.corrupt = true;
        s.events.push(`${message} @${offset.toString(16)}+${length}`);
        return Promise.reject(new Error(message));
      },
    };
    return s;
  }

  it("lets clean writes through synchronously, signals qemu's message once, then refuses everything", async () => {
    const { c } = checker();
    const s = sink();
    const guard = createOverlapGuard(c, s, false);
    expect(guard(0x100000, 4096, 'data')).toBeUndefined();
    expect(guard(0x40000, CS, 'active-l2')).toBeUndefined();
    await expect(guard(0x400, 512, 'data')).rejects.toThrow(`Preventing invalid write on metadata (overlaps with ${QEMU_METADATA_NAMES['main-header']})`);
    expect(s.events).toEqual(['Preventing invalid write on metadata (overlaps with qcow2_header) @400+512']);
    await expect(guard(0x100000, 4096, 'data')).rejects.toThrow('refused: corrupt');
    expect(s.events).toHaveLength(1);
  });

  it('does not check guest data that goes to an external data file (qemu: data_file)', async () => {
    const { c } = checker();
    const guard = createOverlapGuard(c, sink(), true);
    expect(guard(0x30000, 512, 'data')).toBeUndefined();
    await expect(guard(0x30000, 512)).rejects.toThrow('(overlaps with active L1 table)');
  });
});
