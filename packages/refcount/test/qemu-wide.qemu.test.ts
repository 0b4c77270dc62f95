import { afterAll, it } from 'vitest';
import { describeWithQemu, makeTempDir } from '@qcow2/test-utils';
import { dirtyImageCase, qemuImageCase } from './qemu-cases.js';

const tmp = makeTempDir('qcow2-refcount-');
afterAll(() => tmp.cleanup());

describeWithQemu('refcounts of images written by qemu (8..64-bit)', () => {
  for (const order of [3, 4, 5, 6]) {
    it(`${1 << order}-bit refcounts, 512-byte clusters: loaded = walked, a rebuild is clean`, () => qemuImageCase(tmp.dir, order));
  }
  it('repairs a dirty lazy-refcounts image by rebuilding its refcounts', () => dirtyImageCase(tmp.dir));
});
