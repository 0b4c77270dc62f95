export { ClusterMap, createClusterMap, type ClusterMapOptions } from './cluster-map.js';
export { createL1Table, loadL1Table, type L1Table } from './l1-table.js';
export { ActiveL1Table } from './active-l1.js';
export { copyRun, createRun, type MappingRun, type RunKind } from './mapping-run.js';
export { readFully } from './read-fully.js';
export {
  ClusterWriter,
  createClusterWriter,
  type ClusterCompressor,
  type ClusterWriterOptions,
  type GuestView,
} from './cluster-writer.js';
export { cowBounds, subclusterRange, writtenBitmap, type CowBounds, type CowGeometry, type EntryWords } from './cow.js';
export { RangeLock, type RangeHandle } from './range-lock.js';
export { Mutex } from './mutex.js';
