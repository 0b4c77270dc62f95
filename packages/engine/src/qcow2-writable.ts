import type { TableCache } from '@qcow2/cache';
import type { ClusterWriter } from '@qcow2/cluster';
import {
  AUTOCLEAR_BITMAPS,
  AUTOCLEAR_DATA_FILE_RAW,
  corrupt,
  decodeBitmapDirectoryEntry,
  hex,
  INCOMPAT_CORRUPT,
  INCOMPAT_DIRTY,
  isQcow2Error,
  Qcow2Error,
} from '@qcow2/format';
import type { Refcounts } from '@qcow2/refcount';
import type { Storage } from '@qcow2/storage';
import type { CorruptionEvent } from './types.js';

/** Byte offsets of the header fields a writable image changes in place. */
const INCOMPATIBLE_FEATURES_AT = 72;
const AUTOCLEAR_FEATURES_AT = 88;

/** Autoclear bits this implementation keeps true while it writes (the others are cleared). */
const MAINTAINED_AUTOCLEAR = AUTOCLEAR_DATA_FILE_RAW;

/** A bitmap directory entry's in_use flag (flags bit 0). */
const BITMAP_IN_USE = 1;

export interface WritableParts {
  readonly name: string | undefined;
  readonly storage: Storage;
  /** The external data file, when the image has one. */
  readonly dataFile: Storage | undefined;
  readonly l2Cache: TableCache;
  readonly refcounts: Refcounts;
  readonly version: 2 | 3;
  readonly incompatibleFeatures: bigint;
  readonly autoclearFeatures: bigint;
  /** Lazy refcounts in force (qemu's lazy-refcounts option, or the image's compat bit). */
  readonly lazyRefcounts: boolean;
  /**
   * The bitmap directory of persistent bitmaps in force (bitmaps extension + autoclear bit 0):
   * they are kept, marked in use before the first change (see beforeChange).
   */
  readonly bitmapDirectory?: { readonly offset: number; readonly size: number; readonly count: number } | undefined;
  /** Told once, when a fatal corruption event marks the image corrupt. */
  readonly onCorruption?: ((event: CorruptionEvent) => void) | undefined;
}

function mask(value: bigint): Uint8Array {
  const bytes = new Uint8Array(8);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, Number(value >> 32n));
  view.setUint32(4, Number(value & 0xffff_ffffn));
  return bytes;
}

/**
 * The lifecycle of a qcow2 image opened for writing: header bits changed before the first
 * change (autoclear bits this implementation does not maintain cleared; the dirty bit set with
 * lazy refcounts), flush in crash-safe order, and a clean close.
 */
export class Qcow2Writable {
  readonly #p: WritableParts;
  #writer: ClusterWriter | undefined;
  #incompatible: bigint;
  /**
   * The dirty bit of #incompatible as a boolean, kept with it: asked on every allocating write
   * (accurateRefcounts), where a BigInt `&` allocated and cost more than the rest of the check.
   */
  #dirty: boolean;
  #autoclear: bigint;
  #prepared: Promise<void> | undefined;
  #closed = false;
  readonly #what: string;
  /** Why the image was marked corrupt (qemu's message), once it was. */
  #corruptReason: string | undefined;
  /** The corrupt bit being written to the header. */
  #marking: Promise<void> | undefined;

  constructor(parts: WritableParts) {
    this.#p = parts;
    this.#incompatible = parts.incompatibleFeatures;
    this.#dirty = (parts.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n;
    this.#autoclear = parts.autoclearFeatures;
    this.#what = `qcow2 image${parts.name === undefined ? '' : ` ${parts.name}`}`;
  }

