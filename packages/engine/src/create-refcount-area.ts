import {
  getRefcount,
  hex,
  MAX_REFTABLE_SIZE_BYTES,
  Qcow2Error,
  REFCOUNT_TABLE_ENTRY_SIZE,
  refcountBlockEntries,
  setRefcount,
  viewOf,
} from '@qcow2/format';
import { refcountMetadataSize } from '@qcow2/refcount';
import type { Storage } from '@qcow2/storage';

const TWO_POW_32 = 0x1_0000_0000;

export interface RefcountAreaInput {
  readonly storage: Storage;
  readonly clusterBits: number;
  readonly refcountOrder: number;
  /** The current refcount table (written and flushed: nothing of it is cached elsewhere). */
  readonly tableOffset: number;
  readonly tableClusters: number;
  /** Cluster-aligned offset past everything in use: where the new structures start. */
  readonly startOffset: number;
  /** Clusters after the new structures that the new blocks must be able to count. */
  readonly additionalClusters: number;
}

export interface RefcountArea {
  readonly tableOffset: number;
  readonly tableClusters: number;
  /** The first byte after the new structures. */
  readonly endOffset: number;
}

async function readFully(storage: Storage, bytes: Uint8Array, offset: number): Promise<void> {
  const n = await storage.read(bytes, offset);
  if (n < bytes.length) bytes.fill(0, Math.max(0, n));
}

/**
 * qemu's qcow2_refcount_area with exact_size, as qcow2_co_truncate uses it for falloc/full
 * preallocation: from `startOffset`, new refcount blocks for every table index from the one
 * covering `startOffset` on that has none, then a new table exactly large enough (in whole
 * clusters) for the blocks that cover the area and `additionalClusters` after it; the new
 * structures get refcount 1. Blocks are written first, then the table. The caller points the
 * header at the new table and frees the old one.
 */
export async function writeRefcountArea(input: RefcountAreaInput): Promise<RefcountArea> {
  const { storage, clusterBits, refcountOrder, startOffset } = input;
  const cs = 2 ** clusterBits;
  const perBlock = refcountBlockEntries(clusterBits, refcountOrder);
  const total = refcountMetadataSize(startOffset / cs + input.additionalClusters, clusterBits, refcountOrder, false).blocks;
  const perTableCluster = cs / REFCOUNT_TABLE_ENTRY_SIZE;
  const tableSize = Math.ceil(total / perTableCluster) * perTableCluster;
  if (tableSize * REFCOUNT_TABLE_ENTRY_SIZE > MAX_REFTABLE_SIZE_BYTES) {
    throw new Qcow2Error('UNSUPPORTED', "The image size is too large for file format 'qcow2' (try using a larger cluster size)");
  }
  const tableClusters = (tableSize * REFCOUNT_TABLE_ENTRY_SIZE) / cs;

  const old = new Uint8Array(input.tableClusters * cs);
  await readFully(storage, old, input.tableOffset);
  const oldView = viewOf(old);
  const oldEntries = old.length / REFCOUNT_TABLE_ENTRY_SIZE;
  let maxIndex = -1;
  for (let i = 0; i < oldEntries; i++) {
    if (oldView.getUint32(i * 8) !== 0 || oldView.getUint32(i * 8 + 4) !== 0) maxIndex = i;
  }
  const table = new Uint8Array(tableSize * REFCOUNT_TABLE_ENTRY_SIZE);
  table.set(old.subarray(0, Math.min(tableSize, maxIndex + 1) * REFCOUNT_TABLE_ENTRY_SIZE));
  const view = viewOf(table);
  /** Table entry i as an offset (reserved low bits masked, as qemu reads them). */
  const entryAt = (i: number): number => view.getUint32(i * 8) * TWO_POW_32 + ((view.getUint32(i * 8 + 4) & ~0x1ff) >>> 0);

  const areaIndex = Math.floor(startOffset / cs / perBlock);
  let missing = 0;
  for (let i = areaIndex; i < total; i++) if (entryAt(i) === 0) missing++;
  const tableOffset = startOffset + missing * cs;
  const endOffset = tableOffset + tableClusters * cs;

  let blockOffset = startOffset;
  const block = new Uint8Array(cs);
  for (let i = areaIndex; i < total; i++) {
    let at = entryAt(i);
    let dirty = false;
    if (at !== 0) {
      await readFully(storage, block, at);
    } else {
      block.fill(0);
      at = blockOffset;
      view.setUint32(i * 8, Math.floor(at / TWO_POW_32));
      view.setUint32(i * 8 + 4, at >>> 0);
      blockOffset += cs;
      dirty = true;
    }
    const firstCovered = i * perBlock * cs;
    if (firstCovered < endOffset) {
      let j = firstCovered < startOffset ? (startOffset - firstCovered) / cs : 0;
      const end = Math.min((endOffset - firstCovered) / cs, perBlock);
      for (; j < end; j++) {
        if (getRefcount(block, j, refcountOrder) !== 0) {
          throw new Qcow2Error('CORRUPT', `refcount area at ${hex(startOffset)}: cluster ${i * perBlock + j} is already in use`);
        }
        setRefcount(block, j, refcountOrder, 1);
      }
      dirty = true;
    }
    if (dirty) await storage.write(block, at);
  }
  await storage.write(table, tableOffset);
  return { tableOffset, tableClusters, endOffset };
}
