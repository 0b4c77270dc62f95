import type { MetadataStructure, WriteGuard } from '@qcow2/cache';
import { type ActiveL1Table, readFully } from '@qcow2/cluster';
import { AUTOCLEAR_BITMAPS, corrupt, hex, invalidArgument, L1_ENTRY_SIZE, MAX_L1_ENTRIES } from '@qcow2/format';
import type { Refcounts } from '@qcow2/refcount';
import type { Storage } from '@qcow2/storage';

export type { MetadataStructure } from '@qcow2/cache';

/** qemu's overlap-check option: which metadata every write to the image file is checked against. */
export type OverlapCheckMode = 'none' | 'constant' | 'cached' | 'all';

/** qemu's overlap-check.<structure> switches: each one overrides the mode's choice for its structure. */
export type OverlapChecks = Partial<Record<MetadataStructure, boolean>>;

/** The structures in qemu's bit order (QCOW2_OL_*_BITNR): a write hitting several is named by the first checked. */
export const METADATA_STRUCTURES: readonly MetadataStructure[] = [
  'main-header',
  'active-l1',
  'active-l2',
  'refcount-table',
  'refcount-block',
  'snapshot-table',
  'inactive-l1',
  'inactive-l2',
  'bitmap-directory',
];

/** qemu's metadata_ol_names, as its messages print them. */
export const QEMU_METADATA_NAMES: Readonly<Record<MetadataStructure, string>> = {
  'main-header': 'qcow2_header',
  'active-l1': 'active L1 table',
  'active-l2': 'active L2 table',
  'refcount-table': 'refcount table',
  'refcount-block': 'refcount block',
  'snapshot-table': 'snapshot table',
  'inactive-l1': 'inactive L1 table',
  'inactive-l2': 'inactive L2 table',
  'bitmap-directory': 'bitmap directory',
};

const HEADER = 1 << 0;
const ACTIVE_L1 = 1 << 1;
const ACTIVE_L2 = 1 << 2;
const REFCOUNT_TABLE = 1 << 3;
const REFCOUNT_BLOCK = 1 << 4;
const SNAPSHOT_TABLE = 1 << 5;
const INACTIVE_L1 = 1 << 6;
const INACTIVE_L2 = 1 << 7;
const BITMAP_DIRECTORY = 1 << 8;

/** QCOW2_OL_CONSTANT, QCOW2_OL_CACHED, QCOW2_OL_ALL. */
const TEMPLATES: Readonly<Record<OverlapCheckMode, number>> = {
  none: 0,
  constant: HEADER | ACTIVE_L1 | REFCOUNT_TABLE | SNAPSHOT_TABLE | BITMAP_DIRECTORY,
  cached: HEADER | ACTIVE_L1 | REFCOUNT_TABLE | SNAPSHOT_TABLE | BITMAP_DIRECTORY | ACTIVE_L2 | REFCOUNT_BLOCK | INACTIVE_L1,
  all: HEADER | ACTIVE_L1 | REFCOUNT_TABLE | SNAPSHOT_TABLE | BITMAP_DIRECTORY | ACTIVE_L2 | REFCOUNT_BLOCK | INACTIVE_L1 | INACTIVE_L2,
};

/** The QCOW2_OL_* bit of a structure. */
export function structureBit(structure: MetadataStructure): number {
  return 1 << METADATA_STRUCTURES.indexOf(structure);
}

/**
 * The structures checked, as a QCOW2_OL_* mask (qemu's qcow2_update_options_prepare): the
 * mode's template ('cached' by default), then each switch given overriding its bit.
 * INVALID_ARGUMENT for an unknown mode, an unknown structure or a switch that is not a boolean.
 */
export function resolveOverlapChecks(mode: unknown, switches: unknown): number {
  const name = mode ?? 'cached';
  if (typeof name !== 'string' || !Object.hasOwn(TEMPLATES, name)) {
    throw invalidArgument(
      `Unsupported value '${String(name)}' for qcow2 option 'overlap-check'. Allowed are any of the following: none, constant, cached, all`,
    );
  }
  let mask = TEMPLATES[name as OverlapCheckMode];
  if (switches === undefined) return mask;
  if (typeof switches !== 'object' || switches === null) throw invalidArgument('overlapChecks must be an object of booleans');
  for (const [key, value] of Object.entries(switches)) {
    if (!(METADATA_STRUCTURES as readonly string[]).includes(key)) {
      throw invalidArgument(`Unknown qcow2 option 'overlap-check.${key}' (known: ${METADATA_STRUCTURES.join(', ')})`);
    }
    if (value === undefined) continue;
    if (typeof value !== 'boolean') throw invalidArgument(`Parameter 'overlap-check.${key}' expects a boolean, got ${typeof value}`);
    const bit = structureBit(key as MetadataStructure);
    mask = value ? mask | bit : mask & ~bit;
  }
  return mask;
}

