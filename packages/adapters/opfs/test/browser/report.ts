/**
 * The page side of the harness (runs in the browser): `report(value)` POSTs JSON to the harness,
 * and `describeError` turns any thrown value (a Qcow2Error above all) into plain JSON.
 */
import { isQcow2Error, type ConformanceResult } from '@qcow2/storage';

export interface ErrorJson {
  readonly name: string;
  readonly message: string;
  /** The Qcow2Error code, when it is one (by brand). */
  readonly code?: string;
  readonly isQcow2Error: boolean;
}

export interface ResultJson {
  readonly name: string;
  readonly status: 'passed' | 'failed' | 'skipped';
  readonly error?: ErrorJson;
}

export function describeError(error: unknown): ErrorJson {
  if (isQcow2Error(error)) return { name: error.name, message: error.message, code: error.code, isQcow2Error: true };
  if (error instanceof Error) return { name: error.name, message: `${error.message}\n${error.stack ?? ''}`, isQcow2Error: false };
  return { name: typeof error, message: String(error), isQcow2Error: false };
}

export function resultsJson(results: readonly ConformanceResult[]): ResultJson[] {
  return results.map((r) =>
    r.status === 'failed' ? { name: r.name, status: r.status, error: describeError(r.error) } : { name: r.name, status: r.status },
  );
}

/** Resolves to the error `call` rejects (or throws) with, described; `undefined` when it resolves. */
export async function errorOf(call: () => Promise<unknown>): Promise<ErrorJson | undefined> {
  try {
    await call();
    return undefined;
  } catch (error) {
    return describeError(error);
  }
}

/** Sends the page's report to the harness. */
export async function report(value: unknown): Promise<void> {
  await fetch('/__report', { method: 'POST', body: JSON.stringify(value), headers: { 'Content-Type': 'application/json' } });
}

/** Runs `body` and reports what it returns, or `{ fatal }` with the error it throws. */
export async function runAndReport(body: () => Promise<unknown>): Promise<void> {
  let value: unknown;
  try {
    value = await body();
  } catch (error) {
    value = { fatal: describeError(error) };
  }
  await report(value);
}
