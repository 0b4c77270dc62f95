// The page of the OPFS read benchmark: has the worker write and time the file, then times the
// same reads from the page through createOpfsWorkerStorage (one message round trip per read).
import { createOpfsWorkerStorage, createWorkerClient } from '@qcow2/storage-opfs';
import { runAndReport } from '../test/browser/report.js';

const BENCH_PATH = 'bench/data.bin';

void runAndReport(async () => {
  const params = new URLSearchParams(location.search);
  const size = Number(params.get('sizeMiB') ?? 256) * 1024 * 1024;
  const block = Number(params.get('blockKiB') ?? 64) * 1024;
  const rounds = Number(params.get('rounds') ?? 5);
  const worker = new Worker('/worker.js', { type: 'module' });
  const client = createWorkerClient(worker);
  const written = (await client.call('bench.prepare', [size])) as number;
  const results = (await client.call('bench.measure', [size, block, rounds])) as Record<string, number[]>;
  const page: number[] = [];
  const buffer = new Uint8Array(block);
  for (let round = 0; round < rounds; round++) {
    const storage = await createOpfsWorkerStorage(client, BENCH_PATH, { readOnly: true });
    const t = performance.now();
    for (let at = 0; at < size; at += block) await storage.read(buffer, at);
    page.push(size / ((performance.now() - t) / 1000) / 1e9);
    await storage.close();
  }
  results['page via worker'] = page;
  const root = await navigator.storage.getDirectory();
  await root.removeEntry('bench', { recursive: true });
  return { size: written, block, rounds, userAgent: navigator.userAgent, results };
});
