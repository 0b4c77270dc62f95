/**
 * The part of the WHATWG fetch API the adapter uses, typed structurally so this package needs
 * neither DOM nor Node types: the global `fetch` of Node 20, Deno and browsers fits `FetchLike`,
 * and so does a wrapper that adds authentication, retries or logging.
 */

/** What the adapter passes as the second argument of `fetch`. */
export interface FetchInit {
  method: 'GET' | 'HEAD';
  headers: Record<string, string>;
}

/** The part of a fetch `Response` the adapter reads. */
export interface FetchResponse {
  readonly status: number;
  readonly statusText: string;
  readonly headers: { get(name: string): string | null };
  /** Cancelled when the adapter does not want the body (an error status, an unusable answer). */
  readonly body: { cancel(reason?: unknown): Promise<void> } | null;
  arrayBuffer(): Promise<ArrayBuffer>;
}

/** A `fetch` function: `globalThis.fetch` or anything with its call shape. */
export type FetchLike = (url: string, init: FetchInit) => Promise<FetchResponse>;
