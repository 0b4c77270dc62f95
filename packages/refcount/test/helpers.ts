import { createTableCache } from '@qcow2/cache';
import { viewOf } from '@qcow2/format';
import { createMemoryStorage, type Storage } from '@qcow2/storage';
import { SparseStorage } from './sparse-storage.js';
import {
  type DiscardPolicy,
  HEADER_REFCOUNT_TABLE_OFFSET,
  Refcounts,
  writeInitialRefcountStructure,
  writeRefcountTableHeaderFields,
} from '@qcow2/refcount';

export interface TestImage {
  storage: Storage;
  clusterBits: number;
  refcountOrder: number;
}

/**
 * A memory image with qemu's fresh layout: cluster 0 a (blank) header whose refcount table
 * fields at offset 48 are kept up to date, cluster 1 the refcount table, cluster 2 the block.
 */
export async function makeImage(clusterBits: number, refcountOrder: number, sparse = true): Promise<TestImage> {
  const storage = sparse ? new SparseStorage() : createMemoryStorage();
  const s = await writeInitialRefcountStructure(storage, { clusterBits, refcountOrder });
  await writeRefcountTableHeaderFields(storage, s.tableOffset, s.tableClusters);
  return { storage, clusterBits, refcountOrder };
}

export async function headerFields(storage: Storage): Promise<{ tableOffset: number; tableClusters: number }> {
  const bytes = new Uint8Array(12);
  await storage.read(bytes, HEADER_REFCOUNT_TABLE_OFFSET);
  const view = viewOf(bytes);
  return { tableOffset: view.getUint32(0) * 2 ** 32 + view.getUint32(4), tableClusters: view.getUint32(8) };
}

export interface OpenOptions {
  cacheEntries?: number;
  discard?: DiscardPolicy;
}

/** Opens the refcounts of a test image from what its header fields say now. */
export async function openImage(image: TestImage, options: OpenOptions = {}): Promise<Refcounts> {
  const cs = 2 ** image.clusterBits;
  const cache = createTableCache({
    storage: image.storage,
    capacity: (options.cacheEntries ?? 4) * cs,
    entrySize: cs,
    name: 'refcount block',
  });
  return Refcounts.open({
    storage: image.storage,
    clusterBits: image.clusterBits,
    refcountOrder: image.refcountOrder,
    ...(await headerFields(image.storage)),
    cache,
    ...(options.discard === undefined ? {} : { discard: options.discard }),
  });
}

/** Every refcount in clusters [0, end) through scan. */
export async function allRefcounts(refcounts: Refcounts, end: number): Promise<number[]> {
  const out: number[] = [];
  await refcounts.scan(0, end, (_c, r) => out.push(r));
  return out;
}

/** Clusters of the refcount structure, each with its multiplicity. */
export function structureClusters(refcounts: Refcounts): Map<number, number> {
  const cs = refcounts.clusterSize;
  const out = new Map<number, number>();
  for (const r of refcounts.structure()) {
    for (let c = r.offset / cs; c < Math.ceil((r.offset + r.length) / cs); c++) out.set(c, (out.get(c) ?? 0) + 1);
  }
  return out;
}
