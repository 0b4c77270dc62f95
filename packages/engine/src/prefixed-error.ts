import { isQcow2Error, Qcow2Error } from '@qcow2/format';

/** `error` with `prefix: ` before its message, its code kept (a non-Qcow2Error becomes IO). */
export function prefixed(prefix: string, error: unknown): Qcow2Error {
  if (isQcow2Error(error)) return new Qcow2Error(error.code, `${prefix}: ${error.message}`, { cause: error });
  return new Qcow2Error('IO', `${prefix}: ${String(error)}`, { cause: error });
}
