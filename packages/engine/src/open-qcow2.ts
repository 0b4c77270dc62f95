import { createTableCache, resolveCacheConfig, type CacheConfigOptions, type TableCache } from '@qcow2/cache';
import { ActiveL1Table, createClusterMap, createClusterWriter, loadL1Table, readFully, type ClusterWriter, type L1Table } from '@qcow2/cluster';
import type { ClusterCodec } from '@qcow2/compress';
import {
  AUTOCLEAR_BITMAPS,
  AUTOCLEAR_DATA_FILE_RAW,
  COMPAT_LAZY_REFCOUNTS,
  COMPRESSION_TYPE_ZSTD,
  corrupt,
  CRYPT_AES,
  CRYPT_NONE,
  decodeBitmapDirectory,
  decodeHeaderCluster,
  findHeaderExtension,
  hex,
  HEADER_CLUSTER_SIZE_PROBE,
  INCOMPAT_CORRUPT,
  INCOMPAT_DATA_FILE,
  invalidArgument,
  INCOMPAT_DIRTY,
  INCOMPAT_EXTENDED_L2,
  isQcow2Error,
  L1_ENTRY_SIZE,
  MAX_L1_ENTRIES,
  MAX_L1_SIZE_BYTES,
  Qcow2Error,
  readClusterSize,
  snapshotVmStateSize,
  unsupported,
  type HeaderExtension,
  type Qcow2Header,
} from '@qcow2/format';
import { openRefcounts, type DiscardPolicy, type Refcounts } from '@qcow2/refcount';
import { findSnapshotByIdOrName, InternalSnapshots, snapshotL1Offset, type SnapshotTableState } from '@qcow2/snapshot';
import type { Storage } from '@qcow2/storage';
import { combineName } from './backing-name.js';
import { Qcow2Image, type Qcow2Parts } from './qcow2-image.js';
import { Qcow2Writable, WriteTrackingStorage } from './qcow2-writable.js';
import { ImageOverlapGuard, resolveOverlapChecks } from './overlap-check.js';
import { ReadEpochs } from './read-epochs.js';
import { createSnapshotOps, snapshotInfo, type SnapshotOps } from './snapshot-ops.js';
import { readSnapshotTable } from './snapshot-table.js';
import type { Image, OpenOptions } from './types.js';

/** Opens the backing file an image names; undefined when the chain is not to be opened. */
export type BackingOpener = (name: string, format: string | undefined) => Promise<Image | undefined>;

const TWO_POW_32 = 0x1_0000_0000;

/**
 * Opens a qcow2 image read-only, deciding as qemu's qcow2_do_open decides: the header cluster
 * (magic, version, cluster size, header length, feature bits named from the image's feature
 * table, compression type, refcount order, table offsets, sizes and alignment, L1 large enough,
 * extensions, backing file name), then no encryption, then the L1 table, the snapshot table,
 * the bitmap directory, the external data file and the backing file. Tables are read through
 * the storage with their sizes checked first; bytes past the end of the file read as zeros, as
 * qemu reads them.
 */
