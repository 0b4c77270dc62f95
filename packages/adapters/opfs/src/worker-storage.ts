import { checkBytes, checkRange, checkSize, closedError, isQcow2Error, Qcow2Error, readOnlyError, type Storage } from '@qcow2/storage';
import type { MessageEndpoint } from './message-endpoint.js';
import type { OpfsStorageOptions } from './opfs-storage.js';
import { STORAGE_METHODS, type OpenedStorage, type ReadReply } from './storage-methods.js';
import type { OpfsAccessMode } from './sync-access-handle.js';
import { isWorkerClient, workerClientOf, type WorkerClient } from './worker-client.js';

/** A Storage whose file is held by a worker: each call is a message to it. */
export interface OpfsWorkerStorage extends Storage {
  /** The path inside the origin private file system, as the worker opened it. */
  readonly path: string;
  /** The lock mode of the worker's sync access handle. */
  readonly mode: OpfsAccessMode;
}

/**
 * Opens `path` (inside the origin private file system) in the worker behind `worker` — which
 * must call `serveOpfsStorage(self)` — and returns a Storage that forwards each call to it. Use
 * it on the page's main thread, where sync access handles do not exist, without blocking it.
 *
 * `worker` is a Worker (or MessagePort), whose one shared client is made on first use, or a
 * `WorkerClient`. Write data is copied into a buffer that is transferred to the worker; read
 * data comes back in a transferred buffer and is copied into `dst`. Argument, read-only and
 * closed checks happen on the page, as for every Storage; errors in the worker come back as
 * Qcow2Errors with the same code and message.
 */
export async function createOpfsWorkerStorage(
  worker: MessageEndpoint | WorkerClient,
  path: string,
  options: OpfsStorageOptions = {},
): Promise<OpfsWorkerStorage> {
  const client = isWorkerClient(worker) ? worker : workerClientOf(worker);
  const opened = (await client.call(STORAGE_METHODS.open, [path, options])) as OpenedStorage;
  if (typeof opened !== 'object' || opened === null || typeof opened.id !== 'number') {
    throw new Qcow2Error('IO', `opfs worker storage ${path}: open: the worker sent a malformed answer`);
  }
  return new WorkerFile(client, opened);
}

class WorkerFile implements OpfsWorkerStorage {
  readonly path: string;
  readonly mode: OpfsAccessMode;
  readonly readOnly: boolean;
  readonly canDiscard: boolean;
  readonly discard?: (offset: number, length: number) => Promise<void>;
  readonly #client: WorkerClient;
  readonly #id: number;
  #closed = false;

  constructor(client: WorkerClient, opened: OpenedStorage) {
    this.#client = client;
    this.#id = opened.id;
    this.path = opened.path;
    this.mode = opened.mode;
    this.readOnly = opened.readOnly === true;
    this.canDiscard = opened.canDiscard === true;
    if (this.canDiscard) {
      this.discard = async (offset, length) => {
        this.#writable('discard');
        checkRange(this.#what('discard'), offset, length);
        if (length === 0) return;
        await this.#client.call(STORAGE_METHODS.discard, [this.#id, offset, length]);
      };
    }
  }

  async read(dst: Uint8Array, offset: number): Promise<number> {
    this.#open('read');
    checkBytes(this.#what('read'), dst);
    checkRange(this.#what('read'), offset, dst.length);
    if (dst.length === 0) return 0;
    const reply = (await this.#client.call(STORAGE_METHODS.read, [this.#id, dst.length, offset])) as ReadReply;
    const count = reply?.count;
    if (
      !(reply?.buffer instanceof ArrayBuffer) ||
      !Number.isInteger(count) ||
      count < 0 ||
      count > dst.length ||
      count > reply.buffer.byteLength
    ) {
      throw new Qcow2Error('IO', `${this.#what('read')}: the worker sent a malformed answer`);
    }
    dst.set(new Uint8Array(reply.buffer, 0, count));
    return count;
  }

  async write(src: Uint8Array, offset: number): Promise<void> {
    this.#writable('write');
    checkBytes(this.#what('write'), src);
    checkRange(this.#what('write'), offset, src.length);
    if (src.length === 0) return;
    const copy = src.slice();
    await this.#client.call(STORAGE_METHODS.write, [this.#id, copy.buffer, offset], [copy.buffer]);
  }

  async size(): Promise<number> {
    this.#open('size');
    const size = await this.#client.call(STORAGE_METHODS.size, [this.#id]);
    if (typeof size !== 'number') throw new Qcow2Error('IO', `${this.#what('size')}: the worker sent a malformed answer`);
    return size;
  }

  async truncate(size: number): Promise<void> {
    this.#writable('truncate');
    checkSize(this.#what('truncate'), size);
    await this.#client.call(STORAGE_METHODS.truncate, [this.#id, size]);
  }

  async flush(): Promise<void> {
    this.#open('flush');
    await this.#client.call(STORAGE_METHODS.flush, [this.#id]);
  }

  /** Closes the worker's handle. Resolves too when the client was closed first (the worker is gone for it). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await this.#client.call(STORAGE_METHODS.close, [this.#id]);
    } catch (error) {
      if (!(isQcow2Error(error) && error.code === 'CLOSED')) throw error;
    }
  }

  #what(op: string): string {
    return `opfs worker storage ${this.path}: ${op}`;
  }

  #open(op: string): void {
    if (this.#closed) throw closedError(this.#what(op));
  }

  #writable(op: string): void {
    this.#open(op);
    if (this.readOnly) throw readOnlyError(this.#what(op));
  }
}
