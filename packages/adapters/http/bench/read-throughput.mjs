// Sequential 64 KiB reads of a 256 MiB file over loopback HTTP: plain fetch Range requests of
// the same size vs createHttpStorage (built dist) — awaited one at a time, and 16 reads at a time
// (which the adapter coalesces into larger requests). The server is node:http in a child
// process serving the file from memory with Range support and an ETag, so the client's event
// loop measures only the client.
//
//   turbo run build --filter=@qcow2/storage-http
//   node packages/adapters/http/bench/read-throughput.mjs [sizeMiB=256] [blockKiB=64] [rounds=3]
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const sizeMiB = Number(process.argv[2] ?? 256);
const blockKiB = Number(process.argv[3] ?? 64);
const rounds = Number(process.argv[4] ?? 3);
const size = sizeMiB * 1024 * 1024;
const block = blockKiB * 1024;

if (process.env.QCOW2_HTTP_BENCH_SERVE === '1') {
  // The server side: a deterministic file in memory, single ranges, ETag; prints its port.
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i += 4096) data[i] = (i >>> 12) & 0xff;
  const server = createServer((req, res) => {
    const headers = { 'content-type': 'application/octet-stream', etag: '"bench-v1"', 'accept-ranges': 'bytes' };
    const match = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (req.method === 'HEAD' || !match) {
      res.writeHead(200, { ...headers, 'content-length': String(size) });
      res.end(req.method === 'HEAD' ? undefined : data);
      return;
    }
    const start = Number(match[1]);
    const end = Math.min(Number(match[2]), size - 1);
    res.writeHead(206, { ...headers, 'content-length': String(end - start + 1), 'content-range': `bytes ${start}-${end}/${size}` });
    res.end(data.subarray(start, end + 1));
  });
  server.listen(0, '127.0.0.1', () => console.log(String(server.address().port)));
  process.on('disconnect', () => process.exit(0));
} else {
  const here = dirname(fileURLToPath(import.meta.url));
  const dist = join(here, '..', 'dist', 'index.js');
  if (!existsSync(dist)) {
    console.error('build first: turbo run build --filter=@qcow2/storage-http');
    process.exit(1);
  }
  const { createHttpStorage } = await import(pathToFileURL(dist).href);
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    env: { ...process.env, QCOW2_HTTP_BENCH_SERVE: '1' },
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
  });
  const port = await new Promise((resolve, reject) => {
    child.stdout.once('data', (chunk) => resolve(Number(String(chunk).trim())));
    child.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
  const url = `http://127.0.0.1:${port}/data.bin`;
  try {
    const results = {};
    const record = (name, seconds) => (results[name] ??= []).push(size / seconds / 1e9);
    const check = (dst, offset) => {
      if (offset % 4096 === 0 && dst[0] !== ((offset >>> 12) & 0xff)) throw new Error(`wrong byte at ${offset}`);
    };
    const runners = {
      'fetch Range, depth 1': async () => {
        const dst = new Uint8Array(block);
        const t = performance.now();
        for (let off = 0; off < size; off += block) {
          const response = await fetch(url, { headers: { range: `bytes=${off}-${off + block - 1}` } });
          if (response.status !== 206) throw new Error(`status ${response.status}`);
          dst.set(new Uint8Array(await response.arrayBuffer()));
          check(dst, off);
        }
        record('fetch Range, depth 1', (performance.now() - t) / 1000);
      },
      'createHttpStorage, depth 1': async () => {
        const t = performance.now();
        const s = await createHttpStorage(url);
        const dst = new Uint8Array(block);
        for (let off = 0; off < size; off += block) {
          await s.read(dst, off);
          check(dst, off);
        }
        record('createHttpStorage, depth 1', (performance.now() - t) / 1000);
        await s.close();
      },
      'createHttpStorage, 16 at a time': async () => {
        const t = performance.now();
        const s = await createHttpStorage(url);
        const depth = 16;
        const dsts = Array.from({ length: depth }, () => new Uint8Array(block));
        for (let off = 0; off < size; off += depth * block) {
          await Promise.all(dsts.map((dst, i) => (off + i * block < size ? s.read(dst, off + i * block) : 0)));
        }
        record('createHttpStorage, 16 at a time', (performance.now() - t) / 1000);
        results.requests = s.stats().requests;
        await s.close();
      },
    };
    for (let round = 0; round < rounds; round++) {
      for (const run of Object.values(runners)) await run();
    }
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const requests = results.requests;
    delete results.requests;
    console.log(`Node ${process.version}, ${sizeMiB} MiB over loopback HTTP, ${blockKiB} KiB sequential reads, ${rounds} rounds (GB/s, median [min-max])`);
    for (const [name, xs] of Object.entries(results)) {
      console.log(`${name.padEnd(34)} ${median(xs).toFixed(3)} [${Math.min(...xs).toFixed(3)}-${Math.max(...xs).toFixed(3)}]`);
    }
    const plain = median(results['fetch Range, depth 1']);
    console.log(`ratio adapter/fetch at depth 1: ${(median(results['createHttpStorage, depth 1']) / plain).toFixed(2)}`);
    console.log(`ratio adapter 16 at a time/fetch at depth 1: ${(median(results['createHttpStorage, 16 at a time']) / plain).toFixed(2)} (${requests} requests for ${size / block} reads)`);
  } finally {
    child.kill();
  }
}
