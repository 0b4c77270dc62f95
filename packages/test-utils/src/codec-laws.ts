import fc from 'fast-check';
import { expect } from 'vitest';

/**
 * The laws every codec obeys, written once and reused by every package's tests
 * (after fast-check's own ArbitraryAssertions helpers).
 */

export interface CodecLawOptions {
  numRuns?: number;
}

/** decode(encode(x)) deep-equals x for every generated value. */
export function assertDecodeEncode<T>(
  arb: fc.Arbitrary<T>,
  encode: (value: T) => Uint8Array,
  decode: (bytes: Uint8Array) => T,
  options: CodecLawOptions = {},
): void {
  fc.assert(
    fc.property(arb, (value) => {
      const bytes = encode(value);
      expect(decode(bytes)).toEqual(value);
    }),
    { numRuns: options.numRuns ?? 200 },
  );
}

/** encode(decode(bytes)) equals bytes for every valid encoding produced by `validBytes`. */
export function assertEncodeDecode(
  validBytes: fc.Arbitrary<Uint8Array>,
  decode: (bytes: Uint8Array) => unknown,
  encode: (value: never) => Uint8Array,
  options: CodecLawOptions = {},
): void {
  fc.assert(
    fc.property(validBytes, (bytes) => {
      const value = decode(bytes);
      expect(hexOf(encode(value as never))).toEqual(hexOf(bytes));
    }),
    { numRuns: options.numRuns ?? 200 },
  );
}

/**
 * Calling `run` on any byte string either returns or throws a Qcow2Error: never a
 * RangeError, TypeError or anything else.
 */
export function assertThrowsOnlyQcow2Error(
  bytes: fc.Arbitrary<Uint8Array>,
  run: (bytes: Uint8Array) => unknown,
  options: CodecLawOptions = {},
): void {
  fc.assert(
    fc.property(bytes, (input) => {
      try {
        run(input);
      } catch (error) {
        if (!isQcow2ErrorLike(error)) {
          throw new Error(`threw a non-Qcow2Error: ${String(error)}`, { cause: error });
        }
      }
    }),
    { numRuns: options.numRuns ?? 500 },
  );
}

/**
 * Mutations of a valid encoding: flipped bits, overwritten bytes, truncation and extension.
 * Used to feed decoders inputs that are close to valid, where bugs live.
 */
export function mutatedBytes(valid: fc.Arbitrary<Uint8Array>): fc.Arbitrary<Uint8Array> {
  return fc
    .tuple(
      valid,
      fc.array(
        fc.oneof(
          fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
          fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
          fc.record({ kind: fc.constant('ff' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 8 }) }),
        ),
        { minLength: 1, maxLength: 8 },
      ),
      fc.oneof(fc.constant(0), fc.integer({ min: -64, max: 64 })),
    )
    .map(([bytes, edits, resize]) => {
      let out = bytes.slice();
      for (const edit of edits) {
        if (out.length === 0) break;
        const at = edit.at % out.length;
        if (edit.kind === 'flip') out[at] = (out[at] ?? 0) ^ (1 << edit.bit);
        else if (edit.kind === 'set') out[at] = edit.value;
        else out.fill(0xff, at, Math.min(out.length, at + edit.length));
      }
      if (resize < 0) out = out.subarray(0, Math.max(0, out.length + resize));
      else if (resize > 0) {
        const grown = new Uint8Array(out.length + resize);
        grown.set(out);
        out = grown;
      }
      return out;
    });
}

/**
 * The same brand check as @qcow2/format's isQcow2Error, repeated here so that this helper package
 * does not depend on the package it tests (that would be a build cycle).
 */
export function isQcow2ErrorLike(value: unknown): value is Error & { code: string } {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as Record<symbol, unknown>)[Symbol.for('@qcow2/format/Qcow2Error')] === true &&
    typeof (value as { code?: unknown }).code === 'string'
  );
}

export function hexOf(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}
