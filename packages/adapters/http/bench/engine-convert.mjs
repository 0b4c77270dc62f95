// A full `convert -O raw` over loopback HTTP through the engine, against reading the same file
// with plain fetch Range requests awaited one at a time (of 64 KiB, and of 2 MiB). The image is a 256 MiB fully
// allocated qcow2 written by the engine (every cluster holds data, in guest order); a node:http
// server in a child process serves it from memory (single ranges, ETag), so the client's event
// loop measures only the client.
//
//   turbo run build --filter=@qcow2/cli --filter=@qcow2/storage-http
//   node packages/adapters/http/bench/engine-convert.mjs [sizeMiB=256] [rounds=3]
//
// Clients per round, run back to back:
//   fetch      plain fetch, `Range` of 64 KiB, one at a time, over the whole file (the baseline);
//   fetch2m    the same with 2 MiB ranges (the size of the engine's requests: the stricter baseline);
//   engine     openImage(createHttpStorage(url)) read in 2 MiB requests (qemu-img convert's
//              buffer size), each written to a raw file through createNodeStorage while the
//              next one is read;
//   read       the engine's reads alone, without the output file;
//   cli        `qcow2 convert -O raw http://… out.raw` in process (main from @qcow2/cli), when
//              the CLI opens URLs.
// Prints each round, the medians, and last a `RESULT {json}` line (bench/adapters.mjs reads it).
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const sizeMiB = Number(process.argv[2] ?? 256);
const rounds = Number(process.argv[3] ?? 3);
const size = sizeMiB * 1024 * 1024;
const FETCH_BLOCK = 64 * 1024;
const CHUNK = 2 * 1024 * 1024;

/** Guest byte at `offset` of the bench image: never zero, different per 4 KiB. */
const byteAt = (offset) => ((offset >>> 12) % 251) + 1;

