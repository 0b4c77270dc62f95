// The page of the end-to-end browser test: has the worker run the engine over OPFS (and over
// HTTP for the overlay's backing file), then opens the image the worker created with the engine
// here on the page, over createOpfsWorkerStorage, and reports everything as JSON.
import { openImage } from '@qcow2/engine';
import { createOpfsWorkerStorage, createWorkerClient } from '@qcow2/storage-opfs';
import { viewOf } from './e2e-image.js';
import type { E2ePageReport, E2eParams, WorkerE2eReport } from './e2e-report.js';
import { runAndReport } from './report.js';

void runAndReport(async (): Promise<E2ePageReport> => {
  const params = (await (await fetch('/e2e/params.json')).json()) as E2eParams;
  const worker = new Worker('/worker.js', { type: 'module' });
  const client = createWorkerClient(worker);
  try {
    const report = (await client.call('e2e.run', [params])) as WorkerE2eReport;
    const storage = await createOpfsWorkerStorage(client, 'e2e/created.qcow2', { readOnly: true });
    let pageView;
    try {
      const image = await openImage(storage, { name: 'e2e/created.qcow2' });
      pageView = await viewOf(image, params.digestChunk);
      await image.close();
    } finally {
      await storage.close();
    }
    return { worker: report, pageView };
  } finally {
    client.close();
    worker.terminate();
  }
});
