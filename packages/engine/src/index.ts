export { openImage, DEFAULT_MAX_BACKING_DEPTH } from './open-image.js';
export { probeFormat } from './probe-format.js';
export { walkReferences, type ImageLayout } from './reference-walk.js';
export type {
  CorruptionEvent,
  CreateSnapshotOptions,
  Extent,
  ExtentKind,
  Image,
  ImageFormat,
  ImageStats,
  OpenOptions,
  OverlapStructure,
  SnapshotInfo,
} from './types.js';
export * from './create-image.js';
export * from './check.js';
