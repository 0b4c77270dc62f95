#!/usr/bin/env node
// Adapter benchmarks of issue 7, each in its own runtime, and the ratios they are held to:
//
//   node bench/adapters.mjs [--size-mib 256] [--rounds 15] [--http-rounds 3] [--only node,deno,chromium,http] [--no-build]
//
// - node, deno, chromium: sequential 64 KiB reads of a fully allocated image (written by the
//   engine in that runtime) through @qcow2/engine over the runtime's adapter, against the adapter
//   alone reading the same number of bytes: engine overhead <= 20%.
//   (packages/adapters/{node,deno,opfs}/bench/engine-overhead.*)
// - http: a full convert -O raw through the engine over loopback HTTP (createHttpStorage) against
//   reading the file with plain fetch Range requests: within 2x.
//   (packages/adapters/http/bench/engine-convert.mjs)
//
// Builds the packages the Node and Deno scripts import (dist files) unless --no-build; the
// Chromium script bundles the TypeScript sources itself. Not a test: it prints, and exits 0
// whatever the ratios (1 only when a script fails to run).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const sizeMiB = option('size-mib', '256');
const rounds = option('rounds', '15');
const httpRounds = option('http-rounds', '3');
const only = new Set(option('only', 'node,deno,chromium,http').split(','));
const bin = join(root, 'node_modules', '.bin');

if (!args.includes('--no-build')) {
  console.log('==> building the packages the benchmarks import');
  const filters = ['@qcow2/engine', '@qcow2/storage-node', '@qcow2/storage-deno', '@qcow2/storage-http', '@qcow2/cli'];
  const build = spawnSync(join(bin, 'turbo'), ['run', 'build', '--output-logs=errors-only', ...filters.map((f) => `--filter=${f}`)], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}`, TURBO_TELEMETRY_DISABLED: '1' },
  });
  if (build.status !== 0) process.exit(1);
}

const denoDir = join(root, 'packages', 'adapters', 'deno');
const benches = [
  {
    key: 'node',
    title: 'Node: engine over storage-node vs storage-node',
    cmd: process.execPath,
    argv: [join(root, 'packages/adapters/node/bench/engine-overhead.mjs'), sizeMiB, '64', rounds],
    cwd: root,
  },
  {
    key: 'deno',
    title: 'Deno: engine over storage-deno vs storage-deno',
    cmd: join(denoDir, 'node_modules', '.bin', 'deno'),
    argv: [
      'run',
      '--no-config',
      '--no-lock',
      '--no-remote',
      '--no-npm',
      '--import-map=bench/engine-import-map.json',
      '--allow-read',
      '--allow-write',
      'bench/engine-overhead.js',
      sizeMiB,
      '64',
      rounds,
    ],
    cwd: denoDir,
  },
  {
    key: 'chromium',
    title: 'Chromium worker: engine over storage-opfs vs storage-opfs',
    cmd: process.execPath,
    argv: [join(root, 'packages/adapters/opfs/bench/engine-overhead.mjs'), sizeMiB, '64', rounds, 'disk'],
    cwd: root,
  },
  {
    key: 'http',
    title: 'HTTP (loopback): convert -O raw through the engine vs plain fetch Range requests',
    cmd: process.execPath,
    argv: [join(root, 'packages/adapters/http/bench/engine-convert.mjs'), sizeMiB, httpRounds],
    cwd: root,
  },
];

const results = [];
let failed = false;
for (const bench of benches) {
  if (!only.has(bench.key)) continue;
  console.log(`\n==> ${bench.title}`);
  if (!existsSync(bench.cmd)) {
    console.log(`    skipped: ${bench.cmd} is missing`);
    continue;
  }
  const run = spawnSync(bench.cmd, bench.argv, {
    cwd: bench.cwd,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, DENO_NO_UPDATE_CHECK: '1', NO_COLOR: '1' },
  });
  const lines = (run.stdout ?? '').trimEnd().split('\n');
  for (const line of lines) if (!line.startsWith('RESULT ')) console.log(`    ${line}`);
  const last = lines.findLast((line) => line.startsWith('RESULT '));
  if (run.status !== 0 || last === undefined) {
    console.log(`    FAILED (exit ${run.status}): ${run.stderr}`);
    failed = true;
    continue;
  }
  results.push({ key: bench.key, ...JSON.parse(last.slice('RESULT '.length)) });
}

console.log('\n==> ratios');
for (const r of results) {
  if (r.key === 'http') {
    const verdict = (x) => (x <= 2 ? 'ok' : 'OVER');
    console.log(
      `  ${r.runtime.padEnd(44)} convert -O raw / fetch (64 KiB ranges) ${r.engineRatio.toFixed(2)}x, / fetch (2 MiB ranges) ${r.engineRatio2m.toFixed(2)}x ` +
        `[target <= 2x: ${verdict(Math.max(r.engineRatio, r.engineRatio2m))}]`,
    );
    console.log(`  ${''.padEnd(44)} (the engine's reads alone, no output file: ${r.readRatio2m.toFixed(2)}x the 2 MiB fetch time)`);
    if (r.cliRatio !== undefined) {
      console.log(
        `  ${''.padEnd(44)} qcow2 convert (CLI) / fetch (64 KiB) ${r.cliRatio.toFixed(2)}x, / fetch (2 MiB) ${r.cliRatio2m.toFixed(2)}x ` +
          `[${verdict(Math.max(r.cliRatio, r.cliRatio2m))}]`,
      );
    } else console.log(`  ${''.padEnd(44)} qcow2 convert (CLI): skipped (${r.cliSkipped})`);
  } else {
    console.log(
      `  ${r.runtime.padEnd(44)} engine / ${r.adapter} time ${r.ratio.toFixed(3)} (overhead ${((r.ratio - 1) * 100).toFixed(1)}%) ` +
        `[target <= 20%: ${r.ratio <= 1.2 ? 'ok' : 'OVER'}]`,
    );
  }
}
process.exit(failed ? 1 : 0);
