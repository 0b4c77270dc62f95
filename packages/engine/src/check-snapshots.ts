import { decodeString, isQcow2Error, MAX_SNAPSHOT_EXTRA_DATA, MAX_SNAPSHOTS, MAX_SNAPSHOTS_SIZE_BYTES, SNAPSHOT_HEADER_SIZE, viewOf } from '@qcow2/format';
import type { Refcounts } from '@qcow2/refcount';
import { addOffset, EFBIG_TEXT, EINVAL_TEXT, EIO_TEXT, u64, type HostOffset } from './check-bits.js';
import { CheckAbort, abortFrom, strerrorOf, type CheckCounters, type CheckImage, type CheckMessage, type CheckSnapshot } from './check-state.js';

/** Bytes of the extra data qemu 7.2 knows (vm_state_size_large, disk_size, icount). */
const KNOWN_EXTRA = 24;
const INT64_MAX = 0x7fff_ffff_ffff_ffffn;
const INT_MAX = 0x7fff_ffff;

/** Reads the table through a window, so that an entry costs no read of its own. */
class WindowReader {
  #buffer = new Uint8Array(0);
  #start = 0;
  readonly #image: CheckImage;
  readonly #base: HostOffset;
  constructor(image: CheckImage, base: HostOffset) {
    this.#image = image;
    this.#base = base;
  }

  /** `length` bytes at `offset` from the start of the table. */
  async bytes(offset: number, length: number): Promise<Uint8Array> {
    if (offset >= this.#start && offset + length <= this.#start + this.#buffer.length) {
      return this.#buffer.subarray(offset - this.#start, offset - this.#start + length);
    }
    this.#buffer = new Uint8Array(Math.max(length, 64 * 1024));
    this.#start = offset;
    await this.#image.read(this.#buffer, addOffset(this.#base, offset));
    return this.#buffer.subarray(0, length);
  }
}

function round8(value: number): number {
  return Math.ceil(value / 8) * 8;
}

/**
 * qemu's qcow2_check_read_snapshot_table: reads the snapshot table as the check sees it, into
 * `image.snapshots` (and its offset and size). With `fixErrors`, more than 65536 snapshots, too
 * much extra data and a table above 64 MiB are cut (the snapshot count written to the header at
 * once). Adds to `res`; throws CheckAbort when the table cannot be read at all.
 */
