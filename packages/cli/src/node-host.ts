import { stat } from 'node:fs/promises';
import { openImage } from '@qcow2/engine';
import { createNodeResolver, createNodeStorage } from '@qcow2/storage-node';
import type { Storage } from '@qcow2/storage';
import { CliError, describeError, describeFileError } from './errors.js';
import type { CliHost, HostOpenOptions, ImageLike, OutputFile } from './host.js';

/**
 * The host `main` uses on Node: images through @qcow2/engine over @qcow2/storage-node, backing
 * files resolved like qemu-img does (relative to the image that names them, absolute names
 * allowed), disk usage from `fs.stat`.
 */
export function createNodeHost(): CliHost {
  const resolver = createNodeResolver({ allowAbsolute: true, allowProtocols: ['file'] });
  return {
    async openImage(filename: string, options: HostOpenOptions): Promise<ImageLike> {
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
          resolver,
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
