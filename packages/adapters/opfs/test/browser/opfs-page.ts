// The page of the OPFS browser test: checks the main-thread refusal, has the worker run its
// suite, runs the conformance suite through createOpfsWorkerStorage, and reports everything.
import { Qcow2Error, runConformance, type ConformanceContext, type Storage } from '@qcow2/storage';
import {
  createOpfsStorage,
  createOpfsWorkerStorage,
  createWorkerClient,
  type OpfsWorkerStorage,
} from '@qcow2/storage-opfs';
import type { OpfsPageReport, WorkerSuiteReport } from './opfs-report.js';
import { describeError, errorOf, resultsJson, runAndReport } from './report.js';

async function fileExists(name: string): Promise<boolean> {
  const root = await navigator.storage.getDirectory();
  try {
    await root.getFileHandle(name);
    return true;
  } catch {
    return false;
  }
}

void runAndReport(async (): Promise<OpfsPageReport> => {
  const root = await navigator.storage.getDirectory();
  await root.removeEntry('p', { recursive: true }).catch(() => undefined);

  const mainError = await errorOf(() => createOpfsStorage('main-thread.bin', { create: true }));
  const mainThread = { ...(mainError && { error: mainError }), fileCreated: await fileExists('main-thread.bin') };

  const worker = new Worker('/worker.js', { type: 'module' });
  const client = createWorkerClient(worker);
  const workerReport = (await client.call('test.worker-suite', [])) as WorkerSuiteReport;

  let counter = 0;
  const fresh = (): string => `p/conformance/file-${counter++}.bin`;
  const ctx: ConformanceContext = {
    create: () => createOpfsWorkerStorage(client, fresh(), { create: true }),
    createReadOnly: async (bytes) => {
      const path = fresh();
      const w = await createOpfsWorkerStorage(client, path, { create: true });
      await w.write(bytes, 0);
      await w.close();
      return createOpfsWorkerStorage(client, path, { readOnly: true });
    },
    reopen: async (storage: Storage) => {
      await storage.close();
      return createOpfsWorkerStorage(client, (storage as OpfsWorkerStorage).path);
    },
    sparse: false,
  };
  const pageConformance = resultsJson(await runConformance(ctx));

  const held = await createOpfsWorkerStorage(client, 'p/lock.bin', { create: true });
  let pageLockIsQcow2ErrorInstance = false;
  let pageLock;
  try {
    await createOpfsWorkerStorage(client, 'p/lock.bin');
  } catch (error) {
    pageLockIsQcow2ErrorInstance = error instanceof Qcow2Error;
    pageLock = describeError(error);
  }
  await held.close();

  // A Worker passed directly: its shared client is made on first use.
  const direct = await createOpfsWorkerStorage(worker, 'p/direct.bin', { create: true });
  await direct.write(new Uint8Array([42, 43]), 3);
  const back = new Uint8Array(5);
  await direct.read(back, 0);
  await direct.close();
  const ro = await createOpfsWorkerStorage(worker, 'p/direct.bin', { readOnly: true });
  const viaWorkerObject = { mode: ro.mode, readOnly: ro.readOnly, bytes: [...back] };
  await ro.close();

  const unknownMethod = await errorOf(() => client.call('no.such.method', []));
  const deadWorker = await errorOf(() => createOpfsWorkerStorage(new Worker('/missing.js', { type: 'module' }), 'x.bin'));
  client.close();
  worker.terminate();

  return {
    userAgent: navigator.userAgent,
    mainThread,
    worker: workerReport,
    pageConformance,
    ...(pageLock && { pageLock }),
    pageLockIsQcow2ErrorInstance,
    viaWorkerObject,
    ...(deadWorker && { deadWorker }),
    ...(unknownMethod && { unknownMethod }),
  };
});
