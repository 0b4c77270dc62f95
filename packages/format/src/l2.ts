import { viewOf } from './binary.js';
import { corrupt, hex, invalidArgument } from './errors.js';
import { entryWhere } from './l1.js';
import { L1E_OFFSET_MASK_HI, L1E_OFFSET_MASK_LO, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS } from './limits.js';

/**
 * L2 table entries (docs/interop/qcow2.txt, "Cluster mapping" and "Extended L2 Entries").
 *
 * A standard entry is 64 bits, big-endian:
 *
 *   bit  63      COPIED: refcount exactly 1 (never set on compressed clusters)
 *   bit  62      COMPRESSED
 *   standard descriptor (bit 62 clear):
 *     bit  0       ZERO: reads as zeros (never used with extended L2 entries or version 2)
 *     bits 1..8    reserved
 *     bits 9..55   host cluster offset (cluster-aligned); 0 = unallocated
 *     bits 56..61  reserved
 *   compressed descriptor (bit 62 set), x = 62 - (cluster_bits - 8):
 *     bits 0..x-1  host byte offset of the compressed data (bits above 55 must be 0)
 *     bits x..61   additional 512-byte sectors after the one holding the offset
 *
 * An extended entry (incompatible bit 4) is 128 bits: the standard entry, then a subcluster
 * bitmap whose bits 0..31 mark subcluster x allocated and bits 32..63 mark it as reading zeros.
 *
 * Hot-path functions take 32-bit halves (`hi` = bits 32..63 and `lo` = bits 0..31 of the
 * standard entry; `bitmapHi` = the zero bits, `bitmapLo` = the allocation bits) or a DataView
 * and an entry index, and allocate nothing. The decoded union ({@link decodeL2Entry}) is for
 * tests, check and tooling.
 */

export const L2_ENTRY_SIZE = 8;
export const L2_EXTENDED_ENTRY_SIZE = 16;
export const SUBCLUSTERS_PER_CLUSTER = 32;
/** Bytes of a compressed sector, the unit of a compressed descriptor's length. */
export const COMPRESSED_SECTOR_SIZE = 512;

/** Flags in the high word (bits 63 and 62). */
export const L2E_COPIED_HI = 0x8000_0000;
export const L2E_COMPRESSED_HI = 0x4000_0000;
/** The ZERO flag (bit 0) in the low word. */
export const L2E_ZERO_LO = 0x1;
/** Reserved bits of a standard descriptor: qemu's L2E_STD_RESERVED_MASK (bits 56..61, 1..8). */
export const L2E_STD_RESERVED_HI = 0x3f00_0000;
export const L2E_STD_RESERVED_LO = 0x1fe;

/** Cluster types, as qemu's QCow2ClusterType. */
export const L2_UNALLOCATED = 0;
/** ZERO flag, no host offset (standard entries only). */
export const L2_ZERO_PLAIN = 1;
/** ZERO flag with a preallocated host offset (standard entries only). */
export const L2_ZERO_ALLOC = 2;
export const L2_NORMAL = 3;
export const L2_COMPRESSED = 4;
export type L2ClusterType = 0 | 1 | 2 | 3 | 4;

/** Subcluster types, as qemu's QCow2SubclusterType. */
export const SUBCLUSTER_UNALLOCATED_PLAIN = 0;
/** In an allocated cluster, but this subcluster is not allocated (extended entries only). */
export const SUBCLUSTER_UNALLOCATED_ALLOC = 1;
export const SUBCLUSTER_ZERO_PLAIN = 2;
export const SUBCLUSTER_ZERO_ALLOC = 3;
export const SUBCLUSTER_NORMAL = 4;
export const SUBCLUSTER_COMPRESSED = 5;
/** The entry's bitmap contradicts its type: the image is corrupt. */
export const SUBCLUSTER_INVALID = 6;
export type SubclusterType = 0 | 1 | 2 | 3 | 4 | 5 | 6;

