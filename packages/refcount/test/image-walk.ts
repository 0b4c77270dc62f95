import {
  alignUp,
  compressedAdditionalSectors,
  compressedHostOffset,
  decodeHeader,
  decodeSnapshotTable,
  l1L2Offset,
  L2_COMPRESSED,
  L2_NORMAL,
  L2_ZERO_ALLOC,
  l2EntryType,
  l2HostOffset,
  snapshotEntrySize,
  viewOf,
} from '@qcow2/format';
import type { AddReference } from '@qcow2/refcount';

/**
 * What qemu's calculate_refcounts references, for the images of these tests (no bitmaps,
 * encryption or extended L2): the header cluster, the active and snapshot L1 tables, their L2
 * tables and data clusters, and the snapshot table. Reads from a whole-file byte array.
 */
export function walkImage(file: Uint8Array, add: AddReference): void {
  const h = decodeHeader(file);
  const cs = 2 ** h.clusterBits;
  add(0, cs, 'header');
  const walkL1 = (l1Offset: number, l1Size: number, what: string): void => {
    add(l1Offset, l1Size * 8, `${what} L1 table`);
    const l1 = viewOf(file.subarray(l1Offset, l1Offset + l1Size * 8));
    for (let i = 0; i < l1Size; i++) {
      const l2 = l1L2Offset(l1.getUint32(i * 8), l1.getUint32(i * 8 + 4));
      if (l2 === 0) continue;
      add(l2, cs, `${what} L2 table ${i}`);
      const view = viewOf(file.subarray(l2, l2 + cs));
      for (let j = 0; j < cs / 8; j++) {
        const hi = view.getUint32(j * 8);
        const lo = view.getUint32(j * 8 + 4);
        const type = l2EntryType(hi, lo, false);
        if (type === L2_NORMAL || type === L2_ZERO_ALLOC) {
          add(l2HostOffset(hi, lo), cs, `${what} L2 ${i} entry ${j}`);
        } else if (type === L2_COMPRESSED) {
          const offset = compressedHostOffset(hi, lo, h.clusterBits);
          add(offset - (offset % 512), (compressedAdditionalSectors(hi, h.clusterBits) + 1) * 512, `${what} L2 ${i} compressed ${j}`);
        }
      }
    }
  };
  walkL1(h.l1TableOffset, h.l1Size, 'active');
  if (h.nbSnapshots > 0) {
    const snapshots = decodeSnapshotTable(file.subarray(h.snapshotsOffset), h.nbSnapshots, { clusterBits: h.clusterBits });
    let size = 0;
    for (const s of snapshots) {
      walkL1(s.l1TableOffset, s.l1Size, `snapshot ${s.id}`);
      size = alignUp(size, 8) + snapshotEntrySize(s);
    }
    add(h.snapshotsOffset, size, 'snapshot table');
  }
}
