/**
 * `qcow2 create` against `qemu-img create` 7.2, run in two directories with the same relative
 * names: same stdout (the "Formatting" line, `-o help`), same stderr (`qemu-img:` read as
 * `qcow2:`), same exit status, and the same files byte for byte (or none, on failure).
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describeWithQemu, makeTempDir } from '@qcow2/test-utils';
import { afterAll, expect, it } from 'vitest';
import { run } from './helpers.js';

const CASES: string[][] = [
  ['-f', 'qcow2', 'a.qcow2', '1G'],
  ['-f', 'qcow2', '-q', 'a.qcow2', '64M'],
  ['-f', 'qcow2', 'a.qcow2', '1000'],
  ['-f', 'qcow2', 'a.qcow2', '0'],
  ['-f', 'qcow2', 'a,b.qcow2', '1M'],
  ['a.raw', '1M'],
  ['-f', 'raw', 'a.raw', '1.5k'],
  ['-f', 'raw', '-o', 'extent_size_hint=1M,nocow=on,preallocation=full', 'a.raw', '1M'],
  ['-f', 'raw', '-o', 'preallocation=bogus', 'a.raw', '1M'],
  ['-fqcow2', '-o', 'cluster_size=4k,compat=0.10', 'a.qcow2', '10M'],
  ['-f', 'qcow2', '-o', 'cluster_size=64k', '-o', 'refcount_bits=8', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'refcount_bits=16,lazy_refcounts=on,data_file_raw=off,data_file=d.raw,compat=1.1,encryption=off,size=1M,compression_type=zlib,preallocation=off,extended_l2=off,cluster_size=64k', 'a.qcow2'],
  ['-f', 'qcow2', '-o', 'extended_l2,lazy_refcounts=on,compression_type=zstd', 'a.qcow2', '1G'],
  ['-f', 'qcow2', '-o', 'noextended_l2,cluster_size=0x10000', 'a.qcow2', '1G'],
  ['-f', 'qcow2', '-o', 'preallocation=metadata,cluster_size=2M', 'a.qcow2', '100M'],
  ['-f', 'qcow2', '-o', 'preallocation=full,cluster_size=512', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'preallocation=falloc', 'a.qcow2', '5M'],
  ['-f', 'qcow2', '-o', 'data_file=d.raw,data_file_raw=on', 'a.qcow2', '8M'],
  ['-f', 'qcow2', '-o', 'compat=v3', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'size=1000', 'a.qcow2'],
  ['-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', 'a.qcow2'],
  ['-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'a.qcow2', '1G'],
  ['-f', 'qcow2', '-o', 'backing_file=base.raw,backing_fmt=raw', 'a.qcow2'],
  ['-f', 'qcow2', '-o', 'backing_file=base.raw', '-F', 'raw', 'a.qcow2'],
  ['-f', 'qcow2', '-b', 'base.raw', '-o', 'backing_file=other.raw,backing_fmt=raw', 'a.qcow2'],
  ['-f', 'qcow2', '-u', '-b', 'nope.img', '-F', 'raw', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'backing_file=x.img,,y,backing_fmt=raw', '-u', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-q', '-o', 'preallocation=metadata,extended_l2=on', '-b', 'base.raw', '-F', 'raw', 'a.qcow2'],
  // Refusals: before the Formatting line (options, sizes, backing file) and after it (qcow2's checks).
  ['-f', 'qcow2', '-o', 'cluster_size=3000', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'cluster_size=4M', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'cluster_size=1.5k', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'cluster_size=8k,extended_l2=on', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'refcount_bits=3', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'refcount_bits=128', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'refcount_bits=0', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'refcount_bits=-1', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'compat=0.10,lazy_refcounts=on', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'compat=0.10,refcount_bits=8', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'compat=0.10,extended_l2=on,cluster_size=8k', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'compat=0.10,data_file=d.raw', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'compat=0.10,compression_type=zstd', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'compat=0.10,data_file_raw=on,refcount_bits=3', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'data_file_raw=on', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'data_file_raw=on,data_file=d.raw,backing_file=base.raw,backing_fmt=raw', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'preallocation=metadata', '-b', 'base.raw', '-F', 'raw', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'backing_fmt=raw', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'compat=0.9', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'compat=0.9,preallocation=bogus', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'preallocation=bogus,compression_type=bogus', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'compression_type=bogus', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'lazy_refcounts=maybe', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'cluster_size=abc', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'cluster_size=64k,,x', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'refcount_bits=abc', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'bogus=1', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'lazy_refcounts=on,', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', ',lazy_refcounts=on', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'encryption=on', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'size=1M', 'a.qcow2', '1M'],
  ['-f', 'qcow2', 'a.qcow2', '100E'],
  ['-f', 'qcow2', 'a.qcow2', '1x'],
  ['-f', 'qcow2', 'a.qcow2', '-1'],
  ['-f', 'qcow2', 'a.qcow2'],
  ['-f', 'qcow2'],
  ['-f', 'qcow2', 'a.qcow2', '1M', 'extra'],
  ['-f', 'qcow2', '-o', 'cluster_size=512', 'a.qcow2', '129G'],
  ['-f', 'qcow2', '-b', 'nope.img', '-F', 'raw', 'a.qcow2'],
  ['-f', 'qcow2', '-u', '-b', 'nope.img', '-F', 'raw', 'a.qcow2'],
  ['-f', 'qcow2', '-u', '-b', 'nope.img', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-b', 'base.raw', 'a.qcow2'],
  ['-f', 'qcow2', '-b', 'base.raw', '-F', 'qcow2', 'a.qcow2'],
  ['-f', 'qcow2', '-b', 'base.raw', '-F', 'bogus', 'a.qcow2'],
  ['-f', 'qcow2', '-b', 'top.qcow2', '-F', 'qcow2', 'a.qcow2'],
  ['-f', 'qcow2', '-b', 'a.qcow2', '-F', 'raw', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-b', '', '-F', 'raw', 'a.qcow2', '1M'],
  ['-f', 'qcow2', 'nodir/a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'data_file=nodir/d.raw', 'a.qcow2', '1M'],
  ['-f', 'qcow2', '-o', 'help'],
  ['-f', 'qcow2', '-o', '?'],
  ['-f', 'qcow2', '-o', 'cluster_size=4k,help', 'a.qcow2'],
  ['-f', 'raw', '-o', 'help'],
  ['-f', 'bogus', 'a.qcow2', '1M'],
];

const SETUP_FILES = ['base.raw', 'base.qcow2', 'top.qcow2'];

/** The files every case starts with, made once. */
function makeTemplate(dir: string): void {
  mkdirSync(dir);
  writeFileSync(join(dir, 'base.raw'), new Uint8Array(3 * 1024 * 1024 + 1000).fill(7));
  const r = spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', 'base.qcow2', '5M'], { cwd: dir });
  if (r.status !== 0) throw new Error('qemu-img create failed');
  // top.qcow2's backing file is missing.
  spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', 'gone.qcow2', '-F', 'qcow2', 'top.qcow2', '1M'], { cwd: dir });
}

