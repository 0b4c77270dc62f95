import type { TableCache } from '@qcow2/cache';
import {
  compressedByteLength,
  compressedHostOffset,
  compressedSizeShift,
  corrupt,
  hex,
  invalidArgument,
  l2EntryProblem,
  l2SubclusterType,
  L1E_RESERVED_HI,
  L2E_COMPRESSED_HI,
  L2E_ZERO_LO,
  L1E_RESERVED_LO,
  MAX_CLUSTER_BITS,
  MIN_CLUSTER_BITS,
  MIN_EXTENDED_L2_CLUSTER_BITS,
  SUBCLUSTER_COMPRESSED,
  SUBCLUSTER_INVALID,
  SUBCLUSTER_NORMAL,
  SUBCLUSTER_UNALLOCATED_ALLOC,
  SUBCLUSTER_UNALLOCATED_PLAIN,
  SUBCLUSTER_ZERO_ALLOC,
  SUBCLUSTER_ZERO_PLAIN,
  type L2Options,
  type SubclusterType,
} from '@qcow2/format';
import type { L1Table } from './l1-table.js';
import { copyRun, createRun, type MappingRun } from './mapping-run.js';

export interface ClusterMapOptions {
  /** log2 of the cluster size (9..21). */
  clusterBits: number;
  /** Extended L2 entries (incompatible bit 4): 16-byte entries, 32 subclusters per cluster. */
  extendedL2?: boolean;
  /** Image version: version 2 has no ZERO flag (an entry with it is corrupt, as qemu says). */
  version?: 2 | 3;
  /** The L1 table to map through (the active one, or a snapshot's). */
  l1: L1Table;
  /**
   * The L2 table cache over the image file: its entry size is the slice size (qemu's
   * l2-cache-entry-size, a power of two from 512 bytes to the cluster size).
   */
  l2Cache: TableCache;
  /**
   * The image has an external data file (incompatible bit 2): host offsets are offsets in that
   * file and must equal the guest offsets; offset 0 with COPIED is an allocated cluster;
   * compressed clusters are corrupt.
   */
  externalDataFile?: boolean;
  /**
   * Refuse, beyond what qemu refuses when it reads: reserved bits in L1 and L2 entries (and
   * every other problem `qemu-img check` reports for an entry), L2 tables and clusters that
   * start at or past the end of their file. qemu reads those as if the bits were clear and
   * the missing bytes zeros; so does this map unless `strict` is set. Needs `imageFileSize`.
   */
  strict?: boolean;
  /** Size of the image file (strict mode: L2 tables and compressed clusters). */
  imageFileSize?: number;
  /** Size of the data file (strict mode: data clusters); defaults to `imageFileSize`. */
  dataFileSize?: number;
}

const TWO_POW_32 = 0x1_0000_0000;
/** Bits 53..55 of an offset field (in the high word): an offset of 2^53 or more. */
const ABOVE_2_53_HI = 0x00e0_0000;
const OFFSET_MASK_HI = 0x00ff_ffff;
const OFFSET_MASK_LO = 0xffff_fe00;
const SUBCLUSTERS = 32;

function u32(b: Uint8Array, i: number): number {
  return ((b[i]! << 24) | (b[i + 1]! << 16) | (b[i + 2]! << 8) | b[i + 3]!) >>> 0;
}

function trailingZeros(x: number): number {
  return x === 0 ? 32 : 31 - Math.clz32(x & -x);
}

function hex16(hi: number, lo: number): string {
  return '0x' + hi.toString(16).padStart(8, '0') + (lo >>> 0).toString(16).padStart(8, '0');
}

/**
 * Subclusters from `sc` on with the same type as subcluster `sc` (qemu's
 * qcow2_get_subcluster_range_type). Only for extended entries of a valid type.
 */
