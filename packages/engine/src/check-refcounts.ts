import {
  BITMAP_TABLE_ENTRY_SIZE,
  isQcow2Error,
  L2_COMPRESSED,
  L2_NORMAL,
  L2_UNALLOCATED,
  L2_ZERO_ALLOC,
  l2EntryType,
  MAX_L1_SIZE_BYTES,
  viewOf,
} from '@qcow2/format';
import { openRefcounts, RefcountArray, rebuildRefcountStructure, type Refcounts } from '@qcow2/refcount';
import {
  addOffset,
  clusterIndexOf,
  EFBIG_TEXT,
  EINVAL_TEXT,
  EIO_TEXT,
  ENOMEM_TEXT,
  hex64,
  hexAlt,
  hexOf,
  offsetIntoCluster,
  sameOffset,
  u64,
  type HostOffset,
} from './check-bits.js';
import { checkOflagCopied } from './check-copied.js';
import { cStringText } from './check-snapshots.js';
import { abortFrom, CheckAbort, refcountBlockReadsAsZero, strerrorOf, zeroCounters, type CheckCounters, type CheckImage, type CheckMessage } from './check-state.js';

/** qemu's BdrvCheckMode. */
export interface FixMode {
  readonly leaks: boolean;
  readonly errors: boolean;
}

const NO_FIX: FixMode = { leaks: false, errors: false };
const INT_MAX = 0x7fff_ffff;
const INT64_MAX = 0x7fff_ffff_ffff_ffffn;
/**
 * A refcount block past the end of the file is repaired, as qemu does, by growing the file over
 * it, but only as far as its in-memory refcounts stay within this (256 MiB: an 8 TiB file of
 * 64 KiB clusters with 16-bit refcounts); further out, the file is "too large" and the
 * structure is rebuilt instead.
 */
const MAX_GROWN_REFCOUNT_BYTES = 256 * 1024 * 1024;

/** The stored refcounts of the image, or none when it has no refcount table. */
export interface StoredRefcounts {
  refcounts: Refcounts | undefined;
}

/** Opens the refcount structure the image header describes (none for a 0-cluster table). */
export async function openStoredRefcounts(image: CheckImage): Promise<Refcounts | undefined> {
  // No table, or one past 2^53 (read as zeros): every refcount is 0.
  if (image.refcountTable.length === 0 || typeof image.refcountTableOffset !== 'number') return undefined;
  try {
    const refcounts = await openRefcounts({
      storage: image.storage,
      clusterBits: image.clusterBits,
      refcountOrder: image.refcountOrder,
      tableOffset: image.refcountTableOffset,
      tableClusters: image.refcountTable.length / image.clusterSize,
    });
    // Freed clusters are discarded only once their refcounts are written (when the check closes
    // them), never while an unwritten refcount still says they are in use.
    refcounts.cacheDiscards = true;
    return refcounts;
  } catch (error) {
    throw abortFrom(error);
  }
}

/**
 * One run of qemu's qcow2_check_refcounts over `image`: the reference walk
 * (calculate_refcounts), the comparison with the stored refcounts and its repairs, the refcount
 * structure rebuilt when it must be, then the COPIED flags. Adds to `res`; throws CheckAbort
 * where qemu's check returns an error.
 */
export class RefcountCheck {
  readonly #image: CheckImage;
  readonly #res: CheckCounters;
  readonly #emit: (m: CheckMessage) => void;
  readonly #store: StoredRefcounts;
  #fileSize = 0;
  #l2 = new Uint8Array(0);

  constructor(image: CheckImage, res: CheckCounters, emit: (m: CheckMessage) => void, store: StoredRefcounts) {
    this.#image = image;
    this.#res = res;
    this.#emit = emit;
    this.#store = store;
  }

