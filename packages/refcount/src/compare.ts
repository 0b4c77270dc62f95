import { invalidArgument } from '@qcow2/format';
import { RefcountArray } from './refcount-array.js';
import type { Refcounts } from './refcounts.js';

/** One cluster whose stored refcount differs from the number of references to it. */
export interface RefcountMismatch {
  readonly cluster: number;
  /** Host offset of the cluster. */
  readonly offset: number;
  /** What the refcount structure says. */
  readonly refcount: number;
  /** What the walk counted. */
  readonly reference: number;
}

export interface RefcountComparison {
  /** refcount > reference: space that is never freed (qemu-img check: "Leaked cluster"). */
  readonly leaks: RefcountMismatch[];
  /** refcount < reference: the cluster could be reallocated while in use ("ERROR cluster"). */
  readonly corruptions: RefcountMismatch[];
  /** Clusters whose refcount could not be read ("Can't get refcount"). */
  readonly unreadable: number[];
  /** The last cluster with a refcount or a reference (-1 when none): qemu's highest_cluster. */
  readonly highestCluster: number;
  /** True when a referenced cluster has refcount 0 or cannot be read: only a rebuild fixes it. */
  readonly rebuildNeeded: boolean;
}

/**
 * Compares the stored refcounts with `expected` for clusters `0..max(expected.clusters,
 * options.clusters)` (qemu's compare_refcounts): leaks and corruptions per cluster, as
 * qemu-img check reports them.
 */
export async function compareRefcounts(
  refcounts: Refcounts,
  expected: RefcountArray,
  options: { readonly clusters?: number } = {},
): Promise<RefcountComparison> {
  if (!(expected instanceof RefcountArray)) throw invalidArgument('compare refcounts: expected is not a RefcountArray');
  const extra = options.clusters ?? 0;
  if (!Number.isSafeInteger(extra) || extra < 0) throw invalidArgument(`compare refcounts: ${String(extra)} is not a cluster count`);
  const cs = refcounts.clusterSize;
  const leaks: RefcountMismatch[] = [];
  const corruptions: RefcountMismatch[] = [];
  const unreadable: number[] = [];
  let highestCluster = -1;
  let rebuildNeeded = false;
  const end = Math.max(expected.clusters, extra);
  await refcounts.scan(0, end, (cluster, refcount) => {
    const reference = expected.get(cluster);
    if (refcount < 0) {
      unreadable.push(cluster);
      if (reference > 0) rebuildNeeded = true;
      if (reference > 0) highestCluster = cluster;
      return;
    }
    if (refcount > 0 || reference > 0) highestCluster = cluster;
    if (refcount === reference) return;
    const mismatch = { cluster, offset: cluster * cs, refcount, reference };
    if (refcount < reference) {
      corruptions.push(mismatch);
      if (refcount === 0) rebuildNeeded = true;
    } else {
      leaks.push(mismatch);
    }
  });
  return { leaks, corruptions, unreadable, highestCluster, rebuildNeeded };
}

export interface FixRefcountsResult {
  readonly leaksFixed: number;
  readonly corruptionsFixed: number;
}

/**
 * Repairs what compareRefcounts found, as qemu-img check -r does: with `leaks`, leaked
 * refcounts are lowered to the reference count (freed clusters are discarded, qemu's
 * QCOW2_DISCARD_ALWAYS); with `corruptions`, refcounts below it are raised, except where the
 * refcount is 0 (that needs a rebuild). Mismatches that fail to be fixed are left as they are.
 */
export async function fixRefcounts(
  refcounts: Refcounts,
  comparison: RefcountComparison,
  options: { readonly leaks?: boolean; readonly corruptions?: boolean },
): Promise<FixRefcountsResult> {
  let leaksFixed = 0;
  let corruptionsFixed = 0;
  if (options.leaks === true) {
    for (const m of comparison.leaks) {
      try {
        await refcounts.update(m.offset, 1, m.reference - m.refcount, 'always');
        leaksFixed++;
      } catch {
        // Reported again by the next check.
      }
    }
  }
  if (options.corruptions === true) {
    for (const m of comparison.corruptions) {
      if (m.refcount === 0) continue;
      try {
        await refcounts.update(m.offset, 1, m.reference - m.refcount, 'always');
        corruptionsFixed++;
      } catch {
        // Reported again by the next check.
      }
    }
  }
  return { leaksFixed, corruptionsFixed };
}
