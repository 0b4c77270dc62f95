/**
 * Positional, async storage: the one interface every backend (memory, Node fs, OPFS, Deno, HTTP)
 * implements. Modelled on FileSystemSyncAccessHandle. Every method rejects only with a
 * Qcow2Error (adapters map native errors, code 'IO'; use after close is 'CLOSED'; a write to
 * read-only storage is 'READ_ONLY'; an offset, length or size that is not an integer in
 * [0, 2^53), a range ending beyond 2^53 - 1 or a buffer that is not a Uint8Array is
 * 'INVALID_ARGUMENT'). The conformance suite (`storageConformanceCases`) pins all of this down.
 */
export interface Storage {
  /** True when write, truncate and discard are refused. */
  readonly readOnly: boolean;
  /**
   * True when `discard` is present: the range then reads as zeros, and the backend releases its
   * space where it can (a file system punches a hole; memory zero-fills).
   */
  readonly canDiscard: boolean;
  /**
   * Reads up to `dst.length` bytes at `offset` into `dst`; resolves to the count read, which is
   * short only at the end of the file (0 at or past it). Bytes of `dst` past the count are left
   * as they were.
   */
  read(dst: Uint8Array, offset: number): Promise<number>;
  /**
   * Writes all of `src` at `offset`, extending the file (zero-filled) when past its end. A
   * zero-length write changes nothing. `src` is not retained once the promise resolves.
   */
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
   * Deallocates a range where the backend can; the range then reads as zeros. Never changes
   * the size (the part of the range past the end is ignored). Present only when the backend
   * supports it (see `canDiscard`).
   */
  discard?(offset: number, length: number): Promise<void>;
}

/**
 * Opens the storage of a backing file named in an image: `name` as the image spells it, `from`
 * the location (path, URL) of the image that names it, against which a relative name resolves.
 * Rejects with a Qcow2Error when the name is refused by the resolver's policy or cannot be opened.
 */
export type StorageResolver = (name: string, from: string | undefined) => Promise<Storage>;