if (process.env.QCOW2_HTTP_BENCH_FILE !== undefined) {
  // The server side: the file in memory, single ranges, an ETag; prints its port.
  const data = readFileSync(process.env.QCOW2_HTTP_BENCH_FILE);
  const server = createServer((req, res) => {
    const headers = { 'content-type': 'application/octet-stream', etag: '"bench-v1"', 'accept-ranges': 'bytes' };
    const match = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (req.method === 'HEAD' || !match) {
      res.writeHead(200, { ...headers, 'content-length': String(data.length) });
      res.end(req.method === 'HEAD' ? undefined : data);
      return;
    }
    const start = Number(match[1]);
    const end = Math.min(match[2] === '' ? data.length - 1 : Number(match[2]), data.length - 1);
    if (start > end) {
      res.writeHead(416, { ...headers, 'content-range': `bytes */${data.length}` }).end();
      return;
    }
    res.writeHead(206, { ...headers, 'content-length': String(end - start + 1), 'content-range': `bytes ${start}-${end}/${data.length}` });
    res.end(data.subarray(start, end + 1));
  });
  server.listen(0, '127.0.0.1', () => console.log(String(server.address().port)));
  process.on('disconnect', () => process.exit(0));
} else {
  const { createImage, openImage } = await import('@qcow2/engine');
  const { createNodeStorage } = await import('@qcow2/storage-node');
  const { createHttpStorage } = await import('@qcow2/storage-http');
  const { main } = await import('@qcow2/cli');

  const median = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    const m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
  };
  const dir = mkdtempSync(join(tmpdir(), 'qcow2-http-convert-bench-'));
  const imagePath = join(dir, 'bench.qcow2');
  const outPath = join(dir, 'out.raw');
  let child;
  try {
    {
      const storage = await createNodeStorage(imagePath, { create: true, truncate: true });
      await createImage(storage, { size });
      const image = await openImage(storage, { readOnly: false, cacheMode: 'unsafe' });
      const chunk = new Uint8Array(1024 * 1024);
      for (let at = 0; at < size; at += chunk.length) {
        for (let i = 0; i < chunk.length; i += 4096) chunk.fill(byteAt(at + i), i, i + 4096);
        await image.write(chunk, at);
      }
      await image.close();
      await storage.close();
    }
    const fileSize = statSync(imagePath).size;
    child = spawn(process.execPath, [fileURLToPath(import.meta.url)], {
      env: { ...process.env, QCOW2_HTTP_BENCH_FILE: imagePath },
      stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    });
    const port = await new Promise((resolve, reject) => {
      child.stdout.once('data', (chunk) => resolve(Number(String(chunk).trim())));
      child.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
    });
    const url = `http://127.0.0.1:${port}/bench.qcow2`;

    /** The output must be the guest disk. */
    const checkOutput = () => {
      const out = readFileSync(outPath);
      if (out.length !== size) throw new Error(`output is ${out.length} bytes, not ${size}`);
      for (let at = 0; at < size; at += 4096) if (out[at] !== byteAt(at) || out[at + 4095] !== byteAt(at)) throw new Error(`output differs at ${at}`);
    };

    /** Seconds to read the whole file with plain fetch Range requests of `block` bytes, one at a time. */
    const fetchAll = async (block) => {
      const t = performance.now();
      for (let off = 0; off < fileSize; off += block) {
        const end = Math.min(fileSize, off + block) - 1;
        const response = await fetch(url, { headers: { range: `bytes=${off}-${end}` } });
        if (response.status !== 206) throw new Error(`status ${response.status}`);
        const body = new Uint8Array(await response.arrayBuffer());
        if (body.length !== end - off + 1) throw new Error(`short body at ${off}`);
      }
      return (performance.now() - t) / 1000;
    };

    const runners = {
      fetch: () => fetchAll(FETCH_BLOCK),
      fetch2m: () => fetchAll(CHUNK),
      engine: async () => {
        rmSync(outPath, { force: true });
        const t = performance.now();
        const http = await createHttpStorage(url);
        const image = await openImage(http, { name: url });
        const out = await createNodeStorage(outPath, { create: true, truncate: true });
        // Two buffers: the next chunk is being read while the current one is written.
        const buffers = [new Uint8Array(CHUNK), new Uint8Array(CHUNK)];
        const partAt = (at) => buffers[(at / CHUNK) % 2].subarray(0, Math.min(CHUNK, image.virtualSize - at));
        let reading = image.read(partAt(0), 0);
        for (let at = 0; at < image.virtualSize; at += CHUNK) {
          await reading;
          if (at + CHUNK < image.virtualSize) reading = image.read(partAt(at + CHUNK), at + CHUNK);
          await out.write(partAt(at), at);
        }
        await out.close();
        await image.close();
        await http.close();
        const seconds = (performance.now() - t) / 1000;
        checkOutput();
        return seconds;
      },
      // The same reads without the output file: what the engine and the adapter cost alone.
      read: async () => {
        const t = performance.now();
        const http = await createHttpStorage(url);
        const image = await openImage(http, { name: url });
        const buffer = new Uint8Array(CHUNK);
        for (let at = 0; at < image.virtualSize; at += CHUNK) await image.read(buffer.subarray(0, Math.min(CHUNK, image.virtualSize - at)), at);
        await image.close();
        await http.close();
        return (performance.now() - t) / 1000;
      },
      cli: async () => {
        rmSync(outPath, { force: true });
        let stderr = '';
        const t = performance.now();
        const code = await main(['convert', '-O', 'raw', url, outPath], { stdout: () => undefined, stderr: (s) => (stderr += s) });
        const seconds = (performance.now() - t) / 1000;
        if (code !== 0) return { skipped: stderr.trim() };
        checkOutput();
        return seconds;
      },
    };
    const times = { fetch: [], fetch2m: [], engine: [], read: [], cli: [] };
    let cliSkipped;
    for (let round = 0; round < rounds; round++) {
      const line = [];
      for (const [name, run] of Object.entries(runners)) {
        if (name === 'cli' && cliSkipped !== undefined) continue;
        const result = await run();
        if (typeof result === 'object') {
          cliSkipped = result.skipped;
          console.log(`cli skipped: ${cliSkipped}`);
          continue;
        }
        times[name].push(result);
        line.push(`${name} ${result.toFixed(2)} s`);
      }
      console.log(`round ${round + 1}: ${line.join(', ')}`);
    }
    const ratios = (name, base = 'fetch') => median(times[name].map((x, i) => x / times[base][i]));
    const mbs = (bytes, seconds) => (bytes / seconds / 1e6).toFixed(0);
    console.log(
      `Node ${process.version}, loopback HTTP, ${sizeMiB} MiB allocated image (file ${(fileSize / 2 ** 20).toFixed(1)} MiB), ${rounds} rounds:\n` +
        `  plain fetch, 64 KiB ranges one at a time: ${median(times.fetch).toFixed(2)} s (${mbs(fileSize, median(times.fetch))} MB/s)\n` +
        `  plain fetch, 2 MiB ranges one at a time:  ${median(times.fetch2m).toFixed(2)} s (${mbs(fileSize, median(times.fetch2m))} MB/s)\n` +
        `  engine convert -O raw (2 MiB reads):      ${median(times.engine).toFixed(2)} s: ${ratios('engine').toFixed(2)}x the 64 KiB fetch time, ${ratios('engine', 'fetch2m').toFixed(2)}x the 2 MiB fetch time (target <= 2x)` +
        `\n  engine reads alone (no output file):      ${median(times.read).toFixed(2)} s: ${ratios('read', 'fetch2m').toFixed(2)}x the 2 MiB fetch time` +
        (times.cli.length > 0
          ? `\n  qcow2 convert -O raw (CLI, in process):   ${median(times.cli).toFixed(2)} s: ${ratios('cli').toFixed(2)}x the 64 KiB fetch time, ${ratios('cli', 'fetch2m').toFixed(2)}x the 2 MiB fetch time (target <= 2x)`
          : ''),
    );
    console.log(
      `RESULT ${JSON.stringify({
        runtime: `node ${process.version}`,
        adapter: 'storage-http',
        sizeMiB,
        rounds,
        fetchSeconds: median(times.fetch),
        fetch2mSeconds: median(times.fetch2m),
        engineSeconds: median(times.engine),
        engineRatio: ratios('engine'),
        engineRatio2m: ratios('engine', 'fetch2m'),
        readSeconds: median(times.read),
        readRatio2m: ratios('read', 'fetch2m'),
        ...(times.cli.length > 0
          ? { cliSeconds: median(times.cli), cliRatio: ratios('cli'), cliRatio2m: ratios('cli', 'fetch2m') }
          : { cliSkipped }),
      })}`,
    );
  } finally {
    child?.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}
