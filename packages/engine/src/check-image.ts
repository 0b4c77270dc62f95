import { isQcow2Error, Qcow2Error } from '@qcow2/format';
import type { Storage } from '@qcow2/storage';
import { openStoredRefcounts, RefcountCheck, type FixMode, type StoredRefcounts } from './check-refcounts.js';
import { fixSnapshotTable, readSnapshotTableForCheck } from './check-snapshots.js';
import {
  abortFrom,
  CheckAbort,
  CheckImage,
  checkRepairMode,
  checkStorageArgument,
  zeroCounters,
  type CheckCounters,
  type CheckMessage,
} from './check-state.js';

export type { CheckMessage } from './check-state.js';

/** What `checkImage` may repair: qemu-img check's `-r leaks` and `-r all`. */
export type CheckRepair = 'none' | 'leaks' | 'all';

export interface CheckOptions {
  /**
   * 'none' (default) only reads. 'leaks' frees leaked clusters (and fixes COPIED flags when
   * nothing else is wrong); 'all' also raises refcounts that are too low, fixes COPIED flags and
   * unaligned preallocated entries, rebuilds the refcount structure when it must, grows the file
   * over a refcount block past its end, and rewrites a damaged snapshot table. A repair needs a
   * writable storage.
   */
  readonly repair?: CheckRepair;
  /**
   * Receives every message as it is produced, in order; the result's `messages` is then empty.
   * Without it, messages are collected (one per leaked or damaged cluster: they can be many).
   */
  readonly onMessage?: (message: CheckMessage) => void;
}

/** qemu-img check's verdict (its ImageCheck), with the messages qemu prints on stderr. */
export interface CheckResult {
  /** Errors of the check itself (refcounts that could not be read, failed writes). */
  readonly checkErrors: number;
  /** Inconsistencies that can lose data: refcounts too low, bad entries, wrong COPIED flags. */
  readonly corruptions: number;
  /** Clusters whose refcount is higher than their references: wasted space only. */
  readonly leaks: number;
  readonly corruptionsFixed: number;
  readonly leaksFixed: number;
  /** One past the highest cluster in use ((highest + 1) × cluster size); 0 when unknown. */
  readonly imageEndOffset: number;
  /** Clusters of the virtual disk. */
  readonly totalClusters: number;
  /** Guest clusters allocated in the active L1/L2 tables. */
  readonly allocatedClusters: number;
  /** Allocated clusters not right after the previous one of their L2 table (compressed always). */
  readonly fragmentedClusters: number;
  readonly compressedClusters: number;
  /**
   * Present when the repair fixed something: the image was then checked again without
   * repairing, and the counts above are that second check's (with the fixed counts of the
   * first), as qemu-img reports them.
   */
  readonly repaired?: { readonly leaks: number; readonly corruptions: number };
  /**
   * Set when the check could not complete (qemu-img: "Check failed: <failure>", exit status 1):
   * the strerror text of the reason. The counts are then meaningless.
   */
  readonly failure?: string;
  /** The messages, in order (empty when `onMessage` received them). */
  readonly messages: readonly CheckMessage[];
}

const NO_FIX: FixMode = { leaks: false, errors: false };

/** qemu's qcow2_add_check_result. */
function addResult(out: CheckCounters, src: CheckCounters, allocationInfo: boolean): void {
  out.corruptions += src.corruptions;
  out.leaks += src.leaks;
  out.checkErrors += src.checkErrors;
  out.corruptionsFixed += src.corruptionsFixed;
  out.leaksFixed += src.leaksFixed;
  if (allocationInfo) {
    out.imageEndOffset = src.imageEndOffset;
    out.totalClusters = src.totalClusters;
    out.allocatedClusters = src.allocatedClusters;
    out.fragmentedClusters = src.fragmentedClusters;
    out.compressedClusters = src.compressedClusters;
  }
}