const OUTPUTS = ['a.qcow2', 'a.raw', 'a,b.qcow2', 'd.raw'];

describeWithQemu('qcow2 create equals qemu-img create', () => {
  const tmp = makeTempDir('qcow2-cli-create-');
  afterAll(() => tmp.cleanup());
  const template = join(tmp.dir, 'template');
  makeTemplate(template);
  const setup = (dir: string): void => {
    for (const name of SETUP_FILES) copyFileSync(join(template, name), join(dir, name));
  };
  let n = 0;

  it.each(CASES.map((c) => [c.join(' '), c] as const))('%s', async (_label, args) => {
    n += 1;
    const qdir = join(tmp.dir, `q${n}`);
    const odir = join(tmp.dir, `o${n}`);
    mkdirSync(qdir);
    mkdirSync(odir);
    setup(qdir);
    setup(odir);
    const q = spawnSync('qemu-img', ['create', ...args], { cwd: qdir, encoding: 'utf8' });
    const cwd = process.cwd();
    process.chdir(odir);
    let ours;
    try {
      ours = await run(['create', ...args]);
    } finally {
      process.chdir(cwd);
    }
    expect(ours.stdout).toBe(q.stdout);
    expect(ours.stderr.replace(/^qcow2:/gm, 'qemu-img:').replaceAll("'qcow2 --help'", "'qemu-img --help'")).toBe(q.stderr);
    expect(ours.code).toBe(q.status);
    for (const name of OUTPUTS) {
      expect(existsSync(join(odir, name)), name).toBe(existsSync(join(qdir, name)));
      if (!existsSync(join(qdir, name))) continue;
      const a = readFileSync(join(odir, name));
      const b = readFileSync(join(qdir, name));
      expect(a.length, name).toBe(b.length);
      expect(a.equals(b), name).toBe(true);
    }
  });
});
