import type { ConformanceCase, ConformanceContext } from './context.js';
import { storageConformanceCases } from './cases.js';

export interface ConformanceResult {
  readonly name: string;
  readonly status: 'passed' | 'failed' | 'skipped';
  /** What went wrong, for a failed case. */
  readonly error?: unknown;
  readonly durationMs: number;
}

export interface RunConformanceOptions {
  /** The cases to run; all of `storageConformanceCases` by default. */
  cases?: readonly ConformanceCase[];
}

/**
 * Runs the conformance cases one after another against the storages `ctx` makes and resolves to
 * one result per case (it never rejects). Usable from any runtime: Node, Deno, a browser page.
 */
export async function runConformance(
  ctx: ConformanceContext,
  options: RunConformanceOptions = {},
): Promise<ConformanceResult[]> {
  const results: ConformanceResult[] = [];
  for (const c of options.cases ?? storageConformanceCases) {
    const start = Date.now();
    if (!c.applies(ctx)) {
      results.push({ name: c.name, status: 'skipped', durationMs: 0 });
      continue;
    }
    try {
      await c.run(ctx);
      results.push({ name: c.name, status: 'passed', durationMs: Date.now() - start });
    } catch (error) {
      results.push({ name: c.name, status: 'failed', error, durationMs: Date.now() - start });
    }
  }
  return results;
}