const TWO_POW_32 = 0x1_0000_0000;
const ABOVE_2_53_HI = 0x00e0_0000;

// ---------------------------------------------------------------------------------------------
// Geometry

/** Entries per L2 table: cluster_size / 8, or / 16 with extended L2 entries. */
export function l2EntriesPerTable(clusterBits: number, extended: boolean): number {
  return 2 ** (clusterBits - (extended ? 4 : 3));
}

/** Index into the L1 table of the entry mapping `guestOffset`. */
export function l1IndexOf(guestOffset: number, clusterBits: number, extended: boolean): number {
  return Math.floor(guestOffset / 2 ** (2 * clusterBits - (extended ? 4 : 3)));
}

/** Index into its L2 table of the entry mapping `guestOffset`. */
export function l2IndexOf(guestOffset: number, clusterBits: number, extended: boolean): number {
  return Math.floor(guestOffset / 2 ** clusterBits) % 2 ** (clusterBits - (extended ? 4 : 3));
}

/** Index of the subcluster holding `guestOffset` within its cluster (extended entries). */
export function subclusterIndexOf(guestOffset: number, clusterBits: number): number {
  return Math.floor(guestOffset / 2 ** (clusterBits - 5)) % SUBCLUSTERS_PER_CLUSTER;
}

// ---------------------------------------------------------------------------------------------
// Hot path: halves

/**
 * The cluster type of a standard entry (the first 64 bits of an extended one), as qemu's
 * qcow2_get_cluster_type: COMPRESSED if bit 62, ZERO_* if bit 0 (standard entries only), else
 * NORMAL when the offset is non-zero (or, with an external data file, when COPIED is set),
 * else UNALLOCATED. Does not check reserved bits: see {@link l2EntryProblem}.
 */
export function l2EntryType(hi: number, lo: number, extended: boolean, externalDataFile = false): L2ClusterType {
  if ((hi & L2E_COMPRESSED_HI) !== 0) return L2_COMPRESSED;
  const hasOffset = (hi & L1E_OFFSET_MASK_HI) !== 0 || (lo & L1E_OFFSET_MASK_LO) !== 0;
  if ((lo & L2E_ZERO_LO) !== 0 && !extended) return hasOffset ? L2_ZERO_ALLOC : L2_ZERO_PLAIN;
  if (hasOffset) return L2_NORMAL;
  return externalDataFile && (hi & L2E_COPIED_HI) !== 0 ? L2_NORMAL : L2_UNALLOCATED;
}

/**
 * The type of subcluster `scIndex` (0..31; 0 for standard entries), as qemu's
 * qcow2_get_subcluster_type: for extended entries, INVALID when the bitmap contradicts the
 * cluster type (allocated and zero bits both set; allocation bits on an unallocated cluster).
 * A compressed entry's bitmap must be 0; that is reported by {@link l2EntryProblem}, as qemu's
 * check does, not here.
 */
export function l2SubclusterType(
  hi: number,
  lo: number,
  bitmapHi: number,
  bitmapLo: number,
  scIndex: number,
  extended: boolean,
  externalDataFile = false,
): SubclusterType {
  const type = l2EntryType(hi, lo, extended, externalDataFile);
  if (!extended) {
    switch (type) {
      case L2_COMPRESSED:
        return SUBCLUSTER_COMPRESSED;
      case L2_ZERO_PLAIN:
        return SUBCLUSTER_ZERO_PLAIN;
      case L2_ZERO_ALLOC:
        return SUBCLUSTER_ZERO_ALLOC;
      case L2_NORMAL:
        return SUBCLUSTER_NORMAL;
      default:
        return SUBCLUSTER_UNALLOCATED_PLAIN;
    }
  }
  if (type === L2_COMPRESSED) return SUBCLUSTER_COMPRESSED;
  const bit = 1 << scIndex;
  if (type === L2_NORMAL) {
    if ((bitmapHi & bitmapLo) !== 0) return SUBCLUSTER_INVALID;
    if ((bitmapHi & bit) !== 0) return SUBCLUSTER_ZERO_ALLOC;
    if ((bitmapLo & bit) !== 0) return SUBCLUSTER_NORMAL;
    return SUBCLUSTER_UNALLOCATED_ALLOC;
  }
  if (bitmapLo !== 0) return SUBCLUSTER_INVALID;
  return (bitmapHi & bit) !== 0 ? SUBCLUSTER_ZERO_PLAIN : SUBCLUSTER_UNALLOCATED_PLAIN;
}

