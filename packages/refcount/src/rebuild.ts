import { hex, invalidArgument, MAX_REFTABLE_SIZE_BYTES, Qcow2Error, REFCOUNT_TABLE_ENTRY_SIZE, viewOf } from '@qcow2/format';
import type { Storage } from '@qcow2/storage';
import { flushStorage, ioError, writeAt, writeRefcountTableHeaderFields } from './io.js';
import { RefcountArray } from './refcount-array.js';
import type { TableMovedCallback } from './refcounts.js';

export interface RebuildOptions {
  readonly storage: Storage;
  /**
   * The refcount every host cluster must have, without the refcount structure itself (what
   * `computeExpectedRefcounts` gives without `refcounts`). Changed in place: it gains the
   * clusters of the new table and blocks, so afterwards it holds exactly what is on disk.
   */
  readonly counts: RefcountArray;
  /**
   * Byte ranges `[offset, length]` nothing may be placed in (the current refcount structure,
   * so the old one stays intact until the header is switched). They are not counted: in the
   * new structure they are free.
   */
  readonly avoid?: readonly (readonly [offset: number, length: number])[];
  /** Points the header at the new table; default: write the two header fields at offset 48. */
  readonly onTableMoved?: TableMovedCallback;
  /**
   * qemu's qcow2_pre_write_overlap_check before each refcount block and the table are written
   * (no structure ignored: they go to new places). A refusal rejects and nothing more is written
   * (the header still points at the old structure).
   */
  readonly writeGuard?: RebuildWriteGuard;
}

/**
 * The overlap check of a rebuild's write: undefined when it may go ahead, else a promise that
 * rejects. `what` is qemu's name for it in "ERROR writing refblock" / "ERROR writing reftable".
 */
export type RebuildWriteGuard = (offset: number, length: number, what: 'refblock' | 'reftable') => Promise<never> | undefined;

export interface RebuildResult {
  readonly tableOffset: number;
  readonly tableClusters: number;
  /** The new table as written (entries big-endian). */
  readonly table: Uint8Array;
  /** Refcount blocks written (a block written twice counts twice). */
  readonly blocks: number;
  /** Places the table was put at: more than 1 when placing it made the table grow. */
  readonly tablePlacements: number;
}

/** Sorted, merged cluster ranges with a binary-search membership test. */
class ClusterRanges {
  readonly #starts: number[] = [];
  readonly #ends: number[] = [];

  constructor(ranges: readonly (readonly [number, number])[], clusterSize: number) {
    const list = ranges
      .filter(([, length]) => length > 0)
      .map(([offset, length]) => [Math.floor(offset / clusterSize), Math.ceil((offset + length) / clusterSize)] as const)
      .sort((a, b) => a[0] - b[0]);
    for (const [start, end] of list) {
      const last = this.#ends.length - 1;
      if (last >= 0 && start <= this.#ends[last]!) {
        this.#ends[last] = Math.max(this.#ends[last]!, end);
      } else {
        this.#starts.push(start);
        this.#ends.push(end);
      }
    }
  }

  has(cluster: number): boolean {
    let lo = 0;
    let hi = this.#starts.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (cluster < this.#starts[mid]!) hi = mid - 1;
      else if (cluster >= this.#ends[mid]!) lo = mid + 1;
      else return true;
    }
    return false;
  }
}

/**
 * Builds a new refcount structure from `counts` alone and switches the image to it, as qemu's
 * rebuild_refcount_structure (qemu-img check -r all; repair of a dirty lazy-refcounts image):
 *
 * 1. For each refcount block that has a non-zero entry, a cluster is allocated in `counts`
 *    (first fit, never in a block already written, never in `avoid`) and the block — the
 *    cluster-sized slice of `counts` — is written there.
 * 2. Space for the table is allocated first fit; the blocks covering it are written again (new
 *    blocks are allocated when it needs some). When that makes the table grow, the table is
 *    placed again (the abandoned place is released, unlike qemu, so nothing leaks).
 * 3. The table is written, the storage flushed, then the header switched (`onTableMoved`) and
 *    flushed. Until then the old structure is untouched, so a crash leaves the old image.
 *
 * Nothing is placed over a cluster with a non-zero count or in `avoid`; the file grows when the
 * structure does not fit in its gaps.
 */
