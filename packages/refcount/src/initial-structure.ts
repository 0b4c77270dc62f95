import { invalidArgument, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS, refcountBlockEntries, setRefcount, viewOf } from '@qcow2/format';
import type { Storage } from '@qcow2/storage';
import { writeAt } from './io.js';

export interface InitialRefcountStructureOptions {
  readonly clusterBits: number;
  readonly refcountOrder: number;
  /**
   * Clusters from 0 that are in use once the structure is written, counted with refcount 1:
   * at least 3 (header, table, block). Default 3.
   */
  readonly usedClusters?: number;
}

export interface InitialRefcountStructure {
  /** refcount_table_offset for the header: cluster 1. */
  readonly tableOffset: number;
  /** refcount_table_clusters for the header: 1. */
  readonly tableClusters: number;
  /** Offset of the one refcount block: cluster 2. */
  readonly blockOffset: number;
}

/**
 * Writes the refcount structure of a new image as qemu's qcow2_co_create lays it out: the
 * header in cluster 0 (not written here), a one-cluster refcount table in cluster 1 whose first
 * entry points at the refcount block in cluster 2, and refcounts of 1 for clusters
 * `0..usedClusters-1`. Open it with `Refcounts.open` to allocate the rest.
 */
export async function writeInitialRefcountStructure(
  storage: Storage,
  options: InitialRefcountStructureOptions,
): Promise<InitialRefcountStructure> {
  const { clusterBits, refcountOrder } = options;
  if (!Number.isInteger(clusterBits) || clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw invalidArgument(`initial refcount structure: cluster bits ${String(clusterBits)} is not in ${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS}`);
  }
  const entries = refcountBlockEntries(clusterBits, refcountOrder);
  const used = options.usedClusters ?? 3;
  if (!Number.isSafeInteger(used) || used < 3 || used > entries) {
    throw invalidArgument(`initial refcount structure: used clusters ${String(used)} is not in 3..${entries}`);
  }
  const cs = 2 ** clusterBits;
  const bytes = new Uint8Array(2 * cs);
  viewOf(bytes).setUint32(4, 2 * cs);
  const block = bytes.subarray(cs);
  for (let i = 0; i < used; i++) setRefcount(block, i, refcountOrder, 1);
  await writeAt(storage, bytes, cs, 'initial refcount structure');
  return { tableOffset: cs, tableClusters: 1, blockOffset: 2 * cs };
}
