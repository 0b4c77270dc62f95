import { Qcow2Error } from '@qcow2/storage';

/**
 * The class name of a Deno error (`'NotFound'`, `'AlreadyExists'`, `'PermissionDenied'`, …) or
 * its errno code (`'ENOENT'`), whichever it has.
 */
export function denoErrorKind(error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const name = (error as { name?: unknown }).name;
  if (typeof name === 'string' && name !== 'Error') return name;
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * Maps an error from a Deno file API to a Qcow2Error: 'NOT_FOUND' for Deno.errors.NotFound
 * (ENOENT), 'IO' for everything else. The message names the operation and the path; the
 * original error is kept as `cause`.
 */
export function denoFsError(operation: string, path: string, cause: unknown): Qcow2Error {
  const kind = denoErrorKind(cause);
  const notFound = kind === 'NotFound' || kind === 'ENOENT';
  const detail = cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause);
  return new Qcow2Error(notFound ? 'NOT_FOUND' : 'IO', `deno storage: ${operation} ${path} failed: ${detail}`, { cause });
}

/** `0x1f000`, as the other packages print offsets. */
export function hexOffset(value: number): string {
  return '0x' + value.toString(16);
}
