/**
 * The qemu-img commands against qemu-img 7.2 on raw files, read through a tiny raw host so this
 * runs without the engine: option parsing and its messages, info/map text, convert bytes,
 * compare verdicts and exit codes, bench lines.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { describeWithQemu, makeTempDir } from '@qcow2/test-utils';
import { normalizeTimes, rawFileHost, run } from './helpers.js';

function qemuImg(args: string[], cwd?: string): { stdout: string; stderr: string; code: number } {
  const r = spawnSync('qemu-img', args, { encoding: 'utf8', ...(cwd === undefined ? {} : { cwd }) });
  return { stdout: r.stdout, stderr: r.stderr, code: r.status ?? -1 };
}

/** Deterministic bytes with no zero byte, so no block of the file is a hole or all zeros. */
function noise(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i += 1) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = (x & 0xff) | 1;
  }
  return out;
}

describeWithQemu('qcow2 vs qemu-img on raw files', () => {
  const tmp = makeTempDir('qcow2-cli-img-');
  afterAll(() => tmp.cleanup());
  const p = (name: string): string => join(tmp.dir, name);
  const host = rawFileHost();

  const base = noise(1 << 20, 7);
  writeFileSync(p('a.raw'), base);
  writeFileSync(p('same.raw'), base);
  const diff = base.slice();
  diff[1000] = 0;
  diff[700000] = (diff[700000] ?? 0) ^ 0x80;
  writeFileSync(p('diff.raw'), diff);
  const longer = new Uint8Array((1 << 20) + 65536);
  longer.set(base);
  writeFileSync(p('longer-zero.raw'), longer);
  const longerData = longer.slice();
  longerData[(1 << 20) + 5000] = 9;
  writeFileSync(p('longer-data.raw'), longerData);
  const sparse = new Uint8Array(3 << 20);
  sparse.set(noise(4096, 3), 0);
  sparse.set(noise(1000, 4), (2 << 20) + 100);
  writeFileSync(p('zeros.raw'), sparse);
  writeFileSync(p('odd.raw'), noise(1000, 5));

  describe('top-level and option errors: same message (program name aside) and status', () => {
    const cases: string[][] = [
      [],
      ['foo'],
      ['-x'],
      ['--foo'],
      ['info'],
      ['info', '-f'],
      ['info', '-Ux', 'a.raw'],
      ['info', '--output'],
      ['info', '--backing-chain=1', 'a.raw'],
      ['info', '--output=xml', 'a.raw'],
      ['info', 'a.raw', 'b.raw'],
      ['map', '--output=JSON', 'a.raw'],
      ['map', '--start-offset=-1', 'a.raw'],
      ['map', '--max-length=1x', 'a.raw'],
      ['map', '--start-offset=9223372036854775808', 'a.raw'],
      ['compare', 'a.raw'],
      ['compare', '-f'],
      ['convert', 'a.raw'],
      ['convert', '-S', '1000', 'a.raw', 'x.raw'],
      ['convert', '-S', '32M', 'a.raw', 'x.raw'],
      ['convert', '-m', '0', 'a.raw', 'x.raw'],
      ['convert', '-t', 'foo', 'a.raw', 'x.raw'],
      ['convert', '-T', 'foo', 'a.raw', 'x.raw'],
      ['convert', '-c', 'a.raw', 'x.raw'],
      ['convert', '-B', 'b.qcow2', 'a.raw', 'x.raw'],
      ['convert', '-O', 'nosuch', 'a.raw', 'x.raw'],
      ['convert', '-l', 'snapshot.foo=1', 'a.raw', 'x.raw'],
      ['convert', '-l', 'snap', 'a.raw', 'a.raw', 'x.raw'],
      ['bench', '-c', 'x', 'a.raw'],
      ['bench', '-c', '-1', 'a.raw'],
      ['bench', '-s', '3G', 'a.raw'],
      ['bench', '-S', '1.5x', 'a.raw'],
      ['bench', '-t', 'foo', 'a.raw'],
      ['bench', '-i', 'foo', 'a.raw'],
      ['bench', '--flush-interval=2', '-c', '1', 'a.raw'],
      ['bench'],
    ];
    it.each(cases.map((c) => [c.join(' ') || '(nothing)', c] as const))('%s', async (_label, args) => {
      const q = qemuImg(args, tmp.dir);
      const ours = await run(args.map((a) => (a.endsWith('.raw') ? p(a) : a)), host);
      expect(ours.code).toBe(q.code);
      expect(ours.stderr.replaceAll('qcow2', 'qemu-img').replaceAll(`${tmp.dir}/`, '')).toBe(q.stderr);
      expect(ours.stdout).toBe('');
    });

    it('--help and --version exit 0 with text on stdout', async () => {
      for (const args of [['--help'], ['-h'], ['info', '-h'], ['--version'], ['-V'], ['--vers']]) {
        const ours = await run(args, host);
        expect(ours.code).toBe(0);
        expect(ours.stdout).toMatch(/^qcow2 version /);
        expect(ours.stderr).toBe('');
        expect(qemuImg(args).code).toBe(0);
      }
      expect((await run(['--help'], host)).stdout).toContain('Supported formats: qcow2 raw');
    });
  });

  it.each([
    ['human', 'a.raw'],
    ['json', 'a.raw'],
    ['human', 'odd.raw'],
    ['json', 'zeros.raw'],
  ])('info --output=%s %s', async (output, name) => {
    const q = qemuImg(['info', `--output=${output}`, '-f', 'raw', name], tmp.dir);
    const ours = await run(['info', `--output=${output}`, '-f', 'raw', p(name)], host);
    expect(ours.stdout.replaceAll(`${tmp.dir}/`, '')).toBe(q.stdout);
    expect(ours.code).toBe(0);
  });

  it.each([['json'], ['human']])('map --output=%s of a fully written file', async (output) => {
    const q = qemuImg(['map', `--output=${output}`, '-f', 'raw', 'a.raw'], tmp.dir);
    const ours = await run(['map', `--output=${output}`, '-f', 'raw', 'a.raw'], {
      ...host,
      openImage: (name, options) => host.openImage(p(name), options),
    });
    expect(ours.stdout).toBe(q.stdout);
    expect(ours.code).toBe(q.code);
  });

  describe('compare', () => {
    const cases: string[][] = [
      ['a.raw', 'same.raw'],
      ['a.raw', 'diff.raw'],
      ['diff.raw', 'a.raw'],
      ['-q', 'a.raw', 'diff.raw'],
      ['a.raw', 'longer-zero.raw'],
      ['longer-zero.raw', 'a.raw'],
      ['a.raw', 'longer-data.raw'],
      ['longer-data.raw', 'a.raw'],
      ['-s', 'a.raw', 'longer-zero.raw'],
      ['-s', 'a.raw', 'same.raw'],
      ['-s', 'a.raw', 'diff.raw'],
      ['-p', 'a.raw', 'same.raw'],
      ['-p', 'a.raw', 'diff.raw'],
      ['-q', '-p', 'a.raw', 'same.raw'],
      ['zeros.raw', 'zeros.raw'],
      ['a.raw', 'zeros.raw'],
    ];
    it.each(cases.map((c) => [c.join(' '), c] as const))('%s', async (_label, args) => {
      const q = qemuImg(['compare', '-f', 'raw', '-F', 'raw', ...args], tmp.dir);
      const ours = await run(['compare', '-f', 'raw', '-F', 'raw', ...args.map((a) => (a.endsWith('.raw') ? p(a) : a))], host);
      expect(ours.stdout).toBe(q.stdout);
      expect(ours.stderr).toBe(q.stderr);
      expect(ours.code).toBe(q.code);
    });

    it('a file that cannot be opened: status 2', async () => {
      const q = qemuImg(['compare', 'a.raw', 'nope.raw'], tmp.dir);
      const ours = await run(['compare', '-f', 'raw', '-F', 'raw', p('a.raw'), p('nope.raw')], host);
      expect(q.code).toBe(2);
      expect(ours.code).toBe(2);
      expect(ours.stderr).toMatch(/^qcow2: Could not open '.*nope\.raw': .*No such file or directory\n$/);
    });
  });

  describe('convert -O raw', () => {
    const cases: string[][] = [
      ['a.raw'],
      ['zeros.raw'],
      ['-S', '0', 'zeros.raw'],
      ['-S', '512', 'zeros.raw'],
      ['odd.raw'],
      ['a.raw', 'odd.raw', 'zeros.raw'],
    ];
    it.each(cases.map((c) => [c.join(' '), c] as const))('%s', async (_label, args) => {
      const sources = args.map((a) => (a.endsWith('.raw') ? p(a) : a));
      const q = qemuImg(['convert', '-f', 'raw', '-O', 'raw', ...sources, p('q.out')]);
      expect(q.code).toBe(0);
      const ours = await run(['convert', '-f', 'raw', '-O', 'raw', ...sources, p('ours.out')], host);
      expect(ours).toEqual({ code: 0, stdout: '', stderr: '' });
      expect(readFileSync(p('ours.out')).equals(readFileSync(p('q.out')))).toBe(true);
      // As sparse as qemu's output, give or take a few file system blocks.
      const blocks = statSync(p('ours.out')).blocks;
      expect(blocks).toBeLessThanOrEqual(statSync(p('q.out')).blocks + 64);
    });

    it('-n writes into an existing file, zeroing what the source has as zeros', async () => {
      writeFileSync(p('target.raw'), noise(3 << 20, 11));
      writeFileSync(p('q-target.raw'), noise(3 << 20, 11));
      expect(qemuImg(['convert', '-n', '-f', 'raw', '-O', 'raw', p('zeros.raw'), p('q-target.raw')]).code).toBe(0);
      const ours = await run(['convert', '-n', '-f', 'raw', '-O', 'raw', p('zeros.raw'), p('target.raw')], host);
      expect(ours.code).toBe(0);
      expect(readFileSync(p('target.raw')).equals(readFileSync(p('q-target.raw')))).toBe(true);
      const small = await run(['convert', '-n', '-f', 'raw', p('zeros.raw'), p('odd.raw')], host);
      expect(small).toEqual({ code: 1, stdout: '', stderr: 'qcow2: output file is smaller than input file\n' });
    });

    it('-p prints qemu\'s progress lines', async () => {
      const q = qemuImg(['convert', '-p', '-f', 'raw', '-O', 'raw', p('a.raw'), p('q.out')]);
      const ours = await run(['convert', '-p', '-f', 'raw', '-O', 'raw', p('a.raw'), p('ours.out')], host);
      expect(ours.stdout).toBe(q.stdout);
      expect(ours.stdout.startsWith('    (0.00/100%)\r')).toBe(true);
      expect(ours.stdout.endsWith('    (100.00/100%)\r\n')).toBe(true);
    });

    it('an unwritable target: qemu\'s message', async () => {
      const target = p('no/such/dir/x.raw');
      const q = qemuImg(['convert', '-f', 'raw', p('a.raw'), target]);
      const ours = await run(['convert', '-f', 'raw', p('a.raw'), target], host);
      expect(ours.code).toBe(q.code);
      expect(ours.stderr.replace('qcow2:', 'qemu-img:')).toBe(q.stderr);
    });
  });

  describe('bench', () => {
    const cases: string[][] = [
      ['-c', '10', '-s', '64k'],
      ['-q', '-c', '10'],
      ['-c', '0x10', '-d', '2'],
      ['-c', '3', '-d', '1', '-o', '64k', '-S', '1.5k'],
      ['-c', '1', '-s', '0'],
      ['-c', '0'],
      ['-c', '5', '-s', '4M'],
      ['-c', '3', '-o', '2M'],
      ['-c', '2', '-t', 'none', '-i', 'threads', '-U', '-n'],
    ];
    it.each(cases.map((c) => [c.join(' '), c] as const))('%s', async (_label, args) => {
      const q = qemuImg(['bench', '-f', 'raw', ...args, p('a.raw')]);
      const ours = await run(['bench', '-f', 'raw', ...args, p('a.raw')], host);
      expect(normalizeTimes(ours.stdout)).toBe(normalizeTimes(q.stdout));
      expect(ours.stderr.replace('qcow2:', 'qemu-img:')).toBe(q.stderr);
      expect(ours.code).toBe(q.code);
    });
  });
});
