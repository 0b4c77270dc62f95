/**
 * `qcow2 io` on an image whose L2 entry points at its own L1 table (qemu iotests 060 style):
 * the overlap check refuses the write, marks the image corrupt, and the command reports it as
 * qemu-io 7.2 does — the "Marking image as corrupt" line on stderr once, "write failed:
 * Input/output error" for the write that raised it and "No medium found" for later ones — and
 * leaves the same bytes in the file.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, openSync, readFileSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { describeWithQemu, makeTempDir } from '@qcow2/test-utils';
import { afterAll, expect, it } from 'vitest';
import { normalizeTimes, run } from './helpers.js';

describeWithQemu('qcow2 io on an image a write would corrupt', () => {
  const tmp = makeTempDir('qcow2-io-corrupt-');
  afterAll(() => tmp.cleanup());

  /** A 1 MiB image with one data cluster whose L2 entry is then pointed at the L1 table. */
  const poked = (name: string): string => {
    const file = join(tmp.dir, name);
    expect(spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, '1M']).status).toBe(0);
    expect(spawnSync('qemu-io', ['-c', 'write -P 1 0 64k', file]).status).toBe(0);
    const bytes = readFileSync(file);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const l1 = Number(view.getBigUint64(40));
    const l2 = Number(view.getBigUint64(l1) & 0x00ff_ffff_ffff_fe00n);
    const entry = new Uint8Array(8);
    new DataView(entry.buffer).setBigUint64(0, (1n << 63n) | BigInt(l1));
    const fd = openSync(file, 'r+');
    writeSync(fd, entry, 0, 8, l2);
    closeSync(fd);
    return file;
  };

  it('reports the corruption, fails the writes and leaves the file as qemu-io does', async () => {
    const ours = poked('ours.qcow2');
    const theirs = join(tmp.dir, 'theirs.qcow2');
    copyFileSync(ours, theirs);
    const script = ['write -P 2 0 4k', 'write -P 3 64k 4k', 'read -P 1 0 4k', 'flush'];
    const qemu = spawnSync('qemu-io', [...script.flatMap((c) => ['-c', c]), theirs], { encoding: 'utf8' });
    const result = await run(['io', ...script.flatMap((c) => ['-c', c]), ours]);
    expect(qemu.stderr).toBe(
      'qcow2: Marking image as corrupt: Preventing invalid write on metadata (overlaps with active L1 table); further corruption events will be suppressed\n',
    );
    expect(result.stderr).toBe(qemu.stderr);
    // qemu also fails the read (its driver is gone); ours still reads, so compare the writes only.
    const writes = (out: string): string[] => out.split('\n').filter((line) => line.startsWith('write'));
    expect(writes(normalizeTimes(result.stdout))).toEqual(writes(normalizeTimes(qemu.stdout)));
    expect(writes(result.stdout)).toEqual(['write failed: Input/output error', 'write failed: No medium found']);
    expect(result.code).toBe(qemu.status);
    expect(readFileSync(ours).equals(readFileSync(theirs))).toBe(true);
    const info = spawnSync('qemu-img', ['info', '--output=json', ours], { encoding: 'utf8' });
    expect(JSON.parse(info.stdout)['format-specific'].data.corrupt).toBe(true);
  });
});
