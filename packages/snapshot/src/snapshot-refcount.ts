import type { TableCache } from '@qcow2/cache';
import {
  compressedByteLength,
  compressedHostOffset,
  corrupt,
  hex,
  isQcow2Error,
  L1E_COPIED_HI,
  L2_COMPRESSED,
  L2_NORMAL,
  L2_ZERO_ALLOC,
  l2EntryType,
  L2E_COPIED_HI,
  Qcow2Error,
} from '@qcow2/format';
import type { Refcounts } from '@qcow2/refcount';
import type { Storage } from '@qcow2/storage';

/** What the refcount walk reads and changes. */
export interface RefcountWalkContext {
  /** The image file. */
  readonly storage: Storage;
  readonly refcounts: Refcounts;
  /** The L2 table cache the image's cluster map and writer use (slices of `entrySize`). */
  readonly l2Cache: TableCache;
  readonly clusterBits: number;
  readonly extendedL2: boolean;
  /** Names the image in messages. */
  readonly what: string;
}

/** An L1 table to walk: its entries in memory (changed in place) and where it lives in the file. */
export interface WalkedL1 {
  readonly offset: number;
  /** `size * 8` bytes, big-endian entries. */
  readonly bytes: Uint8Array;
}

const TWO_POW_32 = 0x1_0000_0000;
const OFFSET_MASK_HI = 0x00ff_ffff;
const OFFSET_MASK_LO = 0xffff_fe00;
const ABOVE_2_53_HI = 0x00e0_0000;

/**
 * qemu's qcow2_update_snapshot_refcount: adds `addend` (-1, 0 or +1) to the refcount of every
 * L2 table the L1 table references and of every data cluster (compressed ones by the host
 * clusters their bytes touch) those L2 tables reference, with pass-discard-snapshot for what
 * drops to 0, and sets every COPIED flag on the way from the resulting refcount (set exactly
 * when it is 1; never for compressed clusters). L2 tables are changed through the L2 cache,
 * the L1 entries in `l1.bytes`; unless `addend` is -1 (the table is being dropped), a changed
 * L1 table is written back whole and flushed. Everything cached is made durable before it
 * resolves.
 *
 * When raising fails (a refcount would overflow: refcount_bits=1), the increments already made
 * are undone and the flags set right again before the error is rethrown.
 */
export async function updateSnapshotRefcount(ctx: RefcountWalkContext, l1: WalkedL1, addend: -1 | 0 | 1): Promise<void> {
  const done: [number, number][] = [];
  const refcounts = ctx.refcounts;
  const before = refcounts.cacheDiscards;
  refcounts.cacheDiscards = true;
  let failed = false;
  try {
    await walk(ctx, l1, addend, addend > 0 ? done : undefined);
  } catch (error) {
    failed = true;
    if (addend > 0 && done.length > 0) {
      for (let i = done.length - 1; i >= 0; i--) {
        const [offset, length] = done[i]!;
        await refcounts.update(offset, length, -1, 'never').catch(() => undefined);
      }
      await walk(ctx, l1, 0, undefined).catch(() => undefined);
    }
    throw error;
  } finally {
    refcounts.cacheDiscards = before;
    const discards = refcounts.processDiscards();
    if (failed) await discards.catch(() => undefined);
    else await discards;
  }
}