function subclusterRunLength(type: SubclusterType, bitmapHi: number, bitmapLo: number, sc: number): number {
  const below = sc === 0 ? 0 : 0xffff_ffff >>> (SUBCLUSTERS - sc);
  switch (type) {
    case SUBCLUSTER_NORMAL:
      return trailingZeros(~(bitmapLo | below)) - sc;
    case SUBCLUSTER_ZERO_PLAIN:
    case SUBCLUSTER_ZERO_ALLOC:
      return trailingZeros(~(bitmapHi | below)) - sc;
    case SUBCLUSTER_UNALLOCATED_PLAIN:
    case SUBCLUSTER_UNALLOCATED_ALLOC:
      return trailingZeros((bitmapHi | bitmapLo) & ~below) - sc;
    default:
      return SUBCLUSTERS - sc;
  }
}

/**
 * Guest → host mapping of one qcow2 image through an L1 table and cached L2 slices.
 *
 * A lookup answers with one run: the longest stretch from the requested offset that has the
 * same kind and (for data) is contiguous in the data file, within one L2 slice (a compressed
 * run covers at most one cluster). Entries are checked as qemu checks them on a read:
 * cluster-aligned L2 table and host offsets, offsets below 2^53, no ZERO flag in version 2
 * images, consistent subcluster bitmaps, external data file offsets equal to the guest offsets,
 * no compressed cluster with an external data file. A bad entry is a Qcow2Error CORRUPT naming
 * the table's offset and the entry's index.
 */
export class ClusterMap {
  readonly clusterBits: number;
  readonly clusterSize: number;
  readonly extendedL2: boolean;
  /** Bytes per L2 entry: 8, or 16 with extended L2 entries. */
  readonly l2EntrySize: number;
  /** Entries per L2 table. */
  readonly l2Entries: number;
  /** Guest bytes one L1 entry maps. */
  readonly l1Span: number;
  readonly subclusterSize: number;
  readonly l1: L1Table;
  readonly #cache: TableCache;
  readonly #sliceEntries: number;
  readonly #version: 2 | 3;
  readonly #externalDataFile: boolean;
  readonly #strict: boolean;
  readonly #imageFileSize: number;
  readonly #dataFileSize: number;
  readonly #l2Options: L2Options;

  constructor(options: ClusterMapOptions) {
    const { clusterBits, l1, l2Cache } = options;
    const extendedL2 = options.extendedL2 === true;
    if (!Number.isInteger(clusterBits) || clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
      throw invalidArgument(`cluster map: clusterBits ${clusterBits} is not in ${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS}`);
    }
    if (extendedL2 && clusterBits < MIN_EXTENDED_L2_CLUSTER_BITS) {
      throw invalidArgument(`cluster map: extended L2 entries need clusterBits ≥ ${MIN_EXTENDED_L2_CLUSTER_BITS}, got ${clusterBits}`);
    }
    this.clusterBits = clusterBits;
    this.clusterSize = 2 ** clusterBits;
    this.extendedL2 = extendedL2;
    this.l2EntrySize = extendedL2 ? 16 : 8;
    this.l2Entries = this.clusterSize / this.l2EntrySize;
    this.l1Span = this.l2Entries * this.clusterSize;
    this.subclusterSize = extendedL2 ? this.clusterSize / SUBCLUSTERS : this.clusterSize;
    this.l1 = l1;
    const sliceSize = l2Cache.entrySize;
    if (
      !Number.isInteger(sliceSize) ||
      sliceSize < 512 ||
      sliceSize > this.clusterSize ||
      (sliceSize & (sliceSize - 1)) !== 0
    ) {
      throw invalidArgument(
        `cluster map: L2 slice size ${sliceSize} must be a power of two between 512 and the cluster size (${this.clusterSize})`,
      );
    }
    this.#cache = l2Cache;
    this.#sliceEntries = sliceSize / this.l2EntrySize;
    this.#version = options.version ?? 3;
    this.#externalDataFile = options.externalDataFile === true;
    this.#strict = options.strict === true;
    if (this.#strict && options.imageFileSize === undefined) {
      throw invalidArgument('cluster map: strict mode needs imageFileSize');
    }
    this.#imageFileSize = options.imageFileSize ?? Number.MAX_SAFE_INTEGER;
    this.#dataFileSize = options.dataFileSize ?? this.#imageFileSize;
    this.#l2Options = { clusterBits, extended: extendedL2, externalDataFile: this.#externalDataFile };
  }

