/**
 * A reusable headless-Chromium harness (Node side): bundle browser entry points with esbuild,
 * serve them (and any extra files, with Range requests) from 127.0.0.1 on an ephemeral port with
 * node:http, open a page in Debian's /usr/bin/chromium through playwright-core, and resolve to
 * the JSON the page POSTs to `/__report` (see `report.ts` for the page side).
 *
 *   const { report } = await runInChromium({ entries: { page: 'test/browser/x-page.ts', worker: '…' } });
 *
 * No browser is ever downloaded. Free of vitest, so benchmark scripts use it too; tests wrap
 * their suites in `describeWithChromium` (describe-with-chromium.ts).
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { BrowserContext } from 'playwright-core';

export const CHROMIUM_PATH = process.env['QCOW2_CHROMIUM'] ?? '/usr/bin/chromium';

export const CHROMIUM_ARGS: readonly string[] = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

export function hasChromium(): boolean {
  return existsSync(CHROMIUM_PATH);
}

/** A file the server hands out, besides the bundles. */
export interface ServedFile {
  readonly body: Uint8Array | string;
  readonly contentType?: string;
}

export interface RunInChromiumOptions {
  /**
   * Browser entry points to bundle, by output name: `{ page: 'test/browser/x-page.ts' }` is
   * served at `/page.js`. Each is bundled on its own (ESM, every import inlined, the
   * `@qcow2/source` condition so workspace packages come from their TypeScript sources).
   */
  readonly entries: Readonly<Record<string, string>>;
  /** The HTML at `/`. Default: a page that loads `/page.js` as a module. */
  readonly html?: string;
  /** More files, by absolute URL path (`/images/base.qcow2`). They answer Range requests. */
  readonly files?: Readonly<Record<string, Uint8Array | string | ServedFile>>;
  /** Headers added to every response (e.g. COOP/COEP for SharedArrayBuffer). */
  readonly headers?: Readonly<Record<string, string>>;
  /** Query string for the page URL, without `?`, e.g. `mode=bench`. */
  readonly query?: string;
  /** How long to wait for the report, in ms. Default 60 000. */
  readonly timeoutMs?: number;
  /**
   * Run in a persistent context over a fresh user-data dir (removed afterwards), so OPFS lives
   * on disk. The default, a non-persistent (incognito-like) context, keeps OPFS in memory, where
   * files stop growing near 1 GiB.
   */
  readonly persistentProfile?: boolean;
}

export interface ChromiumRun<T> {
  /** What the page POSTed to `/__report`, parsed. */
  readonly report: T;
  /** The page's and workers' console lines and uncaught errors, for diagnostics. */
  readonly logs: readonly string[];
  /** The browser's version string. */
  readonly browserVersion: string;
}

/** Bundles `entries` for the browser; resolves to the output files by URL path (`/page.js`). */
export async function bundleBrowserEntries(entries: Readonly<Record<string, string>>): Promise<Map<string, Uint8Array>> {
  const esbuild = await import('esbuild');
  const result = await esbuild.build({
    entryPoints: Object.entries(entries).map(([out, input]) => ({ in: input, out })),
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    conditions: ['@qcow2/source'],
    sourcemap: 'inline',
    write: false,
    outdir: '/bundle',
    logLevel: 'silent',
  });
  const out = new Map<string, Uint8Array>();
  for (const file of result.outputFiles) out.set(file.path.slice('/bundle'.length), file.contents);
  return out;
}

const DEFAULT_HTML = '<!doctype html><meta charset="utf-8"><title>qcow2 browser test</title><script type="module" src="/page.js"></script>';

function typeOf(path: string): string {
  if (path.endsWith('.js')) return 'text/javascript; charset=utf-8';
  if (path.endsWith('.html')) return 'text/html; charset=utf-8';
  if (path.endsWith('.json')) return 'application/json';
  return 'application/octet-stream';
}

export interface StaticServer {
  /** `http://127.0.0.1:PORT` */
  readonly origin: string;
  /** Resolves to the body of the first POST to `/__report`. */
  readonly report: Promise<string>;
  close(): Promise<void>;
}