export async function readSnapshotTableForCheck(
  image: CheckImage,
  res: CheckCounters,
  fixErrors: boolean,
  emit: (m: CheckMessage) => void,
): Promise<void> {
  const pointer = new Uint8Array(12);
  try {
    await image.read(pointer, 60);
  } catch (error) {
    res.checkErrors++;
    emit({ text: `ERROR failed to read the snapshot table pointer from the image header: ${strerrorOf(error)}`, report: false });
    throw abortFrom(error);
  }
  const pv = viewOf(pointer);
  let nb = pv.getUint32(0);
  const offsetHi = pv.getUint32(4);
  const offsetLo = pv.getUint32(8);
  image.snapshots = [];
  image.snapshotsSize = 0;
  image.snapshotsOffset = 0;
  let reduced = 0;
  let dropped = 0;

  if (nb > MAX_SNAPSHOTS && fixErrors) {
    emit({ text: `Discarding ${nb - MAX_SNAPSHOTS} overhanging snapshots`, report: false });
    reduced += nb - MAX_SNAPSHOTS;
    nb = MAX_SNAPSHOTS;
  }

  // qcow2_validate_table(offset, nb, 40, 40 * 65536, "snapshot table")
  let invalid: { message: string; reason: string } | undefined;
  const bigOffset = (BigInt(offsetHi) << 32n) | BigInt(offsetLo);
  if (nb > MAX_SNAPSHOTS) {
    invalid = { message: 'snapshot table too large', reason: EFBIG_TEXT };
  } else if (INT64_MAX - BigInt(nb * SNAPSHOT_HEADER_SIZE) < bigOffset || bigOffset % BigInt(image.clusterSize) !== 0n) {
    invalid = { message: 'snapshot table offset invalid', reason: EINVAL_TEXT };
  }
  if (invalid !== undefined) {
    res.checkErrors++;
    emit({ text: `ERROR ${invalid.message}`, report: true });
    if (nb > MAX_SNAPSHOTS) {
      emit({ text: `You can force-remove all ${nb - MAX_SNAPSHOTS} overhanging snapshots with qemu-img check -r all`, report: false });
    }
    throw new CheckAbort(invalid.reason);
  }
  if (nb === 0) return;
  const tableOffset = u64(offsetHi, offsetLo);

  const failRead = (message: string, hint: string | undefined, reason: string): never => {
    res.checkErrors++;
    emit({ text: `ERROR failed to read the snapshot table: ${message}`, report: true });
    if (hint !== undefined) emit({ text: hint, report: false });
    throw new CheckAbort(reason);
  };

  const reader = new WindowReader(image, tableOffset);
  const snapshots: CheckSnapshot[] = [];
  // Relative to the table (which is cluster-aligned, so rounding to 8 is the same).
  let offset = 0;
  let tableLength = 0;
  try {
    for (let i = 0; i < nb; i++) {
      const preOffset = offset;
      tableLength = round8(tableLength);
      offset = round8(offset);
      const h = viewOf(await reader.bytes(offset, SNAPSHOT_HEADER_SIZE));
      offset += SNAPSHOT_HEADER_SIZE;
      const l1OffsetHi = h.getUint32(0);
      const l1OffsetLo = h.getUint32(4);
      const l1Size = h.getUint32(8);
      const idSize = h.getUint16(12);
      const nameSize = h.getUint16(14);
      const dateSec = h.getUint32(16);
      const dateNsec = h.getUint32(20);
      const vmClockHi = h.getUint32(24);
      const vmClockLo = h.getUint32(28);
      const vmState32 = h.getUint32(32);
      let extraDataSize = h.getUint32(36);
      let truncate = false;
      if (extraDataSize > MAX_SNAPSHOT_EXTRA_DATA) {
        if (!fixErrors) {
          failRead(`Too much extra metadata in snapshot table entry ${i}`, 'You can force-remove this extra metadata with qemu-img check -r all', EFBIG_TEXT);
        }
        emit({ text: `Discarding too much extra metadata in snapshot table entry ${i} (${extraDataSize} > ${MAX_SNAPSHOT_EXTRA_DATA})`, report: false });
        dropped++;
        truncate = true;
      }
      const knownLength = Math.min(KNOWN_EXTRA, extraDataSize);
      const stored = await reader.bytes(offset, knownLength);
      offset += knownLength;
      const extra = new Uint8Array(KNOWN_EXTRA);
      extra.set(stored);
      const ev = viewOf(extra);
      if (extraDataSize < 8) ev.setUint32(4, vmState32);
      if (extraDataSize < 16) {
        ev.setUint32(8, Math.floor(image.virtualSize / 0x1_0000_0000));
        ev.setUint32(12, image.virtualSize >>> 0);
      }
      if (extraDataSize < 24) extra.fill(0xff, 16, 24);
      let unknownExtra = new Uint8Array(0);
      if (extraDataSize > KNOWN_EXTRA) {
        const extraEnd = offset + extraDataSize - KNOWN_EXTRA;
        if (truncate) extraDataSize = MAX_SNAPSHOT_EXTRA_DATA;
        unknownExtra = (await reader.bytes(offset, extraDataSize - KNOWN_EXTRA)).slice();
        offset = extraEnd;
      }
      const idBytes = (await reader.bytes(offset, idSize)).slice();
      offset += idSize;
      const nameBytes = (await reader.bytes(offset, nameSize)).slice();
      offset += nameSize;
      tableLength += SNAPSHOT_HEADER_SIZE + extraDataSize + idSize + nameSize;
      if (tableLength > MAX_SNAPSHOTS_SIZE_BYTES || offset > INT_MAX) {
        if (!fixErrors) {
          failRead('Snapshot table is too big', `You can force-remove all ${nb - i} overhanging snapshots with qemu-img check -r all`, EFBIG_TEXT);
        }
        emit({ text: `Discarding ${nb - i} overhanging snapshots (snapshot table is too big)`, report: false });
        reduced += nb - i;
        offset = preOffset;
        break;
      }
      snapshots.push({
        l1OffsetHi,
        l1OffsetLo,
        l1Size,
        vmStateSize: vmState32,
        dateSec,
        dateNsec,
        vmClockHi,
        vmClockLo,
        extraDataSize,
        extra,
        unknownExtra,
        idBytes,
        nameBytes,
      });
    }
  } catch (error) {
    if (error instanceof CheckAbort && res.checkErrors > 0) throw error;
    failRead(`Failed to read snapshot table: ${strerrorOf(error)}`, undefined, strerrorOf(error));
  }
  image.snapshots = snapshots;
  image.snapshotsOffset = tableOffset;
  image.snapshotsSize = offset;

  res.corruptions += reduced + dropped;
  if (reduced > 0) {
    const count = new Uint8Array(4);
    viewOf(count).setUint32(0, snapshots.length);
    try {
      await image.write(count, 60, true);
    } catch (error) {
      res.checkErrors++;
      emit({ text: `ERROR failed to update the snapshot count in the image header: ${strerrorOf(error)}`, report: false });
      throw abortFrom(error);
    }
    res.corruptionsFixed += reduced;
    res.corruptions -= reduced;
  }
  if (image.header.version >= 3) {
    for (const [i, sn] of snapshots.entries()) {
      if (sn.extraDataSize < 16) {
        res.corruptions++;
        emit({ text: `${fixErrors ? 'Repairing' : 'ERROR'} snapshot table entry ${i} is incomplete`, report: false });
      }
    }
  }
}

