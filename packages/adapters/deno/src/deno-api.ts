/**
 * The few Deno APIs this package uses, typed structurally here so the package needs no Deno type
 * package (and leaks no Deno types into its public declarations). Read from `globalThis.Deno` at
 * call time.
 */

/** Deno.FsFile, the synchronous methods. */
export interface DenoFsFile {
  /** Bytes read into `p`, or null at the end of the file. */
  readSync(p: Uint8Array): number | null;
  /** Bytes written from `p` (possibly fewer than `p.length`). */
  writeSync(p: Uint8Array): number;
  /** Moves the file position; `whence` 0 is Deno.SeekMode.Start. */
  seekSync(offset: number | bigint, whence: number): number;
  truncateSync(len?: number): void;
  syncDataSync(): void;
  syncSync(): void;
  statSync(): { size: number; isDirectory: boolean };
  close(): void;
}

export interface DenoOpenOptions {
  read?: boolean;
  write?: boolean;
  create?: boolean;
  createNew?: boolean;
  truncate?: boolean;
  mode?: number;
}

/** The `Deno` namespace, the part used here. */
export interface DenoNamespace {
  open(path: string, options: DenoOpenOptions): Promise<DenoFsFile>;
  openSync(path: string, options: DenoOpenOptions): DenoFsFile;
  cwd(): string;
  readonly build: { readonly os: string };
}

/** `globalThis.Deno`, or undefined outside Deno. */
export function denoNamespace(): DenoNamespace | undefined {
  const deno = (globalThis as { Deno?: unknown }).Deno;
  return typeof deno === 'object' && deno !== null && typeof (deno as DenoNamespace).open === 'function'
    ? (deno as DenoNamespace)
    : undefined;
}
