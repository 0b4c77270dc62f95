import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { describeWithQemu, makeTempDir, qemuImg, qemuIo } from '@qcow2/test-utils';
import { ourCheck, qemuImgCheck, renamed } from './check-oracle.js';
import { run } from './helpers.js';

const tmp = makeTempDir('qcow2-check-matrix-');
afterAll(() => tmp.cleanup());

interface Clean {
  name: string;
  options: string[];
  size: string;
  /** qemu-io commands; CS stands for the cluster size in bytes. */
  io: string[];
  snapshots?: number;
  bitmap?: boolean;
}

const WORKLOAD = ['write -P 1 0 100k', 'write -P 2 1M 64k', 'write -c -P 3 2M CS', 'write -z 3M 64k', 'write -P 4 5M 8k', 'discard 1M 32k', 'write -P 5 7M 4k'];

const MATRIX: Clean[] = [
  { name: '512 B clusters', options: ['cluster_size=512'], size: '16M', io: WORKLOAD },
  { name: '4 KiB clusters', options: ['cluster_size=4k'], size: '16M', io: WORKLOAD },
  { name: '64 KiB clusters', options: [], size: '16M', io: WORKLOAD },
  { name: '2 MiB clusters', options: ['cluster_size=2M'], size: '64M', io: ['write -P 1 0 100k', 'write -c -P 3 4M CS', 'write -P 4 40M 8k'] },
  ...[1, 2, 4, 8, 32, 64].map((bits) => ({ name: `${bits}-bit refcounts`, options: [`refcount_bits=${bits}`], size: '16M', io: WORKLOAD })),
  { name: 'compat=0.10', options: ['compat=0.10'], size: '16M', io: WORKLOAD.filter((c) => !c.includes('-c')) },
  { name: 'zstd compression', options: ['compression_type=zstd'], size: '16M', io: WORKLOAD },
  { name: 'extended L2, 64 KiB clusters', options: ['extended_l2=on'], size: '16M', io: WORKLOAD },
  { name: 'extended L2, 2 MiB clusters', options: ['extended_l2=on', 'cluster_size=2M'], size: '64M', io: ['write -P 1 0 100k', 'write -P 2 3M 64k', 'write -c -P 3 8M CS'] },
  { name: 'internal snapshots', options: [], size: '16M', io: WORKLOAD, snapshots: 2 },
  { name: 'persistent bitmap', options: [], size: '16M', io: WORKLOAD, bitmap: true },
  { name: 'lazy refcounts, closed cleanly', options: ['lazy_refcounts=on'], size: '16M', io: WORKLOAD },
  { name: 'preallocation=metadata', options: ['preallocation=metadata'], size: '8M', io: ['write -P 1 0 100k'] },
  { name: 'preallocation=falloc', options: ['preallocation=falloc'], size: '8M', io: ['write -P 1 0 100k'] },
  { name: 'external data file', options: ['data_file=DATA'], size: '16M', io: WORKLOAD.filter((c) => !c.includes('-c')) },
  { name: 'external raw data file', options: ['data_file=DATA', 'data_file_raw=on'], size: '16M', io: ['write -P 1 0 100k'] },
  { name: '1 TiB virtual disk', options: [], size: '1T', io: ['write -P 1 0 64k', 'write -P 2 512G 64k', 'write -c -P 3 1023G CS'] },
  { name: 'empty', options: [], size: '1G', io: [] },
];

function build(spec: Clean, index: number): string {
  const file = join(tmp.dir, `m${index}.qcow2`);
  const options = spec.options.map((o) => o.replace('DATA', join(tmp.dir, `m${index}.data`)));
  qemuImg(['create', '-q', '-f', 'qcow2', ...(options.length > 0 ? ['-o', options.join(',')] : []), file, spec.size]);
  if (spec.bitmap === true) qemuImg(['bitmap', '--add', file, 'b0']);
  const cs = /cluster_size=(\w+)/.exec(spec.options.join(','))?.[1] ?? '64k';
  const commands = spec.io.map((c) => c.replace('CS', cs));
  const half = Math.ceil(commands.length / 2);
  if (commands.length > 0) qemuIo([...commands.slice(0, half).flatMap((c) => ['-c', c]), file]);
  for (let s = 0; s < (spec.snapshots ?? 0); s++) {
    qemuImg(['snapshot', '-c', `s${s}`, file]);
    qemuIo(['-c', `write -P ${9 + s} 64k 64k`, file]);
  }
  if (commands.length > half) qemuIo([...commands.slice(half).flatMap((c) => ['-c', c]), file]);
  return file;
}

