import { L1E_COPIED_HI, L2E_COPIED_HI, Qcow2Error } from '@qcow2/format';
import { Refcounts, writeInitialRefcountStructure } from '@qcow2/refcount';
import type { Storage } from '@qcow2/storage';
import type { CreatePlan } from './create-options.js';
import { writeRefcountArea } from './create-refcount-area.js';

/** qemu's INT_MAX and BDRV_REQUEST_MAX_BYTES: the chunking of preallocate_co and handle_alloc. */
const INT_MAX = 2 ** 31 - 1;
const REQUEST_MAX_BYTES = 2147483136;
const TWO_POW_32 = 0x1_0000_0000;
/** Zeros are written this many bytes at a time (falloc/full). */
const ZERO_CHUNK = 1 << 20;
/** qemu's "no host offset yet" (INV_OFFSET). */
const NONE = -1;

/** Where the tables of a freshly laid out image are, for its header. */
export interface FreshLayout {
  readonly l1Size: number;
  readonly l1TableOffset: number;
  readonly refcountTableOffset: number;
  readonly refcountTableClusters: number;
}

interface L2Table {
  readonly index: number;
  readonly offset: number;
  readonly bytes: Uint8Array;
  readonly view: DataView;
}

/**
 * Lays out the refcount structure, L1 table and (with preallocation) L2 tables and data
 * clusters of a new image in the order qemu's qcow2_co_create and qcow2_co_truncate allocate
 * them, so every structure lands at qemu's offset: first-fit allocations through @qcow2/refcount
 * (which grows refcount blocks and the table as qemu does), L2 tables allocated when a guest
 * offset first needs one, data runs extended in place until an L2 table takes the next cluster.
 * The header cluster (cluster 0) is left to the caller.
 */
export class FreshImageWriter {
  readonly #storage: Storage;
  readonly #data: Storage | undefined;
  readonly #plan: CreatePlan;
  readonly #cs: number;
  readonly #l2Entries: number;
  readonly #l2EntrySize: number;
  #refcounts!: Refcounts;
  #tableOffset = 0;
  #tableClusters = 0;
  /** Times the refcount table moved (grew). */
  #tableMoves = 0;
  #l1Size = 0;
  #l1Offset = 0;
  #l1 = new Uint8Array(0);
  #l2: L2Table | undefined;
  /** The end of what qemu writes in partial sectors we do not write as such (L1 entry sectors, truncates). */
  #end = 0;

  private constructor(storage: Storage, data: Storage | undefined, plan: CreatePlan) {
    this.#storage = storage;
    this.#data = data;
    this.#plan = plan;
    this.#cs = 2 ** plan.clusterBits;
    this.#l2EntrySize = plan.extendedL2 ? 16 : 8;
    this.#l2Entries = this.#cs / this.#l2EntrySize;
  }

  /** Writes everything but the header cluster; resolves to the table positions for the header. */
  static async write(storage: Storage, data: Storage | undefined, plan: CreatePlan): Promise<FreshLayout> {
    const writer = new FreshImageWriter(storage, data, plan);
    return writer.#run();
  }

