import { Qcow2Error } from '@qcow2/storage';
import { opfsError } from './opfs-error.js';
import { openOpfsFile, splitOpfsPath } from './opfs-path.js';
import type { OpfsAccessMode, SyncAccessHandle, SyncCapableFileHandle } from './sync-access-handle.js';
import { wrapSyncAccessHandle, type OpfsStorage } from './sync-handle-storage.js';

export interface OpfsStorageOptions {
  /** Refuse write and truncate with 'READ_ONLY'. Default false. */
  readOnly?: boolean;
  /** Create the file (and its directories) when missing; else a missing file rejects 'NOT_FOUND'. */
  create?: boolean;
  /**
   * The lock the sync access handle takes. `'readwrite'` (the default when writable) is
   * exclusive: a second handle on the same file, of any mode, is refused. `'read-only'` (the
   * default with `readOnly`) lets several read-only handles share the file. `'readwrite-unsafe'`
   * lets several writable handles share it, with no coordination between them.
   */
  mode?: OpfsAccessMode;
}

const MODES: readonly OpfsAccessMode[] = ['readwrite', 'read-only', 'readwrite-unsafe'];

interface Globals {
  navigator?: { storage?: { getDirectory?: unknown } };
  FileSystemSyncAccessHandle?: unknown;
  DedicatedWorkerGlobalScope?: unknown;
  SharedWorkerGlobalScope?: unknown;
  ServiceWorkerGlobalScope?: unknown;
  WorkerGlobalScope?: unknown;
  document?: unknown;
}

/** Why sync access handles are missing here, or undefined when they are present. */
function syncHandlesMissing(): string | undefined {
  const g = globalThis as Globals;
  if (typeof g.FileSystemSyncAccessHandle === 'function') return undefined;
  const inside = (name: keyof Globals): boolean => {
    const ctor = g[name];
    return typeof ctor === 'function' && globalThis instanceof (ctor as abstract new () => unknown);
  };
  const advice = 'run createOpfsStorage in a dedicated worker (serveOpfsStorage there), and use createOpfsWorkerStorage from the page';
  if (inside('DedicatedWorkerGlobalScope')) {
    return 'this dedicated worker has no FileSystemSyncAccessHandle (the browser is too old or lacks OPFS sync access handles)';
  }
  if (inside('SharedWorkerGlobalScope')) return `sync access handles exist only in dedicated workers, not in a shared worker: ${advice}`;
  if (inside('ServiceWorkerGlobalScope')) return `sync access handles exist only in dedicated workers, not in a service worker: ${advice}`;
  if (g.document !== undefined) return `sync access handles exist only in dedicated workers, not on a page's main thread: ${advice}`;
  return 'sync access handles exist only in dedicated workers of a browser, and this is neither';
}

function isFileHandle(value: unknown): value is FileSystemFileHandle {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as { kind?: unknown }).kind === 'file' &&
    typeof (value as { name?: unknown }).name === 'string'
  );
}

/**
 * Opens a file of the origin private file system as a Storage, through a
 * FileSystemSyncAccessHandle: call it in a dedicated worker (the only place those exist).
 * `fileOrPath` is a path from the OPFS root (`vm/disk.qcow2`) or a FileSystemFileHandle.
 *
 * Rejects with Qcow2Error: 'UNSUPPORTED' when OPFS or sync access handles are unavailable here
 * (the page's main thread, a shared or service worker, an insecure context, an old browser),
 * 'NOT_FOUND' for a missing file without `create`, 'IO' when another handle holds the file's
 * lock (NoModificationAllowedError) or for other failures, 'INVALID_ARGUMENT' for a bad path or
 * options.
 */
export async function createOpfsStorage(
  fileOrPath: string | FileSystemFileHandle,
  options: OpfsStorageOptions = {},
): Promise<OpfsStorage> {
  const { readOnly = false, create = false } = options;
  const mode = options.mode ?? (readOnly ? 'read-only' : 'readwrite');
  const label = typeof fileOrPath === 'string' ? fileOrPath : isFileHandle(fileOrPath) ? fileOrPath.name : '?';
  const refuse = (code: 'INVALID_ARGUMENT' | 'UNSUPPORTED', why: string): Qcow2Error =>
    new Qcow2Error(code, `opfs storage ${label}: open: ${why}`);
  if (!MODES.includes(mode)) {
    throw refuse('INVALID_ARGUMENT', `mode ${JSON.stringify(mode)} is not one of ${MODES.map((m) => `'${m}'`).join(', ')}`);
  }
  if (readOnly && create) throw refuse('INVALID_ARGUMENT', 'create cannot be combined with readOnly');
  if (!readOnly && mode === 'read-only') throw refuse('INVALID_ARGUMENT', "mode 'read-only' needs readOnly: true");

  let names: string[] | undefined;
  if (typeof fileOrPath === 'string') {
    names = splitOpfsPath(fileOrPath);
  } else if (!isFileHandle(fileOrPath)) {
    throw refuse('INVALID_ARGUMENT', 'expected a path or a FileSystemFileHandle');
  }
  const missing = syncHandlesMissing();
  if (missing !== undefined) throw refuse('UNSUPPORTED', missing);

  let file: FileSystemFileHandle;
  if (names !== undefined) {
    const storage = (globalThis as Globals).navigator?.storage;
    if (typeof storage?.getDirectory !== 'function') {
      throw refuse(
        'UNSUPPORTED',
        'the origin private file system is not available (navigator.storage.getDirectory is missing: it needs a secure context, https or localhost)',
      );
    }
    let root: FileSystemDirectoryHandle;
    try {
      root = await navigator.storage.getDirectory();
    } catch (error) {
      throw opfsError(`opfs storage ${label}: open the OPFS root`, error);
    }
    file = await openOpfsFile(root, names, create);
  } else {
    file = fileOrPath as FileSystemFileHandle;
  }
  const path = names === undefined ? file.name : names.join('/');
  const syncFile = file as unknown as SyncCapableFileHandle;
  if (typeof syncFile.createSyncAccessHandle !== 'function') {
    throw refuse('UNSUPPORTED', 'this FileSystemFileHandle has no createSyncAccessHandle (use it in a dedicated worker)');
  }
  let handle: SyncAccessHandle;
  try {
    handle = await syncFile.createSyncAccessHandle({ mode });
  } catch (error) {
    throw opfsError(`opfs storage ${path}: open (mode '${mode}')`, error, true);
  }
  return wrapSyncAccessHandle(handle, path, readOnly, mode);
}
