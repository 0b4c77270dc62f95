import { join } from 'node:path';
import { createNodeResolver, createNodeStorage } from '@qcow2/storage-node';
import { describeWithQemu, makeTempDir, qemuCheck, qemuImg, qemuIo } from '@qcow2/test-utils';
import { it, expect } from 'vitest';
import { openImage } from '../src/index.js';

describeWithQemu('write smoke', () => {
  it('writes like qemu-io', async () => {
    const { dir, cleanup } = makeTempDir();
    try {
      const a = join(dir, 'a.qcow2');
      const b = join(dir, 'b.qcow2');
      qemuImg(['create', '-q', '-f', 'qcow2', a, '4M']);
      qemuImg(['create', '-q', '-f', 'qcow2', b, '4M']);
      qemuIo(['-c', 'write -P 1 100 70000', '-c', 'write -P 2 3000000 5', '-c', 'write -z 1000 3000', '-c', 'discard 0 65536', a]);
      const storage = await createNodeStorage(b);
      const image = await openImage(storage, { readOnly: false, discard: 'unmap', name: b, resolver: createNodeResolver() });
      await image.write(new Uint8Array(70000).fill(1), 100);
      await image.write(new Uint8Array(5).fill(2), 3000000);
      await image.writeZeroes(1000, 3000);
      await image.discard(0, 65536);
      await image.close();
      await storage.close();
      const check = qemuCheck(b);
      expect(check.json).toMatchObject({ 'check-errors': 0 });
      expect(check.exitCode).toBe(0);
      qemuImg(['compare', a, b]);
    } finally {
      cleanup();
    }
  });
});
