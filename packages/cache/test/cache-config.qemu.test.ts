import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { isQcow2Error } from '@qcow2/format';
import { describeWithQemu, makeTempDir, qemuImg } from '@qcow2/test-utils';
import { resolveCacheConfig, type CacheConfigOptions } from '@qcow2/cache';

/**
 * qemu as the oracle for resolveCacheConfig: qemu-io opens images with the same runtime
 * options and its trace events (qcow2_cache_get, qcow2_cache_get_replace_entry) show how many
 * entries each cache has (the highest slot index it fills) and how big an L2 entry is (the
 * offsets of the slices it loads).
 */

interface Observed {
  l2Entries: number;
  l2EntrySize: number;
  refcountEntries: number;
}

const tmp = makeTempDir('qcow2-cache-config-');
afterAll(() => tmp.cleanup());
let serial = 0;

function qemuIoTraced(image: string, options: string, commands: string[]): string {
  const args = ['-T', 'qcow2_cache_get', '-T', 'qcow2_cache_get_replace_entry', '--image-opts'];
  args.push(`driver=qcow2,cache.no-flush=on,file.filename=${image}${options === '' ? '' : ',' + options}`);
  for (const c of commands) args.push('-c', c);
  const r = spawnSync('qemu-io', args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.status !== 0 || /can't open/.test(r.stderr)) throw new Error(`qemu-io failed: ${r.stderr}`);
  return r.stderr;
}

/**
 * Creates an image, writes 4 KiB at the start of each L2 table's range (allocating data, L2
 * tables and refcount blocks), then reads at every `sliceBytes` of guest space and at the last
 * cluster of each table's range, all with `options`.
 */
function observe(clusterSize: number, virtualSize: number, create: string, options: string, sliceBytes: number): Observed {
  const image = join(tmp.dir, `img-${serial++}.qcow2`);
  qemuImg(['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${clusterSize}${create}`, image, String(virtualSize)]);
  const l2EntryBytes = create.includes('extended_l2=on') ? 16 : 8;
  const tableSpan = (clusterSize / l2EntryBytes) * clusterSize;
  const writes: string[] = [];
  const reads: string[] = [];
  for (let t = 0; t < virtualSize; t += tableSpan) {
    writes.push(`write ${t} 4096`);
    reads.push(`read ${Math.min(t + tableSpan, virtualSize) - clusterSize} 512`);
  }
  for (let g = 0; g < virtualSize; g += sliceBytes) reads.push(`read ${g} 512`);
  const trace = qemuIoTraced(image, options, writes) + qemuIoTraced(image, options, reads);
  let l2Max = -1;
  let refcountMax = -1;
  let maxSliceInCluster = 0;
  for (const line of trace.split('\n')) {
    const replace = /qcow2_cache_get_replace_entry .* is_l2_cache (\d) index (\d+)/.exec(line);
    if (replace) {
      const index = Number(replace[2]);
      if (replace[1] === '1') l2Max = Math.max(l2Max, index);
      else refcountMax = Math.max(refcountMax, index);
      continue;
    }
    const get = /qcow2_cache_get .* is_l2_cache 1 offset 0x([0-9a-f]+)/.exec(line);
    if (get) maxSliceInCluster = Math.max(maxSliceInCluster, parseInt(get[1]!, 16) % clusterSize);
  }
  return { l2Entries: l2Max + 1, l2EntrySize: clusterSize - maxSliceInCluster, refcountEntries: refcountMax + 1 };
}

describeWithQemu('resolveCacheConfig agrees with qemu-io 7.2', () => {
  const KiB = 1024;
  const MiB = 1024 * KiB;
  const cases: {
    name: string;
    clusterSize: number;
    virtualSize: number;
    create?: string;
    options: Partial<CacheConfigOptions>;
    /** Whether the workload touches more refcount blocks than the cache holds. */
    checkRefcount: boolean;
  }[] = [
    { name: 'defaults, cache covers the image', clusterSize: 512, virtualSize: 8 * MiB, options: {}, checkRefcount: true },
    { name: 'l2-cache-size below the need', clusterSize: 4096, virtualSize: 64 * MiB, options: { l2CacheSize: 40 * KiB }, checkRefcount: false },
    { name: '64 KiB clusters sliced into 4 KiB entries', clusterSize: 64 * KiB, virtualSize: 1024 * MiB, options: { l2CacheSize: 64 * KiB }, checkRefcount: false },
    { name: 'cache-size split, small', clusterSize: 512, virtualSize: 8 * MiB, options: { cacheSize: 64 * KiB }, checkRefcount: true },
    { name: 'cache-size split, L2 part below the need', clusterSize: 4096, virtualSize: 128 * MiB, options: { cacheSize: 200 * KiB }, checkRefcount: false },
    { name: 'l2-cache-size=0 and refcount-cache-size', clusterSize: 512, virtualSize: 8 * MiB, options: { l2CacheSize: 0, refcountCacheSize: 3 * KiB }, checkRefcount: true },
    { name: 'explicit l2-cache-entry-size', clusterSize: 4096, virtualSize: 64 * MiB, options: { l2CacheSize: 100 * KiB, l2CacheEntrySize: 1024 }, checkRefcount: false },
    { name: 'extended L2 entries', clusterSize: 16 * KiB, virtualSize: 64 * MiB, create: ',extended_l2=on', options: { l2CacheSize: 32 * KiB }, checkRefcount: false },
  ];

  for (const c of cases) {
    it(c.name, () => {
      const ours = resolveCacheConfig({
        clusterSize: c.clusterSize,
        virtualSize: c.virtualSize,
        extendedL2: (c.create ?? '').includes('extended_l2=on'),
        ...c.options,
      });
      const opts = Object.entries({
        'cache-size': c.options.cacheSize,
        'l2-cache-size': c.options.l2CacheSize,
        'refcount-cache-size': c.options.refcountCacheSize,
        'l2-cache-entry-size': c.options.l2CacheEntrySize,
      })
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => `${k}=${String(v)}`)
        .join(',');
      const l2EntryBytes = (c.create ?? '').includes('extended_l2=on') ? 16 : 8;
      const sliceBytes = (ours.l2CacheEntrySize / l2EntryBytes) * c.clusterSize;
      const seen = observe(c.clusterSize, c.virtualSize, c.create ?? '', opts, sliceBytes);
      expect(seen.l2EntrySize).toBe(ours.l2CacheEntrySize);
      expect(seen.l2Entries).toBe(ours.l2CacheEntries);
      if (c.checkRefcount) expect(seen.refcountEntries).toBe(ours.refcountCacheEntries);
      else expect(seen.refcountEntries).toBeLessThanOrEqual(ours.refcountCacheEntries);
    });
  }

  it('refuses the option combinations qemu refuses, with the same messages', () => {
    const image = join(tmp.dir, 'validate.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', image, String(1024 * MiB)]);
    const combos: [string, Partial<CacheConfigOptions>][] = [
      ['cache-size=1048576,l2-cache-size=2097152', { cacheSize: MiB, l2CacheSize: 2 * MiB }],
      ['cache-size=1048576,refcount-cache-size=2097152', { cacheSize: MiB, refcountCacheSize: 2 * MiB }],
      ['cache-size=1048576,l2-cache-size=524288,refcount-cache-size=524288', { cacheSize: MiB, l2CacheSize: 512 * KiB, refcountCacheSize: 512 * KiB }],
      ['cache-size=1048576,l2-cache-size=1048576', { cacheSize: MiB, l2CacheSize: MiB }],
      ['l2-cache-entry-size=256', { l2CacheEntrySize: 256 }],
      ['l2-cache-entry-size=1000', { l2CacheEntrySize: 1000 }],
      ['l2-cache-entry-size=131072', { l2CacheEntrySize: 128 * KiB }],
      ['l2-cache-entry-size=512', { l2CacheEntrySize: 512 }],
      ['l2-cache-entry-size=65536', { l2CacheEntrySize: 64 * KiB }],
      ['cache-clean-interval=4294967296', { cacheCleanInterval: 2 ** 32 }],
      ['cache-clean-interval=4294967295', { cacheCleanInterval: 2 ** 32 - 1 }],
      ['cache-size=0', { cacheSize: 0 }],
    ];
    for (const [qemuOptions, options] of combos) {
      const r = spawnSync('qemu-io', ['--image-opts', `driver=qcow2,file.filename=${image},${qemuOptions}`, '-c', 'read 0 512'], { encoding: 'utf8' });
      const qemuMessage = /can't open: (.*)/.exec(r.stderr)?.[1];
      let ourMessage: string | undefined;
      try {
        resolveCacheConfig({ clusterSize: 64 * KiB, virtualSize: 1024 * MiB, ...options });
      } catch (e) {
        expect(isQcow2Error(e)).toBe(true);
        ourMessage = (e as Error).message;
      }
      if (qemuMessage === undefined) expect(ourMessage, qemuOptions).toBeUndefined();
      else expect(ourMessage?.startsWith(qemuMessage) || qemuMessage.startsWith(ourMessage ?? '\0'), `${qemuOptions}: qemu "${qemuMessage}", ours "${ourMessage}"`).toBe(true);
    }
  });
});
