/**
 * What a guest range maps to.
 *
 * - `data`: bytes live in the data file (the image file, or its external data file) at
 *   `hostOffset`, contiguously for `length` bytes.
 * - `zero`: reads as zeros (ZERO flag, or zero subclusters). `hostOffset` is the preallocated
 *   host offset of the first byte when the cluster has one, else -1.
 * - `unallocated`: this image says nothing; the bytes come from the backing file (zeros without
 *   one). `hostOffset` is set (else -1) for unallocated subclusters of an allocated cluster.
 * - `compressed`: one compressed cluster (a run never spans two): `hostOffset` and
 *   `compressedLength` locate the compressed stream; the run's bytes are at
 *   `offset % clusterSize` in the decompressed cluster.
 */
export type RunKind = 'data' | 'zero' | 'unallocated' | 'compressed';

/**
 * One run of a lookup. Lookups fill a caller-owned run in place, so the hot path allocates
 * nothing: create one with {@link createRun} and reuse it.
 */
export interface MappingRun {
  kind: RunKind;
  /** Guest offset of the first byte. */
  offset: number;
  /** Bytes in the run (> 0). */
  length: number;
  /** See {@link RunKind}; -1 when there is no host offset. */
  hostOffset: number;
  /** compressed: bytes of the compressed stream to read at `hostOffset` (qemu's csize); else 0. */
  compressedLength: number;
}

export function createRun(): MappingRun {
  return { kind: 'unallocated', offset: 0, length: 0, hostOffset: -1, compressedLength: 0 };
}

/** A copy of `run`, for callers that keep runs (lists of extents). */
export function copyRun(run: MappingRun): MappingRun {
  return {
    kind: run.kind,
    offset: run.offset,
    length: run.length,
    hostOffset: run.hostOffset,
    compressedLength: run.compressedLength,
  };
}
