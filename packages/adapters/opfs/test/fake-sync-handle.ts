import type { SyncAccessHandle } from '../src/sync-access-handle.js';

/** One file's bytes, shared by the fake handles opened on it. */
export class FakeFile {
  bytes = new Uint8Array(0);
}

export interface FakeHandleOptions {
  /** Past this size, writes return short counts and truncates leave the size as it was (as Chromium near its quota). */
  quota?: number;
  /** Makes the next call of this name throw this error. */
  throwOn?: { method: keyof SyncAccessHandle; error: unknown } | undefined;
}

/**
 * A FileSystemSyncAccessHandle over a byte array, with Chromium's behaviour near the quota:
 * `write` returns a short count instead of throwing, `truncate` silently keeps the old size.
 */
export class FakeSyncHandle implements SyncAccessHandle {
  closed = false;
  flushes = 0;
  readonly #file: FakeFile;
  readonly #options: FakeHandleOptions;

  constructor(file: FakeFile, options: FakeHandleOptions = {}) {
    this.#file = file;
    this.#options = options;
  }

  #maybeThrow(method: keyof SyncAccessHandle): void {
    if (this.closed) throw new DOMException('The access handle was closed', 'InvalidStateError');
    const t = this.#options.throwOn;
    if (t !== undefined && t.method === method) {
      this.#options.throwOn = undefined;
      throw t.error;
    }
  }

  #resize(size: number): void {
    const next = new Uint8Array(size);
    next.set(this.#file.bytes.subarray(0, Math.min(size, this.#file.bytes.length)));
    this.#file.bytes = next;
  }

  read(buffer: Uint8Array, options: { at?: number } = {}): number {
    this.#maybeThrow('read');
    const at = options.at ?? 0;
    const bytes = this.#file.bytes;
    if (at >= bytes.length) return 0;
    const n = Math.min(buffer.length, bytes.length - at);
    buffer.set(bytes.subarray(at, at + n));
    return n;
  }

  write(buffer: Uint8Array, options: { at?: number } = {}): number {
    this.#maybeThrow('write');
    const at = options.at ?? 0;
    const limit = this.#options.quota ?? Number.MAX_SAFE_INTEGER;
    const end = Math.min(at + buffer.length, Math.max(limit, this.#file.bytes.length));
    const n = Math.max(0, end - at);
    if (n === 0) return 0;
    if (end > this.#file.bytes.length) this.#resize(end);
    this.#file.bytes.set(buffer.subarray(0, n), at);
    return n;
  }

  getSize(): number {
    this.#maybeThrow('getSize');
    return this.#file.bytes.length;
  }

  truncate(size: number): void {
    this.#maybeThrow('truncate');
    if (this.#options.quota !== undefined && size > this.#options.quota) return; // silently unchanged
    this.#resize(size);
  }

  flush(): void {
    this.#maybeThrow('flush');
    this.flushes++;
  }

  close(): void {
    if (this.closed) return;
    this.#maybeThrow('close');
    this.closed = true;
  }
}
