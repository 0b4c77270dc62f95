import { checkBytes, checkRange, checkSize, closedError, Qcow2Error, readOnlyError, type Storage } from '@qcow2/storage';
import { hex, opfsError } from './opfs-error.js';
import type { OpfsAccessMode, SyncAccessHandle } from './sync-access-handle.js';

/** A Storage over one OPFS file, through a sync access handle held by a dedicated worker. */
export interface OpfsStorage extends Storage {
  /** The path inside the origin private file system (`vm/disk.qcow2`), or the handle's name. */
  readonly path: string;
  /** The lock mode the sync access handle was opened with. */
  readonly mode: OpfsAccessMode;
}

const QUOTA_HINT = 'the storage quota of this origin is probably exhausted';

/**
 * Wraps an open sync access handle as a Storage. Every call is synchronous underneath and
 * returns a settled promise. Writes check the count the handle returns (near its quota Chromium
 * returns a short count instead of throwing) and truncates check the size afterwards (it can
 * leave the size unchanged without throwing): both reject with Qcow2Error 'IO'.
 */
export function wrapSyncAccessHandle(
  handle: SyncAccessHandle,
  path: string,
  readOnly: boolean,
  mode: OpfsAccessMode,
): OpfsStorage {
  return new SyncHandleFile(handle, path, readOnly, mode);
}

class SyncHandleFile implements OpfsStorage {
  readonly path: string;
  readonly mode: OpfsAccessMode;
  readonly readOnly: boolean;
  /** OPFS has no hole punching. */
  readonly canDiscard = false as const;
  readonly #handle: SyncAccessHandle;
  #closed = false;

  constructor(handle: SyncAccessHandle, path: string, readOnly: boolean, mode: OpfsAccessMode) {
    this.#handle = handle;
    this.path = path;
    this.readOnly = readOnly;
    this.mode = mode;
  }

  async read(dst: Uint8Array, offset: number): Promise<number> {
    this.#open('read');
    checkBytes(this.#what('read'), dst);
    checkRange(this.#what('read'), offset, dst.length);
    let done = 0;
    try {
      while (done < dst.length) {
        const n = this.#handle.read(done === 0 ? dst : dst.subarray(done), { at: offset + done });
        if (!(n > 0)) break;
        done += n;
      }
    } catch (error) {
      throw opfsError(this.#what(`read of ${dst.length} bytes at ${hex(offset + done)}`), error);
    }
    return done;
  }

  async write(src: Uint8Array, offset: number): Promise<void> {
    this.#writable('write');
    checkBytes(this.#what('write'), src);
    checkRange(this.#what('write'), offset, src.length);
    let done = 0;
    while (done < src.length) {
      let n: number;
      try {
        n = this.#handle.write(done === 0 ? src : src.subarray(done), { at: offset + done });
      } catch (error) {
        throw opfsError(this.#what(`write of ${src.length} bytes at ${hex(offset)}`), error);
      }
      if (!(n > 0)) {
        throw new Qcow2Error(
          'IO',
          `${this.#what(`write of ${src.length} bytes at ${hex(offset)}`)}: stopped after ${done} bytes (${QUOTA_HINT})`,
        );
      }
      done += n;
    }
  }

  async size(): Promise<number> {
    this.#open('size');
    try {
      return this.#handle.getSize();
    } catch (error) {
      throw opfsError(this.#what('size'), error);
    }
  }

  async truncate(size: number): Promise<void> {
    this.#writable('truncate');
    checkSize(this.#what('truncate'), size);
    let after: number;
    try {
      this.#handle.truncate(size);
      after = this.#handle.getSize();
    } catch (error) {
      throw opfsError(this.#what(`truncate to ${size} bytes`), error);
    }
    if (after !== size) {
      throw new Qcow2Error('IO', `${this.#what(`truncate to ${size} bytes`)}: the size is ${after} afterwards (${QUOTA_HINT})`);
    }
  }

  /**
   * Flushes the handle. On a 'read-only' handle there is nothing to make durable, and Chromium
   * refuses the call (NoModificationAllowedError), so it resolves without one.
   */
  async flush(): Promise<void> {
    this.#open('flush');
    if (this.mode === 'read-only') return;
    try {
      this.#handle.flush();
    } catch (error) {
      throw opfsError(this.#what('flush'), error);
    }
  }

  /** Closes the sync access handle (which flushes it) and releases its lock. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#handle.close();
    } catch (error) {
      throw opfsError(this.#what('close'), error);
    }
  }

  #what(op: string): string {
    return `opfs storage ${this.path}: ${op}`;
  }

  #open(op: string): void {
    if (this.#closed) throw closedError(this.#what(op));
  }

  #writable(op: string): void {
    this.#open(op);
    if (this.readOnly) throw readOnlyError(this.#what(op));
  }
}
