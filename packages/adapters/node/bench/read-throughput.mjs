// Sequential 64 KiB reads of a 256 MiB file: fs.readSync vs FileHandle.read (awaited one at a
// time, i.e. queue depth 1, and with several reads in flight), and — when the package is built —
// the adapter itself. The file is written first, so every run reads from the page cache: this
// measures the per-call cost of each API, which is what decides between them.
//
//   node packages/adapters/node/bench/read-throughput.mjs [sizeMiB=256] [blockKiB=64] [rounds=5]
import { closeSync, openSync, readSync, writeSync, rmSync, mkdtempSync, existsSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const sizeMiB = Number(process.argv[2] ?? 256);
const blockKiB = Number(process.argv[3] ?? 64);
const rounds = Number(process.argv[4] ?? 5);
const size = sizeMiB * 1024 * 1024;
const block = blockKiB * 1024;

const dir = mkdtempSync(join(tmpdir(), 'qcow2-node-bench-'));
const file = join(dir, 'data.bin');
try {
  const chunk = new Uint8Array(1024 * 1024);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 2654435761) >>> 24;
  const fd = openSync(file, 'w');
  for (let off = 0; off < size; off += chunk.length) writeSync(fd, chunk, 0, chunk.length, off);
  closeSync(fd);

  const results = {};
  const record = (name, seconds) => {
    (results[name] ??= []).push(size / seconds / 1e9);
  };

  const runners = {
    'fs.readSync': async () => {
      const fd = openSync(file, 'r');
      const buf = new Uint8Array(block);
      const t = performance.now();
      for (let off = 0; off < size; off += block) readSync(fd, buf, 0, block, off);
      record('fs.readSync', (performance.now() - t) / 1000);
      closeSync(fd);
    },
    'FileHandle.read depth 1': async () => {
      const fh = await open(file, 'r');
      const buf = new Uint8Array(block);
      const t = performance.now();
      for (let off = 0; off < size; off += block) await fh.read(buf, 0, block, off);
      record('FileHandle.read depth 1', (performance.now() - t) / 1000);
      await fh.close();
    },
    'FileHandle.read depth 8': async () => {
      const fh = await open(file, 'r');
      const depth = 8;
      const bufs = Array.from({ length: depth }, () => new Uint8Array(block));
      let next = 0;
      const t = performance.now();
      await Promise.all(
        bufs.map(async (buf) => {
          while (next < size) {
            const off = next;
            next += block;
            await fh.read(buf, 0, block, off);
          }
        }),
      );
      record('FileHandle.read depth 8', (performance.now() - t) / 1000);
      await fh.close();
    },
  };

  const here = dirname(fileURLToPath(import.meta.url));
  const dist = join(here, '..', 'dist', 'index.js');
  if (existsSync(dist)) {
    const { createNodeStorage } = await import(pathToFileURL(dist).href);
    runners['createNodeStorage read depth 1'] = async () => {
      const s = await createNodeStorage(file, { readOnly: true });
      const buf = new Uint8Array(block);
      const t = performance.now();
      for (let off = 0; off < size; off += block) await s.read(buf, off);
      record('createNodeStorage read depth 1', (performance.now() - t) / 1000);
      await s.close();
    };
  } else {
    console.log('(build the package to include createNodeStorage: turbo run build --filter=@qcow2/storage-node)');
  }

  for (let r = 0; r < rounds; r++) for (const run of Object.values(runners)) await run();

  console.log(`node ${process.version}, ${sizeMiB} MiB file, ${blockKiB} KiB sequential reads, ${rounds} rounds (page cache warm)`);
  for (const [name, values] of Object.entries(results)) {
    const sorted = [...values].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)];
    console.log(`${name.padEnd(32)} median ${median.toFixed(2)} GB/s   (min ${sorted[0].toFixed(2)}, max ${sorted.at(-1).toFixed(2)})`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
