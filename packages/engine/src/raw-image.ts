import { readFully } from '@qcow2/cluster';
import { alignUp, Qcow2Error, unsupported } from '@qcow2/format';
import type { Storage } from '@qcow2/storage';
import { bufferProblem, rangeProblem, rejected } from './arguments.js';
import type { ExtentList } from './extent-list.js';
import type { Extent, Image, ImageStats, SnapshotInfo } from './types.js';

const ignore = (): void => undefined;
const RESOLVED: Promise<void> = Promise.resolve();

/**
 * A raw image: guest offset = file offset. Its virtual size is the file size rounded up to
 * 512-byte sectors, as qemu's (the bytes past the end of the file read as zeros).
 */
export interface RawWriteOptions {
  /** discard=unmap: discard() and writeZeroes' mayUnmap punch holes where the storage can. */
  unmap: boolean;
  /** cache=unsafe: flush() does not flush the storage. */
  unsafe: boolean;
}

const ZERO_CHUNK = 1 << 20;

export class RawImage implements Image {
  readonly format = 'raw' as const;
  readonly readOnly: boolean;
  readonly virtualSize: number;
  readonly snapshots: readonly never[] = [];
  readonly dirty = false;
  readonly #storage: Storage;
  readonly #name: string | undefined;
  readonly #what: string;
  readonly #write: RawWriteOptions | undefined;
  #fileSize: number;
  #closed = false;

  /** `write`: open for writing with these options (the storage must be writable). */
  constructor(storage: Storage, fileSize: number, name: string | undefined, write?: RawWriteOptions) {
    this.#storage = storage;
    this.#fileSize = fileSize;
    this.#write = write;
    this.readOnly = write === undefined;
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

  createSnapshot(name: string): Promise<SnapshotInfo> {
    return Promise.reject(unsupported(`${this.#what}: could not create snapshot '${name}': raw images have no internal snapshots`));
  }

  applySnapshot(idOrName: string): Promise<void> {
    return Promise.reject(unsupported(`${this.#what}: could not apply snapshot '${idOrName}': raw images have no internal snapshots`));
  }

  deleteSnapshot(idOrName: string): Promise<void> {
    return Promise.reject(unsupported(`${this.#what}: could not delete snapshot '${idOrName}': raw images have no internal snapshots`));
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

  async write(src: Uint8Array, offset: number): Promise<void> {
    this.#writable('write');
    const bad = bufferProblem(this.#what, 'write', src) ?? rangeProblem(this.#what, 'write', offset, src.length, this.virtualSize);
    if (bad !== undefined) throw bad;
    if (src.length === 0) return;
    await this.#storage.write(src, offset);
    if (offset + src.length > this.#fileSize) this.#fileSize = offset + src.length;
  }

  async writeZeroes(offset: number, length: number, options: { mayUnmap?: boolean } = {}): Promise<void> {
    this.#writable('write zeroes');
    const bad = rangeProblem(this.#what, 'write zeroes', offset, length, this.virtualSize);
    if (bad !== undefined) throw bad;
    if (length === 0) return;
    const storage = this.#storage;
    if (options?.mayUnmap === true && this.#write!.unmap && storage.canDiscard && typeof storage.discard === 'function' && offset + length <= this.#fileSize) {
      await storage.discard(offset, length);
      return;
    }
    const zeros = new Uint8Array(Math.min(length, ZERO_CHUNK));
    for (let done = 0; done < length; done += zeros.length) {
      const n = Math.min(zeros.length, length - done);
      await this.write(zeros.subarray(0, n), offset + done);
    }
  }

  async discard(offset: number, length: number): Promise<void> {
    this.#writable('discard');
    const bad = rangeProblem(this.#what, 'discard', offset, length, this.virtualSize);
    if (bad !== undefined) throw bad;
    const storage = this.#storage;
    if (length === 0 || !this.#write!.unmap || !storage.canDiscard || typeof storage.discard !== 'function') return;
    try {
      await storage.discard(offset, length);
    } catch {
      // Advisory, as qemu's discard.
    }
  }

  async writeCompressed(_src: Uint8Array, _offset: number): Promise<void> {
    this.#writable('compressed write');
    throw unsupported(`${this.#what}: compressed writes are not supported by the raw format`);
  }

  async flush(): Promise<void> {
    if (this.#closed) throw new Qcow2Error('CLOSED', `${this.#what}: flush after close`);
    if (this.#write !== undefined && !this.#write.unsafe) await this.#storage.flush();
  }

  #writable(operation: string): void {
    if (this.#closed) throw new Qcow2Error('CLOSED', `${this.#what}: ${operation} after close`);
    if (this.#write === undefined) throw new Qcow2Error('READ_ONLY', `${this.#what}: ${operation}: the image is open read-only`);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#write !== undefined && !this.#write.unsafe) await this.#storage.flush();
  }
}
