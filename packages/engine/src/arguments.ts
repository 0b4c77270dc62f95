import { hex, invalidArgument, type Qcow2Error } from '@qcow2/format';

/** A settled rejection: the public read functions reject (never throw) on bad arguments. */
export function rejected(error: Qcow2Error): Promise<never> {
  return Promise.reject(error);
}

function isOffset(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/**
 * Why a guest range is refused (offset and length integers ≥ 0, the range within the virtual
 * size), or undefined when it is fine. The message (`${what}: ${operation} …`) is only built
 * for a refusal: this runs on every read.
 */
export function rangeProblem(
  what: string,
  operation: string,
  offset: unknown,
  length: unknown,
  virtualSize: number,
): Qcow2Error | undefined {
  if (isOffset(offset) && isOffset(length) && offset + length <= virtualSize) return undefined;
  if (!isOffset(offset)) return invalidArgument(`${what}: ${operation}: offset ${String(offset)} is not an integer ≥ 0`);
  if (!isOffset(length)) {
    return invalidArgument(`${what}: ${operation} at ${hex(offset)}: length ${String(length)} is not an integer ≥ 0`);
  }
  return invalidArgument(
    `${what}: ${operation}: ${length} bytes at ${hex(offset)} end past the virtual size ${virtualSize} (${hex(virtualSize)})`,
  );
}

/** Why `dst` is not a Uint8Array (one from another realm passes), or undefined. */
export function bufferProblem(what: string, operation: string, dst: unknown): Qcow2Error | undefined {
  if (dst instanceof Uint8Array) return undefined;
  if (ArrayBuffer.isView(dst) && Object.prototype.toString.call(dst) === '[object Uint8Array]') return undefined;
  return invalidArgument(`${what}: ${operation}: expected a Uint8Array, got ${dst === null ? 'null' : typeof dst}`);
}
