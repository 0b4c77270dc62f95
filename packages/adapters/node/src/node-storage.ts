import {
  closeSync,
  constants,
  fdatasyncSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  openSync,
  readSync,
  readv,
  readvSync,
  write as writeAsync,
  writev as writevAsync,
  writeSync,
} from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { checkBytes, checkRange, checkSize, closedError, Qcow2Error, readOnlyError, type Storage } from '@qcow2/storage';
import { errnoCode, hexOffset, nodeFsError } from './node-error.js';

export interface NodeStorageOptions {
  /** Open for reading only; write and truncate then reject 'READ_ONLY'. */
  readOnly?: boolean;
  /** Create the file when it does not exist (else a missing file rejects 'NOT_FOUND'). */
  create?: boolean;
  /** Cut an existing file to 0 bytes on open. */
  truncate?: boolean;
}

/** A Storage over one file, opened with node:fs. */
export interface NodeStorage extends Storage {
  /** The absolute path of the file. */
  readonly path: string;
}

/**
 * The largest count handed to one readSync/writeSync call (Node refuses more than 2^31 - 1);
 * bigger transfers loop.
 */
const MAX_CHUNK = 1 << 30;

/** At most this many buffers go to one readv (Linux's IOV_MAX is 1024). */
const MAX_IOVECS = 1024;

/**
 * Read-only storage: a run of file-contiguous reads of at least this many bytes goes to libuv's
 * thread pool (see NodeFile.read); smaller ones are read synchronously.
 */
const POOL_MIN_BYTES = 256 * 1024;

/** Bytes per thread-pool readv: a run is cut into pieces of about this size, read in parallel. */
const POOL_PIECE_BYTES = 1 << 20;

/**
 * A read of at most this many bytes that starts a piece is not cut: one pool readv for all of it
 * (qemu-img convert reads its 2 MiB chunks with one pread each). `qcow2 convert -O qcow2` of a
 * 512 MiB raw file, 2 MiB reads 4 ahead, 10 alternations on a loaded 2-core machine: CPU median
 * 0.755 -> 0.700 s, wall 0.73 -> 0.675 s against cutting them into 1 MiB pieces.
 */
const POOL_WHOLE_READ_MAX = 2 << 20;

/**
 * Writes of at least this many bytes go to libuv's thread pool (`fs.write`) instead of a
 * synchronous pwrite on the main thread, so that the copy into the page cache overlaps with the
 * caller's computation and with other I/O (qemu-img issues its writes from a thread pool too).
 * Measured on 2 cores: 16384 writes of 64 KiB to a fresh file at depth 64 take ~0.4-0.7x the wall
 * time of the same writes made synchronously; below ~16 KiB the hop to the pool costs more than it saves.
 */
const ASYNC_WRITE_MIN = 16 * 1024;

/**
 * At most this many bytes per batched pool writev. One writev of batched runs is in the pool at a
 * time (see #sendRun): the kernel takes a file's buffered writes one at a time anyway (ext4 holds
 * the inode lock for each), and writev threads queued on that lock spin for it, burning the CPU
 * the caller needs. Runs of at most 2 MiB keep one run waiting while one is written (64 KiB writes
 * at depth 64: 4 MiB in flight), so the file is never idle while the completions of the last run
 * are handled. bench -w -c 16384 -s 64k over a fresh 1 GiB image, median of 7: runs of 1 MiB with
 * up to 4 at once (before) 0.97-1.06 s CPU, 0.52-0.56 s run; 1 MiB one at a time 0.80 s, 0.57 s;
 * 2 MiB one at a time 0.78 s, 0.515 s; 4 MiB one at a time 1.45 s, 1.2 s (nothing left to overlap).
 */
const WRITE_RUN_MAX = 2 << 20;

/** A write of at least this many bytes joins no batch (see write). */
const LARGE_WRITE_MIN = 1 << 20;

