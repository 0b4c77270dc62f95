import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createTableCache } from '@qcow2/cache';
import {
  encodeHeaderCluster,
  INCOMPAT_EXTENDED_L2,
  L2E_COMPRESSED_HI,
  L2E_COPIED_HI,
  L2E_ZERO_LO,
  V3_HEADER_LENGTH,
  viewOf,
  type Qcow2Header,
} from '@qcow2/format';
import { openRefcounts, writeInitialRefcountStructure } from '@qcow2/refcount';
import { createMemoryStorage, type MemoryStorage } from '@qcow2/storage';
import { describeWithQemu, makeTempDir, qemuCheck, qemuIo } from '@qcow2/test-utils';
import { describe, expect, it } from 'vitest';
import { ActiveL1Table, cowBounds, createClusterMap, createClusterWriter, RangeLock, subclusterRange, type ClusterWriter } from '../src/index.js';

const CS = 65536;

/** Entry words for cowBounds: [hi, lo, bitmap hi (zero bits), bitmap lo (allocation bits)] per cluster. */
function words(...entries: [number, number, number?, number?][]): Uint32Array {
  const out = new Uint32Array(entries.length * 4);
  entries.forEach(([hi, lo, zero = 0, alloc = 0], i) => out.set([hi >>> 0, lo >>> 0, zero >>> 0, alloc >>> 0], i * 4));
  return out;
}

const standard = { clusterBits: 16, extendedL2: false, externalDataFile: false };
const extended = { clusterBits: 16, extendedL2: true, externalDataFile: false };
const SC = CS / 32;

describe('cowBounds (qemu calculate_l2_meta)', () => {
  it('copies whole clusters around a write into unallocated, shared or compressed standard clusters', () => {
    expect(cowBounds(words([0, 0]), 1, 100, 200, false, standard)).toEqual({ skip: false, from: 0, to: CS });
    // Shared (no COPIED) data cluster.
    expect(cowBounds(words([0, 0x50000]), 1, 0, CS, false, standard)).toEqual({ skip: false, from: 0, to: CS });
    // Compressed, two clusters written partly.
    expect(cowBounds(words([L2E_COMPRESSED_HI | 1, 0x1234], [0, 0]), 2, 4096, CS, false, standard)).toEqual({ skip: false, from: 0, to: 2 * CS });
  });

  it('writes in place into COPIED data clusters, but fills a preallocated zero cluster', () => {
    expect(cowBounds(words([L2E_COPIED_HI, 0x50000]), 1, 100, 200, true, standard)).toEqual({ skip: true, from: 100, to: 300 });
    expect(cowBounds(words([L2E_COPIED_HI, 0x50000 | L2E_ZERO_LO]), 1, 100, 200, true, standard)).toEqual({ skip: false, from: 0, to: CS });
  });

  it('stops at subcluster boundaries with extended L2 entries', () => {
    // Unallocated cluster: only the subclusters written.
    expect(cowBounds(words([0, 0]), 1, SC + 10, 20, false, extended)).toEqual({ skip: false, from: SC, to: 2 * SC });
    // Kept cluster with the write over an unallocated subcluster: that subcluster only.
    const keep = words([L2E_COPIED_HI, 0x50000, 0, 0b1]);
    expect(cowBounds(keep, 1, 3 * SC + 5, 10, true, extended)).toEqual({ skip: false, from: 3 * SC, to: 4 * SC });
    // Over an allocated subcluster: in place.
    expect(cowBounds(keep, 1, 5, 10, true, extended)).toEqual({ skip: true, from: 5, to: 15 });
    // Shared cluster with subclusters 2 and 20 allocated, write in 10: copies 2..20, not 0..1 or 21..31.
    const shared = words([0, 0x50000, 0, (1 << 2) | (1 << 20)]);
    expect(cowBounds(shared, 1, 10 * SC, SC, false, extended)).toEqual({ skip: false, from: 2 * SC, to: 21 * SC });
  });

  it('subclusterRange sets bits first..end-1', () => {
    expect(subclusterRange(0, 32)).toBe(0xffff_ffff);
    expect(subclusterRange(0, 31)).toBe(0x7fff_ffff);
    expect(subclusterRange(31, 32)).toBe(0x8000_0000);
    expect(subclusterRange(3, 5)).toBe(0b11000);
  });
});

