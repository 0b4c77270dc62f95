import { MiB, runCase, type Case } from './write-differential.js';
import { describeWithQemu } from '@qcow2/test-utils';

describeWithQemu('qemu-io scripts by qemu-io and by the engine: compat, cluster sizes, refcount widths, extended L2, lazy refcounts, compression', () => {
  const cases: Case[] = [
    { name: 'compat 1.1, 64 KiB clusters, over written, compressed and zero clusters', options: 'compat=1.1', size: 8 * MiB, seed: 1, prefill: true, compressed: true },
    { name: 'compat 0.10, 64 KiB clusters (zeroes deallocate or are written)', options: 'compat=0.10', size: 8 * MiB, seed: 2, prefill: true, compressed: true },
    { name: '512-byte clusters', options: 'cluster_size=512', size: 256 * 1024, seed: 4, prefill: true, compressed: true, count: 60 },
    { name: '4 KiB clusters, 1-bit refcounts', options: 'cluster_size=4096,refcount_bits=1', size: MiB, seed: 5, prefill: true, compressed: true },
    { name: '4 KiB clusters, 2-bit refcounts', options: 'cluster_size=4096,refcount_bits=2', size: MiB, seed: 6, prefill: true, compressed: true },
    { name: '4 KiB clusters, 4-bit refcounts', options: 'cluster_size=4096,refcount_bits=4', size: MiB, seed: 7, prefill: true, compressed: true },
    { name: '4 KiB clusters, 8-bit refcounts', options: 'cluster_size=4096,refcount_bits=8', size: MiB, seed: 8, prefill: true, compressed: true },
    { name: '4 KiB clusters, 32-bit refcounts', options: 'cluster_size=4096,refcount_bits=32', size: MiB, seed: 9, prefill: true, compressed: true },
    { name: '512-byte clusters, 64-bit refcounts', options: 'cluster_size=512,refcount_bits=64', size: 256 * 1024, seed: 10, prefill: true, compressed: true },
    { name: '2 MiB clusters', options: 'cluster_size=2M', size: 32 * MiB, seed: 11, prefill: true, compressed: true, count: 25, maxClusters: 2 },
    { name: 'extended L2, 32 KiB clusters, 1-bit refcounts', options: 'extended_l2=on,cluster_size=32768,refcount_bits=1', size: 4 * MiB, seed: 13, prefill: true, compressed: true },
    { name: 'lazy refcounts', options: 'lazy_refcounts=on,cluster_size=4096', size: 2 * MiB, seed: 15, prefill: true, compressed: true },
    { name: 'zstd compressed writes', options: 'compression_type=zstd,cluster_size=16384', size: 2 * MiB, seed: 16, prefill: true, compressed: true },
  ];
  for (const c of cases) runCase(c);
});
