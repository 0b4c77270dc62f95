import type { MemoryStorage, Storage } from '@qcow2/storage';
import { createImage, type PreallocationMode } from '../src/index.js';

export interface FreshImageOptions {
  size: number;
  clusterBits?: number;
  version?: 2 | 3;
  refcountOrder?: number;
  extendedL2?: boolean;
  lazyRefcounts?: boolean;
  compressionType?: 0 | 1;
  backingFile?: string;
  backingFormat?: 'qcow2' | 'raw';
  preallocation?: PreallocationMode;
  /** An external data file (created in `dataStorage`), raw or not. */
  dataFile?: 'plain' | 'raw';
  dataStorage?: MemoryStorage;
}

/** `inner` under a handle of its own: whoever closes the handle, the bytes stay for the next open. */
export function handle(inner: MemoryStorage): Storage {
  return {
    get readOnly() {
      return inner.readOnly;
    },
    canDiscard: inner.canDiscard,
    read: (dst, offset) => inner.read(dst, offset),
    write: (src, offset) => inner.write(src, offset),
    size: () => inner.size(),
    truncate: (n) => inner.truncate(n),
    flush: () => inner.flush(),
    close: async () => undefined,
    discard: (offset, length) => inner.discard(offset, length),
  };
}

/** A fresh qcow2 image on `storage`, as qemu-img create lays it out (createImage). */
export async function writeFreshImage(storage: Storage, options: FreshImageOptions): Promise<void> {
  await createImage(storage, {
    size: options.size,
    clusterSize: 2 ** (options.clusterBits ?? 16),
    compat: options.version === 2 ? '0.10' : '1.1',
    refcountBits: 2 ** (options.refcountOrder ?? 4),
    extendedL2: options.extendedL2 === true,
    lazyRefcounts: options.lazyRefcounts === true,
    compressionType: options.compressionType === 1 ? 'zstd' : 'zlib',
    preallocation: options.preallocation ?? 'off',
    ...(options.backingFile === undefined ? {} : { backingFile: options.backingFile }),
    ...(options.backingFormat === undefined ? {} : { backingFormat: options.backingFormat }),
    ...(options.dataFile === undefined
      ? {}
      : { dataFile: 'data', dataFileRaw: options.dataFile === 'raw', openDataFile: async () => handle(options.dataStorage!) }),
  });
}
