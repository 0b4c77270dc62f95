import { need, viewOf } from './binary.js';
import { corrupt, hex, invalidArgument } from './errors.js';
import { L1E_OFFSET_MASK_HI, L1E_OFFSET_MASK_LO, MAX_L1_SIZE_BYTES } from './limits.js';

/**
 * L1 table entries (docs/interop/qcow2.txt, "Cluster mapping"): 64-bit big-endian,
 *
 *   bits  0..8   reserved (0)
 *   bits  9..55  offset of the L2 table (cluster-aligned; 0 = not allocated)
 *   bits 56..62  reserved (0)
 *   bit  63      COPIED: the L2 table's refcount is exactly 1 (accurate in the active L1 only)
 *
 * Hot-path functions take the entry's two 32-bit halves (`hi` = bits 32..63, `lo` = bits 0..31)
 * or a DataView and an index, and allocate nothing.
 */

export const L1_ENTRY_SIZE = 8;
/** The COPIED flag (bit 63) in the high word. */
export const L1E_COPIED_HI = 0x8000_0000;
/** Reserved bits 56..62 (high word) and 0..8 (low word): qemu's L1E_RESERVED_MASK. */
export const L1E_RESERVED_HI = 0x7f00_0000;
export const L1E_RESERVED_LO = 0x1ff;
/** Entries of the largest L1 table qemu accepts (QCOW_MAX_L1_SIZE / 8). */
export const MAX_L1_ENTRIES: number = MAX_L1_SIZE_BYTES / L1_ENTRY_SIZE;

const TWO_POW_32 = 0x1_0000_0000;
/** Bits 53..55 of an offset field: set means the offset is above 2^53. */
const ABOVE_2_53_HI = 0x00e0_0000;

export interface L1Entry {
  /** Offset of the L2 table; 0 when the L2 table is not allocated. */
  l2Offset: number;
  /** Bit 63: the L2 table's refcount is exactly one. */
  copied: boolean;
}

/** Context for messages and alignment checks, shared by the table decoders. */
export interface TableContext {
  /** log2 of the cluster size; when given, offsets must be cluster-aligned. */
  clusterBits?: number;
  /** Offset of the table in the image, named in messages. */
  tableOffset?: number;
}

/** `L1 entry at 0x30000 index 3` or `L1 entry index 3`. */
export function entryWhere(what: string, ctx: TableContext | undefined, index: number): string {
  return ctx?.tableOffset === undefined
    ? `${what} entry index ${index}`
    : `${what} entry at ${hex(ctx.tableOffset)} index ${index}`;
}

/**
 * The L2 table offset (bits 9..55) of an L1 entry given as two 32-bit halves; reserved bits
 * are ignored (use {@link decodeL1Entry} to check them). Throws CORRUPT above 2^53.
 * Allocation-free.
 */
export function l1L2Offset(hi: number, lo: number): number {
  if ((hi & ABOVE_2_53_HI) !== 0) {
    throw corrupt(`L1 entry: L2 offset 0x${(hi & L1E_OFFSET_MASK_HI).toString(16)}${hexLo(lo & L1E_OFFSET_MASK_LO)} exceeds 2^53`);
  }
  return (hi & L1E_OFFSET_MASK_HI) * TWO_POW_32 + ((lo & L1E_OFFSET_MASK_LO) >>> 0);
}

/** {@link l1L2Offset} of entry `index` of an L1 table viewed by `view`. */
export function l1L2OffsetAt(view: DataView, index: number): number {
  const at = index * L1_ENTRY_SIZE;
  return l1L2Offset(view.getUint32(at), view.getUint32(at + 4));
}

/** Bit 63 of an L1 entry's high word. */
export function l1Copied(hi: number): boolean {
  return (hi & L1E_COPIED_HI) !== 0;
}

function hexLo(lo: number): string {
  return (lo >>> 0).toString(16).padStart(8, '0');
}

