#!/usr/bin/env node
// Read benchmark of issue 3, side by side with qemu-img in the same run.
//
//   node bench/read.mjs [--size-mib 1024] [--pairs 7] [--depth 64]
//
// 1. qcow2 bench vs qemu-img bench: sequential 64 KiB reads over a fully allocated image (every
//    cluster holds random data), alternating which tool runs first in each pair. Reports each
//    pair and the median of (qemu time / our time) = our throughput / qemu's.
// 2. Engine vs raw storage: reading the whole guest disk in 64 KiB requests through the engine vs
//    reading the same number of bytes from the file through @qcow2/storage-node directly.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const sizeMiB = opt('size-mib', 1024);
const pairs = opt('pairs', 7);
const depth = opt('depth', 64);
const reqSize = 65536;
const count = (sizeMiB * 1024 * 1024) / reqSize;

const qcow2Bin = join(root, 'node_modules/.bin/qcow2');
const dir = mkdtempSync(join(tmpdir(), 'qcow2-bench-'));
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

try {
  const raw = join(dir, 'src.raw');
  const image = join(dir, 'image.qcow2');
  const fd = openSync(raw, 'w');
  const chunk = new Uint8Array(16 << 20);
  for (let done = 0; done < sizeMiB * 1024 * 1024; done += chunk.length) {
    randomFillSync(chunk);
    writeSync(fd, chunk);
  }
  closeSync(fd);
  execFileSync('qemu-img', ['convert', '-O', 'qcow2', raw, image]);
  rmSync(raw);
  execFileSync('cat', [image], { stdio: ['ignore', 'ignore', 'inherit'], maxBuffer: 0 }); // warm the page cache

  const benchArgs = ['bench', '-c', String(count), '-d', String(depth), '-s', '64k', '-f', 'qcow2', image];
  const time = (cmd) => {
    const r = spawnSync(cmd, benchArgs, { encoding: 'utf8' });
    const m = /Run completed in ([0-9.]+) seconds/.exec(r.stdout);
    if (r.status !== 0 || !m) throw new Error(`${cmd} bench failed: ${r.stderr || r.stdout}`);
    return Number(m[1]);
  };
  console.log(`# qcow2 bench vs qemu-img bench: ${count} x 64 KiB sequential reads, depth ${depth}, ${sizeMiB} MiB image`);
  const ratios = [];
  for (let p = 0; p < pairs; p++) {
    let ours, qemu;
    if (p % 2 === 0) {
      qemu = time('qemu-img');
      ours = time(qcow2Bin);
    } else {
      ours = time(qcow2Bin);
      qemu = time('qemu-img');
    }
    ratios.push(qemu / ours);
    console.log(`pair ${p + 1}: qemu-img ${qemu.toFixed(3)} s, qcow2 ${ours.toFixed(3)} s, throughput ratio ${(qemu / ours).toFixed(2)}x`);
  }
  console.log(`median throughput ratio (ours / qemu-img): ${median(ratios).toFixed(2)}x (target >= 1.5x)`);

  // Engine vs the raw storage adapter, in process.
  const { openImage } = await import('@qcow2/engine');
  const { createNodeStorage } = await import('@qcow2/storage-node');
  const engineVsRaw = [];
  for (let p = 0; p < pairs; p++) {
    const buf = new Uint8Array(reqSize);
    const s1 = await createNodeStorage(image, { readOnly: true });
    const img = await openImage(s1, { readOnly: true });
    let t = performance.now();
    for (let off = 0; off < img.virtualSize; off += reqSize) await img.read(buf, off);
    const engineMs = performance.now() - t;
    await img.close();
    await s1.close(); // the engine closes only what it opened itself
    const s2 = await createNodeStorage(image, { readOnly: true });
    t = performance.now();
    for (let off = 0; off < sizeMiB * 1024 * 1024; off += reqSize) await s2.read(buf, off);
    const rawMs = performance.now() - t;
    await s2.close();
    engineVsRaw.push(engineMs / rawMs);
    console.log(`pair ${p + 1}: engine ${engineMs.toFixed(1)} ms, raw storage ${rawMs.toFixed(1)} ms, overhead ${((engineMs / rawMs - 1) * 100).toFixed(1)}%`);
  }
  console.log(`median engine overhead vs raw storage: ${((median(engineVsRaw) - 1) * 100).toFixed(1)}% (target <= 15%)`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
