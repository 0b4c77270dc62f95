import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createTableCache } from '@qcow2/cache';
import { ActiveL1Table, loadL1Table } from '@qcow2/cluster';
import { decodeHeader } from '@qcow2/format';
import { openRefcounts } from '@qcow2/refcount';
import { createMemoryStorage } from '@qcow2/storage';
import { createRecordingStorage, describeWithQemu, makeTempDir, qemuCheck, qemuImg, qemuIo, type StorageOp } from '@qcow2/test-utils';
import { afterAll, expect, it } from 'vitest';
import { InternalSnapshots, type SnapshotTableState, type StoredSnapshot } from '../src/index.js';
import { decodeSnapshotEntry } from '@qcow2/format';

const { dir, cleanup } = makeTempDir('qcow2-internal-snapshots-');
afterAll(cleanup);

/** The package on its own, over a qemu-made image: refcounts, L2 cache and active L1 wired by hand. */
async function openParts(bytes: Uint8Array, log: StorageOp[]) {
  const storage = createRecordingStorage(createMemoryStorage({ initial: bytes }), log);
  const header = decodeHeader(bytes);
  const cs = 2 ** header.clusterBits;
  const l2Cache = createTableCache({ storage, capacity: 16 * cs, entrySize: cs, name: 'L2 table' });
  const refcounts = await openRefcounts({
    storage,
    clusterBits: header.clusterBits,
    refcountOrder: header.refcountOrder,
    tableOffset: header.refcountTableOffset,
    tableClusters: header.refcountTableClusters,
    l2Cache,
  });
  const l1 = ActiveL1Table.from(await loadL1Table(storage, header.l1TableOffset, header.l1Size));
  const snapshots: StoredSnapshot[] = [];
  let at = header.snapshotsOffset;
  let end = at;
  for (let i = 0; i < header.nbSnapshots; i++) {
    at = Math.ceil(at / 8) * 8;
    const d = decodeSnapshotEntry(bytes, at);
    snapshots.push({ entry: d.entry, l1OffsetHi: Math.floor(d.entry.l1TableOffset / 2 ** 32), l1OffsetLo: d.entry.l1TableOffset >>> 0, l1Size: d.entry.l1Size });
    at = end = d.end;
  }
  const state: SnapshotTableState = { snapshots, location: { offset: header.snapshotsOffset, length: end - header.snapshotsOffset }, virtualSize: header.size };
  const internal = new InternalSnapshots({
    storage,
    refcounts,
    l2Cache,
    l1,
    clusterBits: header.clusterBits,
    extendedL2: false,
    version: header.version,
    externalDataFile: false,
    state,
    growL1: async (n) => {
      if (n > l1.size) throw new Error('not expected to grow');
    },
    now: () => ({ sec: 1_000, nsec: 5_000 }),
  });
  return { storage, internal, state, refcounts, close: () => refcounts.close() };
}

function replay(initial: Uint8Array, log: readonly StorageOp[], count: number): Uint8Array {
  let out = initial.slice();
  for (const op of log.slice(0, count)) {
    if (op.kind !== 'write') continue;
    const end = op.offset + op.bytes.length;
    if (end > out.length) {
      const grown = new Uint8Array(end);
      grown.set(out);
      out = grown;
    }
    out.set(op.bytes, op.offset);
  }
  return out;
}

function snapshotNames(path: string): string[] {
  const info = JSON.parse(qemuImg(['info', '--output=json', path])) as { snapshots?: { name: string }[] };
  return (info.snapshots ?? []).map((s) => s.name);
}

describeWithQemu('InternalSnapshots over a qemu-made image, cut at every storage call', () => {
  it('create then delete: every prefix of the writes is an image qemu-img check finds uncorrupted, with the old or the new table', async () => {
    const path = join(dir, 'base.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', path, '1M']);
    qemuIo(['-c', 'write -P 1 0 12k', '-c', 'write -c -P 2 64k 4k', path]);
    qemuImg(['snapshot', '-c', 'old', path]);
    const initial = new Uint8Array(readFileSync(path));
    const log: StorageOp[] = [];
    const parts = await openParts(initial, log);
    const created = await parts.internal.create('new');
    expect(created.entry).toMatchObject({ id: '2', name: 'new', dateSec: 1_000, dateNsec: 5_000, vmStateSize: 0, diskSize: 1 << 20, icount: 0n });
    const afterCreate = log.length;
    await parts.internal.delete('old');
    expect(parts.state.snapshots.map((s) => s.entry.name)).toEqual(['new']);
    await parts.close();

    // The header's snapshot fields are written after the table they point at is durable.
    const headerWrites = log.flatMap((op, i) => (op.kind === 'write' && op.offset === 60 ? [i] : []));
    expect(headerWrites).toHaveLength(2);
    for (const i of headerWrites) expect(log[i - 1]).toEqual({ kind: 'flush' });

    const file = join(dir, 'cut.qcow2');
    const names = new Set<string>();
    for (let n = 0; n <= log.length; n++) {
      if (n < log.length && log[n]!.kind !== 'flush' && n !== afterCreate) continue; // cut where a flush would land
      writeFileSync(file, replay(initial, log, n));
      const { json } = qemuCheck(file);
      expect(json['corruptions'] ?? 0, `cut after ${n} of ${log.length}: ${JSON.stringify(json)}`).toBe(0);
      expect(json['check-errors'] ?? 0).toBe(0);
      names.add(snapshotNames(file).join(','));
    }
    expect([...names].sort()).toEqual(['new', 'old', 'old,new']);
    writeFileSync(file, replay(initial, log, log.length));
    const { exitCode, json } = qemuCheck(file);
    expect([exitCode, json['leaks'] ?? 0]).toEqual([0, 0]);
  });
});
