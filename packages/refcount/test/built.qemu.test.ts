import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import {
  compressedAdditionalSectorsFor,
  encodeHeaderCluster,
  encodeL1Entry,
  encodeL2Entry,
  viewOf,
} from '@qcow2/format';
import { createMemoryStorage, type MemoryStorage } from '@qcow2/storage';
import {
  compareRefcounts,
  computeExpectedRefcounts,
  fixRefcounts,
  type RefcountMismatch,
  Refcounts,
  writeInitialRefcountStructure,
} from '@qcow2/refcount';
import { describeWithQemu, makeTempDir, qemuCheck } from '@qcow2/test-utils';
import { walkImage } from './image-walk.js';

/**
 * Images built here: qemu's header (from @qcow2/format), our refcount structures, an L1 table,
 * L2 tables and data clusters all allocated through Refcounts (allocClusters, allocAt,
 * allocBytes for compressed clusters sharing host clusters), some of them freed again, so that
 * the refcounts describe exactly what the tables reference. qemu-img check must find no error
 * and no leak; with small clusters the refcount table grows many times on the way.
 */

const tmp = makeTempDir('qcow2-refcount-built-');
afterAll(() => tmp.cleanup());

/** A small deterministic PRNG (mulberry32). */
function prng(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) / 4294967296) * n;
  };
}

type Slot = { kind: 'normal'; offset: number } | { kind: 'compressed'; offset: number; size: number };

interface Built {
  storage: MemoryStorage;
  rc: Refcounts;
  l1Size: number;
  tables: Map<number, { offset: number; slots: Map<number, Slot> }>;
  upTo(offset: number, length: number): void;
  finish(): Promise<Uint8Array>;
}