/** Serves `files` (by URL path) from 127.0.0.1 on an ephemeral port, with Range support. */
export async function serveStatic(
  files: ReadonlyMap<string, ServedFile>,
  headers: Readonly<Record<string, string>> = {},
): Promise<StaticServer> {
  let deliver: (body: string) => void = () => undefined;
  const report = new Promise<string>((resolve) => (deliver = resolve));
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
    res.setHeader('Cache-Control', 'no-store');
    const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
    if (req.method === 'POST' && path === '/__report') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        res.writeHead(204).end();
        deliver(Buffer.concat(chunks).toString('utf8'));
      });
      return;
    }
    const file = files.get(path);
    if (file === undefined || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(file === undefined ? 404 : 405).end();
      return;
    }
    const body = typeof file.body === 'string' ? Buffer.from(file.body, 'utf8') : Buffer.from(file.body.buffer, file.body.byteOffset, file.body.byteLength);
    res.setHeader('Content-Type', file.contentType ?? typeOf(path));
    res.setHeader('Accept-Ranges', 'bytes');
    const range = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range ?? '');
    let start = 0;
    let end = body.length; // exclusive
    let status = 200;
    if (req.headers.range !== undefined) {
      if (range === null || (range[1] === '' && range[2] === '')) {
        res.writeHead(416, { 'Content-Range': `bytes */${body.length}` }).end();
        return;
      }
      if (range[1] === '') {
        start = Math.max(0, body.length - Number(range[2]));
      } else {
        start = Number(range[1]);
        if (range[2] !== '') end = Math.min(body.length, Number(range[2]) + 1);
      }
      if (start >= body.length || start >= end) {
        res.writeHead(416, { 'Content-Range': `bytes */${body.length}` }).end();
        return;
      }
      status = 206;
      res.setHeader('Content-Range', `bytes ${start}-${end - 1}/${body.length}`);
    }
    res.setHeader('Content-Length', String(end - start));
    res.writeHead(status);
    res.end(req.method === 'HEAD' ? undefined : body.subarray(start, end));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    report,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * Bundles the entries, serves them with `files`, opens the page in headless Chromium (a fresh
 * profile in a temp dir; see `persistentProfile`) and resolves to the report the page POSTs. Rejects
 * when the page does not report within `timeoutMs`, with the page's logs in the message.
 */
export async function runInChromium<T = unknown>(options: RunInChromiumOptions): Promise<ChromiumRun<T>> {
  const { chromium } = await import('playwright-core');
  const served = new Map<string, ServedFile>();
  for (const [path, body] of await bundleBrowserEntries(options.entries)) served.set(path, { body });
  served.set('/', { body: options.html ?? DEFAULT_HTML, contentType: 'text/html; charset=utf-8' });
  for (const [path, file] of Object.entries(options.files ?? {})) {
    served.set(path, typeof file === 'string' || file instanceof Uint8Array ? { body: file } : file);
  }
  const server = await serveStatic(served, options.headers);
  const logs: string[] = [];
  const timeoutMs = options.timeoutMs ?? 60_000;
  const launch = { executablePath: CHROMIUM_PATH, args: [...CHROMIUM_ARGS], headless: true, timeout: 30_000 };
  let profile: string | undefined;
  let close = async (): Promise<void> => undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    let context: BrowserContext;
    if (options.persistentProfile === true) {
      profile = mkdtempSync(join(tmpdir(), 'qcow2-chromium-profile-'));
      context = await chromium.launchPersistentContext(profile, launch);
      close = () => context.close();
    } else {
      const browser = await chromium.launch(launch);
      close = () => browser.close();
      context = await browser.newContext();
    }
    context.on('console', (m) => logs.push(`[console.${m.type()}] ${m.text()}`));
    context.on('weberror', (e) => logs.push(`[uncaught] ${e.error().stack ?? e.error().message}`));
    const page = await context.newPage();
    page.on('worker', (w) => w.on('console', (m) => logs.push(`[worker console.${m.type()}] ${m.text()}`)));
    page.on('pageerror', (e) => logs.push(`[pageerror] ${e.stack ?? e.message}`));
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`the page did not report within ${timeoutMs} ms; its logs:\n${logs.join('\n') || '(none)'}`)),
        timeoutMs,
      );
    });
    await page.goto(`${server.origin}/${options.query === undefined ? '' : `?${options.query}`}`);
    const browserVersion = context.browser()?.version() ?? (await page.evaluate(() => navigator.userAgent));
    const body = await Promise.race([server.report, timeout]);
    let report: T;
    try {
      report = JSON.parse(body) as T;
    } catch {
      throw new Error(`the page reported something that is not JSON: ${body.slice(0, 200)}`);
    }
    return { report, logs, browserVersion };
  } finally {
    clearTimeout(timer);
    await close();
    await server.close();
    if (profile !== undefined) rmSync(profile, { recursive: true, force: true });
  }
}
