export type { Storage, StorageResolver } from './storage.js';
export { createMemoryStorage, type MemoryStorage, type MemoryStorageOptions } from './memory-storage.js';
export { checkBytes, checkRange, checkSize, closedError, readOnlyError } from './arguments.js';
export { Qcow2Error, isQcow2Error, type Qcow2ErrorCode } from '@qcow2/format';
export type { ConformanceCase, ConformanceContext } from './conformance/context.js';
export { storageConformanceCases } from './conformance/cases.js';
export { runConformance, type ConformanceResult, type RunConformanceOptions } from './conformance/run.js';
