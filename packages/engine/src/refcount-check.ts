import { readFully, type ActiveL1Table } from '@qcow2/cluster';
import {
  AUTOCLEAR_BITMAPS,
  decodeHeaderCluster,
  findHeaderExtension,
  HEADER_CLUSTER_SIZE_PROBE,
  INCOMPAT_DATA_FILE,
  INCOMPAT_EXTENDED_L2,
  L1E_COPIED_HI,
  L2_NORMAL,
  L2_ZERO_ALLOC,
  L2E_COPIED_HI,
  l2EntryType,
  readClusterSize,
  viewOf,
  type HeaderExtension,
  type Qcow2Header,
} from '@qcow2/format';
import {
  compareRefcounts,
  computeExpectedRefcounts,
  fixRefcounts,
  openRefcounts,
  type ReferenceProblem,
  type RefcountMismatch,
  type Refcounts,
} from '@qcow2/refcount';
import type { Storage } from '@qcow2/storage';
import { walkReferences, type ImageLayout } from './reference-walk.js';
import { readSnapshotTable, type StoredSnapshot } from './snapshot-table.js';

/** An entry whose COPIED flag disagrees with its refcount (qemu-img check: "OFLAG_COPIED"). */
export interface CopiedFlagError {
  readonly table: 'L1' | 'L2';
  /** Offset of the table holding the entry. */
  readonly tableOffset: number;
  readonly index: number;
  /** The cluster the entry points at, and its refcount. */
  readonly offset: number;
  readonly refcount: number;
}

/** What `checkRefcounts` finds: qemu-img check's refcount errors and leaks. */
export interface RefcountCheckResult {
  /** Clusters whose refcount is above their references ("Leaked cluster"). */
  readonly leaks: readonly RefcountMismatch[];
  /** Clusters whose refcount is below their references ("ERROR cluster … refcount=… reference=…"). */
  readonly corruptions: readonly RefcountMismatch[];
  /** Problems met while counting (references past the end of the file, unusable refcount table entries, …). */
  readonly problems: readonly ReferenceProblem[];
  /** Entries whose COPIED flag is wrong (active L1 table and its L2 tables). */
  readonly copiedFlags: readonly CopiedFlagError[];
}

const TWO_POW_32 = 0x1_0000_0000;

