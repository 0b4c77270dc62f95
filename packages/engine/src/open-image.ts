import { invalidArgument, Qcow2Error, unsupported } from '@qcow2/format';
import type { Storage } from '@qcow2/storage';
import { combineName, nameKey } from './backing-name.js';
import { openQcow2, prefixed } from './open-qcow2.js';
import { probeFormat } from './probe-format.js';
import { RawImage } from './raw-image.js';
import type { Image, ImageFormat, OpenOptions } from './types.js';

/** Default deepest backing chain: qemu has no limit; this keeps a runaway chain bounded. */
export const DEFAULT_MAX_BACKING_DEPTH = 32;

/** What the chain walk carries down: depth, and every file seen (names and storages), for loops. */
interface Chain {
  depth: number;
  maxDepth: number;
  names: Set<string>;
  storages: Set<Storage>;
}

/**
 * Opens an image (read-only unless `readOnly: false`): the format is probed unless given; a qcow2 image is checked as
 * qemu checks it on open, and its backing chain opened through `options.resolver` (relative
 * names against the naming image's `name`, as qemu combines them; the backing format from the
 * image's extension, else probed; loops and chains deeper than `maxBackingDepth` refused).
 * Rejects only with Qcow2Error. `storage` stays the caller's: `close()` closes what the engine
 * opened (backing files, external data file), not it.
 */
export async function openImage(storage: Storage, options: OpenOptions = {}): Promise<Image> {
  if (options.readOnly === false && storage.readOnly) {
    throw new Qcow2Error('READ_ONLY', `${options.name ?? 'image'}: cannot open for writing, the storage is read-only`);
  }
  const maxDepth = options.maxBackingDepth ?? DEFAULT_MAX_BACKING_DEPTH;
  if (!Number.isInteger(maxDepth) || maxDepth < 0) {
    throw invalidArgument(`maxBackingDepth: ${String(maxDepth)} is not an integer ≥ 0`);
  }
  const chain: Chain = { depth: 0, maxDepth, names: new Set(), storages: new Set([storage]) };
  if (options.name !== undefined) chain.names.add(nameKey(options.name));
  return openLayer(storage, options, chain);
}

async function openLayer(storage: Storage, options: OpenOptions, chain: Chain): Promise<Image> {
  const format: ImageFormat = options.format ?? (await probeFormat(storage));
  if (format === 'raw') {
    const write = options.readOnly === false ? { unmap: options.discard === 'unmap', unsafe: options.cacheMode === 'unsafe' } : undefined;
    return new RawImage(storage, await storage.size(), options.name, write);
  }
  if (format !== 'qcow2') throw unsupported(`image format ${JSON.stringify(format)} is not supported (qcow2 and raw are)`);
  return openQcow2(storage, options, (name, backingFormat) => openBacking(name, backingFormat, options, chain));
}

async function openBacking(
  name: string,
  backingFormat: string | undefined,
  options: OpenOptions,
  chain: Chain,
): Promise<Image | undefined> {
  if (options.backing === false) return undefined;
  const from = options.name;
  const what = `backing file '${name}'${from === undefined ? '' : ` of ${from}`}`;
  if (options.resolver === undefined) {
    throw new Qcow2Error(
      'NOT_FOUND',
      `${what}: no resolver to open it (pass a resolver, or backing: false to read unallocated clusters as zeros)`,
    );
  }
  if (chain.depth + 1 > chain.maxDepth) {
    throw unsupported(`${what}: the backing chain is deeper than maxBackingDepth (${chain.maxDepth})`);
  }
  let format: ImageFormat | undefined;
  if (backingFormat !== undefined) {
    if (backingFormat !== 'qcow2' && backingFormat !== 'raw') {
      throw unsupported(`${what}: backing format ${JSON.stringify(backingFormat)} is not supported (qcow2 and raw are)`);
    }
    format = backingFormat;
  }
  const combined = combineName(from, name);
  const key = nameKey(combined);
  if (chain.names.has(key)) throw loop(what);
  let storage: Storage;
  try {
    storage = await options.resolver(name, from);
  } catch (error) {
    throw prefixed(what, error);
  }
  if (chain.storages.has(storage)) throw loop(what);
  const next: Chain = {
    depth: chain.depth + 1,
    maxDepth: chain.maxDepth,
    names: new Set([...chain.names, key]),
    storages: new Set([...chain.storages, storage]),
  };
  // Backing files are only read.
  const childOptions: OpenOptions = { ...options, name: combined, readOnly: true };
  if (format === undefined) delete childOptions.format;
  else childOptions.format = format;
  let image: Image;
  try {
    image = await openLayer(storage, childOptions, next);
  } catch (error) {
    await storage.close().catch(() => undefined);
    throw prefixed(what, error);
  }
  // The backing image closes the storage the resolver gave it.
  return withStorage(image, storage);
}

function loop(what: string): Qcow2Error {
  return new Qcow2Error('CORRUPT', `${what}: the backing chain loops back to an image already in it (creates an infinite loop)`);
}

/** `image`, whose close also closes `storage` (opened by the resolver for it). */
function withStorage(image: Image, storage: Storage): Image {
  const close = image.close.bind(image);
  Object.defineProperty(image, 'close', {
    value: async (): Promise<void> => {
      try {
        await close();
      } finally {
        await storage.close();
      }
    },
    configurable: true,
    writable: true,
  });
  return image;
}