/** C string: the bytes up to the first NUL. */
function cString(bytes: Uint8Array): Uint8Array {
  const nul = bytes.indexOf(0);
  return nul < 0 ? bytes : bytes.subarray(0, nul);
}

/** The text qemu prints for a C string field. */
export function cStringText(bytes: Uint8Array): string {
  return decodeString(cString(bytes));
}

/**
 * qemu's qcow2_check_fix_snapshot_table: with `fixErrors` and corruptions in the snapshot part
 * of the check, the table is written anew (qcow2_write_snapshots) and they count as fixed.
 */
export async function fixSnapshotTable(
  image: CheckImage,
  refcounts: Refcounts | undefined,
  res: CheckCounters,
  fixErrors: boolean,
  emit: (m: CheckMessage) => void,
): Promise<void> {
  if (res.corruptions === 0 || !fixErrors) return;
  try {
    await writeSnapshots(image, refcounts, emit);
  } catch (error) {
    res.checkErrors++;
    emit({ text: `ERROR failed to update snapshot table: ${strerrorOf(error)}`, report: false });
    throw abortFrom(error);
  }
  res.corruptionsFixed += res.corruptions;
  res.corruptions = 0;
}

/** qemu's qcow2_write_snapshots: the table in new clusters, then the header, then the old table freed. */
async function writeSnapshots(image: CheckImage, refcounts: Refcounts | undefined, emit: (m: CheckMessage) => void): Promise<void> {
  if (refcounts === undefined) throw new CheckAbort('Input/output error');
  let size = 0;
  for (const sn of image.snapshots) {
    size = round8(size) + SNAPSHOT_HEADER_SIZE + Math.max(KNOWN_EXTRA, sn.extraDataSize);
    size += cString(sn.idBytes).length + cString(sn.nameBytes).length;
    if (size > MAX_SNAPSHOTS_SIZE_BYTES) throw new CheckAbort(EFBIG_TEXT);
  }
  const cs = image.clusterSize;
  const clusters = Math.ceil(size / cs);
  let tableOffset: number;
  try {
    tableOffset = clusters > 0 ? await refcounts.allocClusters(clusters) : refcounts.freeClusterIndex * cs;
    await refcounts.flush();
  } catch (error) {
    throw abortFrom(error);
  }
  try {
    await image.preWriteOverlapCheck(emit, tableOffset, size, []);
    const bytes = new Uint8Array(size);
    const view = viewOf(bytes);
    let at = 0;
    for (const sn of image.snapshots) {
      at = round8(at);
      const id = cString(sn.idBytes);
      const name = cString(sn.nameBytes);
      const ev = viewOf(sn.extra);
      const vmStateHi = ev.getUint32(0);
      const vmStateLo = ev.getUint32(4);
      view.setUint32(at, sn.l1OffsetHi);
      view.setUint32(at + 4, sn.l1OffsetLo);
      view.setUint32(at + 8, sn.l1Size);
      view.setUint16(at + 12, id.length);
      view.setUint16(at + 14, name.length);
      view.setUint32(at + 16, sn.dateSec);
      view.setUint32(at + 20, sn.dateNsec);
      view.setUint32(at + 24, sn.vmClockHi);
      view.setUint32(at + 28, sn.vmClockLo);
      view.setUint32(at + 32, vmStateHi === 0 ? vmStateLo : 0);
      view.setUint32(at + 36, Math.max(KNOWN_EXTRA, sn.extraDataSize));
      at += SNAPSHOT_HEADER_SIZE;
      bytes.set(sn.extra, at);
      at += KNOWN_EXTRA;
      if (sn.extraDataSize > KNOWN_EXTRA) {
        bytes.set(sn.unknownExtra, at);
        at += sn.unknownExtra.length;
      }
      bytes.set(id, at);
      at += id.length;
      bytes.set(name, at);
      at += name.length;
    }
    if (size > 0) await image.write(bytes, tableOffset, false);
    await image.storage.flush();
    const pointer = new Uint8Array(12);
    const pv = viewOf(pointer);
    pv.setUint32(0, image.snapshots.length);
    pv.setUint32(4, Math.floor(tableOffset / 0x1_0000_0000));
    pv.setUint32(8, tableOffset >>> 0);
    await image.write(pointer, 60, true);
  } catch (error) {
    if (clusters > 0) await freeClusters(refcounts, tableOffset, size, 'always', emit);
    throw abortFrom(error);
  }
  const oldOffset = image.snapshotsOffset;
  const oldSize = image.snapshotsSize;
  image.snapshotsOffset = tableOffset;
  image.snapshotsSize = size;
  if (oldSize > 0 && typeof oldOffset === 'number') await freeClusters(refcounts, oldOffset, oldSize, 'snapshot', emit);
}