/** `[at, at + bytes)` (not empty) meets `[start, stop)`. */
function overlaps(at: number, bytes: number, start: number, stop: number): boolean {
  return bytes > 0 && at < stop && start < at + bytes;
}

/**
 * Cluster indexes, sorted, for binary searches, followed by an Infinity sentinel: a search always
 * reads an element, so the element load has type feedback from the first check on (an empty list
 * at first, as before the first L2 table, would otherwise deoptimize the check later).
 */
function sortedIndex(clusters: number[]): Float64Array {
  const sorted = new Float64Array(clusters.length + 1);
  sorted.set(clusters);
  sorted.subarray(0, clusters.length).sort();
  sorted[clusters.length] = Infinity;
  return sorted;
}

/** A snapshot's L1 table, as the snapshot table records it. */
export interface SnapshotL1 {
  readonly offset: number;
  /** Entries. */
  readonly size: number;
}

export interface OverlapCheckerOptions {
  /** QCOW2_OL_* bits to check (from `resolveOverlapChecks`). */
  readonly mask: number;
  readonly clusterSize: number;
  /** The active L1 table, followed live (offset, size and entries). */
  readonly l1: ActiveL1Table;
  /** The snapshot table (0 bytes when there is none). */
  readonly snapshotTable?: { readonly offset: number; readonly length: number };
  readonly snapshotL1s?: readonly SnapshotL1[];
  /** Offsets of the L2 tables the snapshot L1 tables point at ('inactive-l2' only). */
  readonly inactiveL2?: Iterable<number>;
  /** The bitmap directory while the bitmaps extension is in force (qemu checks it only then). */
  readonly bitmapDirectory?: () => { readonly offset: number; readonly length: number } | undefined;
}

/**
 * qemu's qcow2_check_metadata_overlap: which metadata structure a write would overwrite. The
 * ranges are cluster-rounded as qemu rounds them (but the header only counts when the write
 * starts inside its cluster). Active L2 tables and refcount blocks are held as sorted arrays of
 * cluster indexes, rebuilt only when the L1 table or the refcount table changed, so a check costs
 * a few comparisons and a binary search per kind, whatever the length of the write.
 */
export class OverlapChecker {
  readonly mask: number;
  readonly #cs: number;
  readonly #l1: ActiveL1Table;
  #refcounts: Refcounts | undefined;
  #snapshotOffset = 0;
  #snapshotLength = 0;
  #snapshotL1s: readonly SnapshotL1[] = [];
  #inactiveL2: Float64Array = sortedIndex([]);
  readonly #bitmapDirectory: (() => { readonly offset: number; readonly length: number } | undefined) | undefined;
  #l2Version = -1;
  #l2: Float64Array = sortedIndex([]);
  #blockVersion = -1;
  #blocks: Float64Array = sortedIndex([]);

  constructor(options: OverlapCheckerOptions) {
    this.mask = options.mask;
    this.#cs = options.clusterSize;
    this.#l1 = options.l1;
    this.#bitmapDirectory = options.bitmapDirectory;
    this.setSnapshots(options.snapshotTable ?? { offset: 0, length: 0 }, options.snapshotL1s ?? [], options.inactiveL2);
  }

  /** The refcounts, once open (refcount table and block checks start then). */
  attach(refcounts: Refcounts): void {
    this.#refcounts = refcounts;
    this.#blockVersion = -1;
  }

