import { afterAll } from 'vitest';
import { describeWithQemu } from '@qcow2/test-utils';
import { dataCluster, imageFactory, setRefcount } from './check-images.js';
import { be64, poke, scenarioTests, type Scenario } from './check-oracle.js';

const images = imageFactory();
afterAll(() => images.cleanup());
const snap = images.image('snap');
const COPIED = 0x8000_0000_0000_0000n;
const QEMU_DISCARDS_THEN_FAILS = 'qemu 7.2 punches freed clusters, then loses their refcounts when the repair fails';
const QEMU_REWRITES_BITMAPS = 'qemu stores the bitmaps again when it closes an image it opened for writing';

const scenarios: Scenario[] = [
  { name: 'snapshots: clean', base: snap, damage: () => {} },
  { name: 'snapshots: shared cluster with refcount 1', base: snap, damage: (f, L) => setRefcount(f, L, dataCluster(L), 1) },
  { name: 'snapshots: COPIED set on a shared cluster', base: snap, damage: (f, L) => poke(f, L.l2Offset(0), be64(L.l2Entry(L.l2Offset(0), 0) | COPIED)) },
  { name: 'snapshots: snapshot L1 table not cluster-aligned', base: snap, damage: (f, L) => poke(f, L.snapshots[0]!.at, be64(L.snapshots[0]!.l1Offset + 0x200)) },
  { name: 'snapshots: snapshot L1 table too large', base: snap, damage: (f, L) => poke(f, L.snapshots[0]!.at + 8, '00500000') },
  { name: 'snapshots: too much extra data', base: snap, damage: (f, L) => poke(f, L.snapshots[1]!.at + 36, '000007d0') },
  { name: 'snapshots: v3 entry without disk size', base: snap, damage: (f, L) => poke(f, L.snapshots[1]!.at + 36, '00000008') },
  { name: 'snapshots: table not cluster-aligned', base: snap, damage: (f, L) => poke(f, 64, be64(L.snapshotsOffset + 0x200)) },
  { name: 'snapshots: table over the active L1 table', base: snap, damage: (f, L) => poke(f, 64, be64(L.l1Offset)), bytesDiffer: { all: QEMU_DISCARDS_THEN_FAILS } },
  { name: 'preallocated: clean', base: images.image('prealloc'), damage: () => {} },
  { name: 'preallocated: zero entry not cluster-aligned', base: images.image('prealloc'), damage: (f, L) => poke(f, L.l2Offset(0) + 8, be64(L.l2Entry(L.l2Offset(0), 1) + 0x200n)) },
  { name: 'extended L2: clean', base: images.image('ext'), damage: () => {} },
  { name: 'extended L2: subcluster allocated and zero', base: images.image('ext'), damage: (f, L) => poke(f, L.l2Offset(0) + 8, '0000000100000001') },
  { name: 'extended L2: allocation bits on an unallocated cluster', base: images.image('ext'), damage: (f, L) => poke(f, L.l2Offset(0) + 16 * 10 + 8, '0000000000000003') },
  { name: 'extended L2: compressed cluster with a bitmap', base: images.image('ext'), damage: (f, L) => poke(f, L.l2Offset(0) + 16 * 4 + 8, '0000000000000001') },
  {
    name: 'extended L2: unaligned entry without allocated subclusters',
    base: images.image('ext'),
    damage: (f, L) => poke(f, L.l2Offset(0) + 16, be64(L.l2Entry(L.l2Offset(0), 1) + 0x200n) + '0000000000000000'),
  },
  { name: '1-bit refcounts: clean', base: images.image('rc1'), damage: () => {} },
  { name: '1-bit refcounts: second reference overflows', base: images.image('rc1'), damage: (f, L) => poke(f, L.l2Offset(0) + 8, be64(L.l2Entry(L.l2Offset(0), 0))) },
  { name: '512-byte clusters: refcount bumped', base: images.image('c512'), damage: (f, L) => setRefcount(f, L, dataCluster(L), 2) },
  { name: 'compat=0.10: leak', base: images.image('v2'), damage: (f, L) => setRefcount(f, L, dataCluster(L), 3) },
  {
    name: 'lazy refcounts: dirty image',
    base: images.image('lazy'),
    damage: () => {},
    bytesDiffer: { leaks: 'qemu clears the dirty bit when it closes the image, although its -r leaks failed' },
  },
  { name: 'bitmap: clean', base: images.image('bitmap'), damage: () => {}, bytesDiffer: { leaks: QEMU_REWRITES_BITMAPS, all: QEMU_REWRITES_BITMAPS } },
];

describeWithQemu('qcow2 check against qemu-img check: snapshots, subclusters, refcount widths, dirty images', () => {
  scenarioTests(images.dir, scenarios);
});
