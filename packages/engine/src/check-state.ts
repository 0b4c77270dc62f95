import { readFully } from '@qcow2/cluster';
import {
  AUTOCLEAR_BITMAPS,
  corrupt,
  CRYPT_AES,
  CRYPT_NONE,
  decodeBitmapDirectory,
  decodeHeaderCluster,
  findHeaderExtension,
  HEADER_CLUSTER_SIZE_PROBE,
  HEADER_EXT_FEATURE_TABLE,
  hex,
  INCOMPAT_DATA_FILE,
  INCOMPAT_EXTENDED_L2,
  invalidArgument,
  isQcow2Error,
  KNOWN_AUTOCLEAR_FEATURES,
  readClusterSize,
  unsupported,
  type BitmapDirectoryEntry,
  type Qcow2Header,
} from '@qcow2/format';
import type { Storage } from '@qcow2/storage';
import { EIO_TEXT, offsetIntoCluster, u64, type HostOffset } from './check-bits.js';

/**
 * One line qemu-img check prints on stderr. `report` lines go through qemu's error_report (the
 * program name and a colon come first: `qemu-img: ERROR ...`); the others are printed as they are.
 */
export interface CheckMessage {
  readonly text: string;
  readonly report: boolean;
}

/** qemu's BdrvCheckResult: the counters of one check pass. */
export interface CheckCounters {
  checkErrors: number;
  corruptions: number;
  leaks: number;
  corruptionsFixed: number;
  leaksFixed: number;
  imageEndOffset: number;
  totalClusters: number;
  allocatedClusters: number;
  fragmentedClusters: number;
  compressedClusters: number;
}

export function zeroCounters(): CheckCounters {
  return {
    checkErrors: 0,
    corruptions: 0,
    leaks: 0,
    corruptionsFixed: 0,
    leaksFixed: 0,
    imageEndOffset: 0,
    totalClusters: 0,
    allocatedClusters: 0,
    fragmentedClusters: 0,
    compressedClusters: 0,
  };
}

/**
 * The check could not complete (qemu's negative return from bdrv_check): `reason` is the
 * strerror text qemu-img prints after "Check failed: ".
 */
export class CheckAbort extends Error {
  readonly reason: string;
  constructor(reason: string, cause?: unknown) {
    super(reason, cause === undefined ? undefined : { cause });
    this.reason = reason;
  }
}

/**
 * qemu reads the feature name table extension whatever its length (it only names unknown
 * features with it); the decoder insists on whole 48-byte entries. A table of another length is
 * handed over as an unknown extension, so the image opens as it does for qemu.
 */
function tolerateFeatureTable(cluster: Uint8Array): Uint8Array {
  const view = new DataView(cluster.buffer, cluster.byteOffset, cluster.byteLength);
  if (cluster.length < 104 || view.getUint32(4) < 3) return cluster;
  const headerLength = view.getUint32(100);
  const backing = view.getUint32(8) === 0 ? view.getUint32(12) : 0;
  const end = backing !== 0 && backing <= cluster.length ? backing : cluster.length;
  let copy: Uint8Array | undefined;
  for (let at = headerLength; at + 8 <= end && headerLength >= 104; ) {
    const magic = view.getUint32(at);
    const length = view.getUint32(at + 4);
    if (magic === 0 || length > end - at - 8) break;
    if (magic === HEADER_EXT_FEATURE_TABLE && length % 48 !== 0) {
      copy ??= cluster.slice();
      new DataView(copy.buffer).setUint32(at, 1);
    }
    at += 8 + Math.ceil(length / 8) * 8;
  }
  return copy ?? cluster;
}

/** qemu's BDRV_MAX_LENGTH: INT64_MAX rounded down to 1 GiB. */
const BDRV_MAX_LENGTH = 0x7fff_ffff_c000_0000n;

/** Whether qemu's block layer accepts a request of `length` bytes at `offset`. */
export function withinBlockLayer(offset: number | bigint, length: number): boolean {
  const at = BigInt(offset);
  return at <= BDRV_MAX_LENGTH && BigInt(length) <= BDRV_MAX_LENGTH - at;
}

/** What a storage failure aborts the check with. */
export function abortFrom(error: unknown): CheckAbort {
  if (error instanceof CheckAbort) return error;
  return new CheckAbort(strerrorOf(error), error);
}

