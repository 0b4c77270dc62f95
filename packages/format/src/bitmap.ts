import { alignUp, need, readU64, viewOf, writeU64 } from './binary.js';
import { corrupt, hex, invalidArgument, unsupported } from './errors.js';
import { decodeByteString, encodeByteString } from './extensions.js';
import { entryWhere, type TableContext } from './l1.js';
import {
  L1E_OFFSET_MASK_HI,
  L1E_OFFSET_MASK_LO,
  MAX_BITMAP_DIRECTORY_SIZE,
  MAX_BITMAP_GRANULARITY_BITS,
  MAX_BITMAP_NAME_SIZE,
  MAX_BITMAPS,
  MIN_BITMAP_GRANULARITY_BITS,
} from './limits.js';

/**
 * Persistent dirty bitmaps (docs/interop/qcow2.txt, "Bitmaps"; qemu's block/qcow2-bitmap.c).
 *
 * Bitmap directory entry, starting at an 8-byte boundary:
 *
 *    0..7   bitmap_table_offset (cluster-aligned)
 *    8..11  bitmap_table_size (entries)
 *   12..15  flags: bit 0 in_use, 1 auto, 2 extra_data_compatible; 3..31 reserved
 *       16  type (1: dirty tracking)
 *       17  granularity_bits
 *   18..19  name_size (1..1023 in qemu)
 *   20..23  extra_data_size
 *   24..    extra data, name, zero padding to a multiple of 8
 *
 * Bitmap table entry (64-bit): bits 9..55 the offset of a data cluster; with offset 0, bit 0
 * says whether the cluster reads as all ones (1) or all zeros (0). Bits 1..8 and 56..63 are
 * reserved, and so is bit 0 when there is an offset.
 */

export const BITMAP_DIRECTORY_ENTRY_HEADER_SIZE = 24;
export const BITMAP_TABLE_ENTRY_SIZE = 8;

/** Flag bits. */
export const BITMAP_FLAG_IN_USE = 0x1;
export const BITMAP_FLAG_AUTO = 0x2;
export const BITMAP_FLAG_EXTRA_DATA_COMPATIBLE = 0x4;
export const BITMAP_RESERVED_FLAGS = 0xffff_fff8;

/** The one bitmap type the spec defines. */
export const BITMAP_TYPE_DIRTY_TRACKING = 1;

/** qemu's BME_MAX_TABLE_SIZE: the most entries a bitmap table may have. */
export const MAX_BITMAP_TABLE_SIZE = 0x800_0000;

/** Bitmap table entry: reserved bits 56..63 (high word) and 1..8 (low word); qemu's mask. */
export const BME_TABLE_RESERVED_HI = 0xff00_0000;
export const BME_TABLE_RESERVED_LO = 0x1fe;
/** Bit 0 of a bitmap table entry without an offset: the cluster reads as all ones. */
export const BME_TABLE_ALL_ONES_LO = 0x1;

const TWO_POW_32 = 0x1_0000_0000;

export interface BitmapDirectoryEntry {
  bitmapTableOffset: number;
  /** Entries in the bitmap table. */
  bitmapTableSize: number;
  /** Flag bit 0: the bitmap was not saved cleanly and may be inconsistent. */
  inUse: boolean;
  /** Flag bit 1: the bitmap tracks every write (enabled). */
  auto: boolean;
  /** Flag bit 2: unknown extra data may be ignored (qemu itself treats this bit as reserved). */
  extraDataCompatible: boolean;
  /** 1 = dirty tracking; other values are reserved (kept, not refused, here). */
  type: number;
  /** granularity = 1 << granularityBits bytes per bit (qemu: 9..31). */
  granularityBits: number;
  /** The name, decoded as UTF-8. */
  name: string;
  /** The raw name, present only when its bytes are not the UTF-8 encoding of `name`. */
  nameBytes?: Uint8Array;
  /** Type-specific extra data, byte for byte (qemu refuses to load bitmaps that have any). */
  extraData: Uint8Array;
}

