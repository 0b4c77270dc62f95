// Engine overhead in headless Chromium (Debian's /usr/bin/chromium through playwright-core): in a
// dedicated worker, sequential 64 KiB reads of a 256 MiB fully allocated qcow2 image in OPFS
// through @qcow2/engine over createOpfsStorage, against createOpfsStorage reading the same number
// of bytes of the file. The image is written by the engine first, in the worker.
//
//   node packages/adapters/opfs/bench/engine-overhead.mjs [sizeMiB=256] [blockKiB=64] [rounds=15] [profile=disk]
//
// profile: 'disk' (a persistent context over a fresh user-data dir: OPFS on disk, as for a user)
// or 'memory' (a non-persistent context: OPFS in memory, capped near 1 GiB). The page and worker
// are bundled from TypeScript sources (the `@qcow2/source` condition): nothing needs building.
// Prints one line per round, the medians, and last a `RESULT {json}` line (bench/adapters.mjs reads it).
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as esbuild from 'esbuild';

const sizeMiB = Number(process.argv[2] ?? 256);
const blockKiB = Number(process.argv[3] ?? 64);
const rounds = Number(process.argv[4] ?? 15);
const profile = process.argv[5] ?? 'disk';
if (profile !== 'disk' && profile !== 'memory') throw new Error(`profile must be disk or memory, not ${profile}`);

const here = dirname(fileURLToPath(import.meta.url));
const pkg = join(here, '..');
// Inside the package's node_modules, so the bundle's bare imports (esbuild, playwright-core) resolve.
const outDir = join(pkg, 'node_modules', '.cache', 'qcow2-opfs-engine-bench');
mkdirSync(outDir, { recursive: true });
const harness = join(outDir, 'run-in-chromium.mjs');
await esbuild.build({
  entryPoints: [join(pkg, 'test', 'browser', 'run-in-chromium.ts')],
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  packages: 'external',
  outfile: harness,
  logLevel: 'error',
});
const { runInChromium, hasChromium, CHROMIUM_PATH } = await import(pathToFileURL(harness).href);
if (!hasChromium()) {
  console.error(`${CHROMIUM_PATH} is missing: run scripts/ensure-chromium.sh as root`);
  process.exit(1);
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};

const { report, logs, browserVersion } = await runInChromium({
  entries: { page: join(here, 'engine-bench-page.ts'), worker: join(here, 'engine-bench-worker.ts') },
  query: `sizeMiB=${sizeMiB}&blockKiB=${blockKiB}&rounds=${rounds}`,
  timeoutMs: 900_000,
  persistentProfile: profile === 'disk',
});
if (report.fatal) {
  console.error(report.fatal.message, '\n', logs.join('\n'));
  process.exit(1);
}
const size = report.size;
report.raw.forEach((r, i) => {
  const e = report.engine[i];
  console.log(`round ${i + 1}: storage-opfs ${(size / r / 1e9).toFixed(2)} GB/s, engine ${(size / e / 1e9).toFixed(2)} GB/s, engine/raw time ${(e / r).toFixed(3)}`);
});
// Per-round pairs (same load), as in the Node and Deno scripts.
const ratio = median(report.engine.map((e, i) => e / report.raw[i]));
console.log(
  `${browserVersion}, dedicated worker, OPFS ${profile === 'disk' ? 'on disk' : 'in memory'}, ${sizeMiB} MiB allocated image ` +
    `(file ${(report.fileSize / 2 ** 20).toFixed(1)} MiB), sequential ${blockKiB} KiB reads, ${rounds} rounds: ` +
    `storage-opfs ${(size / median(report.raw) / 1e9).toFixed(2)} GB/s, engine ${(size / median(report.engine) / 1e9).toFixed(2)} GB/s, ` +
    `engine overhead ${((ratio - 1) * 100).toFixed(1)}% (target <= 20%)`,
);
console.log(
  `RESULT ${JSON.stringify({
    runtime: `chromium ${browserVersion} worker, OPFS ${profile}`,
    adapter: 'storage-opfs',
    sizeMiB,
    blockKiB,
    rounds,
    rawSeconds: median(report.raw),
    engineSeconds: median(report.engine),
    ratio,
    ratioOfMedians: median(report.engine) / median(report.raw),
  })}`,
);