/** Bit 63 of a standard entry's high word. */
export function l2Copied(hi: number): boolean {
  return (hi & L2E_COPIED_HI) !== 0;
}

/**
 * The host cluster offset (bits 9..55) of a standard (not compressed) entry; 0 when there is
 * none. Throws CORRUPT above 2^53. Allocation-free.
 */
export function l2HostOffset(hi: number, lo: number): number {
  if ((hi & ABOVE_2_53_HI) !== 0) {
    throw corrupt(`L2 entry: host offset 0x${(hi & L1E_OFFSET_MASK_HI).toString(16)}${hex8(lo & L1E_OFFSET_MASK_LO)} exceeds 2^53`);
  }
  return (hi & L1E_OFFSET_MASK_HI) * TWO_POW_32 + ((lo & L1E_OFFSET_MASK_LO) >>> 0);
}

/** Bit position x of a compressed descriptor's sector count: 62 - (cluster_bits - 8). */
export function compressedSizeShift(clusterBits: number): number {
  return 70 - clusterBits;
}

/** Largest additional-sector count a compressed descriptor holds: 2^(cluster_bits - 8) - 1. */
export function compressedMaxAdditionalSectors(clusterBits: number): number {
  return (1 << (clusterBits - 8)) - 1;
}

/**
 * The host byte offset (bits 0..x-1) of a compressed descriptor. Throws CORRUPT when bits above
 * 52 are set (the spec requires bits above 55 to be 0; above 2^53 is refused, not rounded).
 */
export function compressedHostOffset(hi: number, lo: number, clusterBits: number): number {
  const offsetHi = hi & ((1 << (compressedSizeShift(clusterBits) - 32)) - 1);
  if (offsetHi > 0x1f_ffff) {
    throw corrupt(
      `L2 entry: compressed host offset 0x${offsetHi.toString(16)}${hex8(lo)} ${offsetHi > 0xff_ffff ? 'has bits above 55 set' : 'exceeds 2^53'}`,
    );
  }
  return offsetHi * TWO_POW_32 + (lo >>> 0);
}

/** The additional 512-byte sectors (bits x..61) of a compressed descriptor. */
export function compressedAdditionalSectors(hi: number, clusterBits: number): number {
  return (hi >>> (compressedSizeShift(clusterBits) - 32)) & compressedMaxAdditionalSectors(clusterBits);
}

/**
 * How many bytes to read at {@link compressedHostOffset} for a compressed cluster, as qemu's
 * qcow2_parse_compressed_l2_entry computes it: from the offset to the end of the last sector,
 * (additional sectors + 1) * 512 - (offset % 512). The host clusters this range touches are
 * the ones a compressed cluster holds a reference to.
 */
export function compressedByteLength(hi: number, lo: number, clusterBits: number): number {
  return (
    (compressedAdditionalSectors(hi, clusterBits) + 1) * COMPRESSED_SECTOR_SIZE -
    ((lo >>> 0) % COMPRESSED_SECTOR_SIZE)
  );
}

/**
 * The additional-sector count to store for `byteLength` bytes of compressed data at
 * `hostOffset` (qemu's qcow2_alloc_compressed_cluster_offset): the sectors from the one
 * holding the first byte to the one holding the last, minus one.
 */
