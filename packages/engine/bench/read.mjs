#!/usr/bin/env node
// Engine read throughput (after `turbo run build --filter=@qcow2/engine --filter=@qcow2/storage-node`):
//
//   node packages/engine/bench/read.mjs [sizeMiB=1024] [rounds=5] [requestKiB=64]
//
// A fully allocated qcow2 image (random data, written by qemu-img convert) is read from start to
// end in sequential requests, awaited one at a time:
//   engine   — openImage over createNodeStorage, image.read(buf, offset)
//   storage  — the same storage adapter reading the same number of bytes straight from the file
//   qemu-img — `qemu-img bench -c N -d 1 -s 64k` (queue depth 1, like the loops above) and -d 64
// Reports the best and median MB/s of each (wall clock), the same in CPU time (user + system of
// the process doing the reads: this machine is often shared, and CPU time is what one run costs
// whatever else runs), and the engine / storage and engine / qemu-img ratios.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openImage } from '@qcow2/engine';
import { createNodeStorage } from '@qcow2/storage-node';

const sizeMiB = Number(process.argv[2] ?? 1024);
const rounds = Number(process.argv[3] ?? 5);
const request = Number(process.argv[4] ?? 64) * 1024;
const size = sizeMiB * 1024 * 1024;
const count = size / request;
const dir = mkdtempSync(join(tmpdir(), 'qcow2-engine-bench-'));
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const mbps = (seconds) => size / seconds / 1e6;

try {
  const raw = join(dir, 'src.raw');
  const file = join(dir, 'image.qcow2');
  const fd = openSync(raw, 'w');
  const chunk = new Uint8Array(16 << 20);
  for (let done = 0; done < size; done += chunk.length) {
    randomFillSync(chunk);
    writeSync(fd, chunk);
  }
  closeSync(fd);
  execFileSync('qemu-img', ['convert', '-O', 'qcow2', raw, file]);
  rmSync(raw);

  const results = { engine: [], storage: [], 'qemu-img d1': [], 'qemu-img d64': [] };
  const cpuResults = { engine: [], storage: [], 'qemu-img d1': [], 'qemu-img d64': [] };
  const cpu = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  };
  const buf = new Uint8Array(request);
  {
    // Warm the page cache (and the JIT) before measuring.
    const storage = await createNodeStorage(file, { readOnly: true });
    for (let off = 0; off < size + (2 << 20); off += request) await storage.read(buf, off);
    await storage.close();
  }
  for (let r = 0; r < rounds; r++) {
    {
      const storage = await createNodeStorage(file, { readOnly: true });
      const image = await openImage(storage, { name: file });
      const t = performance.now();
      const c = cpu();
      for (let off = 0; off < size; off += request) await image.read(buf, off);
      cpuResults.engine.push(mbps(cpu() - c));
      results.engine.push(mbps((performance.now() - t) / 1000));
      if (r === 0) console.log('engine stats', image.stats());
      await image.close();
      await storage.close();
    }
    {
      // The same bytes from the file (the data clusters follow the metadata: start at 1 MiB).
      const storage = await createNodeStorage(file, { readOnly: true });
      const t = performance.now();
      const c = cpu();
      for (let off = 0; off < size; off += request) await storage.read(buf, off + (1 << 20));
      cpuResults.storage.push(mbps(cpu() - c));
      results.storage.push(mbps((performance.now() - t) / 1000));
      await storage.close();
    }
    for (const depth of [1, 64]) {
      const out = spawnSync('/usr/bin/time', ['-f', 'CPU %U %S', 'qemu-img', 'bench', '-c', String(count), '-d', String(depth), '-s', String(request), '-f', 'qcow2', file], { encoding: 'utf8' });
      const m = /Run completed in ([0-9.]+) seconds/.exec(out.stdout);
      const c = /CPU ([0-9.]+) ([0-9.]+)/.exec(out.stderr);
      if (!m) throw new Error(out.stderr || out.stdout);
      results[`qemu-img d${depth}`].push(mbps(Number(m[1])));
      // (CPU time of the whole qemu-img process, opening the image included.)
      if (c) cpuResults[`qemu-img d${depth}`].push(mbps(Number(c[1]) + Number(c[2])));
    }
  }
  console.log(`# ${count} sequential ${request / 1024} KiB reads of a fully allocated ${sizeMiB} MiB image, ${rounds} rounds (MB/s)`);
  for (const [name, xs] of Object.entries(results)) {
    console.log(`${name.padEnd(14)} best ${Math.max(...xs).toFixed(0).padStart(6)}  median ${median(xs).toFixed(0).padStart(6)}`);
  }
  console.log('# the same in CPU time (MB per CPU second)');
  for (const [name, xs] of Object.entries(cpuResults)) {
    if (xs.length > 0) console.log(`${name.padEnd(14)} best ${Math.max(...xs).toFixed(0).padStart(6)}  median ${median(xs).toFixed(0).padStart(6)}`);
  }
  for (const [label, set] of [['wall', results], ['cpu', cpuResults]]) {
    const m = Object.fromEntries(Object.entries(set).map(([k, xs]) => [k, median(xs)]));
    console.log(`${label}: engine / storage ${(m.engine / m.storage).toFixed(3)}, engine / qemu-img d1 ${(m.engine / m['qemu-img d1']).toFixed(2)}, engine / qemu-img d64 ${(m.engine / m['qemu-img d64']).toFixed(2)}`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
