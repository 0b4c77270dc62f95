#!/usr/bin/env node
// Engine write throughput (after `turbo run build --filter=@qcow2/engine --filter=@qcow2/storage-node`):
//
//   node packages/engine/bench/write.mjs [sizeMiB=1024] [rounds=5] [requestKiB=64]
//
// Allocating sequential writes over a fresh qcow2 image (qemu-img create, 64 KiB clusters), in
// alternating pairs, each on its own fresh image:
//   engine d1   — openImage({ readOnly: false, cacheMode: 'unsafe' }) over createNodeStorage,
//                 image.write(buf, offset) awaited one at a time; the time includes close()
//                 (metadata written back)
//   engine d64  — the same with 64 writes in flight
//   qemu-img    — `qemu-img bench -w -t unsafe -c N -s 64k -d 1` and `-d 64` ("Run completed in")
// Reports the median and best wall-clock MB/s and the engine / qemu-img ratios of the medians.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openImage } from '@qcow2/engine';
import { createNodeStorage } from '@qcow2/storage-node';

const sizeMiB = Number(process.argv[2] ?? 1024);
const rounds = Number(process.argv[3] ?? 5);
const request = Number(process.argv[4] ?? 64) * 1024;
const size = sizeMiB * 1024 * 1024;
const count = size / request;
const dir = mkdtempSync(join(tmpdir(), 'qcow2-engine-wbench-'));
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const mbps = (seconds) => size / seconds / 1e6;

function fresh(name) {
  const file = join(dir, name);
  rmSync(file, { force: true });
  const r = spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, String(size)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return file;
}

async function engine(depth) {
  const file = fresh('engine.qcow2');
  const storage = await createNodeStorage(file);
  const image = await openImage(storage, { readOnly: false, cacheMode: 'unsafe' });
  const buf = new Uint8Array(request).fill(0x5a);
  const t = performance.now();
  if (depth === 1) {
    for (let off = 0; off < size; off += request) await image.write(buf, off);
  } else {
    let next = 0;
    const worker = async () => {
      while (next < size) {
        const off = next;
        next += request;
        await image.write(buf, off);
      }
    };
    await Promise.all(Array.from({ length: depth }, worker));
  }
  await image.close();
  const seconds = (performance.now() - t) / 1000;
  await storage.close();
  return mbps(seconds);
}

function qemu(depth) {
  const file = fresh('qemu.qcow2');
  const out = spawnSync('qemu-img', ['bench', '-w', '-t', 'unsafe', '-c', String(count), '-d', String(depth), '-s', String(request), '-f', 'qcow2', file], { encoding: 'utf8' });
  const m = /Run completed in ([0-9.]+) seconds/.exec(out.stdout);
  if (!m) throw new Error(out.stderr || out.stdout);
  return mbps(Number(m[1]));
}

try {
  const results = { 'engine d1': [], 'qemu-img d1': [], 'engine d64': [], 'qemu-img d64': [] };
  await engine(1); // warm the JIT
  for (let r = 0; r < rounds; r++) {
    for (const depth of [1, 64]) {
      // Alternate which goes first.
      if (r % 2 === 0) {
        results[`engine d${depth}`].push(await engine(depth));
        results[`qemu-img d${depth}`].push(qemu(depth));
      } else {
        results[`qemu-img d${depth}`].push(qemu(depth));
        results[`engine d${depth}`].push(await engine(depth));
      }
    }
  }
  console.log(`# ${count} allocating sequential ${request / 1024} KiB writes over a fresh ${sizeMiB} MiB image, cache unsafe, ${rounds} rounds (MB/s)`);
  for (const [name, xs] of Object.entries(results)) {
    console.log(`${name.padEnd(14)} median ${median(xs).toFixed(0).padStart(6)}  best ${Math.max(...xs).toFixed(0).padStart(6)}`);
  }
  for (const depth of [1, 64]) {
    const ratio = median(results[`qemu-img d${depth}`]) / median(results[`engine d${depth}`]);
    console.log(`depth ${depth}: ours/qemu wall-time ratio ${ratio.toFixed(2)}`);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