/** A write in flight (see ASYNC_WRITE_MIN): later reads and writes that overlap it wait for it. */
interface WriteInFlight {
  offset: number;
  end: number;
  done: Promise<unknown>;
}

/**
 * A write waiting for the batch of its tick (see NodeFile.write), in flight until its run's
 * writev completes: it leaves the writes in flight and settles `done` from that callback (no
 * promise reaction per write).
 */
interface QueuedWrite extends WriteInFlight {
  src: Uint8Array;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** A read waiting for the batch of its tick. */
interface PendingRead {
  dst: Uint8Array;
  offset: number;
  resolve: (count: number) => void;
  reject: (error: unknown) => void;
  /** Thread-pool pieces of this read still in flight. */
  pieces: number;
  /** A piece of this read failed or came back short: it is read again synchronously. */
  retry: boolean;
}

/** A run of batched writes waiting for the run in the pool (see NodeFile #sendRun). */
interface WaitingRun {
  queue: QueuedWrite[];
  from: number;
  to: number;
  buffers: Uint8Array[];
  bytes: number;
}

/** One thread-pool readv: `buffers` at `offset`, completing reads[from..to). */
interface Piece {
  buffers: Uint8Array[];
  offset: number;
  bytes: number;
  reads: PendingRead[];
}

const settled: Promise<void> = Promise.resolve();

/**
 * Opens `path` as a Storage. I/O underneath is synchronous positional `fs.readSync` /
 * `fs.writeSync` on the file descriptor, returned as settled promises: measured in
 * bench/read-throughput.mjs at ~7.7 GB/s for 64 KiB reads against ~1.6 GB/s for FileHandle.read
 * awaited one at a time (see the README). Each such call blocks the event loop for the
 * duration of its own I/O. Writes of at least 16 KiB (and large read batches of read-only
 * storage) go to libuv's thread pool instead; reads and writes overlapping a write in flight wait
 * for it, and size, truncate, flush and close wait for all of them. Errors from node:fs become Qcow2Error 'NOT_FOUND' (ENOENT) or 'IO',
 * naming the operation and the path, with the node error as `cause`.
 */
export async function createNodeStorage(path: string, options: NodeStorageOptions = {}): Promise<NodeStorage> {
  const { readOnly = false, create = false, truncate = false } = options;
  if (typeof path !== 'string' || path === '' || path.includes('\0')) {
    throw new Qcow2Error('INVALID_ARGUMENT', `node storage: path ${JSON.stringify(path)} is not a file name`);
  }
  if (readOnly && (create || truncate)) {
    throw new Qcow2Error(
      'INVALID_ARGUMENT',
      `node storage: open ${path}: ${create ? 'create' : 'truncate'} cannot be combined with readOnly`,
    );
  }
  const absolute = resolve(path);
  const base = readOnly ? constants.O_RDONLY : constants.O_RDWR;
  let handle: FileHandle;
  let created = false;
  try {
    if (create) {
      try {
        handle = await open(absolute, base | constants.O_CREAT | constants.O_EXCL, 0o666);
        created = true;
      } catch (error) {
        if (errnoCode(error) !== 'EEXIST') throw error;
        handle = await open(absolute, base | (truncate ? constants.O_TRUNC : 0));
      }
    } else {
      handle = await open(absolute, base | (truncate ? constants.O_TRUNC : 0));
    }
  } catch (error) {
    throw nodeFsError('open', absolute, error);
  }
  try {
    if (fstatSync(handle.fd).isDirectory()) {
      throw new Qcow2Error('IO', `node storage: open ${absolute} failed: it is a directory`);
    }
  } catch (error) {
    await handle.close().catch(() => undefined);
    throw error instanceof Qcow2Error ? error : nodeFsError('stat', absolute, error);
  }
  return new NodeFile(absolute, handle, readOnly, created);
}

class NodeFile implements NodeStorage {
  readonly path: string;
  readonly readOnly: boolean;
  readonly canDiscard = false as const;
  readonly #handle: FileHandle;
  readonly #fd: number;
  #closed = false;
  #pending: PendingRead[] = [];
  /** Writes in flight in the thread pool (see write). */
  readonly #writes = new Set<WriteInFlight>();
  /** Pool writes issued in this tick, not yet sent (see write). */
  #writeQueue: QueuedWrite[] = [];
  /** A run's writev is in the pool; the runs sent meanwhile wait here, in order (see #sendRun). */
  #runInPool = false;
  #runsWaiting: WaitingRun[] = [];
  /** Thread-pool reads in flight (read-only storage), and who waits for the last to finish. */
  #poolReads = 0;
  #poolIdle: (() => void) | undefined;
  #readLabel: string | undefined;
  #writeLabel: string | undefined;
  /** True until the directory entry of a file this storage created has been made durable. */
  #syncDirectory: boolean;

