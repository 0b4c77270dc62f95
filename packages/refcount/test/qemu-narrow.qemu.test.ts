import { afterAll, it } from 'vitest';
import { describeWithQemu, makeTempDir } from '@qcow2/test-utils';
import { qemuImageCase } from './qemu-cases.js';

const tmp = makeTempDir('qcow2-refcount-');
afterAll(() => tmp.cleanup());

describeWithQemu('refcounts of images written by qemu (1..4-bit)', () => {
  for (const order of [0, 1, 2]) {
    it(`${1 << order}-bit refcounts, 512-byte clusters: loaded = walked, a rebuild is clean`, () => qemuImageCase(tmp.dir, order));
  }
});
