import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import { decodeHeader, INCOMPAT_DIRTY, viewOf } from '@qcow2/format';
import { createMemoryStorage, type MemoryStorage } from '@qcow2/storage';
import { compareRefcounts, computeExpectedRefcounts, Refcounts } from '@qcow2/refcount';
import { qemuCheck, qemuImg, qemuIo } from '@qcow2/test-utils';
import { structureClusters } from './helpers.js';
import { walkImage } from './image-walk.js';

/**
 * Cases against qemu-written images. Images written by qemu (512-byte clusters, enough data that qemu grew its refcount table,
 * compressed clusters, an internal snapshot) are read back: the refcounts we load must equal
 * what our walk of their L1/L2/snapshot tables computes. A rebuild on a copy must give an image
 * qemu-img check calls clean, with the same guest content and the same refcount for every
 * cluster outside the old and new refcount structures.
 */

const MiB = 1024 * 1024;

async function load(file: string): Promise<{ storage: MemoryStorage; rc: Refcounts; bytes: Uint8Array }> {
  const bytes = new Uint8Array(readFileSync(file));
  const storage = createMemoryStorage({ initial: bytes });
  const h = decodeHeader(bytes);
  const rc = await Refcounts.open({
    storage,
    clusterBits: h.clusterBits,
    refcountOrder: h.refcountOrder,
    tableOffset: h.refcountTableOffset,
    tableClusters: h.refcountTableClusters,
  });
  return { storage, rc, bytes };
}

function expected(rc: Refcounts, bytes: Uint8Array, withStructure: boolean) {
  return computeExpectedRefcounts(
    {
      clusterBits: rc.clusterBits,
      refcountOrder: rc.refcountOrder,
      fileSize: bytes.length,
      ...(withStructure ? { refcounts: rc } : {}),
    },
    (add) => walkImage(bytes, add),
  );
}

async function refcountsOf(rc: Refcounts, end: number): Promise<Int32Array | Float64Array> {
  const out = new Float64Array(end);
  await rc.scan(0, end, (c, r) => {
    out[c] = r;
  });
  return out;
}

function expectClean(file: string): void {
  const { exitCode, json } = qemuCheck(file);
  expect(json['check-errors'] ?? 0).toBe(0);
  expect(json['corruptions'] ?? 0).toBe(0);
  expect(json['leaks'] ?? 0).toBe(0);
  expect(exitCode).toBe(0);
}

/** qemu writes an image with 2^order-bit refcounts; ours must agree with it, and rebuild it. */
export async function qemuImageCase(dir: string, order: number): Promise<void> {
  const bits = 1 << order;
  // Data for 1.25 × what one refcount table cluster covers (at least 48 MiB): qemu grows its table.
  const covered = 64 * ((512 * 8) / bits) * 512;
  const data = Math.max(48 * MiB, Math.ceil((covered * 1.25) / MiB) * MiB);
  const size = data + 8 * MiB;
  const file = join(dir, `qemu-${bits}.qcow2`);
  qemuImg(['create', '-q', '-f', 'qcow2', '-o', `cluster_size=512,refcount_bits=${bits}`, file, String(size)]);
  qemuIo(['-t', 'unsafe', '-c', `write -P 0x5a 0 ${data}`, file]);
  if (bits > 1) {
    // An internal snapshot: every cluster it shares gets refcount 2; then copy-on-write.
    qemuImg(['snapshot', '-c', 'one', file]);
    qemuIo(['-t', 'unsafe', '-c', `write -P 0x77 ${MiB} 256k`, file]);
  }
  // Compressed clusters packed several to a host cluster.
  qemuIo(['-t', 'unsafe', '-c', `write -c -P 0x33 ${data} 64k`, '-c', `write -c -P 0x44 ${data + 65536} 3k`, file]);

  const { rc, bytes } = await load(file);
  expect(rc.tableClusters > 1 || rc.tableOffset !== 512).toBe(true); // qemu moved its table
  const want = await expected(rc, bytes, true);
  expect(want.problems).toEqual([]);
  const cmp = await compareRefcounts(rc, want.counts);
  expect(cmp.leaks).toEqual([]);
  expect(cmp.corruptions).toEqual([]);
  expect(cmp.unreadable).toEqual([]);
  expect(cmp.highestCluster).toBe(Math.ceil(bytes.length / 512) - 1);
  // Sanity: the walk saw what qemu wrote (a cluster shared with the snapshot has refcount 2).
  if (bits > 1) expect(await rc.get(want.counts.nextNonZero(0, want.counts.clusters))).toBe(1);
  let shared = 0;
  await rc.scan(0, want.counts.clusters, (_c, r) => {
    if (r >= 2) shared++;
  });
  if (bits > 1) expect(shared).toBeGreaterThan(data / 512 / 2);

  // Rebuild on a copy.
  const copy = { storage: createMemoryStorage({ initial: bytes }), bytes, rc: undefined as unknown as Refcounts };
  copy.rc = await Refcounts.open({ storage: copy.storage, clusterBits: 9, refcountOrder: order, tableOffset: rc.tableOffset, tableClusters: rc.tableClusters });
  const oldStructure = structureClusters(copy.rc);
  const counts = (await expected(copy.rc, copy.bytes, false)).counts;
  await copy.rc.rebuild(counts);
  await copy.rc.close();
  const rebuiltFile = join(dir, `rebuilt-${bits}.qcow2`);
  writeFileSync(rebuiltFile, copy.storage.snapshot());
  expectClean(rebuiltFile);
  qemuImg(['compare', '-q', file, rebuiltFile]);

  const rebuilt = await load(rebuiltFile);
  const newStructure = structureClusters(rebuilt.rc);
  const end = Math.max(rebuilt.bytes.length, bytes.length) / 512;
  const before = await refcountsOf(rc, end);
  const after = await refcountsOf(rebuilt.rc, end);
  const wrong: number[] = [];
  for (let c = 0; c < end; c++) {
    const want = newStructure.has(c) ? 1 : oldStructure.has(c) ? 0 : before[c];
    if (after[c] !== want) wrong.push(c);
  }
  expect(wrong).toEqual([]);
  for (const c of newStructure.keys()) expect(oldStructure.has(c)).toBe(false);
}

