import { rm, stat } from 'node:fs/promises';
import { createImage, openImage, type CreateOptions, type OpenOptions } from '@qcow2/engine';
import { createNodeResolver, createNodeStorage } from '@qcow2/storage-node';
import { Qcow2Error, type Storage, type StorageResolver } from '@qcow2/storage';
import { CliError, describeError, describeFileError, errnoOf } from './errors.js';
import type { CacheMode, CliHost, HostOpenOptions, ImageFormat, ImageLike, OutputFile } from './host.js';
import { pathCombine } from './path-combine.js';
import { isHttpUrl, openUrlStorage, withUrlResolver } from './url-storage.js';

/**
 * The host `main` uses on Node: images through @qcow2/engine over @qcow2/storage-node, backing
 * files resolved like qemu-img does (relative to the image that names them, absolute names
 * allowed), disk usage from `fs.stat`.
 */
export function createNodeHost(): CliHost {
  // Backing files named by http(s) URLs, or relative to an image opened from one, are read over HTTP.
  const nodeResolver = withUrlResolver(createNodeResolver({ allowAbsolute: true, allowProtocols: ['file'] }));
  const writableResolver = createNodeResolver({ allowAbsolute: true, allowProtocols: ['file'], readOnly: false });
  /** For writable images (their external data file is written): read-write where the file allows it. */
  const readWriteResolver: StorageResolver = async (name, from) => {
    try {
      return await writableResolver(name, from);
    } catch (error) {
      const code = errnoOf(error);
      if (code === 'EACCES' || code === 'EROFS' || code === 'EPERM') return nodeResolver(name, from);
      throw error;
    }
  };
  /** The last backing/data file that could not be opened, to word the error as qemu does. */
  let failed: { name: string; error: unknown } | undefined;
  /** The resolver, noting the file that could not be opened. */
  const tracked = (inner: StorageResolver): StorageResolver => async (name, from) => {
    try {
      return await inner(name, from);
    } catch (error) {
      failed = { name: from === undefined ? name : pathCombine(from, name), error };
      throw error;
    }
  };
  const resolver = tracked(nodeResolver);
  const dataFileResolver = tracked(readWriteResolver);
  return {
    async openImage(filename: string, options: HostOpenOptions): Promise<ImageLike> {
      let storage: Storage;
      failed = undefined;
      // An http:// or https:// operand is read over HTTP Range requests: always read-only.
      const url = isHttpUrl(filename);
      const writable = !url && options.writable === true;
      try {
        storage = url ? await openUrlStorage(filename) : await createNodeStorage(filename, { readOnly: !writable });
      } catch (error) {
        throw new CliError(`Could not open '${filename}': ${describeFileError(error)}`, { cause: error });
      }
      const backing = options.backing ?? true;
      try {
        const openOptions: OpenOptions & WriteOpenOptions = {
          readOnly: !writable,
          name: filename,
          backing,
          ...(options.format === undefined ? {} : { format: options.format }),
          resolver: options.metadataOnly === true ? tolerant(resolver) : resolver,
        };
        if (writable && options.cacheMode !== undefined) openOptions.cacheMode = engineCacheMode(options.cacheMode);
        if (writable && options.discard !== undefined) openOptions.discard = options.discard;
        if (writable && options.onCorruption !== undefined) openOptions.onCorruption = options.onCorruption;
        if (writable) openOptions.dataFileResolver = dataFileResolver;
        const image = await openImage(storage, openOptions);
        return withStorageClose(image, storage);
      } catch (error) {
        await storage.close().catch(() => undefined);
        throw openFailure(filename, error, failed);
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

    async createImage(filename: string, format: ImageFormat, options: CreateOptions): Promise<void> {
      let storage: Storage;
      try {
        storage = await createNodeStorage(filename, { create: true, truncate: true });
      } catch (error) {
        throw new CliError(`Could not create '${filename}': ${describeFileError(error)}`, { cause: error });
      }
      const created = [filename];
      try {
        if (format === 'raw') {
          await storage.truncate(options.size ?? 0);
          if (options.preallocation === 'falloc' || options.preallocation === 'full') await writeZeros(storage, 0, options.size ?? 0);
        } else {
          await createImage(storage, {
            ...options,
            name: filename,
            resolver: nodeResolver,
            openDataFile: async (name) => {
              try {
                const data = await createNodeStorage(name, { create: true, truncate: true });
                created.push(name);
                return data;
              } catch (error) {
                throw new CliError(`Could not create '${name}': ${describeFileError(error)}`, { cause: error });
              }
            },
          });
        }
        await storage.flush();
        await storage.close();
      } catch (error) {
        await storage.close().catch(() => undefined);
        for (const file of created) await rm(file, { force: true }).catch(() => undefined);
        throw error;
      }
    },
  };
}

/** The engine's open options for writing (the write-path contract; the read-only engine ignores them). */
interface WriteOpenOptions {
  cacheMode?: 'writeback' | 'unsafe' | 'none';
  discard?: 'ignore' | 'unmap';
  dataFileResolver?: StorageResolver;
}

/** writethrough is writeback plus a flush after each write (the commands do that); none cannot bypass Node's page cache. */
/**
 * qemu's message for an image that did not open; `failed` is the file of the chain (backing or
 * data file) whose opening failed, if one did: "Could not open 'top.qcow2': Could not open
 * backing file: Could not open 'mid.qcow2': No such file or directory".
 */
export function openFailure(filename: string, error: unknown, failed: { name: string; error: unknown } | undefined): CliError {
  let reason = describeError(error);
  if (failed !== undefined) {
    const what = /\bbacking file\b/.test(reason) ? 'Could not open backing file: ' : '';
    reason = `${what}Could not open '${failed.name}': ${describeFileError(failed.error)}`;
  }
  return new CliError(`Could not open '${filename}': ${reason}`, { cause: error });
}

function engineCacheMode(mode: CacheMode): 'writeback' | 'unsafe' | 'none' {
  return mode === 'writethrough' ? 'writeback' : mode;
}

async function writeZeros(storage: Storage, from: number, to: number): Promise<void> {
  const chunk = new Uint8Array(Math.min(1 << 20, Math.max(0, to - from)));
  for (let at = from; at < to; at += chunk.length) await storage.write(chunk.subarray(0, Math.min(chunk.length, to - at)), at);
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

/** The write members of an image opened writable (none for a read-only one). */
function writeMembers(image: ImageLike): Partial<ImageLike> {
  if (image.readOnly !== false || typeof image.write !== 'function') return {};
  const target = image as Required<Pick<ImageLike, 'write' | 'writeZeroes' | 'discard' | 'writeCompressed' | 'flush'>>;
  return {
    write: (src, offset) => target.write(src, offset),
    writeZeroes: (offset, length, options) => target.writeZeroes(offset, length, options),
    discard: (offset, length) => target.discard(offset, length),
    writeCompressed: (src, offset) => target.writeCompressed(src, offset),
    flush: () => target.flush(),
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
    get readOnly() {
      return image.readOnly;
    },
    read: (dst, offset) => image.read(dst, offset),
    extents: (offset, length) => image.extents(offset, length),
    openSnapshot: (idOrName) => image.openSnapshot(idOrName),
    ...writeMembers(image),
    close: async () => {
      try {
        await image.close();
      } finally {
        await storage.close();
      }
    },
  };
}
