import { isQcow2Error, type Qcow2ErrorCode } from '@qcow2/format';

/**
 * The conformance suite's own assertions: plain Errors, no test framework, so the suite runs
 * under vitest, Deno's test runner or a page in headless Chromium alike.
 */

export function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

export function checkEqual<T>(actual: T, expected: T, what: string): void {
  if (!Object.is(actual, expected)) {
    throw new Error(`${what}: expected ${String(expected)}, got ${String(actual)}`);
  }
}

/** Compares two byte arrays, reporting the length or the first differing index. */
export function checkBytesEqual(actual: Uint8Array, expected: Uint8Array, what: string): void {
  if (actual.length !== expected.length) {
    throw new Error(`${what}: expected ${expected.length} bytes, got ${actual.length}`);
  }
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) {
      throw new Error(
        `${what}: bytes differ first at index ${i} (0x${i.toString(16)}): expected ${expected[i]}, got ${actual[i]}`,
      );
    }
  }
}

/** Checks that every byte of `bytes` is `value`, reporting the first that is not. */
export function checkFilled(bytes: Uint8Array, value: number, what: string): void {
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] !== value) {
      throw new Error(`${what}: expected every byte to be ${value}, byte ${i} (0x${i.toString(16)}) is ${bytes[i]}`);
    }
  }
}

/**
 * Checks that `call()` returns a promise that rejects with a Qcow2Error of `code`. A synchronous
 * throw is a failure too: storage methods reject, they do not throw.
 */
export async function checkRejects(call: () => Promise<unknown>, code: Qcow2ErrorCode, what: string): Promise<void> {
  let pending: Promise<unknown>;
  try {
    pending = call();
  } catch (error) {
    throw new Error(`${what}: threw synchronously instead of returning a rejected promise: ${describe(error)}`);
  }
  check(pending !== null && typeof (pending as { then?: unknown }).then === 'function', `${what}: did not return a promise`);
  let settled: { ok: true; value: unknown } | { ok: false; error: unknown };
  try {
    settled = { ok: true, value: await pending };
  } catch (error) {
    settled = { ok: false, error };
  }
  if (settled.ok) throw new Error(`${what}: expected a rejection with code ${code}, but it resolved`);
  const { error } = settled;
  if (!isQcow2Error(error)) throw new Error(`${what}: expected a Qcow2Error ${code}, got ${describe(error)}`);
  if (error.code !== code) {
    throw new Error(`${what}: expected code ${code}, got ${error.code} (${error.message})`);
  }
}

function describe(error: unknown): string {
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}
