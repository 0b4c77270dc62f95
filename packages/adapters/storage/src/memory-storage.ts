import { hex, Qcow2Error } from '@qcow2/format';
import { checkBytes, checkRange, checkSize, closedError, readOnlyError } from './arguments.js';
import type { Storage } from './storage.js';

export interface MemoryStorageOptions {
  /** Initial contents; copied, so the caller may keep using the array. */
  initial?: Uint8Array;
  /** Refuse write, truncate and discard with 'READ_ONLY'. */
  readOnly?: boolean;
  /**
   * Largest size the file may reach, in bytes; growing past it rejects with 'IO' (as a full disk
   * would). Without it the limit is what the JS engine can allocate (4 GiB on Node 20).
   */
  maxSize?: number;
}

/** A Storage held in memory. Discard zero-fills (`canDiscard` is true). */
export interface MemoryStorage extends Storage {
  discard(offset: number, length: number): Promise<void>;
  /**
   * A copy of the current contents. Works after `close` too, so a test can inspect what an
   * engine left behind.
   */
  snapshot(): Uint8Array;
}

const NAME = 'memory storage';
/** Below this capacity, a file truncated down keeps its buffer. */
const SHRINK_FLOOR = 1 << 20;

/**
 * A growable in-memory file. Writes past the end grow the buffer geometrically (amortised O(1)
 * per byte); the only copies are of the data read or written. Every method rejects only with a
 * Qcow2Error.
 */
export function createMemoryStorage(options: MemoryStorageOptions = {}): MemoryStorage {
  const { initial, readOnly = false, maxSize } = options;
  if (initial !== undefined) checkBytes(`${NAME}: initial`, initial);
  if (maxSize !== undefined) checkSize(`${NAME}: maxSize`, maxSize);
  if (initial !== undefined && maxSize !== undefined && initial.length > maxSize) {
    throw new Qcow2Error(
      'INVALID_ARGUMENT',
      `${NAME}: initial contents of ${initial.length} bytes exceed maxSize ${maxSize}`,
    );
  }
  return new InMemoryFile(initial === undefined ? new Uint8Array(0) : initial.slice(), readOnly, maxSize);
}

class InMemoryFile implements MemoryStorage {
  readonly readOnly: boolean;
  readonly canDiscard = true as const;
  /** Capacity; bytes at and past `#size` are always zero. */
  #buffer: Uint8Array;
  #size: number;
  #closed = false;
  readonly #maxSize: number | undefined;

  constructor(buffer: Uint8Array, readOnly: boolean, maxSize: number | undefined) {
    this.#buffer = buffer;
    this.#size = buffer.length;
    this.readOnly = readOnly;
    this.#maxSize = maxSize;
  }

  async read(dst: Uint8Array, offset: number): Promise<number> {
    this.#open('read');
    checkBytes(`${NAME}: read`, dst);
    checkRange(`${NAME}: read`, offset, dst.length);
    if (offset >= this.#size) return 0;
    const count = Math.min(dst.length, this.#size - offset);
    dst.set(this.#buffer.subarray(offset, offset + count));
    return count;
  }

  async write(src: Uint8Array, offset: number): Promise<void> {
    this.#writable('write');
    checkBytes(`${NAME}: write`, src);
    checkRange(`${NAME}: write`, offset, src.length);
    if (src.length === 0) return;
    const end = offset + src.length;
    if (end > this.#buffer.length) this.#grow(end, true, 'write', offset);
    this.#buffer.set(src, offset);
    if (end > this.#size) this.#size = end;
  }

  async size(): Promise<number> {
    this.#open('size');
    return this.#size;
  }

  async truncate(size: number): Promise<void> {
    this.#writable('truncate');
    checkSize(`${NAME}: truncate`, size);
    if (size > this.#size) {
      if (size > this.#buffer.length) this.#grow(size, false, 'truncate', size);
    } else if (size < this.#size) {
      if (this.#buffer.length > SHRINK_FLOOR && size < this.#buffer.length / 4) {
        this.#buffer = this.#buffer.slice(0, size);
      } else {
        this.#buffer.fill(0, size, this.#size);
      }
    }
    this.#size = size;
  }

  async flush(): Promise<void> {
    this.#open('flush');
  }

  async close(): Promise<void> {
    this.#closed = true;
  }

  async discard(offset: number, length: number): Promise<void> {
    this.#writable('discard');
    checkRange(`${NAME}: discard`, offset, length);
    if (offset >= this.#size) return;
    this.#buffer.fill(0, offset, Math.min(offset + length, this.#size));
  }

  snapshot(): Uint8Array {
    return this.#buffer.slice(0, this.#size);
  }

  #open(op: string): void {
    if (this.#closed) throw closedError(`${NAME}: ${op}`);
  }

  #writable(op: string): void {
    this.#open(op);
    if (this.readOnly) throw readOnlyError(`${NAME}: ${op}`);
  }

  /**
   * Makes the capacity at least `needed`. Writes grow geometrically (so appends cost amortised
   * O(1) per byte); an explicit truncate allocates exactly what it asks for.
   */
  #grow(needed: number, geometric: boolean, op: string, at: number): void {
    const limit = this.#maxSize;
    if (limit !== undefined && needed > limit) {
      throw new Qcow2Error(
        'IO',
        `${NAME}: ${op} at ${hex(at)} would grow the file to ${needed} bytes, above maxSize ${limit}`,
      );
    }
    let capacity = needed;
    if (geometric) {
      capacity = Math.max(needed, this.#buffer.length * 2, 4096);
      if (limit !== undefined) capacity = Math.min(capacity, limit);
    }
    let next: Uint8Array;
    try {
      next = new Uint8Array(capacity);
    } catch (first) {
      try {
        if (capacity === needed) throw first;
        next = new Uint8Array(needed);
      } catch (cause) {
        throw new Qcow2Error('IO', `${NAME}: ${op} at ${hex(at)}: cannot allocate ${needed} bytes`, { cause });
      }
    }
    next.set(this.#buffer.subarray(0, this.#size));
    this.#buffer = next;
  }
}
