/**
 * `qcow2 snapshot -l`, `qcow2 info` and `qcow2 convert -l` on images whose snapshots qemu-img
 * 7.2 made (and on entries patched to carry a VM state size, a VM clock and icounts qemu-img
 * cannot set): the same text, bytes, messages and exit statuses as qemu-img. Also the command
 * line errors and the refusals that need no snapshot written (raw images, external data files,
 * missing files and backing files, a name -d cannot find).
 */
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeWithQemu, makeTempDir } from '@qcow2/test-utils';
import { asOurs, fileBytes, ok, ours, patchSnapshotEntry, sh } from './snapshot-oracle.js';

describeWithQemu('qcow2 snapshot -l, info and convert -l equal qemu-img 7.2 on qemu-made snapshots', () => {
  const tmp = makeTempDir('qcow2-cli-snapshot-list-');
  const dir = tmp.dir;
  const qemu = (cmd: string, ...args: string[]): string => ok(dir, cmd, ...args);

  beforeAll(() => {
    // Duplicate names (qemu-img allows them), a name that is another snapshot's id, a long name,
    // a name of multi-byte characters (C pads the columns by bytes) and an empty name.
    qemu('qemu-img', 'create', '-q', '-f', 'qcow2', 'many.qcow2', '64M');
    qemu('qemu-io', '-c', 'write -P 0x11 0 128k', '-c', 'write -P 0x12 5M 64k', 'many.qcow2');
    qemu('qemu-img', 'snapshot', '-c', 's1', 'many.qcow2');
    qemu('qemu-io', '-c', 'write -P 0x21 64k 128k', '-c', 'write -z 5M 64k', 'many.qcow2');
    qemu('qemu-img', 'snapshot', '-c', 'second', 'many.qcow2');
    qemu('qemu-io', '-c', 'write -P 0x31 1M 64k', 'many.qcow2');
    qemu('qemu-img', 'snapshot', '-c', 's1', 'many.qcow2');
    qemu('qemu-io', '-c', 'write -P 0x41 2M 64k', 'many.qcow2');
    qemu('qemu-img', 'snapshot', '-c', '2', 'many.qcow2');
    qemu('qemu-io', '-c', 'write -P 0x51 3M 64k', 'many.qcow2');
    qemu('qemu-img', 'snapshot', '-c', 'a-snapshot-name-longer-than-the-tag-column', 'many.qcow2');
    qemu('qemu-img', 'snapshot', '-c', 'éß€', 'many.qcow2');
    qemu('qemu-img', 'snapshot', '-c', '', 'many.qcow2');
    qemu('qemu-io', '-c', 'write -P 0x61 4M 64k', 'many.qcow2');

    // VM state sizes, clocks and icounts that only a running VM writes.
    copyFileSync(join(dir, 'many.qcow2'), join(dir, 'vm.qcow2'));
    patchSnapshotEntry(join(dir, 'vm.qcow2'), 0, { vmStateSize: 5 << 20, vmClockNsec: 3723_456_789_000n, icount: 123456789n });
    patchSnapshotEntry(join(dir, 'vm.qcow2'), 1, { vmStateSize: 1536, vmClockNsec: 100n * 3600n * 1_000_000_000n + 999_999_999n, icount: -1n });
    patchSnapshotEntry(join(dir, 'vm.qcow2'), 2, { vmStateSize: 3 * 2 ** 30 + 1, vmClockNsec: 59_999_000_000n, icount: 0n });

    qemu('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'compat=0.10,cluster_size=4k', 'v2.qcow2', '4M');
    qemu('qemu-io', '-c', 'write -P 7 0 8k', 'v2.qcow2');
    qemu('qemu-img', 'snapshot', '-c', 'old', 'v2.qcow2');
    qemu('qemu-io', '-c', 'write -P 8 4k 8k', 'v2.qcow2');

    qemu('qemu-img', 'create', '-q', '-f', 'qcow2', 'none.qcow2', '1M');
    qemu('qemu-img', 'create', '-q', '-f', 'raw', 'disk.raw', '1M');
    qemu('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'data_file=df.bin', 'df.qcow2', '1M');

    mkdirSync(join(dir, 'chain'));
    qemu('qemu-img', 'create', '-q', '-f', 'qcow2', 'chain/base.qcow2', '8M');
    qemu('qemu-io', '-c', 'write -P 1 0 1M', 'chain/base.qcow2');
    qemu('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'chain/top.qcow2', '8M');
    qemu('qemu-io', '-c', 'write -P 2 512k 64k', 'chain/top.qcow2');
    qemu('qemu-img', 'snapshot', '-c', 'over-backing', 'chain/top.qcow2');
    qemu('qemu-io', '-c', 'write -P 3 0 64k', 'chain/top.qcow2');
    mkdirSync(join(dir, 'orphan'));
    copyFileSync(join(dir, 'chain/top.qcow2'), join(dir, 'orphan/top.qcow2'));

    writeFileSync(join(dir, 'junk.bin'), new Uint8Array(8192).fill(0x5a));
  });
  afterAll(() => tmp.cleanup());

  const images = ['many.qcow2', 'vm.qcow2', 'v2.qcow2', 'none.qcow2', 'disk.raw', 'df.qcow2', 'chain/top.qcow2'];

  describe('snapshot -l: the same table', () => {
    const variants = [['-l'], ['-U', '-l'], ['-q', '-l'], ['--force-share', '-l']];
    it.each(images.flatMap((image) => variants.map((v) => [[...v, image].join(' '), [...v, image]] as const)))(
      'snapshot %s',
      async (_label, args) => {
        const q = sh(dir, 'qemu-img', ['snapshot', ...args]);
        const r = await ours(dir, ['snapshot', ...args]);
        expect(r).toEqual({ code: q.code, stdout: q.stdout, stderr: asOurs(q.stderr) });
      },
    );

    it('lists what qemu-img made, in table order, with its columns', async () => {
      const r = await ours(dir, ['snapshot', '-l', 'vm.qcow2']);
      const lines = r.stdout.split('\n');
      expect(lines[0]).toBe('Snapshot list:');
      expect(lines[1]).toBe('ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT');
      expect(lines[2]).toMatch(/^1         s1                  5 MiB \d{4}-\d\d-\d\d \d\d:\d\d:\d\d 01:02:03\.456  123456789$/);
      expect(lines[3]).toMatch(/^2         second            1.5 KiB \d{4}-\d\d-\d\d \d\d:\d\d:\d\d100:00:00\.999           $/);
      expect(lines.filter((l) => /^\d/.test(l)).map((l) => l.split(/ +/)[0])).toEqual(['1', '2', '3', '4', '5', '6', '7']);
    });
  });

  describe('info: the same snapshot list, human and JSON', () => {
    const variants = [[], ['--output=json'], ['--backing-chain']];
    it.each(images.flatMap((image) => variants.map((v) => [[...v, image].join(' '), [...v, image]] as const)))(
      'info %s',
      async (_label, args) => {
        const q = sh(dir, 'qemu-img', ['info', '-U', ...args]);
        const r = await ours(dir, ['info', '-U', ...args]);
        expect(r).toEqual({ code: q.code, stdout: q.stdout, stderr: asOurs(q.stderr) });
      },
    );
  });

  describe('convert -l: the same snapshot content, found the same way', () => {
    const params = [
      '1',
      's1', // two snapshots are called s1: the first one
      'second',
      '2', // the id 2 before the name "2" (id 4)
      '4',
      'éß€',
      'a-snapshot-name-longer-than-the-tag-column',
      'snapshot.id=2',
      'snapshot.name=2',
      'snapshot.name=s1',
      'snapshot.id=3,snapshot.name=s1',
      'snapshot.name=s1,snapshot.id=3',
      'snapshot.id=4,snapshot.name=2',
    ];
    it.each(params)('-l %s', async (param) => {
      const q = sh(dir, 'qemu-img', ['convert', '-U', '-O', 'raw', '-l', param, 'many.qcow2', 'q.raw']);
      expect(q).toEqual({ code: 0, stdout: '', stderr: '' });
      const r = await ours(dir, ['convert', '-U', '-O', 'raw', '-l', param, 'many.qcow2', 'ours.raw']);
      expect(r).toEqual({ code: 0, stdout: '', stderr: '' });
      expect(fileBytes(dir, 'ours.raw').equals(fileBytes(dir, 'q.raw'))).toBe(true);
    });

    it('-l over a backing file: the snapshot reads through to the backing chain', async () => {
      const q = sh(dir, 'qemu-img', ['convert', '-U', '-O', 'raw', '-l', 'over-backing', 'chain/top.qcow2', 'q.raw']);
      expect(q.code).toBe(0);
      const r = await ours(dir, ['convert', '-U', '-O', 'raw', '-l', 'over-backing', 'chain/top.qcow2', 'ours.raw']);
      expect(r.code).toBe(0);
      expect(fileBytes(dir, 'ours.raw').equals(fileBytes(dir, 'q.raw'))).toBe(true);
    });

    it('the snapshots differ from each other and from the active layer (the test can fail)', () => {
      const contents = ['1', '2', '3', '4', '5'].map((id) => {
        ok(dir, 'qemu-img', 'convert', '-U', '-O', 'raw', '-l', `snapshot.id=${id}`, 'many.qcow2', `p${id}.raw`);
        return fileBytes(dir, `p${id}.raw`);
      });
      ok(dir, 'qemu-img', 'convert', '-U', '-O', 'raw', 'many.qcow2', 'active.raw');
      const all = [...contents, fileBytes(dir, 'active.raw')];
      for (let i = 0; i < all.length; i += 1) for (let j = i + 1; j < all.length; j += 1) expect(all[i]!.equals(all[j]!)).toBe(false);
    });

    const failing = ['nope', 'snapshot.id=9', 'snapshot.name=nope', 'snapshot.id=1,snapshot.name=second', 'snapshot.foo=1'];
    it.each(failing)('-l %s: the same refusal', async (param) => {
      const q = sh(dir, 'qemu-img', ['convert', '-U', '-O', 'raw', '-l', param, 'many.qcow2', 'q.raw']);
      const r = await ours(dir, ['convert', '-U', '-O', 'raw', '-l', param, 'many.qcow2', 'ours.raw']);
      expect(r).toEqual({ code: q.code, stdout: q.stdout, stderr: asOurs(q.stderr) });
    });
  });

  describe('command-line errors and refusals: the same messages and exit statuses', () => {
    const cases: string[][] = [
      [],
      ['many.qcow2', 'none.qcow2'],
      ['-l'],
      ['-c'],
      ['-x', 'many.qcow2'],
      ['--nope', 'many.qcow2'],
      ['-l', '-c', 'x', 'many.qcow2'],
      ['-a', 's1', '-d', 's1', 'many.qcow2'],
      ['-l', '-l', 'many.qcow2'],
      ['-l', 'missing.qcow2'],
      ['-c', 'x', 'missing.qcow2'],
      ['-U', '-c', 'x', 'missing.qcow2'],
      ['-U', '-c', 'x', 'many.qcow2'],
      ['-U', '-d', 's1', 'many.qcow2'],
      ['-l', 'orphan/top.qcow2'],
      ['-c', 'x', 'orphan/top.qcow2'],
      ['-d', 'nope', 'many.qcow2'],
      ['-d', '1', 'many.qcow2'], // -d looks names up, not ids
      ['-d', 'x', 'none.qcow2'],
      ['-c', 'x', 'disk.raw'],
      ['-a', 'x', 'disk.raw'],
      ['-d', 'x', 'disk.raw'],
      ['disk.raw'],
      ['-U', 'many.qcow2'], // no action opens for writing
      ['-l', '-c', 'x', '-h', 'many.qcow2'],
      ['--format', 'qcow2', '-l', 'many.qcow2'], // qemu-img 7.2 has no --format here
      ['-c', 'x', 'df.qcow2'],
      ['-a', 'x', 'df.qcow2'],
      ['-d', 'x', 'df.qcow2'],
      ['-l', 'junk.bin'],
    ];
    it.each(cases.map((c) => [c.join(' ') || '(nothing)', c] as const))('snapshot %s', async (_label, args) => {
      const before = fileBytes(dir, 'many.qcow2');
      const q = sh(dir, 'qemu-img', ['snapshot', ...args]);
      const r = await ours(dir, ['snapshot', ...args]);
      expect(r).toEqual({ code: q.code, stdout: q.stdout, stderr: asOurs(q.stderr) });
      expect(fileBytes(dir, 'many.qcow2').equals(before)).toBe(true);
    });

    it('-h prints the help and exits 0', async () => {
      const r = await ours(dir, ['snapshot', '-h']);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("  snapshot [-f fmt] [-U] [-q] [-l | -a snapshot | -c snapshot | -d snapshot] filename\n");
      expect(r.stdout).toContain("  '-a' applies a snapshot (revert disk to saved state)\n");
    });

    it('-f: an image opened as forced (an addition to qemu-img 7.2, which probes)', async () => {
      const listed = await ours(dir, ['snapshot', '-f', 'qcow2', '-l', 'many.qcow2']);
      expect(listed.stdout).toBe(sh(dir, 'qemu-img', ['snapshot', '-l', 'many.qcow2']).stdout);
      expect(await ours(dir, ['snapshot', '-f', 'raw', '-l', 'many.qcow2'])).toEqual({ code: 0, stdout: '', stderr: '' });
      // qemu-img's words, without the warning about a probed raw image.
      expect(await ours(dir, ['snapshot', '-f', 'raw', '-c', 'x', 'disk.raw'])).toEqual({
        code: 1,
        stdout: '',
        stderr: "qcow2: Could not create snapshot 'x': -95 (Operation not supported)\n",
      });
      const wrong = await ours(dir, ['snapshot', '-f', 'qcow2', '-l', 'disk.raw']);
      expect(wrong.code).toBe(1);
      expect(wrong.stderr).toMatch(/^qcow2: Could not open 'disk.raw': /);
      expect((await ours(dir, ['snapshot', '-f', 'vmdk', '-l', 'many.qcow2'])).stderr).toMatch(/the 'vmdk' format is not supported/);
    });
  });
});
