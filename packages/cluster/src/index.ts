export { ClusterMap, createClusterMap, type ClusterMapOptions } from './cluster-map.js';
export { createL1Table, loadL1Table, type L1Table } from './l1-table.js';
export { copyRun, createRun, type MappingRun, type RunKind } from './mapping-run.js';
export { readFully } from './read-fully.js';