export function compressedAdditionalSectorsFor(hostOffset: number, byteLength: number): number {
  return (
    Math.floor((hostOffset + byteLength - 1) / COMPRESSED_SECTOR_SIZE) -
    Math.floor(hostOffset / COMPRESSED_SECTOR_SIZE)
  );
}

// ---------------------------------------------------------------------------------------------
// Hot path: DataView + index

/** Bytes per entry. */
export function l2EntrySize(extended: boolean): number {
  return extended ? L2_EXTENDED_ENTRY_SIZE : L2_ENTRY_SIZE;
}

/** {@link l2EntryType} of entry `index` of the L2 table (or slice) viewed by `view`. */
export function l2EntryTypeAt(view: DataView, index: number, extended: boolean, externalDataFile = false): L2ClusterType {
  const at = index * (extended ? L2_EXTENDED_ENTRY_SIZE : L2_ENTRY_SIZE);
  return l2EntryType(view.getUint32(at), view.getUint32(at + 4), extended, externalDataFile);
}

/** {@link l2SubclusterType} of subcluster `scIndex` of entry `index`. */
export function l2SubclusterTypeAt(
  view: DataView,
  index: number,
  scIndex: number,
  extended: boolean,
  externalDataFile = false,
): SubclusterType {
  if (!extended) {
    const at = index * L2_ENTRY_SIZE;
    return l2SubclusterType(view.getUint32(at), view.getUint32(at + 4), 0, 0, 0, false, externalDataFile);
  }
  const at = index * L2_EXTENDED_ENTRY_SIZE;
  return l2SubclusterType(
    view.getUint32(at),
    view.getUint32(at + 4),
    view.getUint32(at + 8),
    view.getUint32(at + 12),
    scIndex,
    true,
    externalDataFile,
  );
}

/** {@link l2HostOffset} of entry `index` (standard descriptors). */
export function l2HostOffsetAt(view: DataView, index: number, extended: boolean): number {
  const at = index * (extended ? L2_EXTENDED_ENTRY_SIZE : L2_ENTRY_SIZE);
  return l2HostOffset(view.getUint32(at), view.getUint32(at + 4));
}

// ---------------------------------------------------------------------------------------------
// Validation

export interface L2Options {
  /** log2 of the cluster size: the compressed descriptor layout and offset alignment. */
  clusterBits: number;
  /** Extended L2 entries (incompatible feature bit 4): 16-byte entries with a subcluster bitmap. */
  extended?: boolean;
  /** External data file (incompatible bit 2): offset 0 with COPIED set is a normal cluster. */
  externalDataFile?: boolean;
  /** Offset of the table in the image, named in messages. */
  tableOffset?: number;
}

function checkClusterBits(clusterBits: number): void {
  if (!Number.isInteger(clusterBits) || clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw invalidArgument(`L2 options: clusterBits ${clusterBits} is not in ${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS}`);
  }
}

function hex8(value: number): string {
  return (value >>> 0).toString(16).padStart(8, '0');
}

/**
 * What is wrong with an entry, or undefined when it is valid: reserved bits, an offset above
 * 2^53 or not cluster-aligned, COPIED on a compressed cluster, a compressed cluster in an image
 * with an external data file, COPIED on an unallocated entry (without a data file), the ZERO
 * flag in an extended entry, and the subcluster bitmap rules (allocation and zero bits both
 * set for a subcluster; allocation bits on an unallocated cluster; any bit on a compressed one).
 * `bitmapHi`/`bitmapLo` are ignored for standard entries. Allocation-free when valid.
 */