/** Encoded size of a directory entry, padding included. */
export function bitmapDirectoryEntrySize(entry: BitmapDirectoryEntry): number {
  return alignUp(BITMAP_DIRECTORY_ENTRY_HEADER_SIZE + entry.extraData.byteLength + nameBytesOf(entry).byteLength, 8);
}

function nameBytesOf(entry: BitmapDirectoryEntry): Uint8Array {
  return entry.nameBytes === undefined ? encodeByteString({ name: entry.name }) : entry.nameBytes;
}

function whereAt(ctx: TableContext | undefined, offset: number): string {
  return ctx?.tableOffset === undefined
    ? `bitmap directory entry at directory byte ${hex(offset)}`
    : `bitmap directory entry at ${hex(ctx.tableOffset + offset)}`;
}

/**
 * Decodes the directory entry at `offset` of `bytes` (the bitmap directory, from its start).
 * Returns the entry and `end`, the offset past its padding (where the next entry starts).
 * Refuses, before allocating: a header, extra data, name or padding outside `bytes`; name_size
 * 0 (CORRUPT) or above 1023 (qemu's limit); reserved flag bits; granularity_bits above 63
 * (CORRUPT) or outside qemu's 9..31 (UNSUPPORTED); bitmap_table_size 0 or above qemu's
 * 2^27; bitmap_table_offset 0 or not aligned to the cluster (`ctx.clusterBits`, else 512);
 * non-zero padding.
 */
export function decodeBitmapDirectoryEntry(
  bytes: Uint8Array,
  offset: number,
  ctx?: TableContext,
): { entry: BitmapDirectoryEntry; end: number } {
  const where = whereAt(ctx, offset);
  need(bytes, offset, BITMAP_DIRECTORY_ENTRY_HEADER_SIZE, where);
  const view = viewOf(bytes);
  const nameSize = view.getUint16(offset + 18);
  const extraDataSize = view.getUint32(offset + 20);
  if (nameSize === 0) throw corrupt(`${where}: name_size is 0`);
  if (nameSize > MAX_BITMAP_NAME_SIZE) {
    throw corrupt(`${where}: name_size ${nameSize} exceeds qemu's limit of ${MAX_BITMAP_NAME_SIZE}`);
  }
  if (extraDataSize > bytes.byteLength) {
    throw corrupt(`${where}: extra_data_size ${extraDataSize} exceeds the ${bytes.byteLength}-byte directory`);
  }
  const extraAt = offset + BITMAP_DIRECTORY_ENTRY_HEADER_SIZE;
  const nameAt = extraAt + extraDataSize;
  const nameEnd = nameAt + nameSize;
  const end = alignUp(nameEnd, 8);
  need(bytes, offset, end - offset, `${where} (extra data ${extraDataSize}, name ${nameSize} bytes, padded to 8)`);
  for (let i = nameEnd; i < end; i++) {
    if (bytes[i] !== 0) throw corrupt(`${where}: padding byte at ${hex(i - offset)} is ${hex(bytes[i]!)}, not 0`);
  }

  const flags = view.getUint32(offset + 12);
  if ((flags & BITMAP_RESERVED_FLAGS) !== 0) {
    throw corrupt(`${where}: reserved flag bits are set (flags ${hex(flags)})`);
  }
  const granularityBits = view.getUint8(offset + 17);
  if (granularityBits > 63) throw corrupt(`${where}: granularity_bits ${granularityBits} exceeds 63`);
  if (granularityBits < MIN_BITMAP_GRANULARITY_BITS || granularityBits > MAX_BITMAP_GRANULARITY_BITS) {
    throw unsupported(
      `${where}: granularity_bits ${granularityBits} is outside qemu's ${MIN_BITMAP_GRANULARITY_BITS}..${MAX_BITMAP_GRANULARITY_BITS}`,
    );
  }
  const bitmapTableSize = view.getUint32(offset + 8);
  if (bitmapTableSize === 0 || bitmapTableSize > MAX_BITMAP_TABLE_SIZE) {
    throw corrupt(`${where}: bitmap_table_size ${bitmapTableSize} is not in 1..${MAX_BITMAP_TABLE_SIZE}`);
  }
  const bitmapTableOffset = readU64(view, offset, `${where}: bitmap_table_offset`);
  const alignment = 2 ** (ctx?.clusterBits ?? 9);
  if (bitmapTableOffset === 0 || bitmapTableOffset % alignment !== 0) {
    throw corrupt(`${where}: bitmap_table_offset ${hex(bitmapTableOffset)} is 0 or not aligned to ${alignment}`);
  }
  const name = decodeByteString(bytes.subarray(nameAt, nameEnd));
  const entry: BitmapDirectoryEntry = {
    bitmapTableOffset,
    bitmapTableSize,
    inUse: (flags & BITMAP_FLAG_IN_USE) !== 0,
    auto: (flags & BITMAP_FLAG_AUTO) !== 0,
    extraDataCompatible: (flags & BITMAP_FLAG_EXTRA_DATA_COMPATIBLE) !== 0,
    type: view.getUint8(offset + 16),
    granularityBits,
    name: name.name,
    extraData: bytes.slice(extraAt, nameAt),
  };
  if (name.nameBytes !== undefined) entry.nameBytes = name.nameBytes;
  return { entry, end };
}