/** qemu's qcow2_free_clusters: a failure is printed, not returned (a refcount below 0 is EINVAL). */
async function freeClusters(
  refcounts: Refcounts,
  offset: number,
  size: number,
  type: 'snapshot' | 'always',
  emit: (m: CheckMessage) => void,
): Promise<void> {
  try {
    await refcounts.free(offset, size, type);
  } catch (error) {
    const reason = isQcow2Error(error) && error.code === 'CORRUPT' ? await whyFreeFails(refcounts, offset, size) : strerrorOf(error);
    emit({ text: `qcow2_free_clusters failed: ${reason}`, report: false });
  }
}

/**
 * qemu's update_refcount walks the range in order: a cluster without a refcount block fails it
 * with EAGAIN (after allocating the block), a refcount already 0 with EINVAL.
 */
async function whyFreeFails(refcounts: Refcounts, offset: number, size: number): Promise<string> {
  const cs = refcounts.clusterSize;
  for (let c = Math.floor(offset / cs); c * cs < offset + size; c++) {
    try {
      if (refcounts.blockOffset(Math.floor(c / refcounts.blockEntries)) === 0) return 'Resource temporarily unavailable';
      if ((await refcounts.get(c)) === 0) return EINVAL_TEXT;
    } catch {
      return EIO_TEXT;
    }
  }
  return EINVAL_TEXT;
}
