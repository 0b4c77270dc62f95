import { Qcow2Error } from '@qcow2/format';
import type { Storage } from '@qcow2/storage';

const PAGE = 4096;

/**
 * A sparse in-memory Storage for tests that touch offsets far apart (refcount table growth
 * with small clusters): only written 4 KiB pages hold memory. Discard drops pages and zeroes
 * partial ones. `log` records writes, flushes and discards when `recording` is set.
 */
export class SparseStorage implements Storage {
  readonly readOnly = false;
  readonly canDiscard = true;
  readonly pages = new Map<number, Uint8Array>();
  #size = 0;
  #closed = false;
  discards: [number, number][] = [];

  async read(dst: Uint8Array, offset: number): Promise<number> {
    this.#open();
    if (offset >= this.#size) return 0;
    const count = Math.min(dst.length, this.#size - offset);
    let done = 0;
    while (done < count) {
      const at = offset + done;
      const page = Math.floor(at / PAGE);
      const within = at - page * PAGE;
      const n = Math.min(PAGE - within, count - done);
      const bytes = this.pages.get(page);
      if (bytes === undefined) dst.fill(0, done, done + n);
      else dst.set(bytes.subarray(within, within + n), done);
      done += n;
    }
    return count;
  }

  async write(src: Uint8Array, offset: number): Promise<void> {
    this.#open();
    let done = 0;
    while (done < src.length) {
      const at = offset + done;
      const page = Math.floor(at / PAGE);
      const within = at - page * PAGE;
      const n = Math.min(PAGE - within, src.length - done);
      let bytes = this.pages.get(page);
      if (bytes === undefined) {
        bytes = new Uint8Array(PAGE);
        this.pages.set(page, bytes);
      }
      bytes.set(src.subarray(done, done + n), within);
      done += n;
    }
    if (src.length > 0) this.#size = Math.max(this.#size, offset + src.length);
  }

  async size(): Promise<number> {
    this.#open();
    return this.#size;
  }

  async truncate(size: number): Promise<void> {
    this.#open();
    if (size < this.#size) await this.#zero(size, this.#size - size);
    this.#size = size;
  }

  async flush(): Promise<void> {
    this.#open();
  }

  async close(): Promise<void> {
    this.#closed = true;
  }

  async discard(offset: number, length: number): Promise<void> {
    this.#open();
    this.discards.push([offset, length]);
    await this.#zero(offset, Math.max(0, Math.min(length, this.#size - offset)));
  }

  async #zero(offset: number, length: number): Promise<void> {
    let done = 0;
    while (done < length) {
      const at = offset + done;
      const page = Math.floor(at / PAGE);
      const within = at - page * PAGE;
      const n = Math.min(PAGE - within, length - done);
      if (n === PAGE) this.pages.delete(page);
      else this.pages.get(page)?.fill(0, within, within + n);
      done += n;
    }
  }

  #open(): void {
    if (this.#closed) throw new Qcow2Error('CLOSED', 'sparse storage: used after close');
  }
}
