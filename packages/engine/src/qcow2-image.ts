import type { TableCache } from '@qcow2/cache';
import { createRun, readFully, type ClusterMap, type MappingRun } from '@qcow2/cluster';
import type { ClusterCodec } from '@qcow2/compress';
import { corrupt, hex, isQcow2Error, Qcow2Error } from '@qcow2/format';
import type { Storage } from '@qcow2/storage';
import { bufferProblem, rangeProblem, rejected } from './arguments.js';
import { ExtentList } from './extent-list.js';
import type { Qcow2Writable } from './qcow2-writable.js';
import type { ReadEpoch, ReadEpochs } from './read-epochs.js';
import type { SnapshotOps } from './snapshot-ops.js';
import type { CreateSnapshotOptions, Extent, Image, ImageStats, SnapshotInfo } from './types.js';

/** What a qcow2 image view reads through; shared by the image and its snapshot views. */
export interface Qcow2Parts {
  /** Name of the image (for messages and extents), as given to openImage. */
  name: string | undefined;
  storage: Storage;
  /** The data file: `storage`, or the external data file. */
  data: Storage;
  /** Name of the file holding data clusters (the external data file's, or the image's). */
  dataName: string | undefined;
  /** Size of the data file at open: reads that end within it need no zero-fill check. */
  dataSize: number;
  l2Cache: TableCache;
  /**
   * The image's compression codec, loaded (`@qcow2/compress` imported) on the first compressed
   * cluster read or compressed write; the same promise afterwards.
   */
  codec: () => Promise<ClusterCodec>;
  virtualSize: number;
  clusterSize: number;
  backingFile: string | undefined;
  backingFormat: string | undefined;
  backing: Image | undefined;
  snapshots: readonly SnapshotInfo[];
  formatSpecific: Record<string, unknown>;
  dirty: boolean;
  /** Opens a snapshot view (the root image knows the snapshot table). */
  openSnapshot: (idOrName: string) => Promise<Image>;
  /** Releases what the root image owns (backing chain, data file, cache). */
  release: () => Promise<void>;
  /** Shared between the root image and its views: reads fail once the root is closed. */
  state: { closed: boolean };
  /** Present when the image was opened for writing. */
  writable?: Qcow2Writable | undefined;
  /** Internal snapshot create/apply/delete (images opened for writing). */
  snapshotOps?: SnapshotOps | undefined;
  /** Reads in flight of a writable image, so freed clusters are reused only after them. */
  epochs?: ReadEpochs | undefined;
}

const ignore = (): void => undefined;
const RESOLVED: Promise<void> = Promise.resolve();
/** Decompressed-cluster buffers kept for reuse. */
const POOL_LIMIT = 4;

/**
 * A read-only qcow2 image (or a view of one of its internal snapshots): guest reads through the
 * cluster map, backing chain, compressed clusters, external data file.
 *
 * The read path: when the L2 slice is cached and the request maps to one run (the common case
 * for sequential reads of allocated clusters), `read` issues one storage read straight into the
 * caller's buffer, without an async function, a per-request run, or any buffer allocation.
 * Otherwise it walks the runs, coalescing host-contiguous data runs into single storage reads.
 */
export class Qcow2Image implements Image {
  readonly format = 'qcow2' as const;
  readonly readOnly: boolean;
  readonly clusterSize: number;
  readonly backingFile?: string;
  readonly backingFormat?: string;
  readonly backing?: Image;
  readonly formatSpecific: Record<string, unknown>;
  readonly #parts: Qcow2Parts;
  /** Set while a snapshot operation runs: guest writes and flushes wait for it. */
  #exclusive: Promise<void> | undefined;
  /** The write side (root image opened for writing only). */
  readonly #writable: Qcow2Writable | undefined;
  readonly #epochs: ReadEpochs | undefined;
  readonly #map: ClusterMap;
  /** True for the image openImage returned (owns the chain); false for snapshot views. */
  readonly #root: boolean;
  #viewClosed = false;
  #closing: Promise<void> | undefined;
  /** The fast path's run: filled and read synchronously, never held across an await. */
  readonly #run: MappingRun = createRun();
  readonly #what: string;
  #scratch: Uint8Array[] = [];
  #clusters: Uint8Array[] = [];
  #lastCompressedHost = -1;
  #lastCluster: Uint8Array | undefined;
  #decompressions = 0;
  #decompressedHits = 0;

