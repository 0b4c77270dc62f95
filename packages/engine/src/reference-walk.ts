import { readFully } from '@qcow2/cluster';
import {
  compressedByteLength,
  compressedHostOffset,
  corrupt,
  decodeBitmapDirectory,
  decodeBitmapTableEntry,
  hex,
  L2_COMPRESSED,
  L2_NORMAL,
  L2_ZERO_ALLOC,
  l2EntryType,
  MAX_BITMAP_TABLE_SIZE,
  MAX_L1_ENTRIES,
  viewOf,
} from '@qcow2/format';
import type { AddReference } from '@qcow2/refcount';
import type { Storage } from '@qcow2/storage';

/** Where the tables of an image are: what the reference walk reads. */
export interface ImageLayout {
  readonly clusterBits: number;
  readonly refcountOrder: number;
  readonly extendedL2: boolean;
  /** Data clusters live in an external data file: they hold no refcounts in the image. */
  readonly externalDataFile: boolean;
  readonly l1Offset: number;
  readonly l1Size: number;
  /** Each snapshot's L1 table. */
  readonly snapshots: readonly { readonly l1Offset: number; readonly l1Size: number }[];
  /** The snapshot table as read (0 bytes when there is none). */
  readonly snapshotTable: { readonly offset: number; readonly length: number };
  /** The bitmap directory, when the bitmaps extension is in force (autoclear bit 0). */
  readonly bitmapDirectory?: { readonly offset: number; readonly size: number; readonly count: number };
}

const TWO_POW_32 = 0x1_0000_0000;

/**
 * Calls `add` for every reference qemu's check counts (calculate_refcounts), reading the tables
 * from `storage`: the header cluster; the active L1 table and each snapshot's; every L2 table
 * once per L1 entry pointing at it; each data cluster (normal and preallocated zero entries,
 * unless the data lives in an external data file) and the sectors of each compressed cluster;
 * the snapshot table; the bitmap directory, tables and data clusters. The refcount structure
 * is not walked (pass the Refcounts to computeExpectedRefcounts for that). Entries past 2^53
 * or misaligned are CORRUPT.
 */
export async function walkReferences(storage: Storage, layout: ImageLayout, add: AddReference): Promise<void> {
  const cs = 2 ** layout.clusterBits;
  add(0, cs, 'header');
  await walkL1(storage, layout, layout.l1Offset, layout.l1Size, 'active', add);
  for (const [i, s] of layout.snapshots.entries()) await walkL1(storage, layout, s.l1Offset, s.l1Size, `snapshot ${i}`, add);
  if (layout.snapshotTable.length > 0) add(layout.snapshotTable.offset, layout.snapshotTable.length, 'snapshot table');
  const dir = layout.bitmapDirectory;
  if (dir !== undefined && dir.size > 0) {
    add(dir.offset, dir.size, 'bitmap directory');
    const bytes = new Uint8Array(dir.size);
    await readFully(storage, bytes, dir.offset);
    const entries = decodeBitmapDirectory(bytes, dir.count, { clusterBits: layout.clusterBits, tableOffset: dir.offset });
    for (const e of entries) {
      if (e.bitmapTableSize > MAX_BITMAP_TABLE_SIZE) throw corrupt(`bitmap ${JSON.stringify(e.name)}: table of ${e.bitmapTableSize} entries is too large`);
      add(e.bitmapTableOffset, e.bitmapTableSize * 8, `bitmap ${JSON.stringify(e.name)} table`);
      const table = new Uint8Array(e.bitmapTableSize * 8);
      await readFully(storage, table, e.bitmapTableOffset);
      const view = viewOf(table);
      for (let j = 0; j < e.bitmapTableSize; j++) {
        const entry = decodeBitmapTableEntry(view, j, { clusterBits: layout.clusterBits, tableOffset: e.bitmapTableOffset });
        if (entry.kind === 'data') add(entry.offset, cs, `bitmap ${JSON.stringify(e.name)} data`);
      }
    }
  }
}

async function walkL1(storage: Storage, layout: ImageLayout, offset: number, size: number, what: string, add: AddReference): Promise<void> {
  if (size > MAX_L1_ENTRIES) throw corrupt(`${what} L1 table at ${hex(offset)}: ${size} entries are too many`);
  const cs = 2 ** layout.clusterBits;
  add(offset, size * 8, `${what} L1 table`);
  if (size === 0) return;
  const l1 = new Uint8Array(size * 8);
  await readFully(storage, l1, offset);
  const l1View = viewOf(l1);
  const l2 = new Uint8Array(cs);
  const l2View = viewOf(l2);
  const entrySize = layout.extendedL2 ? 16 : 8;
  for (let i = 0; i < size; i++) {
    const hi = l1View.getUint32(i * 8);
    const lo = l1View.getUint32(i * 8 + 4);
    if ((hi & 0x00ff_ffff) === 0 && (lo & 0xffff_fe00) === 0) continue;
    if ((hi & 0x00e0_0000) !== 0) throw corrupt(`${what} L1 entry ${i}: L2 table offset exceeds 2^53`);
    const l2Offset = (hi & 0x00ff_ffff) * TWO_POW_32 + ((lo & 0xffff_fe00) >>> 0);
    if (l2Offset % cs !== 0) throw corrupt(`${what} L1 entry ${i}: L2 table offset ${hex(l2Offset)} is not cluster-aligned`);
    add(l2Offset, cs, `${what} L2 table ${i}`);
    await readFully(storage, l2, l2Offset);
    for (let j = 0; j < cs / entrySize; j++) {
      const ehi = l2View.getUint32(j * entrySize);
      const elo = l2View.getUint32(j * entrySize + 4);
      const type = l2EntryType(ehi, elo, layout.extendedL2, layout.externalDataFile);
      if (type === L2_COMPRESSED) {
        if (layout.externalDataFile) continue;
        add(compressedHostOffset(ehi, elo, layout.clusterBits), compressedByteLength(ehi, elo, layout.clusterBits), `${what} L2 ${i} compressed ${j}`);
      } else if ((type === L2_NORMAL || type === L2_ZERO_ALLOC) && !layout.externalDataFile) {
        if ((ehi & 0x00e0_0000) !== 0) throw corrupt(`L2 entry at ${hex(l2Offset)} index ${j}: host offset exceeds 2^53`);
        const host = (ehi & 0x00ff_ffff) * TWO_POW_32 + ((elo & 0xffff_fe00) >>> 0);
        add(host, cs, `L2 entry at ${hex(l2Offset)} index ${j}`);
      }
    }
  }
}
