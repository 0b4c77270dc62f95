import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleBrowserEntries, serveStatic, type ServedFile, type StaticServer } from './browser/run-in-chromium.js';
import { fileURLToPath } from 'node:url';

// The harness's own server and bundler, in Node: later browser tests (an overlay whose backing
// file is served over HTTP) rely on its Range answers.

const body = new Uint8Array(1000).map((_, i) => i & 0xff);
let server: StaticServer;
beforeAll(async () => {
  server = await serveStatic(new Map<string, ServedFile>([['/data.bin', { body }], ['/', { body: '<p>hi</p>', contentType: 'text/html' }]]), {
    'Cross-Origin-Opener-Policy': 'same-origin',
  });
});
afterAll(() => server.close());

describe('serveStatic', () => {
  it('listens on 127.0.0.1 with an ephemeral port', () => {
    expect(server.origin).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(server.origin).not.toMatch(/:0$/);
  });

  it('serves whole files with the extra headers and Accept-Ranges', async () => {
    const r = await fetch(`${server.origin}/data.bin`);
    expect(r.status).toBe(200);
    expect(r.headers.get('accept-ranges')).toBe('bytes');
    expect(r.headers.get('cross-origin-opener-policy')).toBe('same-origin');
    expect(new Uint8Array(await r.arrayBuffer())).toEqual(body);
    expect((await fetch(`${server.origin}/`)).headers.get('content-type')).toBe('text/html');
  });

  it.each([
    ['bytes=10-19', 10, 20],
    ['bytes=990-', 990, 1000],
    ['bytes=995-2000', 995, 1000],
    ['bytes=-7', 993, 1000],
    ['bytes=0-0', 0, 1],
  ])('Range %s → 206 with bytes [%i, %i)', async (range, start, end) => {
    const r = await fetch(`${server.origin}/data.bin`, { headers: { Range: range } });
    expect(r.status).toBe(206);
    expect(r.headers.get('content-range')).toBe(`bytes ${start}-${end - 1}/1000`);
    expect(new Uint8Array(await r.arrayBuffer())).toEqual(body.subarray(start, end));
  });

  it.each(['bytes=1000-', 'bytes=5-2', 'bytes=-', 'items=0-1'])('Range %s → 416', async (range) => {
    const r = await fetch(`${server.origin}/data.bin`, { headers: { Range: range } });
    expect(r.status).toBe(416);
    expect(r.headers.get('content-range')).toBe('bytes */1000');
  });

  it('HEAD gives the length without a body; unknown paths 404; other methods 405', async () => {
    const head = await fetch(`${server.origin}/data.bin`, { method: 'HEAD' });
    expect([head.status, head.headers.get('content-length')]).toEqual([200, '1000']);
    expect((await fetch(`${server.origin}/nope`)).status).toBe(404);
    expect((await fetch(`${server.origin}/data.bin`, { method: 'PUT', body: 'x' })).status).toBe(405);
  });
});

describe('bundleBrowserEntries', () => {
  it('bundles workspace packages from their TypeScript sources into one ESM file per entry', async () => {
    const page = fileURLToPath(new URL('./browser/opfs-page.ts', import.meta.url));
    const out = await bundleBrowserEntries({ page });
    expect([...out.keys()]).toEqual(['/page.js']);
    const text = new TextDecoder().decode(out.get('/page.js'));
    expect(text).not.toMatch(/^\s*import\s/m); // every import inlined
    expect(text).toContain('sync access handles exist only in dedicated workers'); // from @qcow2/storage-opfs's src
    expect(text).toContain('@qcow2/format/Qcow2Error'); // the brand, from @qcow2/format's src
  });
});

// The report POST is last: it settles the server's one report promise.
describe('the report endpoint', () => {
  it('resolves the report promise with the POSTed body', async () => {
    const r = await fetch(`${server.origin}/__report`, { method: 'POST', body: '{"ok":true}' });
    expect(r.status).toBe(204);
    expect(JSON.parse(await server.report)).toEqual({ ok: true });
  });
});