  constructor(parts: Qcow2Parts, map: ClusterMap, root: boolean) {
    this.#parts = parts;
    this.#map = map;
    this.#root = root;
    this.clusterSize = parts.clusterSize;
    if (parts.backingFile !== undefined) this.backingFile = parts.backingFile;
    if (parts.backingFormat !== undefined) this.backingFormat = parts.backingFormat;
    if (parts.backing !== undefined) this.backing = parts.backing;
    this.formatSpecific = parts.formatSpecific;
    this.#writable = root ? parts.writable : undefined;
    this.#epochs = root ? parts.epochs : undefined;
    this.readOnly = this.#writable === undefined;
    this.#what = `qcow2 image${parts.name === undefined ? '' : ` ${parts.name}`}`;
  }

  /** The virtual size (it follows the disk size of an applied snapshot). */
  get virtualSize(): number {
    return this.#parts.virtualSize;
  }

  /** The internal snapshots (none for a snapshot view). */
  get snapshots(): readonly SnapshotInfo[] {
    return this.#root ? this.#parts.snapshots : [];
  }

  /** The dirty bit (lazy refcounts left unflushed) is set. */
  get dirty(): boolean {
    return this.#writable?.dirty ?? this.#parts.dirty;
  }

  /**
   * Reads `dst.length` bytes at guest `offset`. The common request (arguments fine, image open,
   * read-only, its L2 slice cached, one data run within the data file) is served in this one
   * function: a few inline checks, the lookup and one storage read, so that V8 has one small
   * hot function to optimize rather than a chain of helpers (see #readChecked for the rest).
   */
  read(dst: Uint8Array, offset: number): Promise<void> {
    if (
      this.#epochs === undefined &&
      dst instanceof Uint8Array &&
      Number.isSafeInteger(offset) &&
      offset >= 0 &&
      offset + dst.length <= this.#parts.virtualSize &&
      dst.length !== 0 &&
      !this.#parts.state.closed &&
      !this.#viewClosed
    ) {
      const run = this.#run;
      const length = dst.length;
      try {
        if (!this.#map.lookupCached(offset, length, run)) return this.#readRuns(dst, offset);
      } catch (error) {
        // A bad L1/L2 entry met synchronously: reject, never throw, from a promise-returning call.
        return rejected(error as Qcow2Error);
      }
      const parts = this.#parts;
      if (run.length === length && run.kind === 'data' && run.hostOffset + length <= parts.dataSize) {
        return parts.data.read(dst, run.hostOffset).then(ignore);
      }
      return this.#readFound(dst, offset, length);
    }
    return this.#readChecked(dst, offset);
  }

  /** read, with every check and every kind of mapping (and the read epochs of a writable image). */
  #readChecked(dst: Uint8Array, offset: number): Promise<void> {
    const closed = this.#closedError('read');
    if (closed !== undefined) return rejected(closed);
    const bad = bufferProblem(this.#what, 'read', dst) ?? rangeProblem(this.#what, 'read', offset, dst.length, this.virtualSize);
    if (bad !== undefined) return rejected(bad);
    const length = dst.length;
    if (length === 0) return RESOLVED;
    const epochs = this.#epochs;
    if (epochs === undefined) {
      try {
        return this.#readFast(dst, offset, length);
      } catch (error) {
        // A bad L1/L2 entry met synchronously: reject, never throw, from a promise-returning call.
        return rejected(error as Qcow2Error);
      }
    }
    // Writable: the read belongs to an epoch until its I/O is done (see quiesceReads).
    const epoch = epochs.enter();
    let promise: Promise<void>;
    try {
      promise = this.#readFast(dst, offset, length);
    } catch (error) {
      epochs.leave(epoch);
      return rejected(error as Qcow2Error);
    }
    return promise.then(
      () => epochs.leave(epoch),
      (error: unknown) => {
        epochs.leave(epoch);
        throw error;
      },
    );
  }

  /**
   * Resolves once every read (and extents walk) that started before the call is done: host
   * clusters that lost their last reference are freed only then, so a read never sees them
   * reused. Also forgets the last decompressed cluster (its host bytes may be reused).
   */
  async quiesceReads(): Promise<void> {
    this.#forgetDecompressed();
    if (this.#epochs !== undefined) await this.#epochs.quiesce();
    // A compressed read that was in flight may have kept its cluster meanwhile.
    this.#forgetDecompressed();
  }

  #forgetDecompressed(): void {
    this.#lastCompressedHost = -1;
    this.#lastCluster = undefined;
  }

  /** One storage read (or none) when the request maps to one run and its L2 slice is cached. */
  #readFast(dst: Uint8Array, offset: number, length: number): Promise<void> {
    if (!this.#map.lookupCached(offset, length, this.#run)) return this.#readRuns(dst, offset);
    return this.#readFound(dst, offset, length);
  }

  /** #readFast once `this.#run` holds the mapping from `offset` on (filled synchronously). */
  #readFound(dst: Uint8Array, offset: number, length: number): Promise<void> {
    const run = this.#run;
    if (run.length === length) {
      switch (run.kind) {
        case 'data':
          if (run.hostOffset + length <= this.#parts.dataSize) {
            return this.#parts.data.read(dst, run.hostOffset).then(ignore);
          }
          return readFully(this.#parts.data, dst, run.hostOffset);
        case 'zero':
          dst.fill(0);
          return RESOLVED;
        case 'unallocated': {
          const backing = this.#parts.backing;
          if (backing === undefined) {
            dst.fill(0);
            return RESOLVED;
          }
          if (offset + length <= backing.virtualSize) return backing.read(dst, offset);
          break;
        }
        default:
          break;
      }
    }
    return this.#readRuns(dst, offset);
  }

  async readBytes(offset: number, length: number): Promise<Uint8Array> {
    const bad = rangeProblem(this.#what, 'readBytes', offset, length, this.virtualSize);
    if (bad !== undefined) throw bad;
    const out = new Uint8Array(length);
    await this.read(out, offset);
    return out;
  }

  /** The general read: every run, data runs coalesced while host-contiguous. */
  async #readRuns(dst: Uint8Array, offset: number): Promise<void> {
    const map = this.#map;
    const run = createRun();
    const length = dst.length;
    let pendingHost = -1;
    let pendingStart = 0;
    let pendingLength = 0;
    let pos = 0;
    while (pos < length) {
      const at = offset + pos;
      if (!map.lookupCached(at, length - pos, run)) await map.lookup(at, length - pos, run);
      if (!(run.length > 0)) throw corrupt(`${this.#what}: empty mapping at guest offset ${hex(at)}`);
      if (run.kind === 'data') {
        if (pendingLength > 0 && pendingHost + pendingLength === run.hostOffset) {
          pendingLength += run.length;
        } else {
          if (pendingLength > 0) await this.#readData(dst, pendingStart, pendingLength, pendingHost);
          pendingHost = run.hostOffset;
          pendingStart = pos;
          pendingLength = run.length;
        }
      } else {
        if (pendingLength > 0) {
          await this.#readData(dst, pendingStart, pendingLength, pendingHost);
          pendingLength = 0;
        }
        if (run.kind === 'zero') dst.fill(0, pos, pos + run.length);
        else if (run.kind === 'unallocated') await this.#readBacking(dst.subarray(pos, pos + run.length), at);
        else await this.#readCompressed(dst, pos, run);
      }
      pos += run.length;
    }
    if (pendingLength > 0) await this.#readData(dst, pendingStart, pendingLength, pendingHost);
  }

  #readData(dst: Uint8Array, start: number, length: number, host: number): Promise<void> {
    const view = start === 0 && length === dst.length ? dst : dst.subarray(start, start + length);
    return readFully(this.#parts.data, view, host);
  }

  /** Unallocated here: the backing file's bytes (zeros past its end), or zeros without one. */
  async #readBacking(view: Uint8Array, offset: number): Promise<void> {
    const backing = this.#parts.backing;
    const available = backing === undefined ? 0 : Math.max(0, Math.min(view.length, backing.virtualSize - offset));
    if (available > 0) await backing!.read(available === view.length ? view : view.subarray(0, available), offset);
    if (available < view.length) view.fill(0, available);
  }