function checkIndex(view: DataView, index: number, what: string): number {
  const at = index * 8;
  if (!(at >= 0 && at + 8 <= view.byteLength) || !Number.isInteger(index)) {
    throw invalidArgument(`${what} entry index ${index}: outside the ${view.byteLength}-byte table`);
  }
  return at;
}

/**
 * Entry `index` of the L1 table viewed by `view`. Refuses (CORRUPT) reserved bits, an offset
 * above 2^53, and (with `ctx.clusterBits`) an L2 offset that is not cluster-aligned.
 */
export function decodeL1Entry(view: DataView, index: number, ctx?: TableContext): L1Entry {
  const at = checkIndex(view, index, 'L1');
  const hi = view.getUint32(at);
  const lo = view.getUint32(at + 4);
  if ((hi & L1E_RESERVED_HI) !== 0 || (lo & L1E_RESERVED_LO) !== 0) {
    throw corrupt(
      `${entryWhere('L1', ctx, index)}: reserved bits are set (entry 0x${hi.toString(16).padStart(8, '0')}${hexLo(lo)})`,
    );
  }
  if ((hi & ABOVE_2_53_HI) !== 0) {
    throw corrupt(`${entryWhere('L1', ctx, index)}: L2 offset 0x${(hi & L1E_OFFSET_MASK_HI).toString(16)}${hexLo(lo)} exceeds 2^53`);
  }
  const l2Offset = (hi & L1E_OFFSET_MASK_HI) * TWO_POW_32 + lo;
  if (ctx?.clusterBits !== undefined && l2Offset % 2 ** ctx.clusterBits !== 0) {
    throw corrupt(`${entryWhere('L1', ctx, index)}: L2 offset ${hex(l2Offset)} is not cluster-aligned`);
  }
  return { l2Offset, copied: (hi & L1E_COPIED_HI) !== 0 };
}

/** Writes `entry` into entry `index` of `view`. The offset must be a multiple of 512 below 2^53. */
export function encodeL1Entry(view: DataView, index: number, entry: L1Entry): void {
  const at = checkIndex(view, index, 'L1');
  const { l2Offset } = entry;
  if (!Number.isSafeInteger(l2Offset) || l2Offset < 0 || l2Offset % 512 !== 0) {
    throw invalidArgument(`L1 entry index ${index}: L2 offset ${l2Offset} is not a multiple of 512 in 0..2^53`);
  }
  const hi = Math.floor(l2Offset / TWO_POW_32);
  view.setUint32(at, entry.copied ? (hi | L1E_COPIED_HI) >>> 0 : hi);
  view.setUint32(at + 4, l2Offset >>> 0);
}

/**
 * The first `count` entries of an L1 table (l1_size for the active table or a snapshot's).
 * `count` is checked against qemu's 32 MiB limit and the bytes available before anything is
 * allocated.
 */
export function decodeL1Table(bytes: Uint8Array, count: number, ctx?: TableContext): L1Entry[] {
  if (!Number.isInteger(count) || count < 0) {
    throw invalidArgument(`L1 table: count ${count} is not a non-negative integer`);
  }
  const where = ctx?.tableOffset === undefined ? 'L1 table' : `L1 table at ${hex(ctx.tableOffset)}`;
  if (count > MAX_L1_ENTRIES) {
    throw corrupt(`${where}: ${count} entries exceed qemu's ${MAX_L1_SIZE_BYTES}-byte limit`);
  }
  need(bytes, 0, count * L1_ENTRY_SIZE, where);
  const view = viewOf(bytes);
  const out = new Array<L1Entry>(count);
  for (let i = 0; i < count; i++) out[i] = decodeL1Entry(view, i, ctx);
  return out;
}

/** An L1 table holding `entries` (8 bytes each; pad to whole clusters yourself). */
export function encodeL1Table(entries: readonly L1Entry[]): Uint8Array {
  const bytes = new Uint8Array(entries.length * L1_ENTRY_SIZE);
  const view = viewOf(bytes);
  for (let i = 0; i < entries.length; i++) encodeL1Entry(view, i, entries[i]!);
  return bytes;
}