async function build(clusterBits: number, order: number, targetClusters: number, seed: number): Promise<Built> {
  const cs = 2 ** clusterBits;
  const perL2 = cs / 8;
  const rand = prng(seed);
  const int = (n: number) => Math.floor(rand(n));
  const storage = createMemoryStorage();
  const s = await writeInitialRefcountStructure(storage, { clusterBits, refcountOrder: order });
  const rc = await Refcounts.open({ storage, clusterBits, refcountOrder: order, ...s, cacheSize: 2 * cs });
  const l1Size = Math.max(4, Math.ceil((targetClusters * 1.5) / perL2));
  const l1Offset = await rc.allocClusters(Math.ceil((l1Size * 8) / cs));
  const tables = new Map<number, { offset: number; slots: Map<number, Slot> }>();
  let allocated = 0;
  let lastRunEnd = 0;
  /** End of the last cluster handed out: the file must reach it (qemu counts no reference past it). */
  let end = l1Offset + cs;
  const upTo = (offset: number, length: number) => {
    end = Math.max(end, offset + length);
  };

  const table = async (i: number) => {
    let t = tables.get(i);
    if (t === undefined) {
      t = { offset: await rc.allocClusters(1), slots: new Map() };
      upTo(t.offset, cs);
      tables.set(i, t);
      allocated++;
    }
    return t;
  };
  const unmap = async (t: { slots: Map<number, Slot> }, j: number) => {
    const slot = t.slots.get(j)!;
    if (slot.kind === 'normal') await rc.free(slot.offset, cs, 'other');
    else {
      const start = slot.offset - (slot.offset % 512);
      await rc.free(start, (compressedAdditionalSectorsFor(slot.offset, slot.size) + 1) * 512, 'request');
    }
    t.slots.delete(j);
  };

  while (allocated < targetClusters) {
    const op = int(100);
    const i = int(l1Size);
    if (op < 55) {
      // A run of data clusters: continue the previous host run with allocAt when it is free.
      const t = await table(i);
      const j = int(perL2);
      let k = 0;
      const want = 1 + int(Math.min(64, perL2));
      while (k < want && j + k < perL2 && !t.slots.has(j + k)) k++;
      if (k === 0) continue;
      let host = lastRunEnd === 0 ? 0 : await rc.allocAt(lastRunEnd, k);
      let at = lastRunEnd;
      if (host === 0) {
        at = await rc.allocClusters(k);
        host = k;
      }
      for (let n = 0; n < host; n++) t.slots.set(j + n, { kind: 'normal', offset: at + n * cs });
      upTo(at, host * cs);
      lastRunEnd = at + host * cs;
      allocated += host;
    } else if (op < 75) {
      const t = await table(i);
      const j = int(perL2);
      if (t.slots.has(j)) continue;
      const size = 1 + int(Math.min(cs, 4096));
      const offset = await rc.allocBytes(size);
      t.slots.set(j, { kind: 'compressed', offset, size });
      upTo(offset, size);
      allocated += size / cs;
    } else if (op < 97) {
      const t = tables.get(i);
      if (t === undefined || t.slots.size === 0) continue;
      const keys = [...t.slots.keys()];
      const n = 1 + int(8);
      for (let m = 0; m < n && m < keys.length; m++) await unmap(t, keys[int(keys.length)]!).catch(() => undefined);
    } else {
      const t = tables.get(i);
      if (t === undefined) continue;
      for (const j of [...t.slots.keys()]) await unmap(t, j);
      await rc.free(t.offset, cs, 'other');
      tables.delete(i);
    }
  }

  return {
    storage,
    rc,
    l1Size,
    tables,
    upTo,
    async finish() {
      const l1 = new Uint8Array(Math.ceil((l1Size * 8) / cs) * cs);
      for (const [i, t] of tables) {
        encodeL1Entry(viewOf(l1), i, { l2Offset: t.offset, copied: true });
        const l2 = new Uint8Array(cs);
        const view = viewOf(l2);
        for (const [j, slot] of t.slots) {
          if (slot.kind === 'normal') encodeL2Entry(view, j, { kind: 'normal', offset: slot.offset, copied: true }, { clusterBits });
          else {
            const additionalSectors = compressedAdditionalSectorsFor(slot.offset, slot.size);
            encodeL2Entry(view, j, { kind: 'compressed', offset: slot.offset, additionalSectors }, { clusterBits });
          }
        }
        await storage.write(l2, t.offset);
      }
      await storage.write(l1, l1Offset);
      await rc.flush();
      const header = encodeHeaderCluster({
        header: {
          version: 3,
          backingFileOffset: 0,
          backingFileSize: 0,
          clusterBits,
          size: l1Size * perL2 * cs,
          cryptMethod: 0,
          l1Size,
          l1TableOffset: l1Offset,
          refcountTableOffset: rc.tableOffset,
          refcountTableClusters: rc.tableClusters,
          nbSnapshots: 0,
          snapshotsOffset: 0,
          incompatibleFeatures: 0n,
          compatibleFeatures: 0n,
          autoclearFeatures: 0n,
          refcountOrder: order,
          headerLength: 112,
          compressionType: 0,
          trailingBytes: new Uint8Array(7),
        },
        extensions: [],
      });
      await storage.write(header, 0);
      // Data clusters are not written: make the file reach the last one.
      if ((await storage.size()) < end) await storage.truncate(Math.ceil(end / cs) * cs);
      return storage.snapshot();
    },
  };
}

/** qemu-img check's per-cluster report: "ERROR cluster N refcount=R reference=S", "Leaked cluster …". */
function qemuMismatches(file: string, clusterSize: number): { errors: RefcountMismatch[]; leaks: RefcountMismatch[] } {
  const report = spawnSync('qemu-img', ['check', file], { encoding: 'utf8' }).stderr;
  const listed = (kind: string) =>
    [...report.matchAll(new RegExp(`^${kind} cluster (\\d+) refcount=(\\d+) reference=(\\d+)$`, 'gm'))].map((m) => ({
      cluster: Number(m[1]),
      offset: Number(m[1]) * clusterSize,
      refcount: Number(m[2]),
      reference: Number(m[3]),
    }));
  return { errors: listed('ERROR'), leaks: listed('Leaked') };
}