/** A lazy-refcounts image killed while dirty is repaired by a rebuild. */
export async function dirtyImageCase(dir: string): Promise<void> {
  const file = join(dir, 'dirty.qcow2');
  qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512,lazy_refcounts=on', file, String(64 * MiB)]);
  qemuIo(['-t', 'unsafe', '-c', 'write -P 0x11 0 12M', file]);
  // Killed while the image is open (writethrough: L2 tables reach the file, refcounts are
  // lazy): the dirty bit stays set and the refcounts are stale, as in qemu's iotest 039.
  const killed = spawnSync('qemu-io', ['-c', 'write -P 0x22 12M 2M', '-c', 'sigraise 9', file], { encoding: 'utf8' });
  expect(killed.signal).toBe('SIGKILL');
  const { rc, bytes } = await load(file);
  expect(decodeHeader(bytes).incompatibleFeatures & INCOMPAT_DIRTY).toBe(INCOMPAT_DIRTY);
  const want = await expected(rc, bytes, true);
  const cmp = await compareRefcounts(rc, want.counts);
  // Clusters allocated since the refcount blocks were last written: qemu-img check agrees.
  expect(cmp.corruptions.length).toBeGreaterThan(10);
  expect(cmp.rebuildNeeded).toBe(true);
  // qemu-img check lists the same clusters with the same numbers.
  const report = spawnSync('qemu-img', ['check', file], { encoding: 'utf8' }).stderr;
  const listed = (kind: string) =>
    [...report.matchAll(new RegExp(`^${kind} cluster (\\d+) refcount=(\\d+) reference=(\\d+)$`, 'gm'))].map((m) => ({
      cluster: Number(m[1]),
      offset: Number(m[1]) * 512,
      refcount: Number(m[2]),
      reference: Number(m[3]),
    }));
  expect(cmp.corruptions).toEqual(listed('ERROR'));
  expect(cmp.leaks).toEqual(listed('Leaked'));

  const counts = (await expected(rc, bytes, false)).counts;
  await rc.rebuild(counts);
  await rc.close();
  const storage = rc.storage as MemoryStorage;
  // The engine's part: clear the dirty bit (incompatible features, header offset 72).
  const features = new Uint8Array(8);
  await storage.read(features, 72);
  viewOf(features).setUint32(4, viewOf(features).getUint32(4) & ~1);
  await storage.write(features, 72);
  const repaired = join(dir, 'repaired.qcow2');
  writeFileSync(repaired, storage.snapshot());
  expectClean(repaired);
  qemuIo(['-c', 'read -P 0x11 0 12M', '-c', 'read -P 0x22 12M 2M', repaired]);
  const again = await load(repaired);
  const cmp2 = await compareRefcounts(again.rc, (await expected(again.rc, again.bytes, true)).counts);
  expect([cmp2.leaks, cmp2.corruptions]).toEqual([[], []]);
}
