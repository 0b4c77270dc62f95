// Sequential reads of a file in OPFS from a dedicated worker in headless Chromium (Debian's
// /usr/bin/chromium through playwright-core): the raw FileSystemSyncAccessHandle vs
// createOpfsStorage (awaited one read at a time), and — for scale — the page-side
// createOpfsWorkerStorage, one message round trip per read. Prints GB/s medians and the ratios.
//
//   node packages/adapters/opfs/bench/read-throughput.mjs [sizeMiB=256] [blockKiB=64] [rounds=5] [profile=both]
//
// profile: 'disk' (a persistent context over a fresh user-data dir: OPFS on disk, as for a user),
// 'memory' (a non-persistent, incognito-like context: OPFS in memory, capped near 1 GiB), or 'both'.
//
// Bundles the test harness (test/browser/run-in-chromium.ts) with esbuild to run it from plain Node.
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as esbuild from 'esbuild';

const sizeMiB = Number(process.argv[2] ?? 256);
const blockKiB = Number(process.argv[3] ?? 64);
const rounds = Number(process.argv[4] ?? 5);
const profiles = { disk: ['disk'], memory: ['memory'], both: ['disk', 'memory'] }[process.argv[5] ?? 'both'];
if (profiles === undefined) throw new Error(`profile must be disk, memory or both, not ${process.argv[5]}`);

const here = dirname(fileURLToPath(import.meta.url));
const pkg = join(here, '..');
// Inside the package's node_modules, so the bundle's bare imports (esbuild, playwright-core) resolve.
const outDir = join(pkg, 'node_modules', '.cache', 'qcow2-opfs-bench');
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
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

for (const profile of profiles) {
  const { report, logs, browserVersion } = await runInChromium({
    entries: { page: join(here, 'bench-page.ts'), worker: join(here, 'bench-worker.ts') },
    query: `sizeMiB=${sizeMiB}&blockKiB=${blockKiB}&rounds=${rounds}`,
    timeoutMs: 900_000,
    persistentProfile: profile === 'disk',
  });
  if (report.fatal) {
    console.error(report.fatal.message, '\n', logs.join('\n'));
    process.exit(1);
  }
  console.log(
    `${browserVersion}, OPFS ${profile === 'disk' ? 'on disk (persistent profile)' : 'in memory (non-persistent context)'}: ` +
      `${report.size / 2 ** 20} MiB, sequential ${report.block / 1024} KiB reads, ${report.rounds} rounds`,
  );
  const medians = {};
  for (const [name, values] of Object.entries(report.results)) {
    medians[name] = median(values);
    console.log(`  ${name.padEnd(16)} median ${medians[name].toFixed(2)} GB/s  (${values.map((v) => v.toFixed(2)).join(' ')})`);
  }
  console.log(`  adapter / raw sync handle: ${(medians['adapter'] / medians['raw']).toFixed(3)}`);
  console.log(`  page via worker / raw:     ${(medians['page via worker'] / medians['raw']).toFixed(3)}`);
}