  constructor(path: string, handle: FileHandle, readOnly: boolean, created: boolean) {
    this.path = path;
    this.#handle = handle;
    this.#fd = handle.fd;
    this.readOnly = readOnly;
    this.#syncDirectory = created;
  }

  /**
   * Reads are batched per tick: every read issued before the next microtask runs is queued, then
   * the queue is served in order, runs of file-contiguous reads by one `readv` each (one system
   * call for many buffers, measured ~15-25% faster than a pread per 64 KiB buffer at queue depth
   * 64). Any other call first serves the queue, so program order between reads and writes is kept.
   *
   * On read-only storage a run of at least POOL_MIN_BYTES is cut into pieces of about
   * POOL_PIECE_BYTES read by asynchronous `readv`s on libuv's thread pool, so the copies out of
   * the page cache run on several cores while the event loop goes on (64 KiB reads at depth 64:
   * see bench/read.mjs). Writable storage reads synchronously only: no read is ever in flight
   * when a write, truncate or flush starts. close waits for the reads in flight.
   */
  read(dst: Uint8Array, offset: number): Promise<number> {
    // The checks of #readChecked, inline for the common read (open, a Uint8Array, a range within
    // 2^53, no write in flight): read runs once per request, and V8 then has one small function
    // to optimize instead of a chain of helpers.
    if (
      this.#closed ||
      !(dst instanceof Uint8Array) ||
      !Number.isSafeInteger(offset) ||
      offset < 0 ||
      offset + dst.length > Number.MAX_SAFE_INTEGER ||
      dst.length === 0 ||
      this.#writes.size > 0
    ) {
      return this.#readChecked(dst, offset);
    }
    return this.#queueRead(dst, offset);
  }

  #readChecked(dst: Uint8Array, offset: number): Promise<number> {
    try {
      this.#open('read');
      checkBytes(this.#readWhat, dst);
      checkRange(this.#readWhat, offset, dst.length);
    } catch (error) {
      return Promise.reject(error);
    }
    if (dst.length === 0) return Promise.resolve(0);
    if (this.#writes.size > 0) {
      const blockers = this.#overlapping(offset, offset + dst.length);
      if (blockers !== undefined) return Promise.allSettled(blockers).then(() => this.read(dst, offset));
    }
    return this.#queueRead(dst, offset);
  }

  /** Queues a checked read for this tick's batch (see #drain). */
  #queueRead(dst: Uint8Array, offset: number): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      this.#pending.push({ dst, offset, resolve, reject, pieces: 0, retry: false });
      // A promise reaction, not queueMicrotask (which builds an AsyncResource per call).
      if (this.#pending.length === 1) void settled.then(this.#drain);
    });
  }

