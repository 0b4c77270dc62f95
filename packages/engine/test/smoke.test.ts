import { join } from 'node:path';
import { describeWithQemu, makeTempDir, qemuImg, qemuIo } from '@qcow2/test-utils';
import { afterAll, expect, it } from 'vitest';
import { canonicalExtents, firstDifference, openFile, qemuMap, qemuRaw, readAll } from './helpers.js';

describeWithQemu('smoke', () => {
  const tmp = makeTempDir();
  afterAll(() => tmp.cleanup());
  it('reads a simple image', async () => {
    const file = join(tmp.dir, 'a.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', file, '4M']);
    qemuIo(['-c', 'write -P 0x11 0 100k', '-c', 'write -z 200k 64k', '-c', 'write -c -P 0x22 1M 64k', file]);
    const image = await openFile(file);
    const ours = await readAll(image, 12345);
    expect(firstDifference(ours, qemuRaw(tmp.dir, file))).toBe(-1);
    expect(canonicalExtents(await image.extents(0, image.virtualSize))).toEqual(qemuMap(file));
    await image.close();
  });
});