async function walk(ctx: RefcountWalkContext, l1: WalkedL1, addend: -1 | 0 | 1, done: [number, number][] | undefined): Promise<void> {
  const { refcounts, l2Cache: cache, clusterBits, extendedL2, what } = ctx;
  const cs = 2 ** clusterBits;
  const entrySize = extendedL2 ? 16 : 8;
  const sliceSize = cache.entrySize;
  const view = new DataView(l1.bytes.buffer, l1.bytes.byteOffset, l1.bytes.byteLength);
  const size = l1.bytes.byteLength / 8;
  let l1Modified = false;
  const bump = async (offset: number, length: number): Promise<void> => {
    if (addend === 0) return;
    await refcounts.update(offset, length, addend, 'snapshot');
    done?.push([offset, length]);
  };
  for (let i = 0; i < size; i++) {
    const hi = view.getUint32(i * 8);
    const lo = view.getUint32(i * 8 + 4);
    if ((hi & ABOVE_2_53_HI) !== 0) {
      throw corrupt(`${what}: L1 table at ${hex(l1.offset)} index ${i}: L2 table offset exceeds 2^53`);
    }
    const l2Offset = (hi & OFFSET_MASK_HI) * TWO_POW_32 + ((lo & OFFSET_MASK_LO) >>> 0);
    if (l2Offset === 0) continue;
    if (l2Offset % cs !== 0) {
      throw corrupt(`${what}: L1 table at ${hex(l1.offset)} index ${i}: L2 table offset ${hex(l2Offset)} unaligned`);
    }
    for (let s = 0; s < cs; s += sliceSize) {
      const slice = cache.tryAcquire(l2Offset + s) ?? (await cache.acquire(l2Offset + s));
      try {
        const b = slice.bytes;
        const sv = new DataView(b.buffer, b.byteOffset, b.byteLength);
        for (let p = 0; p < sliceSize; p += entrySize) {
          const ehi = sv.getUint32(p);
          const elo = sv.getUint32(p + 4);
          const type = l2EntryType(ehi, elo, extendedL2);
          let refcount = 0;
          if (type === L2_COMPRESSED) {
            if (addend !== 0) {
              await bump(compressedHostOffset(ehi, elo, clusterBits), compressedByteLength(ehi, elo, clusterBits));
            }
            refcount = 2; // compressed clusters are never changed in place
          } else if (type === L2_NORMAL || type === L2_ZERO_ALLOC) {
            const where = `${what}: L2 table at ${hex(l2Offset)} index ${(s + p) / entrySize}`;
            if ((ehi & ABOVE_2_53_HI) !== 0) throw corrupt(`${where}: cluster offset exceeds 2^53`);
            const host = (ehi & OFFSET_MASK_HI) * TWO_POW_32 + ((elo & OFFSET_MASK_LO) >>> 0);
            if (host % cs !== 0) {
              throw corrupt(`${where}: cluster allocation offset ${hex(host)} unaligned`);
            }
            await bump(host, cs);
            refcount = await refcounts.get(host / cs);
          }
          const next = (refcount === 1 ? ehi | L2E_COPIED_HI : ehi & ~L2E_COPIED_HI) >>> 0;
          if (next !== ehi) {
            if (addend > 0) await cache.setDependency(refcounts.cache);
            sv.setUint32(p, next);
            cache.markDirty(slice);
          }
        }
      } finally {
        cache.release(slice);
      }
    }
    await bump(l2Offset, cs);
    const refcount = await refcounts.get(l2Offset / cs);
    const nextHi = ((hi & OFFSET_MASK_HI) | (refcount === 1 ? L1E_COPIED_HI : 0)) >>> 0;
    const nextLo = (lo & OFFSET_MASK_LO) >>> 0;
    if (nextHi !== hi || nextLo !== lo) {
      view.setUint32(i * 8, nextHi);
      view.setUint32(i * 8 + 4, nextLo);
      l1Modified = true;
    }
  }
  await cache.writeBack();
  await refcounts.flush();
  if (addend >= 0 && l1Modified && size > 0) {
    await io(() => ctx.storage.write(l1.bytes, l1.offset), `${what}: L1 table at ${hex(l1.offset)}: write`);
    await io(() => ctx.storage.flush(), `${what}: L1 table at ${hex(l1.offset)}: flush`);
  }
}

async function io(fn: () => Promise<void>, what: string): Promise<void> {
  try {
    await fn();
  } catch (error) {
    if (isQcow2Error(error)) throw new Qcow2Error(error.code, `${what}: ${error.message}`, { cause: error });
    throw new Qcow2Error('IO', `${what}: ${String(error)}`, { cause: error });
  }
}
