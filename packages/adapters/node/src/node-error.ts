import { Qcow2Error } from '@qcow2/storage';

/**
 * Maps an error from node:fs to a Qcow2Error: 'NOT_FOUND' for ENOENT, 'IO' for everything else.
 * The message names the operation and the path; the original error is kept as `cause`.
 */
export function nodeFsError(operation: string, path: string, cause: unknown): Qcow2Error {
  const code = (cause as { code?: unknown } | null)?.code;
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new Qcow2Error(code === 'ENOENT' ? 'NOT_FOUND' : 'IO', `node storage: ${operation} ${path} failed: ${detail}`, {
    cause,
  });
}

/** The errno code of a node:fs error (`'ENOENT'`, …), if it has one. */
export function errnoCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** `0x1f000`, as the other packages print offsets. */
export function hexOffset(value: number): string {
  return '0x' + value.toString(16);
}
