/**
 * Least-recently-used blocks of a file, bounded by their total byte length. `get` refreshes a
 * block; `set` evicts the oldest blocks until the total fits. A block larger than the whole
 * capacity is not kept.
 */
export class BlockCache {
  readonly capacity: number;
  #bytes = 0;
  /** Insertion order is recency order: the first entry is the least recently used. */
  readonly #blocks = new Map<number, Uint8Array>();

  constructor(capacity: number) {
    this.capacity = capacity;
  }

  /** Bytes held. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Number of blocks held. */
  get count(): number {
    return this.#blocks.size;
  }

  /** Whether the block is held, without refreshing it. */
  has(index: number): boolean {
    return this.#blocks.has(index);
  }

  get(index: number): Uint8Array | undefined {
    const block = this.#blocks.get(index);
    if (block !== undefined) {
      this.#blocks.delete(index);
      this.#blocks.set(index, block);
    }
    return block;
  }

  set(index: number, block: Uint8Array): void {
    const old = this.#blocks.get(index);
    if (old !== undefined) {
      this.#blocks.delete(index);
      this.#bytes -= old.length;
    }
    if (block.length > this.capacity) return;
    this.#blocks.set(index, block);
    this.#bytes += block.length;
    for (const [oldest, evicted] of this.#blocks) {
      if (this.#bytes <= this.capacity) break;
      this.#blocks.delete(oldest);
      this.#bytes -= evicted.length;
    }
  }

  clear(): void {
    this.#blocks.clear();
    this.#bytes = 0;
  }
}