  #say(text: string): void {
    this.#emit({ text, report: false });
  }

  async run(fix: FixMode): Promise<void> {
    const image = this.#image;
    const cs = image.clusterSize;
    const res = this.#res;
    this.#fileSize = await image.fileSize();
    const nbClusters = Math.ceil(this.#fileSize / cs);
    if (nbClusters > INT_MAX) {
      res.checkErrors++;
      throw new CheckAbort(EFBIG_TEXT);
    }
    res.totalClusters = Math.ceil(image.virtualSize / cs);
    this.#l2 = new Uint8Array(cs);

    let counts = this.#newArray(nbClusters);
    const state = { rebuild: false };
    await this.#calculate(fix, state, counts);

    // When nothing must be rebuilt but something is to be fixed, the comparison runs again.
    const preCompare = { ...res };
    let highest = await this.#compare(NO_FIX, state, counts);

    if (state.rebuild && fix.errors) {
      const old = { ...res };
      let freshLeaks = 0;
      this.#say('Rebuilding refcount structure');
      await this.#rebuild(counts);
      res.corruptions = 0;
      res.leaks = 0;
      state.rebuild = false;
      this.#fileSize = await image.fileSize();
      counts = this.#newArray(counts.clusters);
      await this.#calculate(NO_FIX, state, counts);
      if (fix.leaks) {
        // The old structure is now leaked: freed here; leaks left are the rebuild's own.
        const saved = { ...res };
        Object.assign(res, zeroCounters());
        highest = await this.#compare({ leaks: true, errors: false }, state, counts);
        if (state.rebuild) this.#say('ERROR rebuilt refcount structure is still broken');
        freshLeaks = res.leaks;
        Object.assign(res, saved);
      }
      if (res.corruptions < old.corruptions) res.corruptionsFixed += old.corruptions - res.corruptions;
      if (res.leaks < old.leaks) res.leaksFixed += old.leaks - res.leaks;
      res.leaks += freshLeaks;
    } else if (fix.leaks || fix.errors) {
      if (state.rebuild) {
        this.#say('ERROR need to rebuild refcount structures');
        res.checkErrors++;
        throw new CheckAbort(EIO_TEXT);
      }
      if (res.leaks > 0 || res.corruptions > 0) {
        Object.assign(res, preCompare);
        highest = await this.#compare(fix, state, counts);
      }
    }

    await checkOflagCopied(image, this.#store.refcounts, res, fix, this.#emit);
    res.imageEndOffset = (highest + 1) * cs;
  }

  #newArray(clusters: number): RefcountArray {
    try {
      return new RefcountArray(this.#image.clusterBits, this.#image.refcountOrder, clusters);
    } catch (error) {
      this.#res.checkErrors++;
      throw new CheckAbort(ENOMEM_TEXT, error);
    }
  }

  // ------------------------------------------------------------------ references

  /** qemu's qcow2_inc_refcounts_imrt. */
  #inc(counts: RefcountArray, offset: HostOffset, size: number): void {
    if (size <= 0) return;
    const cs = this.#image.clusterSize;
    if (typeof offset === 'bigint' && offset > INT64_MAX) {
      // Negative as qemu's int64_t: its end-of-file test passes, and the in-memory refcounts
      // cannot grow to that cluster.
      this.#res.checkErrors++;
      throw new CheckAbort(ENOMEM_TEXT);
    }
    if (typeof offset === 'bigint' || offset + size - this.#fileSize >= cs) {
      this.#say(
        `ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x${hexOf(offset)} size 0x${size.toString(16)}`,
      );
      this.#res.corruptions++;
      return;
    }
    const first = Math.floor(offset / cs);
    const last = Math.floor((offset + size - 1) / cs);
    for (let k = first; k <= last; k++) {
      let ok: boolean;
      try {
        ok = counts.increment(k);
      } catch (error) {
        this.#res.checkErrors++;
        throw new CheckAbort(ENOMEM_TEXT, error);
      }
      if (!ok) {
        this.#say(`ERROR: overflow cluster offset=0x${(k * cs).toString(16)}`);
        this.#say(
          'Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing',
        );
        this.#res.corruptions++;
      }
    }
  }

  /** qemu's calculate_refcounts. */
  async #calculate(fix: FixMode, state: { rebuild: boolean }, counts: RefcountArray): Promise<void> {
    const image = this.#image;
    const res = this.#res;
    const cs = image.clusterSize;
    this.#inc(counts, 0, cs);
    await this.#checkL1(counts, image.l1Offset, image.l1Size, true, fix, true);

    if (image.hasDataFile && image.snapshots.length > 0) {
      this.#say(`ERROR ${image.snapshots.length} snapshots in image with data file`);
      res.corruptions++;
    }
    for (const sn of image.snapshots) {
      const l1Offset = u64(sn.l1OffsetHi, sn.l1OffsetLo);
      const label = `${cStringText(sn.idBytes)} (${cStringText(sn.nameBytes)})`;
      if (offsetIntoCluster(l1Offset, cs)) {
        this.#say(`ERROR snapshot ${label} l1_offset=${hexAlt(l1Offset)}: L1 table is not cluster aligned; snapshot table entry corrupted`);
        res.corruptions++;
        continue;
      }
      if (sn.l1Size > MAX_L1_SIZE_BYTES / 8) {
        this.#say(`ERROR snapshot ${label} l1_size=${hexAlt(sn.l1Size)}: L1 table is too large; snapshot table entry corrupted`);
        res.corruptions++;
        continue;
      }
      await this.#checkL1(counts, l1Offset, sn.l1Size, false, fix, false);
    }
    this.#inc(counts, image.snapshotsOffset, image.snapshotsSize);
    this.#inc(counts, image.refcountTableOffset, image.refcountTable.length);
    await this.#checkBitmaps(counts);
    await this.#checkRefblocks(fix, state, counts);
  }

  /** qemu's check_refcounts_l1. */
  async #checkL1(counts: RefcountArray, l1Offset: HostOffset, l1Size: number, fragInfo: boolean, fix: FixMode, active: boolean): Promise<void> {
    if (l1Size === 0) return;
    const image = this.#image;
    const cs = image.clusterSize;
    this.#inc(counts, l1Offset, l1Size * 8);
    const table = new Uint8Array(l1Size * 8);
    try {
      await image.read(table, l1Offset);
    } catch (error) {
      this.#say('ERROR: I/O error in check_refcounts_l1');
      this.#res.checkErrors++;
      throw abortFrom(error);
    }
    const view = viewOf(table);
    for (let i = 0; i < l1Size; i++) {
      const hi = view.getUint32(i * 8);
      const lo = view.getUint32(i * 8 + 4);
      if (hi === 0 && lo === 0) continue;
      if ((hi & 0x7f00_0000) !== 0 || (lo & 0x1ff) !== 0) {
        this.#say(`ERROR found L1 entry with reserved bits set: ${hex64(hi, lo)}`);
        this.#res.corruptions++;
      }
      const l2Offset = u64(hi & 0x00ff_ffff, (lo & 0xffff_fe00) >>> 0);
      this.#inc(counts, l2Offset, cs);
      if (offsetIntoCluster(l2Offset, cs)) {
        this.#say(`ERROR l2_offset=${hexOf(l2Offset)}: Table is not cluster aligned; L1 entry corrupted`);
        this.#res.corruptions++;
      }
      await this.#checkL2(counts, l2Offset, fragInfo, fix, active);
    }
  }

  /** qemu's check_refcounts_l2. */
  async #checkL2(counts: RefcountArray, l2Offset: HostOffset, fragInfo: boolean, fix: FixMode, active: boolean): Promise<void> {
    const image = this.#image;
    const res = this.#res;
    const cs = image.clusterSize;
    const bits = image.clusterBits;
    const extended = image.extendedL2;
    const dataFile = image.hasDataFile;
    const entrySize = image.l2EntrySize;
    // A table wholly past the end of the file reads as zeros: nothing to count or report.
    if (typeof l2Offset === 'bigint' || l2Offset >= this.#fileSize) return;
    const table = this.#l2;
    try {
      await image.read(table, l2Offset);
    } catch (error) {
      this.#say('ERROR: I/O error in check_refcounts_l2');
      res.checkErrors++;
      throw abortFrom(error);
    }
    const view = viewOf(table);
    // Compressed descriptors: offset in bits 0..x-1, sector count above (x = 70 - cluster_bits).
    const shift = 70 - bits;
    const offsetHiMask = 2 ** (shift - 32) - 1;
    const csizeMask = (1 << (bits - 8)) - 1;
    let next: HostOffset = 0;
    for (let i = 0; i < image.l2Size; i++) {
      const at = i * entrySize;
      let hi = view.getUint32(at);
      const lo = view.getUint32(at + 4);
      const bmHi = extended ? view.getUint32(at + 8) : 0;
      const bmLo = extended ? view.getUint32(at + 12) : 0;
      const type = l2EntryType(hi, lo, extended, dataFile);
      if (type !== L2_COMPRESSED && ((hi & 0x3f00_0000) !== 0 || (lo & 0x1fe) !== 0)) {
        this.#say(`ERROR found l2 entry with reserved bits set: ${hex64(hi, lo)}`);
        res.corruptions++;
      }
      if (type === L2_COMPRESSED) {
        const coffset = u64(hi & offsetHiMask, lo);
        if ((hi & 0x8000_0000) !== 0) {
          this.#say(`ERROR: coffset=0x${hexOf(coffset)}: copied flag must never be set for compressed clusters`);
          hi = (hi & 0x7fff_ffff) >>> 0;
          res.corruptions++;
        }
        if (dataFile) {
          this.#say(`ERROR compressed cluster ${i} with data file, entry=0x${hex64(hi, lo)}`);
          res.corruptions++;
          continue;
        }
        if (bmHi !== 0 || bmLo !== 0) {
          this.#say(`ERROR compressed cluster ${i} with non-zero subcluster allocation bitmap, entry=0x${hex64(hi, lo)}`);
          res.corruptions++;
          continue;
        }
        const sectors = ((hi >>> (shift - 32)) & csizeMask) + 1;
        const csize = sectors * 512 - (lo & 511);
        this.#inc(counts, coffset, csize);
        if (fragInfo) {
          res.allocatedClusters++;
          res.compressedClusters++;
          res.fragmentedClusters++;
        }
      } else if (type === L2_NORMAL || type === L2_ZERO_ALLOC) {
        const offset = u64(hi & 0x00ff_ffff, (lo & 0xffff_fe00) >>> 0);
        if (extended && (bmHi & bmLo) !== 0) {
          res.corruptions++;
          this.#say(`ERROR offset=${hexOf(offset)}: Allocated cluster has corrupted subcluster allocation bitmap`);
        }
        if (offsetIntoCluster(offset, cs)) {
          res.corruptions++;
          const containsData = extended ? bmLo !== 0 : (lo & 1) === 0;
          if (!containsData) {
            this.#say(`${fix.errors ? 'Repairing' : 'ERROR'} offset=${hexOf(offset)}: Preallocated cluster is not properly aligned; L2 entry corrupted.`);
            if (fix.errors && (await this.#fixL2EntryByZero(l2Offset, view, i, active))) continue;
          } else {
            this.#say(`ERROR offset=${hexOf(offset)}: Data cluster is not properly aligned; L2 entry corrupted.`);
          }
        }
        if (fragInfo) {
          res.allocatedClusters++;
          if (!sameOffset(next, 0) && !sameOffset(offset, next)) res.fragmentedClusters++;
          next = addOffset(offset, cs);
        }
        if (!dataFile) this.#inc(counts, offset, cs);
      } else if (type === L2_UNALLOCATED) {
        if (extended && bmLo !== 0) {
          res.corruptions++;
          this.#say('ERROR: Unallocated cluster has non-zero subcluster allocation map');
        }
      }
    }
  }

  /**
   * qemu's fix_l2_entry_by_zero: an unaligned preallocated entry becomes a zero cluster
   * (written through at once). True when fixed; a metadata overlap aborts the check.
   */
  async #fixL2EntryByZero(l2Offset: HostOffset, view: DataView, index: number, active: boolean): Promise<boolean> {
    const image = this.#image;
    const res = this.#res;
    const entrySize = image.l2EntrySize;
    const at = index * entrySize;
    if (image.extendedL2) {
      const bmHi = view.getUint32(at + 8);
      const bmLo = view.getUint32(at + 12);
      // Allocated subclusters become zero.
      view.setUint32(at + 8, (bmHi | bmLo) >>> 0);
      view.setUint32(at + 12, 0);
      view.setUint32(at, 0);
      view.setUint32(at + 4, 0);
    } else {
      view.setUint32(at, 0);
      view.setUint32(at + 4, 1);
    }
    const entryOffset = addOffset(l2Offset, at);
    if (typeof entryOffset === 'number') {
      try {
        await image.preWriteOverlapCheck(this.#emit, entryOffset, entrySize, [active ? 'active L2 table' : 'inactive L2 table']);
      } catch (error) {
        this.#say('ERROR: Overlap check failed');
        res.checkErrors++;
        throw abortFrom(error);
      }
    }
    try {
      if (typeof entryOffset !== 'number') throw new CheckAbort(EFBIG_TEXT);
      const bytes = new Uint8Array(view.buffer, view.byteOffset + at, entrySize).slice();
      await image.write(bytes, entryOffset, true);
    } catch (error) {
      this.#say(`ERROR: Failed to overwrite L2 table entry: ${strerrorOf(error)}`);
      res.checkErrors++;
      return false;
    }
    res.corruptions--;
    res.corruptionsFixed++;
    return true;
  }

  /** qemu's qcow2_check_bitmaps_refcounts. */
  async #checkBitmaps(counts: RefcountArray): Promise<void> {
    const dir = this.#image.bitmapDirectory;
    if (dir === undefined) return;
    const cs = this.#image.clusterSize;
    this.#inc(counts, dir.offset, dir.size);
    for (const bm of dir.entries) {
      this.#inc(counts, bm.bitmapTableOffset, bm.bitmapTableSize * BITMAP_TABLE_ENTRY_SIZE);
      const table = new Uint8Array(bm.bitmapTableSize * BITMAP_TABLE_ENTRY_SIZE);
      try {
        await this.#image.read(table, bm.bitmapTableOffset);
      } catch (error) {
        this.#res.corruptions++;
        throw abortFrom(error);
      }
      const view = viewOf(table);
      for (let i = 0; i < bm.bitmapTableSize; i++) {
        const hi = view.getUint32(i * 8);
        const lo = view.getUint32(i * 8 + 4);
        const offset = u64(hi & 0x00ff_ffff, (lo & 0xffff_fe00) >>> 0);
        const nonZero = (hi & 0x00ff_ffff) !== 0 || (lo & 0xffff_fe00) !== 0;
        if ((hi & 0xff00_0000) !== 0 || (lo & 0x1fe) !== 0 || (nonZero && ((lo & 1) !== 0 || offsetIntoCluster(offset, cs)))) {
          this.#res.corruptions++;
          continue;
        }
        if (!nonZero) continue;
        this.#inc(counts, offset, cs);
      }
    }
  }

  /** qemu's check_refblocks. */
  async #checkRefblocks(fix: FixMode, state: { rebuild: boolean }, counts: RefcountArray): Promise<void> {
    const image = this.#image;
    const res = this.#res;
    const cs = image.clusterSize;
    const view = viewOf(image.refcountTable);
    for (let i = 0; i < image.refcountTableSize; i++) {
      const hi = view.getUint32(i * 8);
      const lo = view.getUint32(i * 8 + 4);
      const offset = u64(hi, (lo & 0xffff_fe00) >>> 0);
      const cluster = clusterIndexOf(offset, image.clusterBits);
      if ((lo & 0x1ff) !== 0) {
        this.#say(`ERROR refcount table entry ${i} has reserved bits set`);
        res.corruptions++;
        state.rebuild = true;
        continue;
      }
      if (offsetIntoCluster(offset, cs)) {
        this.#say(`ERROR refcount block ${i} is not cluster aligned; refcount table entry corrupted`);
        res.corruptions++;
        state.rebuild = true;
        continue;
      }
      if (cluster >= counts.clusters) {
        res.corruptions++;
        this.#say(`${fix.errors ? 'Repairing' : 'ERROR'} refcount block ${i} is outside image`);
        if (fix.errors) {
          const failure = await this.#growTo(offset, counts);
          if (failure === undefined && typeof offset === 'number') {
            res.corruptions--;
            res.corruptionsFixed++;
            this.#inc(counts, offset, cs);
            continue;
          }
          state.rebuild = true;
          this.#say(`ERROR could not resize image: ${failure ?? EFBIG_TEXT}`);
        }
        continue;
      }
      if (typeof offset === 'number' && offset !== 0) {
        this.#inc(counts, offset, cs);
        const n = counts.get(cluster);
        if (n !== 1) {
          this.#say(`ERROR refcount block ${i} refcount=${n}`);
          res.corruptions++;
          state.rebuild = true;
        }
      }
    }
  }

  /**
   * Grows the file so that a refcount block past its end lies inside it (qemu truncates the
   * file to offset + cluster size). Sizes whose in-memory refcounts could not be held are
   * refused as a file system refuses a file too large. Returns the failure text, or undefined
   * when done.
   */
  async #growTo(offset: HostOffset, counts: RefcountArray): Promise<string | undefined> {
    const image = this.#image;
    const cs = image.clusterSize;
    if (BigInt(offset) > INT64_MAX - BigInt(cs)) return EINVAL_TEXT;
    const tooLarge = (): string => {
      this.#emit({ text: `Could not resize file: ${EFBIG_TEXT}`, report: true });
      return EFBIG_TEXT;
    };
    if (typeof offset !== 'number' || offset + cs > Number.MAX_SAFE_INTEGER) return tooLarge();
    const clusters = Math.ceil((offset + cs) / cs);
    const bytes = Math.ceil(clusters / counts.blockEntries) * cs;
    if (clusters > INT_MAX || bytes > MAX_GROWN_REFCOUNT_BYTES) return tooLarge();
    try {
      await image.storage.truncate(offset + cs);
      this.#fileSize = await image.storage.size();
    } catch (error) {
      const reason = strerrorOf(error);
      this.#emit({ text: `Could not resize file: ${reason}`, report: true });
      return reason;
    }
    const newClusters = Math.ceil(this.#fileSize / cs);
    try {
      counts.resize(newClusters);
    } catch (error) {
      this.#res.checkErrors++;
      throw new CheckAbort(ENOMEM_TEXT, error);
    }
    return Math.floor(offset / cs) >= newClusters ? EINVAL_TEXT : undefined;
  }

  // ------------------------------------------------------------------ comparison

  /**
   * qemu's compare_refcounts: every cluster of `counts` against its stored refcount; leaks and
   * corruptions counted, repaired where `fix` allows (a stored 0 needs a rebuild). Returns the
   * highest cluster with a refcount or a reference.
   */
  async #compare(fix: FixMode, state: { rebuild: boolean }, counts: RefcountArray): Promise<number> {
    const image = this.#image;
    const res = this.#res;
    const refcounts = this.#store.refcounts;
    const cs = image.clusterSize;
    const n = counts.clusters;
    let highest = 0;
    const repairs: number[] = [];
    const marks = { corrupt: false };
    const visit = (i: number, stored: number): void => {
      let refcount1 = stored;
      if (refcount1 < 0) {
        if (!this.#readsAsZero(i)) {
          this.#unreadable(i, marks);
          return;
        }
        refcount1 = 0;
      }
      const refcount2 = counts.get(i);
      if (refcount1 > 0 || refcount2 > 0) highest = i;
      if (refcount1 === refcount2) return;
      let repair = false;
      if (refcount1 === 0) state.rebuild = true;
      else if (refcount1 > refcount2 && fix.leaks) repair = true;
      else if (refcount1 < refcount2 && fix.errors) repair = true;
      this.#say(`${repair ? 'Repairing' : refcount1 < refcount2 ? 'ERROR' : 'Leaked'} cluster ${i} refcount=${refcount1} reference=${refcount2}`);
      if (repair) repairs.push(i, refcount2 - refcount1);
      else if (refcount1 < refcount2) res.corruptions++;
      else res.leaks++;
    };
    if (refcounts === undefined) {
      for (let i = 0; i < n; i++) visit(i, 0);
    } else {
      try {
        await refcounts.scan(0, n, visit);
      } catch (error) {
        throw abortFrom(error);
      }
    }
    if (marks.corrupt) await image.setIncompatibleBit(1n << 1n, true);
    for (let r = 0; r < repairs.length; r += 2) {
      const cluster = repairs[r]!;
      const delta = repairs[r + 1]!;
      let ok = false;
      try {
        await refcounts!.update(cluster * cs, 1, delta, 'always');
        ok = true;
      } catch {
        ok = false;
      }
      if (delta < 0) {
        if (ok) res.leaksFixed++;
        else res.leaks++;
      } else if (ok) {
        res.corruptionsFixed++;
      } else {
        res.corruptions++;
      }
    }
    // Written back when the check ends (or dropped, as qemu drops its cache, if a corruption
    // event made the image unusable first).
    return highest;
  }

  /**
   * True when the refcount block of cluster `i` lies past 2^53 but where qemu still reads it
   * (as zeros, past the end of any file), so its refcount is 0 rather than unreadable.
   */
  #readsAsZero(i: number): boolean {
    return refcountBlockReadsAsZero(this.#image, i);
  }

  /**
   * "Can't get refcount": qemu's qcow2_get_refcount failed for cluster `i`. An unaligned refcount
   * block is a corruption event (on a writable image qemu marks the image corrupt; here the bit
   * is set after the scan, and the check goes on so that `-r all` can rebuild).
   */
  #unreadable(i: number, marks: { corrupt: boolean }): void {
    const image = this.#image;
    const blockEntries = 2 ** (image.clusterBits + 3 - image.refcountOrder);
    const index = Math.floor(i / blockEntries);
    const view = viewOf(image.refcountTable);
    if (index < image.refcountTableSize) {
      const hi = view.getUint32(index * 8);
      const lo = view.getUint32(index * 8 + 4);
      const offset = u64(hi, (lo & 0xffff_fe00) >>> 0);
      if (offsetIntoCluster(offset, image.clusterSize) && !image.signal.signaled) {
        image.signal.signaled = true;
        const message = `Refblock offset ${hexAlt(offset)} unaligned (reftable index: ${hexAlt(index)})`;
        if (image.writable) {
          marks.corrupt = true;
          this.#say(`qcow2: Marking image as corrupt: ${message}; further corruption events will be suppressed`);
        } else {
          this.#say(`qcow2: Image is corrupt: ${message}; further non-fatal corruption events will be suppressed`);
        }
      }
    }
    this.#say(`Can't get refcount for cluster ${i}: ${EIO_TEXT}`);
    this.#res.checkErrors++;
  }

  // ------------------------------------------------------------------ rebuild

  /**
   * qemu's rebuild_refcount_structure: a new refcount table and blocks written from `counts`
   * (which gains their clusters), placed where nothing counted lies and not over the current
   * structure, then the header switched. The old structure is left to be freed as leaks.
   */
  async #rebuild(counts: RefcountArray): Promise<void> {
    const image = this.#image;
    const res = this.#res;
    const cs = image.clusterSize;
    const old = this.#store.refcounts;
    this.#store.refcounts = undefined;
    if (old !== undefined) {
      try {
        await old.close();
      } catch {
        old.dispose();
      }
    }
    const avoid: [number, number][] = [];
    if (image.refcountTable.length > 0 && typeof image.refcountTableOffset === 'number') avoid.push([image.refcountTableOffset, image.refcountTable.length]);
    const view = viewOf(image.refcountTable);
    for (let i = 0; i < image.refcountTableSize; i++) {
      const hi = view.getUint32(i * 8);
      const lo = view.getUint32(i * 8 + 4) & 0xffff_fe00;
      if (hi > 0x1f_ffff || (hi === 0 && lo === 0)) continue;
      const offset = hi * 0x1_0000_0000 + (lo >>> 0);
      avoid.push([Math.floor(offset / cs) * cs, cs]);
    }
    let result;
    const refusal: { what?: string } = {};
    try {
      result = await rebuildRefcountStructure({
        storage: image.storage,
        counts,
        avoid,
        // qemu's rebuild_refcounts_write_refblocks / rebuild_refcount_structure: each new block
        // and the new table pass qcow2_pre_write_overlap_check (nothing ignored) first.
        writeGuard: (offset, length, what) => this.#rebuildOverlapCheck(offset, length, what, refusal),
      });
    } catch (error) {
      if (refusal.what !== undefined) {
        this.#emit({ text: `ERROR writing ${refusal.what}: Input/output error`, report: true });
        res.checkErrors++;
        throw abortFrom(error);
      }
      this.#emit({ text: `ERROR rebuilding the refcount structure: ${isQcow2Error(error) ? error.message : strerrorOf(error)}`, report: true });
      res.checkErrors++;
      throw abortFrom(error);
    }
    image.refcountTableOffset = result.tableOffset;
    image.refcountTable = result.table;
    this.#store.refcounts = await openStoredRefcounts(image);
  }

  /** The rebuild's overlap check: refused writes are named as qemu names them (refblock, reftable). */
  #rebuildOverlapCheck(offset: number, length: number, what: string, refusal: { what?: string }): Promise<never> | undefined {
    const image = this.#image;
    if (image.overlap(offset, length) === undefined) return undefined;
    refusal.what = what;
    return image.preWriteOverlapCheck(this.#emit, offset, length, []).then(() => {
      throw new CheckAbort(EIO_TEXT);
    });
  }
}

