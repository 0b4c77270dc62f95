import {
  COMPRESSION_TYPE_ZLIB,
  COMPRESSION_TYPE_ZSTD,
  encodeString,
  invalidArgument,
  MAX_BACKING_FILE_NAME,
  MAX_CLUSTER_BITS,
  MAX_L1_SIZE_BYTES,
  MIN_CLUSTER_BITS,
  MIN_EXTENDED_L2_CLUSTER_BITS,
  Qcow2Error,
} from '@qcow2/format';
import type { Storage, StorageResolver } from '@qcow2/storage';

export type PreallocationMode = 'off' | 'metadata' | 'falloc' | 'full';

/** What `createImage` makes: qemu-img create's qcow2 options, under their camel-cased names. */
export interface CreateOptions {
  /** Virtual size in bytes, a multiple of 512; required unless `backingFile` is given (size from the backing). */
  size?: number;
  /** Default 65536: a power of two in 512..2 MiB. */
  clusterSize?: number;
  /** Default '1.1' (qcow2 v3); '0.10' writes a version 2 image. */
  compat?: '0.10' | '1.1';
  /** Default 16: a power of two ≤ 64 (v3 only for anything but 16). */
  refcountBits?: number;
  /** Subcluster allocation (v3, clusters of 16 KiB and more). */
  extendedL2?: boolean;
  /** Sets the lazy-refcounts compatible bit (v3). */
  lazyRefcounts?: boolean;
  /** Default 'zlib'; 'zstd' sets the compression-type incompatible bit (v3). */
  compressionType?: 'zlib' | 'zstd';
  /**
   * Default 'off'. 'metadata' allocates L2 tables and data clusters (the file stays sparse);
   * 'falloc' and 'full' also write zeros over the data area (the Storage interface has no
   * fallocate, so both reserve the space by writing it).
   */
  preallocation?: PreallocationMode;
  /** Backing file name, stored as given. With preallocation only when extendedL2 is on (as qemu). */
  backingFile?: string;
  backingFormat?: 'qcow2' | 'raw';
  /** External data file name, stored as given (v3). Needs `openDataFile`. */
  dataFile?: string;
  /** The data file stays a valid raw image (needs dataFile; implies preallocation=metadata at least). */
  dataFileRaw?: boolean;
  /** Name of the image being created: `from` for the resolver when opening the backing file. */
  name?: string;
  /** Opens the backing file when its size is needed (no `size`). */
  resolver?: StorageResolver;
  /** Creates (or opens) the external data file; it is emptied and sized to the image. */
  openDataFile?: (name: string) => Promise<Storage>;
}

/** The options after qemu's checks and defaults. */
export interface CreatePlan {
  readonly size: number;
  readonly clusterBits: number;
  readonly version: 2 | 3;
  readonly refcountOrder: number;
  readonly extendedL2: boolean;
  readonly lazyRefcounts: boolean;
  readonly compressionType: number;
  readonly preallocation: PreallocationMode;
  readonly backingFile: string | undefined;
  readonly backingFormat: string | undefined;
  readonly dataFile: string | undefined;
  readonly dataFileRaw: boolean;
}

const PREALLOCATION_MODES: readonly string[] = ['off', 'metadata', 'falloc', 'full'];
const DEFAULT_CLUSTER_SIZE = 65536;
/** qemu's QCOW_EXTL2_SUBCLUSTERS_PER_CLUSTER × 512. */
const MIN_EXTENDED_L2_CLUSTER_SIZE = 2 ** MIN_EXTENDED_L2_CLUSTER_BITS;

function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

function refuse(message: string): Qcow2Error {
  return invalidArgument(message);
}

function checkBoolean(value: unknown, name: string): boolean {
  if (value === undefined) return false;
  if (typeof value !== 'boolean') throw invalidArgument(`create option ${name}: ${String(value)} is not a boolean`);
  return value;
}

function checkName(value: unknown, name: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value === '') throw invalidArgument(`create option ${name}: ${String(value)} is not a file name`);
  return value;
}

/**
 * qemu's qcow2_co_create checks, in its order and words (the messages qemu-img prints after
 * `qemu-img: FILE: `), on options whose types have been checked: `size` must already be known.
 */