describe('RangeLock', () => {
  it('runs disjoint ranges at once and overlapping ones in call order', async () => {
    const lock = new RangeLock();
    const order: string[] = [];
    const a = await lock.acquire(0, 3);
    const b = await lock.acquire(4, 7); // disjoint: granted at once
    const c = lock.acquire(2, 5).then((h) => (order.push('c'), h));
    const d = lock.acquire(5, 5).then((h) => (order.push('d'), h)); // waits behind c (overlap), not only b
    const e = lock.acquire(10, 12).then((h) => (order.push('e'), h)); // free: granted
    await e;
    expect(order).toEqual(['e']);
    b.release();
    await Promise.resolve();
    expect(order).toEqual(['e']);
    a.release();
    (await c).release();
    (await d).release();
    expect(order).toEqual(['e', 'c', 'd']);
    expect(lock.size).toBe(1);
    (await e).release();
    expect(lock.size).toBe(0);
  });
});

/** A v3 image in memory: header, refcount table and block, a one-entry L1 table (small virtual size). */
async function smallImage(options: { extendedL2?: boolean; size?: number }): Promise<MemoryStorage> {
  const storage = createMemoryStorage();
  const header: Qcow2Header = {
    version: 3,
    backingFileOffset: 0,
    backingFileSize: 0,
    clusterBits: 16,
    size: options.size ?? CS,
    cryptMethod: 0,
    l1Size: 1,
    l1TableOffset: 3 * CS,
    refcountTableOffset: CS,
    refcountTableClusters: 1,
    nbSnapshots: 0,
    snapshotsOffset: 0,
    incompatibleFeatures: options.extendedL2 === true ? INCOMPAT_EXTENDED_L2 : 0n,
    compatibleFeatures: 0n,
    autoclearFeatures: 0n,
    refcountOrder: 4,
    headerLength: V3_HEADER_LENGTH,
    compressionType: 0,
    trailingBytes: new Uint8Array(V3_HEADER_LENGTH - 105),
  };
  await storage.write(encodeHeaderCluster({ header, extensions: [] }), 0);
  await writeInitialRefcountStructure(storage, { clusterBits: 16, refcountOrder: 4, usedClusters: 4 });
  await storage.write(new Uint8Array(CS), 3 * CS);
  return storage;
}

async function writerOver(storage: MemoryStorage, virtualSize: number, extendedL2 = false): Promise<{ writer: ClusterWriter; l1: ActiveL1Table }> {
  const bytes = new Uint8Array(8);
  await storage.read(bytes, 36);
  const view = viewOf(bytes);
  const l1Size = view.getUint32(0);
  const l1Offset = 3 * CS;
  const l1Bytes = new Uint8Array(l1Size * 8);
  await storage.read(l1Bytes, l1Offset);
  const l1 = new ActiveL1Table(l1Offset, l1Size, l1Bytes);
  const l2Cache = createTableCache({ storage, capacity: 4 * CS, entrySize: CS });
  const map = createClusterMap({ clusterBits: 16, extendedL2, l1, l2Cache });
  const refcounts = await openRefcounts({ storage, clusterBits: 16, refcountOrder: 4, tableOffset: CS, tableClusters: 1, l2Cache });
  const guest = {
    read: async (dst: Uint8Array): Promise<void> => {
      dst.fill(0);
    },
    isZero: async (): Promise<boolean> => true,
  };
  // A stand-in compressor: 16 bytes per cluster (these tests do not read compressed clusters back).
  const compressor = { compress: async (src: Uint8Array): Promise<Uint8Array> => src.slice(0, 16) };
  const writer = createClusterWriter({ map, l1, l2Cache, refcounts, storage, version: 3, virtualSize, guest, unmap: true, compressor });
  const close = writer.close.bind(writer);
  Object.defineProperty(writer, 'close', {
    value: async () => {
      await close();
      await l2Cache.flush();
      await refcounts.close();
    },
  });
  return { writer, l1 };
}

