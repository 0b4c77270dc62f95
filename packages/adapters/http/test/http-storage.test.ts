import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isQcow2Error, type Qcow2Error } from '@qcow2/storage';
import { createHttpStorage, type FetchLike } from '@qcow2/storage-http';
import { startRangeServer, type RangeServer } from './range-server.js';

let server: RangeServer;
beforeAll(async () => {
  server = await startRangeServer();
});
afterAll(() => server.close());

let counter = 0;
const freshPath = (): string => `/file-${counter++}.bin`;

function bytes(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed * 2654435761 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

async function rejection(promise: Promise<unknown>): Promise<Qcow2Error> {
  try {
    await promise;
  } catch (error) {
    expect(isQcow2Error(error), String(error)).toBe(true);
    return error as Qcow2Error;
  }
  throw new Error('expected a rejection');
}

const KiB = 1024;

/** Byte equality without vitest's element-by-element deep diff, which is slow on large arrays. */
function expectBytes(actual: Uint8Array | undefined, expected: Uint8Array): void {
  expect(actual).toBeInstanceOf(Uint8Array);
  const a = actual as Uint8Array;
  expect(a.length, 'length').toBe(expected.length);
  const at = a.findIndex((byte, i) => byte !== expected[i]);
  expect(at, 'first differing byte').toBe(-1);
}

/** Serves `data` at a fresh path; returns the path, its URL and a function listing its GET ranges. */
function serve(data: Uint8Array, behaviour?: Parameters<RangeServer['add']>[2]) {
  const path = freshPath();
  const url = server.add(path, data, behaviour);
  const gets = (): (string | undefined)[] =>
    server.requestsFor(path).filter((r) => r.method === 'GET').map((r) => r.range);
  return { path, url, gets };
}

describe('createHttpStorage: opening', () => {
  it('learns the size from Content-Range of the first range request and keeps block 0', async () => {
    const data = bytes(300 * KiB);
    const { url, gets } = serve(data);
    const s = await createHttpStorage(url);
    expect(await s.size()).toBe(data.length);
    expect(gets()).toEqual(['bytes=0-65535']);
    const dst = new Uint8Array(4096);
    expect(await s.read(dst, 100)).toBe(4096);
    expectBytes(dst, data.subarray(100, 4196));
    expect(gets()).toHaveLength(1); // block 0 came with the opening request
    expect(s.readOnly).toBe(true);
    expect(s.canDiscard).toBe(false);
    expect(s.url).toBe(url);
    await s.close();
  });

  it('falls back to HEAD Content-Length when the 206 has no readable Content-Range or an unknown total', async () => {
    for (const contentRange of ['hidden', 'unknown-total'] as const) {
      const data = bytes(200 * KiB, 2);
      const { path, url } = serve(data, { contentRange });
      const s = await createHttpStorage(url);
      expect(await s.size()).toBe(data.length);
      expect(server.requestsFor(path).map((r) => r.method)).toEqual(['GET', 'HEAD']);
      const dst = new Uint8Array(data.length);
      expect(await s.read(dst, 0)).toBe(data.length);
      expectBytes(dst, data);
      await s.close();
    }
  });

  it("an unknown size (no total, HEAD refused) rejects; a 404 rejects 'NOT_FOUND'", async () => {
    const { url } = serve(bytes(100 * KiB), { contentRange: 'hidden', head: false });
    const e = await rejection(createHttpStorage(url));
    expect(e.code).toBe('IO');
    expect(e.message).toContain('405');
    const missing = await rejection(createHttpStorage(`${server.origin}/nothing-here.bin`));
    expect(missing.code).toBe('NOT_FOUND');
    expect(missing.message).toContain('404');
    expect(missing.message).toContain(`${server.origin}/nothing-here.bin`);
  });

  it('an empty resource (416 with bytes */0) opens with size 0', async () => {
    const { url } = serve(new Uint8Array(0));
    const s = await createHttpStorage(url);
    expect(await s.size()).toBe(0);
    expect(await s.read(new Uint8Array(10), 0)).toBe(0);
    await s.close();
  });

  it("a server without range support (200 to a Range request) rejects 'UNSUPPORTED' naming the status", async () => {
    const { url } = serve(bytes(200 * KiB), { ranges: false });
    const e = await rejection(createHttpStorage(url));
    expect(e.code).toBe('UNSUPPORTED');
    expect(e.message).toMatch(/answered 200 instead of 206 .*does not support Range requests/);
  });

  it('...unless the whole resource fits in the first block: the 200 body is then the whole file', async () => {
    const data = bytes(1000, 3);
    const { url, gets } = serve(data, { ranges: false });
    const s = await createHttpStorage(url, { cacheBytes: 0 });
    expect(await s.size()).toBe(1000);
    const dst = new Uint8Array(1000);
    expect(await s.read(dst, 0)).toBe(1000); // no cache: asks bytes=0-999 and accepts the 200
    expectBytes(dst, data);
    expect(gets()).toEqual(['bytes=0-65535', 'bytes=0-999']);
    await s.close();
  });

  it("HTTP errors reject 'IO' with the status in the message", async () => {
    const { url } = serve(bytes(1000), { failWith: () => 503 });
    const e = await rejection(createHttpStorage(url));
    expect(e.code).toBe('IO');
    expect(e.message).toContain('server answered 503 Service Unavailable');
    expect(e.message).toContain('open: GET bytes=0-65535');
  });

  it("a network failure rejects 'IO' and keeps the fetch error as cause", async () => {
    const closed = await startRangeServer();
    const url = closed.add('/gone.bin', bytes(10));
    await closed.close();
    const e = await rejection(createHttpStorage(url));
    expect(e.code).toBe('IO');
    expect(e.message).toContain('request failed');
    expect(e.cause).toBeInstanceOf(TypeError); // undici's "fetch failed", with ECONNREFUSED inside
    expect(e.message).toContain('ECONNREFUSED');
  });

  it("bad options and URLs reject 'INVALID_ARGUMENT' before any request", async () => {
    const { url, gets } = serve(bytes(10));
    const cases: [string, Parameters<typeof createHttpStorage>[1]][] = [
      ['blockSize', { blockSize: 100 }],
      ['blockSize', { blockSize: 65536.5 }],
      ['blockSize', { blockSize: 32 * 1024 * 1024 }],
      ['cacheBytes', { cacheBytes: -1 }],
      ['maxCoalesce', { maxCoalesce: 0 }],
      ['fetch', { fetch: 'no' as unknown as FetchLike }],
      ['headers', { headers: { authorization: 1 as unknown as string } }],
    ];
    for (const [name, options] of cases) {
      const e = await rejection(createHttpStorage(url, options));
      expect(e.code).toBe('INVALID_ARGUMENT');
      expect(e.message).toContain(name);
    }
    expect((await rejection(createHttpStorage(''))).code).toBe('INVALID_ARGUMENT');
    expect(gets()).toEqual([]);
  });

  it('messages leave out credentials, query and fragment of the URL', async () => {
    const { path } = serve(bytes(10), { failWith: () => 500 });
    const url = server.origin.replace('http://', 'http://user:secret@') + path + '?token=abc#frag';
    // fetch refuses URLs with credentials; a fetch wrapper strips them, as a caller's would.
    const fetchWithoutUserinfo: FetchLike = (u, init) => fetch(u.replace('user:secret@', ''), init);
    const e = await rejection(createHttpStorage(url, { fetch: fetchWithoutUserinfo }));
    expect(e.message).toContain(`http storage ${server.origin}${path}?…:`);
    expect(e.message).not.toMatch(/secret|token|frag/);
  });
});

describe('createHttpStorage: requests', () => {
  it('sends the given headers on every request, with Range its own', async () => {
    const { path, url } = serve(bytes(200 * KiB), { contentRange: 'hidden' });
    const s = await createHttpStorage(url, { headers: { Authorization: 'Bearer xyz', Range: 'bytes=5-6' } });
    await s.read(new Uint8Array(10), 100_000);
    const requests = server.requestsFor(path);
    expect(requests.map((r) => r.method)).toEqual(['GET', 'HEAD', 'GET']);
    for (const r of requests) expect(r.headers.authorization).toBe('Bearer xyz');
    expect(requests.map((r) => r.range)).toEqual(['bytes=0-65535', undefined, 'bytes=65536-131071']);
    await s.close();
  });

  it('uses the fetch passed in options', async () => {
    const globalFetchFits: FetchLike = fetch; // Node's fetch type fits FetchLike
    expect(typeof globalFetchFits).toBe('function');
    const { url } = serve(bytes(100 * KiB));
    const seen: string[] = [];
    const counting: FetchLike = (u, init) => {
      seen.push(`${init.method} ${init.headers['range'] ?? ''}`);
      return fetch(u, init);
    };
    const s = await createHttpStorage(url, { fetch: counting });
    await s.read(new Uint8Array(100), 70_000);
    expect(seen).toEqual(['GET bytes=0-65535', 'GET bytes=65536-102399']);
    await s.close();
  });

  it('concurrent reads of neighbouring blocks become one Range request', async () => {
    const data = bytes(1024 * KiB, 4);
    const { url, gets } = serve(data);
    const s = await createHttpStorage(url, { blockSize: 4096, readAhead: 0 });
    const offsets = [40_960, 45_056, 49_152, 53_248, 57_344, 61_440, 65_536, 69_632]; // blocks 10..17
    const dsts = offsets.map(() => new Uint8Array(4096));
    await Promise.all(offsets.map((offset, i) => s.read(dsts[i] as Uint8Array, offset)));
    offsets.forEach((offset, i) => expectBytes(dsts[i], data.subarray(offset, offset + 4096)));
    expect(gets()).toEqual(['bytes=0-4095', 'bytes=40960-73727']);
    expect(s.stats()).toMatchObject({ requests: 2, blockMisses: 8, blockHits: 0 });
    await s.close();
  });

  it('gaps split the runs: one request per run of neighbours, in block order', async () => {
    const data = bytes(1024 * KiB, 5);
    const { url, gets } = serve(data);
    const s = await createHttpStorage(url, { blockSize: 4096 });
    await Promise.all([
      s.read(new Uint8Array(4096), 20 * 4096),
      s.read(new Uint8Array(4096), 12 * 4096),
      s.read(new Uint8Array(100), 21 * 4096 + 7),
      s.read(new Uint8Array(4096), 11 * 4096),
    ]);
    expect(gets()).toEqual(['bytes=0-4095', 'bytes=45056-53247', 'bytes=81920-90111']);
    await s.close();
  });

  it('a read of a block already in flight shares its request', async () => {
    const data = bytes(256 * KiB, 6);
    const { url, gets } = serve(data);
    const s = await createHttpStorage(url, { readAhead: 0 });
    const a = new Uint8Array(1000);
    const b = new Uint8Array(1000);
    const first = s.read(a, 70_000);
    await Promise.resolve(); // the first request is dispatched
    await Promise.resolve();
    const second = s.read(b, 71_000);
    await Promise.all([first, second]);
    expectBytes(a, data.subarray(70_000, 71_000));
    expectBytes(b, data.subarray(71_000, 72_000));
    expect(gets()).toEqual(['bytes=0-65535', 'bytes=65536-131071']);
    await s.close();
  });

  it('one read over many blocks asks for runs of at most maxCoalesce bytes', async () => {
    const data = bytes(1024 * KiB, 7);
    const { url, gets } = serve(data);
    const s = await createHttpStorage(url, { blockSize: 4096, maxCoalesce: 16 * KiB + 5 });
    const dst = new Uint8Array(40 * KiB);
    expect(await s.read(dst, 8192)).toBe(dst.length);
    expectBytes(dst, data.subarray(8192, 8192 + dst.length));
    expect(gets()).toEqual(['bytes=0-4095', 'bytes=8192-24575', 'bytes=24576-40959', 'bytes=40960-49151']);
    await s.close();
  });

  it('at most 6 requests are in flight; the others queue', async () => {
    const data = bytes(1024 * KiB, 20);
    const { url, gets } = serve(data);
    let active = 0;
    let peak = 0;
    const counting: FetchLike = async (u, init) => {
      active++;
      peak = Math.max(peak, active);
      try {
        const response = await fetch(u, init);
        const body = await response.arrayBuffer();
        return { status: response.status, statusText: response.statusText, headers: response.headers, body: null, arrayBuffer: async () => body };
      } finally {
        active--;
      }
    };
    const s = await createHttpStorage(url, { blockSize: 4096, fetch: counting });
    const blocks = Array.from({ length: 20 }, (_, i) => 2 + 3 * i); // no two neighbours: 20 requests
    const dsts = blocks.map(() => new Uint8Array(4096));
    await Promise.all(blocks.map((block, i) => s.read(dsts[i] as Uint8Array, block * 4096)));
    blocks.forEach((block, i) => expectBytes(dsts[i], data.subarray(block * 4096, (block + 1) * 4096)));
    expect(gets()).toHaveLength(21);
    expect(peak).toBe(6);
    await s.close();
  });

  it('cached blocks are not fetched again; the LRU keeps at most cacheBytes', async () => {
    const data = bytes(1024 * KiB, 8);
    const { url, gets } = serve(data);
    const s = await createHttpStorage(url, { blockSize: 4096, cacheBytes: 3 * 4096, readAhead: 0 });
    const read = async (block: number): Promise<void> => {
      const dst = new Uint8Array(4096);
      await s.read(dst, block * 4096);
      expectBytes(dst, data.subarray(block * 4096, (block + 1) * 4096));
    };
    await read(5); // cache: 0 5
    await read(6); // 0 5 6
    await read(5); // hit
    await read(0); // hit; order 6 5 0
    await read(7); // evicts 6: 5 0 7
    await read(5); // hit
    await read(6); // miss
    expect(gets()).toEqual(['bytes=0-4095', 'bytes=20480-24575', 'bytes=24576-28671', 'bytes=28672-32767', 'bytes=24576-28671']);
    expect(s.stats()).toMatchObject({ blockHits: 3, blockMisses: 4 });
    await s.close();
  });

  it('the last block is short; reads stop at the end of the resource', async () => {
    const data = bytes(10_000, 9);
    const { url, gets } = serve(data);
    const s = await createHttpStorage(url, { blockSize: 4096, cacheBytes: 0 });
    const dst = new Uint8Array(5000).fill(0xee);
    expect(await s.read(dst, 8000)).toBe(2000);
    expectBytes(dst.subarray(0, 2000), data.subarray(8000));
    expect(dst.subarray(2000).every((b) => b === 0xee)).toBe(true);
    expect(gets()).toEqual(['bytes=0-4095', 'bytes=4096-9999']);
    await s.close();
  });
});

describe('createHttpStorage: misbehaving servers', () => {
  it("a changed ETag rejects 'IO': the resource changed under us", async () => {
    const { path, url } = serve(bytes(200 * KiB, 10));
    const s = await createHttpStorage(url);
    server.file(path).etag = '"v2"';
    const e = await rejection(s.read(new Uint8Array(10), 100_000));
    expect(e.code).toBe('IO');
    expect(e.message).toMatch(/changed since it was opened \(ETag "[^"]*-v1" became "v2"\)/);
    expect(e.message).toContain('GET bytes=65536-131071');
    await s.close();
  });

  it('a weak ETag names the same version as the strong one', async () => {
    const { path, url } = serve(bytes(200 * KiB, 11));
    const s = await createHttpStorage(url);
    server.file(path).etag = `W/${server.file(path).etag ?? ''}`;
    expect(await s.read(new Uint8Array(10), 100_000)).toBe(10);
    await s.close();
  });

  it('without ETags, a changed Last-Modified or size rejects the same way', async () => {
    const { path, url } = serve(bytes(200 * KiB, 12), { etag: null });
    const s = await createHttpStorage(url);
    server.file(path).lastModified = 'Wed, 02 Apr 2025 10:00:00 GMT';
    const e = await rejection(s.read(new Uint8Array(10), 100_000));
    expect(e.code).toBe('IO');
    expect(e.message).toContain('Last-Modified Tue, 01 Apr 2025 10:00:00 GMT became Wed, 02 Apr 2025 10:00:00 GMT');

    const grown = serve(bytes(200 * KiB, 13), { etag: null, lastModified: null });
    const t = await createHttpStorage(grown.url);
    server.file(grown.path).bytes = bytes(300 * KiB, 13);
    const g = await rejection(t.read(new Uint8Array(10), 100_000));
    expect(g.message).toContain(`changed since it was opened (size ${200 * KiB} became ${300 * KiB})`);

    const shrunk = serve(bytes(200 * KiB, 14), { etag: null, lastModified: null });
    const u = await createHttpStorage(shrunk.url);
    server.file(shrunk.path).bytes = bytes(50 * KiB, 14);
    const h = await rejection(u.read(new Uint8Array(10), 100_000));
    expect(h.code).toBe('IO');
    expect(h.message).toContain('416');
    expect(h.message).toContain('it changed');
    await Promise.all([s.close(), t.close(), u.close()]);
  });

  it("a 500 during reads rejects every reader of the run with 'IO'; the next read asks again", async () => {
    const data = bytes(200 * KiB, 15);
    const { path, url, gets } = serve(data, { failWith: (n) => (n === 2 ? 500 : undefined) });
    const s = await createHttpStorage(url, { blockSize: 4096, readAhead: 0 });
    const reads = [s.read(new Uint8Array(4096), 4096), s.read(new Uint8Array(4096), 8192)];
    const errors = await Promise.all(reads.map((r) => rejection(r)));
    for (const e of errors) {
      expect(e.code).toBe('IO');
      expect(e.message).toContain('server answered 500 Internal Server Error');
    }
    expect(errors[0]).toBe(errors[1]); // one request, one error
    const dst = new Uint8Array(4096);
    expect(await s.read(dst, 8192)).toBe(4096);
    expectBytes(dst, data.subarray(8192, 12288));
    expect(gets()).toEqual(['bytes=0-4095', 'bytes=4096-12287', 'bytes=8192-12287']);
    expect(server.file(path).requests).toBe(3);
    await s.close();
  });

  it("a body cut short by a reset connection rejects 'IO' with the fetch error as cause", async () => {
    const { path, url } = serve(bytes(200 * KiB, 16));
    const s = await createHttpStorage(url);
    server.file(path).truncateBodyTo = 1000;
    const e = await rejection(s.read(new Uint8Array(10), 100_000));
    expect(e.code).toBe('IO');
    expect(e.message).toContain('reading the body failed');
    expect(e.cause).toBeInstanceOf(Error);
    await s.close();
  });

  it("a body that ends early without a Content-Length rejects 'IO': short body", async () => {
    const { path, url } = serve(bytes(200 * KiB, 17));
    const s = await createHttpStorage(url);
    server.file(path).shortChunkedBy = 100;
    const e = await rejection(s.read(new Uint8Array(10), 100_000));
    expect(e.code).toBe('IO');
    expect(e.message).toContain('short body: 65436 of 65536 bytes');
    await s.close();
  });

  it("a server that stops honouring ranges after opening rejects 'UNSUPPORTED'", async () => {
    const { path, url } = serve(bytes(200 * KiB, 18));
    const s = await createHttpStorage(url);
    server.file(path).ranges = false;
    const e = await rejection(s.read(new Uint8Array(10), 100_000));
    expect(e.code).toBe('UNSUPPORTED');
    expect(e.message).toContain('answered 200 instead of 206');
    await s.close();
  });

  it("a fetch that throws something odd still rejects 'IO'", async () => {
    const broken: FetchLike = () => Promise.reject('plain string');
    const e = await rejection(createHttpStorage('http://127.0.0.1:9/x', { fetch: broken }));
    expect(e.code).toBe('IO');
    expect(e.message).toContain('plain string');
    const notResponse = (() => Promise.resolve(42)) as unknown as FetchLike;
    expect((await rejection(createHttpStorage('http://127.0.0.1:9/x', { fetch: notResponse }))).code).toBe('IO');
  });
});

describe('createHttpStorage: read-only and closed', () => {
  it("write and truncate reject 'READ_ONLY' without a request; after close everything rejects 'CLOSED'", async () => {
    const { url, gets } = serve(bytes(100 * KiB, 19));
    const s = await createHttpStorage(url);
    expect((await rejection(s.write(new Uint8Array(1), 0))).code).toBe('READ_ONLY');
    expect((await rejection(s.truncate(0))).code).toBe('READ_ONLY');
    expect(s.discard).toBeUndefined();
    await s.flush();
    expect(gets()).toHaveLength(1);
    const pending = s.read(new Uint8Array(10), 70_000);
    await s.close();
    expect((await rejection(pending)).code).toBe('CLOSED');
    expect((await rejection(s.read(new Uint8Array(10), 0))).code).toBe('CLOSED');
    expect((await rejection(s.size())).code).toBe('CLOSED');
  });
});

describe('createHttpStorage: read-ahead', () => {
  /** Lets the adapter's background requests finish. */
  const settle = async (): Promise<void> => {
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setTimeout(resolve, 5));
  };

  it('a read continuing the previous one also fetches as many bytes after it, and the next read finds them', async () => {
    const data = bytes(256 * KiB, 20);
    const { url, gets } = serve(data);
    const s = await createHttpStorage(url, { blockSize: 4096 });
    const dst = new Uint8Array(16 * KiB);
    await s.read(dst, 64 * KiB); // not sequential: no read-ahead
    await settle();
    expect(gets()).toEqual(['bytes=0-4095', 'bytes=65536-81919']);
    await s.read(dst, 80 * KiB); // continues it: fetches 80..96 KiB, then 96..112 KiB in the background
    expectBytes(dst, data.subarray(80 * KiB, 96 * KiB));
    await settle();
    expect(gets()).toEqual(['bytes=0-4095', 'bytes=65536-81919', 'bytes=81920-98303', 'bytes=98304-114687']);
    const before = s.stats();
    await s.read(dst, 96 * KiB); // served from the read-ahead
    expectBytes(dst, data.subarray(96 * KiB, 112 * KiB));
    expect(s.stats().blockHits - before.blockHits).toBe(4);
    await settle();
    // ...and it continues the stream: the window doubles to 32 KiB, on its way in one request.
    expect(gets().at(-1)).toBe('bytes=114688-147455');
    await s.close();
  });

  it('small sequential reads grow the window: few, large requests, and every byte right', async () => {
    const data = bytes(1024 * KiB, 24);
    const { url, gets } = serve(data);
    const s = await createHttpStorage(url, { blockSize: 4096, readAhead: 64 * KiB });
    const dst = new Uint8Array(4096);
    for (let at = 0; at < 512 * KiB; at += 4096) {
      await s.read(dst, at);
      expectBytes(dst, data.subarray(at, at + 4096));
    }
    await settle();
    const ranges = gets().slice(1).map((r) => r!.replace('bytes=', '').split('-').map(Number) as [number, number]);
    // 128 reads of one block: without read-ahead 127 requests; with it, once the window is
    // 16 blocks, requests of at least 8 blocks.
    expect(ranges.length).toBeLessThan(30);
    expect(ranges.slice(8).every(([a, b]) => b - a + 1 >= 8 * 4096)).toBe(true);
    // Never more than the window past what was read.
    expect(Math.max(...ranges.map(([, b]) => b))).toBeLessThan(512 * KiB + 64 * KiB);
    await s.close();
  });

  it('random reads, readAhead 0 and the end of the resource stop it; it never exceeds half the cache', async () => {
    const data = bytes(64 * KiB, 21);
    const off = serve(data);
    const s = await createHttpStorage(off.url, { blockSize: 4096, readAhead: 0 });
    const dst = new Uint8Array(8 * KiB);
    for (const at of [8, 16, 24]) await s.read(dst, at * KiB);
    await settle();
    expect(off.gets()).toEqual(['bytes=0-4095', 'bytes=8192-16383', 'bytes=16384-24575', 'bytes=24576-32767']);
    await s.close();

    const random = serve(data);
    const r = await createHttpStorage(random.url, { blockSize: 4096 });
    for (const at of [40, 8, 24]) await r.read(dst, at * KiB);
    await settle();
    expect(random.gets()).toEqual(['bytes=0-4095', 'bytes=40960-49151', 'bytes=8192-16383', 'bytes=24576-32767']);
    await r.read(dst, 56 * KiB); // recent reads ended at 48, 16 and 32 KiB: not sequential
    await r.read(dst.subarray(0, 4096), 64 * KiB - 4096); // inside what the last read fetched: no request
    await settle();
    expect(random.gets().slice(4)).toEqual(['bytes=57344-65535']);
    await r.close();

    const small = serve(bytes(256 * KiB, 22));
    const c = await createHttpStorage(small.url, { blockSize: 4096, cacheBytes: 16 * KiB });
    const big = new Uint8Array(32 * KiB);
    await c.read(big, 0);
    await c.read(big, 32 * KiB);
    await settle();
    // Half the 16 KiB cache: two blocks of read-ahead, not eight.
    expect(small.gets().at(-1)).toBe('bytes=65536-73727');
    await c.close();
  });

  it('a failed read-ahead is not reported to anybody; the read that needs the bytes asks again and gets them', async () => {
    const data = bytes(128 * KiB, 23);
    const { url, gets } = serve(data, { failWith: (n) => (n === 4 ? 500 : undefined) });
    const s = await createHttpStorage(url, { blockSize: 4096 });
    const dst = new Uint8Array(8 * KiB);
    await s.read(dst, 0);
    await s.read(dst, 8 * KiB); // request 3; its read-ahead (16..24 KiB) is request 4 and fails
    await settle();
    await s.read(dst, 16 * KiB);
    expectBytes(dst, data.subarray(16 * KiB, 24 * KiB));
    expect(gets().filter((r) => r === 'bytes=16384-24575')).toHaveLength(2);
    await s.close();
  });
});
