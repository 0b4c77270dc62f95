/**
 * Storage wrappers for crash and fault tests: one that records every change in order (to replay
 * the file as a power cut at any point leaves it), and one that fails a chosen call.
 *
 * Both are typed structurally against the Storage contract of @qcow2/storage (this package
 * imports no workspace package, so that every package may use it in its tests).
 */

/** The Storage contract as these wrappers need it (structurally @qcow2/storage's Storage). */
export interface StorageLike {
  readonly readOnly: boolean;
  readonly canDiscard: boolean;
  read(dst: Uint8Array, offset: number): Promise<number>;
  write(src: Uint8Array, offset: number): Promise<void>;
  size(): Promise<number>;
  truncate(size: number): Promise<void>;
  flush(): Promise<void>;
  close(): Promise<void>;
  discard?(offset: number, length: number): Promise<void>;
}

/** One change made to a storage, in call order. */
export type StorageOp =
  | { readonly kind: 'write'; readonly offset: number; readonly bytes: Uint8Array }
  | { readonly kind: 'discard'; readonly offset: number; readonly length: number }
  | { readonly kind: 'truncate'; readonly size: number }
  | { readonly kind: 'flush' };

export interface RecordingStorage extends StorageLike {
  /** Every write, discard, truncate and flush, in the order they were called. */
  readonly log: StorageOp[];
}

/**
 * `inner` with every write, discard, truncate and flush appended to `log` when it is called
 * (writes with a copy of their bytes). A call that `inner` rejects is recorded too (a storage
 * that fails may still have done part of it); `close` is not recorded.
 */
export function createRecordingStorage(inner: StorageLike, log: StorageOp[] = []): RecordingStorage {
  const storage: RecordingStorage = {
    log,
    get readOnly() {
      return inner.readOnly;
    },
    get canDiscard() {
      return inner.canDiscard;
    },
    read: (dst, offset) => inner.read(dst, offset),
    write: (src, offset) => {
      if (src.length > 0) log.push({ kind: 'write', offset, bytes: src.slice() });
      return inner.write(src, offset);
    },
    size: () => inner.size(),
    truncate: (size) => {
      log.push({ kind: 'truncate', size });
      return inner.truncate(size);
    },
    flush: () => {
      log.push({ kind: 'flush' });
      return inner.flush();
    },
    close: () => inner.close(),
  };
  if (inner.canDiscard && typeof inner.discard === 'function') {
    const discard = inner.discard.bind(inner);
    storage.discard = (offset, length) => {
      log.push({ kind: 'discard', offset, length });
      return discard(offset, length);
    };
  }
  return storage;
}

/** Index of the last flush in `log` before `end` (-1 when none). */
export function lastFlushBefore(log: readonly StorageOp[], end: number): number {
  for (let i = Math.min(end, log.length) - 1; i >= 0; i--) if (log[i]!.kind === 'flush') return i;
  return -1;
}

/**
 * The file a power cut leaves when it strikes before `log[end]`: `initial` with every change
 * of `log[0..end)` applied in order, except that the writes and discards after the last flush
 * before `end` are applied only where `keep(index)` is true (default: all of them). Truncates
 * are kept in order. A new array; `initial` is not changed.
 */
export function replayStorageLog(
  initial: Uint8Array,
  log: readonly StorageOp[],
  end: number,
  keep: (index: number) => boolean = () => true,
): Uint8Array {
  const last = Math.min(end, log.length);
  const flushed = lastFlushBefore(log, last);
  let capacity = initial.length;
  for (let i = 0; i < last; i++) {
    const op = log[i]!;
    if (op.kind === 'write') capacity = Math.max(capacity, op.offset + op.bytes.length);
    else if (op.kind === 'truncate') capacity = Math.max(capacity, op.size);
  }
  // Bytes at and past `size` stay zero, so growing needs no copy.
  const file = new Uint8Array(capacity);
  file.set(initial);
  let size = initial.length;
  for (let i = 0; i < last; i++) {
    const op = log[i]!;
    if (i > flushed && (op.kind === 'write' || op.kind === 'discard') && !keep(i)) continue;
    switch (op.kind) {
      case 'write':
        file.set(op.bytes, op.offset);
        size = Math.max(size, op.offset + op.bytes.length);
        break;
      case 'discard':
        if (op.offset < size) file.fill(0, op.offset, Math.min(size, op.offset + op.length));
        break;
      case 'truncate':
        if (op.size < size) file.fill(0, op.size, size);
        size = op.size;
        break;
      case 'flush':
        break;
    }
  }
  return size === capacity ? file : file.slice(0, size);
}

/** The storage calls a fault can be injected into. */
export type StorageCallKind = 'read' | 'write' | 'flush' | 'truncate' | 'discard' | 'size';

export interface FaultyStorage extends StorageLike {
  /** Calls made so far, per kind (the failing one included). */
  readonly calls: Record<StorageCallKind, number>;
  /** The error thrown by the injected fault, once it fired. */
  readonly fired: unknown;
  /** Fail the `n`th call (1-based) of `kind` from now on; `undefined` disarms. */
  arm(fault: { kind: StorageCallKind; n: number } | undefined): void;
}

/**
 * `inner`, except that the `n`th call of `kind` (counted since the storage was made, after
 * `arm`) rejects with `error(kind, n)` without reaching `inner`. Every other call passes
 * through; with `sticky`, every call of that kind after the failing one fails too (a dead disk).
 */
export function createFaultyStorage(
  inner: StorageLike,
  error: (kind: StorageCallKind, n: number) => unknown,
  options: { sticky?: boolean } = {},
): FaultyStorage {
  const calls: Record<StorageCallKind, number> = { read: 0, write: 0, flush: 0, truncate: 0, discard: 0, size: 0 };
  let fault: { kind: StorageCallKind; n: number } | undefined;
  let fired: unknown;
  const gate = (kind: StorageCallKind): void => {
    calls[kind] += 1;
    if (fault === undefined || fault.kind !== kind) return;
    if (calls[kind] === fault.n || (options.sticky === true && calls[kind] > fault.n)) {
      const e = error(kind, calls[kind]);
      if (fired === undefined) fired = e;
      throw e;
    }
  };
  const wrap =
    <A extends unknown[], R>(kind: StorageCallKind, fn: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      gate(kind);
      return fn(...args);
    };
  const storage: FaultyStorage = {
    calls,
    get fired() {
      return fired;
    },
    arm(f) {
      fault = f;
    },
    get readOnly() {
      return inner.readOnly;
    },
    get canDiscard() {
      return inner.canDiscard;
    },
    read: wrap('read', (dst: Uint8Array, offset: number) => inner.read(dst, offset)),
    write: wrap('write', (src: Uint8Array, offset: number) => inner.write(src, offset)),
    size: wrap('size', () => inner.size()),
    truncate: wrap('truncate', (size: number) => inner.truncate(size)),
    flush: wrap('flush', () => inner.flush()),
    close: () => inner.close(),
  };
  if (inner.canDiscard && typeof inner.discard === 'function') {
    const discard = inner.discard.bind(inner);
    storage.discard = wrap('discard', (offset: number, length: number) => discard(offset, length));
  }
  return storage;
}
