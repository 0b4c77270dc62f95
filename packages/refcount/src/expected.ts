import { hex, invalidArgument } from '@qcow2/format';
import { RefcountArray } from './refcount-array.js';
import type { Refcounts } from './refcounts.js';

/**
 * Counts one reference to every host cluster touched by `[offset, offset + length)` (nothing
 * when length ≤ 0), as qemu's qcow2_inc_refcounts_imrt. `what` names the referrer in problems.
 */
export type AddReference = (offset: number, length: number, what?: string) => void;

export interface ExpectedRefcountsOptions {
  readonly clusterBits: number;
  readonly refcountOrder: number;
  /** Size of the image file: the counts cover at least its clusters. */
  readonly fileSize: number;
  /**
   * When given, its refcount table and blocks are counted too (qemu's check counts them), and
   * blocks that are unusable, past the end of the file or referenced more than once are
   * reported.
   */
  readonly refcounts?: Refcounts;
}

export type ReferenceProblemKind =
  /** The cluster already has refcount_max references (qemu: "overflow cluster offset"). */
  | 'overflow'
  /**
   * The referenced range ends a cluster or more past the end of the file (qemu: "counting
   * reference for region exceeding the end of the file by one cluster or more"), or is not a
   * byte range. Not counted.
   */
  | 'out-of-range'
  /** A refcount table entry cannot be used. */
  | 'refcount-table-entry'
  /** A refcount block lies past the end of the file. */
  | 'refcount-block-outside'
  /** A refcount block cluster is referenced by something else too. */
  | 'refcount-block-shared';

export interface ReferenceProblem {
  readonly kind: ReferenceProblemKind;
  /** Host offset concerned. */
  readonly offset: number;
  readonly message: string;
}

export interface ExpectedRefcounts {
  /** How many references every host cluster has. */
  readonly counts: RefcountArray;
  /** The first problems found (at most 1000; see `problemCount`). */
  readonly problems: readonly ReferenceProblem[];
  /** How many problems were found in all. Each counts as a corruption in qemu's terms. */
  readonly problemCount: number;
  /** True when a problem means the refcount structure must be rebuilt. */
  readonly rebuildNeeded: boolean;
}

const MAX_LISTED_PROBLEMS = 1000;

/**
 * The refcount every host cluster should have, from a walk of everything that references
 * clusters (qemu's calculate_refcounts). `walk` calls `add` for each reference; qemu's check
 * adds: the header cluster (0, clusterSize); the active L1 table and each snapshot's L1 table
 * (offset, l1Size × 8); each L2 table they point to (once per L1 entry); each allocated data
 * cluster (normal and preallocated zero entries: offset, clusterSize; compressed entries: the
 * sectors they span); the snapshot table; the crypto header; bitmap directory, tables and data.
 * The refcount structure is added when `options.refcounts` is given. As in qemu, a range that
 * ends a cluster or more past the end of the file is reported, not counted, so the counts never
 * cover more than the file (plus the cluster it ends in).
 */
export async function computeExpectedRefcounts(
  options: ExpectedRefcountsOptions,
  walk: (add: AddReference) => void | Promise<void>,
): Promise<ExpectedRefcounts> {
  const { clusterBits, refcountOrder, fileSize } = options;
  if (!Number.isSafeInteger(fileSize) || fileSize < 0) {
    throw invalidArgument(`expected refcounts: file size ${String(fileSize)} is not a size`);
  }
  if (typeof walk !== 'function') throw invalidArgument('expected refcounts: walk is not a function');
  const counts = new RefcountArray(clusterBits, refcountOrder);
  const cs = 2 ** clusterBits;
  const fileClusters = Math.ceil(fileSize / cs);
  counts.resize(fileClusters);
  const problems: ReferenceProblem[] = [];
  let problemCount = 0;
  let rebuildNeeded = false;
  const report = (kind: ReferenceProblemKind, offset: number, message: string): void => {
    problemCount++;
    if (problems.length < MAX_LISTED_PROBLEMS) problems.push({ kind, offset, message });
  };

  const add: AddReference = (offset, length, what = 'reference') => {
    if (!(length > 0)) return;
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || offset + length > Number.MAX_SAFE_INTEGER) {
      report('out-of-range', Number.isSafeInteger(offset) ? offset : 0, `${what}: range ${String(offset)}+${String(length)} is not a host byte range`);
      return;
    }
    if (offset + length - fileSize >= cs) {
      report(
        'out-of-range',
        offset,
        `${what}: counting reference for region exceeding the end of the file by one cluster or more: offset ${hex(offset)} size ${hex(length)}`,
      );
      return;
    }
    const first = Math.floor(offset / cs);
    const last = Math.floor((offset + length - 1) / cs);
    for (let c = first; c <= last; c++) {
      if (!counts.increment(c)) {
        report('overflow', c * cs, `${what}: overflow cluster offset ${hex(c * cs)} (more than ${counts.max} references)`);
      }
    }
  };

  await walk(add);

  const refcounts = options.refcounts;
  if (refcounts !== undefined) {
    if (refcounts.clusterBits !== clusterBits || refcounts.refcountOrder !== refcountOrder) {
      throw invalidArgument('expected refcounts: the refcounts have another cluster size or refcount width');
    }
    for (const p of refcounts.tableProblems()) {
      report('refcount-table-entry', refcounts.tableOffset + p.index * 8, p.message);
      rebuildNeeded = true;
    }
    const structure = refcounts.structure();
    for (const range of structure) {
      if (range.kind === 'table') add(range.offset, range.length, 'refcount table');
    }
    for (const range of structure) {
      if (range.kind !== 'block') continue;
      const cluster = range.offset / cs;
      if (cluster >= fileClusters) {
        report('refcount-block-outside', range.offset, `refcount block ${range.index} at ${hex(range.offset)} is outside the image`);
        rebuildNeeded = true;
        continue;
      }
      add(range.offset, cs, `refcount block ${range.index}`);
      const n = counts.get(cluster);
      if (n !== 1) {
        report('refcount-block-shared', range.offset, `refcount block ${range.index} at ${hex(range.offset)}: refcount=${n}`);
        rebuildNeeded = true;
      }
    }
  }
  return { counts, problems, problemCount, rebuildNeeded };
}