  /** A map over another L1 table (a snapshot's) sharing this one's slices and settings. */
  withL1(l1: L1Table): ClusterMap {
    const options: ClusterMapOptions = {
      clusterBits: this.clusterBits,
      extendedL2: this.extendedL2,
      version: this.#version,
      l1,
      l2Cache: this.#cache,
      externalDataFile: this.#externalDataFile,
      strict: this.#strict,
      dataFileSize: this.#dataFileSize,
    };
    if (this.#imageFileSize !== Number.MAX_SAFE_INTEGER) options.imageFileSize = this.#imageFileSize;
    return new ClusterMap(options);
  }

  /**
   * Fills `run` with the mapping of `[offset, offset + maxLength)` from `offset` on, without
   * waiting: returns false, leaving `run` untouched, when that needs an L2 slice that is not in
   * memory (then call {@link lookup}). Allocates nothing.
   */
  lookupCached(offset: number, maxLength: number, run: MappingRun): boolean {
    const l1Index = Math.floor(offset / this.l1Span);
    const l2Offset = this.#unmappedOrL2Offset(l1Index, offset, maxLength, run);
    if (l2Offset < 0) return true;
    const clusterIndex = Math.floor(offset / this.clusterSize);
    const l2Index = clusterIndex % this.l2Entries;
    const sliceFirst = l2Index - (l2Index % this.#sliceEntries);
    const entry = this.#cache.peek(l2Offset + sliceFirst * this.l2EntrySize);
    if (entry === undefined) return false;
    this.#fill(entry.bytes, l2Offset, sliceFirst, l2Index, clusterIndex, offset, maxLength, run);
    return true;
  }

  /** {@link lookupCached}, loading the L2 slice when it is not in memory. */
  async lookup(offset: number, maxLength: number, run: MappingRun): Promise<void> {
    if (this.lookupCached(offset, maxLength, run)) return;
    const l1Index = Math.floor(offset / this.l1Span);
    const l2Offset = this.#unmappedOrL2Offset(l1Index, offset, maxLength, run);
    if (l2Offset < 0) return;
    const clusterIndex = Math.floor(offset / this.clusterSize);
    const l2Index = clusterIndex % this.l2Entries;
    const sliceFirst = l2Index - (l2Index % this.#sliceEntries);
    const entry = await this.#cache.acquire(l2Offset + sliceFirst * this.l2EntrySize);
    try {
      this.#fill(entry.bytes, l2Offset, sliceFirst, l2Index, clusterIndex, offset, maxLength, run);
    } finally {
      this.#cache.release(entry);
    }
  }

  /** Every run covering `[offset, offset + length)`, in order. Allocates; for maps and tests. */
  async runs(offset: number, length: number): Promise<MappingRun[]> {
    const out: MappingRun[] = [];
    const run = createRun();
    let at = offset;
    const end = offset + length;
    while (at < end) {
      await this.lookup(at, end - at, run);
      if (!(run.length > 0)) throw corrupt(`cluster map: empty run at guest offset ${hex(at)}`);
      out.push(copyRun(run));
      at += run.length;
    }
    return out;
  }

  /**
   * The L2 table offset for L1 entry `l1Index`, checked; or -1 after filling `run` with an
   * unallocated run when there is none (past the end of the L1 table, or a zero entry: then the
   * run extends over the following zero entries, without reading anything).
   */
  #unmappedOrL2Offset(l1Index: number, offset: number, maxLength: number, run: MappingRun): number {
    const l1 = this.l1;
    if (l1Index >= l1.size) {
      setRun(run, 'unallocated', offset, maxLength, -1, 0);
      return -1;
    }
    const hi = l1.view.getUint32(l1Index * 8);
    const lo = l1.view.getUint32(l1Index * 8 + 4);
    if ((hi & OFFSET_MASK_HI) === 0 && (lo & OFFSET_MASK_LO) === 0) {
      if (this.#strict) this.#checkL1Reserved(l1Index, hi, lo);
      const end = offset + maxLength;
      let spanEnd = (l1Index + 1) * this.l1Span;
      for (let i = l1Index + 1; spanEnd < end; i++, spanEnd += this.l1Span) {
        if (i >= l1.size) {
          spanEnd = end;
          break;
        }
        if ((l1.view.getUint32(i * 8) & OFFSET_MASK_HI) !== 0 || (l1.view.getUint32(i * 8 + 4) & OFFSET_MASK_LO) !== 0) break;
      }
      setRun(run, 'unallocated', offset, Math.min(end, spanEnd) - offset, -1, 0);
      return -1;
    }
    if ((hi & ABOVE_2_53_HI) !== 0) {
      if (((lo & OFFSET_MASK_LO) >>> 0) % this.clusterSize !== 0 || this.#strict) {
        throw corrupt(
          `${this.#l1Where(l1Index)}: L2 table offset ${hex16(hi & OFFSET_MASK_HI, lo & OFFSET_MASK_LO)} ${this.#strict ? 'exceeds 2^53' : 'is not cluster-aligned'}`,
        );
      }
      // Past the end of any file: qemu reads the table as zeros, so nothing here is allocated.
      setRun(run, 'unallocated', offset, Math.min(offset + maxLength, (l1Index + 1) * this.l1Span) - offset, -1, 0);
      return -1;
    }
    const l2Offset = (hi & OFFSET_MASK_HI) * TWO_POW_32 + ((lo & OFFSET_MASK_LO) >>> 0);
    if (l2Offset % this.clusterSize !== 0) {
      throw corrupt(`${this.#l1Where(l1Index)}: L2 table offset ${hex(l2Offset)} is not cluster-aligned`);
    }
    if (this.#strict) {
      this.#checkL1Reserved(l1Index, hi, lo);
      if (l2Offset >= this.#imageFileSize) {
        throw corrupt(
          `${this.#l1Where(l1Index)}: L2 table offset ${hex(l2Offset)} is past the end of the file (${hex(this.#imageFileSize)})`,
        );
      }
    }
    return l2Offset;
  }

  #checkL1Reserved(l1Index: number, hi: number, lo: number): void {
    if ((hi & L1E_RESERVED_HI) !== 0 || (lo & L1E_RESERVED_LO) !== 0) {
      throw corrupt(`${this.#l1Where(l1Index)}: reserved bits are set (entry ${hex16(hi, lo)})`);
    }
  }

  #l1Where(l1Index: number): string {
    return `L1 entry at ${hex(this.l1.offset)} index ${l1Index}`;
  }

  #fill(
    slice: Uint8Array,
    l2Offset: number,
    sliceFirst: number,
    l2Index: number,
    clusterIndex: number,
    offset: number,
    maxLength: number,
    run: MappingRun,
  ): void {
    const clusterSize = this.clusterSize;
    const extended = this.extendedL2;
    const entrySize = this.l2EntrySize;
    const dataFile = this.#externalDataFile;
    const clusterStart = clusterIndex * clusterSize;
    const inCluster = offset - clusterStart;
    const sc = extended ? Math.floor(inCluster / this.subclusterSize) : 0;
    const limit = Math.min(offset + maxLength, clusterStart + (sliceFirst + this.#sliceEntries - l2Index) * clusterSize);

    let p = (l2Index - sliceFirst) * entrySize;
    let hi = ((slice[p]! << 24) | (slice[p + 1]! << 16) | (slice[p + 2]! << 8) | slice[p + 3]!) >>> 0;
    let lo = ((slice[p + 4]! << 24) | (slice[p + 5]! << 16) | (slice[p + 6]! << 8) | slice[p + 7]!) >>> 0;
    // The common case first, without helper calls (a sequential read runs this per request): a
    // standard entry of an allocated, uncompressed, non-zero cluster below 2^53, cluster-aligned,
    // that the request ends in. The checks are those of the general path below, which gives
    // every other entry (and every error) its treatment.
    if (
      !extended &&
      !dataFile &&
      !this.#strict &&
      (hi & (L2E_COMPRESSED_HI | ABOVE_2_53_HI)) === 0 &&
      (lo & L2E_ZERO_LO) === 0 &&
      limit <= clusterStart + clusterSize
    ) {
      const host = (hi & OFFSET_MASK_HI) * TWO_POW_32 + ((lo & OFFSET_MASK_LO) >>> 0);
      if (host !== 0 && host % clusterSize === 0) {
        run.kind = 'data';
        run.offset = offset;
        run.length = limit - offset;
        run.hostOffset = host + inCluster;
        run.compressedLength = 0;
        return;
      }
    }
    let bitmapHi = extended ? u32(slice, p + 8) : 0;
    let bitmapLo = extended ? u32(slice, p + 12) : 0;
    if (this.#strict) this.#checkEntry(l2Offset, l2Index, hi, lo, bitmapHi, bitmapLo);
    const type = l2SubclusterType(hi, lo, bitmapHi, bitmapLo, sc, extended, dataFile);

    if (type === SUBCLUSTER_INVALID) {
      throw corrupt(
        `${l2Where(l2Offset, l2Index)}: subcluster bitmap ${hex16(bitmapHi, bitmapLo)} contradicts the entry ${hex16(hi, lo)}`,
      );
    }
    if (type === SUBCLUSTER_COMPRESSED) {
      if (dataFile) {
        throw corrupt(`${l2Where(l2Offset, l2Index)}: compressed cluster in an image with an external data file`);
      }
      const offsetHi = hi & ((1 << (compressedSizeShift(this.clusterBits) - 32)) - 1);
      if (offsetHi > 0x1f_ffff) {
        throw corrupt(`${l2Where(l2Offset, l2Index)}: compressed cluster offset ${hex16(offsetHi, lo)} exceeds 2^53`);
      }
      const hostOffset = compressedHostOffset(hi, lo, this.clusterBits);
      if (this.#strict && hostOffset >= this.#imageFileSize) {
        throw corrupt(
          `${l2Where(l2Offset, l2Index)}: compressed cluster offset ${hex(hostOffset)} is past the end of the file (${hex(this.#imageFileSize)})`,
        );
      }
      const length = Math.min(limit, clusterStart + clusterSize) - offset;
      setRun(run, 'compressed', offset, length, hostOffset, compressedByteLength(hi, lo, this.clusterBits));
      return;
    }
    if (this.#version === 2 && (type === SUBCLUSTER_ZERO_PLAIN || type === SUBCLUSTER_ZERO_ALLOC)) {
      throw corrupt(`${l2Where(l2Offset, l2Index)}: zero cluster entry ${hex16(hi, lo)} in a version 2 image`);
    }

    const hasHost = type === SUBCLUSTER_NORMAL || type === SUBCLUSTER_ZERO_ALLOC || type === SUBCLUSTER_UNALLOCATED_ALLOC;
    let host = -1;
    if (hasHost) {
      if ((hi & ABOVE_2_53_HI) !== 0) {
        const where = `${l2Where(l2Offset, l2Index)}: host offset ${hex16(hi & OFFSET_MASK_HI, lo & OFFSET_MASK_LO)}`;
        if (((lo & OFFSET_MASK_LO) >>> 0) % clusterSize !== 0) throw corrupt(`${where} is not cluster-aligned`);
        if (dataFile) throw corrupt(`${where} does not match the guest offset ${hex(clusterStart)} (external data file)`);
        if (this.#strict) throw corrupt(`${where} exceeds 2^53`);
        // Past the end of any file: qemu reads zeros there. One entry at a time.
        const count = extended ? subclusterRunLength(type, bitmapHi, bitmapLo, sc) : 1;
        const end = extended ? clusterStart + (sc + count) * this.subclusterSize : clusterStart + clusterSize;
        setRun(run, type === SUBCLUSTER_UNALLOCATED_ALLOC ? 'unallocated' : 'zero', offset, Math.min(end, limit) - offset, -1, 0);
        return;
      }
      host = (hi & OFFSET_MASK_HI) * TWO_POW_32 + ((lo & OFFSET_MASK_LO) >>> 0);
      if (host % clusterSize !== 0) {
        throw corrupt(`${l2Where(l2Offset, l2Index)}: host offset ${hex(host)} is not cluster-aligned`);
      }
      if (dataFile && host !== clusterStart) {
        throw corrupt(
          `${l2Where(l2Offset, l2Index)}: external data file host offset ${hex(host)} does not match the guest offset ${hex(clusterStart)}`,
        );
      }
      if (this.#strict && host >= this.#dataFileSize) {
        throw corrupt(
          `${l2Where(l2Offset, l2Index)}: host offset ${hex(host)} is past the end of the ${dataFile ? 'data ' : ''}file (${hex(this.#dataFileSize)})`,
        );
      }
    }

    let end: number;
    if (extended) {
      const count = subclusterRunLength(type, bitmapHi, bitmapLo, sc);
      end = clusterStart + (sc + count) * this.subclusterSize;
      if (sc + count < SUBCLUSTERS) {
        fillFound(run, type, offset, Math.min(end, limit) - offset, host + inCluster);
        return;
      }
    } else {
      end = clusterStart + clusterSize;
    }

    // Following entries of the slice, while they continue the run.
    let expected = host + clusterSize;
    let index = l2Index + 1;
    while (end < limit) {
      p += entrySize;
      hi = u32(slice, p);
      lo = u32(slice, p + 4);
      if (extended) {
        bitmapHi = u32(slice, p + 8);
        bitmapLo = u32(slice, p + 12);
      }
      if (l2SubclusterType(hi, lo, bitmapHi, bitmapLo, 0, extended, dataFile) !== type) break;
      if (hasHost) {
        if ((hi & ABOVE_2_53_HI) !== 0) break;
        if ((hi & OFFSET_MASK_HI) * TWO_POW_32 + ((lo & OFFSET_MASK_LO) >>> 0) !== expected) break;
        expected += clusterSize;
      }
      if (this.#strict) this.#checkEntry(l2Offset, index, hi, lo, bitmapHi, bitmapLo);
      if (extended) {
        const count = subclusterRunLength(type, bitmapHi, bitmapLo, 0);
        end += count * this.subclusterSize;
        if (count < SUBCLUSTERS) break;
      } else {
        end += clusterSize;
      }
      index++;
    }
    fillFound(run, type, offset, Math.min(end, limit) - offset, host + inCluster);
  }

  #checkEntry(l2Offset: number, index: number, hi: number, lo: number, bitmapHi: number, bitmapLo: number): void {
    const problem = l2EntryProblem(hi, lo, bitmapHi, bitmapLo, this.#l2Options);
    if (problem !== undefined) throw corrupt(`${l2Where(l2Offset, index)}: ${problem}`);
  }
}

function l2Where(l2Offset: number, index: number): string {
  return `L2 entry at ${hex(l2Offset)} index ${index}`;
}

function setRun(
  run: MappingRun,
  kind: MappingRun['kind'],
  offset: number,
  length: number,
  hostOffset: number,
  compressedLength: number,
): void {
  run.kind = kind;
  run.offset = offset;
  run.length = length;
  run.hostOffset = hostOffset;
  run.compressedLength = compressedLength;
}

/** `hostFirst` is the host offset of the run's first byte, meaningful only for allocated types. */
function fillFound(run: MappingRun, type: SubclusterType, offset: number, length: number, hostFirst: number): void {
  switch (type) {
    case SUBCLUSTER_NORMAL:
      setRun(run, 'data', offset, length, hostFirst, 0);
      return;
    case SUBCLUSTER_ZERO_ALLOC:
      setRun(run, 'zero', offset, length, hostFirst, 0);
      return;
    case SUBCLUSTER_ZERO_PLAIN:
      setRun(run, 'zero', offset, length, -1, 0);
      return;
    case SUBCLUSTER_UNALLOCATED_ALLOC:
      setRun(run, 'unallocated', offset, length, hostFirst, 0);
      return;
    default:
      setRun(run, 'unallocated', offset, length, -1, 0);
  }
}

/** A {@link ClusterMap}. */
export function createClusterMap(options: ClusterMapOptions): ClusterMap {
  return new ClusterMap(options);
}