export function l2EntryProblem(
  hi: number,
  lo: number,
  bitmapHi: number,
  bitmapLo: number,
  options: L2Options,
): string | undefined {
  const { clusterBits } = options;
  checkClusterBits(clusterBits);
  const extended = options.extended === true;
  const externalDataFile = options.externalDataFile === true;
  if ((hi & L2E_COMPRESSED_HI) !== 0) {
    if ((hi & L2E_COPIED_HI) !== 0) return 'COPIED flag set on a compressed cluster';
    if (externalDataFile) return 'compressed cluster in an image with an external data file';
    const offsetHi = hi & ((1 << (compressedSizeShift(clusterBits) - 32)) - 1);
    if (offsetHi > 0xff_ffff) return `compressed host offset 0x${offsetHi.toString(16)}${hex8(lo)} has bits above 55 set`;
    if (offsetHi > 0x1f_ffff) return `compressed host offset 0x${offsetHi.toString(16)}${hex8(lo)} exceeds 2^53`;
    if (extended && (bitmapHi !== 0 || bitmapLo !== 0)) {
      return `compressed cluster with a non-zero subcluster bitmap 0x${hex8(bitmapHi)}${hex8(bitmapLo)}`;
    }
    return undefined;
  }
  if ((hi & L2E_STD_RESERVED_HI) !== 0 || (lo & L2E_STD_RESERVED_LO) !== 0) {
    return `reserved bits are set (entry 0x${hex8(hi)}${hex8(lo)})`;
  }
  if (extended && (lo & L2E_ZERO_LO) !== 0) return 'ZERO flag (bit 0) set in an extended L2 entry';
  if ((hi & ABOVE_2_53_HI) !== 0) {
    return `host offset 0x${(hi & L1E_OFFSET_MASK_HI).toString(16)}${hex8(lo & L1E_OFFSET_MASK_LO)} exceeds 2^53`;
  }
  const offset = (hi & L1E_OFFSET_MASK_HI) * TWO_POW_32 + ((lo & L1E_OFFSET_MASK_LO) >>> 0);
  if (offset % 2 ** clusterBits !== 0) return `host offset ${hex(offset)} is not cluster-aligned`;
  if ((lo & L2E_ZERO_LO) !== 0) return undefined;
  const copied = (hi & L2E_COPIED_HI) !== 0;
  if (offset === 0 && !(externalDataFile && copied)) {
    if (copied) return 'COPIED flag set on an unallocated cluster';
    if (extended && bitmapLo !== 0) {
      return `unallocated cluster with subcluster allocation bits 0x${hex8(bitmapLo)}`;
    }
    return undefined;
  }
  if (extended && (bitmapHi & bitmapLo) !== 0) {
    return `subclusters 0x${hex8(bitmapHi & bitmapLo)} are marked both allocated and zero`;
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Decoded form

/** Subcluster bitmap of an extended entry: bit x of each mask is subcluster x. */
export interface SubclusterBitmap {
  /** Bits 0..31: subcluster allocated. */
  allocated: number;
  /** Bits 32..63: subcluster reads as zeros. */
  zero: number;
}

/** An unallocated cluster: reads from the backing file, or zeros. */
export interface L2Unallocated {
  kind: 'unallocated';
  /** Extended entries only: `allocated` is 0, `zero` marks subclusters reading as zeros. */
  subclusters?: SubclusterBitmap;
}

/** The ZERO flag of a standard entry: reads as zeros; `offset` 0 (plain) or preallocated. */
export interface L2Zero {
  kind: 'zero';
  offset: number;
  copied: boolean;
}

/** A standard data cluster at `offset`. */
export interface L2Normal {
  kind: 'normal';
  offset: number;
  copied: boolean;
  /** Extended entries only. */
  subclusters?: SubclusterBitmap;
}

/** A compressed cluster: read {@link compressedByteLength} bytes at `offset`. */
export interface L2Compressed {
  kind: 'compressed';
  /** Host byte offset of the compressed data (any alignment). */
  offset: number;
  /** Additional 512-byte sectors after the one holding `offset`. */
  additionalSectors: number;
}

export type L2Entry = L2Unallocated | L2Zero | L2Normal | L2Compressed;

/**
 * Entry `index` of the L2 table (or slice) viewed by `view`, checked by {@link l2EntryProblem}
 * (CORRUPT with the entry's position when invalid).
 */
export function decodeL2Entry(view: DataView, index: number, options: L2Options): L2Entry {
  checkClusterBits(options.clusterBits);
  const extended = options.extended === true;
  const size = extended ? L2_EXTENDED_ENTRY_SIZE : L2_ENTRY_SIZE;
  const at = index * size;
  if (!(at >= 0 && at + size <= view.byteLength) || !Number.isInteger(index)) {
    throw invalidArgument(`L2 entry index ${index}: outside the ${view.byteLength}-byte table`);
  }
  const hi = view.getUint32(at);
  const lo = view.getUint32(at + 4);
  const bitmapHi = extended ? view.getUint32(at + 8) : 0;
  const bitmapLo = extended ? view.getUint32(at + 12) : 0;
  const problem = l2EntryProblem(hi, lo, bitmapHi, bitmapLo, options);
  if (problem !== undefined) throw corrupt(`${entryWhere('L2', options, index)}: ${problem}`);
  const type = l2EntryType(hi, lo, extended, options.externalDataFile === true);
  switch (type) {
    case L2_COMPRESSED:
      return {
        kind: 'compressed',
        offset: compressedHostOffset(hi, lo, options.clusterBits),
        additionalSectors: compressedAdditionalSectors(hi, options.clusterBits),
      };
    case L2_ZERO_PLAIN:
    case L2_ZERO_ALLOC:
      return { kind: 'zero', offset: l2HostOffset(hi, lo), copied: l2Copied(hi) };
    case L2_NORMAL:
      return extended
        ? { kind: 'normal', offset: l2HostOffset(hi, lo), copied: l2Copied(hi), subclusters: { allocated: bitmapLo, zero: bitmapHi } }
        : { kind: 'normal', offset: l2HostOffset(hi, lo), copied: l2Copied(hi) };
    default:
      return extended ? { kind: 'unallocated', subclusters: { allocated: 0, zero: bitmapHi } } : { kind: 'unallocated' };
  }
}

function checkU32(value: number, what: string, index: number): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw invalidArgument(`L2 entry index ${index}: ${what} ${value} is not an unsigned 32-bit mask`);
  }
}

