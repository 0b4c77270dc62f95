import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, it } from 'vitest';
import { storageConformanceCases, type ConformanceContext, type Storage } from '@qcow2/storage';
import { createNodeStorage, type NodeStorage } from '@qcow2/storage-node';
import { makeTempDir } from '@qcow2/test-utils';

const tmp = makeTempDir('qcow2-node-conformance-');
afterAll(() => tmp.cleanup());
let counter = 0;
const freshPath = (): string => join(tmp.dir, `file-${counter++}.bin`);

const ctx: ConformanceContext = {
  create: () => createNodeStorage(freshPath(), { create: true }),
  createReadOnly: async (bytes) => {
    const path = freshPath();
    writeFileSync(path, bytes);
    return createNodeStorage(path, { readOnly: true });
  },
  reopen: async (storage: Storage) => {
    await storage.close();
    return createNodeStorage((storage as NodeStorage).path);
  },
  sparse: true,
};

describe('node storage: conformance', () => {
  for (const c of storageConformanceCases) {
    it.skipIf(!c.applies(ctx))(c.name, () => c.run(ctx));
  }
});
