/**
 * `qcow2 convert -O qcow2 [-c] [-o ...]` against qemu-img convert 7.2: our output holds the
 * source's content (`qemu-img compare` identical), passes `qemu-img check` with no error and no
 * leak, and leaves the same guest clusters unallocated / allocated / compressed as qemu's output
 * (`qemu-img map`, host offsets included). Runs once the engine opens images for writing.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describeWithQemu, makeTempDir } from '@qcow2/test-utils';
import { afterAll, expect, it } from 'vitest';
import { run } from './helpers.js';

const K = 1024;
const M = 1024 * K;

/** Noise that compresses (small alphabet) or not, without zero bytes. */
function noise(length: number, seed: number, compressible: boolean): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i += 1) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = compressible ? 0x41 + (x & 3) : (x & 0xff) | 1;
  }
  return out;
}

/** A raw source: data, a third zeros (whole clusters, runs inside clusters, single sectors), an odd tail. */
function rawSource(size: number): Uint8Array {
  const bytes = noise(size, 7, true);
  bytes.set(noise(256 * K, 9, false), 512 * K);
  bytes.fill(0, 1 * M, 1 * M + 700 * K); // whole clusters and a partial one
  bytes.fill(0, 2 * M + 4 * K, 2 * M + 12 * K); // 8 KiB inside a cluster
  bytes.fill(0, 2 * M + 20 * K, 2 * M + 22 * K); // 2 KiB: below -S 4k
  bytes.fill(0, 3 * M, 3 * M + 64 * K);
  bytes.fill(0, size - 300 * K, size - 100 * K);
  return bytes;
}

interface Case {
  name: string;
  args: string[];
  sources: string[];
}

const CASES: Case[] = [
  { name: 'raw to qcow2', args: ['-O', 'qcow2'], sources: ['src.raw'] },
  { name: 'raw to compressed qcow2', args: ['-c', '-O', 'qcow2'], sources: ['src.raw'] },
  { name: 'raw to compressed qcow2 (zstd, 4 KiB clusters)', args: ['-c', '-O', 'qcow2', '-o', 'compression_type=zstd,cluster_size=4k'], sources: ['src.raw'] },
  { name: 'raw to qcow2 v2, 512-byte clusters', args: ['-O', 'qcow2', '-o', 'compat=0.10,cluster_size=512'], sources: ['src.raw'] },
  { name: 'raw to qcow2, extended L2, lazy refcounts', args: ['-O', 'qcow2', '-o', 'extended_l2=on', '-o', 'lazy_refcounts=on'], sources: ['src.raw'] },
  { name: 'raw to qcow2, -S 0 (everything written)', args: ['-O', 'qcow2', '-S', '0'], sources: ['src.raw'] },
  { name: 'raw to qcow2, -S 64k', args: ['-O', 'qcow2', '-S', '64k'], sources: ['src.raw'] },
  { name: 'two raw sources concatenated, compressed', args: ['-c', '-O', 'qcow2'], sources: ['src.raw', 'odd.raw'] },
  { name: 'qcow2 chain to qcow2', args: ['-O', 'qcow2', '-o', 'cluster_size=16k'], sources: ['top.qcow2'] },
  { name: 'qcow2 chain to compressed qcow2, progress', args: ['-p', '-c', '-O', 'qcow2'], sources: ['top.qcow2'] },
];

/** qemu-img map --output=json: which guest ranges are data, zero, compressed, and where. */
function layout(file: string): string {
  const r = spawnSync('qemu-img', ['map', '--output=json', file], { encoding: 'utf8' });
  return r.stdout;
}

