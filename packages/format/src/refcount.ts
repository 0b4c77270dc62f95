import { need, viewOf } from './binary.js';
import { corrupt, hex, invalidArgument } from './errors.js';
import { entryWhere, type TableContext } from './l1.js';
import { MAX_REFCOUNT_ORDER, MAX_REFTABLE_SIZE_BYTES } from './limits.js';

/**
 * Refcount table entries and refcount blocks (docs/interop/qcow2.txt, "Host cluster management").
 *
 * The refcount table is an array of 64-bit big-endian entries, each the offset of one refcount
 * block (bits 9..63, bits 0..8 reserved), 0 for a block not allocated yet. A refcount block is
 * one cluster of `refcount_bits`-wide entries, refcount_bits = 1 << refcount_order (1..64).
 * Entries narrower than a byte are packed from the least significant bit: entry 0 of a 1-bit
 * block is bit 0 (value 0x01) of byte 0 (qemu's get_refcount_ro0..ro2). Wider entries are
 * big-endian.
 */

/** Bytes per refcount table entry. */
export const REFCOUNT_TABLE_ENTRY_SIZE = 8;
/** Reserved bits 0..8 of a refcount table entry (all in the low word). */
export const REFT_RESERVED_MASK_LO = 0x1ff;
/** Entries the refcount table may have under qemu's 8 MiB limit. */
export const MAX_REFCOUNT_TABLE_ENTRIES: number = MAX_REFTABLE_SIZE_BYTES / REFCOUNT_TABLE_ENTRY_SIZE;

const TWO_POW_32 = 0x1_0000_0000;

function checkOrder(order: number): void {
  if (!(order >= 0 && order <= MAX_REFCOUNT_ORDER && (order | 0) === order)) {
    throw invalidArgument(`refcount_order: ${order} is not an integer in 0..${MAX_REFCOUNT_ORDER}`);
  }
}

/** refcountMax by order; 64-bit entries are capped at 2^53 − 1. */
const MAX_BY_ORDER: readonly number[] = [1, 3, 0xf, 0xff, 0xffff, 0xffff_ffff, Number.MAX_SAFE_INTEGER];

/** refcount_bits = 1 << order (order 0..6). */
export function refcountBits(order: number): number {
  checkOrder(order);
  return 1 << order;
}

/**
 * The largest refcount an entry of this order holds: 2^bits − 1, except that 64-bit entries are
 * capped at 2^53 − 1 (values above are refused, never rounded).
 */
export function refcountMax(order: number): number {
  checkOrder(order);
  return MAX_BY_ORDER[order]!;
}

/** Entries per refcount block: cluster_size * 8 / refcount_bits. */
export function refcountBlockEntries(clusterBits: number, order: number): number {
  checkOrder(order);
  return 2 ** (clusterBits + 3 - order);
}

/** Index into the refcount table of the block that holds the refcount of `hostOffset`'s cluster. */
export function refcountTableIndex(hostOffset: number, clusterBits: number, order: number): number {
  return Math.floor(hostOffset / 2 ** (clusterBits + clusterBits + 3 - order));
}

/** Index of `hostOffset`'s cluster within its refcount block. */
export function refcountBlockIndex(hostOffset: number, clusterBits: number, order: number): number {
  return Math.floor(hostOffset / 2 ** clusterBits) % 2 ** (clusterBits + 3 - order);
}

function checkIndex(block: Uint8Array, index: number, order: number): void {
  checkOrder(order);
  const entries = (block.byteLength * 8) >>> order;
  if (!(index >= 0 && index < entries && Math.floor(index) === index)) {
    throw invalidArgument(
      `refcount block index ${index}: outside the ${entries} ${1 << order}-bit entries of a ${block.byteLength}-byte block`,
    );
  }
}

/**
 * The refcount at `index` of a refcount block of refcount_bits = 1 << order. Allocation-free.
 * A 64-bit refcount above 2^53 − 1 is refused (CORRUPT); an index outside the block is
 * INVALID_ARGUMENT.
 */
