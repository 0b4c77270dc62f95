/**
 * Differential tests of the `qcow2` command over @qcow2/engine against qemu-img/qemu-io 7.2, on
 * images qemu makes here: info and map text, convert bytes, compare verdicts, qemu-io reads.
 * Skipped (loudly) while @qcow2/engine cannot be imported.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeWithQemu, makeTempDir } from '@qcow2/test-utils';
import { engineAvailable, normalizeTimes, run } from './helpers.js';

const hasEngine = await engineAvailable();
if (!hasEngine) console.warn('\n!!! SKIPPED: @qcow2/engine is not available yet (qcow2 differential tests)\n');

function sh(cwd: string, cmd: string, args: string[]): { stdout: string; stderr: string; code: number } {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', maxBuffer: 64 << 20 });
  return { stdout: r.stdout, stderr: r.stderr, code: r.status ?? -1 };
}

describeWithQemu('qcow2 over the engine equals qemu-img/qemu-io 7.2', () => {
  describe.skipIf(!hasEngine)('qcow2 images', () => {
    const tmp = makeTempDir('qcow2-cli-diff-');
    const dir = tmp.dir;
    const cwd = process.cwd();
    const ok = (cmd: string, ...args: string[]): string => {
      const r = sh(dir, cmd, args);
      if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    /** Runs our command with the temp directory as the working directory, as qemu's runs. */
    const ours = async (args: string[]): Promise<{ code: number; stdout: string; stderr: string }> => {
      process.chdir(dir);
      try {
        return await run(args);
      } finally {
        process.chdir(cwd);
      }
    };

    beforeAll(() => {
      ok('qemu-img', 'create', '-q', '-f', 'qcow2', 'plain.qcow2', '64M');
      ok('qemu-io', '-c', 'write -P 0xab 0 64k', '-c', 'write -P 0x5a 64k 64k', '-c', 'write -z 1M 128k', '-c', 'write -P 1 2M 1536k', 'plain.qcow2');
      ok('qemu-img', 'snapshot', '-c', 'snap1', 'plain.qcow2');
      ok('qemu-io', '-c', 'write -P 0xcd 0 4k', '-c', 'write -z 2M 64k', '-c', 'write -c -P 7 8M 64k', '-c', 'write -P 9 63M 1M', 'plain.qcow2');
      ok('qemu-img', 'snapshot', '-c', 'second', 'plain.qcow2');

      ok('qemu-img', 'create', '-q', '-f', 'qcow2', 'z.qcow2', '4M');
      ok('qemu-io', '-c', 'write -P 1 0 256k', '-c', 'write -z 0 64k', '-c', 'write -z -u 64k 64k', '-c', 'write -c -P 2 1M 64k', '-c', 'write -c -P 0 2M 64k', 'z.qcow2');

      mkdirSync(join(dir, 'sub'));
      ok('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'sub/base.qcow2', '64M');
      ok('qemu-io', '-c', 'write -P 0x11 0 128k', '-c', 'write -P 0x12 10M 1M', 'sub/base.qcow2');
      ok('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'sub/mid.qcow2', '64M');
      ok('qemu-io', '-c', 'write -P 0x22 64k 64k', '-c', 'write -z 10M 64k', 'sub/mid.qcow2');
      ok('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', 'sub/top.qcow2', '96M');
      ok('qemu-io', '-c', 'write -P 0x33 3M 64k', '-c', 'write -P 0x34 70M 64k', 'sub/top.qcow2');

      ok('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'data_file=df.raw,data_file_raw=on,extended_l2=on,cluster_size=128k,compression_type=zstd,lazy_refcounts=on,refcount_bits=8', 'df.qcow2', '10M');
      ok('qemu-io', '-c', 'write -P 5 256k 256k', '-c', 'write -P 6 1M 4k', 'df.qcow2');
      ok('qemu-img', 'bitmap', '--add', 'df.qcow2', 'bm1');
      ok('qemu-img', 'bitmap', '--add', '-g', '128k', '--disable', 'df.qcow2', 'bm0');
      ok('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'data_file=ext.bin', 'ext.qcow2', '8M');
      ok('qemu-io', '-c', 'write -P 8 1M 192k', 'ext.qcow2');

      ok('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', 'sub.qcow2', '8M');
      ok('qemu-io', '-c', 'write -P 3 4k 4k', '-c', 'write -P 4 64k 2k', '-c', 'write -z 200k 8k', 'sub.qcow2');
      ok('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', 'small.qcow2', '2M');
      ok('qemu-io', '-c', 'write -P 1 1000 3000', '-c', 'write -P 2 1M 100k', 'small.qcow2');

      writeFileSync(join(dir, 'base.raw'), new Uint8Array(4 << 20).fill(0x44));
      ok('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', 'overraw.qcow2', '6M');
      ok('qemu-io', '-c', 'write -P 0x55 1M 64k', 'overraw.qcow2');

      ok('qemu-img', 'convert', '-q', '-c', '-O', 'qcow2', '-o', 'compression_type=zstd', 'sub/top.qcow2', 'zstd.qcow2');
      ok('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', 'dirty.qcow2', '1M');
      sh(dir, 'qemu-io', ['-c', 'write -P 2 0 64k', '-c', 'abort', 'dirty.qcow2']);
    });
    afterAll(() => tmp.cleanup());

    const images = [
      'plain.qcow2',
      'z.qcow2',
      'sub/top.qcow2',
      'sub/mid.qcow2',
      'sub/base.qcow2',
      'df.qcow2',
      'ext.qcow2',
      'sub.qcow2',
      'small.qcow2',
      'overraw.qcow2',
      'zstd.qcow2',
      'dirty.qcow2',
    ];

    describe('info: the same text', () => {
      const variants = [[], ['--output=json'], ['--backing-chain'], ['--output=json', '--backing-chain']];
      it.each(images.flatMap((image) => variants.map((v) => [[...v, image].join(' '), [...v, image]] as const)))(
        '%s',
        async (_label, args) => {
          const q = sh(dir, 'qemu-img', ['info', '-U', ...args]);
          const r = await ours(['info', '-U', ...args]);
          expect(r.stderr).toBe(q.stderr.replaceAll('qemu-img:', 'qcow2:'));
          expect(r.stdout).toBe(q.stdout);
          expect(r.code).toBe(q.code);
        },
      );
    });

    describe('map: the same text', () => {
      const variants = [['--output=json'], [], ['--output=json', '--start-offset=100000', '--max-length=3M'], ['--start-offset=2M']];
      it.each(images.flatMap((image) => variants.map((v) => [[...v, image].join(' '), [...v, image]] as const)))(
        '%s',
        async (_label, args) => {
          const q = sh(dir, 'qemu-img', ['map', ...args]);
          const r = await ours(['map', ...args]);
          expect(r.stdout).toBe(q.stdout);
          expect(r.stderr).toBe(q.stderr.replaceAll('qemu-img:', 'qcow2:'));
          expect(r.code).toBe(q.code);
        },
      );
    });

    describe('convert -O raw: the same bytes', () => {
      const cases: string[][] = images.map((i) => [i]);
      cases.push(['-l', 'snap1', 'plain.qcow2'], ['-l', 'snapshot.id=2', 'plain.qcow2'], ['-S', '0', 'z.qcow2']);
      it.each(cases.map((c) => [c.join(' '), c] as const))('%s', async (_label, args) => {
        const q = sh(dir, 'qemu-img', ['convert', '-U', '-O', 'raw', ...args, 'q.raw']);
        expect(q.code).toBe(0);
        const r = await ours(['convert', '-U', '-O', 'raw', ...args, 'ours.raw']);
        expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
        expect(readFileSync(join(dir, 'ours.raw')).equals(readFileSync(join(dir, 'q.raw')))).toBe(true);
      });
    });

    describe('compare: the same verdicts and exit codes', () => {
      beforeAll(() => {
        ok('qemu-img', 'convert', '-U', '-O', 'raw', 'sub/top.qcow2', 'top.raw');
        ok('qemu-img', 'convert', '-U', '-O', 'qcow2', 'sub/top.qcow2', 'top-copy.qcow2');
        copyFileSync(join(dir, 'top-copy.qcow2'), join(dir, 'top-changed.qcow2'));
        ok('qemu-io', '-c', 'write -P 0x77 70M 1', 'top-changed.qcow2');
        ok('qemu-img', 'create', '-q', '-f', 'qcow2', 'empty.qcow2', '96M');
        ok('qemu-img', 'create', '-q', '-f', 'qcow2', 'empty-big.qcow2', '100M');
        // 1 GiB, 64 KiB clusters: qemu's block status splits runs at 512 MiB (one L2 slice).
        ok('qemu-img', 'create', '-q', '-f', 'qcow2', 'big-a.qcow2', '1G');
        ok('qemu-io', '-c', 'write -P 1 600M 64k', 'big-a.qcow2');
        ok('qemu-img', 'create', '-q', '-f', 'qcow2', 'big-b.qcow2', '1G');
        ok('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', 'big-c.qcow2', '1G');
        ok('qemu-io', '-c', 'write -P 1 600M 64k', 'big-c.qcow2');
      });
      const pairs: string[][] = [
        ['sub/top.qcow2', 'top.raw'],
        ['sub/top.qcow2', 'top-copy.qcow2'],
        ['sub/top.qcow2', 'top-changed.qcow2'],
        ['top-changed.qcow2', 'sub/top.qcow2'],
        ['sub/top.qcow2', 'empty.qcow2'],
        ['empty.qcow2', 'empty-big.qcow2'],
        ['-s', 'empty.qcow2', 'empty-big.qcow2'],
        ['-s', 'top-copy.qcow2', 'top-copy.qcow2'],
        ['-q', 'sub/top.qcow2', 'top-changed.qcow2'],
        ['-s', 'sub/top.qcow2', 'top-copy.qcow2'],
        ['zstd.qcow2', 'top.raw'],
        ['z.qcow2', 'z.qcow2'],
        ['sub/top.qcow2', 'nope.qcow2'],
        ['-s', 'big-a.qcow2', 'big-b.qcow2'],
        ['-s', 'big-b.qcow2', 'big-c.qcow2'],
        ['-p', 'big-a.qcow2', 'big-b.qcow2'],
        ['-p', 'big-a.qcow2', 'big-c.qcow2'],
        ['-p', 'plain.qcow2', 'plain.qcow2'],
      ];
      it.each(pairs.map((c) => [c.join(' '), c] as const))('%s', async (_label, args) => {
        const q = sh(dir, 'qemu-img', ['compare', '-U', ...args]);
        const r = await ours(['compare', '-U', ...args]);
        expect(r.stdout).toBe(q.stdout);
        expect(r.code).toBe(q.code);
        if (q.code !== 2) expect(r.stderr).toBe(q.stderr.replaceAll('qemu-img:', 'qcow2:'));
      });
    });

    describe('io: qemu-io reads', () => {
      const cases: [string, string[]][] = [
        ['plain.qcow2', ['read -P 0xcd 0 4k', 'read -P 0xab 4k 60k', 'read -P 0x5a 64k 64k', 'read -P 0 1M 128k', 'read -P 1 2M 4k', 'read -P 0 2M 64k', 'read -P 7 8M 64k', 'read -P 9 63M 1M', 'read -P 0 0 4k']],
        ['sub/top.qcow2', ['read -P 0x11 0 64k', 'read -P 0x22 64k 64k', 'read -P 0x33 3M 64k', 'read -P 0 10M 64k', 'read -P 0x12 10M+64k 4k', 'read -P 0x12 11010048 4k', 'read -P 0 65M 1M', 'read -P 0x34 70M 64k', 'read -v 64k 32']],
        ['z.qcow2', ['read -P 0 0 128k', 'read -P 1 128k 128k', 'read -P 2 1M 64k', 'read -P 0 2M 64k', 'map', 'alloc 0 4M', 'length']],
        ['df.qcow2', ['read -P 5 256k 256k', 'read -P 6 1M 4k', 'read -P 0 0 256k']],
        ['ext.qcow2', ['read -P 8 1M 192k', 'read -P 0 0 1M']],
        ['sub.qcow2', ['read -P 3 4k 4k', 'read -P 0 0 4k', 'read -P 4 64k 2k', 'read -P 0 66k 62k', 'read -P 0 200k 8k', 'map']],
        ['small.qcow2', ['read -P 1 1000 3000', 'read -P 2 1M 100k', 'read -P 0 0 1000']],
        ['overraw.qcow2', ['read -P 0x44 0 1M', 'read -P 0x55 1M 64k', 'read -P 0 4M 2M', 'map']],
        ['zstd.qcow2', ['read -P 0x33 3M 64k', 'read -P 0x11 0 64k', 'readv -P 0x34 70M 32k 32k']],
      ];
      it.each(cases.map(([image, cmds]) => [image, cmds] as const))('%s', async (image, cmds) => {
        const args = cmds.flatMap((c) => ['-c', c]);
        const q = sh(dir, 'qemu-io', ['-r', '-U', ...args, image]);
        const r = await ours(['io', '-r', '-U', ...args, image]);
        expect(normalizeTimes(r.stdout)).toBe(normalizeTimes(q.stdout));
        expect(r.stderr).toBe(q.stderr);
        expect(r.code).toBe(q.code);
      });
    });

    describe('files that cannot be opened: qemu\'s messages and exit codes', () => {
      beforeAll(() => {
        mkdirSync(join(dir, 'orphan'));
        copyFileSync(join(dir, 'sub/top.qcow2'), join(dir, 'orphan/top.qcow2'));
        mkdirSync(join(dir, 'nodata'));
        copyFileSync(join(dir, 'df.qcow2'), join(dir, 'nodata/df.qcow2'));
        writeFileSync(join(dir, 'junk.bin'), new Uint8Array(4096).fill(0x5a));
      });
      const cases: string[][] = [
        ['map', 'orphan/top.qcow2'],
        ['info', 'orphan/top.qcow2'],
        ['info', '--backing-chain', 'orphan/top.qcow2'],
        ['compare', 'orphan/top.qcow2', 'sub/top.qcow2'],
        ['convert', 'orphan/top.qcow2', 'x.raw'],
        ['bench', '-c', '1', 'orphan/top.qcow2'],
        ['info', 'nodata/df.qcow2'],
        ['info', '--output=json', 'nodata/df.qcow2'],
        ['info', 'missing.qcow2'],
        ['map', '-f', 'raw', 'missing.qcow2'],
        ['info', '-f', 'vdi', 'plain.qcow2'],
        ['info', '-f', 'nosuch', 'plain.qcow2'],
      ];
      it.each(cases.map((c) => [c.join(' '), c] as const))('%s', async (_label, args) => {
        const q = sh(dir, 'qemu-img', args);
        const r = await ours(args);
        expect(r.code).toBe(q.code);
        expect(r.stdout).toBe(q.stdout);
        // qemu repeats "Could not open 'x': " for a file it cannot open at all; we say it once.
        const qemuText = q.stderr
          .replaceAll('qemu-img:', 'qcow2:')
          .replace(/Could not open '([^']*)': Could not open '\1': /, "Could not open '$1': ");
        if (args.includes('vdi')) expect(r.stderr).toMatch(/^qcow2: Could not open 'plain.qcow2': the 'vdi' format is not supported/);
        else expect(r.stderr).toBe(qemuText);
      });

      it('io on an image that is not qcow2, with -f qcow2', async () => {
        const q = sh(dir, 'qemu-io', ['-f', 'qcow2', '-c', 'read 0 1', 'junk.bin']);
        const r = await ours(['io', '-f', 'qcow2', '-c', 'read 0 1', 'junk.bin']);
        expect(r.code).toBe(q.code);
        expect(q.stderr).toBe("qemu-io: can't open device junk.bin: Image is not in qcow2 format\n");
        expect(r.stderr).toMatch(/^qcow2: can't open device junk.bin: Could not open 'junk.bin': .*not in qcow2 format.*\n$/);
      });
    });

    it('bench: the same request line, a completed run', async () => {
      const args = ['-c', '2000', '-d', '8', '-s', '64k', '-S', '1M', '-o', '3M', 'sub/top.qcow2'];
      const q = sh(dir, 'qemu-img', ['bench', '-U', ...args]);
      const r = await ours(['bench', '-U', ...args]);
      expect(normalizeTimes(r.stdout)).toBe(normalizeTimes(q.stdout));
      expect(r.code).toBe(0);
    });
  });
});
