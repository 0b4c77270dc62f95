import type { TableCache, WriteGuard } from '@qcow2/cache';
import { readFully, type ActiveL1Table } from '@qcow2/cluster';
import {
  encodeString,
  hex,
  invalidArgument,
  isQcow2Error,
  L1_ENTRY_SIZE,
  MAX_L1_ENTRIES,
  MAX_SNAPSHOTS,
  Qcow2Error,
  unsupported,
  type SnapshotEntry,
} from '@qcow2/format';
import type { Refcounts } from '@qcow2/refcount';
import type { Storage } from '@qcow2/storage';
import { findSnapshotByIdOrName, findSnapshotByName, nextSnapshotId } from './snapshot-lookup.js';
import { updateSnapshotRefcount, type RefcountWalkContext, type WalkedL1 } from './snapshot-refcount.js';
import { writeSnapshotTable, type SnapshotTableLocation, type SnapshotTableWriter } from './snapshot-table-write.js';
import { snapshotL1Offset, storedSnapshot, type StoredSnapshot } from './stored-snapshot.js';

/** The snapshot table as the image has it now; changed in place by {@link InternalSnapshots}. */
export interface SnapshotTableState {
  snapshots: StoredSnapshot[];
  location: SnapshotTableLocation;
  /** The virtual disk size (qemu's total_sectors × 512). */
  virtualSize: number;
}

export interface InternalSnapshotsOptions {
  /** The image file (opened for writing). */
  readonly storage: Storage;
  readonly refcounts: Refcounts;
  /** The L2 table cache of the image's cluster map and writer. */
  readonly l2Cache: TableCache;
  /** The active L1 table (the cluster writer's). */
  readonly l1: ActiveL1Table;
  readonly clusterBits: number;
  readonly extendedL2: boolean;
  readonly version: 2 | 3;
  /** Images with an external data file cannot have internal snapshots (qemu: ENOTSUP). */
  readonly externalDataFile: boolean;
  readonly state: SnapshotTableState;
  /** Grows the active L1 table crash-safely (the cluster writer's growL1). */
  readonly growL1: (minEntries: number, exact: boolean) => Promise<void>;
  /** Runs after the virtual size changed on disk (applying a snapshot of another disk size). */
  readonly onResize?: (virtualSize: number) => void | Promise<void>;
  /** Names the image in messages. */
  readonly name?: string;
  /** The wall clock for new snapshots (default Date.now, as qemu-img's g_get_real_time in µs). */
  readonly now?: () => { sec: number; nsec: number };
  /**
   * qemu's qcow2_pre_write_overlap_check before the writes qcow2-snapshot.c checks: a new
   * snapshot's L1 table and a new snapshot table (nothing ignored: they go to new clusters) and
   * the active L1 table overwritten by an apply ('active-l1' ignored). A refusal stops the
   * operation with the guard's error.
   */
  readonly writeGuard?: WriteGuard;
  /**
   * Runs (synchronously) as soon as the header points at a new snapshot table, before the old
   * table or any snapshot cluster is freed — also when the operation fails afterwards — so that
   * metadata overlap checks never protect clusters the operation frees. `created` is the L1 table
   * of a snapshot just created (its bytes as written).
   */
  readonly onTableChanged?: (state: SnapshotTableState, created?: { readonly offset: number; readonly bytes: Uint8Array }) => void;
}

export interface CreateSnapshotOptions {
  /** Defaults as qemu-img snapshot -c: the current time (seconds, and microseconds × 1000). */
  dateSec?: number;
  dateNsec?: number;
  /** Default 0 (qemu-img). */
  vmClockNsec?: number;
}

/** Header byte offset of the virtual size (u64). */
const HEADER_SIZE_AT = 24;
/** qemu-img snapshot -c keeps 255 bytes of a name (char name[256]). */
const MAX_NAME_BYTES = 255;

function defaultNow(): { sec: number; nsec: number } {
  const ms = Date.now();
  return { sec: Math.floor(ms / 1000), nsec: (ms % 1000) * 1_000_000 };
}

function isU32(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 0xffff_ffff;
}

/**
 * Internal snapshots of a qcow2 image opened for writing (qemu's qcow2-snapshot.c): create,
 * apply (qemu-img snapshot -a) and delete, each crash-safe in qemu's order, with refcounts and
 * COPIED flags exact afterwards. Operations must not overlap each other nor guest writes: the
 * caller drains writes and flushes before each (the engine does).
 */
export class InternalSnapshots {
  readonly #o: InternalSnapshotsOptions;
  readonly #ctx: RefcountWalkContext;
  readonly #what: string;
  readonly #clusterSize: number;

