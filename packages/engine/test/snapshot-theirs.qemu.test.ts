import { copyFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describeWithQemu, makeTempDir, qemuImg, qemuInfo, qemuIo } from '@qcow2/test-utils';
import { afterAll, expect, it } from 'vitest';
import { qemuRaw, readAll } from './helpers.js';
import { expectBytes, expectClean, MiB, openRw, pattern, qemuSnapshots, type Layout } from './snapshot-helpers.js';

const { dir, cleanup } = makeTempDir('qcow2-snapshot-theirs-');
afterAll(cleanup);

describeWithQemu('snapshots qemu-img made, listed, read, applied and deleted by us as qemu does', () => {
  const cases: Layout[] = [
    { name: 'compat 1.1, 64 KiB clusters', options: 'compat=1.1', size: 4 * MiB },
    { name: 'compat 0.10, 4 KiB clusters', options: 'compat=0.10,cluster_size=4096', size: MiB },
    { name: 'extended L2, 16 KiB clusters, 8-bit refcounts', options: 'extended_l2=on,cluster_size=16384,refcount_bits=8', size: 2 * MiB },
  ];
  for (const c of cases) {
    it(c.name, async () => {
      const base = join(dir, `theirs-${c.options.replace(/[^a-z0-9]/gi, '_')}.qcow2`);
      qemuImg(['create', '-q', '-f', 'qcow2', '-o', c.options, base, String(c.size)]);
      const cs = Number(qemuInfo(base)['cluster-size']);
      qemuIo(['-c', `write -P 0x11 0 ${c.size / 2}`, '-c', `write -c -P 0x22 ${c.size - cs} ${cs}`, base]);
      qemuImg(['snapshot', '-c', 'alpha', base]);
      qemuIo(['-c', `write -P 0x33 ${cs} ${2 * cs}`, '-c', `write -z ${4 * cs} ${cs}`, '-c', `discard ${6 * cs} ${cs}`, base]);
      qemuImg(['snapshot', '-c', 'beta', base]);
      qemuIo(['-c', `write -P 0x44 0 ${cs}`, base]);
      qemuImg(['snapshot', '-c', 'gamma', base]);
      qemuImg(['snapshot', '-d', 'beta', base]);
      qemuIo(['-c', `write -P 0x55 ${3 * cs} ${cs}`, base]);

      // Listed and read as qemu lists and reads them.
      const image = await openRw(base);
      expect(image.snapshots.map(({ diskSize: _, ...rest }) => rest)).toEqual(qemuSnapshots(base));
      for (const id of ['1', 'gamma']) {
        const view = await image.openSnapshot(id);
        expectBytes(await readAll(view), qemuRaw(dir, base, ['-l', id]));
        await view.close();
      }
      await image.close();

      // Apply, then delete, on two copies: ours and qemu-img's end up alike.
      const mine = join(dir, `mine-${c.options.replace(/[^a-z0-9]/gi, '_')}.qcow2`);
      const theirs = join(dir, `qemu-${c.options.replace(/[^a-z0-9]/gi, '_')}.qcow2`);
      copyFileSync(base, mine);
      copyFileSync(base, theirs);
      const ours = await openRw(mine);
      await ours.applySnapshot('alpha');
      await ours.close();
      qemuImg(['snapshot', '-a', 'alpha', theirs]);
      expectClean(mine);
      qemuImg(['compare', '-q', mine, theirs]);
      expect(qemuImg(['snapshot', '-l', mine])).toBe(qemuImg(['snapshot', '-l', theirs]));

      const ours2 = await openRw(mine);
      await ours2.deleteSnapshot('alpha');
      await ours2.write(pattern(9, cs), 5 * cs);
      await ours2.close();
      qemuImg(['snapshot', '-d', 'alpha', theirs]);
      qemuIo(['-c', `write -P 0 ${5 * cs} ${cs}`, theirs]);
      expectClean(mine);
      expectClean(theirs);
      expect(qemuImg(['snapshot', '-l', mine])).toBe(qemuImg(['snapshot', '-l', theirs]));
      expectBytes(qemuRaw(dir, mine, ['-l', 'gamma']), qemuRaw(dir, theirs, ['-l', 'gamma']));
      const a = qemuRaw(dir, mine);
      const b = qemuRaw(dir, theirs);
      expectBytes(a.subarray(5 * cs, 6 * cs), pattern(9, cs));
      b.set(pattern(9, cs), 5 * cs);
      expectBytes(a, b);
    });
  }

  it('a snapshot of another disk size: applying it resizes, as qemu-img snapshot -a does', async () => {
    const base = join(dir, 'resize.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', base, String(MiB)]);
    qemuIo(['-c', `write -P 0x61 0 ${MiB}`, base]);
    qemuImg(['snapshot', '-c', 'small', base]);
    qemuImg(['resize', '-q', base, String(3 * MiB)]);
    qemuIo(['-c', `write -P 0x62 ${2 * MiB} ${MiB}`, base]);
    qemuImg(['snapshot', '-c', 'large', base]);
    const mine = join(dir, 'resize-mine.qcow2');
    const theirs = join(dir, 'resize-theirs.qcow2');
    copyFileSync(base, mine);
    copyFileSync(base, theirs);

    const image = await openRw(mine);
    expect(image.snapshots.map((s) => s.diskSize)).toEqual([MiB, 3 * MiB]);
    // qemu-img convert -l reads a snapshot at the image's current size (zeros past the snapshot's).
    const view = await image.openSnapshot('small');
    expect(view.virtualSize).toBe(3 * MiB);
    expectBytes(await readAll(view), qemuRaw(dir, mine, ['-l', 'small']));
    await view.close();
    await image.applySnapshot('small');
    expect(image.virtualSize).toBe(MiB);
    await expect(image.write(new Uint8Array(512), MiB)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await image.close();
    qemuImg(['snapshot', '-a', 'small', theirs]);
    expectClean(mine);
    expect(qemuInfo(mine)['virtual-size']).toBe(MiB);
    qemuImg(['compare', '-q', mine, theirs]);

    const back = await openRw(mine);
    await back.applySnapshot('large');
    expect(back.virtualSize).toBe(3 * MiB);
    const content = await readAll(back);
    await back.write(new Uint8Array(4096).fill(0x63), 3 * MiB - 4096);
    await back.close();
    qemuImg(['snapshot', '-a', 'large', theirs]);
    expectClean(mine);
    expect(qemuInfo(mine)['virtual-size']).toBe(3 * MiB);
    expectBytes(content, qemuRaw(dir, theirs));
  });

  it('refcount_bits=1: a snapshot of an image with data is refused without changing the file', async () => {
    const path = join(dir, 'refcount1.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'refcount_bits=1,cluster_size=4096', path, String(MiB)]);
    qemuIo(['-c', 'write -P 1 0 64k', path]);
    const before = new Uint8Array(readFileSync(path));
    const image = await openRw(path);
    await expect(image.createSnapshot('s')).rejects.toMatchObject({ name: 'Qcow2Error', code: 'INVALID_ARGUMENT' });
    expect(image.snapshots).toEqual([]);
    await image.write(new Uint8Array(512).fill(3), 0);
    await image.close();
    expectClean(path);
    expect(before.length).toBeGreaterThan(0);
    expectBytes(qemuRaw(dir, path).subarray(512, 4096), new Uint8Array(3584).fill(1));
    // Without any L2 table, qemu-img and we can snapshot a refcount_bits=1 image.
    const empty = join(dir, 'refcount1-empty.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'refcount_bits=1', empty, String(MiB)]);
    const e = await openRw(empty);
    await e.createSnapshot('nothing');
    await e.close();
    expectClean(empty);
    expect(qemuSnapshots(empty).map((s) => s.name)).toEqual(['nothing']);
  });

  it('refcount_bits=2: the snapshot that would take a refcount to 4 is refused, everything undone', async () => {
    const path = join(dir, 'refcount2.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'refcount_bits=2,cluster_size=4096', path, String(MiB)]);
    qemuIo(['-c', 'write -P 1 0 64k', path]);
    const image = await openRw(path);
    await image.createSnapshot('one');
    await image.write(new Uint8Array(4096).fill(2), 8192);
    await image.createSnapshot('two');
    const content = await readAll(image);
    const error = await image.createSnapshot('three').catch((e: unknown) => e);
    expect(error).toMatchObject({ name: 'Qcow2Error', code: 'INVALID_ARGUMENT' });
    expect((error as Error).message).toMatch(/refcount overflow/);
    expect(image.snapshots.map((s) => s.name)).toEqual(['one', 'two']);
    expectBytes(await readAll(image), content);
    await image.write(new Uint8Array(4096).fill(3), 0);
    await image.close();
    expectClean(path);
    expectBytes(qemuRaw(dir, path, ['-l', 'two']), content);
    // qemu refuses it too (and leaks the new L1 table's cluster doing so).
    const r = qemuImg(['snapshot', '-c', 'three', path], { allowExit: [1] });
    expect(r).toBe('');
    expect(qemuSnapshots(path).map((s) => s.name)).toEqual(['one', 'two']);
  });
});
