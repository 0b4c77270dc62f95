import { readFully } from '@qcow2/cluster';
import { alignUp, Qcow2Error } from '@qcow2/format';
import type { Storage } from '@qcow2/storage';
import { bufferProblem, rangeProblem, rejected } from './arguments.js';
import type { ExtentList } from './extent-list.js';
import type { Extent, Image, ImageStats } from './types.js';

const ignore = (): void => undefined;
const RESOLVED: Promise<void> = Promise.resolve();

/**
 * A raw image: guest offset = file offset. Its virtual size is the file size rounded up to
 * 512-byte sectors, as qemu's (the bytes past the end of the file read as zeros).
 */
export class RawImage implements Image {
  readonly format = 'raw' as const;
  readonly readOnly = true;
  readonly virtualSize: number;
  readonly snapshots: readonly never[] = [];
  readonly dirty = false;
  readonly #storage: Storage;
  readonly #fileSize: number;
  readonly #name: string | undefined;
  readonly #what: string;
  #closed = false;

  constructor(storage: Storage, fileSize: number, name: string | undefined) {
    this.#storage = storage;
    this.#fileSize = fileSize;
    this.#name = name;
    this.virtualSize = alignUp(fileSize, 512);
    this.#what = `raw image${name === undefined ? '' : ` ${name}`}`;
  }

  read(dst: Uint8Array, offset: number): Promise<void> {
    if (this.#closed) return rejected(new Qcow2Error('CLOSED', `${this.#what}: read after close`));
    const bad = bufferProblem(this.#what, 'read', dst) ?? rangeProblem(this.#what, 'read', offset, dst.length, this.virtualSize);
    if (bad !== undefined) return rejected(bad);
    if (dst.length === 0) return RESOLVED;
    try {
      if (offset + dst.length <= this.#fileSize) return this.#storage.read(dst, offset).then(ignore);
      return readFully(this.#storage, dst, offset);
    } catch (error) {
      return rejected(error as Qcow2Error);
    }
  }

  async readBytes(offset: number, length: number): Promise<Uint8Array> {
    const bad = rangeProblem(this.#what, 'readBytes', offset, length, this.virtualSize);
    if (bad !== undefined) throw bad;
    const out = new Uint8Array(length);
    await this.read(out, offset);
    return out;
  }

  async extents(offset: number, length: number): Promise<Extent[]> {
    if (this.#closed) throw new Qcow2Error('CLOSED', `${this.#what}: extents after close`);
    const bad = rangeProblem(this.#what, 'extents', offset, length, this.virtualSize);
    if (bad !== undefined) throw bad;
    if (length === 0) return [];
    const extent: Extent = { offset, length, kind: 'data', depth: 0, hostOffset: offset };
    if (this.#name !== undefined) extent.filename = this.#name;
    return [extent];
  }

  /** One data run at `depth`, host offset = guest offset. */
  async collectExtents(offset: number, length: number, depth: number, list: ExtentList): Promise<void> {
    if (length > 0) list.push({ offset, length, kind: 'data', depth, hostOffset: offset }, this.#name);
  }

  async openSnapshot(idOrName: string): Promise<Image> {
    throw new Qcow2Error('NOT_FOUND', `${this.#what}: no snapshot ${JSON.stringify(idOrName)} (raw images have no internal snapshots)`);
  }

  stats(): ImageStats {
    return {
      l2Hits: 0,
      l2Misses: 0,
      l2Reads: 0,
      l2Evictions: 0,
      l2Entries: 0,
      l2BytesInUse: 0,
      l2Capacity: 0,
      decompressions: 0,
      decompressedHits: 0,
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
  }
}
