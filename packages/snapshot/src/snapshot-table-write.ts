import {
  alignUp,
  encodeSnapshotEntry,
  hex,
  isQcow2Error,
  MAX_SNAPSHOTS,
  MAX_SNAPSHOTS_SIZE_BYTES,
  Qcow2Error,
  SNAPSHOT_HEADER_SIZE,
  snapshotExtraDataSize,
  unsupported,
} from '@qcow2/format';
import type { Refcounts } from '@qcow2/refcount';
import type { TableCache, WriteGuard } from '@qcow2/cache';
import type { Storage } from '@qcow2/storage';
import { entryForWrite, type StoredSnapshot } from './stored-snapshot.js';

/** Where the snapshot table lies: offset and qemu's snapshots_size (no padding after the last entry). */
export interface SnapshotTableLocation {
  offset: number;
  length: number;
}

/** Byte offset of nb_snapshots in the header; snapshots_offset follows it. */
export const HEADER_NB_SNAPSHOTS_AT = 60;

/**
 * The snapshot table as qemu's qcow2_write_snapshots lays it out: each entry as
 * {@link entryForWrite} makes it, at an 8-byte boundary, with its L1 table location written
 * back exactly as stored. `length` is qemu's snapshots_size (the last entry's padding not
 * counted). Refused (UNSUPPORTED, qemu's EFBIG) over 65536 entries or 64 MiB.
 */
export function encodeSnapshotTableForWrite(
  snapshots: readonly StoredSnapshot[],
  currentDiskSize: number,
): { bytes: Uint8Array; length: number } {
  if (snapshots.length > MAX_SNAPSHOTS) {
    throw unsupported(`snapshot table: ${snapshots.length} snapshots exceed qemu's limit of ${MAX_SNAPSHOTS} (File too large)`);
  }
  const parts: Uint8Array[] = [];
  let length = 0;
  for (const sn of snapshots) {
    const entry = entryForWrite({ ...sn.entry, l1TableOffset: 0, l1Size: 0 }, currentDiskSize);
    const bytes = encodeSnapshotEntry(entry);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    view.setUint32(0, sn.l1OffsetHi >>> 0);
    view.setUint32(4, sn.l1OffsetLo >>> 0);
    view.setUint32(8, sn.l1Size >>> 0);
    length = alignUp(length, 8);
    const unpadded = SNAPSHOT_HEADER_SIZE + snapshotExtraDataSize(entry) + view.getUint16(12) + view.getUint16(14);
    length += unpadded;
    if (length > MAX_SNAPSHOTS_SIZE_BYTES) {
      throw unsupported(`snapshot table: ${length} bytes exceed qemu's ${MAX_SNAPSHOTS_SIZE_BYTES}-byte limit (File too large)`);
    }
    parts.push(bytes);
  }
  const out = new Uint8Array(alignUp(length, 8));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return { bytes: out.subarray(0, length), length };
}

export interface SnapshotTableWriter {
  readonly storage: Storage;
  readonly refcounts: Refcounts;
  readonly l2Cache: TableCache;
  /** Names the image in messages. */
  readonly what: string;
  /** qemu's qcow2_pre_write_overlap_check before the new table is written (nothing ignored). */
  readonly writeGuard?: WriteGuard | undefined;
}

/**
 * Rewrites the snapshot table crash-safely (qemu's qcow2_write_snapshots): new clusters are
 * allocated and every cached table made durable, the new table written and flushed, then the
 * header's nb_snapshots and snapshots_offset are written together and flushed, and only then
 * the old table is freed (pass-discard-snapshot); `onSwitched` runs between the two (and when
 * the header write or its flush fails, since the file may then name either table). The new
 * table's write passes `writeGuard` first. On failure before the header changed, the new
 * clusters are freed again. An empty table is written as offset 0.
 */
export async function writeSnapshotTable(
  w: SnapshotTableWriter,
  snapshots: readonly StoredSnapshot[],
  old: SnapshotTableLocation,
  currentDiskSize: number,
  onSwitched?: (location: SnapshotTableLocation) => void,
): Promise<SnapshotTableLocation> {
  const { bytes, length } = encodeSnapshotTableForWrite(snapshots, currentDiskSize);
  const cs = w.refcounts.clusterSize;
  let offset = 0;
  let headerWritten = false;
  try {
    if (length > 0) offset = await w.refcounts.allocClusters(Math.ceil(length / cs));
    await w.l2Cache.writeBack();
    await w.refcounts.flush();
    if (length > 0) {
      const refused = w.writeGuard?.(offset, length);
      if (refused !== undefined) await refused;
      await io(() => w.storage.write(bytes, offset), `${w.what}: new snapshot table at ${hex(offset)}: write`);
    }
    await io(() => w.storage.flush(), `${w.what}: new snapshot table: flush`);
    const header = new Uint8Array(12);
    const view = new DataView(header.buffer);
    view.setUint32(0, snapshots.length);
    view.setUint32(4, Math.floor(offset / 0x1_0000_0000));
    view.setUint32(8, offset >>> 0);
    headerWritten = true;
    await io(() => w.storage.write(header, HEADER_NB_SNAPSHOTS_AT), `${w.what}: header nb_snapshots and snapshots_offset at 0x3c: write`);
    await io(() => w.storage.flush(), `${w.what}: header nb_snapshots and snapshots_offset: flush`);
  } catch (error) {
    if (!headerWritten) {
      if (offset > 0) await w.refcounts.free(offset, length, 'always').catch(() => undefined);
      throw error;
    }
    // The header write or its flush failed: the file may name the new table (a later flush, or
    // the storage itself, can still make it durable). The new table is complete and durable, so
    // it is taken as the table (the old one is kept, only leaked if the header did switch): an
    // undo of what the new table references could leave references above their refcounts.
    onSwitched?.({ offset, length });
    throw error;
  }
  // The header points at the new table: from here on that is the table (whatever happens while
  // the old one is freed), so the caller's view follows before any cluster is freed.
  const location = { offset, length };
  onSwitched?.(location);
  if (old.length > 0) await w.refcounts.free(old.offset, old.length, 'snapshot');
  return location;
}

async function io(fn: () => Promise<void>, what: string): Promise<void> {
  try {
    await fn();
  } catch (error) {
    if (isQcow2Error(error)) throw new Qcow2Error(error.code, `${what}: ${error.message}`, { cause: error });
    throw new Qcow2Error('IO', `${what}: ${String(error)}`, { cause: error });
  }
}