export function getRefcount(block: Uint8Array, index: number, order: number): number {
  checkIndex(block, index, order);
  switch (order) {
    case 0:
      return (block[index >>> 3]! >>> (index & 7)) & 0x1;
    case 1:
      return (block[index >>> 2]! >>> ((index & 3) << 1)) & 0x3;
    case 2:
      return (block[index >>> 1]! >>> ((index & 1) << 2)) & 0xf;
    case 3:
      return block[index]!;
    case 4: {
      const at = index * 2;
      return (block[at]! << 8) | block[at + 1]!;
    }
    case 5: {
      const at = index * 4;
      return block[at]! * 0x100_0000 + ((block[at + 1]! << 16) | (block[at + 2]! << 8) | block[at + 3]!);
    }
    default: {
      const at = index * 8;
      const hi = block[at]! * 0x100_0000 + ((block[at + 1]! << 16) | (block[at + 2]! << 8) | block[at + 3]!);
      const lo = block[at + 4]! * 0x100_0000 + ((block[at + 5]! << 16) | (block[at + 6]! << 8) | block[at + 7]!);
      if (hi > 0x1f_ffff) {
        throw corrupt(
          `refcount block index ${index}: 64-bit refcount 0x${hi.toString(16).padStart(8, '0')}${lo.toString(16).padStart(8, '0')} exceeds 2^53`,
        );
      }
      return hi * TWO_POW_32 + lo;
    }
  }
}

/**
 * Sets the refcount at `index`, leaving every other entry (and the other bits of a shared
 * byte) untouched. Allocation-free. Refuses (INVALID_ARGUMENT) a value that is not an integer
 * in 0..refcountMax(order).
 */
export function setRefcount(block: Uint8Array, index: number, order: number, value: number): void {
  checkIndex(block, index, order);
  const max = MAX_BY_ORDER[order]!;
  if (!(value >= 0 && value <= max && Math.floor(value) === value)) {
    throw invalidArgument(
      `refcount block index ${index}: refcount ${value} is not an integer in 0..${max} (refcount_bits ${1 << order})`,
    );
  }
  switch (order) {
    case 0: {
      const at = index >>> 3;
      const shift = index & 7;
      block[at] = (block[at]! & ~(0x1 << shift)) | (value << shift);
      return;
    }
    case 1: {
      const at = index >>> 2;
      const shift = (index & 3) << 1;
      block[at] = (block[at]! & ~(0x3 << shift)) | (value << shift);
      return;
    }
    case 2: {
      const at = index >>> 1;
      const shift = (index & 1) << 2;
      block[at] = (block[at]! & ~(0xf << shift)) | (value << shift);
      return;
    }
    case 3:
      block[index] = value;
      return;
    case 4: {
      const at = index * 2;
      block[at] = value >>> 8;
      block[at + 1] = value & 0xff;
      return;
    }
    case 5: {
      const at = index * 4;
      block[at] = value >>> 24;
      block[at + 1] = (value >>> 16) & 0xff;
      block[at + 2] = (value >>> 8) & 0xff;
      block[at + 3] = value & 0xff;
      return;
    }
    default: {
      const at = index * 8;
      const hi = Math.floor(value / TWO_POW_32);
      const lo = value >>> 0;
      block[at] = 0;
      block[at + 1] = (hi >>> 16) & 0xff;
      block[at + 2] = (hi >>> 8) & 0xff;
      block[at + 3] = hi & 0xff;
      block[at + 4] = lo >>> 24;
      block[at + 5] = (lo >>> 16) & 0xff;
      block[at + 6] = (lo >>> 8) & 0xff;
      block[at + 7] = lo & 0xff;
    }
  }
}

/** Every refcount of a block, in order (for check and tooling; the engine uses getRefcount). */
export function decodeRefcountBlock(block: Uint8Array, order: number): number[] {
  checkOrder(order);
  const entries = (block.byteLength * 8) >>> order;
  const out = new Array<number>(entries);
  for (let i = 0; i < entries; i++) out[i] = getRefcount(block, i, order);
  return out;
}

/**
 * A block holding `refcounts` (ceil(n * bits / 8) bytes; pass a whole cluster's worth of
 * entries for a full block).
 */
export function encodeRefcountBlock(refcounts: readonly number[], order: number): Uint8Array {
  checkOrder(order);
  const block = new Uint8Array(Math.ceil((refcounts.length << order) / 8));
  for (let i = 0; i < refcounts.length; i++) setRefcount(block, i, order, refcounts[i]!);
  return block;
}