describeWithQemu('qcow2 check against qemu-img check: clean images', () => {
  MATRIX.forEach((spec, index) => {
    it(`${spec.name}: same verdict, statistics and image end offset, human and JSON`, async () => {
      const file = build(spec, index);
      // qemu stores bitmaps again when it closes an image it opened for writing: -r is not comparable there.
      const modes = spec.bitmap === true ? [[], ['--output=json']] : [[], ['--output=json'], ['-r', 'all']];
      for (const args of modes) {
        const mine = copyFileSync(file, `${file}.ours`) ?? `${file}.ours`;
        const qemu = renamed(qemuImgCheck([...args, file]), file);
        const ours = renamed(await ourCheck([...args, mine]), mine);
        expect(ours, `${args.join(' ')}`).toEqual(qemu);
        expect(ours.code).toBe(0);
      }
      const json = JSON.parse((await ourCheck(['--output=json', file])).stdout) as Record<string, unknown>;
      expect(json['check-errors']).toBe(0);
      if (spec.io.length > 0) expect(json['allocated-clusters']).toBeGreaterThan(0);
    });
  });
});

describeWithQemu('qcow2 check: command line as qemu-img check', () => {
  const file = (): string => {
    const f = join(tmp.dir, 'cli.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', f, '16M']);
    qemuIo(['-c', 'write -P 1 0 64k', f]);
    return f;
  };

  it('argument errors, raw images, missing files, -q: same output and exit status', async () => {
    const f = file();
    const raw = join(tmp.dir, 'cli.raw');
    qemuImg(['create', '-q', '-f', 'raw', raw, '1M']);
    const cases: string[][] = [
      ['-r', 'foo', f],
      [f, f],
      [],
      ['--output=xml', f],
      ['-q', f],
      ['-q', '--output=json', f],
      [raw],
      ['-f', 'raw', f],
      ['-r', 'leaks', raw],
      [join(tmp.dir, 'missing.qcow2')],
      ['-f', 'qcow2', raw],
      ['-U', '--force-share', '-T', 'none', f],
      ['--repair=all', '--format=qcow2', f],
    ];
    for (const args of cases) {
      const qemu = renamed(qemuImgCheck(args), f);
      const ours = renamed(await ourCheck(args), f);
      expect(ours.code, args.join(' ')).toBe(qemu.code);
      expect(ours.stdout, args.join(' ')).toBe(qemu.stdout);
      if (!(args.includes('-f') && args.includes(raw))) expect(ours.stderr, args.join(' ')).toBe(qemu.stderr);
      else expect(ours.stderr).toMatch(/^qcow2: Could not open '.*cli\.raw': /);
    }
  });

  it('-h prints the usage text', async () => {
    const r = await run(['check', '-h']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe((await run(['--help'])).stdout);
  });
});

describe('qcow2 check output formatting', () => {
  it('rounds percentages as glibc printf does (half to even on the exact binary value)', async () => {
    const { humanImageCheck } = await import('../src/commands/check.js');
    const base = { checkErrors: 0, corruptions: 0, leaks: 0, corruptionsFixed: 0, leaksFixed: 0, imageEndOffset: 0, messages: [] };
    // 1/800 = 0.125 %: printf("%0.2f") gives 0.12 (the double just below 0.125), not 0.13.
    const text = humanImageCheck({ ...base, totalClusters: 800, allocatedClusters: 1, fragmentedClusters: 0, compressedClusters: 0 });
    expect(text).toBe('No errors were found on the image.\n1/800 = 0.12% allocated, 0.00% fragmented, 0.00% compressed clusters\n');
  });
});
