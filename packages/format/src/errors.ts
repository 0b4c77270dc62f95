/**
 * The one error type of the toolkit. Every public function of every package throws only this
 * (or rejects with it), whatever the input bytes.
 */

/** The closed set of error codes. */
export type Qcow2ErrorCode =
  /** The image's metadata is inconsistent or violates the specification. */
  | 'CORRUPT'
  /** A valid image uses something this implementation (or qemu) does not support. */
  | 'UNSUPPORTED'
  /** A caller passed a value outside the function's contract. */
  | 'INVALID_ARGUMENT'
  /** A write was attempted on something opened read-only. */
  | 'READ_ONLY'
  /** The storage underneath failed. */
  | 'IO'
  /** A named thing (file, snapshot, extension) does not exist. */
  | 'NOT_FOUND'
  /** The object was used after it was closed. */
  | 'CLOSED';

export const QCOW2_ERROR_CODES: readonly Qcow2ErrorCode[] = [
  'CORRUPT',
  'UNSUPPORTED',
  'INVALID_ARGUMENT',
  'READ_ONLY',
  'IO',
  'NOT_FOUND',
  'CLOSED',
];

const BRAND_KEY = '@qcow2/format/Qcow2Error';

export interface Qcow2ErrorOptions {
  cause?: unknown;
}

export class Qcow2Error extends Error {
  override readonly name = 'Qcow2Error' as const;
  readonly code: Qcow2ErrorCode;

  constructor(code: Qcow2ErrorCode, message: string, options?: Qcow2ErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    // A brand under a registered symbol: two copies of this package recognise each other's errors.
    Object.defineProperty(this, Symbol.for(BRAND_KEY), { value: true });
  }
}

/**
 * True for any Qcow2Error, including one thrown by another copy of this package: the check is
 * by brand, not `instanceof`.
 */
export function isQcow2Error(value: unknown): value is Qcow2Error {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as Record<symbol, unknown>)[Symbol.for(BRAND_KEY)] === true &&
    typeof (value as { code?: unknown }).code === 'string'
  );
}

/** Shorthand constructors, so call sites stay one line. */
export function corrupt(message: string, cause?: unknown): Qcow2Error {
  return new Qcow2Error('CORRUPT', message, cause === undefined ? undefined : { cause });
}

export function unsupported(message: string, cause?: unknown): Qcow2Error {
  return new Qcow2Error('UNSUPPORTED', message, cause === undefined ? undefined : { cause });
}

export function invalidArgument(message: string, cause?: unknown): Qcow2Error {
  return new Qcow2Error('INVALID_ARGUMENT', message, cause === undefined ? undefined : { cause });
}

/** Formats a byte offset or value the way qemu's messages do: `0x1f000`. */
export function hex(value: number): string {
  return '0x' + value.toString(16);
}
