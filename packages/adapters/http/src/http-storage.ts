import { checkBytes, checkRange, closedError, Qcow2Error, readOnlyError, type Storage } from '@qcow2/storage';
import { BlockCache } from './block-cache.js';
import { parseContentLength, parseContentRange } from './content-range.js';
import type { FetchLike, FetchResponse } from './fetch-types.js';

export interface HttpStorageOptions {
  /** The fetch function; default `globalThis.fetch`. */
  fetch?: FetchLike;
  /** Headers sent with every request (e.g. `authorization`); `range` is the adapter's own. */
  headers?: Record<string, string>;
  /**
   * Bytes per block: the unit of caching and of Range requests. An integer in [512, 16 MiB];
   * default 64 KiB (qcow2's default cluster size).
   */
  blockSize?: number;
  /** Largest total of cached blocks, in bytes; 0 turns the cache off. Default 16 MiB. */
  cacheBytes?: number;
  /**
   * Largest single Range request, in bytes: missing neighbouring blocks wanted at the same time
   * are fetched together up to this size. Rounded down to whole blocks, at least one.
   * Default 2 MiB.
   */
  maxCoalesce?: number;
  /**
   * Read-ahead for sequential reads, in bytes (qemu's curl `readahead`, adaptive as Linux's): a
   * read that starts where a recent read ended keeps a window of bytes after its end cached or in
   * flight, fetched in the background; the window starts at the read's size and doubles with each
   * read that continues the stream, up to this many bytes and half the cache. Random reads never
   * trigger it; 0 turns it off. Default 2 MiB.
   */
  readAhead?: number;
}

/** Counters since the storage was opened (the opening requests included). */
export interface HttpStorageStats {
  /** HTTP requests sent (GET and HEAD). */
  readonly requests: number;
  /** Body bytes received. */
  readonly bytesFetched: number;
  /** Blocks read from the cache. */
  readonly blockHits: number;
  /** Blocks that were fetched, or joined a fetch already in flight. */
  readonly blockMisses: number;
}

/** A read-only Storage over one HTTP resource. */
export interface HttpStorage extends Storage {
  readonly readOnly: true;
  readonly canDiscard: false;
  /** The URL as given. */
  readonly url: string;
  /** Request and cache counters. */
  stats(): HttpStorageStats;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const DEFAULT_BLOCK_SIZE = 64 * KiB;
const DEFAULT_CACHE_BYTES = 16 * MiB;
const DEFAULT_MAX_COALESCE = 2 * MiB;
const DEFAULT_READ_AHEAD = 2 * MiB;
/** How many recent read ends a new read is compared with to recognize a sequential stream. */
const STREAMS = 4;
const MIN_BLOCK_SIZE = 512;
const MAX_BLOCK_SIZE = 16 * MiB;
/** Requests in flight at once; more wait (browsers allow 6 connections per host on HTTP/1.1). */
const MAX_REQUESTS = 6;

/**
 * Opens `url` as a read-only Storage read with HTTP Range requests through `fetch` (Node 20,
 * Deno, browsers). The first request, `Range: bytes=0-(blockSize-1)`, learns the size (from
 * `Content-Range`, else from `Content-Length` of a HEAD request), checks that the server honours
 * ranges and caches block 0 (where an image's header is). Reads are served from an LRU cache of
 * whole blocks; missing neighbouring blocks wanted in the same tick are fetched with one Range
 * request, and a block already in flight is awaited rather than fetched again.
 *
 * The resource must not change while it is open: every answer's `ETag` (else `Last-Modified`)
 * and size must match the first. Rejects only with Qcow2Error: 'NOT_FOUND' for 404/410,
 * 'UNSUPPORTED' for a server that answers 200 to a Range request (no range support), 'IO' for
 * other HTTP errors (status in the message), network failures (`cause` kept), short or overlong
 * bodies and a resource that changed; 'INVALID_ARGUMENT' for bad options.
 */
export async function createHttpStorage(url: string, options: HttpStorageOptions = {}): Promise<HttpStorage> {
  if (typeof url !== 'string' || url === '') {
    throw new Qcow2Error('INVALID_ARGUMENT', `http storage: url ${JSON.stringify(url)} is not a URL`);
  }
  const where = `http storage ${displayUrl(url)}`;
  const blockSize = integerOption(where, 'blockSize', options.blockSize, DEFAULT_BLOCK_SIZE, MIN_BLOCK_SIZE, MAX_BLOCK_SIZE);
  const cacheBytes = integerOption(where, 'cacheBytes', options.cacheBytes, DEFAULT_CACHE_BYTES, 0, Number.MAX_SAFE_INTEGER);
  const maxCoalesce = integerOption(where, 'maxCoalesce', options.maxCoalesce, DEFAULT_MAX_COALESCE, 1, Number.MAX_SAFE_INTEGER);
  const readAhead = integerOption(where, 'readAhead', options.readAhead, DEFAULT_READ_AHEAD, 0, Number.MAX_SAFE_INTEGER);
  const fetchOption = options.fetch;
  if (fetchOption !== undefined && typeof fetchOption !== 'function') {
    throw new Qcow2Error('INVALID_ARGUMENT', `${where}: options.fetch is not a function`);
  }
  const globalFetch = (globalThis as { fetch?: FetchLike }).fetch;
  if (fetchOption === undefined && typeof globalFetch !== 'function') {
    throw new Qcow2Error('UNSUPPORTED', `${where}: this runtime has no global fetch; pass options.fetch`);
  }
  // Called unbound: a browser's fetch throws when `this` is some other object.
  const fetch: FetchLike = fetchOption ?? ((u, init) => (globalThis as unknown as { fetch: FetchLike }).fetch(u, init));
  const headers = requestHeaders(where, options.headers);
  const client = new HttpClient(url, where, fetch, headers);
  const probe = await client.probe(blockSize);
  const file = new HttpFile(client, probe.size, blockSize, Math.max(1, Math.floor(maxCoalesce / blockSize)), cacheBytes, readAhead);
  if (probe.block0 !== undefined) file.seed(0, probe.block0);
  return file;
}

function integerOption(where: string, name: string, value: unknown, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new Qcow2Error(
      'INVALID_ARGUMENT',
      `${where}: options.${name} ${typeof value === 'number' ? String(value) : typeof value} is not an integer in [${min}, ${max}]`,
    );
  }
  return value;
}