  constructor(options: InternalSnapshotsOptions) {
    this.#o = options;
    this.#what = `qcow2 image${options.name === undefined ? '' : ` ${options.name}`}`;
    this.#clusterSize = 2 ** options.clusterBits;
    this.#ctx = {
      storage: options.storage,
      refcounts: options.refcounts,
      l2Cache: options.l2Cache,
      clusterBits: options.clusterBits,
      extendedL2: options.extendedL2,
      what: this.#what,
    };
  }

  /** The snapshots, in table order. */
  get snapshots(): readonly StoredSnapshot[] {
    return this.#o.state.snapshots;
  }

  /**
   * qemu-img snapshot -c: a new snapshot of the active state. Its L1 table is a copy of the
   * active one in new clusters; every L2 table and data cluster it reaches gains a reference
   * (COPIED flags cleared in the active tables); the entry gets the next id (highest numeric
   * id + 1), the name, date and VM clock, the current disk size, VM state size 0 and icount 0,
   * as qemu 7.2 writes them; then the table is rewritten. Refused: an external data file
   * (UNSUPPORTED), 65536 snapshots (UNSUPPORTED), a name in use or longer than 255 bytes, and
   * with refcount_bits=1 an image with any L2 table (INVALID_ARGUMENT: a refcount would
   * reach 2, which qemu refuses with EINVAL). Nothing changes when it is refused.
   */
  async create(name: string, options: CreateSnapshotOptions = {}): Promise<StoredSnapshot> {
    const o = this.#o;
    const state = o.state;
    const failed = `${this.#what}: could not create snapshot ${quote(name)}`;
    if (typeof name !== 'string') throw invalidArgument(`${this.#what}: snapshot name ${String(name)} is not a string`);
    if (o.externalDataFile) {
      throw unsupported(`${failed}: Operation not supported (internal snapshots of an image with an external data file)`);
    }
    if (state.snapshots.length >= MAX_SNAPSHOTS) {
      throw unsupported(`${failed}: File too large (qemu's limit of ${MAX_SNAPSHOTS} snapshots)`);
    }
    if (encodeString(name).byteLength > MAX_NAME_BYTES) {
      throw invalidArgument(`${failed}: the name is longer than ${MAX_NAME_BYTES} bytes`);
    }
    const existing = findSnapshotByName(state.snapshots, name);
    if (existing >= 0) {
      throw invalidArgument(`${failed}: a snapshot with this name already exists (id ${state.snapshots[existing]!.entry.id})`);
    }
    const now = options.dateSec === undefined || options.dateNsec === undefined ? (o.now ?? defaultNow)() : undefined;
    const dateSec = options.dateSec ?? now!.sec;
    const dateNsec = options.dateNsec ?? now!.nsec;
    const vmClockNsec = options.vmClockNsec ?? 0;
    if (!isU32(dateSec)) throw invalidArgument(`${failed}: dateSec ${String(dateSec)} is not an unsigned 32-bit integer`);
    if (!isU32(dateNsec)) throw invalidArgument(`${failed}: dateNsec ${String(dateNsec)} is not an unsigned 32-bit integer`);
    if (typeof vmClockNsec !== 'number' || !Number.isSafeInteger(vmClockNsec) || vmClockNsec < 0) {
      throw invalidArgument(`${failed}: vmClockNsec ${String(vmClockNsec)} is not a non-negative integer`);
    }
    const l1 = o.l1;
    if (o.refcounts.refcountMax < 2) {
      const view = l1.view;
      for (let i = 0; i < l1.size; i++) {
        if ((view.getUint32(i * 8) & 0x00ff_ffff) !== 0 || (view.getUint32(i * 8 + 4) & 0xffff_fe00) !== 0) {
          throw invalidArgument(
            `${failed}: Invalid argument (refcount overflow: the L2 table of L1 index ${i} would get refcount 2, above the maximum 1 of refcount_bits=1)`,
          );
        }
      }
    }
    const size = l1.size;
    // Every table it references will be shared: no COPIED flag (qemu copies the active flags,
    // which then disagree with the refcounts until a snapshot apply fixes them).
    const copy = withoutCopied(l1.bytes.slice());
    const cs = this.#clusterSize;
    const l1Offset = size > 0 ? await o.refcounts.allocClusters(Math.ceil((size * L1_ENTRY_SIZE) / cs)) : 0;
    const active = (): WalkedL1 => ({ offset: l1.offset, bytes: l1.bytes });
    let raised = false;
    let switched = false;
    try {
      if (size > 0) {
        const refused = o.writeGuard?.(l1Offset, size * L1_ENTRY_SIZE);
        if (refused !== undefined) await refused;
        await io(() => o.storage.write(copy, l1Offset), `${failed}: snapshot L1 table at ${hex(l1Offset)}: write`);
      }
      await updateSnapshotRefcount(this.#ctx, active(), 1);
      raised = true;
      const entry: SnapshotEntry = {
        l1TableOffset: l1Offset,
        l1Size: size,
        id: nextSnapshotId(state.snapshots),
        name,
        dateSec,
        dateNsec,
        vmClockNsec: BigInt(vmClockNsec),
        vmStateSize: 0,
        vmStateSizeLarge: 0,
        diskSize: state.virtualSize,
        icount: 0n,
        unknownExtraData: new Uint8Array(0),
      };
      const sn = storedSnapshot(entry);
      const list = [...state.snapshots, sn];
      await writeSnapshotTable(this.#writer(), list, state.location, state.virtualSize, (location) => {
        switched = true;
        this.#switched(location, list, { offset: l1Offset, bytes: copy });
      });
      return sn;
    } catch (error) {
      // The header names the new snapshot: its L1 table and references stay (freeing the old
      // table failed, which only leaks it).
      if (switched) throw error;
      // Undo what is not referenced (qemu leaks it): the raised refcounts, then the L1 copy.
      if (raised) {
        await updateSnapshotRefcount(this.#ctx, { offset: l1.offset, bytes: l1.bytes.slice() }, -1).catch(() => undefined);
        await updateSnapshotRefcount(this.#ctx, active(), 0).catch(() => undefined);
      }
      if (l1Offset > 0) await o.refcounts.free(l1Offset, size * L1_ENTRY_SIZE, 'always').catch(() => undefined);
      throw error;
    }
  }

  /**
   * qemu-img snapshot -a (qcow2_snapshot_goto): finds the snapshot by id, else by name; the
   * virtual size becomes the snapshot's disk size (a version 2 image is refused, as qemu's
   * resize refuses it); the active L1 table grows to hold the snapshot's, which is copied over
   * it (padded with zeros) after its clusters gained a reference; then the old active clusters
   * lose theirs (freed when unreferenced, pass-discard-snapshot) and COPIED flags are set
   * right. NOT_FOUND when there is no such snapshot.
   */
  async apply(idOrName: string): Promise<void> {
    const o = this.#o;
    const state = o.state;
    const failed = `${this.#what}: could not apply snapshot ${quote(idOrName)}`;
    if (o.externalDataFile) {
      throw unsupported(`${failed}: Operation not supported (internal snapshots of an image with an external data file)`);
    }
    const index = findSnapshotByIdOrName(state.snapshots, idOrName);
    if (index < 0) throw new Qcow2Error('NOT_FOUND', `${failed}: Failed to load snapshot: No such file or directory`);
    const sn = state.snapshots[index]!;
    const snOffset = snapshotL1Offset(sn, this.#clusterSize, failed);
    const diskSize = sn.entry.diskSize ?? state.virtualSize;
    if (diskSize !== state.virtualSize) await this.#resize(diskSize, failed);
    await o.growL1(sn.l1Size, true);
    const l1 = o.l1;
    const size = l1.size;
    const next = new Uint8Array(size * L1_ENTRY_SIZE);
    const snBytes = new Uint8Array(sn.l1Size * L1_ENTRY_SIZE);
    if (snBytes.length > 0) await readFully(o.storage, snBytes, snOffset);
    // COPIED cleared: every L2 table the copy references is shared until the old active tables
    // lost their reference, so a cut before the final pass cannot leave a writable shared table
    // (qemu copies the snapshot's flags as they are and fixes them only in that pass).
    next.set(withoutCopied(snBytes.slice()));
    await updateSnapshotRefcount(this.#ctx, { offset: snOffset, bytes: snBytes.slice() }, 1);
    if (next.length > 0) {
      try {
        const refused = o.writeGuard?.(l1.offset, next.length, 'active-l1');
        if (refused !== undefined) await refused;
        await io(() => o.storage.write(next, l1.offset), `${failed}: active L1 table at ${hex(l1.offset)}: write`);
      } catch (error) {
        // The file still holds the old table: the new references are undone.
        await updateSnapshotRefcount(this.#ctx, { offset: snOffset, bytes: snBytes.slice() }, -1).catch(() => undefined);
        throw error;
      }
      try {
        await io(() => o.storage.flush(), `${failed}: active L1 table: flush`);
      } catch (error) {
        // The write went through but is not known durable: the file may hold either table.
        // The new one is taken (its references stay raised, the old table's are kept: at worst
        // leaks), never undone, which could leave the file's table above its refcounts.
        l1.replace(l1.offset, size, next);
        throw error;
      }
    }
    const old = l1.bytes.slice();
    try {
      await updateSnapshotRefcount(this.#ctx, { offset: l1.offset, bytes: old }, -1);
    } finally {
      // The file holds the new table whatever happened: so must memory.
      l1.replace(l1.offset, size, next);
    }
    await updateSnapshotRefcount(this.#ctx, { offset: l1.offset, bytes: l1.bytes }, 0);
  }

  /**
   * qemu-img snapshot -d: finds the snapshot by name as qemu 7.2's bdrv_snapshot_find does (by
   * name only), removes it from the table (rewritten crash-safely), then its clusters lose a
   * reference (freed when unreferenced, pass-discard-snapshot), its L1 table is freed, and the
   * active COPIED flags are set right. NOT_FOUND when there is no such snapshot.
   */
  async delete(name: string): Promise<void> {
    const o = this.#o;
    const state = o.state;
    const failed = `${this.#what}: could not delete snapshot ${quote(name)}`;
    if (o.externalDataFile) {
      throw unsupported(`${failed}: Operation not supported (internal snapshots of an image with an external data file)`);
    }
    const index = findSnapshotByName(state.snapshots, name);
    if (index < 0) throw new Qcow2Error('NOT_FOUND', `${failed}: snapshot not found`);
    const sn = state.snapshots[index]!;
    const snOffset = snapshotL1Offset(sn, this.#clusterSize, failed);
    const snBytes = new Uint8Array(sn.l1Size * L1_ENTRY_SIZE);
    if (snBytes.length > 0) await readFully(o.storage, snBytes, snOffset);
    const list = state.snapshots.filter((_, i) => i !== index);
    await writeSnapshotTable(this.#writer(), list, state.location, state.virtualSize, (location) => this.#switched(location, list));
    // From here on a failure only leaks clusters (as in qemu).
    await updateSnapshotRefcount(this.#ctx, { offset: snOffset, bytes: snBytes }, -1);
    if (snBytes.length > 0) await o.refcounts.free(snOffset, snBytes.length, 'snapshot');
    await updateSnapshotRefcount(this.#ctx, { offset: o.l1.offset, bytes: o.l1.bytes }, 0);
  }

  #writer(): SnapshotTableWriter {
    const o = this.#o;
    return { storage: o.storage, refcounts: o.refcounts, l2Cache: o.l2Cache, what: this.#what, writeGuard: o.writeGuard };
  }

  /** The header points at the new table: the state (and whoever follows it) knows at once. */
  #switched(location: SnapshotTableLocation, list: StoredSnapshot[], created?: { offset: number; bytes: Uint8Array }): void {
    const state = this.#o.state;
    state.location = location;
    state.snapshots = list;
    this.#o.onTableChanged?.(state, created);
  }

  /** qemu's qcow2_co_truncate as far as applying a snapshot needs it (the L1 table is replaced after). */
  async #resize(size: number, failed: string): Promise<void> {
    const o = this.#o;
    if (o.version < 3) {
      throw unsupported(`${failed}: Can't resize a v2 image which has snapshots (snapshot disk size ${size}, image ${o.state.virtualSize})`);
    }
    if (!Number.isSafeInteger(size) || size % 512 !== 0) {
      throw unsupported(`${failed}: The new size must be a multiple of 512 (snapshot disk size ${size})`);
    }
    const span = this.#clusterSize * (this.#clusterSize / (o.extendedL2 ? 16 : 8));
    const l1Entries = Math.ceil(size / span);
    if (l1Entries > MAX_L1_ENTRIES) {
      throw unsupported(`${failed}: File too large (a disk of ${size} bytes needs ${l1Entries} L1 entries)`);
    }
    if (l1Entries > o.l1.size) await o.growL1(l1Entries, true);
    const bytes = new Uint8Array(8);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, Math.floor(size / 0x1_0000_0000));
    view.setUint32(4, size >>> 0);
    await io(() => o.storage.write(bytes, HEADER_SIZE_AT), `${failed}: header size at 0x18: write`);
    await io(() => o.storage.flush(), `${failed}: header size: flush`);
    o.state.virtualSize = size;
    await o.onResize?.(size);
  }
}

/** L1 entries with their COPIED flags cleared (in place). */
function withoutCopied(bytes: Uint8Array): Uint8Array {
  for (let at = 0; at < bytes.length; at += 8) bytes[at] = bytes[at]! & 0x7f;
  return bytes;
}

function quote(name: unknown): string {
  return `'${String(name)}'`;
}

async function io(fn: () => Promise<void>, what: string): Promise<void> {
  try {
    await fn();
  } catch (error) {
    if (isQcow2Error(error)) throw new Qcow2Error(error.code, `${what}: ${error.message}`, { cause: error });
    throw new Qcow2Error('IO', `${what}: ${String(error)}`, { cause: error });
  }
}
