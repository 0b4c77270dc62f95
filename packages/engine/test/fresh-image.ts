import {
  COMPAT_LAZY_REFCOUNTS,
  encodeHeaderCluster,
  INCOMPAT_COMPRESSION,
  INCOMPAT_EXTENDED_L2,
  l1EntriesForVirtualSize,
  QEMU_FEATURE_NAME_TABLE,
  V2_HEADER_LENGTH,
  V3_HEADER_LENGTH,
  type HeaderExtension,
  type Qcow2Header,
} from '@qcow2/format';
import { writeInitialRefcountStructure } from '@qcow2/refcount';
import type { Storage } from '@qcow2/storage';

export interface FreshImageOptions {
  size: number;
  clusterBits?: number;
  version?: 2 | 3;
  refcountOrder?: number;
  extendedL2?: boolean;
  lazyRefcounts?: boolean;
  compressionType?: 0 | 1;
  backingFile?: string;
  backingFormat?: 'qcow2' | 'raw';
}

/**
 * Writes an empty qcow2 image onto `storage` with qemu-img create's layout (header, refcount
 * table, refcount block, L1 table), from the format encoders alone: the tests of the write path
 * do not depend on createImage or on qemu.
 */
export async function writeFreshImage(storage: Storage, options: FreshImageOptions): Promise<void> {
  const clusterBits = options.clusterBits ?? 16;
  const cs = 2 ** clusterBits;
  const version = options.version ?? 3;
  const extendedL2 = options.extendedL2 === true;
  const l1Size = l1EntriesForVirtualSize(options.size, clusterBits, extendedL2);
  const l1Clusters = Math.max(1, Math.ceil((l1Size * 8) / cs));
  const compressionType = options.compressionType ?? 0;
  let incompatible = 0n;
  if (extendedL2) incompatible |= INCOMPAT_EXTENDED_L2;
  if (compressionType !== 0) incompatible |= INCOMPAT_COMPRESSION;
  const header: Qcow2Header = {
    version,
    backingFileOffset: 0,
    backingFileSize: 0,
    clusterBits,
    size: options.size,
    cryptMethod: 0,
    l1Size,
    l1TableOffset: 3 * cs,
    refcountTableOffset: cs,
    refcountTableClusters: 1,
    nbSnapshots: 0,
    snapshotsOffset: 0,
    incompatibleFeatures: version === 3 ? incompatible : 0n,
    compatibleFeatures: version === 3 && options.lazyRefcounts === true ? COMPAT_LAZY_REFCOUNTS : 0n,
    autoclearFeatures: 0n,
    refcountOrder: version === 3 ? (options.refcountOrder ?? 4) : 4,
    headerLength: version === 3 ? V3_HEADER_LENGTH : V2_HEADER_LENGTH,
    compressionType: version === 3 ? compressionType : 0,
    trailingBytes: new Uint8Array(version === 3 ? V3_HEADER_LENGTH - 105 : 0),
  };
  const extensions: HeaderExtension[] = [];
  if (options.backingFormat !== undefined) extensions.push({ kind: 'backing-format', name: options.backingFormat });
  if (version === 3 && cs > 4096) extensions.push({ kind: 'feature-names', entries: [...QEMU_FEATURE_NAME_TABLE] });
  const cluster = encodeHeaderCluster({
    header,
    extensions,
    ...(options.backingFile === undefined ? {} : { backingFileName: options.backingFile }),
  });
  await storage.write(cluster, 0);
  await writeInitialRefcountStructure(storage, {
    clusterBits,
    refcountOrder: header.refcountOrder,
    usedClusters: 3 + l1Clusters,
  });
  await storage.write(new Uint8Array(l1Clusters * cs), 3 * cs);
}