function where(ctx: TableContext | undefined, index: number): string {
  return entryWhere('refcount table', ctx, index);
}

/**
 * The refcount block offset in refcount table entry `index` of `view` (0: not allocated).
 * Refuses (CORRUPT) reserved bits 0..8, an offset above 2^53 and, when `ctx.clusterBits` is
 * given, an offset that is not cluster-aligned. Allocation-free.
 */
export function decodeRefcountTableEntry(view: DataView, index: number, ctx?: TableContext): number {
  const at = index * REFCOUNT_TABLE_ENTRY_SIZE;
  if (!(at >= 0 && at + REFCOUNT_TABLE_ENTRY_SIZE <= view.byteLength) || !Number.isInteger(index)) {
    throw invalidArgument(`${where(ctx, index)}: outside the ${view.byteLength}-byte table`);
  }
  const hi = view.getUint32(at);
  const lo = view.getUint32(at + 4);
  if ((lo & REFT_RESERVED_MASK_LO) !== 0) {
    throw corrupt(`${where(ctx, index)}: reserved bits 0..8 are set (${hex(lo & REFT_RESERVED_MASK_LO)})`);
  }
  if (hi > 0x1f_ffff) {
    throw corrupt(
      `${where(ctx, index)}: refcount block offset 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} exceeds 2^53`,
    );
  }
  const offset = hi * TWO_POW_32 + lo;
  if (ctx?.clusterBits !== undefined && offset % 2 ** ctx.clusterBits !== 0) {
    throw corrupt(`${where(ctx, index)}: refcount block offset ${hex(offset)} is not cluster-aligned`);
  }
  return offset;
}

/** Writes refcount block offset `offset` (0 or a multiple of 512, ≤ 2^53) into entry `index`. */
export function encodeRefcountTableEntry(view: DataView, index: number, offset: number): void {
  const at = index * REFCOUNT_TABLE_ENTRY_SIZE;
  if (!(at >= 0 && at + REFCOUNT_TABLE_ENTRY_SIZE <= view.byteLength) || !Number.isInteger(index)) {
    throw invalidArgument(`refcount table entry index ${index}: outside the ${view.byteLength}-byte table`);
  }
  if (!Number.isSafeInteger(offset) || offset < 0 || offset % 512 !== 0) {
    throw invalidArgument(
      `refcount table entry index ${index}: block offset ${offset} is not a multiple of 512 in 0..2^53`,
    );
  }
  view.setUint32(at, Math.floor(offset / TWO_POW_32));
  view.setUint32(at + 4, offset >>> 0);
}

/**
 * The first `count` entries of a refcount table (refcount_table_clusters * cluster_size / 8 for
 * the whole table). `count` is checked against qemu's 8 MiB limit and the bytes available
 * before anything is allocated.
 */
export function decodeRefcountTable(bytes: Uint8Array, count: number, ctx?: TableContext): number[] {
  if (!Number.isInteger(count) || count < 0) {
    throw invalidArgument(`refcount table: count ${count} is not a non-negative integer`);
  }
  if (count > MAX_REFCOUNT_TABLE_ENTRIES) {
    throw corrupt(
      `refcount table${ctx?.tableOffset === undefined ? '' : ` at ${hex(ctx.tableOffset)}`}: ${count} entries exceed qemu's ${MAX_REFTABLE_SIZE_BYTES}-byte limit`,
    );
  }
  need(bytes, 0, count * REFCOUNT_TABLE_ENTRY_SIZE, 'refcount table');
  const view = viewOf(bytes);
  const out = new Array<number>(count);
  for (let i = 0; i < count; i++) out[i] = decodeRefcountTableEntry(view, i, ctx);
  return out;
}

/** A refcount table holding `offsets` (8 bytes each; pad to whole clusters yourself). */
export function encodeRefcountTable(offsets: readonly number[]): Uint8Array {
  const bytes = new Uint8Array(offsets.length * REFCOUNT_TABLE_ENTRY_SIZE);
  const view = viewOf(bytes);
  for (let i = 0; i < offsets.length; i++) encodeRefcountTableEntry(view, i, offsets[i]!);
  return bytes;
}