export function planCreate(options: CreateOptions, size: number): CreatePlan {
  if (!Number.isSafeInteger(size) || size < 0) throw invalidArgument(`create option size: ${String(size)} is not a size in bytes`);
  if (size % 512 !== 0) throw refuse('Image size must be a multiple of 512 bytes');
  // The enumerations first, as qemu's option visitor refuses them before qcow2_co_create runs.
  const compat = options.compat ?? '1.1';
  if (compat !== '0.10' && compat !== '1.1') throw refuse(`Parameter 'version' does not accept value '${String(compat)}'`);
  let preallocation = options.preallocation ?? 'off';
  if (!PREALLOCATION_MODES.includes(preallocation)) {
    throw refuse(`Parameter 'preallocation' does not accept value '${String(preallocation)}'`);
  }
  const compression = options.compressionType ?? 'zlib';
  if (compression !== 'zlib' && compression !== 'zstd') {
    throw refuse(`Parameter 'compression-type' does not accept value '${String(compression)}'`);
  }
  const version: 2 | 3 = compat === '0.10' ? 2 : 3;
  const clusterSize = options.clusterSize ?? DEFAULT_CLUSTER_SIZE;
  if (typeof clusterSize !== 'number' || !Number.isInteger(clusterSize) || clusterSize < 0) {
    throw invalidArgument(`create option clusterSize: ${String(clusterSize)} is not a size in bytes`);
  }
  const extendedL2 = checkBoolean(options.extendedL2, 'extendedL2');
  if (extendedL2 && version < 3) {
    throw refuse('Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)');
  }
  if (!isPowerOfTwo(clusterSize) || clusterSize < 2 ** MIN_CLUSTER_BITS || clusterSize > 2 ** MAX_CLUSTER_BITS) {
    throw refuse(`Cluster size must be a power of two between ${2 ** MIN_CLUSTER_BITS} and ${2 ** (MAX_CLUSTER_BITS - 10)}k`);
  }
  if (extendedL2 && clusterSize < MIN_EXTENDED_L2_CLUSTER_SIZE) {
    throw refuse(`Extended L2 entries are only supported with cluster sizes of at least ${MIN_EXTENDED_L2_CLUSTER_SIZE} bytes`);
  }
  const backingFile = checkName(options.backingFile, 'backingFile');
  if (backingFile !== undefined && preallocation !== 'off' && !extendedL2) {
    throw refuse('Backing file and preallocation can only be used at the same time if extended_l2 is on');
  }
  const backingFormat = options.backingFormat;
  if (backingFormat !== undefined) {
    if (backingFormat !== 'qcow2' && backingFormat !== 'raw') {
      throw invalidArgument(`create option backingFormat: ${JSON.stringify(backingFormat)} is not 'qcow2' or 'raw'`);
    }
    if (backingFile === undefined) throw refuse('Backing format cannot be used without backing file');
  }
  const lazyRefcounts = checkBoolean(options.lazyRefcounts, 'lazyRefcounts');
  if (version < 3 && lazyRefcounts) {
    throw refuse('Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)');
  }
  const refcountBits = options.refcountBits ?? 16;
  if (typeof refcountBits !== 'number' || !isPowerOfTwo(refcountBits) || refcountBits > 64) {
    throw refuse('Refcount width must be a power of two and may not exceed 64 bits');
  }
  if (version < 3 && refcountBits !== 16) {
    throw refuse('Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)');
  }
  const dataFile = checkName(options.dataFile, 'dataFile');
  const dataFileRaw = checkBoolean(options.dataFileRaw, 'dataFileRaw');
  if (dataFileRaw && dataFile === undefined) throw refuse('data-file-raw requires data-file');
  if (dataFileRaw && backingFile !== undefined) throw refuse('Backing file and data-file-raw cannot be used at the same time');
  if (dataFileRaw && preallocation === 'off') preallocation = 'metadata';
  if (dataFile !== undefined && version < 3) {
    throw refuse('External data files are only supported with compatibility level 1.1 and above (use version=v3 or greater)');
  }
  if (compression !== 'zlib' && version < 3) {
    throw refuse('Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)');
  }
  const clusterBits = Math.round(Math.log2(clusterSize));
  // The L1 table must fit qemu's 32 MiB (qemu-img: EFBIG from growing the L1 table).
  const l2Coverage = 2 ** (2 * clusterBits - (extendedL2 ? 4 : 3));
  if (Math.ceil(size / l2Coverage) * 8 > MAX_L1_SIZE_BYTES) {
    throw new Qcow2Error('UNSUPPORTED', "The image size is too large for file format 'qcow2' (try using a larger cluster size)");
  }
  if (backingFile !== undefined && encodeString(backingFile).byteLength > MAX_BACKING_FILE_NAME) {
    throw refuse(`Could not assign backing file '${backingFile}' with format '${backingFormat ?? '(null)'}': Invalid argument`);
  }
  return {
    size,
    clusterBits,
    version,
    refcountOrder: Math.round(Math.log2(refcountBits)),
    extendedL2,
    lazyRefcounts,
    compressionType: compression === 'zstd' ? COMPRESSION_TYPE_ZSTD : COMPRESSION_TYPE_ZLIB,
    preallocation,
    backingFile,
    backingFormat,
    dataFile,
    dataFileRaw,
  };
}