function requestHeaders(where: string, given: unknown): Record<string, string> {
  const headers: Record<string, string> = { 'accept-encoding': 'identity' };
  if (given === undefined) return headers;
  if (typeof given !== 'object' || given === null) {
    throw new Qcow2Error('INVALID_ARGUMENT', `${where}: options.headers is not an object of strings`);
  }
  for (const [name, value] of Object.entries(given)) {
    if (typeof value !== 'string') {
      throw new Qcow2Error('INVALID_ARGUMENT', `${where}: options.headers[${JSON.stringify(name)}] is not a string`);
    }
    const key = name.toLowerCase();
    if (key !== 'range') headers[key] = value;
  }
  return headers;
}

/** The URL for messages: without user info, query or fragment, which may carry credentials. */
export function displayUrl(url: string): string {
  let shown = url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/?#]*@/i, '$1');
  const cut = shown.search(/[?#]/);
  if (cut >= 0) shown = shown.slice(0, cut) + (shown[cut] === '?' ? '?…' : '');
  return shown;
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const cause = (error as { cause?: unknown }).cause;
    return cause instanceof Error && cause.message !== '' ? `${error.message} (${cause.message})` : error.message;
  }
  return String(error);
}

function hex(value: number): string {
  return '0x' + value.toString(16);
}

/** Strips the weak prefix: `W/"x"` and `"x"` name the same version for our purpose. */
function opaqueTag(etag: string | null): string | null {
  return etag === null ? null : etag.replace(/^W\//, '');
}

interface Probe {
  size: number;
  /** Block 0 when the probe fetched it. */
  block0: Uint8Array | undefined;
}

/**
 * The HTTP side: sends requests, checks each answer against the first (validators and size),
 * turns failures into Qcow2Errors, counts requests and bytes.
 */
class HttpClient {
  readonly url: string;
  readonly where: string;
  readonly #fetch: FetchLike;
  readonly #headers: Record<string, string>;
  #etag: string | null = null;
  #lastModified: string | null = null;
  #size = -1;
  requests = 0;
  bytesFetched = 0;

  constructor(url: string, where: string, fetch: FetchLike, headers: Record<string, string>) {
    this.url = url;
    this.where = where;
    this.#fetch = fetch;
    this.#headers = headers;
  }

  async #send(method: 'GET' | 'HEAD', range: string | undefined, what: string): Promise<FetchResponse> {
    const headers = range === undefined ? this.#headers : { ...this.#headers, range };
    this.requests++;
    try {
      const fetch = this.#fetch;
      const response = await fetch(this.url, { method, headers });
      if (typeof response !== 'object' || response === null || typeof response.status !== 'number') {
        throw new TypeError('fetch resolved to something that is not a Response');
      }
      return response;
    } catch (cause) {
      throw new Qcow2Error('IO', `${this.where}: ${what}: request failed: ${describe(cause)}`, { cause });
    }
  }

  /** Reads the whole body, which must be `expected` bytes long. */
  async #body(response: FetchResponse, expected: number, what: string): Promise<Uint8Array> {
    let body: Uint8Array;
    try {
      body = new Uint8Array(await response.arrayBuffer());
    } catch (cause) {
      throw new Qcow2Error('IO', `${this.where}: ${what}: reading the body failed: ${describe(cause)}`, { cause });
    }
    this.bytesFetched += body.length;
    if (body.length < expected) {
      throw new Qcow2Error('IO', `${this.where}: ${what}: short body: ${body.length} of ${expected} bytes`);
    }
    if (body.length > expected) {
      throw new Qcow2Error('IO', `${this.where}: ${what}: body of ${body.length} bytes, expected ${expected}`);
    }
    return body;
  }

  #discardBody(response: FetchResponse): void {
    try {
      response.body?.cancel().catch(() => undefined);
    } catch {
      // A body that cannot be cancelled is left to the garbage collector.
    }
  }

  /** The error of an answer that is neither 206 nor an acceptable 200. */
  #statusError(response: FetchResponse, what: string): Qcow2Error {
    this.#discardBody(response);
    const status = `${response.status}${response.statusText ? ' ' + response.statusText : ''}`;
    if (response.status === 404 || response.status === 410) {
      return new Qcow2Error('NOT_FOUND', `${this.where}: ${what}: server answered ${status}`);
    }
    if (response.status === 416) {
      return new Qcow2Error(
        'IO',
        `${this.where}: ${what}: server answered ${status}: the resource is shorter than the ${this.#size} bytes it had when opened (it changed)`,
      );
    }
    return new Qcow2Error('IO', `${this.where}: ${what}: server answered ${status}`);
  }

  #unsupportedRanges(response: FetchResponse, what: string): Qcow2Error {
    this.#discardBody(response);
    return new Qcow2Error(
      'UNSUPPORTED',
      `${this.where}: ${what}: server answered ${response.status} instead of 206 Partial Content: it does not support Range requests`,
    );
  }

  /** Rejects an answer from a different version of the resource than the first answer. */
  #checkSame(response: FetchResponse, what: string): void {
    const etag = response.headers.get('etag');
    const lastModified = response.headers.get('last-modified');
    let changed: string | undefined;
    if (this.#etag !== null && etag !== null) {
      if (opaqueTag(etag) !== opaqueTag(this.#etag)) changed = `ETag ${this.#etag} became ${etag}`;
    } else if (this.#lastModified !== null && lastModified !== null && lastModified !== this.#lastModified) {
      changed = `Last-Modified ${this.#lastModified} became ${lastModified}`;
    }
    if (changed !== undefined) {
      this.#discardBody(response);
      throw new Qcow2Error('IO', `${this.where}: ${what}: the resource changed since it was opened (${changed})`);
    }
  }

  #remember(response: FetchResponse): void {
    this.#etag = response.headers.get('etag');
    this.#lastModified = response.headers.get('last-modified');
  }

  /**
   * The opening request: `bytes=0-(blockSize-1)`. Learns the size and the validators and keeps
   * block 0. A HEAD request is the fallback when the 206 has no readable total size (a
   * cross-origin server that does not expose Content-Range, or `bytes 0-N/*`).
   */
  async probe(blockSize: number): Promise<Probe> {
    const what = `open: GET bytes=0-${blockSize - 1}`;
    const response = await this.#send('GET', `bytes=0-${blockSize - 1}`, what);
    this.#remember(response);
    if (response.status === 206) {
      const header = response.headers.get('content-range');
      const range = header === null ? undefined : parseContentRange(header);
      if (header !== null && (range === undefined || range.start !== 0 || range.end === undefined)) {
        this.#discardBody(response);
        throw new Qcow2Error('IO', `${this.where}: ${what}: unusable Content-Range ${JSON.stringify(header)}`);
      }
      let size = range?.size;
      if (size === undefined) {
        this.#discardBody(response);
        size = await this.#sizeFromHead();
        this.#size = size;
        return { size, block0: undefined };
      }
      this.#size = size;
      const end = range?.end ?? Math.min(blockSize, size) - 1;
      if (end !== Math.min(blockSize, size) - 1) {
        this.#discardBody(response);
        throw new Qcow2Error('IO', `${this.where}: ${what}: server answered bytes 0-${end} of ${size}`);
      }
      return { size, block0: await this.#body(response, end + 1, what) };
    }
    if (response.status === 200) {
      // No range support, but the whole resource fits in the first block: it is all there.
      const length = parseContentLength(response.headers.get('content-length'));
      if (length === undefined || length > blockSize) throw this.#unsupportedRanges(response, what);
      this.#size = length;
      return { size: length, block0: await this.#body(response, length, what) };
    }
    if (response.status === 416) {
      // `bytes=0-…` is unsatisfiable only for an empty resource.
      const header = response.headers.get('content-range');
      const range = header === null ? undefined : parseContentRange(header);
      this.#discardBody(response);
      if (range !== undefined && range.size === 0) {
        this.#size = 0;
        return { size: 0, block0: undefined };
      }
      throw new Qcow2Error(
        'IO',
        `${this.where}: ${what}: server answered 416 Range Not Satisfiable${header === null ? '' : ` with Content-Range ${JSON.stringify(header)}`}`,
      );
    }
    throw this.#statusError(response, what);
  }

  async #sizeFromHead(): Promise<number> {
    const what = 'open: HEAD';
    const response = await this.#send('HEAD', undefined, what);
    if (response.status !== 200) throw this.#statusError(response, what);
    this.#checkSame(response, what);
    this.#discardBody(response);
    const size = parseContentLength(response.headers.get('content-length'));
    if (size === undefined) {
      throw new Qcow2Error(
        'UNSUPPORTED',
        `${this.where}: ${what}: the size is unknown (no total in Content-Range, no Content-Length)`,
      );
    }
    return size;
  }

  /** Bytes [start, end) of the resource, which lie inside the size seen when opening. */
  async fetchRange(start: number, end: number): Promise<Uint8Array> {
    const range = `bytes=${start}-${end - 1}`;
    const what = `GET ${range} (${end - start} bytes at ${hex(start)})`;
    const response = await this.#send('GET', range, what);
    if (response.status === 200) {
      // Servers may ignore a Range that covers the whole resource; the answer is the same bytes.
      if (start !== 0 || end !== this.#size) throw this.#unsupportedRanges(response, what);
      this.#checkSame(response, what);
      return this.#body(response, end, what);
    }
    if (response.status !== 206) throw this.#statusError(response, what);
    this.#checkSame(response, what);
    const header = response.headers.get('content-range');
    if (header !== null) {
      const got = parseContentRange(header);
      if (got === undefined || got.start === undefined) {
        this.#discardBody(response);
        throw new Qcow2Error('IO', `${this.where}: ${what}: unusable Content-Range ${JSON.stringify(header)}`);
      }
      if (got.size !== undefined && got.size !== this.#size) {
        this.#discardBody(response);
        throw new Qcow2Error(
          'IO',
          `${this.where}: ${what}: the resource changed since it was opened (size ${this.#size} became ${got.size})`,
        );
      }
      if (got.start !== start || got.end !== end - 1) {
        this.#discardBody(response);
        throw new Qcow2Error('IO', `${this.where}: ${what}: server answered ${JSON.stringify(header)}`);
      }
    }
    return this.#body(response, end - start, what);
  }
}

interface Waiter {
  resolve(block: Uint8Array): void;
  reject(error: unknown): void;
}

const ignore = (): void => undefined;

class HttpFile implements HttpStorage {
  readonly readOnly = true as const;
  readonly canDiscard = false as const;
  readonly url: string;
  readonly #client: HttpClient;
  readonly #size: number;
  readonly #blockSize: number;
  readonly #maxBlocks: number;
  readonly #cache: BlockCache;
  /** Blocks being fetched (or about to be), shared by every read that wants them. */
  readonly #inflight = new Map<number, Promise<Uint8Array>>();
  /** Blocks wanted since the last dispatch, not requested yet. */
  #wanted = new Map<number, Waiter>();
  #dispatchScheduled = false;
  #active = 0;
  readonly #queue: (() => void)[] = [];
  #closed = false;
  #blockHits = 0;
  #blockMisses = 0;
  /** Read-ahead limit in blocks (0: off). */
  readonly #readAheadBlocks: number;
  /**
   * Recent reads, most recent last: where each ended (a read starting there continues it) and the
   * stream's read-ahead window in blocks.
   */
  readonly #streams: { end: number; window: number }[] = [];

  constructor(client: HttpClient, size: number, blockSize: number, maxBlocks: number, cacheBytes: number, readAhead: number) {
    this.#client = client;
    this.url = client.url;
    this.#size = size;
    this.#blockSize = blockSize;
    this.#maxBlocks = maxBlocks;
    this.#cache = new BlockCache(cacheBytes);
    // Never more than half the cache, so read-ahead cannot evict the blocks being read.
    this.#readAheadBlocks = Math.min(Math.floor(readAhead / blockSize), Math.floor(cacheBytes / 2 / blockSize));
  }

  /** Puts a block fetched while opening into the cache. */
  seed(index: number, block: Uint8Array): void {
    this.#cache.set(index, block);
  }

  stats(): HttpStorageStats {
    return {
      requests: this.#client.requests,
      bytesFetched: this.#client.bytesFetched,
      blockHits: this.#blockHits,
      blockMisses: this.#blockMisses,
    };
  }

  async read(dst: Uint8Array, offset: number): Promise<number> {
    this.#open('read');
    checkBytes(this.#what('read'), dst);
    checkRange(this.#what('read'), offset, dst.length);
    if (dst.length === 0 || offset >= this.#size) return 0;
    const end = Math.min(offset + dst.length, this.#size);
    const B = this.#blockSize;
    const first = Math.floor(offset / B);
    const last = Math.floor((end - 1) / B);
    // Ask for every block before awaiting any, so that they are requested together.
    const blocks: (Uint8Array | Promise<Uint8Array>)[] = [];
    for (let index = first; index <= last; index++) blocks.push(this.#block(index));
    this.#readAhead(offset, end, last);
    for (let index = first; index <= last; index++) {
      let block = blocks[index - first] as Uint8Array | Promise<Uint8Array>;
      if (!(block instanceof Uint8Array)) {
        block = await block;
        this.#open('read');
      }
      const blockStart = index * B;
      const from = Math.max(offset, blockStart);
      const to = Math.min(end, blockStart + block.length);
      dst.set(block.subarray(from - blockStart, to - blockStart), from - offset);
    }
    return end - offset;
  }

  async write(_src: Uint8Array, _offset: number): Promise<void> {
    this.#open('write');
    throw readOnlyError(this.#what('write'));
  }

  async size(): Promise<number> {
    this.#open('size');
    return this.#size;
  }

  async truncate(_size: number): Promise<void> {
    this.#open('truncate');
    throw readOnlyError(this.#what('truncate'));
  }

  async flush(): Promise<void> {
    this.#open('flush');
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#cache.clear();
  }

  /**
   * For a read of [offset, end) that continues a recent one, keeps a read-ahead window of blocks
   * after `last` cached or in flight, as Linux's readahead does: the window starts at the read's
   * size and doubles with each read that continues the stream (up to the read-ahead limit), and
   * the missing part is fetched only once less than half the window is ahead, so read-ahead goes
   * out in requests of at least half a window however small the reads. Issued after this tick's
   * dispatch so the read's own blocks are asked for first.
   */
  #readAhead(offset: number, end: number, last: number): void {
    const streams = this.#streams;
    const at = streams.findIndex((s) => s.end === offset);
    const B = this.#blockSize;
    const readBlocks = Math.ceil((end - offset) / B);
    let window = 0;
    if (at >= 0) {
      window = Math.min(this.#readAheadBlocks, Math.max(streams[at]!.window * 2, readBlocks));
      streams.splice(at, 1);
    } else if (streams.length >= STREAMS) {
      streams.shift();
    }
    streams.push({ end, window });
    if (window === 0) return;
    const lastBlock = Math.ceil(this.#size / B) - 1;
    let ahead = 0;
    while (ahead < window && last + 1 + ahead <= lastBlock && this.#has(last + 1 + ahead)) ahead++;
    if (ahead * 2 > window) return;
    const from = last + 1 + ahead;
    const count = Math.min(window - ahead, lastBlock - from + 1);
    if (count <= 0) return;
    // A microtask queued after the dispatch this read scheduled, so it runs after it.
    void Promise.resolve().then(() => {
      if (this.#closed) return;
      let index = from;
      const stop = from + count;
      while (index < stop) {
        // Skip what is cached or already in flight; fetch each missing run with one request.
        if (this.#has(index)) {
          index++;
          continue;
        }
        const waiters: Waiter[] = [];
        const first = index;
        while (index < stop && waiters.length < this.#maxBlocks && !this.#has(index)) {
          const promise = new Promise<Uint8Array>((resolve, reject) => {
            waiters.push({ resolve, reject });
          });
          promise.catch(ignore); // nobody may ever read it; a failure is retried by a real read
          this.#inflight.set(index, promise);
          index++;
        }
        void this.#fetchRun(first, waiters);
      }
    });
  }

  /** The block is cached or being fetched. */
  #has(index: number): boolean {
    return this.#cache.has(index) || this.#inflight.has(index);
  }

  /** A cached block, or the promise of one: joined if in flight, else queued for the next dispatch. */
  #block(index: number): Uint8Array | Promise<Uint8Array> {
    const cached = this.#cache.get(index);
    if (cached !== undefined) {
      this.#blockHits++;
      return cached;
    }
    this.#blockMisses++;
    const inflight = this.#inflight.get(index);
    if (inflight !== undefined) return inflight;
    let waiter: Waiter | undefined;
    const promise = new Promise<Uint8Array>((resolve, reject) => {
      waiter = { resolve, reject };
    });
    promise.catch(ignore); // a reader that gave up must not leave an unhandled rejection
    this.#inflight.set(index, promise);
    this.#wanted.set(index, waiter as Waiter);
    if (!this.#dispatchScheduled) {
      this.#dispatchScheduled = true;
      void Promise.resolve().then(() => this.#dispatch());
    }
    return promise;
  }

  /** Turns the blocks wanted in this tick into runs of neighbours, one Range request each. */
  #dispatch(): void {
    this.#dispatchScheduled = false;
    const wanted = this.#wanted;
    this.#wanted = new Map();
    const indices = [...wanted.keys()].sort((a, b) => a - b);
    let i = 0;
    while (i < indices.length) {
      const start = indices[i] as number;
      let count = 1;
      while (i + count < indices.length && count < this.#maxBlocks && indices[i + count] === start + count) count++;
      const waiters = indices.slice(i, i + count).map((index) => wanted.get(index) as Waiter);
      void this.#fetchRun(start, waiters);
      i += count;
    }
  }

  async #fetchRun(first: number, waiters: Waiter[]): Promise<void> {
    const B = this.#blockSize;
    const start = first * B;
    const end = Math.min((first + waiters.length) * B, this.#size);
    if (this.#active >= MAX_REQUESTS) await new Promise<void>((resolve) => this.#queue.push(resolve));
    this.#active++;
    try {
      const bytes = await this.#client.fetchRange(start, end);
      for (let k = 0; k < waiters.length; k++) {
        const block = bytes.subarray(k * B, Math.min((k + 1) * B, bytes.length));
        this.#inflight.delete(first + k);
        // A block that is a view into a larger response is copied, so the cache's byte count is
        // the memory it holds.
        if (!this.#closed && block.length <= this.#cache.capacity) {
          this.#cache.set(first + k, waiters.length === 1 ? block : block.slice());
        }
        (waiters[k] as Waiter).resolve(block);
      }
    } catch (error) {
      for (let k = 0; k < waiters.length; k++) {
        this.#inflight.delete(first + k);
        (waiters[k] as Waiter).reject(error);
      }
    } finally {
      this.#active--;
      this.#queue.shift()?.();
    }
  }

  #what(op: string): string {
    return `${this.#client.where}: ${op}`;
  }

  #open(op: string): void {
    if (this.#closed) throw closedError(this.#what(op));
  }
}