export async function rebuildRefcountStructure(options: RebuildOptions): Promise<RebuildResult> {
  const { storage, counts } = options;
  if (!(counts instanceof RefcountArray)) throw invalidArgument('rebuild: counts is not a RefcountArray');
  if (typeof storage !== 'object' || storage === null || typeof storage.write !== 'function') {
    throw invalidArgument('rebuild: storage is not a Storage');
  }
  if (storage.readOnly) throw new Qcow2Error('READ_ONLY', 'rebuild: the storage is read-only');
  const cs = 2 ** counts.clusterBits;
  const be = counts.blockEntries;
  const entriesPerCluster = cs / REFCOUNT_TABLE_ENTRY_SIZE;
  const avoidList = options.avoid ?? [];
  for (const [offset, length] of avoidList) {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
      throw invalidArgument(`rebuild: avoid range ${String(offset)}+${String(length)} is not a byte range`);
    }
  }
  const avoid = new ClusterRanges(avoidList, cs);
  const onTableMoved = options.onTableMoved ?? ((offset, clusters) => writeRefcountTableHeaderFields(storage, offset, clusters));

  let table = new Float64Array(0);
  let entries = 0;
  let blocksWritten = 0;

  /** qemu's alloc_clusters_imrt: `count` free clusters from `firstFree.value`, marked used. */
  const allocate = (count: number, firstFree: { value: number }): number => {
    let cluster = firstFree.value;
    let run = 0;
    let firstGap = true;
    while (run < count) {
      if (counts.get(cluster) === 0 && !avoid.has(cluster)) {
        run++;
        if (firstGap) {
          firstFree.value = cluster;
          firstGap = false;
        }
      } else {
        run = 0;
      }
      cluster++;
    }
    const start = cluster - count;
    if ((start + count) * cs > Number.MAX_SAFE_INTEGER) {
      throw new Qcow2Error('UNSUPPORTED', 'rebuild: no room for the refcount structure below 2^53');
    }
    counts.resize(cluster);
    for (let i = start; i < cluster; i++) counts.set(i, 1);
    return start;
  };

  const growTable = (index: number): void => {
    const wanted = Math.ceil((index + 1) / entriesPerCluster) * entriesPerCluster;
    if (wanted * REFCOUNT_TABLE_ENTRY_SIZE > MAX_REFTABLE_SIZE_BYTES) {
      throw new Qcow2Error(
        'UNSUPPORTED',
        `rebuild: refcount block ${index} needs a table of ${wanted * REFCOUNT_TABLE_ENTRY_SIZE} bytes, above qemu's ${MAX_REFTABLE_SIZE_BYTES}-byte limit`,
      );
    }
    const next = new Float64Array(wanted);
    next.set(table);
    table = next;
    entries = wanted;
  };

  const guard = options.writeGuard;
  const writeBlock = async (index: number): Promise<void> => {
    const offset = table[index]!;
    const refused = guard?.(offset, cs, 'refblock');
    if (refused !== undefined) await refused;
    await writeAt(storage, counts.blockBytes(index), offset, `refcount block ${index} at ${hex(offset)}`);
    blocksWritten++;
  };

  /** qemu's rebuild_refcounts_write_refblocks; true when the table had to grow. */
  const writeBlocks = async (first: number, endCluster: number): Promise<boolean> => {
    let grown = false;
    const firstFree = { value: 0 };
    let end = endCluster;
    for (let c = first; c < end; c++) {
      c = counts.nextNonZero(c, end);
      if (c >= end) break;
      const index = Math.floor(c / be);
      const blockStart = index * be;
      if (!(index < entries && table[index] !== 0)) {
        if (firstFree.value < blockStart) firstFree.value = blockStart;
        const cluster = allocate(1, firstFree);
        if (cluster >= end) end = cluster + 1;
        if (entries <= index) {
          growTable(index);
          grown = true;
        }
        table[index] = cluster * cs;
      }
      await writeBlock(index);
      c = blockStart + be - 1;
    }
    return grown;
  };

  await writeBlocks(0, counts.clusters);
  if (entries === 0) growTable(0); // nothing is counted: still a (one-cluster) table

  let tableOffset = -1;
  let tableClusters = 0;
  const released: [number, number][] = [];
  for (;;) {
    tableClusters = Math.ceil((entries * REFCOUNT_TABLE_ENTRY_SIZE) / cs);
    const start = allocate(tableClusters, { value: 0 });
    tableOffset = start * cs;
    const grown = await writeBlocks(start, start + tableClusters);
    if (!grown) break;
    // Too small now: give the place back and look again.
    for (let i = start; i < start + tableClusters; i++) counts.set(i, 0);
    released.push([start, start + tableClusters]);
  }
  // Blocks that counted a released table place as used are written again.
  const rewritten = new Set<number>();
  for (const [start, end] of released) {
    for (let index = Math.floor(start / be); index <= Math.floor((end - 1) / be); index++) {
      if (rewritten.has(index) || !(index < entries && table[index] !== 0)) continue;
      rewritten.add(index);
      await writeBlock(index);
    }
  }

  const bytes = new Uint8Array(tableClusters * cs);
  const view = viewOf(bytes);
  for (let i = 0; i < entries; i++) {
    const offset = table[i]!;
    view.setUint32(i * 8, Math.floor(offset / 0x1_0000_0000));
    view.setUint32(i * 8 + 4, offset >>> 0);
  }
  const refused = guard?.(tableOffset, bytes.length, 'reftable');
  if (refused !== undefined) await refused;
  await writeAt(storage, bytes, tableOffset, `rebuilt refcount table at ${hex(tableOffset)}`);
  await flushStorage(storage, 'rebuilt refcount structure');
  try {
    await onTableMoved(tableOffset, tableClusters);
  } catch (error) {
    throw ioError(error, `rebuild: switching the header to the new refcount table at ${hex(tableOffset)} failed`);
  }
  await flushStorage(storage, 'header');
  return { tableOffset, tableClusters, table: bytes, blocks: blocksWritten, tablePlacements: released.length + 1 };
}
