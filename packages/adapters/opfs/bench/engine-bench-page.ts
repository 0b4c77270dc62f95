// The page of the engine-overhead benchmark in Chromium: has its dedicated worker write the
// image and time the reads, and reports the timings.
import { createWorkerClient } from '@qcow2/storage-opfs';
import { runAndReport } from '../test/browser/report.js';

void runAndReport(async () => {
  const params = new URLSearchParams(location.search);
  const size = Number(params.get('sizeMiB') ?? 256) * 1024 * 1024;
  const block = Number(params.get('blockKiB') ?? 64) * 1024;
  const rounds = Number(params.get('rounds') ?? 15);
  const worker = new Worker('/worker.js', { type: 'module' });
  const client = createWorkerClient(worker);
  try {
    const fileSize = (await client.call('bench.prepare', [size])) as number;
    const times = (await client.call('bench.measure', [size, block, rounds])) as { raw: number[]; engine: number[] };
    return { size, fileSize, block, rounds, userAgent: navigator.userAgent, ...times };
  } finally {
    client.close();
    worker.terminate();
  }
});
