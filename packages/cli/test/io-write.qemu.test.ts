/**
 * The write commands of `qcow2 io` against qemu-io 7.2: the same script run by qemu-io on an
 * image qemu-img created and by `qcow2 io` on one `qcow2 create` made (same options) prints the
 * same (timings masked), leaves images `qemu-img compare` calls identical, and ours passes
 * `qemu-img check` with no error and no leak. Runs once the engine opens images for writing.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describeWithQemu, makeTempDir } from '@qcow2/test-utils';
import { afterAll, expect, it } from 'vitest';
import { normalizeTimes, run } from './helpers.js';

interface Case {
  name: string;
  /** qemu-img create options (before the file name), and the size (after it). */
  create: string[];
  size?: string;
  script: string[];
  /** Compare stdout too (off where qemu's output depends on its allocation, e.g. -c of an allocated cluster). */
  stdout?: boolean;
  /** Give both a backing file first (`base.qcow2`, 4 MiB, 0x5a in its first 2 MiB). */
  backing?: boolean;
}

const BASIC = [
  'write -P 0x11 0 64k',
  'write -P 0x22 100k 5k',
  'write 1M 1',
  'read -P 0x22 100k 5k',
  'writev -P 0x33 200k 1k 2k 512',
  'write -z 64k 128k',
  'write -z -u 300k 64k',
  'discard 0 64k',
  'discard 1k 1k',
  'flush',
  'aio_flush',
  'write -C -P 0x44 3M 4k',
  'write -q -P 0x55 3M 512',
  'read -P 0 0 64k',
];

const ERRORS = [
  'write 4M 1',
  'write 0 3G',
  'write -z -n 0 3G',
  'write -u 0 1',
  'write -n 0 1',
  'write -z -P 1 0 1',
  'write -f -c 0 512',
  'write -c 1 512',
  'write -c 0 500',
  'write -b 0 511',
  'write -P 0x100 0 1',
  'write -x 0 1',
  'write 0',
  'writev 0',
  'writev 0 3G',
  'discard 0 3G',
  'discard 4M 1',
  'discard -x 0 1',
  'discard 0',
  'flush 1',
  'write -c 64k 1k',
];

const CASES: Case[] = [
  { name: 'defaults', create: [], size: '4M', script: BASIC },
  { name: 'argument errors', create: [], size: '4M', script: ERRORS },
  { name: 'compat 0.10', create: ['-o', 'compat=0.10'], size: '4M', script: BASIC },
  { name: '512-byte clusters, 1-bit refcounts', create: ['-o', 'cluster_size=512,refcount_bits=1'], size: '4M', script: BASIC },
  { name: '2 MiB clusters, 64-bit refcounts', create: ['-o', 'cluster_size=2M,refcount_bits=64'], size: '8M', script: BASIC },
  { name: 'extended L2', create: ['-o', 'extended_l2=on'], size: '4M', script: BASIC },
  { name: 'lazy refcounts', create: ['-o', 'lazy_refcounts=on'], size: '4M', script: BASIC },
  {
    name: 'compressed writes (zlib)',
    create: [], size: '4M',
    script: ['write -c -P 0x61 0 64k', 'write -c 128k 128k', 'write -c -P 0x62 3968k 128k', 'read -P 0x61 0 64k', 'write -P 0x63 1k 1k', 'read -P 0x61 0 1k'],
  },
  {
    name: 'compressed writes (zstd), image end not cluster-aligned',
    create: ['-o', 'compression_type=zstd'], size: '4000k',
    script: ['write -c -P 0x71 0 64k', 'write -c 3968k 32k', 'write -c -s /dev/null 0 64k', 'read -P 0xcd 3968k 32k'],
  },
  {
    name: 'over a backing file',
    create: ['-F', 'qcow2', '-b', 'base.qcow2'],
    backing: true,
    script: ['write -P 0x11 1k 1k', 'write -z 64k 64k', 'discard 128k 64k', 'read -P 0x5a 2k 1k', 'read -P 0 64k 64k', 'write -P 0x12 3M 4k'],
  },
  {
    name: 'over a backing file, compat 0.10 (discard leaves the backing visible)',
    create: ['-o', 'compat=0.10', '-F', 'qcow2', '-b', 'base.qcow2'],
    backing: true,
    script: ['write -P 0x11 1k 1k', 'write -z 64k 64k', 'discard 0 64k', 'read -P 0x5a 0 1k'],
  },
];

/** The engine's write path is written in parallel: these run once it opens images for writing. */

describeWithQemu('qcow2 io writes as qemu-io does', () => {
  const tmp = makeTempDir('qcow2-cli-io-write-');
  afterAll(() => tmp.cleanup());
  let n = 0;

  it.each(CASES.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    n += 1;
    const dir = join(tmp.dir, `c${n}`);
    mkdirSync(dir);
    if (c.backing === true) {
      spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'base.qcow2'), '4M']);
      spawnSync('qemu-io', ['-c', 'write -P 0x5a 0 2M', join(dir, 'base.qcow2')]);
    }
    const theirs = join(dir, 'theirs.qcow2');
    const ours = join(dir, 'ours.qcow2');
    const size = c.size === undefined ? [] : [c.size];
    const q = spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', ...c.create, theirs, ...size], { encoding: 'utf8' });
    expect(q.stderr).toBe('');
    const created = await run(['create', '-q', '-f', 'qcow2', ...c.create, ours, ...size]);
    expect(created.stderr).toBe('');
    const args = c.script.flatMap((line) => ['-c', line]);
    const qio = spawnSync('qemu-io', ['-f', 'qcow2', ...args, theirs], { encoding: 'utf8' });
    const oio = await run(['io', '-f', 'qcow2', ...args, ours]);
    if (c.stdout !== false) expect(normalizeTimes(oio.stdout)).toBe(normalizeTimes(qio.stdout));
    expect(oio.stderr.replace(/^qcow2:/gm, 'qemu-io:')).toBe(qio.stderr);
    expect(oio.code).toBe(qio.status);
    const compare = spawnSync('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', ours, theirs], { encoding: 'utf8' });
    expect(compare.stdout + compare.stderr).toBe('Images are identical.\n');
    const check = spawnSync('qemu-img', ['check', '--output=json', ours], { encoding: 'utf8' });
    const json = JSON.parse(check.stdout) as Record<string, unknown>;
    expect(json['check-errors']).toBe(0);
    expect(json['leaks'] ?? 0).toBe(0);
    expect(json['corruptions'] ?? 0).toBe(0);
    expect(check.status).toBe(0);
  });

  it('a read-only image (-r): write commands fail as under qemu-io -r', async () => {
    const file = join(tmp.dir, 'ro.qcow2');
    writeFileSync(file, '');
    spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, '1M']);
    const args = ['-c', 'write 0 1', '-c', 'discard 0 1', '-c', 'writev 0 1', '-c', 'flush', '-c', 'read 0 1'];
    const q = spawnSync('qemu-io', ['-r', ...args, file], { encoding: 'utf8' });
    const ours = await run(['io', '-r', ...args, file]);
    expect(normalizeTimes(ours.stdout)).toBe(normalizeTimes(q.stdout));
    expect(ours.stderr.replace(/^qcow2:/gm, 'qemu-io:')).toBe(q.stderr);
    expect(ours.code).toBe(q.status);
  });
});
