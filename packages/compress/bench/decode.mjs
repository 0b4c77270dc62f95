// Decode (and encode) throughput of every compressed-cluster implementation, on clusters of
// typical content: Node's own executable (machine code and data), English-like text, a mix of
// runs / text / random / long repeats, and a mostly-zero sparse cluster. MB/s of cluster data.
// Needs a build (`pnpm --filter @qcow2/compress build`):
//
//   node packages/compress/bench/decode.mjs [clusterKiB=64] [totalMiB=64]
import { readFileSync } from 'node:fs';
import { deflateRawSync } from 'node:zlib';
import { inflateSync as fflateInflate } from 'fflate';
import { inflateRaw as pakoInflateRaw } from 'pako';
import { decompress as fzstdDecompress } from 'fzstd';
import { Zstd } from '@hpcc-js/wasm-zstd';
import { jsZlibCodec, jsZstdCodec, nodeZlibCodec, zstdFrameLength } from '../dist/node.js';

const clusterKiB = Number(process.argv[2] ?? 64);
const totalMiB = Number(process.argv[3] ?? 64);
const C = clusterKiB * 1024;
const count = Math.max(4, Math.floor((totalMiB * 1024 * 1024) / C));

function xorshift(seed) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}
const WORDS = ['qcow2 ', 'the ', 'cluster ', 'refcount ', 'of ', 'and ', '\n', 'snapshot ', 'image ', 'a '];
function text(size, seed) {
  const next = xorshift(seed);
  const out = new Uint8Array(size);
  for (let i = 0; i < size; ) {
    const w = WORDS[next() % WORDS.length];
    for (let k = 0; k < w.length && i < size; k++) out[i++] = w.charCodeAt(k);
  }
  return out;
}
function mixed(size, seed) {
  const next = xorshift(seed);
  const out = new Uint8Array(size);
  for (let i = 0; i < size; ) {
    const kind = next() % 4;
    const end = Math.min(size, i + 1 + (next() % 5000));
    if (kind === 0) for (; i < end; i++) out[i] = next() & 0xff;
    else if (kind === 1) for (; i < end; i++) out[i] = out[Math.max(0, i - 40000) + (i % 97)];
    else if (kind === 2) out.fill(next() & 0xff, i, (i = end));
    else out.set(text(end - i, next()), i), (i = end);
  }
  return out;
}
function sparse(size, seed) {
  const next = xorshift(seed);
  const out = new Uint8Array(size);
  for (let k = 0; k < size >>> 9; k++) out[next() % size] = next() & 0xff;
  return out;
}
const exe = readFileSync(process.execPath);
function binary(size, seed) {
  const at = (seed * 7919 * 4096) % Math.max(1, exe.length - size);
  return new Uint8Array(exe.subarray(at, at + size));
}

const zstd = await Zstd.load();
const kinds = { binary, text, mixed, sparse };

function time(fn, rounds = 3) {
  let best = Infinity;
  for (let r = 0; r < rounds; r++) {
    const t = performance.now();
    fn();
    best = Math.min(best, performance.now() - t);
  }
  return best / 1000;
}
const mbps = (bytes, seconds) => (bytes / seconds / 1e6).toFixed(0).padStart(6);

console.log(`${count} clusters of ${clusterKiB} KiB per kind (best of 3), MB/s of cluster data\n`);
const rows = [];
for (const [kind, make] of Object.entries(kinds)) {
  const data = Array.from({ length: count }, (_, i) => make(C, i + 1));
  const bytes = count * C;
  const deflated = [];
  const zstded = [];
  const encodeSeconds = {};
  encodeSeconds['zlib js (pako)'] = time(() => {
    deflated.length = 0;
    for (const d of data) deflated.push(jsZlibCodec.compress(d));
  }, 1);
  const deflatedNode = [];
  encodeSeconds['zlib node:zlib'] = time(() => {
    for (const d of data) deflatedNode.push(deflateRawSync(d, { level: 6, windowBits: 12, memLevel: 9 }));
  }, 1);
  encodeSeconds['zstd wasm (libzstd 1.5.7)'] = time(() => {
    for (const d of data) zstded.push(zstd.compress(d, 3));
  }, 1);
  const zl = (await Promise.all(deflated)).map((s, i) => s ?? deflatedNode[i]);
  const zs = zstded;
  const ratio = (streams) => (streams.reduce((n, s) => n + s.length, 0) / bytes).toFixed(3);
  const dst = new Uint8Array(C);
  const decode = {
    'zlib js (ours)': () => zl.forEach((s) => jsZlibCodec.decompress(s, dst)),
    'zlib node:zlib': () => zl.forEach((s) => nodeZlibCodec.decompress(s, dst)),
    'zlib fflate 0.8.3': () => zl.forEach((s) => fflateInflate(s, { out: dst })),
    'zlib pako 3.0.3': () => zl.forEach((s) => pakoInflateRaw(s)),
    'zstd js (ours)': () => zs.forEach((s) => jsZstdCodec.decompress(s, dst)),
    // fzstd only accepts the exact frame; it is faster allocating its own output than into dst.
    'zstd fzstd 0.1.1 (cut)': () => zs.forEach((s) => fzstdDecompress(s.subarray(0, zstdFrameLength(s)))),
    'zstd fzstd 0.1.1 (cut, dst)': () => zs.forEach((s) => fzstdDecompress(s.subarray(0, zstdFrameLength(s)), dst)),
    // libzstd through @hpcc-js/wasm-zstd's wrapper (copies in and out of the wasm heap).
    'zstd wasm libzstd': () => zs.forEach((s) => zstd.decompress(s)),
  };
  console.log(`${kind}: deflate ratio ${ratio(zl)}, zstd ratio ${ratio(zs)}`);
  for (const [name, fn] of Object.entries(decode)) {
    fn(); // warm up
    const s = time(fn);
    rows.push({ kind, op: 'decode', name, mbps: mbps(bytes, s) });
    console.log(`  decode ${name.padEnd(26)} ${mbps(bytes, s)} MB/s`);
  }
  for (const [name, s] of Object.entries(encodeSeconds)) {
    console.log(`  encode ${name.padEnd(26)} ${mbps(bytes, s)} MB/s`);
  }
}
