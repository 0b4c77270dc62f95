import { afterAll } from 'vitest';
import { describeWithQemu } from '@qcow2/test-utils';
import { appendLeakedCluster, dataCluster, imageFactory, setRefcount } from './check-images.js';
import { be64, poke, scenarioTests, type Scenario } from './check-oracle.js';

// iotests 060/080 style: bytes poked into images qemu made; qemu-img check is the oracle.
const images = imageFactory();
afterAll(() => images.cleanup());
const std = images.image('std');
const COPIED = 0x8000_0000_0000_0000n;
/** qemu discards the clusters a repair freed before writing their refcounts; the overlap that then fails the repair drops those refcount writes. */
const QEMU_DISCARDS_THEN_FAILS = 'qemu 7.2 punches freed clusters, then loses their refcounts when the repair fails';

const scenarios: Scenario[] = [
  { name: 'clean', base: std, damage: () => {} },
  { name: 'leak: refcount bumped', base: std, damage: (f, L) => setRefcount(f, L, dataCluster(L), 2) },
  { name: 'leak: unreferenced cluster at the end', base: std, damage: appendLeakedCluster },
  { name: 'refcount zeroed: data cluster', base: std, damage: (f, L) => setRefcount(f, L, dataCluster(L), 0) },
  { name: 'refcount zeroed: L2 table', base: std, damage: (f, L) => setRefcount(f, L, L.l2Offset(0) / L.clusterSize, 0) },
  { name: 'L2 entry pointing into the refcount table', base: std, damage: (f, L) => poke(f, L.l2Offset(0), be64(COPIED | BigInt(L.refcountTableOffset))) },
  { name: 'L1 entry pointing at the header', base: std, damage: (f, L) => poke(f, L.l1Offset, be64(COPIED)) },
  { name: 'L1 entry pointing at the L1 table', base: std, damage: (f, L) => poke(f, L.l1Offset, be64(COPIED | BigInt(L.l1Offset))), bytesDiffer: { all: QEMU_DISCARDS_THEN_FAILS } },
  { name: 'L1 entry: reserved bit', base: std, damage: (f, L) => poke(f, L.l1Offset, be64(L.l1[0]! | 0x0100_0000_0000_0000n)) },
  { name: 'L2 entry: reserved bit', base: std, damage: (f, L) => poke(f, L.l2Offset(0), be64(L.l2Entry(L.l2Offset(0), 0) | 2n)) },
  { name: 'L1 entry: COPIED cleared', base: std, damage: (f, L) => poke(f, L.l1Offset, be64(L.l1[0]! & ~COPIED)) },
  { name: 'L2 entry: COPIED cleared', base: std, damage: (f, L) => poke(f, L.l2Offset(0), be64(L.l2Entry(L.l2Offset(0), 0) & ~COPIED)) },
  { name: 'compressed entry: COPIED set', base: std, damage: (f, L) => poke(f, L.l2Offset(0) + 32 * 8, be64(L.l2Entry(L.l2Offset(0), 32) | COPIED)) },
  { name: 'two L1 entries sharing an L2 table', base: std, damage: (f, L) => poke(f, L.l1Offset + 8, be64(L.l1[0]!)) },
  { name: 'L2 table past the end of the file', base: std, damage: (f, L) => poke(f, L.l1Offset, be64(COPIED | 0x1000_0000n)) },
  { name: 'data cluster past the end of the file', base: std, damage: (f, L) => poke(f, L.l2Offset(0) + 8, be64(COPIED | 0x1000_0000n)) },
  { name: 'L1 table past the end of the file', base: std, damage: (f) => poke(f, 40, be64(0x1000_0000n)) },
  { name: 'refcount block past the end of the file', base: std, damage: (f, L) => poke(f, L.refcountTableOffset + 8, be64(0x200_0000n)) },
  { name: 'refcount table past the end of the file', base: std, damage: (f) => poke(f, 48, be64(0x1000_0000n)) },
  { name: 'refcount table of 0 clusters', base: std, damage: (f) => poke(f, 56, '00000000') },
  { name: 'refcount table over the L2 table', base: std, damage: (f, L) => poke(f, 48, be64(L.l2Offset(0))) },
  { name: 'data entry not cluster-aligned', base: std, damage: (f, L) => poke(f, L.l2Offset(0), be64(L.l2Entry(L.l2Offset(0), 0) + 0x200n)) },
  { name: 'L2 table not cluster-aligned', base: std, damage: (f, L) => poke(f, L.l1Offset, be64(L.l1[0]! + 0x200n)) },
  { name: 'refcount block used as an L2 table too', base: std, damage: (f, L) => poke(f, L.l1Offset + 8, be64(COPIED | BigInt(L.refblock0))) },
  {
    name: 'refcount block not cluster-aligned',
    base: std,
    damage: (f, L) => poke(f, L.refcountTableOffset, be64(L.refblock0 + 0x200)),
    qemuCannotRepair: 'qemu marks the image corrupt when it reads the block, after which its rebuild cannot write',
  },
  {
    name: 'refcount table entry: reserved bit',
    base: std,
    damage: (f, L) => poke(f, L.refcountTableOffset, be64(L.refblock0 + 1)),
    qemuCannotRepair: "qemu's rebuild places a new block over the old one and its overlap check refuses the write",
  },
];

describeWithQemu('qcow2 check against qemu-img check: corruptions of a 64 KiB-cluster image', () => {
  scenarioTests(images.dir, scenarios);
});
