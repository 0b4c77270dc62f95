/**
 * Positional, async storage: the one interface every backend (memory, Node fs, OPFS, Deno, HTTP)
 * implements. Modelled on FileSystemSyncAccessHandle. Every method rejects only with a
 * Qcow2Error (adapters map native errors, code 'IO'; use after close is 'CLOSED'; a write to
 * read-only storage is 'READ_ONLY').
 */
export interface Storage {
  /** True when write, truncate and discard are refused. */
  readonly readOnly: boolean;
  /** True when `discard` punches holes (space is actually released). */
  readonly canDiscard: boolean;
  /**
   * Reads up to `dst.length` bytes at `offset` into `dst`; resolves to the count read, which is
   * short only at the end of the file (0 at or past it).
   */
  read(dst: Uint8Array, offset: number): Promise<number>;
  /** Writes all of `src` at `offset`, extending the file (zero-filled) when past its end. */
  write(src: Uint8Array, offset: number): Promise<void>;
  /** The current size in bytes. */
  size(): Promise<number>;
  /** Sets the size, cutting or zero-extending. */
  truncate(size: number): Promise<void>;
  /** Durable when it resolves: everything written before the call survives a crash. */
  flush(): Promise<void>;
  /** Releases the backend; any later call rejects with code 'CLOSED'. Closing twice is a no-op. */
  close(): Promise<void>;
  /**
   * Deallocates a range where the backend can; the range then reads as zeros. Present only
   * when the backend supports it (see `canDiscard`).
   */
  discard?(offset: number, length: number): Promise<void>;
}

/** Opens the storage of a backing file named in an image: `(name, from)` → Storage. */
export type StorageResolver = (name: string, from: string | undefined) => Promise<Storage>;
