import { entryForWrite, InternalSnapshots, type SnapshotTableState, type StoredSnapshot } from '@qcow2/snapshot';
import { snapshotVmStateSize, SNAPSHOT_NO_ICOUNT } from '@qcow2/format';
import type { CreateSnapshotOptions, SnapshotInfo } from './types.js';

/** Internal snapshot operations of a writable qcow2 image, run by Qcow2Image one at a time. */
export interface SnapshotOps {
  create(name: string, options?: CreateSnapshotOptions): Promise<SnapshotInfo>;
  apply(idOrName: string): Promise<void>;
  delete(idOrName: string): Promise<void>;
}

/** qemu-img info's view of a snapshot table entry (disk size: the image's when the entry has none). */
export function snapshotInfo(s: StoredSnapshot, virtualSize: number): SnapshotInfo {
  const e = s.entry;
  const info: SnapshotInfo = {
    id: e.id,
    name: e.name,
    vmStateSize: snapshotVmStateSize(e),
    dateSec: e.dateSec,
    dateNsec: e.dateNsec,
    vmClockNsec: Number(e.vmClockNsec),
    diskSize: e.diskSize ?? virtualSize,
  };
  if (e.icount !== undefined && e.icount !== SNAPSHOT_NO_ICOUNT) info.icount = Number(e.icount);
  return info;
}

/**
 * Wires {@link InternalSnapshots} to an image: after each operation the snapshot list the image
 * shows is refreshed (`publish`), with entries as they were written back (qemu fills in the
 * disk size and icount of older entries when it rewrites the table).
 */
export function createSnapshotOps(
  snapshots: InternalSnapshots,
  state: SnapshotTableState,
  publish: (list: readonly SnapshotInfo[]) => void | Promise<void>,
): SnapshotOps {
  const refresh = async (rewritten: boolean): Promise<void> => {
    if (rewritten) {
      state.snapshots = state.snapshots.map((s) => ({ ...s, entry: entryForWrite(s.entry, state.virtualSize) }));
    }
    await publish(state.snapshots.map((s) => snapshotInfo(s, state.virtualSize)));
  };
  return {
    async create(name, options) {
      let sn;
      try {
        sn = await snapshots.create(name, options ?? {});
      } finally {
        await refresh(true);
      }
      return snapshotInfo(sn, state.virtualSize);
    },
    async apply(idOrName) {
      try {
        await snapshots.apply(idOrName);
      } finally {
        await refresh(false);
      }
    },
    async delete(idOrName) {
      try {
        await snapshots.delete(idOrName);
      } finally {
        await refresh(true);
      }
    },
  };
}
