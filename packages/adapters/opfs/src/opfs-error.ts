import { Qcow2Error, type Qcow2ErrorCode } from '@qcow2/storage';

/** The `name` of a DOMException (or any error), if it has one. */
export function errorName(error: unknown): string | undefined {
  const name = (error as { name?: unknown } | null)?.name;
  return typeof name === 'string' ? name : undefined;
}

function detailOf(error: unknown): string {
  if (error instanceof Error || (typeof error === 'object' && error !== null && 'message' in error)) {
    const { name, message } = error as { name?: unknown; message?: unknown };
    return `${typeof name === 'string' ? name : 'Error'}: ${String(message)}`;
  }
  return String(error);
}

/**
 * Maps an error thrown by the File System API (a DOMException) to a Qcow2Error. `what` names the
 * storage and the operation (`opfs storage vm/disk.qcow2: open`). The original error is `cause`.
 *
 * - NotFoundError → 'NOT_FOUND'
 * - NoModificationAllowedError → 'IO': when opening (`opening`), saying that another handle has
 *   the file open (an exclusive `readwrite` sync access handle, or a writable stream, holds its
 *   lock); later, that the handle refuses the change (a 'read-only' handle)
 * - SecurityError → 'UNSUPPORTED' (the browser refuses OPFS to this context)
 * - QuotaExceededError → 'IO', saying the origin's storage quota is exhausted
 * - TypeMismatchError → 'IO' (a directory where a file was expected, or the reverse)
 * - anything else (InvalidStateError, NotReadableError, …) → 'IO'
 */
export function opfsError(what: string, cause: unknown, opening = false): Qcow2Error {
  const name = errorName(cause);
  const detail = detailOf(cause);
  let code: Qcow2ErrorCode = 'IO';
  let message: string;
  switch (name) {
    case 'NotFoundError':
      code = 'NOT_FOUND';
      message = `no such file or directory (${detail})`;
      break;
    case 'NoModificationAllowedError':
      message = opening
        ? `another handle has it open (${detail}); close that handle first, ` +
          `or open every handle with mode 'read-only' or 'readwrite-unsafe'`
        : `the handle refuses the change (${detail})`;
      break;
    case 'SecurityError':
      code = 'UNSUPPORTED';
      message = `the browser refuses the origin private file system to this context (${detail})`;
      break;
    case 'QuotaExceededError':
      message = `the storage quota of this origin is exhausted (${detail})`;
      break;
    case 'TypeMismatchError':
      message = `a directory and a file are mixed up along the path (${detail})`;
      break;
    default:
      message = `failed (${detail})`;
  }
  return new Qcow2Error(code, `${what}: ${message}`, { cause });
}

/** `0x1f000`, as the other packages print offsets. */
export function hex(value: number): string {
  return '0x' + value.toString(16);
}
