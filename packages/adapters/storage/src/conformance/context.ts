import type { Storage } from '../storage.js';

/**
 * What an adapter hands the conformance suite. Cases that need something the context lacks are
 * skipped (see `ConformanceCase.applies`): a read-only backend (HTTP) gives only `createReadOnly`.
 */
export interface ConformanceContext {
  /** A fresh, empty, writable storage; each call must return an independent one. */
  create?: () => Promise<Storage>;
  /** A fresh read-only storage whose contents are `bytes`. */
  createReadOnly?: (bytes: Uint8Array) => Promise<Storage>;
  /**
   * Closes `storage` (if it is not closed yet) and opens the same file again, writable. Lets the
   * suite check that data outlives the handle.
   */
  reopen?: (storage: Storage) => Promise<Storage>;
  /**
   * True when the backend keeps holes cheaply, so the suite may write at offsets beyond 4 GiB
   * (a file system; not memory).
   */
  sparse?: boolean;
}

/** One named check of the Storage contract. */
export interface ConformanceCase {
  readonly name: string;
  /** False when the context lacks what the case needs; runners then skip it. */
  applies(ctx: ConformanceContext): boolean;
  /** Resolves when the storage conforms; rejects with an Error saying what did not. */
  run(ctx: ConformanceContext): Promise<void>;
}