  /** The cluster writer (set once, after the image it reads through exists). */
  get writer(): ClusterWriter {
    if (this.#writer === undefined) throw new Qcow2Error('CLOSED', `${this.#what}: not writable`);
    return this.#writer;
  }

  set writer(writer: ClusterWriter) {
    this.#writer = writer;
  }

  /** The dirty bit is set now. */
  get dirty(): boolean {
    return this.#dirty;
  }

  /** The autoclear feature bits as they are in the header now. */
  get autoclearFeatures(): bigint {
    return this.#autoclear;
  }

  /** qemu's message for the event that marked the image corrupt while open, else undefined. */
  get corruptReason(): string | undefined {
    return this.#corruptReason;
  }

  /** Why `operation` is refused once the image was marked corrupt (CORRUPT), else undefined. */
  corruption(operation: string): Qcow2Error | undefined {
    if (this.#corruptReason === undefined) return undefined;
    return corrupt(`${this.#what}: ${operation}: the image was marked corrupt (${this.#corruptReason}); it takes no more writes`);
  }

  /** Rejects (after the corrupt bit is written) once the image was marked corrupt; undefined before. */
  refusal(): Promise<never> | undefined {
    if (this.#corruptReason === undefined) return undefined;
    const error = this.corruption('write')!;
    return this.#marking!.then(() => Promise.reject(error));
  }

  /**
   * qemu's qcow2_signal_corruption for a fatal event (qcow2_mark_corrupt): from now on every
   * write is refused, and the corrupt bit (incompatible feature bit 1) is written to the header
   * of a version 3 image and flushed (version 2 has no place for it: the image is only unusable
   * while open, as in qemu). Rejects with `message` once the bit is written.
   */
  signalCorruption(message: string, offset: number, length: number): Promise<never> {
    if (this.#corruptReason === undefined) {
      this.#corruptReason = message;
      this.#marking = this.#p.version >= 3 ? this.#markCorrupt() : Promise.resolve();
      try {
        this.#p.onCorruption?.({ message, offset, length, fatal: true });
      } catch {
        // A listener's failure must not change what the write reports.
      }
    }
    const error = corrupt(`${this.#what}: ${message}; image marked as corrupt (write of ${length} bytes at host offset ${hex(offset)})`);
    return this.#marking!.then(() => Promise.reject(error));
  }

  async #markCorrupt(): Promise<void> {
    const value = this.#incompatible | INCOMPAT_CORRUPT;
    const storage = this.#p.storage;
    try {
      await storage.write(mask(value), INCOMPATIBLE_FEATURES_AT);
      await storage.flush();
      this.#setIncompatible(value);
    } catch {
      // As qemu, which ignores a failure of qcow2_mark_corrupt: the writes are refused anyway.
    }
  }

  /** False while refcount updates may lag behind L2 tables (qemu's qcow2_need_accurate_refcounts). */
  accurateRefcounts(): boolean {
    return !this.dirty;
  }

  /**
   * Runs once before the first change: unknown autoclear bits cleared (qemu clears them when it
   * opens an image for writing; so would any program that does not keep them true), then the
   * dirty bit set with lazy refcounts (qemu's qcow2_mark_dirty). Each header write is flushed.
   */
  beforeChange(): Promise<void> {
    if (this.#prepared !== undefined) return this.#prepared;
    const run = this.#prepare();
    this.#prepared = run;
    run.catch(() => {
      if (this.#prepared === run) this.#prepared = undefined;
    });
    return run;
  }

  async #prepare(): Promise<void> {
    const storage = this.#p.storage;
    const directory = this.#p.bitmapDirectory;
    let maintained = MAINTAINED_AUTOCLEAR;
    if (this.#p.version >= 3 && directory !== undefined && (this.#autoclear & AUTOCLEAR_BITMAPS) !== 0n) {
      await this.#markBitmapsInUse(directory);
      maintained |= AUTOCLEAR_BITMAPS;
    }
    if (this.#p.version >= 3 && (this.#autoclear & ~maintained) !== 0n) {
      const value = this.#autoclear & maintained;
      await this.#io(() => storage.write(mask(value), AUTOCLEAR_FEATURES_AT), 'header autoclear_features at 0x58: write');
      await this.#io(() => storage.flush(), 'header autoclear_features: flush');
      this.#autoclear = value;
    }
    if (this.#p.lazyRefcounts && !this.dirty) await this.#setDirty(true);
  }

  /**
   * Sets the in_use flag of every persistent bitmap, in place, and flushes — as qemu does when it
   * opens an image with bitmaps for writing. This implementation does not track dirty regions,
   * so the flag stays: the bitmaps read as inconsistent (qemu-img info "in-use"), their clusters
   * stay referenced (no leaks), and qemu can remove or rebuild them. Clearing the autoclear bit
   * instead would turn every bitmap cluster into a leak.
   */
  async #markBitmapsInUse(directory: { offset: number; size: number; count: number }): Promise<void> {
    const storage = this.#p.storage;
    const bytes = new Uint8Array(directory.size); // size checked against qemu's limit at open
    await this.#io(async () => {
      const got = await storage.read(bytes, directory.offset);
      if (got < bytes.length) throw corrupt(`bitmap directory at ${hex(directory.offset)}: ends past the end of the file`);
    }, `bitmap directory at ${hex(directory.offset)}: read`);
    const view = new DataView(bytes.buffer);
    let changed = false;
    let at = 0;
    for (let i = 0; i < directory.count; i++) {
      const { end } = decodeBitmapDirectoryEntry(bytes, at, { tableOffset: directory.offset });
      const flags = view.getUint32(at + 12);
      if ((flags & BITMAP_IN_USE) === 0) {
        view.setUint32(at + 12, flags | BITMAP_IN_USE);
        changed = true;
      }
      at = end;
    }
    if (!changed) return;
    await this.#io(() => storage.write(bytes, directory.offset), `bitmap directory at ${hex(directory.offset)}: write`);
    await this.#io(() => storage.flush(), 'bitmap directory: flush');
  }

  async #setDirty(dirty: boolean): Promise<void> {
    const value = dirty ? this.#incompatible | INCOMPAT_DIRTY : this.#incompatible & ~INCOMPAT_DIRTY;
    const storage = this.#p.storage;
    await this.#io(() => storage.write(mask(value), INCOMPATIBLE_FEATURES_AT), 'header incompatible_features at 0x48: write');
    await this.#io(() => storage.flush(), 'header incompatible_features: flush');
    this.#setIncompatible(value);
  }

