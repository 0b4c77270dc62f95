import { afterAll } from 'vitest';
import { describeWithQemu } from '@qcow2/test-utils';
import { imageFactory } from './check-images.js';
import { poke, scenarioTests } from './check-oracle.js';

// On its own: qemu prints one line per snapshot entry here (65536 of them, unbuffered).
const images = imageFactory();
afterAll(() => images.cleanup());

describeWithQemu('qcow2 check against qemu-img check: more snapshots than qemu allows', () => {
  scenarioTests(images.dir, [
    {
      name: 'snapshots: nb_snapshots 65537',
      base: images.image('snap'),
      damage: (f) => poke(f, 60, '00010001'),
      bytesDiffer: { all: 'qemu 7.2 punches freed clusters, then loses their refcounts when the repair fails' },
    },
  ]);
});
