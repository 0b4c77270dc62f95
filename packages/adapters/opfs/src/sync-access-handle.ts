/**
 * The parts of the File System API this package uses, declared structurally: TypeScript's DOM
 * library leaves FileSystemSyncAccessHandle to its WebWorker library, which cannot be combined
 * with DOM, and a consumer's own `lib` setting must not decide whether our declarations compile.
 */

/** How a sync access handle locks its file: see `OpfsStorageOptions.mode`. */
export type OpfsAccessMode = 'readwrite' | 'read-only' | 'readwrite-unsafe';

/** FileSystemSyncAccessHandle (dedicated workers only). */
export interface SyncAccessHandle {
  read(buffer: Uint8Array, options?: { at?: number }): number;
  write(buffer: Uint8Array, options?: { at?: number }): number;
  getSize(): number;
  truncate(size: number): void;
  flush(): void;
  close(): void;
}

/** FileSystemFileHandle as seen from a dedicated worker. */
export interface SyncCapableFileHandle {
  readonly kind: 'file';
  readonly name: string;
  createSyncAccessHandle(options?: { mode?: OpfsAccessMode }): Promise<SyncAccessHandle>;
}