/**
 * Encodes one directory entry, zero-padded to 8. Refuses (INVALID_ARGUMENT) what the decoder
 * would refuse: an empty name or one over 1023 UTF-8 bytes, granularity outside 9..31, a table
 * size outside 1..2^27, a table offset that is 0 or not a multiple of 512, a type not a byte.
 */
export function encodeBitmapDirectoryEntry(entry: BitmapDirectoryEntry): Uint8Array {
  const name = nameBytesOf(entry);
  if (name.byteLength === 0 || name.byteLength > MAX_BITMAP_NAME_SIZE) {
    throw invalidArgument(`bitmap name: ${name.byteLength} bytes is not in 1..${MAX_BITMAP_NAME_SIZE}`);
  }
  const g = entry.granularityBits;
  if (!Number.isInteger(g) || g < MIN_BITMAP_GRANULARITY_BITS || g > MAX_BITMAP_GRANULARITY_BITS) {
    throw invalidArgument(`bitmap ${entry.name}: granularity_bits ${g} is not in ${MIN_BITMAP_GRANULARITY_BITS}..${MAX_BITMAP_GRANULARITY_BITS}`);
  }
  const size = entry.bitmapTableSize;
  if (!Number.isInteger(size) || size < 1 || size > MAX_BITMAP_TABLE_SIZE) {
    throw invalidArgument(`bitmap ${entry.name}: bitmap_table_size ${size} is not in 1..${MAX_BITMAP_TABLE_SIZE}`);
  }
  const off = entry.bitmapTableOffset;
  if (!Number.isSafeInteger(off) || off <= 0 || off % 512 !== 0) {
    throw invalidArgument(`bitmap ${entry.name}: bitmap_table_offset ${off} is not a non-zero multiple of 512 below 2^53`);
  }
  if (!Number.isInteger(entry.type) || entry.type < 0 || entry.type > 0xff) {
    throw invalidArgument(`bitmap ${entry.name}: type ${entry.type} is not a byte`);
  }
  const extraDataSize = entry.extraData.byteLength;
  const bytes = new Uint8Array(alignUp(BITMAP_DIRECTORY_ENTRY_HEADER_SIZE + extraDataSize + name.byteLength, 8));
  const view = viewOf(bytes);
  writeU64(view, 0, off, 'bitmap_table_offset');
  view.setUint32(8, size);
  view.setUint32(
    12,
    (entry.inUse ? BITMAP_FLAG_IN_USE : 0) |
      (entry.auto ? BITMAP_FLAG_AUTO : 0) |
      (entry.extraDataCompatible ? BITMAP_FLAG_EXTRA_DATA_COMPATIBLE : 0),
  );
  view.setUint8(16, entry.type);
  view.setUint8(17, g);
  view.setUint16(18, name.byteLength);
  view.setUint32(20, extraDataSize);
  bytes.set(entry.extraData, BITMAP_DIRECTORY_ENTRY_HEADER_SIZE);
  bytes.set(name, BITMAP_DIRECTORY_ENTRY_HEADER_SIZE + extraDataSize);
  return bytes;
}