  async #readCompressed(dst: Uint8Array, pos: number, run: MappingRun): Promise<void> {
    const clusterSize = this.clusterSize;
    const inCluster = run.offset % clusterSize;
    const host = run.hostOffset;
    if (host === this.#lastCompressedHost && this.#lastCluster !== undefined) {
      this.#decompressedHits++;
      dst.set(this.#lastCluster.subarray(inCluster, inCluster + run.length), pos);
      return;
    }
    const compressedLength = run.compressedLength;
    const length = run.length;
    const guest = run.offset - inCluster;
    const scratch = this.#scratch.pop() ?? new Uint8Array(2 * clusterSize);
    const cluster = this.#clusters.pop() ?? new Uint8Array(clusterSize);
    try {
      const src = scratch.subarray(0, compressedLength);
      const [codec] = await Promise.all([this.#parts.codec(), readFully(this.#parts.storage, src, host)]);
      try {
        codec.decompress(src, cluster);
      } catch (error) {
        const message = isQcow2Error(error) ? error.message : String(error);
        throw new Qcow2Error(
          'CORRUPT',
          `${this.#what}: compressed cluster for guest offset ${hex(guest)} at ${hex(host)} (${compressedLength} bytes): ${message}`,
          { cause: error },
        );
      }
      this.#decompressions++;
      dst.set(cluster.subarray(inCluster, inCluster + length), pos);
      // Keep it: sequential small reads of a compressed cluster decompress it once.
      const previous = this.#lastCluster;
      this.#lastCluster = cluster;
      this.#lastCompressedHost = host;
      if (previous !== undefined && this.#clusters.length < POOL_LIMIT) this.#clusters.push(previous);
    } catch (error) {
      if (this.#clusters.length < POOL_LIMIT) this.#clusters.push(cluster);
      throw error;
    } finally {
      if (this.#scratch.length < POOL_LIMIT) this.#scratch.push(scratch);
    }
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    const closed = this.#closedError('extents');
    if (closed !== undefined) throw closed;
    const bad = rangeProblem(this.#what, 'extents', offset, length, this.virtualSize);
    if (bad !== undefined) throw bad;
    const list = new ExtentList();
    const epoch: ReadEpoch | undefined = this.#epochs?.enter();
    try {
      await this.collectExtents(offset, length, 0, list);
    } finally {
      if (epoch !== undefined) this.#epochs!.leave(epoch);
    }
    return list.extents;
  }

  /** Appends the extents of [offset, offset + length) at `depth` (this image's depth in a chain). */
  async collectExtents(offset: number, length: number, depth: number, list: ExtentList): Promise<void> {
    const parts = this.#parts;
    const map = this.#map;
    const name = parts.name;
    const run = createRun();
    const end = offset + length;
    // Run by run into the list (which merges), so memory follows the answer, not the image.
    for (let at = offset; at < end; at += run.length) {
      if (!map.lookupCached(at, end - at, run)) await map.lookup(at, end - at, run);
      if (!(run.length > 0)) throw corrupt(`${this.#what}: empty mapping at guest offset ${hex(at)}`);
      switch (run.kind) {
        case 'data':
          list.push({ offset: run.offset, length: run.length, kind: 'data', depth, hostOffset: run.hostOffset }, parts.dataName);
          break;
        case 'compressed':
          list.push({ offset: run.offset, length: run.length, kind: 'data', depth, compressed: true }, name);
          break;
        case 'zero':
          list.push(
            run.hostOffset >= 0
              ? { offset: run.offset, length: run.length, kind: 'zero', depth, hostOffset: run.hostOffset }
              : { offset: run.offset, length: run.length, kind: 'zero', depth },
            run.hostOffset >= 0 ? parts.dataName : name,
          );
          break;
        default: {
          const backing = parts.backing;
          const inBacking = backing === undefined ? 0 : Math.max(0, Math.min(run.length, backing.virtualSize - run.offset));
          if (inBacking > 0) await collectFrom(backing!, run.offset, inBacking, depth + 1, list);
          if (inBacking < run.length) {
            // Nothing here, and no backing file (or one shorter than this): qemu stops at this depth.
            const start = run.offset + inBacking;
            const rest = run.length - inBacking;
            const host = backing === undefined && run.hostOffset >= 0 ? run.hostOffset + inBacking : -1;
            list.push(
              host >= 0
                ? { offset: start, length: rest, kind: 'unallocated', depth, hostOffset: host }
                : { offset: start, length: rest, kind: 'unallocated', depth },
              host >= 0 ? parts.dataName : name,
            );
          }
        }
      }
    }
  }

  openSnapshot(idOrName: string): Promise<Image> {
    const closed = this.#closedError('openSnapshot');
    if (closed !== undefined) return rejected(closed);
    return this.#parts.openSnapshot(idOrName);
  }

  stats(): ImageStats {
    const s = this.#parts.l2Cache.stats();
    return {
      l2Hits: s.hits,
      l2Misses: s.misses,
      l2Reads: s.reads,
      l2Evictions: s.evictions,
      l2Entries: s.entries,
      l2BytesInUse: s.bytesInUse,
      l2Capacity: s.capacity,
      decompressions: this.#decompressions,
      decompressedHits: this.#decompressedHits,
    };
  }

  write(src: Uint8Array, offset: number): Promise<void> {
    const bad = this.#writeProblem('write') ?? bufferProblem(this.#what, 'write', src);
    if (bad !== undefined) return rejected(bad);
    if (this.#exclusive !== undefined) return this.#afterExclusive(() => this.write(src, offset));
    return this.#writable!.writer.write(src, offset);
  }

  writeZeroes(offset: number, length: number, options: { mayUnmap?: boolean } = {}): Promise<void> {
    const bad = this.#writeProblem('write zeroes');
    if (bad !== undefined) return rejected(bad);
    if (this.#exclusive !== undefined) return this.#afterExclusive(() => this.writeZeroes(offset, length, options));
    return this.#writable!.writer.writeZeroes(offset, length, options?.mayUnmap === true);
  }

  discard(offset: number, length: number): Promise<void> {
    const bad = this.#writeProblem('discard');
    if (bad !== undefined) return rejected(bad);
    if (this.#exclusive !== undefined) return this.#afterExclusive(() => this.discard(offset, length));
    return this.#writable!.writer.discard(offset, length);
  }

  writeCompressed(src: Uint8Array, offset: number): Promise<void> {
    const bad = this.#writeProblem('compressed write') ?? bufferProblem(this.#what, 'compressed write', src);
    if (bad !== undefined) return rejected(bad);
    if (this.#exclusive !== undefined) return this.#afterExclusive(() => this.writeCompressed(src, offset));
    return this.#writable!.writer.writeCompressed(src, offset);
  }

  flush(): Promise<void> {
    const closed = this.#closedError('flush');
    if (closed !== undefined) return rejected(closed);
    if (this.#exclusive !== undefined) return this.#afterExclusive(() => this.flush());
    return this.#writable === undefined ? RESOLVED : this.#writable.flush();
  }

  createSnapshot(name: string, options?: CreateSnapshotOptions): Promise<SnapshotInfo> {
    return this.#snapshotOperation('create snapshot', (ops) => ops.create(name, options));
  }

  applySnapshot(idOrName: string): Promise<void> {
    return this.#snapshotOperation('apply snapshot', (ops) => ops.apply(idOrName));
  }

  deleteSnapshot(idOrName: string): Promise<void> {
    return this.#snapshotOperation('delete snapshot', (ops) => ops.delete(idOrName));
  }

  /** Runs `fn` once the gate opens (whatever the snapshot operation's outcome). */
  #afterExclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.#exclusive!.then(fn, fn);
  }

  /**
   * A snapshot operation: later guest writes and flushes wait for it; it starts once the
   * writes in flight are done, everything is flushed and the reads in flight are over.
   */
  #snapshotOperation<T>(operation: string, fn: (ops: SnapshotOps) => Promise<T>): Promise<T> {
    const bad = this.#writeProblem(operation);
    if (bad !== undefined) return rejected(bad);
    const ops = this.#parts.snapshotOps;
    if (ops === undefined) return rejected(new Qcow2Error('READ_ONLY', `${this.#what}: ${operation}: the image is open read-only`));
    const previous = this.#exclusive ?? RESOLVED;
    const run = previous.then(
      () => this.#runSnapshotOperation(operation, ops, fn),
      () => this.#runSnapshotOperation(operation, ops, fn),
    );
    const gate: Promise<void> = run.then(ignore, ignore);
    this.#exclusive = gate;
    void gate.then(() => {
      if (this.#exclusive === gate) this.#exclusive = undefined;
    });
    return run;
  }

  async #runSnapshotOperation<T>(operation: string, ops: SnapshotOps, fn: (ops: SnapshotOps) => Promise<T>): Promise<T> {
    const closed = this.#closedError(operation);
    if (closed !== undefined) throw closed;
    const w = this.#writable!;
    await w.writer.drain();
    await w.flush();
    await this.quiesceReads();
    await w.beforeChange();
    try {
      return await fn(ops);
    } finally {
      // Clusters the operation freed are reused only after the reads that may still use them.
      await this.quiesceReads();
    }
  }

  #writeProblem(operation: string): Qcow2Error | undefined {
    const closed = this.#closedError(operation);
    if (closed !== undefined) return closed;
    if (this.#writable === undefined) {
      return new Qcow2Error('READ_ONLY', `${this.#what}: ${operation}: the image is open read-only`);
    }
    return this.#writable.corruption(operation);
  }

  async close(): Promise<void> {
    if (!this.#root) {
      this.#viewClosed = true;
      return;
    }
    if (this.#parts.state.closed || this.#closing !== undefined) return this.#closing;
    if (this.#exclusive !== undefined) {
      this.#closing = this.#exclusive.then(() => this.#close());
      return this.#closing;
    }
    this.#closing = this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    try {
      await this.#writable?.close();
    } catch (error) {
      this.#parts.state.closed = true;
      await this.#parts.release().catch(() => undefined);
      throw error;
    }
    this.#parts.state.closed = true;
    this.#scratch = [];
    this.#clusters = [];
    this.#lastCluster = undefined;
    await this.#parts.release();
  }

  #closedError(operation: string): Qcow2Error | undefined {
    if (this.#parts.state.closed || this.#viewClosed) {
      return new Qcow2Error('CLOSED', `${this.#what}: ${operation} after close`);
    }
    return undefined;
  }
}

/** Extents of a backing image, at `depth`: through its own walk when it is one of ours. */
export async function collectFrom(image: Image, offset: number, length: number, depth: number, list: ExtentList): Promise<void> {
  const own = image as Partial<Pick<Qcow2Image, 'collectExtents'>>;
  if (typeof own.collectExtents === 'function') {
    await own.collectExtents(offset, length, depth, list);
    return;
  }
  for (const e of await image.extents(offset, length)) {
    const { filename, ...rest } = e;
    list.push({ ...rest, depth: depth + e.depth }, filename);
  }
}