describeWithQemu('qcow2 convert -O qcow2 as qemu-img convert', () => {
  const tmp = makeTempDir('qcow2-cli-convert-');
  afterAll(() => tmp.cleanup());
  const size = 4 * M + 300 * K;
  writeFileSync(join(tmp.dir, 'src.raw'), rawSource(size));
  writeFileSync(join(tmp.dir, 'odd.raw'), noise(100 * K + 1000, 3, true));
  const q = (args: string[]): void => {
    const r = spawnSync(args[0] as string, args.slice(1), { cwd: tmp.dir, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(r.stderr);
  };
  q(['qemu-img', 'create', '-q', '-f', 'qcow2', 'base.qcow2', '6M']);
  q(['qemu-io', '-c', 'write -P 0x11 0 1M', '-c', 'write -P 0x12 3M 64k', 'base.qcow2']);
  q(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2']);
  q(['qemu-io', '-c', 'write -P 0x21 512k 1M', '-c', 'write -z 3M 32k', '-c', 'write -c -P 0x22 5M 64k', 'top.qcow2']);
  let n = 0;

  it.each(CASES.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    n += 1;
    const dir = join(tmp.dir, `c${n}`);
    mkdirSync(dir);
    const theirs = join(dir, 'theirs.qcow2');
    const ours = join(dir, 'ours.qcow2');
    const sources = c.sources.map((s) => join(tmp.dir, s));
    const qc = spawnSync('qemu-img', ['convert', ...c.args, ...sources, theirs], { encoding: 'utf8' });
    expect(qc.stderr).toBe('');
    const oc = await run(['convert', ...c.args, ...sources, ours]);
    expect(oc.stderr).toBe('');
    expect(oc.code).toBe(0);
    if (c.args.includes('-p')) expect(oc.stdout).toMatch(/\(100\.00\/100%\)\r\n$/);
    else expect(oc.stdout).toBe(qc.stdout);

    const cmp = (a: string, b: string): string => {
      const r = spawnSync('qemu-img', ['compare', a, b], { encoding: 'utf8' });
      return r.stdout + r.stderr;
    };
    expect(cmp(ours, theirs)).toBe('Images are identical.\n');
    if (sources.length === 1) expect(cmp(ours, sources[0] as string)).toBe('Images are identical.\n');
    const check = spawnSync('qemu-img', ['check', '--output=json', ours], { encoding: 'utf8' });
    const json = JSON.parse(check.stdout) as Record<string, unknown>;
    expect(json['check-errors']).toBe(0);
    expect(json['leaks'] ?? 0).toBe(0);
    expect(json['corruptions'] ?? 0).toBe(0);
    expect(json['compressed-clusters'] ?? 0).toBe(JSON.parse(spawnSync('qemu-img', ['check', '--output=json', theirs], { encoding: 'utf8' }).stdout)['compressed-clusters'] ?? 0);
    expect(layout(ours)).toBe(layout(theirs));
    const info = (file: string): unknown => {
      const j = JSON.parse(spawnSync('qemu-img', ['info', '--output=json', file], { encoding: 'utf8' }).stdout) as Record<string, unknown>;
      delete j['filename'];
      delete j['actual-size'];
      return j;
    };
    expect(info(ours)).toEqual(info(theirs));
  });

  it.each([
    [['-O', 'qcow2', '-o', 'bogus=1']],
    [['-O', 'qcow2', '-o', 'cluster_size=3000']],
    [['-O', 'qcow2', '-o', 'cluster_size=abc']],
    [['-c', '-O', 'qcow2', '-o', 'preallocation=metadata']],
    [['-O', 'qcow2', '-o', 'lazy_refcounts=on,']],
    [['-O', 'qcow2', '-o', 'compat=0.10,lazy_refcounts=on']],
    [['-c', '-O', 'raw']],
    [['-O', 'qcow2', '-o', 'help']],
  ])('refusals and help as qemu-img: %j', async (args) => {
    const dir = join(tmp.dir, `e${(n += 1)}`);
    mkdirSync(dir);
    const qc = spawnSync('qemu-img', ['convert', ...args, join(tmp.dir, 'src.raw'), 'dst.qcow2'], { cwd: dir, encoding: 'utf8' });
    const cwd = process.cwd();
    process.chdir(dir);
    let oc;
    try {
      oc = await run(['convert', ...args, join(tmp.dir, 'src.raw'), 'dst.qcow2']);
    } finally {
      process.chdir(cwd);
    }
    expect(oc.stdout).toBe(qc.stdout);
    expect(oc.stderr.replace(/^qcow2:/gm, 'qemu-img:')).toBe(qc.stderr);
    expect(oc.code).toBe(qc.status);
  });
});