  /**
   * After the snapshot table changed (snapshot create/delete/apply): its place, the snapshots'
   * L1 tables, and (for 'inactive-l2') the L2 tables they point at (see `readInactiveL2Offsets`).
   */
  setSnapshots(table: { readonly offset: number; readonly length: number }, l1s: readonly SnapshotL1[], inactiveL2?: Iterable<number>): void {
    this.#snapshotOffset = table.offset;
    this.#snapshotLength = table.length;
    this.#snapshotL1s = l1s;
    const clusters: number[] = [];
    for (const offset of inactiveL2 ?? []) this.#addCluster(clusters, offset);
    this.#inactiveL2 = sortedIndex(clusters);
  }

  /**
   * The first structure (in qemu's order) that `[offset, offset + length)` overlaps, ignoring
   * the structures in `ignore` (QCOW2_OL_* bits); undefined when none.
   */
  find(offset: number, length: number, ignore = 0): MetadataStructure | undefined {
    const check = this.mask & ~ignore;
    if (check === 0 || length === 0) return undefined;
    const cs = this.#cs;
    if ((check & HEADER) !== 0 && offset < cs) return 'main-header';
    const first = Math.floor(offset / cs);
    const end = Math.ceil((offset + length) / cs);
    const start = first * cs;
    const stop = end * cs;
    const l1 = this.#l1;
    if ((check & ACTIVE_L1) !== 0 && l1.size > 0 && overlaps(l1.offset, l1.size * L1_ENTRY_SIZE, start, stop)) return 'active-l1';
    const refcounts = this.#refcounts;
    if ((check & REFCOUNT_TABLE) !== 0 && refcounts !== undefined && overlaps(refcounts.tableOffset, refcounts.tableEntries * 8, start, stop)) {
      return 'refcount-table';
    }
    if ((check & SNAPSHOT_TABLE) !== 0 && overlaps(this.#snapshotOffset, this.#snapshotLength, start, stop)) return 'snapshot-table';
    if ((check & INACTIVE_L1) !== 0) {
      for (const sn of this.#snapshotL1s) if (overlaps(sn.offset, sn.size * L1_ENTRY_SIZE, start, stop)) return 'inactive-l1';
    }
    if ((check & ACTIVE_L2) !== 0 && this.#any(this.#activeL2(), first, end)) return 'active-l2';
    if ((check & REFCOUNT_BLOCK) !== 0 && refcounts !== undefined && this.#any(this.#refcountBlocks(refcounts), first, end)) {
      return 'refcount-block';
    }
    if ((check & INACTIVE_L2) !== 0 && this.#any(this.#inactiveL2, first, end)) return 'inactive-l2';
    if ((check & BITMAP_DIRECTORY) !== 0) {
      const dir = this.#bitmapDirectory?.();
      if (dir !== undefined && overlaps(dir.offset, dir.length, start, stop)) return 'bitmap-directory';
    }
    return undefined;
  }

  /** True when a cluster index in `[first, end)` is in `sorted` (a binary search; see sortedIndex's sentinel). */
  #any(sorted: Float64Array, first: number, end: number): boolean {
    let lo = 0;
    let hi = sorted.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (sorted[mid]! < first) lo = mid + 1;
      else hi = mid;
    }
    return sorted[lo]! < end;
  }

  /** The cluster(s) a one-cluster table at `offset` covers (two when it is not aligned, as qemu's check counts it). */
  #addCluster(out: number[], offset: number): void {
    const c = Math.floor(offset / this.#cs);
    out.push(c);
    if (offset % this.#cs !== 0) out.push(c + 1);
  }

  #activeL2(): Float64Array {
    const l1 = this.#l1;
    if (l1.version === this.#l2Version) return this.#l2;
    const clusters: number[] = [];
    const view = l1.view;
    for (let i = 0; i < l1.size; i++) {
      const hi = view.getUint32(i * 8) & 0x00ff_ffff;
      const lo = (view.getUint32(i * 8 + 4) & 0xffff_fe00) >>> 0;
      if (hi !== 0 || lo !== 0) this.#addCluster(clusters, hi * 0x1_0000_0000 + lo);
    }
    this.#l2 = sortedIndex(clusters);
    this.#l2Version = l1.version;
    return this.#l2;
  }

  #refcountBlocks(refcounts: Refcounts): Float64Array {
    if (refcounts.structureVersion === this.#blockVersion) return this.#blocks;
    const clusters: number[] = [];
    for (const r of refcounts.structure()) if (r.kind === 'block') this.#addCluster(clusters, r.offset);
    this.#blocks = sortedIndex(clusters);
    this.#blockVersion = refcounts.structureVersion;
    return this.#blocks;
  }
}

/**
 * The L2 table offsets the snapshots' L1 tables point at, read from the file (what qemu's
 * 'inactive-l2' check reads on every write). L1 tables that are not cluster-aligned or too
 * large are skipped.
 */
export async function readInactiveL2Offsets(storage: Storage, l1s: readonly SnapshotL1[], clusterSize: number): Promise<number[]> {
  const out: number[] = [];
  for (const sn of l1s) {
    if (sn.size === 0 || sn.size > MAX_L1_ENTRIES || sn.offset % clusterSize !== 0) continue;
    const bytes = new Uint8Array(sn.size * L1_ENTRY_SIZE);
    await readFully(storage, bytes, sn.offset);
    out.push(...l2OffsetsOf(bytes));
  }
  return out;
}

/** The L2 table offsets an L1 table's entries hold (big-endian bytes). */
export function l2OffsetsOf(bytes: Uint8Array): number[] {
  const out: number[] = [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let at = 0; at + L1_ENTRY_SIZE <= bytes.byteLength; at += L1_ENTRY_SIZE) {
    const hi = view.getUint32(at) & 0x00ff_ffff;
    const lo = (view.getUint32(at + 4) & 0xffff_fe00) >>> 0;
    if (hi !== 0 || lo !== 0) out.push(hi * 0x1_0000_0000 + lo);
  }
  return out;
}

/** A snapshot table entry's L1 table location as stored (what the engine's snapshot state holds). */
export interface StoredSnapshotL1 {
  readonly l1OffsetHi: number;
  readonly l1OffsetLo: number;
  readonly l1Size: number;
}

function l1Key(offset: number, size: number): string {
  return `${offset}/${size}`;
}

/** What the guard asks of the image: its corrupt state, and marking it corrupt. */
export interface CorruptionSink {
  /** A promise that rejects with the refusal once the image was marked corrupt, else undefined. */
  refusal(): Promise<never> | undefined;
  /** qemu's qcow2_signal_corruption (fatal): marks the image corrupt and rejects with `message`. */
  signalCorruption(message: string, offset: number, length: number): Promise<never>;
}

/**
 * qemu's qcow2_pre_write_overlap_check as a WriteGuard: writes are refused once the image is
 * corrupt; guest data going to an external data file is not checked; a write overlapping
 * metadata other than its own marks the image corrupt and is refused with qemu's words.
 */
export function createOverlapGuard(checker: OverlapChecker, sink: CorruptionSink, externalDataFile: boolean): WriteGuard {
  return (offset, length, own) => {
    const refused = sink.refusal();
    if (refused !== undefined) return refused;
    let ignore = 0;
    if (own === 'data') {
      if (externalDataFile) return undefined;
    } else if (own !== undefined) {
      ignore = structureBit(own);
    }
    const hit = checker.find(offset, length, ignore);
    if (hit === undefined) return undefined;
    return sink.signalCorruption(`Preventing invalid write on metadata (overlaps with ${QEMU_METADATA_NAMES[hit]})`, offset, length);
  };
}

/** Names a write in messages. */
export function describeWrite(offset: number, length: number): string {
  return `write of ${length} bytes at host offset ${hex(offset)}`;
}

export interface ImageOverlapOptions {
  readonly mask: number;
  readonly clusterSize: number;
  readonly l1: ActiveL1Table;
  readonly snapshotTable: { readonly offset: number; readonly length: number };
  readonly snapshotL1s: readonly SnapshotL1[];
  /** The bitmap directory of the header extension, when there is one. */
  readonly bitmapDirectory: { readonly offset: number; readonly length: number } | undefined;
  readonly externalDataFile: boolean;
}

/** The image whose writes are guarded, once it exists. */
export interface GuardedImage extends CorruptionSink {
  /** The autoclear bits in the header now (the bitmap directory counts while its bit is set). */
  readonly autoclearFeatures: bigint;
}

/**
 * The overlap checks of one writable image: the checker, and the guard handed to the caches,
 * the refcounts and the cluster writer (none when every check is off, so nothing is called).
 * The refcounts and the corrupt state are connected once they exist.
 */
export class ImageOverlapGuard {
  readonly checker: OverlapChecker;
  readonly guard: WriteGuard | undefined;
  #image: GuardedImage | undefined;
  /** 'inactive-l2': the L2 table offsets of each snapshot L1 table (by offset and size). */
  #inactive: Map<string, number[]>;

  private constructor(checker: OverlapChecker, externalDataFile: boolean, inactive: Map<string, number[]>) {
    this.checker = checker;
    this.#inactive = inactive;
    const sink: CorruptionSink = {
      refusal: () => this.#image?.refusal(),
      signalCorruption: (message, offset, length) =>
        this.#image?.signalCorruption(message, offset, length) ??
        Promise.reject(corrupt(`${message} (${describeWrite(offset, length)}, while the image was being opened)`)),
    };
    this.guard = checker.mask === 0 ? undefined : createOverlapGuard(checker, sink, externalDataFile);
  }

  /** Sets up the checks; reads the snapshots' L1 tables when inactive L2 tables are checked. */
  static async open(storage: Storage, o: ImageOverlapOptions): Promise<ImageOverlapGuard> {
    const inactive = new Map<string, number[]>();
    if ((o.mask & INACTIVE_L2) !== 0) {
      for (const sn of o.snapshotL1s) inactive.set(l1Key(sn.offset, sn.size), await readInactiveL2Offsets(storage, [sn], o.clusterSize));
    }
    const inactiveL2 = [...inactive.values()].flat();
    let self: ImageOverlapGuard | undefined;
    const dir = o.bitmapDirectory;
    const checker = new OverlapChecker({
      mask: o.mask,
      clusterSize: o.clusterSize,
      l1: o.l1,
      snapshotTable: o.snapshotTable,
      snapshotL1s: o.snapshotL1s,
      inactiveL2,
      bitmapDirectory: () => (dir !== undefined && ((self === undefined ? 0n : self.#autoclear()) & AUTOCLEAR_BITMAPS) !== 0n ? dir : undefined),
    });
    self = new ImageOverlapGuard(checker, o.externalDataFile, inactive);
    return self;
  }

  /** Options for a table cache holding `structure` (empty when nothing is checked). */
  cacheOptions(structure: MetadataStructure): { writeGuard: WriteGuard; structure: MetadataStructure } | Record<string, never> {
    return this.guard === undefined ? {} : { writeGuard: this.guard, structure };
  }

  /** Options for the refcounts and the cluster writer (empty when nothing is checked). */
  writerOptions(): { writeGuard: WriteGuard } | Record<string, never> {
    return this.guard === undefined ? {} : { writeGuard: this.guard };
  }

  #autoclear(): bigint {
    return this.#image?.autoclearFeatures ?? 0n;
  }

  /**
   * The snapshot table changed (called as soon as the header points at the new one, before any
   * cluster the operation frees is freed): the checks follow its place, the snapshots' L1 tables
   * and (for 'inactive-l2') their L2 tables, known without reading the file — those of a deleted
   * snapshot are dropped, those of a `created` one taken from its L1 bytes. Synchronous, so the
   * view never lags behind while guest writes may run.
   */
  followSnapshots(
    table: { readonly offset: number; readonly length: number },
    snapshots: readonly StoredSnapshotL1[],
    created?: { readonly offset: number; readonly bytes: Uint8Array },
  ): void {
    const l1s = snapshots.map((sn) => ({ offset: sn.l1OffsetHi * 0x1_0000_0000 + sn.l1OffsetLo, size: sn.l1Size }));
    const tracked = (this.checker.mask & INACTIVE_L2) !== 0;
    if (tracked && created !== undefined) {
      this.#inactive.set(l1Key(created.offset, created.bytes.byteLength / L1_ENTRY_SIZE), l2OffsetsOf(created.bytes));
    }
    const kept = new Map<string, number[]>();
    const l2: number[] = [];
    if (tracked) {
      for (const sn of l1s) {
        const key = l1Key(sn.offset, sn.size);
        const offsets = this.#inactive.get(key);
        if (offsets === undefined || kept.has(key)) continue;
        kept.set(key, offsets);
        l2.push(...offsets);
      }
    }
    this.#inactive = kept;
    this.checker.setSnapshots(table, l1s, l2);
  }

  connect(refcounts: Refcounts, image: GuardedImage): void {
    this.checker.attach(refcounts);
    this.#image = image;
  }
}
