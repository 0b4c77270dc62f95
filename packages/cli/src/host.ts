import type { CreateOptions } from '@qcow2/engine';

/**
 * What the commands need from the world, as interfaces: images (the subset of @qcow2/engine's
 * `Image` the commands read), host file facts, and an output file for `convert`. `main` uses the
 * Node implementation (node-host.ts) unless the caller passes another, which is how the tests
 * drive the commands over in-memory images.
 */

export type ImageFormat = 'qcow2' | 'raw';

/** @qcow2/engine's ExtentKind. */
export type ExtentKind = 'data' | 'zero' | 'unallocated';

/** @qcow2/engine's Extent. */
export interface ImageExtent {
  offset: number;
  length: number;
  kind: ExtentKind;
  depth: number;
  hostOffset?: number;
  compressed?: boolean;
  filename?: string;
}

/** @qcow2/engine's SnapshotInfo. */
export interface ImageSnapshot {
  id: string;
  name: string;
  vmStateSize: number;
  dateSec: number;
  dateNsec: number;
  vmClockNsec: number;
  diskSize: number;
  icount?: number;
}

/** The part of @qcow2/engine's `Image` the commands use; the write members on images opened writable. */
export interface ImageLike {
  /** True (or absent) for images opened read-only. */
  readonly readOnly?: boolean | undefined;
  readonly format: ImageFormat;
  readonly virtualSize: number;
  readonly clusterSize?: number | undefined;
  readonly backingFile?: string | undefined;
  readonly backingFormat?: string | undefined;
  readonly backing?: ImageLike | undefined;
  readonly snapshots: readonly ImageSnapshot[];
  readonly formatSpecific?: Record<string, unknown> | undefined;
  readonly dirty: boolean;
  read(dst: Uint8Array, offset: number): Promise<void>;
  extents(offset: number, length: number): Promise<ImageExtent[]>;
  openSnapshot(idOrName: string): Promise<ImageLike>;
  close(): Promise<void>;
  write?(src: Uint8Array, offset: number): Promise<void>;
  writeZeroes?(offset: number, length: number, options?: { mayUnmap?: boolean }): Promise<void>;
  discard?(offset: number, length: number): Promise<void>;
  writeCompressed?(src: Uint8Array, offset: number): Promise<void>;
  flush?(): Promise<void>;
}

/** qemu's cache modes, as the engine takes them (writethrough: a flush after every write). */
export type CacheMode = 'writeback' | 'writethrough' | 'unsafe' | 'none';

export interface HostOpenOptions {
  /** Forced format; probed when absent. */
  format?: ImageFormat;
  /** Open the backing chain (default true). `qemu-img info` opens each file alone. */
  backing?: boolean;
  /**
   * Only the metadata will be used (`info`): an external data file that cannot be opened is not
   * an error, as for qemu-img info.
   */
  metadataOnly?: boolean;
  /** Open for writing (default false: read-only). */
  writable?: boolean;
  /** For writable images: qemu's cache mode (unsafe: flushes do not reach the disk). */
  cacheMode?: CacheMode;
  /** For writable images: qemu's discard option (unmap passes discards down to the file). */
  discard?: 'ignore' | 'unmap';
  /** For writable images: told once when a fatal corruption event marks the image corrupt. */
  onCorruption?: (event: { message: string }) => void;
}

/** A file `convert` writes. */
export interface OutputFile {
  write(src: Uint8Array, offset: number): Promise<void>;
  size(): Promise<number>;
  truncate(size: number): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
}

export interface CliHost {
  /** Opens an image read-only; rejects with what went wrong (a Qcow2Error, usually). */
  openImage(filename: string, options: HostOpenOptions): Promise<ImageLike>;
  /** Bytes the host file occupies (st_blocks × 512, as qemu's "disk size"); undefined when unknown. */
  allocatedSize(filename: string): Promise<number | undefined>;
  /** Creates (truncating) or, with `create: false`, opens an existing file for writing; rejects with the file system's error. */
  openOutput(filename: string, options: { create: boolean }): Promise<OutputFile>;
  /**
   * Creates `filename` (truncating it) as a new image: qcow2 through the engine's createImage
   * (an external data file is created too, its name relative to the working directory, as
   * qemu-img does), raw as a file of `options.size` bytes. On failure the files it created are
   * removed and it rejects with what went wrong.
   */
  createImage(filename: string, format: ImageFormat, options: CreateOptions): Promise<void>;
}
