import { stat } from 'node:fs/promises';
import { openImage } from '@qcow2/engine';
import { createNodeResolver, createNodeStorage } from '@qcow2/storage-node';
import { Qcow2Error, type Storage, type StorageResolver } from '@qcow2/storage';
import { CliError, describeError, describeFileError } from './errors.js';
import type { CliHost, HostOpenOptions, ImageLike, OutputFile } from './host.js';
import { pathCombine } from './path-combine.js';

/**
 * The host `main` uses on Node: images through @qcow2/engine over @qcow2/storage-node, backing
 * files resolved like qemu-img does (relative to the image that names them, absolute names
 * allowed), disk usage from `fs.stat`.
 */
export function createNodeHost(): CliHost {
  const nodeResolver = createNodeResolver({ allowAbsolute: true, allowProtocols: ['file'] });
  /** The last backing/data file that could not be opened, to word the error as qemu does. */
  let failed: { name: string; error: unknown } | undefined;
  const resolver: StorageResolver = async (name, from) => {
    try {
      return await nodeResolver(name, from);
    } catch (error) {
      failed = { name: from === undefined ? name : pathCombine(from, name), error };
      throw error;
    }
  };
  return {
    async openImage(filename: string, options: HostOpenOptions): Promise<ImageLike> {
      let storage: Storage;
      failed = undefined;
      try {
        storage = await createNodeStorage(filename, { readOnly: true });
      } catch (error) {
        throw new CliError(`Could not open '${filename}': ${describeFileError(error)}`, { cause: error });
      }
      const backing = options.backing ?? true;
      try {
        const image = await openImage(storage, {
          readOnly: true,
          name: filename,
          backing,
          ...(options.format === undefined ? {} : { format: options.format }),
          resolver: options.metadataOnly === true ? tolerant(resolver) : resolver,
        });
        return withStorageClose(image, storage);
      } catch (error) {
        await storage.close().catch(() => undefined);
        let reason = describeError(error);
        const failure = failed as { name: string; error: unknown } | undefined;
        if (failure !== undefined) {
          // qemu: "Could not open 'top.qcow2': Could not open backing file: Could not open 'mid.qcow2': No such file or directory"
          const what = /\bbacking file\b/.test(reason) ? 'Could not open backing file: ' : '';
          reason = `${what}Could not open '${failure.name}': ${describeFileError(failure.error)}`;
        }
        throw new CliError(`Could not open '${filename}': ${reason}`, { cause: error });
      }
    },

    async allocatedSize(filename: string): Promise<number | undefined> {
      try {
        const s = await stat(filename);
        return s.blocks * 512;
      } catch {
        return undefined;
      }
    },

    openOutput(filename: string, options: { create: boolean }): Promise<OutputFile> {
      return createNodeStorage(filename, options.create ? { create: true, truncate: true } : {});
    },
  };
}

/**
 * For metadata-only opens: a file that cannot be opened becomes an empty storage whose reads
 * fail, so the image still opens (qemu-img info shows an image whose data file is missing).
 */
function tolerant(resolver: StorageResolver): StorageResolver {
  return async (name, from) => {
    try {
      return await resolver(name, from);
    } catch (error) {
      return unavailableStorage(name, error);
    }
  };
}

function unavailableStorage(name: string, cause: unknown): Storage {
  const fail = async (): Promise<never> => {
    throw new Qcow2Error('IO', `${name} could not be opened: ${describeFileError(cause)}`, { cause });
  };
  return {
    readOnly: true,
    canDiscard: false,
    read: fail,
    write: fail,
    size: async () => 0,
    truncate: fail,
    flush: async () => undefined,
    close: async () => undefined,
  };
}

/** The image's close also closes the storage this host opened under it (a second close is a no-op). */
function withStorageClose(image: ImageLike, storage: Storage): ImageLike {
  return {
    get format() {
      return image.format;
    },
    get virtualSize() {
      return image.virtualSize;
    },
    get clusterSize() {
      return image.clusterSize;
    },
    get backingFile() {
      return image.backingFile;
    },
    get backingFormat() {
      return image.backingFormat;
    },
    get backing() {
      return image.backing;
    },
    get snapshots() {
      return image.snapshots;
    },
    get formatSpecific() {
      return image.formatSpecific;
    },
    get dirty() {
      return image.dirty;
    },
    read: (dst, offset) => image.read(dst, offset),
    extents: (offset, length) => image.extents(offset, length),
    openSnapshot: (idOrName) => image.openSnapshot(idOrName),
    close: async () => {
      try {
        await image.close();
      } finally {
        await storage.close();
      }
    },
  };
}