  #setIncompatible(value: bigint): void {
    this.#incompatible = value;
    this.#dirty = (value & INCOMPAT_DIRTY) !== 0n;
  }

  /** Clears the dirty bit after a repair, with everything before it durable. */
  async markClean(): Promise<void> {
    if (!this.dirty) return;
    await this.#p.l2Cache.writeBack();
    await this.#p.refcounts.flush();
    await this.#setDirty(false);
  }

  /**
   * Makes everything written before the call durable: the data file, then L2 tables (after the
   * refcount blocks they depend on and a flush of the data they point at), the host clusters
   * they no longer point at freed, then refcount blocks unless refcounts are lazy now, then one
   * flush of the image file.
   */
  async flush(): Promise<void> {
    if (this.#closed) return;
    const refused = this.refusal();
    if (refused !== undefined) return refused;
    const p = this.#p;
    if (p.dataFile !== undefined) await this.#io(() => p.dataFile!.flush(), 'external data file: flush');
    await this.#writer?.releaseFrees();
    await p.l2Cache.writeBack();
    if (this.accurateRefcounts()) await p.refcounts.flush();
    else await this.#io(() => p.storage.flush(), 'flush');
  }

  /**
   * Waits for the operations in flight, flushes everything (refcount blocks too), clears the
   * dirty bit of a lazy-refcount image (qemu's qcow2_mark_clean), and closes the refcounts.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    if (this.#corruptReason !== undefined) {
      // qemu makes a corrupt image unusable: nothing more is written (cached changes are dropped).
      await this.#writer?.drain().catch(() => undefined);
      await this.#marking;
      this.#closed = true;
      return;
    }
    await this.#writer?.close();
    await this.flush();
    if (this.dirty) await this.markClean();
    await this.#p.refcounts.close();
    this.#closed = true;
  }

  async #io(fn: () => Promise<void>, what: string): Promise<void> {
    try {
      await fn();
    } catch (error) {
      if (isQcow2Error(error)) throw error;
      throw new Qcow2Error('IO', `${this.#what}: ${what}: ${String(error)}`, { cause: error });
    }
  }
}

/**
 * The storage of a writable image as the engine uses it: every write and truncate moves a
 * high-water mark (what lies at and past it was never written, so it reads as zeros), and with
 * `noFlush` (qemu's cache=unsafe) flush does nothing.
 */
export class WriteTrackingStorage implements Storage {
  readonly #inner: Storage;
  readonly #noFlush: boolean;
  /** Offsets at and past it were never written through this storage, nor before it was opened. */
  writtenEnd: number;

  constructor(inner: Storage, size: number, noFlush: boolean) {
    this.#inner = inner;
    this.#noFlush = noFlush;
    this.writtenEnd = size;
    if (typeof inner.discard === 'function') {
      const discard = inner.discard.bind(inner);
      this.discard = (offset, length) => discard(offset, length);
    }
  }

  discard?: (offset: number, length: number) => Promise<void>;

  get readOnly(): boolean {
    return this.#inner.readOnly;
  }

  get canDiscard(): boolean {
    return this.#inner.canDiscard;
  }

  read(dst: Uint8Array, offset: number): Promise<number> {
    return this.#inner.read(dst, offset);
  }

  write(src: Uint8Array, offset: number): Promise<void> {
    const end = offset + src.length;
    if (end > this.writtenEnd && src.length > 0) this.writtenEnd = end;
    return this.#inner.write(src, offset);
  }

  size(): Promise<number> {
    return this.#inner.size();
  }

  truncate(size: number): Promise<void> {
    if (size > this.writtenEnd) this.writtenEnd = size;
    return this.#inner.truncate(size);
  }

  flush(): Promise<void> {
    return this.#noFlush ? Promise.resolve() : this.#inner.flush();
  }

  close(): Promise<void> {
    return this.#inner.close();
  }
}