  /** Serves the queued reads (see read). */
  readonly #drain = (): void => {
    const queue = this.#pending;
    if (queue.length === 0) return;
    this.#pending = [];
    const pool = this.readOnly;
    let i = 0;
    while (i < queue.length) {
      const first = queue[i]!;
      // The run of reads that continue each other in the file.
      let end = i + 1;
      let next = first.offset + first.dst.length;
      let bytes = first.dst.length;
      while (end < queue.length && end - i < MAX_IOVECS) {
        const r = queue[end]!;
        if (r.offset !== next || bytes + r.dst.length > MAX_CHUNK) break;
        next += r.dst.length;
        bytes += r.dst.length;
        end++;
      }
      if (pool && bytes >= POOL_MIN_BYTES) {
        this.#readPooled(queue, i, end);
      } else if (end - i === 1) {
        this.#readOne(first);
      } else {
        this.#readRun(queue, i, end);
      }
      i = end;
    }
  };

  /**
   * queue[from..to) (file-contiguous) by thread-pool readvs of about POOL_PIECE_BYTES each, cut
   * at read boundaries or, for a read larger than a piece, inside it (but for a read of at most
   * POOL_WHOLE_READ_MAX starting a piece: one readv). A read resolves when its last piece is in;
   * one with a failed or short piece is read again synchronously (which stops at EOF and names
   * the error).
   */
  #readPooled(queue: PendingRead[], from: number, to: number): void {
    if (this.#closed) {
      for (let k = from; k < to; k++) queue[k]!.reject(closedError(this.#what('read')));
      return;
    }
    let piece: Piece = { buffers: [], offset: queue[from]!.offset, bytes: 0, reads: [] };
    for (let k = from; k < to; k++) {
      const r = queue[k]!;
      const length = r.dst.length;
      let at = 0;
      while (at < length) {
        const whole = at === 0 && piece.bytes === 0 && length <= POOL_WHOLE_READ_MAX;
        const take = whole ? length : Math.min(length - at, POOL_PIECE_BYTES - piece.bytes);
        piece.buffers.push(at === 0 && take === length ? r.dst : r.dst.subarray(at, at + take));
        piece.bytes += take;
        piece.reads.push(r);
        r.pieces++;
        at += take;
        if (piece.bytes >= POOL_PIECE_BYTES) {
          this.#submit(piece);
          piece = { buffers: [], offset: r.offset + at, bytes: 0, reads: [] };
        }
      }
    }
    if (piece.bytes > 0) this.#submit(piece);
  }

  #submit(piece: Piece): void {
    try {
      readv(this.#fd, piece.buffers, piece.offset, (error, count) => {
        this.#pieceDone(piece, error !== null || count < piece.bytes);
        if (--this.#poolReads === 0 && this.#poolIdle !== undefined) {
          const idle = this.#poolIdle;
          this.#poolIdle = undefined;
          idle();
        }
      });
    } catch {
      // Refused before reaching the pool: its reads are retried synchronously, which names the error.
      this.#pieceDone(piece, true);
      return;
    }
    this.#poolReads++;
  }

  /** Completes the reads whose last piece this is; `failed`: the piece failed or came back short. */
  #pieceDone(piece: Piece, failed: boolean): void {
    const reads = piece.reads;
    for (let k = 0; k < reads.length; k++) {
      const r = reads[k]!;
      if (failed) r.retry = true;
      if (--r.pieces > 0) continue;
      if (r.retry) this.#readNow(r);
      else r.resolve(r.dst.length);
    }
  }

  #readOne(r: PendingRead): void {
    if (this.#closed) {
      r.reject(closedError(this.#what('read')));
      return;
    }
    this.#readNow(r);
  }

  /** r by readSync calls (the file is open: close waits for thread-pool reads). */
  #readNow(r: PendingRead): void {
    const { dst, offset } = r;
    let done = 0;
    try {
      while (done < dst.length) {
        const n = readSync(this.#fd, dst, done, Math.min(dst.length - done, MAX_CHUNK), offset + done);
        if (n === 0) break;
        done += n;
      }
    } catch (error) {
      r.reject(nodeFsError(`read of ${dst.length} bytes at ${hexOffset(offset + done)} from`, this.path, error));
      return;
    }
    r.resolve(done);
  }

  /** One readv for queue[from..to); a short or failed one falls back to reads one by one. */
  #readRun(queue: PendingRead[], from: number, to: number): void {
    if (this.#closed) {
      for (let k = from; k < to; k++) queue[k]!.reject(closedError(this.#what('read')));
      return;
    }
    const buffers: Uint8Array[] = new Array(to - from);
    for (let k = from; k < to; k++) buffers[k - from] = queue[k]!.dst;
    let got = -1;
    try {
      got = readvSync(this.#fd, buffers, queue[from]!.offset);
    } catch {
      got = -1; // attribute the error to the read it belongs to, below
    }
    let k = from;
    if (got > 0) {
      for (; k < to; k++) {
        const r = queue[k]!;
        if (got < r.dst.length) break;
        got -= r.dst.length;
        r.resolve(r.dst.length);
      }
    }
    // Short (end of file) or failed: the rest one by one, which loops, stops at EOF and names errors.
    for (; k < to; k++) this.#readOne(queue[k]!);
  }

  write(src: Uint8Array, offset: number): Promise<void> {
    try {
      this.#drain();
      this.#writable('write');
      checkBytes(this.#writeWhat, src);
      checkRange(this.#writeWhat, offset, src.length);
    } catch (error) {
      return Promise.reject(error);
    }
    if (src.length === 0) return RESOLVED;
    const end = offset + src.length;
    const blockers = this.#writes.size === 0 ? undefined : this.#overlapping(offset, end);
    if (blockers === undefined && src.length < ASYNC_WRITE_MIN) {
      try {
        this.#writeNow(src, offset);
      } catch (error) {
        return Promise.reject(error);
      }
      return RESOLVED;
    }
    if (blockers === undefined && src.length >= LARGE_WRITE_MIN) {
      if (this.#writes.size === 0) {
        // A large write with nothing else in flight (a copy's writes, one after another): on
        // this thread, without the hand-off to the pool and back, which left the file idle for
        // ~0.3 ms between a copy's 1-2 MiB writes (convert -O qcow2 of 512 MiB raw,
        // from start to exit: 290-300 -> 230-275 ms).
        try {
          this.#writeNow(src, offset);
        } catch (error) {
          return Promise.reject(error);
        }
        return RESOLVED;
      }
      // Joins no batch: to the pool now, without waiting for the tick's end.
      return this.#start(offset, end, () => this.#writeInPool(src, offset));
    }
    if (blockers === undefined) {
      // Batched per tick: runs of file-contiguous writes go to the pool as one writev each.
      const w: QueuedWrite = { src, offset, end, done: RESOLVED, resolve: noop, reject: noop };
      w.done = new Promise<void>((resolve, reject) => {
        w.resolve = resolve;
        w.reject = reject;
      });
      this.#writes.add(w);
      // setImmediate, not a microtask: the writes issued by all the completions of one
      // event-loop turn (each runs its own microtasks) go out together.
      if (this.#writeQueue.push(w) === 1) setImmediate(this.#sendWrites);
      return w.done as Promise<void>;
    }
    return this.#start(offset, end, async () => {
      await Promise.allSettled(blockers);
      this.#open('write');
      if (src.length < ASYNC_WRITE_MIN) this.#writeNow(src, offset);
      else await this.#writeInPool(src, offset);
    });
  }

  /**
   * Sends the writes queued in this tick: each run of writes that continue each other in the file
   * as one thread-pool `writev` (sequential allocating writes at depth 64: one system call and
   * one pool hand-off for many clusters). None of them overlap (an overlapping write waits for
   * the one in flight instead of joining the queue).
   */
  readonly #sendWrites = (): void => {
    const queue = this.#writeQueue;
    this.#writeQueue = [];
    if (this.#closed) {
      for (let k = 0; k < queue.length; k++) this.#writeFailed(queue[k]!, closedError(this.#what('write')));
      return;
    }
    let i = 0;
    while (i < queue.length) {
      const first = queue[i]!;
      const buffers: Uint8Array[] = [first.src];
      let end = i + 1;
      let next = first.end;
      let bytes = first.src.length;
      while (end < queue.length && end - i < MAX_IOVECS) {
        const w = queue[end]!;
        if (w.offset !== next || bytes + w.src.length > WRITE_RUN_MAX) break;
        buffers.push(w.src);
        next = w.end;
        bytes += w.src.length;
        end++;
      }
      if (end - i === 1) this.#writeAlone(first);
      else this.#sendRun(queue, i, end, buffers, bytes);
      i = end;
    }
  };

  /**
   * One pool writev for queue[from..to), or, while another run's writev is in the pool, queued
   * behind it (see WRITE_RUN_MAX): the next run goes to the pool as soon as the one before
   * completes, before that one's writes resolve. A short or failed one falls back to writes one by one.
   */
  #sendRun(queue: QueuedWrite[], from: number, to: number, buffers: Uint8Array[], bytes: number): void {
    if (this.#runInPool) {
      this.#runsWaiting.push({ queue, from, to, buffers, bytes });
      return;
    }
    this.#runInPool = true;
    try {
      writevAsync(this.#fd, buffers, queue[from]!.offset, (error, written) => {
        this.#nextRun();
        if (error === null && written === bytes) {
          for (let k = from; k < to; k++) {
            const w = queue[k]!;
            this.#writes.delete(w);
            w.resolve();
          }
          return;
        }
        // Rewriting what a short writev did write changes nothing; errors are named per write.
        for (let k = from; k < to; k++) this.#writeAlone(queue[k]!);
      });
    } catch {
      // Refused before reaching the pool: each write on its own, which names the error.
      this.#nextRun();
      for (let k = from; k < to; k++) this.#writeAlone(queue[k]!);
    }
  }

  /** The run in the pool is done: the next waiting one goes. */
  #nextRun(): void {
    this.#runInPool = false;
    const next = this.#runsWaiting.shift();
    if (next !== undefined) this.#sendRun(next.queue, next.from, next.to, next.buffers, next.bytes);
  }

  /** A queued write on its own (alone in its run, or after its run's writev failed or came back short). */
  #writeAlone(w: QueuedWrite): void {
    this.#writeInPool(w.src, w.offset).then(
      () => {
        this.#writes.delete(w);
        w.resolve();
      },
      (error: unknown) => this.#writeFailed(w, error),
    );
  }

  #writeFailed(w: QueuedWrite, error: unknown): void {
    this.#writes.delete(w);
    w.reject(error);
  }

  /** A synchronous positional write of all of `src`. */
  #writeNow(src: Uint8Array, offset: number): void {
    let done = 0;
    try {
      while (done < src.length) {
        done += writeSync(this.#fd, src, done, Math.min(src.length - done, MAX_CHUNK), offset + done);
      }
    } catch (error) {
      throw nodeFsError(`write of ${src.length} bytes at ${hexOffset(offset + done)} to`, this.path, error);
    }
  }

  /** All of `src` written at `offset` by the thread pool. */
  async #writeInPool(src: Uint8Array, offset: number): Promise<void> {
    let done = 0;
    try {
      while (done < src.length) {
        done += await poolWrite(this.#fd, src, done, Math.min(src.length - done, MAX_CHUNK), offset + done);
      }
    } catch (error) {
      throw nodeFsError(`write of ${src.length} bytes at ${hexOffset(offset + done)} to`, this.path, error);
    }
  }

  /** The writes in flight overlapping [offset, end). */
  #overlapping(offset: number, end: number): Promise<unknown>[] | undefined {
    let found: Promise<unknown>[] | undefined;
    for (const t of this.#writes) if (t.offset < end && offset < t.end) (found ??= []).push(t.done);
    return found;
  }

  /** Runs `body` as a write in flight over [offset, end). */
  #start(offset: number, end: number, body: () => Promise<void>): Promise<void> {
    const done = body();
    const entry: WriteInFlight = { offset, end, done };
    this.#writes.add(entry);
    const forget = (): void => {
      this.#writes.delete(entry);
    };
    done.then(forget, forget);
    return done;
  }

  /** Resolves once every write in flight now has finished (failed or not). */
  async #settleWrites(): Promise<void> {
    while (this.#writes.size > 0) await Promise.allSettled([...this.#writes].map((t) => t.done));
  }

  async size(): Promise<number> {
    this.#open('size');
    if (this.#writes.size > 0) await this.#settleWrites();
    this.#open('size');
    try {
      return fstatSync(this.#fd).size;
    } catch (error) {
      throw nodeFsError('stat', this.path, error);
    }
  }

  async truncate(size: number): Promise<void> {
    this.#drain();
    this.#writable('truncate');
    checkSize(this.#what('truncate'), size);
    if (this.#writes.size > 0) await this.#settleWrites();
    this.#writable('truncate');
    try {
      ftruncateSync(this.#fd, size);
    } catch (error) {
      throw nodeFsError(`truncate to ${size} bytes of`, this.path, error);
    }
  }

  /**
   * fdatasync: the data and the metadata needed to read it back (the size) reach the disk; on
   * macOS libuv makes it F_FULLFSYNC. The first flush after this storage created the file also
   * fsyncs the directory, so the file's name survives a crash too.
   */
  async flush(): Promise<void> {
    this.#drain();
    this.#open('flush');
    if (this.#writes.size > 0) await this.#settleWrites();
    this.#open('flush');
    try {
      fdatasyncSync(this.#fd);
    } catch (error) {
      throw nodeFsError('fdatasync', this.path, error);
    }
    if (this.#syncDirectory) {
      syncDirectoryOf(this.path);
      this.#syncDirectory = false;
    }
  }

  async close(): Promise<void> {
    this.#drain();
    if (this.#closed) return;
    if (this.#writes.size > 0) await this.#settleWrites();
    if (this.#closed) return;
    this.#closed = true;
    if (this.#poolReads > 0) {
      await new Promise<void>((resolve) => {
        this.#poolIdle = resolve;
      });
    }
    try {
      await this.#handle.close();
    } catch (error) {
      throw nodeFsError('close', this.path, error);
    }
  }

  // Built once, not per call: read and write are the hot path.
  get #readWhat(): string {
    return (this.#readLabel ??= this.#what('read'));
  }

  get #writeWhat(): string {
    return (this.#writeLabel ??= this.#what('write'));
  }

  #what(op: string): string {
    return `node storage ${this.path}: ${op}`;
  }

  #open(op: string): void {
    if (this.#closed) throw closedError(this.#what(op));
  }

  #writable(op: string): void {
    this.#open(op);
    if (this.readOnly) throw readOnlyError(this.#what(op));
  }
}

const RESOLVED: Promise<void> = Promise.resolve();

function noop(): void {}

/** fs.write as a promise of the count written (no FileHandle: less overhead per call). */
function poolWrite(fd: number, src: Uint8Array, at: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    writeAsync(fd, src, at, length, position, (error, written) => (error === null ? resolve(written) : reject(error)));
  });
}

/** Errors of fsync on a directory that mean "not supported here", not "failed". */
const DIRECTORY_SYNC_UNSUPPORTED = new Set(['EINVAL', 'ENOTSUP', 'EISDIR', 'EPERM', 'EACCES', 'EBADF']);

function syncDirectoryOf(path: string): void {
  if (process.platform === 'win32') return; // directories cannot be opened for fsync there
  const directory = dirname(path);
  let fd: number | undefined;
  try {
    fd = openSync(directory, constants.O_RDONLY);
    fsyncSync(fd);
  } catch (error) {
    const code = errnoCode(error);
    if (code === undefined || !DIRECTORY_SYNC_UNSUPPORTED.has(code)) throw nodeFsError('fsync directory', directory, error);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
