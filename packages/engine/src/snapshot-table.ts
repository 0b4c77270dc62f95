import { readFully } from '@qcow2/cluster';
import {
  alignUp,
  corrupt,
  decodeSnapshotEntry,
  hex,
  MAX_SNAPSHOT_EXTRA_DATA,
  MAX_SNAPSHOTS,
  MAX_SNAPSHOTS_SIZE_BYTES,
  SNAPSHOT_HEADER_SIZE,
  unsupported,
} from '@qcow2/format';
import type { StoredSnapshot } from '@qcow2/snapshot';
import type { Storage } from '@qcow2/storage';

/** A snapshot table entry as read, with its L1 table location kept as stored (checked on use). */
export type { StoredSnapshot } from '@qcow2/snapshot';

/** Bytes read at a time while walking the table. */
const CHUNK = 64 * 1024;

/**
 * Reads the snapshot table as qemu's qcow2_read_snapshots does: `count` entries from
 * `offset`, each at an 8-byte boundary; extra data over 1024 bytes refused; the table refused
 * past 64 MiB; bytes past the end of the file read as zeros. Each entry's L1 table offset and
 * size are kept as stored and only checked when the snapshot is opened (as qemu checks them in
 * qcow2_snapshot_load_tmp), so that an image with one damaged snapshot entry still opens.
 * Memory grows with the table actually read, never with a size field before it is checked.
 * Returns the entries and the table's length in bytes.
 */
export async function readSnapshotTable(
  storage: Storage,
  offset: number,
  count: number,
): Promise<{ snapshots: StoredSnapshot[]; length: number }> {
  if (count > MAX_SNAPSHOTS) {
    throw corrupt(`snapshot table at ${hex(offset)}: ${count} snapshots exceed qemu's limit of ${MAX_SNAPSHOTS}`);
  }
  const out: StoredSnapshot[] = [];
  if (count === 0) return { snapshots: out, length: 0 };
  let buffer = new Uint8Array(0);
  let bufferStart = offset;
  /** Makes sure [at, at + length) of the file is in `buffer` and returns its index there. */
  const ensure = async (at: number, length: number): Promise<number> => {
    if (at >= bufferStart && at + length <= bufferStart + buffer.length) return at - bufferStart;
    const size = Math.max(length, CHUNK);
    buffer = new Uint8Array(size);
    bufferStart = at;
    await readFully(storage, buffer, at);
    return 0;
  };
  let at = offset;
  for (let i = 0; i < count; i++) {
    at = alignUp(at, 8);
    let p = await ensure(at, SNAPSHOT_HEADER_SIZE);
    const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    const extra = view.getUint32(p + 36);
    if (extra > MAX_SNAPSHOT_EXTRA_DATA) {
      throw unsupported(
        `snapshot table entry ${i} at ${hex(at)}: extra_data_size ${extra} exceeds qemu's limit of ${MAX_SNAPSHOT_EXTRA_DATA} bytes (too much extra metadata)`,
      );
    }
    const length = SNAPSHOT_HEADER_SIZE + extra + view.getUint16(p + 12) + view.getUint16(p + 14);
    if (at + length - offset > MAX_SNAPSHOTS_SIZE_BYTES) {
      throw corrupt(`snapshot table at ${hex(offset)}: entries up to ${i} exceed qemu's ${MAX_SNAPSHOTS_SIZE_BYTES}-byte limit (snapshot table is too big)`);
    }
    p = await ensure(at, length);
    const raw = new DataView(buffer.buffer, buffer.byteOffset + p, length);
    const l1OffsetHi = raw.getUint32(0);
    const l1OffsetLo = raw.getUint32(4);
    const l1Size = raw.getUint32(8);
    // Decode a copy whose L1 fields are zeroed: their checks belong to opening the snapshot.
    const copy = buffer.slice(p, p + length);
    copy.fill(0, 0, 12);
    // The 64-bit VM state and disk sizes are information only: qemu opens an image whatever
    // they hold, so values of 2^53 and more are kept rounded instead of refused.
    const large: (number | undefined)[] = [];
    for (const [index, field] of [[0, 40], [1, 48]] as const) {
      if (extra >= field - 40 + 8 && raw.getUint32(field) > 0x1f_ffff) {
        large[index] = Number(raw.getBigUint64(field));
        copy.fill(0, field, field + 8);
      }
    }
    const { entry } = decodeSnapshotEntry(copy, 0, { tableOffset: at });
    if (large[0] !== undefined) entry.vmStateSizeLarge = large[0];
    if (large[1] !== undefined) entry.diskSize = large[1];
    out.push({ entry, l1OffsetHi, l1OffsetLo, l1Size });
    at += length;
  }
  return { snapshots: out, length: at - offset };
}