/**
 * The `count` (nb_bitmaps) entries of a bitmap directory; `bytes` is exactly the directory
 * (bitmap_directory_size bytes) and must be exactly filled by the entries, as qemu requires.
 * `count` (≤ 65535) and the size (≤ 1024 × 65535) are checked before anything is allocated.
 */
export function decodeBitmapDirectory(bytes: Uint8Array, count: number, ctx?: TableContext): BitmapDirectoryEntry[] {
  const where = ctx?.tableOffset === undefined ? 'bitmap directory' : `bitmap directory at ${hex(ctx.tableOffset)}`;
  if (!Number.isInteger(count) || count < 0) {
    throw invalidArgument(`${where}: count ${count} is not a non-negative integer`);
  }
  if (count > MAX_BITMAPS) throw corrupt(`${where}: ${count} bitmaps exceed qemu's limit of ${MAX_BITMAPS}`);
  if (bytes.byteLength > MAX_BITMAP_DIRECTORY_SIZE) {
    throw corrupt(`${where}: ${bytes.byteLength} bytes exceed qemu's limit of ${MAX_BITMAP_DIRECTORY_SIZE}`);
  }
  need(bytes, 0, count * BITMAP_DIRECTORY_ENTRY_HEADER_SIZE, `${where} of ${count} entries`);
  const entries = new Array<BitmapDirectoryEntry>(count);
  let offset = 0;
  for (let i = 0; i < count; i++) {
    const { entry, end } = decodeBitmapDirectoryEntry(bytes, offset, ctx);
    entries[i] = entry;
    offset = end;
  }
  if (offset !== bytes.byteLength) {
    throw corrupt(`${where}: ${count} entries end at byte ${offset}, but the directory has ${bytes.byteLength} bytes`);
  }
  return entries;
}

