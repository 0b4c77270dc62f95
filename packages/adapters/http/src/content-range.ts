/** A parsed `Content-Range` header of a 206 or 416 answer. */
export interface ContentRange {
  /** First byte of the range, or undefined for the unsatisfied form `bytes *\/size`. */
  readonly start: number | undefined;
  /** Last byte of the range (inclusive), or undefined for `bytes *\/size`. */
  readonly end: number | undefined;
  /** Size of the whole resource, or undefined when the server sent `*`. */
  readonly size: number | undefined;
}

const RANGE = /^\s*bytes\s+(?:(\d+)-(\d+)|\*)\/(\d+|\*)\s*$/i;

function integer(text: string | undefined): number | undefined {
  if (text === undefined || text === '*') return undefined;
  const value = Number(text);
  return Number.isSafeInteger(value) ? value : Number.NaN;
}

/**
 * Parses `bytes 0-65535/1048576`, `bytes 0-65535/*` or `bytes *\/1048576` (RFC 9110 §14.4).
 * Returns undefined for anything else, including numbers beyond 2^53 and `start > end`.
 */
export function parseContentRange(header: string): ContentRange | undefined {
  const match = RANGE.exec(header);
  if (match === null) return undefined;
  const start = integer(match[1]);
  const end = integer(match[2]);
  const size = integer(match[3]);
  if (Number.isNaN(start) || Number.isNaN(end) || Number.isNaN(size)) return undefined;
  if (start !== undefined && end !== undefined && start > end) return undefined;
  if (end !== undefined && size !== undefined && end >= size) return undefined;
  return { start, end, size };
}

/**
 * Parses a `Content-Length` header: a non-negative safe integer, else undefined. (A header
 * repeated by the server arrives as `10, 10`: accepted when every value agrees.)
 */
export function parseContentLength(header: string | null): number | undefined {
  if (header === null) return undefined;
  const values = header.split(',').map((part) => part.trim());
  const first = values[0];
  if (first === undefined || !/^\d+$/.test(first) || values.some((v) => v !== first)) return undefined;
  const value = Number(first);
  return Number.isSafeInteger(value) ? value : undefined;
}
