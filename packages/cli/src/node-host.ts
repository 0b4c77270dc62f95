import { stat } from 'node:fs/promises';
import { createNodeResolver, createNodeStorage } from '@qcow2/storage-node';
import type { Storage, StorageResolver } from '@qcow2/storage';
import { CliError, describeError, describeFileError } from './errors.js';
import type { CliHost, HostOpenOptions, ImageFormat, ImageLike, OutputFile } from './host.js';

/** The slice of @qcow2/engine this host calls (its issue-3 contract). */
interface EngineModule {
  openImage(
    storage: Storage,
    options?: {
      readOnly?: boolean;
      format?: ImageFormat;
      name?: string;
      resolver?: StorageResolver;
      backing?: boolean;
    },
  ): Promise<ImageLike>;
}

let engine: Promise<EngineModule> | undefined;

function loadEngine(): Promise<EngineModule> {
  // A computed specifier: the engine is resolved when the first image is opened.
  const specifier = '@qcow2/engine';
  engine ??= (import(specifier) as Promise<EngineModule>).catch((error: unknown) => {
    engine = undefined;
    throw new CliError(`the qcow2 engine (@qcow2/engine) could not be loaded: ${describeError(error)}`, { cause: error });
  });
  return engine;
}

/**
 * The host `main` uses on Node: images through @qcow2/engine over @qcow2/storage-node, backing
 * files resolved like qemu-img does (relative to the image that names them, absolute names
 * allowed), disk usage from `fs.stat`.
 */
export function createNodeHost(): CliHost {
  const resolver = createNodeResolver({ allowAbsolute: true, allowProtocols: ['file'] });
  return {
    async openImage(filename: string, options: HostOpenOptions): Promise<ImageLike> {
      const { openImage } = await loadEngine();
      let storage: Storage;
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
          ...(backing ? { resolver } : {}),
        });
        return withStorageClose(image, storage);
      } catch (error) {
        await storage.close().catch(() => undefined);
        throw new CliError(`Could not open '${filename}': ${describeError(error)}`, { cause: error });
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