/** Encodes a bitmap directory (its length is the bitmap_directory_size to store). */
export function encodeBitmapDirectory(entries: readonly BitmapDirectoryEntry[]): Uint8Array {
  if (entries.length > MAX_BITMAPS) {
    throw invalidArgument(`bitmap directory: ${entries.length} bitmaps exceed qemu's limit of ${MAX_BITMAPS}`);
  }
  const parts = entries.map(encodeBitmapDirectoryEntry);
  const total = parts.reduce((n, p) => n + p.byteLength, 0);
  if (total > MAX_BITMAP_DIRECTORY_SIZE) {
    throw invalidArgument(`bitmap directory: ${total} bytes exceed qemu's limit of ${MAX_BITMAP_DIRECTORY_SIZE}`);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Bitmap table

export type BitmapTableEntry =
  /** Not allocated, reads as all zeros. */
  | { kind: 'zeros' }
  /** Not allocated, reads as all ones. */
  | { kind: 'ones' }
  /** Bitmap data in the cluster at `offset`. */
  | { kind: 'data'; offset: number };

/**
 * Entry `index` of the bitmap table viewed by `view`. Refuses (CORRUPT) reserved bits (bit 0
 * too when there is an offset), an offset above 2^53, and (with `ctx.clusterBits`) one that is
 * not cluster-aligned.
 */
export function decodeBitmapTableEntry(view: DataView, index: number, ctx?: TableContext): BitmapTableEntry {
  const at = index * BITMAP_TABLE_ENTRY_SIZE;
  if (!(at >= 0 && at + BITMAP_TABLE_ENTRY_SIZE <= view.byteLength) || !Number.isInteger(index)) {
    throw invalidArgument(`bitmap table entry index ${index}: outside the ${view.byteLength}-byte table`);
  }
  const hi = view.getUint32(at);
  const lo = view.getUint32(at + 4);
  if ((hi & BME_TABLE_RESERVED_HI) !== 0 || (lo & BME_TABLE_RESERVED_LO) !== 0) {
    throw corrupt(
      `${entryWhere('bitmap table', ctx, index)}: reserved bits are set (entry 0x${hi.toString(16).padStart(8, '0')}${lo.toString(16).padStart(8, '0')})`,
    );
  }
  if ((hi & 0x00e0_0000) !== 0) {
    throw corrupt(`${entryWhere('bitmap table', ctx, index)}: offset 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} exceeds 2^53`);
  }
  const offset = (hi & L1E_OFFSET_MASK_HI) * TWO_POW_32 + ((lo & L1E_OFFSET_MASK_LO) >>> 0);
  if (offset === 0) return (lo & BME_TABLE_ALL_ONES_LO) !== 0 ? { kind: 'ones' } : { kind: 'zeros' };
  if ((lo & BME_TABLE_ALL_ONES_LO) !== 0) {
    throw corrupt(`${entryWhere('bitmap table', ctx, index)}: bit 0 is set on an entry with offset ${hex(offset)}`);
  }
  if (ctx?.clusterBits !== undefined && offset % 2 ** ctx.clusterBits !== 0) {
    throw corrupt(`${entryWhere('bitmap table', ctx, index)}: offset ${hex(offset)} is not cluster-aligned`);
  }
  return { kind: 'data', offset };
}

/** Writes `entry` into entry `index` of `view`; a data offset must be a non-zero multiple of 512 below 2^53. */
export function encodeBitmapTableEntry(view: DataView, index: number, entry: BitmapTableEntry): void {
  const at = index * BITMAP_TABLE_ENTRY_SIZE;
  if (!(at >= 0 && at + BITMAP_TABLE_ENTRY_SIZE <= view.byteLength) || !Number.isInteger(index)) {
    throw invalidArgument(`bitmap table entry index ${index}: outside the ${view.byteLength}-byte table`);
  }
  switch (entry.kind) {
    case 'zeros':
      view.setUint32(at, 0);
      view.setUint32(at + 4, 0);
      return;
    case 'ones':
      view.setUint32(at, 0);
      view.setUint32(at + 4, BME_TABLE_ALL_ONES_LO);
      return;
    case 'data': {
      const { offset } = entry;
      if (!Number.isSafeInteger(offset) || offset <= 0 || offset % 512 !== 0) {
        throw invalidArgument(`bitmap table entry index ${index}: offset ${offset} is not a non-zero multiple of 512 below 2^53`);
      }
      view.setUint32(at, Math.floor(offset / TWO_POW_32));
      view.setUint32(at + 4, offset >>> 0);
      return;
    }
    default:
      throw invalidArgument(`bitmap table entry index ${index}: unknown kind ${String((entry as { kind: unknown }).kind)}`);
  }
}

/**
 * The first `count` (bitmap_table_size) entries of a bitmap table; `count` is checked against
 * qemu's limit and the bytes available before anything is allocated.
 */
export function decodeBitmapTable(bytes: Uint8Array, count: number, ctx?: TableContext): BitmapTableEntry[] {
  const where = ctx?.tableOffset === undefined ? 'bitmap table' : `bitmap table at ${hex(ctx.tableOffset)}`;
  if (!Number.isInteger(count) || count < 0) {
    throw invalidArgument(`${where}: count ${count} is not a non-negative integer`);
  }
  if (count > MAX_BITMAP_TABLE_SIZE) {
    throw corrupt(`${where}: ${count} entries exceed qemu's limit of ${MAX_BITMAP_TABLE_SIZE}`);
  }
  need(bytes, 0, count * BITMAP_TABLE_ENTRY_SIZE, where);
  const view = viewOf(bytes);
  const out = new Array<BitmapTableEntry>(count);
  for (let i = 0; i < count; i++) out[i] = decodeBitmapTableEntry(view, i, ctx);
  return out;
}

/** A bitmap table holding `entries`. */
export function encodeBitmapTable(entries: readonly BitmapTableEntry[]): Uint8Array {
  const bytes = new Uint8Array(entries.length * BITMAP_TABLE_ENTRY_SIZE);
  const view = viewOf(bytes);
  for (let i = 0; i < entries.length; i++) encodeBitmapTableEntry(view, i, entries[i]!);
  return bytes;
}
