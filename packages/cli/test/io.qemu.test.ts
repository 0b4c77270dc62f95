/**
 * `qcow2 io` against qemu-io -r -f raw on the same raw file (read through a tiny raw host, so
 * this runs without the engine): same stdout (timings masked), same stderr, same exit status.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { describeWithQemu, makeTempDir } from '@qcow2/test-utils';
import { normalizeTimes, rawFileHost, run } from './helpers.js';

describeWithQemu('qcow2 io equals qemu-io (raw images)', () => {
  const tmp = makeTempDir('qcow2-cli-io-');
  afterAll(() => tmp.cleanup());
  const file = join(tmp.dir, 'disk.raw');
  const bytes = new Uint8Array(1 << 20);
  bytes.fill(0xab, 0, 65536);
  bytes.fill(0x01, 256 * 1024, 320 * 1024);
  const text = new TextEncoder().encode('Hello, qemu-io! 0123456789 abcdefghijklmnopqrstuvwxyz ~!@#$%^&*()');
  bytes.set(text, 512 * 1024);
  writeFileSync(file, bytes);

  const cases: string[][] = [
    ['read 0 64k'],
    ['read -P 0xab 0 64k'],
    ['read -P 0xab 0 128k'],
    ['read -P 0 64k 64k', 'read -P 1 256k 64k', 'read -P 0x1 -s 1k -l 2k 256k 4k'],
    ['read -v 512k 70'],
    ['read -v -P 0 1000 40'],
    ['read -q -P 0xab 0 512', 'read -q -P 0xac 0 512'],
    ['read -C 0 1k'],
    ['r 0 1', 'read -p 0 1'],
    ['read 0 512b', 'read 0 1.5k', 'read 0x1000 4k', 'read 010 1', 'read 0 +1', 'read 1.k 1'],
    ['read 0 0x10k'],
    ['read 0 abc', 'read 1k. 1k', 'read 0 1.5', 'read 0 .5k', 'read 0 0x'],
    ['read 0 3G', 'read 0 1E', 'read 0 16E', 'read 0 2147483137'],
    ['read 1M 0', 'read 1M 1', 'read 1048575 2', 'read 2M 1k'],
    ['read -P 300 0 1', 'read -P abc 0 1', 'read -P -1 0 1', 'read -P 010 0 1'],
    ['read -P 0xab -s 2k 0 1k', 'read -P 0xab -l 2k 0 1k', 'read -l 1k 0 1k', 'read -s 0 0 1'],
    ['read -x 0 1', 'read 0 -1', 'read 0', 'read 0 1 2', 'read', 'read -P'],
    ['read -b 1 512', 'read -b 0 511', 'read -b 0 512'],
    ['readv 0 512 1k', 'readv -P 0xab 0 16 16', 'readv -v 512k 16 16', 'readv -C 0 1k', 'readv -q 0 1k'],
    ['readv 0', 'readv -P 0 0 3G', 'readv -P 0 0 1G 1G', 'readv -P 0 0 1M 1k', 'readv -x 0 1'],
    ['length'],
    ['map', 'alloc 0', 'alloc 64k 1M', 'alloc 2M 1', 'alloc 1088', 'alloc', 'alloc 0 1 2', 'alloc x'],
    ['foo', 'write 0 1', 'len', '', '   read   0   1  '],
    ['write', 'writev', 'aio_write', 'discard', 'truncate', 'truncate 1 2 3 4', 'discard 0 1', 'truncate 0', 'flush', 'aio_flush'],
    ['help read', 'help readv', 'help alloc', 'help length', 'help map', 'help quit', 'help help', 'help nope'],
    ['read 0 1', 'quit', 'read 0 1'],
    ['q', 'read 0 1'],
  ];

  it.each(cases.map((c) => [c.join(' ; '), c] as const))('%s', async (_label, commands) => {
    const args = commands.flatMap((c) => ['-c', c]);
    const q = spawnSync('qemu-io', ['-r', '-f', 'raw', ...args, file], { encoding: 'utf8' });
    const ours = await run(['io', '-r', '-f', 'raw', ...args, file], rawFileHost());
    expect(normalizeTimes(ours.stdout)).toBe(normalizeTimes(q.stdout));
    expect(ours.stderr.replaceAll('qcow2:', 'qemu-io:')).toBe(q.stderr);
    expect(ours.code).toBe(q.status);
  });

  it('without a file: help and quit work, other commands fail as in qemu-io', async () => {
    const args = ['-c', 'read 0 1', '-c', 'help quit', '-c', 'length', '-c', 'nope'];
    const q = spawnSync('qemu-io', args, { encoding: 'utf8' });
    const ours = await run(['io', ...args], rawFileHost());
    expect(ours.stdout).toBe(q.stdout);
    expect(ours.stderr).toBe(q.stderr);
    expect(ours.code).toBe(q.status);
  });

  it('reads the commands from standard input when there is no -c', async () => {
    const ours = await run(['io', '-f', 'raw', file], rawFileHost(), ['read -P 0xab 0 4k', 'length']);
    expect(normalizeTimes(ours.stdout)).toBe('read 4096/4096 bytes at offset 0\n4 KiB, 1 ops; TIME\n1 MiB\n');
    expect(ours.code).toBe(0);
  });

  it('an image that cannot be opened: qemu-io\'s message and status', async () => {
    const missing = join(tmp.dir, 'nope.raw');
    const q = spawnSync('qemu-io', ['-r', '-f', 'raw', '-c', 'read 0 1', missing], { encoding: 'utf8' });
    const ours = await run(['io', '-r', '-f', 'raw', '-c', 'read 0 1', missing], rawFileHost());
    expect(ours.code).toBe(q.status);
    expect(ours.stderr).toBe(`qcow2: can't open device ${missing}: Could not open '${missing}': No such file or directory\n`);
    expect(q.stderr).toContain(`can't open device ${missing}: Could not open '${missing}': `);
  });
});