function expectClean(file: string): Record<string, unknown> {
  const { exitCode, json } = qemuCheck(file);
  expect(json['check-errors'] ?? 0).toBe(0);
  expect(json['corruptions'] ?? 0).toBe(0);
  expect(json['leaks'] ?? 0).toBe(0);
  expect(exitCode).toBe(0);
  return json;
}

describeWithQemu('images allocated through Refcounts pass qemu-img check', () => {
  const cases: [clusterBits: number, order: number, clusters: number][] = [
    [9, 0, 12_000],
    [9, 1, 12_000],
    [9, 2, 90_000],
    [9, 3, 45_000],
    [9, 4, 24_000],
    [9, 5, 12_000],
    [9, 6, 6_000],
    [12, 4, 3_000],
    [16, 4, 600],
    [21, 3, 40],
  ];
  for (const [clusterBits, order, clusters] of cases) {
    it(`${2 ** clusterBits}-byte clusters, ${1 << order}-bit refcounts, ~${clusters} clusters`, async () => {
      const built = await build(clusterBits, order, clusters, clusterBits * 31 + order);
      if (clusterBits === 9 && order >= 2) expect(built.rc.tableClusters).toBeGreaterThan(1);
      const bytes = await built.finish();
      const file = join(tmp.dir, `built-${clusterBits}-${order}.qcow2`);
      writeFileSync(file, bytes);
      const json = expectClean(file);
      let data = 0;
      for (const t of built.tables.values()) data += t.slots.size;
      expect(json['allocated-clusters']).toBe(data);
      // Our own check agrees.
      const expected = await computeExpectedRefcounts(
        { clusterBits, refcountOrder: order, fileSize: bytes.length, refcounts: built.rc },
        (add) => walkImage(bytes, add),
      );
      expect(expected.problems).toEqual([]);
      const cmp = await compareRefcounts(built.rc, expected.counts);
      expect([cmp.leaks, cmp.corruptions]).toEqual([[], []]);
    });
  }

  it('lists the leaks and errors qemu-img check lists, and fixes them as check -r all does', async () => {
    const clusterBits = 9;
    const built = await build(clusterBits, 4, 3000, 7);
    const { rc } = built;
    // Leaks: clusters allocated and never referenced, and a refcount raised by 2.
    await rc.allocClusters(5).then((at) => built.upTo(at, 5 * 512));
    const someData = [...built.tables.values()].flatMap((t) => [...t.slots.values()]);
    const normal = someData.find((s) => s.kind === 'normal')!;
    await rc.update(normal.offset, 512, 2);
    // Errors: refcounts below the number of references (a shared compressed cluster).
    const shared = someData.find((s) => s.kind === 'compressed' && someData.filter((o) => o.kind === 'compressed' && Math.floor(o.offset / 512) === Math.floor(s.offset / 512)).length >= 2)!;
    await rc.free(shared.offset - (shared.offset % 512), 512, 'never');
    const bytes = await built.finish();
    const file = join(tmp.dir, 'broken.qcow2');
    writeFileSync(file, bytes);
    const qemu = qemuMismatches(file, 512);
    expect(qemu.leaks.length).toBe(6);
    expect(qemu.errors.length).toBe(1);

    const expected = await computeExpectedRefcounts(
      { clusterBits, refcountOrder: 4, fileSize: bytes.length, refcounts: rc },
      (add) => walkImage(bytes, add),
    );
    const cmp = await compareRefcounts(rc, expected.counts);
    expect(cmp.leaks).toEqual(qemu.leaks);
    expect(cmp.corruptions).toEqual(qemu.errors);
    expect(await fixRefcounts(rc, cmp, { leaks: true, corruptions: true })).toEqual({ leaksFixed: 6, corruptionsFixed: 1 });
    await rc.flush();
    const fixedFile = join(tmp.dir, 'fixed.qcow2');
    writeFileSync(fixedFile, built.storage.snapshot());
    expectClean(fixedFile);
  });
});