function checkHostOffset(offset: number, clusterBits: number, index: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset % 2 ** clusterBits !== 0) {
    throw invalidArgument(`L2 entry index ${index}: host offset ${offset} is not a cluster-aligned offset in 0..2^53`);
  }
}

/**
 * Writes `entry` into entry `index` of `view` (16 bytes with extended entries, else 8). Refuses
 * (INVALID_ARGUMENT) what would not decode back to `entry`: see {@link l2EntryProblem}; a
 * normal entry at offset 0 needs an external data file and COPIED; a subcluster bitmap needs
 * extended entries (and is all zeros when omitted there).
 */
export function encodeL2Entry(view: DataView, index: number, entry: L2Entry, options: L2Options): void {
  const { clusterBits } = options;
  checkClusterBits(clusterBits);
  const extended = options.extended === true;
  const size = extended ? L2_EXTENDED_ENTRY_SIZE : L2_ENTRY_SIZE;
  const at = index * size;
  if (!(at >= 0 && at + size <= view.byteLength) || !Number.isInteger(index)) {
    throw invalidArgument(`L2 entry index ${index}: outside the ${view.byteLength}-byte table`);
  }
  let hi = 0;
  let lo = 0;
  let bitmapHi = 0;
  let bitmapLo = 0;
  const bitmap = (sub: SubclusterBitmap | undefined): void => {
    if (sub === undefined) return;
    if (!extended) throw invalidArgument(`L2 entry index ${index}: a subcluster bitmap needs extended L2 entries`);
    checkU32(sub.allocated, 'allocation bitmap', index);
    checkU32(sub.zero, 'zero bitmap', index);
    bitmapLo = sub.allocated;
    bitmapHi = sub.zero;
  };
  switch (entry.kind) {
    case 'unallocated':
      bitmap(entry.subclusters);
      if (bitmapLo !== 0) {
        throw invalidArgument(`L2 entry index ${index}: an unallocated cluster cannot have allocated subclusters`);
      }
      break;
    case 'zero':
      if (extended) throw invalidArgument(`L2 entry index ${index}: extended L2 entries have no ZERO flag`);
      checkHostOffset(entry.offset, clusterBits, index);
      hi = Math.floor(entry.offset / TWO_POW_32);
      lo = (entry.offset >>> 0) | L2E_ZERO_LO;
      if (entry.copied) hi |= L2E_COPIED_HI;
      break;
    case 'normal':
      checkHostOffset(entry.offset, clusterBits, index);
      if (entry.offset === 0 && !(options.externalDataFile === true && entry.copied)) {
        throw invalidArgument(
          `L2 entry index ${index}: a normal cluster at offset 0 needs an external data file and the COPIED flag`,
        );
      }
      bitmap(entry.subclusters);
      if ((bitmapHi & bitmapLo) !== 0) {
        throw invalidArgument(`L2 entry index ${index}: subclusters cannot be both allocated and zero`);
      }
      hi = Math.floor(entry.offset / TWO_POW_32);
      lo = entry.offset >>> 0;
      if (entry.copied) hi |= L2E_COPIED_HI;
      break;
    case 'compressed': {
      if (options.externalDataFile === true) {
        throw invalidArgument(`L2 entry index ${index}: no compressed clusters with an external data file`);
      }
      const shift = compressedSizeShift(clusterBits);
      const { offset, additionalSectors } = entry;
      if (!Number.isSafeInteger(offset) || offset < 0 || offset >= 2 ** Math.min(shift, 56)) {
        throw invalidArgument(`L2 entry index ${index}: compressed host offset ${offset} does not fit in ${Math.min(shift, 56)} bits`);
      }
      const max = compressedMaxAdditionalSectors(clusterBits);
      if (!Number.isInteger(additionalSectors) || additionalSectors < 0 || additionalSectors > max) {
        throw invalidArgument(`L2 entry index ${index}: additional sectors ${additionalSectors} is not in 0..${max}`);
      }
      hi = Math.floor(offset / TWO_POW_32) | (additionalSectors << (shift - 32)) | L2E_COMPRESSED_HI;
      lo = offset >>> 0;
      break;
    }
    default:
      throw invalidArgument(`L2 entry index ${index}: unknown kind ${String((entry as { kind: unknown }).kind)}`);
  }
  view.setUint32(at, hi >>> 0);
  view.setUint32(at + 4, lo >>> 0);
  if (extended) {
    view.setUint32(at + 8, bitmapHi >>> 0);
    view.setUint32(at + 12, bitmapLo >>> 0);
  }
}

/**
 * Every entry of an L2 table or slice (`bytes.length` a multiple of the entry size, at most
 * one cluster).
 */
export function decodeL2Table(bytes: Uint8Array, options: L2Options): L2Entry[] {
  checkClusterBits(options.clusterBits);
  const size = l2EntrySize(options.extended === true);
  if (bytes.byteLength % size !== 0 || bytes.byteLength > 2 ** options.clusterBits) {
    throw invalidArgument(
      `L2 table: ${bytes.byteLength} bytes is not a whole number of ${size}-byte entries within one ${2 ** options.clusterBits}-byte cluster`,
    );
  }
  const view = viewOf(bytes);
  const count = bytes.byteLength / size;
  const out = new Array<L2Entry>(count);
  for (let i = 0; i < count; i++) out[i] = decodeL2Entry(view, i, options);
  return out;
}

/** An L2 table (or slice) holding `entries`. */
export function encodeL2Table(entries: readonly L2Entry[], options: L2Options): Uint8Array {
  const bytes = new Uint8Array(entries.length * l2EntrySize(options.extended === true));
  const view = viewOf(bytes);
  for (let i = 0; i < entries.length; i++) encodeL2Entry(view, i, entries[i]!, options);
  return bytes;
}
