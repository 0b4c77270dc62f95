import {
  corrupt,
  hex,
  L1_ENTRY_SIZE,
  MAX_L1_ENTRIES,
  MAX_L1_SIZE_BYTES,
  SNAPSHOT_NO_ICOUNT,
  snapshotVmStateSize,
  type SnapshotEntry,
} from '@qcow2/format';

/**
 * A snapshot table entry as read (qemu's QCowSnapshot): the decoded entry, and its L1 table
 * location as stored (the high and low 32 bits of l1_table_offset, and l1_size), which is only
 * checked when the snapshot is used, as qemu checks it.
 */
export interface StoredSnapshot {
  /** The entry; its l1TableOffset and l1Size are not used (see the raw fields). */
  entry: SnapshotEntry;
  l1OffsetHi: number;
  l1OffsetLo: number;
  l1Size: number;
}

const TWO_POW_32 = 0x1_0000_0000;

/** A StoredSnapshot for an entry whose L1 location is known to be valid. */
export function storedSnapshot(entry: SnapshotEntry): StoredSnapshot {
  return {
    entry,
    l1OffsetHi: Math.floor(entry.l1TableOffset / TWO_POW_32),
    l1OffsetLo: entry.l1TableOffset >>> 0,
    l1Size: entry.l1Size,
  };
}

/**
 * The snapshot's L1 table offset, checked as qemu's qcow2_validate_table checks a snapshot L1
 * table before it is used ("Snapshot L1 table"): at most 32 MiB, cluster-aligned, and (here)
 * within 2^53.
 */
export function snapshotL1Offset(sn: StoredSnapshot, clusterSize: number, what: string): number {
  const where = `${what}: snapshot ${JSON.stringify(sn.entry.id)} L1 table`;
  if (sn.l1Size > MAX_L1_ENTRIES) {
    throw corrupt(`${where}: l1_size ${sn.l1Size} exceeds qemu's ${MAX_L1_SIZE_BYTES}-byte limit (Snapshot L1 table too large)`);
  }
  if (sn.l1OffsetHi > 0x1f_ffff) {
    throw corrupt(
      `${where}: offset 0x${sn.l1OffsetHi.toString(16)}${sn.l1OffsetLo.toString(16).padStart(8, '0')} is invalid (exceeds 2^53)`,
    );
  }
  const offset = sn.l1OffsetHi * TWO_POW_32 + sn.l1OffsetLo;
  if (offset % clusterSize !== 0 || offset + sn.l1Size * L1_ENTRY_SIZE > Number.MAX_SAFE_INTEGER) {
    throw corrupt(`${where}: offset ${hex(offset)} is invalid (Snapshot L1 table offset invalid)`);
  }
  return offset;
}

/**
 * The entry as qemu's qcow2_write_snapshots writes it back: the 32-bit vm_state_size field set
 * when the size fits (0 otherwise), then at least the 24 bytes of known extra data — the 64-bit
 * VM state size, the disk size (`currentDiskSize` when the entry had none, as qemu reads it),
 * icount (none: 2^64 − 1) — then the unknown extra data after them, byte for byte. Extra data
 * shorter than 24 bytes carries no unknown bytes (qemu drops a partial field).
 */
export function entryForWrite(entry: SnapshotEntry, currentDiskSize: number): SnapshotEntry {
  const vmState = snapshotVmStateSize(entry);
  const out: SnapshotEntry = {
    ...entry,
    vmStateSize: vmState <= 0xffff_ffff ? vmState : 0,
    vmStateSizeLarge: vmState,
    diskSize: entry.diskSize ?? currentDiskSize,
    icount: entry.icount ?? SNAPSHOT_NO_ICOUNT,
    unknownExtraData: entry.icount === undefined ? new Uint8Array(0) : entry.unknownExtraData,
  };
  return out;
}
