/**
 * A periodic background task that never keeps its runtime alive and never overlaps itself:
 * the next wait starts only when the task has settled. Uses the global `setTimeout` of whatever
 * runtime it runs in (looked up at each call, so test fake timers apply), unref'd where the
 * runtime allows it (Node's `Timeout.unref()`, Deno's `Deno.unrefTimer(id)`).
 */

/** Largest delay every runtime's setTimeout honours (2³¹−1 ms); longer waits are chained. */
const MAX_TIMEOUT_MS = 0x7fff_ffff;

interface TimerGlobals {
  setTimeout?: (callback: () => void, ms: number) => unknown;
  clearTimeout?: (handle: unknown) => void;
  Deno?: { unrefTimer?: (id: number) => void };
}

export interface Ticker {
  /** Cancels the pending wait; a task already running finishes but is not rescheduled. */
  stop(): void;
}

function unref(handle: unknown, globals: TimerGlobals): void {
  if (typeof handle === 'object' && handle !== null) {
    const maybe = handle as { unref?: () => unknown };
    if (typeof maybe.unref === 'function') maybe.unref();
  } else if (typeof handle === 'number' && typeof globals.Deno?.unrefTimer === 'function') {
    globals.Deno.unrefTimer(handle);
  }
}

/** Runs `task` every `intervalMs` milliseconds (after it settles) until stopped. */
export function startTicker(intervalMs: number, task: () => Promise<void>): Ticker {
  const globals = globalThis as TimerGlobals;
  let stopped = false;
  let handle: unknown;

  const wait = (remaining: number): void => {
    const schedule = globals.setTimeout;
    if (stopped || schedule === undefined) return;
    const delay = Math.min(remaining, MAX_TIMEOUT_MS);
    handle = schedule(() => {
      handle = undefined;
      if (stopped) return;
      if (remaining > delay) {
        wait(remaining - delay);
        return;
      }
      const again = (): void => wait(intervalMs);
      task().then(again, again);
    }, delay);
    unref(handle, globals);
  };

  wait(intervalMs);
  return {
    stop(): void {
      stopped = true;
      if (handle !== undefined) globals.clearTimeout?.(handle);
      handle = undefined;
    },
  };
}