describeWithQemu('L1 growth (qemu qcow2_grow_l1_table)', () => {
  it('grows the L1 table for writes beyond it, points the header at it and frees the old one', async () => {
    const storage = await smallImage({});
    // As after a resize: the guest is larger than the one-entry L1 table maps (512 MiB).
    const virtualSize = 2 * 1024 * 1024 * 1024;
    const { writer, l1 } = await writerOver(storage, virtualSize);
    const span = (CS / 8) * CS;
    await writer.write(new Uint8Array(4096).fill(1), 100);
    expect(l1.size).toBe(1);
    await writer.write(new Uint8Array(4096).fill(2), 3 * span + 4096);
    // qemu's 1.5x steps from 1: 2, 3, 5.
    expect(l1.size).toBe(5);
    expect(l1.offset).not.toBe(3 * CS);
    await writer.growL1(7, true);
    expect(l1.size).toBe(7);
    await writer.close();
    const file = storage.snapshot();
    const view = viewOf(file);
    expect(view.getUint32(36)).toBe(7);
    expect(view.getUint32(40) * 2 ** 32 + view.getUint32(44)).toBe(l1.offset);
    // The header's size as a resize would have set it, so qemu reads the whole guest.
    view.setUint32(24, Math.floor(virtualSize / 2 ** 32));
    view.setUint32(28, virtualSize >>> 0);
    const { dir, cleanup } = makeTempDir();
    try {
      const path = join(dir, 'grown.qcow2');
      writeFileSync(path, file);
      const check = qemuCheck(path);
      expect(check.exitCode, JSON.stringify(check.json)).toBe(0);
      expect(check.json['leaks'] ?? 0).toBe(0);
      qemuIo(['-c', 'read -P 1 100 4096', '-c', `read -P 2 ${3 * span + 4096} 4096`, '-c', `read -P 0 ${span} 4096`, path]);
    } finally {
      cleanup();
    }
  });
});

describe('ClusterWriter entries', () => {
  it('links new clusters with COPIED, marks zeroes with the ZERO flag and refuses compressed overwrites', async () => {
    const storage = await smallImage({ size: 4 * CS });
    const { writer } = await writerOver(storage, 4 * CS);
    await writer.write(new Uint8Array(CS).fill(3), 0);
    await writer.writeZeroes(CS, CS);
    await writer.writeZeroes(0, 512); // partial, data around it: zeros written in place
    await expect(writer.writeCompressed(new Uint8Array(CS), 0)).rejects.toMatchObject({ code: 'IO' });
    await expect(writer.writeCompressed(new Uint8Array(CS), 100)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(writer.write(new Uint8Array(1), 4 * CS)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await writer.close();
    await expect(writer.write(new Uint8Array(1), 0)).rejects.toMatchObject({ code: 'CLOSED' });
    const file = storage.snapshot();
    const l1 = viewOf(file.subarray(3 * CS));
    const l2Offset = (l1.getUint32(0) & 0xffffff) * 2 ** 32 + (l1.getUint32(4) & ~0x1ff);
    expect(l1.getUint32(0) >>> 31).toBe(1); // L1 entry COPIED
    const l2 = viewOf(file.subarray(l2Offset));
    expect(l2.getUint32(0) >>> 31).toBe(1); // data cluster COPIED
    expect(l2.getUint32(4) & L2E_ZERO_LO).toBe(0);
    expect(l2.getUint32(8)).toBe(0); // zeroed unallocated cluster: ZERO flag only
    expect(l2.getUint32(12)).toBe(L2E_ZERO_LO);
  });
});
