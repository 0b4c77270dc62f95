// The dedicated worker of the OPFS browser test: serves the page's worker storages
// (serveOpfsStorage) and, on the same channel, `test.worker-suite`, which runs the conformance
// suite and the lock checks against createOpfsStorage right here.
import { runConformance, type ConformanceContext, type Storage } from '@qcow2/storage';
import { createOpfsStorage, serveOpfsStorage, type OpfsStorage } from '@qcow2/storage-opfs';
import type { WorkerSuiteReport } from './opfs-report.js';
import { errorOf, resultsJson } from './report.js';

async function workerSuite(): Promise<WorkerSuiteReport> {
  const root = await navigator.storage.getDirectory();
  await root.removeEntry('w', { recursive: true }).catch(() => undefined);

  let counter = 0;
  const fresh = (): string => `w/conformance/file-${counter++}.bin`;
  const ctx: ConformanceContext = {
    create: () => createOpfsStorage(fresh(), { create: true }),
    createReadOnly: async (bytes) => {
      const path = fresh();
      const w = await createOpfsStorage(path, { create: true });
      await w.write(bytes, 0);
      await w.close();
      return createOpfsStorage(path, { readOnly: true });
    },
    reopen: async (storage: Storage) => {
      await storage.close();
      return createOpfsStorage((storage as OpfsStorage).path);
    },
    sparse: false,
  };
  const conformance = resultsJson(await runConformance(ctx));

  const lockPath = 'w/lock.bin';
  const first = await createOpfsStorage(lockPath, { create: true });
  const secondReadwrite = await errorOf(() => createOpfsStorage(lockPath));
  const readOnlyBesideReadwrite = await errorOf(() => createOpfsStorage(lockPath, { readOnly: true }));
  await first.write(new Uint8Array([1, 2, 3, 4]), 0);
  await first.close();
  const afterClose = await errorOf(async () => (await createOpfsStorage(lockPath)).close());
  const twoReadOnly = await errorOf(async () => {
    const a = await createOpfsStorage(lockPath, { readOnly: true });
    const b = await createOpfsStorage(lockPath, { readOnly: true });
    await a.close();
    await b.close();
  });
  let unsafeReadBack: number[] | undefined;
  const twoUnsafe = await errorOf(async () => {
    const a = await createOpfsStorage(lockPath, { mode: 'readwrite-unsafe' });
    const b = await createOpfsStorage(lockPath, { mode: 'readwrite-unsafe' });
    await a.write(new Uint8Array([9, 8]), 1);
    await a.flush();
    const back = new Uint8Array(4);
    await b.read(back, 0);
    unsafeReadBack = [...back];
    await a.close();
    await b.close();
  });

  const missing = await errorOf(() => createOpfsStorage('w/missing.bin'));
  const nested = await createOpfsStorage('w/a/b/c.bin', { create: true });
  await nested.write(new Uint8Array(10), 0);
  const nestedCreate = { path: nested.path, size: await nested.size() };
  await nested.close();
  const directoryAsFile = await errorOf(() => createOpfsStorage('w/a/b'));

  const dir = await root.getDirectoryHandle('w');
  const handle = await dir.getFileHandle('by-handle.bin', { create: true });
  const byHandle = await createOpfsStorage(handle);
  await byHandle.write(new Uint8Array([5, 6, 7]), 0);
  const bytes = new Uint8Array(3);
  await byHandle.read(bytes, 0);
  const fromHandle = { path: byHandle.path, bytes: [...bytes] };
  await byHandle.close();

  const lock: WorkerSuiteReport['lock'] = {
    ...(secondReadwrite && { secondReadwrite }),
    ...(readOnlyBesideReadwrite && { readOnlyBesideReadwrite }),
    ...(twoReadOnly && { twoReadOnly }),
    ...(twoUnsafe && { twoUnsafe }),
    ...(unsafeReadBack && { unsafeReadBack }),
    ...(afterClose && { afterClose }),
  };
  return {
    conformance,
    lock,
    ...(missing && { missing }),
    ...(directoryAsFile && { directoryAsFile }),
    nestedCreate,
    fromHandle,
  };
}

serveOpfsStorage(self, { methods: { 'test.worker-suite': () => workerSuite() } });