/** The layout of an image from its decoded header and tables. */
export function layoutOf(
  header: Qcow2Header,
  extensions: readonly HeaderExtension[],
  snapshots: readonly StoredSnapshot[],
  snapshotTableLength: number,
): ImageLayout {
  const bitmaps = findHeaderExtension(extensions, 'bitmaps');
  const layout: ImageLayout = {
    clusterBits: header.clusterBits,
    refcountOrder: header.refcountOrder,
    extendedL2: (header.incompatibleFeatures & INCOMPAT_EXTENDED_L2) !== 0n,
    externalDataFile: (header.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n,
    l1Offset: header.l1TableOffset,
    l1Size: header.l1Size,
    snapshots: snapshots.map((s) => ({ l1Offset: s.l1OffsetHi * TWO_POW_32 + s.l1OffsetLo, l1Size: s.l1Size })),
    snapshotTable: { offset: header.snapshotsOffset, length: snapshotTableLength },
    ...(bitmaps !== undefined && (header.autoclearFeatures & AUTOCLEAR_BITMAPS) !== 0n
      ? { bitmapDirectory: { offset: bitmaps.bitmapDirectoryOffset, size: bitmaps.bitmapDirectorySize, count: bitmaps.nbBitmaps } }
      : {}),
  };
  return layout;
}

/**
 * Compares the refcounts of an image with its references, as qemu-img check does (without
 * repairing): leaks, refcounts below the references, and COPIED flags of the active tables that
 * disagree with refcounts. Reads `storage` only.
 */
export async function checkRefcounts(storage: Storage): Promise<RefcountCheckResult> {
  const probe = new Uint8Array(HEADER_CLUSTER_SIZE_PROBE);
  await readFully(storage, probe, 0);
  const first = new Uint8Array(readClusterSize(probe));
  await readFully(storage, first, 0);
  const { header, extensions } = decodeHeaderCluster(first, { supportedIncompatibleFeatures: ~0n });
  const { snapshots, length } = await readSnapshotTable(storage, header.snapshotsOffset, header.nbSnapshots);
  const layout = layoutOf(header, extensions, snapshots, length);
  const refcounts = await openRefcounts({
    storage,
    clusterBits: header.clusterBits,
    refcountOrder: header.refcountOrder,
    tableOffset: header.refcountTableOffset,
    tableClusters: header.refcountTableClusters,
  });
  try {
    const expected = await computeExpectedRefcounts(
      { clusterBits: layout.clusterBits, refcountOrder: layout.refcountOrder, fileSize: await storage.size(), refcounts },
      (add) => walkReferences(storage, layout, add),
    );
    const comparison = await compareRefcounts(refcounts, expected.counts);
    const copiedFlags = await copiedFlagErrors(storage, layout, refcounts, undefined, false);
    return { leaks: comparison.leaks, corruptions: comparison.corruptions, problems: expected.problems, copiedFlags };
  } finally {
    refcounts.dispose();
  }
}

/**
 * Repairs the refcounts of a writable image whose dirty bit is set (qemu's check with
 * BDRV_FIX_ERRORS | BDRV_FIX_LEAKS on open): counted from the references; the structure is
 * rebuilt when a referenced cluster has refcount 0 or a refcount block is unusable, else each
 * wrong refcount is set right; then COPIED flags are set from the refcounts. Call before the L2
 * cache holds anything. Returns how many refcounts and flags were wrong.
 */
export async function repairRefcounts(
  storage: Storage,
  layout: ImageLayout,
  refcounts: Refcounts,
  l1: ActiveL1Table,
): Promise<{ mismatches: number; copiedFlags: number; rebuilt: boolean }> {
  const walk = (add: Parameters<typeof walkReferences>[2]): Promise<void> => walkReferences(storage, layout, add);
  const base = { clusterBits: layout.clusterBits, refcountOrder: layout.refcountOrder, fileSize: await storage.size() };
  const expected = await computeExpectedRefcounts({ ...base, refcounts }, walk);
  const comparison = await compareRefcounts(refcounts, expected.counts);
  const mismatches = comparison.leaks.length + comparison.corruptions.length;
  let rebuilt = false;
  if (expected.rebuildNeeded || comparison.rebuildNeeded) {
    const plain = await computeExpectedRefcounts(base, walk);
    await refcounts.rebuild(plain.counts);
    rebuilt = true;
  } else if (mismatches > 0) {
    await fixRefcounts(refcounts, comparison, { leaks: true, corruptions: true });
  }
  await refcounts.flush();
  const copied = await copiedFlagErrors(storage, layout, refcounts, l1, true);
  return { mismatches, copiedFlags: copied.length, rebuilt };
}

/**
 * qemu's check_oflag_copied over the active L1 table: COPIED must be set exactly when the
 * refcount is 1 (always, for data in an external data file). With `fix`, wrong flags are set
 * right on disk (L1 entries through `l1`, L2 tables written whole).
 */
async function copiedFlagErrors(
  storage: Storage,
  layout: ImageLayout,
  refcounts: Refcounts,
  l1: ActiveL1Table | undefined,
  fix: boolean,
): Promise<CopiedFlagError[]> {
  const cs = 2 ** layout.clusterBits;
  const out: CopiedFlagError[] = [];
  const size = layout.l1Size;
  const l1Bytes = new Uint8Array(size * 8);
  if (l1 !== undefined) l1Bytes.set(l1.bytes.subarray(0, size * 8));
  else await readFully(storage, l1Bytes, layout.l1Offset);
  const l1View = viewOf(l1Bytes);
  const entrySize = layout.extendedL2 ? 16 : 8;
  const l2 = new Uint8Array(cs);
  const l2View = viewOf(l2);
  for (let i = 0; i < size; i++) {
    const hi = l1View.getUint32(i * 8);
    const lo = l1View.getUint32(i * 8 + 4);
    const l2Offset = (hi & 0x00ff_ffff) * TWO_POW_32 + ((lo & 0xffff_fe00) >>> 0);
    if (l2Offset === 0 || (hi & 0x00e0_0000) !== 0 || l2Offset % cs !== 0) continue;
    const refcount = await refcounts.get(l2Offset / cs);
    if ((refcount === 1) !== ((hi & L1E_COPIED_HI) !== 0)) {
      out.push({ table: 'L1', tableOffset: layout.l1Offset, index: i, offset: l2Offset, refcount });
      if (fix && l1 !== undefined) {
        l1.set(i, l2Offset, refcount === 1);
        const sector = l1.sectorOf(i);
        await storage.write(sector.bytes, sector.offset);
        await storage.flush();
      }
    }
    await readFully(storage, l2, l2Offset);
    let dirty = false;
    for (let j = 0; j < cs / entrySize; j++) {
      const ehi = l2View.getUint32(j * entrySize);
      const elo = l2View.getUint32(j * entrySize + 4);
      const type = l2EntryType(ehi, elo, layout.extendedL2, layout.externalDataFile);
      if (type !== L2_NORMAL && type !== L2_ZERO_ALLOC) continue;
      if ((ehi & 0x00e0_0000) !== 0) continue;
      const host = (ehi & 0x00ff_ffff) * TWO_POW_32 + ((elo & 0xffff_fe00) >>> 0);
      const rc = layout.externalDataFile ? 1 : await refcounts.get(Math.floor(host / cs));
      if ((rc === 1) !== ((ehi & L2E_COPIED_HI) !== 0)) {
        out.push({ table: 'L2', tableOffset: l2Offset, index: j, offset: host, refcount: rc });
        if (fix) {
          l2View.setUint32(j * entrySize, (rc === 1 ? ehi | L2E_COPIED_HI : ehi & ~L2E_COPIED_HI) >>> 0);
          dirty = true;
        }
      }
    }
    if (dirty) {
      await storage.write(l2, l2Offset);
      await storage.flush();
    }
  }
  return out;
}
