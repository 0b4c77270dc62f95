import { isQcow2Error } from '@qcow2/format';

/**
 * A failure the command has already put into qemu's words: `main` prints `qcow2: <message>`
 * (and, with `usage`, qemu-img's "Try 'qcow2 --help'" line) and exits with `exitCode`.
 */
export class CliError extends Error {
  override readonly name = 'CliError' as const;
  readonly exitCode: number;
  readonly usage: boolean;
  /** Text printed after the message exactly as it is (qemu's error_append_hint: no program name, its own newlines). */
  readonly hint: string | undefined;

  constructor(message: string, options: { exitCode?: number; usage?: boolean; cause?: unknown; hint?: string } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.exitCode = options.exitCode ?? 1;
    this.usage = options.usage ?? false;
    this.hint = options.hint;
  }
}

export function isCliError(value: unknown): value is CliError {
  return value instanceof CliError;
}

/** glibc's strerror text for the errno codes node:fs reports. */
const STRERROR: Readonly<Record<string, string>> = {
  EPERM: 'Operation not permitted',
  ENOENT: 'No such file or directory',
  EIO: 'Input/output error',
  ENXIO: 'No such device or address',
  EBADF: 'Bad file descriptor',
  EAGAIN: 'Resource temporarily unavailable',
  ENOMEM: 'Cannot allocate memory',
  EACCES: 'Permission denied',
  EBUSY: 'Device or resource busy',
  EEXIST: 'File exists',
  ENOTDIR: 'Not a directory',
  EISDIR: 'Is a directory',
  EINVAL: 'Invalid argument',
  EMFILE: 'Too many open files',
  EFBIG: 'File too large',
  ENOSPC: 'No space left on device',
  EROFS: 'Read-only file system',
  ERANGE: 'Numerical result out of range',
  ENAMETOOLONG: 'File name too long',
  ELOOP: 'Too many levels of symbolic links',
  ENOTSUP: 'Operation not supported',
  EOPNOTSUPP: 'Operation not supported',
};

export function strerror(code: string): string {
  return STRERROR[code] ?? code;
}

/** The errno code (`'ENOENT'`) of an error or of the first error in its `cause` chain. */
export function errnoOf(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 8 && typeof current === 'object' && current !== null; depth += 1) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && /^E[A-Z0-9]+$/.test(code)) return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/** One line describing anything thrown: never a stack trace. */
export function describeError(error: unknown): string {
  if (isCliError(error) || isQcow2Error(error)) return oneLine(error.message);
  // Anything else is a bug or a runtime failure: its first line only, never a stack.
  if (error instanceof Error) return oneLine((error.message || error.name).split('\n')[0] ?? '');
  return oneLine(String(error).split('\n')[0] ?? '');
}

/** For a failure of the host file itself: glibc's text when there is an errno, else the message. */
export function describeFileError(error: unknown): string {
  const code = errnoOf(error);
  return code !== undefined ? strerror(code) : describeError(error);
}

function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, ' ').trim();
}
