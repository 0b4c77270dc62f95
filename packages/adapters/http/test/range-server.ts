import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A local HTTP server on 127.0.0.1 for the adapter's tests: serves byte arrays with single-range
 * support, ETag and Last-Modified, logs every request, and misbehaves on demand.
 */
export interface ServedFile {
  /** Served bytes; a test may replace them (together with `etag`) to simulate a changed file. */
  bytes: Uint8Array;
  /** `null` sends no ETag. */
  etag: string | null;
  /** `null` sends no Last-Modified. */
  lastModified: string | null;
  /** False: ignore Range and answer 200 with the whole file, as servers without range support do. */
  ranges: boolean;
  /** Status to answer instead, by the 1-based number of the request to this path. */
  failWith?: (request: number) => number | undefined;
  /** Send the full Content-Length but only this many body bytes, then reset the connection. */
  truncateBodyTo?: number;
  /** Chunked answers (no Content-Length) that end cleanly this many bytes early. */
  shortChunkedBy?: number;
  /** 'hidden' omits Content-Range (as a browser sees a cross-origin server that does not expose it); 'unknown-total' sends `bytes a-b/*`. */
  contentRange: 'normal' | 'hidden' | 'unknown-total';
  /** False: HEAD answers 405. */
  head: boolean;
  /** Requests served for this path so far. */
  requests: number;
}

export interface LoggedRequest {
  readonly path: string;
  readonly method: string;
  readonly range: string | undefined;
  readonly headers: IncomingMessage['headers'];
}

export interface RangeServer {
  readonly origin: string;
  readonly log: LoggedRequest[];
  /** Serves `bytes` at `path` and returns the file's URL. */
  add(path: string, bytes: Uint8Array, behaviour?: Partial<Omit<ServedFile, 'bytes' | 'requests'>>): string;
  file(path: string): ServedFile;
  /** Requests logged for `path` (GET and HEAD). */
  requestsFor(path: string): LoggedRequest[];
  close(): Promise<void>;
}

function parseRange(header: string, size: number): { start: number; end: number } | 'unsatisfiable' | undefined {
  const match = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (match === null || (match[1] === '' && match[2] === '')) return undefined;
  let start: number;
  let end: number;
  if (match[1] === '') {
    const suffix = Number(match[2]);
    if (suffix === 0) return 'unsatisfiable';
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(match[1]);
    end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1);
    if (match[2] !== '' && Number(match[2]) < start) return undefined;
  }
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}

export async function startRangeServer(): Promise<RangeServer> {
  const files = new Map<string, ServedFile>();
  const log: LoggedRequest[] = [];

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? '/').split('?')[0] as string;
    const range = req.headers.range;
    log.push({ path, method: req.method ?? '', range, headers: req.headers });
    const file = files.get(path);
    if (file === undefined) {
      res.writeHead(404, 'Not Found').end();
      return;
    }
    file.requests++;
    const status = file.failWith?.(file.requests);
    if (status !== undefined) {
      res.writeHead(status, { 'content-type': 'text/plain' }).end(`failing with ${status}`);
      return;
    }
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
    if (file.etag !== null) headers['etag'] = file.etag;
    if (file.lastModified !== null) headers['last-modified'] = file.lastModified;
    if (file.ranges) headers['accept-ranges'] = 'bytes';
    const size = file.bytes.length;
    if (req.method === 'HEAD') {
      if (!file.head) {
        res.writeHead(405, 'Method Not Allowed').end();
        return;
      }
      res.writeHead(200, { ...headers, 'content-length': String(size) }).end();
      return;
    }
    if (req.method !== 'GET') {
      res.writeHead(405, 'Method Not Allowed').end();
      return;
    }
    let statusCode = 200;
    let body = file.bytes;
    if (file.ranges && range !== undefined) {
      const parsed = parseRange(range, size);
      if (parsed === 'unsatisfiable') {
        res.writeHead(416, 'Range Not Satisfiable', { ...headers, 'content-range': `bytes */${size}` }).end();
        return;
      }
      if (parsed !== undefined) {
        statusCode = 206;
        body = file.bytes.subarray(parsed.start, parsed.end + 1);
        if (file.contentRange === 'normal') headers['content-range'] = `bytes ${parsed.start}-${parsed.end}/${size}`;
        if (file.contentRange === 'unknown-total') headers['content-range'] = `bytes ${parsed.start}-${parsed.end}/*`;
      }
    }
    if (file.shortChunkedBy !== undefined) {
      res.writeHead(statusCode, headers);
      res.end(body.subarray(0, Math.max(0, body.length - file.shortChunkedBy)));
      return;
    }
    res.writeHead(statusCode, { ...headers, 'content-length': String(body.length) });
    if (file.truncateBodyTo !== undefined) {
      res.write(body.subarray(0, file.truncateBodyTo), () => res.destroy());
      return;
    }
    res.end(body);
  };

  const server = createServer(handle);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const origin = `http://127.0.0.1:${port}`;

  return {
    origin,
    log,
    add(path, bytes, behaviour = {}) {
      files.set(path, {
        bytes,
        etag: `"${path.replace(/\W/g, '')}-v1"`,
        lastModified: 'Tue, 01 Apr 2025 10:00:00 GMT',
        ranges: true,
        contentRange: 'normal',
        head: true,
        requests: 0,
        ...behaviour,
      });
      return origin + path;
    },
    file(path) {
      const file = files.get(path);
      if (file === undefined) throw new Error(`no file at ${path}`);
      return file;
    },
    requestsFor(path) {
      return log.filter((entry) => entry.path === path);
    },
    close() {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
