#!/usr/bin/env node
// `npm run demo`: installs and builds what is missing, then shows the toolkit at work on a qcow2
// image that the demo builds itself, byte by byte, from @qcow2/format's encoders alone (no qemu
// needed): a 64 MiB disk with a data cluster, a patterned cluster and a zero cluster.
// When the `qcow2` CLI is built, the same image goes through `qcow2 info`, `map` and `io`.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
if (!process.env.QCOW2_DEMO_NO_SETUP) execFileSync('bash', [join(root, 'scripts/setup.sh')], { stdio: 'inherit' });

const f = await import('@qcow2/format');

const clusterBits = 16;
const cluster = 1 << clusterBits;
const virtualSize = 64 * 1024 * 1024;
const refcountOrder = 4;
// Layout: 0 header | 1 refcount table | 2 refcount block | 3 L1 | 4 L2 | 5.. data
const at = (n) => n * cluster;
const l1Size = f.l1EntriesForVirtualSize(virtualSize, clusterBits);
const dataClusters = [
  { guest: 0, fill: (b) => b.set(new TextEncoder().encode('Hello from the qcow2 toolkit!\n')) },
  { guest: 1024 * 1024, fill: (b) => b.fill(0xab) },
];
const fileClusters = 5 + dataClusters.length;
const image = new Uint8Array(at(fileClusters));

const headerCluster = f.encodeHeaderCluster({
  header: {
    version: 3,
    backingFileOffset: 0,
    backingFileSize: 0,
    clusterBits,
    size: virtualSize,
    cryptMethod: 0,
    l1Size,
    l1TableOffset: at(3),
    refcountTableOffset: at(1),
    refcountTableClusters: 1,
    nbSnapshots: 0,
    snapshotsOffset: 0,
    incompatibleFeatures: 0n,
    compatibleFeatures: 0n,
    autoclearFeatures: 0n,
    refcountOrder,
    headerLength: 112,
    compressionType: 0,
    trailingBytes: new Uint8Array(7),
  },
  extensions: [{ kind: 'feature-names', entries: [...f.QEMU_FEATURE_NAME_TABLE] }],
});
image.set(headerCluster, 0);

// Refcount table → one block; every cluster of the file is used once.
f.encodeRefcountTableEntry(f.viewOf(image.subarray(at(1), at(2))), 0, at(2));
const block = image.subarray(at(2), at(3));
for (let i = 0; i < fileClusters; i++) f.setRefcount(block, i, refcountOrder, 1);

// L1 → one L2 table; L2 entries → data clusters (COPIED: refcount 1), and one zero cluster.
f.encodeL1Entry(f.viewOf(image.subarray(at(3), at(4))), 0, { l2Offset: at(4), copied: true });
const l2 = f.viewOf(image.subarray(at(4), at(5)));
const l2Options = { clusterBits };
dataClusters.forEach((d, i) => {
  d.fill(image.subarray(at(5 + i), at(6 + i)));
  f.encodeL2Entry(l2, d.guest / cluster, { kind: 'normal', offset: at(5 + i), copied: true }, l2Options);
});
f.encodeL2Entry(l2, (2 * 1024 * 1024) / cluster, { kind: 'zero', offset: 0, copied: false }, l2Options);

const outDir = join(root, 'demo-output');
mkdirSync(outDir, { recursive: true });
const file = join(outDir, 'demo.qcow2');
writeFileSync(file, image);
console.log(`\nWrote ${file} (${image.length} bytes) with @qcow2/format's encoders.\n`);

// Decode it back.
const decoded = f.decodeHeaderCluster(image.subarray(0, cluster));
const h = decoded.header;
console.log('Decoded header:');
console.log(`  version ${h.version}, cluster size ${1 << h.clusterBits}, virtual size ${h.size}`);
console.log(`  L1 table at 0x${h.l1TableOffset.toString(16)} (${h.l1Size} entries), refcount table at 0x${h.refcountTableOffset.toString(16)}`);
console.log(`  refcount bits ${f.refcountBits(h.refcountOrder)}, header length ${h.headerLength}`);
console.log(`  extensions: ${decoded.extensions.map((e) => e.kind).join(', ')}`);
const entries = f.decodeL2Table(image.subarray(at(4), at(5)), l2Options);
entries.forEach((e, i) => {
  if (e.kind !== 'unallocated') console.log(`  L2[${i}] guest 0x${(i * cluster).toString(16)}: ${e.kind}${e.offset ? ` at host 0x${e.offset.toString(16)}` : ''}`);
});

const qcow2 = join(root, 'node_modules/.bin/qcow2');
const show = (cmd, args) => {
  console.log(`\n$ ${cmd === qcow2 ? 'qcow2' : cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  process.stdout.write(r.stdout + r.stderr);
};
if (existsSync(qcow2)) {
  show(qcow2, ['info', file]);
  show(qcow2, ['map', file]);
  show(qcow2, ['io', '-c', 'read -P 0xab 1M 64k', '-c', 'read -v 0 32', file]);
  // The write side: a snapshot, writes over it, a check, and the snapshot's content read back.
  show(qcow2, ['snapshot', '-c', 'before-writes', file]);
  show(qcow2, ['io', '-c', 'write -P 0xcd 1M 64k', '-c', 'write -c -P 0x11 4M 64k', '-c', 'write -z 0 64k', file]);
  show(qcow2, ['snapshot', '-l', file]);
  show(qcow2, ['check', file]);
  const before = join(outDir, 'before-writes.raw');
  show(qcow2, ['convert', '-l', 'before-writes', '-O', 'raw', file, before]);
  show(qcow2, ['io', '-f', 'raw', '-c', 'read -P 0xab 1M 64k', before]);
  show(qcow2, ['map', file]);
}
if (spawnSync('qemu-img', ['--version']).status === 0) {
  show('qemu-img', ['check', file]);
}