  async #run(): Promise<FreshLayout> {
    const plan = this.#plan;
    const initial = await writeInitialRefcountStructure(this.#storage, {
      clusterBits: plan.clusterBits,
      refcountOrder: plan.refcountOrder,
    });
    await this.#openRefcounts(initial.tableOffset, initial.tableClusters);
    try {
      await this.#allocateL1();
      const mode = plan.preallocation;
      if (this.#data !== undefined) await this.#data.truncate(0);
      if (mode === 'metadata' || ((mode === 'falloc' || mode === 'full') && this.#data !== undefined)) {
        await this.#preallocateMetadata();
      } else if (mode === 'falloc' || mode === 'full') {
        await this.#preallocateData();
      } else if (this.#data !== undefined) {
        await this.#data.truncate(plan.size);
      }
      await this.#writeL2();
      if (this.#l1Size > 0) await this.#storage.write(this.#l1, this.#l1Offset);
      await this.#refcounts.close();
    } catch (error) {
      this.#refcounts.dispose();
      throw error;
    }
    if ((await this.#storage.size()) < this.#end) await this.#storage.truncate(this.#end);
    return {
      l1Size: this.#l1Size,
      l1TableOffset: this.#l1Offset,
      refcountTableOffset: this.#tableOffset,
      refcountTableClusters: this.#tableClusters,
    };
  }

  async #openRefcounts(tableOffset: number, tableClusters: number): Promise<void> {
    this.#tableOffset = tableOffset;
    this.#tableClusters = tableClusters;
    this.#refcounts = await Refcounts.open({
      storage: this.#storage,
      clusterBits: this.#plan.clusterBits,
      refcountOrder: this.#plan.refcountOrder,
      tableOffset,
      tableClusters,
      // The header is written last, whole: only remember where the table went.
      onTableMoved: (offset, clusters) => {
        this.#tableOffset = offset;
        this.#tableClusters = clusters;
        this.#tableMoves += 1;
      },
    });
  }

  /**
   * qcow2_alloc_clusters. When the refcount table had to grow for the allocation, qemu's
   * alloc_refcount_block answers -EAGAIN and the allocation is searched again from the free
   * cluster index (which the freed old table moved back): the same here, by freeing the
   * clusters and allocating again.
   */
  async #alloc(count: number): Promise<number> {
    for (;;) {
      const moves = this.#tableMoves;
      const offset = await this.#refcounts.allocClusters(count);
      if (moves === this.#tableMoves) return offset;
      await this.#refcounts.free(offset, count * this.#cs, 'never');
    }
  }

  /** qcow2_grow_l1_table(size_to_l1(size), exact): one allocation, written as zeros. */
  async #allocateL1(): Promise<void> {
    const coverage = this.#cs * this.#l2Entries;
    const l1Size = Math.ceil(this.#plan.size / coverage);
    if (l1Size === 0) return;
    const bytes = l1Size * 8;
    this.#l1Offset = await this.#alloc(Math.ceil(bytes / this.#cs));
    this.#l1Size = l1Size;
    this.#l1 = new Uint8Array(bytes);
    await this.#storage.write(this.#l1, this.#l1Offset);
  }

  /** get_cluster_table: the L2 table for `guest`, allocated (l2_allocate) when the L1 entry is empty. */
  async #l2For(guest: number): Promise<L2Table> {
    const index = Math.floor(guest / (this.#cs * this.#l2Entries));
    if (this.#l2 !== undefined && this.#l2.index === index) return this.#l2;
    await this.#writeL2();
    const offset = await this.#alloc(1);
    const view = new DataView(this.#l1.buffer);
    view.setUint32(index * 8, (Math.floor(offset / TWO_POW_32) | L1E_COPIED_HI) >>> 0);
    view.setUint32(index * 8 + 4, offset >>> 0);
    // qcow2_write_l1_entry writes the 512-byte sector holding the entry.
    this.#end = Math.max(this.#end, this.#l1Offset + Math.floor((index * 8) / 512) * 512 + 512);
    const bytes = new Uint8Array(this.#cs);
    this.#l2 = { index, offset, bytes, view: new DataView(bytes.buffer) };
    return this.#l2;
  }

  async #writeL2(): Promise<void> {
    const l2 = this.#l2;
    if (l2 === undefined) return;
    this.#l2 = undefined;
    await this.#storage.write(l2.bytes, l2.offset);
  }

  /** Points `count` entries from `guest` (all in one L2 table) at host clusters from `host`, COPIED (prealloc: no subcluster bits). */
  async #link(guest: number, host: number, count: number): Promise<void> {
    const l2 = await this.#l2For(guest);
    const first = Math.floor(guest / this.#cs) % this.#l2Entries;
    for (let i = 0; i < count; i++) {
      const offset = host + i * this.#cs;
      const at = (first + i) * this.#l2EntrySize;
      l2.view.setUint32(at, (Math.floor(offset / TWO_POW_32) | L2E_COPIED_HI) >>> 0);
      l2.view.setUint32(at + 4, offset >>> 0);
    }
  }

  /**
   * preallocate_co: qcow2_alloc_host_offset over chunks of at most INT_MAX bytes. Each call
   * allocates an L2 table when its guest range first needs one, then data clusters (first fit
   * for the first run of the call, then only contiguously after it: the call ends when the next
   * L2 table took that cluster). With an external data file the host offset is the guest offset
   * and only L2 tables are allocated. Then the file holding the data is extended to the end of
   * the last run.
   */
  async #preallocateMetadata(): Promise<void> {
    const cs = this.#cs;
    const size = this.#plan.size;
    let offset = 0;
    let host = NONE;
    let done = 0;
    while (offset < size) {
      const chunk = Math.min(size - offset, Math.floor(INT_MAX / cs) * cs);
      const run = await this.#allocHostOffset(offset, chunk);
      host = run.host;
      done = run.bytes;
      offset += done;
    }
    if (host === NONE) return;
    // qemu extends the file to the last run's end rounded up to a whole subcluster.
    const subcluster = this.#plan.extendedL2 ? cs / 32 : cs;
    const end = host + Math.ceil(done / subcluster) * subcluster;
    if (this.#data !== undefined) {
      if ((await this.#data.size()) < end) await this.#extend(this.#data, end, this.#plan.preallocation !== 'metadata');
    } else {
      this.#end = Math.max(this.#end, end);
    }
  }

  async #allocHostOffset(start: number, bytes: number): Promise<{ host: number; bytes: number }> {
    const cs = this.#cs;
    let remaining = bytes;
    let clusterOffset = NONE;
    let host = NONE;
    let step = 0;
    for (;;) {
      if (host === NONE && clusterOffset !== NONE) host = clusterOffset;
      start += step;
      remaining -= step;
      if (clusterOffset !== NONE) clusterOffset += step;
      if (remaining === 0) break;
      step = remaining;
      // handle_copied: finds (allocating) the L2 table; nothing in it can be kept.
      await this.#l2For(start);
      // handle_alloc
      const into = start % cs;
      const index = Math.floor(start / cs) % this.#l2Entries;
      let count = Math.min(Math.ceil((into + step) / cs), this.#l2Entries - index, Math.floor(REQUEST_MAX_BYTES / cs));
      let alloc: number;
      if (this.#data !== undefined) {
        alloc = start - into;
      } else if (clusterOffset === NONE) {
        alloc = await this.#alloc(count);
      } else {
        alloc = clusterOffset - (clusterOffset % cs);
        count = await this.#refcounts.allocAt(alloc, count);
        if (count === 0) break;
      }
      const usable = Math.min(into + step, count * cs);
      clusterOffset = alloc + into;
      step = Math.min(step, usable - into);
      await this.#link(start - into, alloc, count);
    }
    return { host, bytes: bytes - remaining };
  }

  /**
   * qcow2_co_truncate's falloc/full path: new refcount structures after the last used cluster,
   * sized for every data cluster and L2 table to come; the data clusters allocated in one run
   * right after them and written as zeros; then the L2 tables, allocated first fit as the runs
   * are linked (the first one where the old refcount table was).
   */
  async #preallocateData(): Promise<void> {
    const cs = this.#cs;
    const fileLength = Math.max(await this.#storage.size(), this.#end);
    let last = Math.ceil(fileLength / cs) - 1;
    while (last >= 0 && (await this.#refcounts.get(last)) === 0) last--;
    const oldFileSize = last >= 0 ? (last + 1) * cs : Math.ceil(fileLength / cs) * cs;
    const dataClusters = Math.ceil(this.#plan.size / cs);
    const l2Tables = Math.ceil(dataClusters / this.#l2Entries) + 1;

    await this.#refcounts.close();
    const oldTable = this.#tableOffset;
    const oldClusters = this.#tableClusters;
    const area = await writeRefcountArea({
      storage: this.#storage,
      clusterBits: this.#plan.clusterBits,
      refcountOrder: this.#plan.refcountOrder,
      tableOffset: oldTable,
      tableClusters: oldClusters,
      startOffset: oldFileSize,
      additionalClusters: dataClusters + l2Tables,
    });
    await this.#openRefcounts(area.tableOffset, area.tableClusters);
    await this.#refcounts.free(oldTable, oldClusters * cs, 'other');

    const start = area.endOffset;
    const got = await this.#refcounts.allocAt(start, dataClusters);
    if (got !== dataClusters) {
      throw new Qcow2Error('CORRUPT', `preallocation: only ${got} of ${dataClusters} clusters after the refcount structures are free`);
    }
    await this.#extend(this.#storage, start + dataClusters * cs, true);
    let guest = 0;
    let host = start;
    let left = dataClusters;
    while (left > 0) {
      const count = Math.min(left, this.#l2Entries - (Math.floor(guest / cs) % this.#l2Entries));
      await this.#link(guest, host, count);
      guest += count * cs;
      host += count * cs;
      left -= count;
    }
  }

  /** Grows `storage` to `end`, writing zeros over the new part when `zeros` (falloc, full). */
  async #extend(storage: Storage, end: number, zeros: boolean): Promise<void> {
    const from = await storage.size();
    await storage.truncate(end);
    if (!zeros) return;
    const chunk = new Uint8Array(Math.min(ZERO_CHUNK, end - from));
    for (let at = from; at < end; at += chunk.length) {
      await storage.write(at + chunk.length <= end ? chunk : chunk.subarray(0, end - at), at);
    }
  }
}
