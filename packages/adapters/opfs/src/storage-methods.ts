import { checkRange, checkSize, Qcow2Error, type Storage } from '@qcow2/storage';
import type { OpfsStorageOptions } from './opfs-storage.js';
import type { OpfsAccessMode } from './sync-access-handle.js';
import { withTransfer } from './rpc-protocol.js';
import type { WorkerServer } from './worker-server.js';

/** The names of the storage methods a worker serves (see `registerStorageMethods`). */
export const STORAGE_METHODS = {
  open: 'storage.open',
  read: 'storage.read',
  write: 'storage.write',
  size: 'storage.size',
  truncate: 'storage.truncate',
  flush: 'storage.flush',
  discard: 'storage.discard',
  close: 'storage.close',
} as const;

/** What `storage.open` answers: the handle id and the storage's fixed properties. */
export interface OpenedStorage {
  readonly id: number;
  readonly path: string;
  readonly readOnly: boolean;
  readonly canDiscard: boolean;
  readonly mode: OpfsAccessMode;
}

/** The answer of `storage.read`: `buffer` (transferred) holds `count` bytes read. */
export interface ReadReply {
  readonly count: number;
  readonly buffer: ArrayBuffer;
}

/** Opens the storage a page asked for, in the worker. */
export type WorkerStorageOpener = (
  path: string,
  options: OpfsStorageOptions,
) => Promise<Storage & { readonly path?: string; readonly mode?: OpfsAccessMode }>;

function optionsOf(value: unknown): OpfsStorageOptions {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null) {
    throw new Qcow2Error('INVALID_ARGUMENT', 'storage.open: options must be an object');
  }
  const out: OpfsStorageOptions = {};
  const { readOnly, create, mode } = value as Record<string, unknown>;
  for (const [name, flag] of [['readOnly', readOnly], ['create', create]] as const) {
    if (flag !== undefined && typeof flag !== 'boolean') {
      throw new Qcow2Error('INVALID_ARGUMENT', `storage.open: option ${name} must be a boolean`);
    }
  }
  if (readOnly !== undefined) out.readOnly = readOnly as boolean;
  if (create !== undefined) out.create = create as boolean;
  if (mode !== undefined) out.mode = mode as OpfsAccessMode;
  return out;
}

/**
 * Registers the `storage.*` methods on a worker server: `storage.open` opens a storage with
 * `open` and answers an id; the other methods act on the storage of that id. This is the worker
 * half of `createOpfsWorkerStorage`.
 */
export function registerStorageMethods(server: WorkerServer, open: WorkerStorageOpener): void {
  const storages = new Map<number, Storage>();
  let nextId = 1;
  const storageOf = (method: string, id: unknown): Storage => {
    const storage = typeof id === 'number' ? storages.get(id) : undefined;
    if (storage === undefined) throw new Qcow2Error('CLOSED', `${method}: storage ${String(id)} is not open in this worker`);
    return storage;
  };

  server.register(STORAGE_METHODS.open, async ([path, options]) => {
    if (typeof path !== 'string') throw new Qcow2Error('INVALID_ARGUMENT', 'storage.open: the path must be a string');
    const opts = optionsOf(options);
    const storage = await open(path, opts);
    const id = nextId++;
    storages.set(id, storage);
    const opened: OpenedStorage = {
      id,
      path: storage.path ?? path,
      readOnly: storage.readOnly,
      canDiscard: storage.canDiscard,
      mode: storage.mode ?? opts.mode ?? (opts.readOnly === true ? 'read-only' : 'readwrite'),
    };
    return opened;
  });
  server.register(STORAGE_METHODS.read, async ([id, length, offset]) => {
    const storage = storageOf(STORAGE_METHODS.read, id);
    checkRange(STORAGE_METHODS.read, offset as number, length as number);
    const buffer = new ArrayBuffer(length as number);
    const count = await storage.read(new Uint8Array(buffer), offset as number);
    return withTransfer<ReadReply>({ count, buffer }, [buffer]);
  });
  server.register(STORAGE_METHODS.write, async ([id, buffer, offset]) => {
    const storage = storageOf(STORAGE_METHODS.write, id);
    if (!(buffer instanceof ArrayBuffer)) throw new Qcow2Error('INVALID_ARGUMENT', 'storage.write: expected an ArrayBuffer');
    await storage.write(new Uint8Array(buffer), offset as number);
  });
  server.register(STORAGE_METHODS.size, ([id]) => storageOf(STORAGE_METHODS.size, id).size());
  server.register(STORAGE_METHODS.truncate, async ([id, size]) => {
    const storage = storageOf(STORAGE_METHODS.truncate, id);
    checkSize(STORAGE_METHODS.truncate, size as number);
    await storage.truncate(size as number);
  });
  server.register(STORAGE_METHODS.flush, ([id]) => storageOf(STORAGE_METHODS.flush, id).flush());
  server.register(STORAGE_METHODS.discard, async ([id, offset, length]) => {
    const storage = storageOf(STORAGE_METHODS.discard, id);
    if (storage.discard === undefined) throw new Qcow2Error('UNSUPPORTED', 'storage.discard: this storage cannot discard');
    await storage.discard(offset as number, length as number);
  });
  server.register(STORAGE_METHODS.close, async ([id]) => {
    const storage = storages.get(id as number);
    if (storage === undefined) return;
    storages.delete(id as number);
    await storage.close();
  });
}