export async function openQcow2(callerStorage: Storage, options: OpenOptions, openBacking: BackingOpener): Promise<Image> {
  const name = options.name;
  const what = `qcow2 image${name === undefined ? '' : ` ${name}`}`;
  const writable = options.readOnly === false;
  const overlapMask = resolveOverlapChecks(options.overlapCheck, options.overlapChecks);
  const unsafe = options.cacheMode === 'unsafe';
  if (writable && callerStorage.readOnly) {
    throw new Qcow2Error('READ_ONLY', `${what}: cannot open for writing, the storage is read-only`);
  }
  const storage = writable ? new WriteTrackingStorage(callerStorage, await callerStorage.size(), unsafe) : callerStorage;

  const probe = new Uint8Array(HEADER_CLUSTER_SIZE_PROBE);
  await readFully(storage, probe, 0);
  const clusterSize = readClusterSize(probe);
  const first = new Uint8Array(clusterSize);
  await readFully(storage, first, 0);
  const { header, extensions, backingFileName } = decodeHeaderCluster(first);
  if (header.cryptMethod !== CRYPT_NONE) {
    throw unsupported(
      `${what}: encrypted images are not supported (crypt_method ${header.cryptMethod}, ${header.cryptMethod === CRYPT_AES ? 'AES' : 'LUKS'})`,
    );
  }
  const extendedL2 = (header.incompatibleFeatures & INCOMPAT_EXTENDED_L2) !== 0n;
  const hasDataFile = (header.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n;
  let lazyRefcounts = false;
  if (writable) {
    if ((header.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n) {
      throw corrupt(`${what}: Image is corrupt; cannot be opened read/write (incompatible feature bit 1 is set: repair it with check -r all)`);
    }
    lazyRefcounts = options.lazyRefcounts ?? (header.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n;
    if (lazyRefcounts && header.version < 3) {
      throw invalidArgument(`${what}: lazy refcounts require a qcow2 image with at least qemu 1.1 compatibility level`);
    }
  }
  // qemu's total_sectors = size / 512, rounding down.
  const virtualSize = header.size - (header.size % 512);

  const cacheOptions: CacheConfigOptions = { clusterSize, virtualSize, extendedL2, ...cacheSettings(options) };
  const config = resolveCacheConfig(cacheOptions);
  const fileSize = await storage.size();
  const loadedL1 = await loadL1Table(storage, header.l1TableOffset, header.l1Size);
  const activeL1 = writable ? ActiveL1Table.from(loadedL1) : undefined;
  const l1: L1Table = activeL1 ?? loadedL1;
  const { snapshots: stored, length: snapshotTableLength } = await readSnapshotTable(
    storage,
    header.snapshotsOffset,
    header.nbSnapshots,
  );
  if (options.strict === true) {
    checkTable(what, 'L1 table', header.l1TableOffset, header.l1Size * L1_ENTRY_SIZE, clusterSize, fileSize);
    checkTable(what, 'refcount table', header.refcountTableOffset, header.refcountTableClusters * clusterSize, clusterSize, fileSize);
    checkTable(what, 'snapshot table', header.snapshotsOffset, snapshotTableLength, clusterSize, fileSize);
  }
  const bitmaps = await readBitmaps(storage, header, extensions);
  const bitmapExt = findHeaderExtension(extensions, 'bitmaps');
  const overlap = writable
    ? await ImageOverlapGuard.open(storage, {
        mask: overlapMask,
        clusterSize,
        l1: activeL1!,
        snapshotTable: { offset: header.snapshotsOffset, length: snapshotTableLength },
        snapshotL1s: stored.map((sn) => ({ offset: sn.l1OffsetHi * TWO_POW_32 + sn.l1OffsetLo, size: sn.l1Size })),
        bitmapDirectory: bitmapExt === undefined ? undefined : { offset: bitmapExt.bitmapDirectoryOffset, length: bitmapExt.bitmapDirectorySize },
        externalDataFile: hasDataFile,
      })
    : undefined;

  const owned: (Storage | Image)[] = [];
  let l2Cache: TableCache | undefined;
  let refcounts: Refcounts | undefined;
  try {
    let data = storage;
    /** What reads go to: the storage itself, without the write tracking. */
    let dataForReads = callerStorage;
    let dataName = name;
    let dataSize = fileSize;
    const dataFileName = findHeaderExtension(extensions, 'data-file')?.name;
    if (hasDataFile) {
      if (dataFileName === undefined) {
        throw unsupported(`${what}: the image keeps its data in an external data file but does not name it ('data-file' is required for this image)`);
      }
      const resolver = (writable ? options.dataFileResolver : undefined) ?? options.resolver;
      if (resolver === undefined) {
        throw new Qcow2Error('NOT_FOUND', `${what}: external data file '${dataFileName}': no resolver to open it`);
      }
      try {
        data = await resolver(dataFileName, name);
      } catch (error) {
        throw prefixed(`${what}: external data file '${dataFileName}'`, error);
      }
      owned.push(data);
      dataForReads = data;
      if (writable && data.readOnly) {
        throw new Qcow2Error(
          'READ_ONLY',
          `${what}: external data file '${dataFileName}' was opened read-only (pass a dataFileResolver that opens it for writing)`,
        );
      }
      if (writable) data = new WriteTrackingStorage(data, await data.size(), unsafe);
      dataName = combineName(name, dataFileName);
      dataSize = await data.size();
    }

    let backing: Image | undefined;
    const backingFormat = findHeaderExtension(extensions, 'backing-format')?.name;
    if (backingFileName !== undefined) {
      backing = await openBacking(backingFileName, backingFormat);
      if (backing !== undefined) owned.push(backing);
    }

    l2Cache = createTableCache({
      storage,
      capacity: config.l2CacheSize,
      entrySize: config.l2CacheEntrySize,
      cleanInterval: config.cacheCleanInterval,
      name: `${what}: L2 table`,
      ...overlap?.cacheOptions('active-l2'),
    });
    const map = createClusterMap({
      clusterBits: header.clusterBits,
      extendedL2,
      version: header.version,
      l1,
      l2Cache,
      externalDataFile: hasDataFile,
      strict: options.strict === true,
      // A writable image grows: what lies past the end of the file at open is checked no more.
      imageFileSize: writable ? Number.MAX_SAFE_INTEGER : fileSize,
      dataFileSize: writable ? Number.MAX_SAFE_INTEGER : dataSize,
    });

    let writableState: Qcow2Writable | undefined;
    if (writable) {
      const refcountCache = createTableCache({
        storage,
        capacity: config.refcountCacheSize,
        entrySize: clusterSize,
        cleanInterval: config.cacheCleanInterval,
        name: `${what}: refcount block`,
        ...overlap?.cacheOptions('refcount-block'),
      });
      const unmap = options.discard === 'unmap';
      const policy: DiscardPolicy = {
        request: options.passDiscardRequest ?? unmap,
        snapshot: options.passDiscardSnapshot ?? true,
        other: options.passDiscardOther ?? false,
      };
      try {
        refcounts = await openRefcounts({
          storage,
          clusterBits: header.clusterBits,
          refcountOrder: header.refcountOrder,
          tableOffset: header.refcountTableOffset,
          tableClusters: header.refcountTableClusters,
          cache: refcountCache,
          l2Cache,
          discard: policy,
          ...overlap?.writerOptions(),
        });
      } catch (error) {
        refcountCache.dispose();
        throw error;
      }
      writableState = new Qcow2Writable({
        name,
        storage,
        dataFile: hasDataFile ? data : undefined,
        l2Cache,
        refcounts,
        version: header.version,
        incompatibleFeatures: header.incompatibleFeatures,
        autoclearFeatures: header.autoclearFeatures,
        lazyRefcounts,
        onCorruption: options.onCorruption,
        // The persistent bitmaps qemu would load (readBitmaps decoded their directory).
        bitmapDirectory:
          bitmaps === undefined || bitmapExt === undefined
            ? undefined
            : { offset: bitmapExt.bitmapDirectoryOffset, size: bitmapExt.bitmapDirectorySize, count: bitmapExt.nbBitmaps },
      });
      overlap?.connect(refcounts, writableState);
      if ((header.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n) {
        // qemu repairs a dirty image before using it for writing (the repair is loaded only then).
        const { layoutOf, repairRefcounts } = await import('./refcount-check.js');
        await repairRefcounts(storage, layoutOf(header, extensions, stored, snapshotTableLength), refcounts, activeL1!);
        await writableState.markClean();
      }
    }

    let codec: Promise<ClusterCodec> | undefined;
    const cache = l2Cache;
    const ownedRefcounts = refcounts;
    const table: SnapshotTableState = {
      snapshots: stored,
      location: { offset: header.snapshotsOffset, length: snapshotTableLength },
      virtualSize,
    };
    const snapshots = stored.map((s) => snapshotInfo(s, virtualSize));
    const state = { closed: false };
    const parts: Qcow2Parts = {
      name,
      storage,
      data: dataForReads,
      dataName,
      dataSize,
      l2Cache: cache,
      // The codecs are imported on first use: opening, plain reads and writes never load them.
      codec: () => (codec ??= import('@qcow2/compress').then(
        (m) => m.getCodec(header.compressionType),
        (error: unknown) => {
          throw unsupported(`${what}: the compression codecs (@qcow2/compress) could not be loaded`, error);
        },
      )),
      virtualSize,
      clusterSize,
      backingFile: backingFileName,
      backingFormat,
      backing,
      snapshots,
      formatSpecific: formatSpecific(header, bitmaps, dataFileName),
      dirty: (header.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n,
      state,
      openSnapshot: async (idOrName) => {
        // qemu-img convert -l: bdrv_snapshot_load_tmp_by_id_or_name (by id, then by name).
        const index = findSnapshotByIdOrName(table.snapshots, idOrName);
        if (index < 0) throw new Qcow2Error('NOT_FOUND', `${what}: no snapshot with id or name ${JSON.stringify(idOrName)}`);
        const sn = table.snapshots[index]!;
        const l1Offset = snapshotL1Offset(sn, clusterSize, what);
        const snapshotL1 = await loadL1Table(storage, l1Offset, sn.l1Size);
        // As qemu-img 7.2 convert -l: the view has the image's current virtual size (not the
        // snapshot's disk size), kept as it is now.
        return new Qcow2Image({ ...parts, virtualSize: table.virtualSize }, map.withL1(snapshotL1), false);
      },
      release: async () => {
        ownedRefcounts?.dispose();
        ownedRefcounts?.cache.dispose();
        cache.dispose();
        await closeAll(owned);
      },
      writable: writableState,
      epochs: writableState === undefined ? undefined : new ReadEpochs(),
    };
    const image = new Qcow2Image(parts, map, true);
    if (writableState !== undefined) {
      const w = writableState;
      const extentsOf = (offset: number, length: number): Promise<{ kind: string }[]> => image.extents(offset, length);
      const makeWriter = (virtualSize: number): ClusterWriter => createClusterWriter({
        map,
        l1: activeL1!,
        l2Cache: cache,
        refcounts: refcounts!,
        storage,
        dataStorage: data,
        version: header.version,
        virtualSize,
        externalDataFile: hasDataFile,
        dataFileRaw: (header.autoclearFeatures & AUTOCLEAR_DATA_FILE_RAW) !== 0n,
        hasBacking: backing !== undefined,
        writtenEnd: () => (data as WriteTrackingStorage).writtenEnd,
        guest: {
          read: (dst, offset) => image.read(dst, offset),
          isZero: async (offset, length) => (await extentsOf(offset, length)).every((e) => e.kind !== 'data'),
        },
        compressor: { compress: async (src) => (await parts.codec()).compress(src) },
        unmap: options.discard === 'unmap',
        discardPolicy: {
          request: options.passDiscardRequest ?? options.discard === 'unmap',
          snapshot: options.passDiscardSnapshot ?? true,
          other: options.passDiscardOther ?? false,
        },
        beforeChange: () => w.beforeChange(),
        beforeFree: () => image.quiesceReads(),
        accurateRefcounts: () => w.accurateRefcounts(),
        ...overlap?.writerOptions(),
        ...(name === undefined ? {} : { name }),
      });
      w.writer = makeWriter(virtualSize);
      const internal = new InternalSnapshots({
        storage,
        refcounts: refcounts!,
        l2Cache,
        l1: activeL1!,
        clusterBits: header.clusterBits,
        extendedL2,
        version: header.version,
        externalDataFile: hasDataFile,
        state: table,
        growL1: (minEntries, exact) => w.writer.growL1(minEntries, exact),
        ...(overlap?.guard === undefined
          ? {}
          : {
              writeGuard: overlap.guard,
              // The checks follow the new snapshot table before anything is freed.
              onTableChanged: (t: SnapshotTableState, created?: { offset: number; bytes: Uint8Array }) =>
                overlap.followSnapshots(t.location, t.snapshots, created),
            }),
        onResize: (size) => {
          // The writer checks ranges against the virtual size it was made with.
          parts.virtualSize = size;
          w.writer = makeWriter(size);
        },
        ...(name === undefined ? {} : { name }),
      });
      const ops: SnapshotOps = createSnapshotOps(internal, table, async (list) => {
        parts.snapshots = list;
      });
      parts.snapshotOps = ops;
    }
    return image;
  } catch (error) {
    refcounts?.dispose();
    refcounts?.cache.dispose();
    l2Cache?.dispose();
    await closeAll(owned);
    throw error;
  }
}

/**
 * Strict mode: a table must lie within the file and after the header cluster (qemu only checks
 * alignment and limits, and reads what lies past the end of the file as zeros).
 */
function checkTable(what: string, table: string, offset: number, length: number, clusterSize: number, fileSize: number): void {
  if (length === 0) return;
  if (offset < clusterSize) {
    throw corrupt(`${what}: ${table} at ${hex(offset)} overlaps the header cluster (strict)`);
  }
  if (offset + length > fileSize) {
    throw corrupt(`${what}: ${table} at ${hex(offset)} (${length} bytes) runs past the end of the file at ${hex(fileSize)} (strict)`);
  }
}

/** The cache options a caller set (exactOptionalPropertyTypes: only those). */
function cacheSettings(options: OpenOptions): Partial<CacheConfigOptions> {
  const out: { -readonly [K in keyof CacheConfigOptions]?: CacheConfigOptions[K] } = {};
  if (options.l2CacheSize !== undefined) out.l2CacheSize = options.l2CacheSize;
  if (options.refcountCacheSize !== undefined) out.refcountCacheSize = options.refcountCacheSize;
  if (options.l2CacheEntrySize !== undefined) out.l2CacheEntrySize = options.l2CacheEntrySize;
  if (options.cacheCleanInterval !== undefined) out.cacheCleanInterval = options.cacheCleanInterval;
  return out;
}

/** Closes backing images and storages opened for an image, newest first; keeps the first error. */
export async function closeAll(owned: (Storage | Image)[]): Promise<void> {
  let first: unknown;
  for (const item of owned.reverse()) {
    try {
      await item.close();
    } catch (error) {
      first ??= error;
    }
  }
  owned.length = 0;
  if (first !== undefined) throw first;
}

/** `error` with `prefix: ` before its message, its code kept (a non-Qcow2Error becomes IO). */
export function prefixed(prefix: string, error: unknown): Qcow2Error {
  if (isQcow2Error(error)) return new Qcow2Error(error.code, `${prefix}: ${error.message}`, { cause: error });
  return new Qcow2Error('IO', `${prefix}: ${String(error)}`, { cause: error });
}

/** The persistent bitmaps qemu would load (when the autoclear bit says they are valid). */
async function readBitmaps(
  storage: Storage,
  header: Qcow2Header,
  extensions: readonly HeaderExtension[],
): Promise<{ name: string; granularity: number; flags: string[] }[] | undefined> {
  const ext = findHeaderExtension(extensions, 'bitmaps');
  if (ext === undefined || (header.autoclearFeatures & AUTOCLEAR_BITMAPS) === 0n) return undefined;
  if (ext.bitmapDirectorySize === 0) {
    throw corrupt(`bitmap directory at ${hex(ext.bitmapDirectoryOffset)}: its size is 0`);
  }
  // The size was checked against qemu's limit (1024 × 65535 bytes) with the extension.
  const bytes = new Uint8Array(ext.bitmapDirectorySize);
  await readFully(storage, bytes, ext.bitmapDirectoryOffset);
  const entries = decodeBitmapDirectory(bytes, ext.nbBitmaps, {
    clusterBits: header.clusterBits,
    tableOffset: ext.bitmapDirectoryOffset,
  });
  return entries.map((e) => {
    const flags: string[] = [];
    if (e.inUse) flags.push('in-use');
    if (e.auto) flags.push('auto');
    return { flags, name: e.name, granularity: 2 ** e.granularityBits };
  });
}

/** qemu-img info's format-specific data, in the order qemu prints it. */
function formatSpecific(
  header: Qcow2Header,
  bitmaps: { name: string; granularity: number; flags: string[] }[] | undefined,
  dataFileName: string | undefined,
): Record<string, unknown> {
  const compressionType = header.compressionType === COMPRESSION_TYPE_ZSTD ? 'zstd' : 'zlib';
  const refcountBits = 2 ** header.refcountOrder;
  if (header.version === 2) return { compat: '0.10', 'compression-type': compressionType, 'refcount-bits': refcountBits };
  const out: Record<string, unknown> = {
    compat: '1.1',
    'compression-type': compressionType,
    'lazy-refcounts': (header.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n,
  };
  if (bitmaps !== undefined && bitmaps.length > 0) out['bitmaps'] = bitmaps;
  out['refcount-bits'] = refcountBits;
  const hasDataFile = (header.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n;
  if (dataFileName !== undefined) out['data-file'] = dataFileName;
  if (hasDataFile) out['data-file-raw'] = (header.autoclearFeatures & AUTOCLEAR_DATA_FILE_RAW) !== 0n;
  out['corrupt'] = (header.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n;
  out['extended-l2'] = (header.incompatibleFeatures & INCOMPAT_EXTENDED_L2) !== 0n;
  return out;
}