/** The strerror text for a failure. */
export function strerrorOf(error: unknown): string {
  if (error instanceof CheckAbort) return error.reason;
  if (isQcow2Error(error)) {
    switch (error.code) {
      case 'INVALID_ARGUMENT':
        return 'Invalid argument';
      case 'UNSUPPORTED':
        return 'Operation not supported';
      case 'READ_ONLY':
        return 'Read-only file system';
      default:
        return EIO_TEXT;
    }
  }
  return EIO_TEXT;
}

/** The metadata kinds of qemu's overlap check (QCOW2_OL_*), named as qemu names them. */
export type MetadataKind =
  | 'qcow2_header'
  | 'active L1 table'
  | 'active L2 table'
  | 'refcount table'
  | 'refcount block'
  | 'snapshot table'
  | 'inactive L1 table'
  | 'inactive L2 table'
  | 'bitmap directory';

/** A snapshot table entry as the check reads it (qemu's QCowSnapshot). */
export interface CheckSnapshot {
  /** l1_table_offset as stored (the high and low words). */
  readonly l1OffsetHi: number;
  readonly l1OffsetLo: number;
  readonly l1Size: number;
  /** The fixed header fields as stored, for rewriting the table. */
  readonly vmStateSize: number;
  readonly dateSec: number;
  readonly dateNsec: number;
  readonly vmClockHi: number;
  readonly vmClockLo: number;
  /** extra_data_size (cut to 1024 when a repair dropped the excess). */
  extraDataSize: number;
  /** The known extra data (24 bytes, zero past what the entry holds) and what follows it. */
  readonly extra: Uint8Array;
  readonly unknownExtra: Uint8Array;
  readonly idBytes: Uint8Array;
  readonly nameBytes: Uint8Array;
}

/**
 * An image opened for `qemu-img check` (qemu's qcow2_do_open with BDRV_O_CHECK): the header
 * validated as qemu validates it in check mode, the active L1 table and the refcount table read
 * (bytes past the end of the file read as zeros), the bitmap directory loaded. The snapshot table
 * is read by the check itself.
 */
export class CheckImage {
  readonly storage: Storage;
  readonly header: Qcow2Header;
  readonly clusterBits: number;
  readonly clusterSize: number;
  readonly refcountOrder: number;
  readonly extendedL2: boolean;
  readonly hasDataFile: boolean;
  /** L2 entries per table. */
  readonly l2Size: number;
  /** Bytes per L2 entry. */
  readonly l2EntrySize: number;
  /** qemu's bs->total_sectors * 512. */
  readonly virtualSize: number;
  readonly l1Offset: HostOffset;
  readonly l1Size: number;
  /** The active L1 table as on disk (qemu's s->l1_table), kept in step with repairs. */
  readonly l1Table: Uint8Array;
  /** The refcount table (qemu's s->refcount_table), entries as on disk. */
  refcountTableOffset: HostOffset;
  refcountTable: Uint8Array;
  /** Bitmap directory when the bitmaps extension is in force (qemu's s->nb_bitmaps > 0). */
  readonly bitmapDirectory: { readonly offset: number; readonly size: number; readonly entries: readonly BitmapDirectoryEntry[] } | undefined;
  /** The snapshot table, once the check read it. */
  snapshotsOffset: HostOffset = 0;
  snapshotsSize = 0;
  snapshots: CheckSnapshot[] = [];
  /** qemu's signaled_corruption: later corruption events print nothing. */
  readonly signal: { signaled: boolean };
  /** The image is unusable after a fatal corruption event (qemu sets bs->drv = NULL). */
  dead = false;
  /** Opened for repair: writes allowed, corruption events fatal. */
  readonly writable: boolean;

