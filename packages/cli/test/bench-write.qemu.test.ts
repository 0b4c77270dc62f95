/**
 * `qcow2 bench -w` against `qemu-img bench -w` 7.2: same lines (time masked), same refusals, and
 * afterwards images `qemu-img compare` calls identical, ours passing `qemu-img check`. Runs once
 * the engine opens images for writing.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { describeWithQemu, makeTempDir } from '@qcow2/test-utils';
import { afterAll, expect, it } from 'vitest';
import { normalizeTimes, run } from './helpers.js';


const CASES: string[][] = [
  ['-w', '-c', '64', '-s', '64k'],
  ['-w', '-c', '200', '-s', '4k', '-S', '1M', '--pattern=0x41', '-t', 'unsafe'],
  ['-w', '-c', '3', '-s', '512k', '-S', '768k', '--pattern=9'],
  ['-w', '-c', '9', '-s', '4k', '-S', '24M', '--pattern=0x7f', '-d', '1'],
  ['-w', '-c', '50', '-s', '4k', '-d', '4', '--flush-interval=8', '--pattern=7'],
  ['-w', '-c', '50', '-s', '512', '-d', '2', '--flush-interval=2', '--no-drain', '-t', 'writethrough', '-o', '1000'],
  ['-w', '-c', '10', '-s', '1M', '-o', '63M'],
  ['-w', '-c', '3', '-s', '1M', '-o', '64M'],
  ['-w', '-c', '1', '--flush-interval=2'],
  ['-c', '1', '-d', '1', '--flush-interval=2'],
  ['-w', '--pattern=300'],
  ['-w', '--flush-interval=x'],
  ['-w', '-t', 'bogus'],
  ['-w', '-U', '-c', '1'],
];

describeWithQemu('qcow2 bench -w as qemu-img bench -w', () => {
  const tmp = makeTempDir('qcow2-cli-bench-');
  afterAll(() => tmp.cleanup());
  let n = 0;

  it.each(CASES.map((c) => [c.join(' '), c] as const))('%s', async (_label, args) => {
    n += 1;
    const dir = join(tmp.dir, `c${n}`);
    mkdirSync(dir);
    const theirs = join(dir, 'theirs.qcow2');
    const ours = join(dir, 'ours.qcow2');
    for (const file of [theirs, ours]) spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, '64M']);
    const q = spawnSync('qemu-img', ['bench', ...args, theirs], { encoding: 'utf8' });
    const o = await run(['bench', ...args, ours]);
    expect(normalizeTimes(o.stdout)).toBe(normalizeTimes(q.stdout));
    expect(o.stderr.replace(/^qcow2:/gm, 'qemu-img:').replaceAll(ours, theirs)).toBe(q.stderr);
    expect(o.code).toBe(q.status);
    if (q.status !== 0) return;
    const cmp = spawnSync('qemu-img', ['compare', ours, theirs], { encoding: 'utf8' });
    expect(cmp.stdout + cmp.stderr).toBe('Images are identical.\n');
    const check = spawnSync('qemu-img', ['check', '--output=json', ours], { encoding: 'utf8' });
    const json = JSON.parse(check.stdout) as Record<string, unknown>;
    expect(json['check-errors']).toBe(0);
    expect(json['leaks'] ?? 0).toBe(0);
    expect(json['corruptions'] ?? 0).toBe(0);
  });
});
