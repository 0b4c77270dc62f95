/**
 * Writing to an image with persistent bitmaps: qemu marks them in use when it opens the image for
 * writing; we do the same before the first change and, since we do not track dirty regions, leave
 * them marked. qemu-img then calls the image clean (no leaked bitmap clusters, as clearing the
 * autoclear bit would leave), lists the bitmaps as in use, and can still write and remove them.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { createNodeStorage } from '@qcow2/storage-node';
import { describeWithQemu, makeTempDir } from '@qcow2/test-utils';
import { afterAll, expect, it } from 'vitest';
import { checkImage, openImage } from '../src/index.js';

const run = (cmd: string, args: string[]) => spawnSync(cmd, args, { encoding: 'utf8' });

describeWithQemu('writes to an image with persistent bitmaps', () => {
  const tmp = makeTempDir('qcow2-bitmaps-');
  afterAll(() => tmp.cleanup());

  const bitmapFlags = (file: string): string[][] => {
    const info = JSON.parse(run('qemu-img', ['info', '--output=json', '-U', file]).stdout);
    return (info['format-specific'].data.bitmaps as { flags: string[] }[]).map((b) => b.flags);
  };

  it('keeps the bitmaps, marked in use, and leaves nothing for qemu-img check to find', async () => {
    const base = join(tmp.dir, 'base.qcow2');
    expect(run('qemu-img', ['create', '-q', '-f', 'qcow2', base, '16M']).status).toBe(0);
    expect(run('qemu-img', ['bitmap', '--add', base, 'b0']).status).toBe(0);
    expect(run('qemu-img', ['bitmap', '--add', '-g', '128k', base, 'second-bitmap']).status).toBe(0);
    expect(run('qemu-io', ['-c', 'write -P 1 0 64k', base]).status).toBe(0);
    expect(bitmapFlags(base)).toEqual([['auto'], ['auto']]);

    const file = join(tmp.dir, 'ours.qcow2');
    copyFileSync(base, file);
    // Opening and closing without a change leaves the bitmaps alone.
    {
      const storage = await createNodeStorage(file);
      const image = await openImage(storage, { readOnly: false });
      await image.close();
      await storage.close();
      expect(bitmapFlags(file)).toEqual([['auto'], ['auto']]);
    }
    const storage = await createNodeStorage(file);
    const image = await openImage(storage, { readOnly: false });
    await image.write(new Uint8Array(65536).fill(2), 65536);
    await image.writeZeroes(0, 4096);
    await image.close();
    await storage.close();

    expect(bitmapFlags(file)).toEqual([['in-use', 'auto'], ['in-use', 'auto']]);
    const check = run('qemu-img', ['check', '--output=json', file]);
    expect(check.status, check.stdout + check.stderr).toBe(0);
    expect(JSON.parse(check.stdout)).toMatchObject({ 'check-errors': 0 });
    expect(JSON.parse(check.stdout).leaks ?? 0).toBe(0);
    expect(JSON.parse(check.stdout).corruptions ?? 0).toBe(0);
    {
      const again = await createNodeStorage(file);
      const ours = await checkImage(again);
      expect([ours.corruptions, ours.leaks, ours.checkErrors]).toEqual([0, 0, 0]);
      await again.close();
    }
    // qemu goes on with it: reads our data, writes, removes a bitmap; still clean.
    expect(run('qemu-io', ['-c', 'read -P 2 64k 64k', '-c', 'read -P 0 0 4k', '-c', 'write -P 3 1M 64k', file]).status).toBe(0);
    expect(run('qemu-img', ['bitmap', '--remove', file, 'b0']).status).toBe(0);
    expect(bitmapFlags(file)).toEqual([['in-use', 'auto']]);
    expect(run('qemu-img', ['check', file]).status).toBe(0);
  });
});