  private constructor(init: {
    storage: Storage;
    header: Qcow2Header;
    l1Table: Uint8Array;
    refcountTable: Uint8Array;
    bitmapDirectory: CheckImage['bitmapDirectory'];
    signal: { signaled: boolean };
    writable: boolean;
    l1Offset: HostOffset;
    refcountTableOffset: HostOffset;
  }) {
    const { header } = init;
    this.writable = init.writable;
    this.l1Offset = init.l1Offset;
    this.refcountTableOffset = init.refcountTableOffset;
    this.storage = init.storage;
    this.header = header;
    this.clusterBits = header.clusterBits;
    this.clusterSize = 2 ** header.clusterBits;
    this.refcountOrder = header.refcountOrder;
    this.extendedL2 = (header.incompatibleFeatures & INCOMPAT_EXTENDED_L2) !== 0n;
    this.hasDataFile = (header.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n;
    this.l2EntrySize = this.extendedL2 ? 16 : 8;
    this.l2Size = this.clusterSize / this.l2EntrySize;
    this.virtualSize = header.size - (header.size % 512);
    this.l1Size = header.l1Size;
    this.l1Table = init.l1Table;
    this.refcountTable = init.refcountTable;
    this.bitmapDirectory = init.bitmapDirectory;
    this.signal = init.signal;
  }

  /**
   * Opens `storage` the way qemu-img check does. Rejects (Qcow2Error) for what qemu refuses to
   * open even in check mode: not qcow2, an unsupported version, cluster size or feature, a table
   * offset that is not aligned or a table above qemu's limits, an L1 table too small for the
   * virtual size, an encrypted image (not supported here), a bitmap directory qemu cannot load.
   */
  static async open(storage: Storage, options: { writable: boolean; signal: { signaled: boolean } }): Promise<CheckImage> {
    const probe = new Uint8Array(HEADER_CLUSTER_SIZE_PROBE);
    await readFully(storage, probe, 0);
    const clusterSize = readClusterSize(probe);
    const first = new Uint8Array(clusterSize);
    await readFully(storage, first, 0);
    // Table offsets at or past 2^53 are valid for qemu (the tables read as zeros there); the
    // header decoder refuses them, so they are decoded as 0 and kept aside. The snapshot table
    // pointer is ignored when opening for a check (the check reads it itself).
    const view = new DataView(first.buffer, first.byteOffset, first.byteLength);
    const l1Offset = u64(view.getUint32(40), view.getUint32(44));
    const refcountTableOffset = u64(view.getUint32(48), view.getUint32(52));
    const patched = tolerateFeatureTable(first).slice();
    if (typeof l1Offset === 'bigint') patched.fill(0, 40, 48);
    if (typeof refcountTableOffset === 'bigint') patched.fill(0, 48, 56);
    patched.fill(0, 60, 72);
    const { header, extensions } = decodeHeaderCluster(patched, { check: true });
    if (header.cryptMethod !== CRYPT_NONE) {
      throw unsupported(`encrypted images are not supported (crypt_method ${header.cryptMethod}, ${header.cryptMethod === CRYPT_AES ? 'AES' : 'LUKS'})`);
    }
    // Sizes are checked by decodeHeaderCluster (L1 ≤ 32 MiB, refcount table ≤ 8 MiB).
    const l1Table = new Uint8Array(header.l1Size * 8);
    const refcountTable = new Uint8Array(header.refcountTableClusters * clusterSize);
    for (const [table, offset, name] of [
      [l1Table, l1Offset, 'Active L1 table'],
      [refcountTable, refcountTableOffset, 'Reference count table'],
    ] as const) {
      // qemu's qcow2_validate_table, then a read that its block layer refuses past 2^63 - 2^30.
      if (typeof offset === 'bigint') {
        if (offset % BigInt(clusterSize) !== 0n || 0x7fff_ffff_ffff_ffffn - BigInt(table.length) < offset) {
          throw corrupt(`header: ${name} offset invalid (0x${offset.toString(16)})`);
        }
        if (table.length > 0 && !withinBlockLayer(offset, table.length)) {
          throw corrupt(`header: could not read the ${name} at 0x${offset.toString(16)}: ${EIO_TEXT}`);
        }
      } else if (table.length > 0) {
        await readFully(storage, table, offset);
      }
    }
    let bitmapDirectory: CheckImage['bitmapDirectory'];
    const ext = findHeaderExtension(extensions, 'bitmaps');
    if (ext !== undefined && (header.autoclearFeatures & AUTOCLEAR_BITMAPS) !== 0n && ext.nbBitmaps > 0) {
      // qemu loads the bitmaps when it opens the image and refuses an image whose directory it cannot load.
      const bytes = new Uint8Array(ext.bitmapDirectorySize);
      await readFully(storage, bytes, ext.bitmapDirectoryOffset);
      const entries = decodeBitmapDirectory(bytes, ext.nbBitmaps, { clusterBits: header.clusterBits, tableOffset: ext.bitmapDirectoryOffset });
      for (const e of entries) {
        if (e.extraData.length > 0) throw corrupt(`bitmap directory at ${hex(ext.bitmapDirectoryOffset)}: bitmap extra data is not supported`);
      }
      bitmapDirectory = { offset: ext.bitmapDirectoryOffset, size: ext.bitmapDirectorySize, entries };
    }
    return new CheckImage({ storage, header, l1Table, refcountTable, bitmapDirectory, l1Offset, refcountTableOffset, ...options });
  }

  /** Entries in the refcount table (qemu's refcount_table_size). */
  get refcountTableSize(): number {
    return this.refcountTable.length / 8;
  }

  /** The size of the file. */
  async fileSize(): Promise<number> {
    try {
      return await this.storage.size();
    } catch (error) {
      throw abortFrom(error);
    }
  }

  /** Reads `dst.length` bytes at `offset`; past the end of the file (or past 2^53) zeros. */
  async read(dst: Uint8Array, offset: number | bigint): Promise<void> {
    if (typeof offset === 'bigint' || offset + dst.length > Number.MAX_SAFE_INTEGER) {
      // qemu refuses requests past BDRV_MAX_LENGTH (2^63 - 2^30) with EIO; below it, past the
      // end of any file, they read as zeros.
      if (!withinBlockLayer(offset, dst.length)) throw new CheckAbort(EIO_TEXT);
      dst.fill(0);
      return;
    }
    try {
      await readFully(this.storage, dst, offset);
    } catch (error) {
      throw abortFrom(error);
    }
  }

  /** Writes and, with `sync`, flushes (qemu's bdrv_pwrite / bdrv_pwrite_sync). */
  async write(src: Uint8Array, offset: number, sync: boolean): Promise<void> {
    if (this.dead) throw new CheckAbort('No medium found');
    if (!this.writable) throw new CheckAbort('Read-only file system');
    try {
      await this.storage.write(src, offset);
      if (sync) await this.storage.flush();
    } catch (error) {
      throw abortFrom(error);
    }
  }

  /**
   * qemu's qcow2_check_metadata_overlap with the default overlap-check=cached (everything but
   * inactive L2 tables): which metadata `[offset, offset + size)` would overwrite, if any.
   */
  overlap(offset: number, size: number, ignore: readonly MetadataKind[] = []): MetadataKind | undefined {
    if (size === 0) return undefined;
    const cs = this.clusterSize;
    const check = (kind: MetadataKind): boolean => !ignore.includes(kind);
    if (check('qcow2_header') && offset < cs) return 'qcow2_header';
    const start = Math.floor(offset / cs) * cs;
    const end = Math.ceil((offset + size) / cs) * cs;
    const hits = (at: number, length: number): boolean => length > 0 && at < end && start < at + length;
    if (check('active L1 table') && this.l1Size > 0 && typeof this.l1Offset === 'number' && hits(this.l1Offset, this.l1Size * 8)) return 'active L1 table';
    if (check('refcount table') && this.refcountTable.length > 0 && typeof this.refcountTableOffset === 'number' && hits(this.refcountTableOffset, this.refcountTable.length)) {
      return 'refcount table';
    }
    if (check('snapshot table') && this.snapshotsSize > 0 && typeof this.snapshotsOffset === 'number' && hits(this.snapshotsOffset, this.snapshotsSize)) return 'snapshot table';
    if (check('inactive L1 table')) {
      for (const sn of this.snapshots) {
        if (sn.l1Size > 0 && sn.l1OffsetHi <= 0x1f_ffff && hits(sn.l1OffsetHi * 0x1_0000_0000 + sn.l1OffsetLo, sn.l1Size * 8)) {
          return 'inactive L1 table';
        }
      }
    }
    const view = new DataView(this.l1Table.buffer, this.l1Table.byteOffset, this.l1Table.byteLength);
    if (check('active L2 table')) {
      for (let i = 0; i < this.l1Size; i++) {
        const hi = view.getUint32(i * 8) & 0x00ff_ffff;
        const lo = view.getUint32(i * 8 + 4) & 0xffff_fe00;
        if ((hi !== 0 || lo !== 0) && hi <= 0x1f_ffff && hits(hi * 0x1_0000_0000 + (lo >>> 0), cs)) return 'active L2 table';
      }
    }
    if (check('refcount block')) {
      const rt = new DataView(this.refcountTable.buffer, this.refcountTable.byteOffset, this.refcountTable.byteLength);
      for (let i = 0; i < this.refcountTableSize; i++) {
        const hi = rt.getUint32(i * 8);
        const lo = rt.getUint32(i * 8 + 4) & 0xffff_fe00;
        if ((hi !== 0 || lo !== 0) && hi <= 0x1f_ffff && hits(hi * 0x1_0000_0000 + (lo >>> 0), cs)) return 'refcount block';
      }
    }
    const dir = this.bitmapDirectory;
    if (check('bitmap directory') && dir !== undefined && hits(dir.offset, dir.size)) return 'bitmap directory';
    return undefined;
  }

  /**
   * qemu's qcow2_pre_write_overlap_check: a write that would land on other metadata is refused,
   * the image is marked corrupt (incompatible bit 1, written to the header) and becomes unusable;
   * rejects with CheckAbort(EIO) after printing qemu's message.
   */
  async preWriteOverlapCheck(emit: (m: CheckMessage) => void, offset: number, size: number, ignore: readonly MetadataKind[]): Promise<void> {
    const hit = this.overlap(offset, size, ignore);
    if (hit === undefined) return;
    await this.signalCorruption(emit, true, `Preventing invalid write on metadata (overlaps with ${hit})`);
    throw new CheckAbort(EIO_TEXT);
  }

  /** qemu's qcow2_signal_corruption: one message per image, a fatal event (on a writable image) marks it corrupt. */
  async signalCorruption(emit: (m: CheckMessage) => void, fatal: boolean, message: string): Promise<void> {
    const isFatal = fatal && this.writable;
    if (this.signal.signaled && (!isFatal || this.dead)) return;
    emit({
      text: isFatal
        ? `qcow2: Marking image as corrupt: ${message}; further corruption events will be suppressed`
        : `qcow2: Image is corrupt: ${message}; further non-fatal corruption events will be suppressed`,
      report: false,
    });
    this.signal.signaled = true;
    if (isFatal) {
      this.dead = true;
      await this.setIncompatibleBit(1n << 1n, true).catch(() => undefined);
    }
  }

  /**
   * What qemu does when it opens an image for writing: autoclear bits it does not know are
   * cleared in the header (the features they announce may no longer hold after a change). qemu
   * rewrites the whole header there, which in check mode also drops the snapshot count; only the
   * field is written here.
   */
  async clearUnknownAutoclearBits(): Promise<void> {
    const unknown = this.header.autoclearFeatures & ~KNOWN_AUTOCLEAR_FEATURES;
    if (!this.writable || this.header.version < 3 || unknown === 0n) return;
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setBigUint64(0, this.header.autoclearFeatures & KNOWN_AUTOCLEAR_FEATURES);
    await this.write(bytes, 88, true);
  }

  /** Sets or clears a bit of incompatible_features in the header on disk (v3 only) and flushes. */
  async setIncompatibleBit(bit: bigint, on: boolean): Promise<void> {
    if (this.header.version < 3 || !this.writable) return;
    const bytes = new Uint8Array(8);
    try {
      await readFully(this.storage, bytes, 72);
      const view = new DataView(bytes.buffer);
      let value = view.getBigUint64(0);
      const next = on ? value | bit : value & ~bit;
      if (next === value) return;
      value = next;
      view.setBigUint64(0, value);
      await this.storage.write(bytes, 72);
      await this.storage.flush();
    } catch (error) {
      throw abortFrom(error);
    }
  }
}

/** Arguments of checkImage that are not a repair mode. */
export function checkRepairMode(value: unknown): 'none' | 'leaks' | 'all' {
  if (value === undefined) return 'none';
  if (value === 'none' || value === 'leaks' || value === 'all') return value;
  throw invalidArgument(`check: repair must be 'none', 'leaks' or 'all', not ${String(value)}`);
}

/** Rejects a non-Storage argument. */
export function checkStorageArgument(storage: unknown): asserts storage is Storage {
  if (typeof storage !== 'object' || storage === null || typeof (storage as Storage).read !== 'function') {
    throw invalidArgument('check: storage is not a Storage');
  }
}

/**
 * For a cluster whose refcount the Refcounts cannot read: true when qemu reads its refcount
 * block as zeros (an aligned offset at or past 2^53 that qemu's block layer still accepts).
 */
export function refcountBlockReadsAsZero(image: CheckImage, cluster: number): boolean {
  const index = Math.floor(cluster / 2 ** (image.clusterBits + 3 - image.refcountOrder));
  if (index >= image.refcountTableSize) return false;
  const view = new DataView(image.refcountTable.buffer, image.refcountTable.byteOffset, image.refcountTable.byteLength);
  const hi = view.getUint32(index * 8);
  const lo = view.getUint32(index * 8 + 4);
  const offset = u64(hi, (lo & 0xffff_fe00) >>> 0);
  return typeof offset === 'bigint' && !offsetIntoCluster(offset, image.clusterSize) && withinBlockLayer(offset, image.clusterSize);
}
