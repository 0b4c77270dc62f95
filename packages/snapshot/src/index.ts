export { InternalSnapshots, type CreateSnapshotOptions, type InternalSnapshotsOptions, type SnapshotTableState } from './internal-snapshots.js';
export { findSnapshotByIdAndName, findSnapshotByIdOrName, findSnapshotByName, nextSnapshotId, strtoul } from './snapshot-lookup.js';
export { updateSnapshotRefcount, type RefcountWalkContext, type WalkedL1 } from './snapshot-refcount.js';
export {
  encodeSnapshotTableForWrite,
  HEADER_NB_SNAPSHOTS_AT,
  writeSnapshotTable,
  type SnapshotTableLocation,
  type SnapshotTableWriter,
} from './snapshot-table-write.js';
export { entryForWrite, snapshotL1Offset, storedSnapshot, type StoredSnapshot } from './stored-snapshot.js';
