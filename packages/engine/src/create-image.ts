import {
  AUTOCLEAR_DATA_FILE_RAW,
  COMPAT_LAZY_REFCOUNTS,
  COMPRESSION_TYPE_ZLIB,
  encodeHeaderCluster,
  INCOMPAT_COMPRESSION,
  INCOMPAT_DATA_FILE,
  INCOMPAT_EXTENDED_L2,
  invalidArgument,
  isQcow2Error,
  QEMU_FEATURE_NAME_TABLE,
  Qcow2Error,
  V2_HEADER_LENGTH,
  V2_REFCOUNT_ORDER,
  V3_HEADER_LENGTH,
  type HeaderCluster,
  type HeaderExtension,
  type Qcow2Header,
} from '@qcow2/format';
import type { Storage } from '@qcow2/storage';
import { combineName } from './backing-name.js';
import { FreshImageWriter, type FreshLayout } from './create-layout.js';
import { planCreate, type CreateOptions, type CreatePlan } from './create-options.js';
import { openImage } from './open-image.js';

export type { CreateOptions, CreatePlan, PreallocationMode } from './create-options.js';
export { planCreate } from './create-options.js';

/**
 * Writes a fresh qcow2 image onto `storage` (emptied first) exactly as `qemu-img create -f qcow2`
 * 7.2 lays it out: the header cluster (with the feature name table for v3 images with clusters
 * over 4 KiB, the backing format and data file extensions, the backing file name), the refcount
 * table in cluster 1 and its first block in cluster 2, the L1 table, and with preallocation the
 * L2 tables and data clusters where qemu puts them — so the file is byte for byte qemu's.
 *
 * Rejects only with Qcow2Error: bad combinations with qemu's own words (`Extended L2 entries
 * are only supported with cluster sizes of at least 16384 bytes`, `data-file-raw requires
 * data-file`, ...; see `planCreate`), INVALID_ARGUMENT for arguments of the wrong type,
 * READ_ONLY for read-only storage, and what the storage, the resolver or `openDataFile` reject with.
 */
export async function createImage(storage: Storage, options: CreateOptions): Promise<void> {
  if (typeof storage !== 'object' || storage === null || typeof storage.write !== 'function') {
    throw invalidArgument('createImage: storage is not a Storage');
  }
  if (typeof options !== 'object' || options === null) throw invalidArgument('createImage: options are missing');
  const size = options.size ?? (await backingSize(options));
  const plan = planCreate(options, size);
  if (storage.readOnly) throw new Qcow2Error('READ_ONLY', 'createImage: the storage is read-only');
  let data: Storage | undefined;
  if (plan.dataFile !== undefined) {
    if (typeof options.openDataFile !== 'function') {
      throw invalidArgument(`create option dataFile '${plan.dataFile}': openDataFile is needed to create it`);
    }
    data = await options.openDataFile(plan.dataFile);
    if (data.readOnly) throw new Qcow2Error('READ_ONLY', `data file '${plan.dataFile}' is read-only`);
  }
  try {
    await storage.truncate(0);
    const layout = await FreshImageWriter.write(storage, data, plan);
    await storage.write(headerCluster(plan, layout), 0);
    await storage.flush();
    if (data !== undefined) await data.flush();
  } finally {
    if (data !== undefined) await data.close();
  }
}

/** The virtual size of the backing file (rounded up to 512 bytes, as qemu reads lengths in sectors). */
async function backingSize(options: CreateOptions): Promise<number> {
  const name = options.backingFile;
  if (name === undefined) throw invalidArgument('Image creation needs a size parameter');
  if (typeof name !== 'string' || name === '') throw invalidArgument(`create option backingFile: ${String(name)} is not a file name`);
  if (options.resolver === undefined) {
    throw new Qcow2Error('NOT_FOUND', `backing file '${name}': no resolver to open it for its size (pass size or a resolver)`);
  }
  const storage = await options.resolver(name, options.name);
  try {
    const format = options.backingFormat;
    const image = await openImage(storage, {
      name: combineName(options.name, name),
      backing: false,
      resolver: options.resolver,
      ...(format === undefined ? {} : { format }),
    });
    const size = image.virtualSize;
    await image.close();
    return Math.ceil(size / 512) * 512;
  } finally {
    await storage.close();
  }
}

/** The header cluster qcow2_update_header writes for the new image. */
function headerCluster(plan: CreatePlan, layout: FreshLayout): Uint8Array {
  const v3 = plan.version === 3;
  let incompatible = 0n;
  if (plan.dataFile !== undefined) incompatible |= INCOMPAT_DATA_FILE;
  if (plan.compressionType !== COMPRESSION_TYPE_ZLIB) incompatible |= INCOMPAT_COMPRESSION;
  if (plan.extendedL2) incompatible |= INCOMPAT_EXTENDED_L2;
  const header: Qcow2Header = {
    version: plan.version,
    backingFileOffset: 0,
    backingFileSize: 0,
    clusterBits: plan.clusterBits,
    size: plan.size,
    cryptMethod: 0,
    l1Size: layout.l1Size,
    l1TableOffset: layout.l1TableOffset,
    refcountTableOffset: layout.refcountTableOffset,
    refcountTableClusters: layout.refcountTableClusters,
    nbSnapshots: 0,
    snapshotsOffset: 0,
    incompatibleFeatures: incompatible,
    compatibleFeatures: plan.lazyRefcounts ? COMPAT_LAZY_REFCOUNTS : 0n,
    autoclearFeatures: plan.dataFileRaw ? AUTOCLEAR_DATA_FILE_RAW : 0n,
    refcountOrder: v3 ? plan.refcountOrder : V2_REFCOUNT_ORDER,
    headerLength: v3 ? V3_HEADER_LENGTH : V2_HEADER_LENGTH,
    compressionType: plan.compressionType,
    trailingBytes: new Uint8Array(v3 ? V3_HEADER_LENGTH - 105 : 0),
  };
  const extensions: HeaderExtension[] = [];
  if (plan.backingFormat !== undefined) extensions.push({ kind: 'backing-format', name: plan.backingFormat });
  if (plan.dataFile !== undefined) extensions.push({ kind: 'data-file', name: plan.dataFile });
  if (v3 && plan.clusterBits > 12) extensions.push({ kind: 'feature-names', entries: [...QEMU_FEATURE_NAME_TABLE] });
  const cluster: HeaderCluster = { header, extensions };
  // qcow2_update_header: ENOSPC when the extensions or the backing file name do not fit.
  const noSpace = (message: string): Qcow2Error => new Qcow2Error('UNSUPPORTED', `${message}: No space left on device`);
  try {
    encodeHeaderCluster(cluster);
  } catch (error) {
    if (isQcow2Error(error)) throw noSpace('Could not update qcow2 header');
    throw error;
  }
  if (plan.backingFile === undefined) return encodeHeaderCluster(cluster);
  try {
    return encodeHeaderCluster({ ...cluster, backingFileName: plan.backingFile });
  } catch (error) {
    if (isQcow2Error(error)) {
      throw noSpace(`Could not assign backing file '${plan.backingFile}' with format '${plan.backingFormat ?? '(null)'}'`);
    }
    throw error;
  }
}