/** One bdrv_check (qemu's qcow2_co_check_locked) on a freshly opened image. */
async function checkPass(image: CheckImage, fix: FixMode, emit: (m: CheckMessage) => void): Promise<CheckCounters> {
  const result = zeroCounters();
  const snapshotRes = zeroCounters();
  const refcountRes = zeroCounters();
  const store: StoredRefcounts = { refcounts: undefined };
  let ok = false;
  try {
    try {
      await readSnapshotTableForCheck(image, snapshotRes, fix.errors, emit);
    } catch (error) {
      addResult(result, snapshotRes, false);
      throw error;
    }
    try {
      store.refcounts = await openStoredRefcounts(image);
      await new RefcountCheck(image, refcountRes, emit, store).run(fix);
    } catch (error) {
      addResult(result, refcountRes, true);
      addResult(result, snapshotRes, false);
      throw error;
    }
    addResult(result, refcountRes, true);
    try {
      await fixSnapshotTable(image, store.refcounts, snapshotRes, fix.errors, emit);
    } finally {
      addResult(result, snapshotRes, false);
    }
    if ((fix.leaks || fix.errors) && result.checkErrors === 0 && result.corruptions === 0) {
      await store.refcounts?.flush();
      // qemu's qcow2_mark_clean and qcow2_mark_consistent.
      await image.setIncompatibleBit(1n << 0n, false);
      await image.setIncompatibleBit(1n << 1n, false);
    }
    ok = true;
  } finally {
    const refcounts = store.refcounts;
    if (refcounts !== undefined && (image.dead || !image.writable)) {
      // Nothing to write back (a read-only check), or qemu made the image unusable: its cached
      // refcount updates are never written.
      refcounts.dispose();
    } else if (refcounts !== undefined) {
      try {
        await refcounts.close();
      } catch (error) {
        refcounts.dispose();
        if (ok) throw abortFrom(error);
      }
    }
  }
  return result;
}

/**
 * Checks a qcow2 image as `qemu-img check` does (qemu 7.2's qcow2_check_refcounts and snapshot
 * table checks), optionally repairing it (`-r leaks`, `-r all`) and then checking it again.
 *
 * Walks the header, the active L1/L2 tables, every snapshot's L1/L2 tables, the snapshot table,
 * the bitmap directory and tables, the refcount table and blocks; counts the references of every
 * host cluster in memory (proportional to the file's clusters, not the virtual size) and compares
 * them with the stored refcounts; checks entries for reserved bits, alignment and references
 * past the end of the file, the COPIED flags of the active tables, refcount blocks that are
 * shared, unaligned or outside the file. Messages are qemu's, word for word.
 *
 * Rejects (Qcow2Error) only when the image cannot be opened for a check, as qemu-img refuses
 * it: not qcow2, an unsupported version, feature or encryption, header fields outside qemu's
 * limits, an unloadable bitmap directory; READ_ONLY for a repair on a read-only storage;
 * INVALID_ARGUMENT for bad options. Anything found inside the image is in the result; when the
 * check itself cannot complete, the result has `failure`.
 */
export async function checkImage(storage: Storage, options: CheckOptions = {}): Promise<CheckResult> {
  checkStorageArgument(storage);
  if (typeof options !== 'object' || options === null) throw new Qcow2Error('INVALID_ARGUMENT', 'check: options must be an object');
  const repair = checkRepairMode(options.repair);
  const onMessage = options.onMessage;
  if (onMessage !== undefined && typeof onMessage !== 'function') throw new Qcow2Error('INVALID_ARGUMENT', 'check: onMessage is not a function');
  const writable = repair !== 'none';
  if (writable && storage.readOnly) throw new Qcow2Error('READ_ONLY', `check: repair (${repair}) needs a writable storage`);
  const messages: CheckMessage[] = [];
  const emit = onMessage ?? ((m: CheckMessage): void => void messages.push(m));
  const signal = { signaled: false };
  const fix: FixMode = { leaks: writable, errors: repair === 'all' };

  const image = await CheckImage.open(storage, { writable, signal });
  let first: CheckCounters;
  try {
    await image.clearUnknownAutoclearBits();
    first = await checkPass(image, fix, emit);
  } catch (error) {
    if (error instanceof CheckAbort || isQcow2Error(error)) return { ...zeroCounters(), messages, failure: abortFrom(error).reason };
    throw error;
  }
  if (first.corruptionsFixed === 0 && first.leaksFixed === 0) return { ...first, messages };

  const repaired = { leaks: first.leaksFixed, corruptions: first.corruptionsFixed };
  try {
    const again = await CheckImage.open(storage, { writable, signal });
    const second = await checkPass(again, NO_FIX, emit);
    return { ...second, leaksFixed: repaired.leaks, corruptionsFixed: repaired.corruptions, repaired, messages };
  } catch (error) {
    if (error instanceof CheckAbort || isQcow2Error(error)) {
      return { ...zeroCounters(), leaksFixed: repaired.leaks, corruptionsFixed: repaired.corruptions, repaired, messages, failure: abortFrom(error).reason };
    }
    throw error;
  }
}
