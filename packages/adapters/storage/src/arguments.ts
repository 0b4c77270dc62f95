import { hex, invalidArgument, Qcow2Error } from '@qcow2/format';

/**
 * Argument checks and errors shared by every Storage implementation, so that all of them refuse
 * the same calls with the same codes. `what` names the storage and the operation, e.g.
 * `memory storage: write` or `node storage /srv/a.qcow2: read`.
 */

function show(value: unknown): string {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) return hex(value);
  if (typeof value === 'number') return String(value);
  return typeof value;
}

function isOffset(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/**
 * Checks a byte range: `offset` and `length` are integers ≥ 0 and `offset + length` ≤ 2^53 − 1
 * (Number.MAX_SAFE_INTEGER). Throws Qcow2Error 'INVALID_ARGUMENT' otherwise.
 */
export function checkRange(what: string, offset: number, length: number): void {
  if (!isOffset(offset)) {
    throw invalidArgument(`${what}: offset ${show(offset)} is not an integer in [0, 2^53)`);
  }
  if (!isOffset(length)) {
    throw invalidArgument(`${what} at offset ${hex(offset)}: length ${show(length)} is not an integer in [0, 2^53)`);
  }
  if (offset + length > Number.MAX_SAFE_INTEGER) {
    throw invalidArgument(
      `${what} at offset ${hex(offset)}: range of ${length} bytes ends beyond 2^53 - 1`,
    );
  }
}

/** Checks a file size (an integer in [0, 2^53)). Throws Qcow2Error 'INVALID_ARGUMENT' otherwise. */
export function checkSize(what: string, size: number): void {
  if (!isOffset(size)) {
    throw invalidArgument(`${what}: size ${show(size)} is not an integer in [0, 2^53)`);
  }
}

/**
 * Checks that `value` is a Uint8Array (by its tag, so one from another realm or a Node Buffer
 * passes). Throws Qcow2Error 'INVALID_ARGUMENT' otherwise.
 */
export function checkBytes(what: string, value: unknown): asserts value is Uint8Array {
  // instanceof first: the hot path costs one prototype check; the tag check accepts a Uint8Array
  // from another realm (a worker, a vm context).
  if (value instanceof Uint8Array) return;
  if (!ArrayBuffer.isView(value) || Object.prototype.toString.call(value) !== '[object Uint8Array]') {
    throw invalidArgument(`${what}: expected a Uint8Array, got ${value === null ? 'null' : typeof value}`);
  }
}

/** The error of any call on a closed storage. */
export function closedError(what: string): Qcow2Error {
  return new Qcow2Error('CLOSED', `${what}: the storage is closed`);
}

/** The error of write, truncate or discard on a read-only storage. */
export function readOnlyError(what: string): Qcow2Error {
  return new Qcow2Error('READ_ONLY', `${what}: the storage is read-only`);
}
