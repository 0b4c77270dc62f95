import { invalidArgument, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS, refcountBlockEntries } from '@qcow2/format';
import { REFCOUNT_TABLE_ENTRY_SIZE } from '@qcow2/format';

export interface RefcountMetadataSize {
  /** Refcount blocks needed. */
  readonly blocks: number;
  /** Refcount table clusters needed. */
  readonly tableClusters: number;
  /** (blocks + tableClusters) × cluster size. */
  readonly bytes: number;
}

/**
 * How many refcount blocks and refcount table clusters cover `clusters` clusters plus
 * themselves: the fixed point qemu's qcow2_refcount_metadata_size finds. With `generous`, the
 * result also covers half again as many table clusters more (qemu's generous_increase, so the
 * table does not have to grow again soon).
 */
export function refcountMetadataSize(
  clusters: number,
  clusterBits: number,
  refcountOrder: number,
  generous = false,
): RefcountMetadataSize {
  if (!Number.isSafeInteger(clusters) || clusters < 0) {
    throw invalidArgument(`refcount metadata size: ${String(clusters)} is not a number of clusters`);
  }
  if (!Number.isInteger(clusterBits) || clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw invalidArgument(`refcount metadata size: cluster bits ${String(clusterBits)} is not in ${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS}`);
  }
  const clusterSize = 2 ** clusterBits;
  const perTableCluster = clusterSize / REFCOUNT_TABLE_ENTRY_SIZE;
  const perBlock = refcountBlockEntries(clusterBits, refcountOrder);
  let covered = clusters;
  let table = 0;
  let blocks = 0;
  let n = 0;
  let last: number;
  let extra = generous;
  do {
    last = n;
    blocks = Math.ceil((covered + table + blocks) / perBlock);
    table = Math.ceil(blocks / perTableCluster);
    n = covered + blocks + table;
    if (n === last && extra) {
      covered += Math.ceil(table / 2);
      n = 0;
      extra = false;
    }
  } while (n !== last);
  return { blocks, tableClusters: table, bytes: (blocks + table) * clusterSize };
}
