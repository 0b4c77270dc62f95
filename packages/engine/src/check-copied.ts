import { L2_NORMAL, L2_ZERO_ALLOC, l2EntryType, viewOf } from '@qcow2/format';
import type { Refcounts } from '@qcow2/refcount';
import { addOffset, clusterIndexOf, EFBIG_TEXT, hex64, u64, type HostOffset } from './check-bits.js';
import { abortFrom, CheckAbort, refcountBlockReadsAsZero, strerrorOf, type CheckCounters, type CheckImage, type CheckMessage } from './check-state.js';

/** The stored refcount of a cluster, or undefined when it cannot be read (qemu: no message). */
async function refcountOf(image: CheckImage, refcounts: Refcounts | undefined, cluster: number): Promise<number | undefined> {
  if (refcounts === undefined) return 0;
  try {
    return await refcounts.get(cluster);
  } catch {
    return refcountBlockReadsAsZero(image, cluster) ? 0 : undefined;
  }
}

/**
 * qemu's check_oflag_copied over the active L1 table and its L2 tables: the COPIED flag must be
 * set exactly where the refcount is 1 (always, for data in an external data file). Repaired with
 * `fix.errors`, or with `fix.leaks` alone when the check found nothing else wrong; L1 entries
 * are written one by one, L2 tables whole, each after qemu's metadata overlap check.
 */
export async function checkOflagCopied(
  image: CheckImage,
  refcounts: Refcounts | undefined,
  res: CheckCounters,
  fix: { readonly leaks: boolean; readonly errors: boolean },
  emit: (m: CheckMessage) => void,
): Promise<void> {
  const say = (text: string): void => emit({ text, report: false });
  const repair = fix.errors ? true : fix.leaks ? res.checkErrors === 0 && res.corruptions === 0 && res.leaks === 0 : false;
  const cs = image.clusterSize;
  const l1 = viewOf(image.l1Table);
  const l2 = new Uint8Array(cs);
  const l2View = viewOf(l2);
  const fileSize = await image.fileSize();
  for (let i = 0; i < image.l1Size; i++) {
    const hi = l1.getUint32(i * 8);
    const lo = l1.getUint32(i * 8 + 4);
    const l2Offset: HostOffset = u64(hi & 0x00ff_ffff, (lo & 0xffff_fe00) >>> 0);
    if (l2Offset === 0) continue;
    const refcount = await refcountOf(image, refcounts, clusterIndexOf(l2Offset, image.clusterBits));
    if (refcount === undefined) continue;
    if ((refcount === 1) !== ((hi & 0x8000_0000) !== 0)) {
      res.corruptions++;
      say(`${repair ? 'Repairing' : 'ERROR'} OFLAG_COPIED L2 cluster: l1_index=${i} l1_entry=${hex64(hi, lo)} refcount=${refcount}`);
      if (repair) {
        l1.setUint32(i * 8, (refcount === 1 ? hi | 0x8000_0000 : hi & 0x7fff_ffff) >>> 0);
        const at = addOffset(image.l1Offset, i * 8);
        try {
          if (typeof at !== 'number') throw new CheckAbort(EFBIG_TEXT);
          await image.preWriteOverlapCheck(emit, at, 8, ['active L1 table']);
          await image.write(image.l1Table.slice(i * 8, i * 8 + 8), at, true);
        } catch (error) {
          res.checkErrors++;
          throw abortFrom(error);
        }
        res.corruptions--;
        res.corruptionsFixed++;
      }
    }
    if (typeof l2Offset === 'bigint' || l2Offset >= fileSize) continue; // reads as zeros: nothing to check
    try {
      await image.read(l2, l2Offset);
    } catch (error) {
      say(`ERROR: Could not read L2 table: ${strerrorOf(error)}`);
      res.checkErrors++;
      throw abortFrom(error);
    }
    let dirty = 0;
    for (let j = 0; j < image.l2Size; j++) {
      const at = j * image.l2EntrySize;
      const ehi = l2View.getUint32(at);
      const elo = l2View.getUint32(at + 4);
      const type = l2EntryType(ehi, elo, image.extendedL2, image.hasDataFile);
      if (type !== L2_NORMAL && type !== L2_ZERO_ALLOC) continue;
      let rc: number | undefined = 1;
      if (!image.hasDataFile) {
        const data = u64(ehi & 0x00ff_ffff, (elo & 0xffff_fe00) >>> 0);
        rc = await refcountOf(image, refcounts, clusterIndexOf(data, image.clusterBits));
        if (rc === undefined) continue;
      }
      if ((rc === 1) !== ((ehi & 0x8000_0000) !== 0)) {
        res.corruptions++;
        say(`${repair ? 'Repairing' : 'ERROR'} OFLAG_COPIED data cluster: l2_entry=${hex64(ehi, elo)} refcount=${rc}`);
        if (repair) {
          l2View.setUint32(at, (rc === 1 ? ehi | 0x8000_0000 : ehi & 0x7fff_ffff) >>> 0);
          dirty++;
        }
      }
    }
    if (dirty > 0) {
      if (typeof l2Offset !== 'number') {
        say('ERROR: Could not write L2 table: File too large');
        res.checkErrors++;
        throw new CheckAbort(EFBIG_TEXT);
      }
      try {
        await image.preWriteOverlapCheck(emit, l2Offset, cs, ['active L2 table']);
      } catch (error) {
        say(`ERROR: Could not write L2 table; metadata overlap check failed: ${strerrorOf(error)}`);
        res.checkErrors++;
        throw abortFrom(error);
      }
      try {
        await image.write(l2, l2Offset, false);
      } catch (error) {
        say(`ERROR: Could not write L2 table: ${strerrorOf(error)}`);
        res.checkErrors++;
        throw abortFrom(error);
      }
      res.corruptions -= dirty;
      res.corruptionsFixed += dirty;
    }
  }
}
