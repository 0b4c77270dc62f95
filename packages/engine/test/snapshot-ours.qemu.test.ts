import { join } from 'node:path';
import { describeWithQemu, makeTempDir, qemuImg, qemuInfo } from '@qcow2/test-utils';
import { afterAll, expect, it } from 'vitest';
import { qemuRaw, readAll } from './helpers.js';
import { expectBytes, expectClean, MiB, KiB, openRw, pattern, qemuSnapshots, storedDiskSizes, type Layout } from './snapshot-helpers.js';

const { dir, cleanup } = makeTempDir('qcow2-snapshot-ours-');
afterAll(cleanup);

const layouts: Layout[] = [
  { name: 'compat 1.1, 64 KiB clusters', options: 'compat=1.1', size: 4 * MiB },
  { name: 'compat 0.10', options: 'compat=0.10', size: 4 * MiB },
  { name: '4 KiB clusters, 4-bit refcounts', options: 'cluster_size=4096,refcount_bits=4', size: MiB },
  { name: 'extended L2, 32 KiB clusters, 64-bit refcounts', options: 'extended_l2=on,cluster_size=32768,refcount_bits=64', size: 4 * MiB },
  { name: 'lazy refcounts, 512-byte clusters', options: 'lazy_refcounts=on,cluster_size=512', size: 256 * KiB },
];

describeWithQemu('snapshots we create, apply and delete, as qemu-img sees them', () => {
  for (const layout of layouts) {
    it(layout.name, async () => {
      const path = join(dir, `ours-${layout.options.replace(/[^a-z0-9]/gi, '_')}.qcow2`);
      qemuImg(['create', '-q', '-f', 'qcow2', '-o', layout.options, path, String(layout.size)]);
      const cs = Number(qemuInfo(path)['cluster-size']);
      const image = await openRw(path);
      const states: Uint8Array[] = [];
      // Data, then a snapshot; overwrite part, compressed cluster, zeroes; second snapshot; more.
      await image.write(pattern(1, layout.size / 2), 0);
      states.push(await readAll(image));
      const first = await image.createSnapshot('first', { dateSec: 1_700_000_000, dateNsec: 123_000, vmClockNsec: 5_000_000_123 });
      expect(first).toMatchObject({ id: '1', name: 'first', vmStateSize: 0, diskSize: layout.size, icount: 0 });
      await image.write(pattern(2, 3 * cs), cs);
      await image.writeCompressed(pattern(3, cs).fill(7, 0, cs / 2), layout.size - cs);
      await image.writeZeroes(layout.size / 4, 2 * cs);
      states.push(await readAll(image));
      const second = await image.createSnapshot('second');
      expect(second.id).toBe('2');
      await image.write(pattern(4, cs), 0);
      await image.close();

      expectClean(path);
      const ours = (await openRw(path));
      expect(qemuSnapshots(path)).toEqual(ours.snapshots.map(({ diskSize: _, ...rest }) => rest));
      await ours.close();
      expect(qemuSnapshots(path)[0]).toMatchObject({ dateSec: 1_700_000_000, dateNsec: 123_000, vmClockNsec: 5_000_000_123, icount: 0 });
      expect(storedDiskSizes(path)).toEqual([layout.size, layout.size]);
      expect(qemuImg(['snapshot', '-l', path])).toMatch(/1\s+first\s+0 B .* 00:00:05\.000\s+0\n2\s+second\s+0 B/);
      expectBytes(qemuRaw(dir, path, ['-l', 'first']), states[0]);
      expectBytes(qemuRaw(dir, path, ['-l', '2']), states[1]);

      // Apply the first: qemu reads its content as the active one; the snapshots stay.
      const again = await openRw(path);
      await again.applySnapshot('first');
      expectBytes(await readAll(again), states[0]);
      await again.write(pattern(5, cs), 2 * cs);
      const afterWrite = await readAll(again);
      await again.close();
      expectClean(path);
      expectBytes(qemuRaw(dir, path), afterWrite);
      expectBytes(qemuRaw(dir, path, ['-l', 'first']), states[0]);

      // Delete the first (by name, as qemu-img -d): the second is intact, the active one too.
      const third = await openRw(path);
      await third.deleteSnapshot('first');
      expect(third.snapshots.map((s) => s.name)).toEqual(['second']);
      await third.close();
      expectClean(path);
      expect(qemuSnapshots(path).map((s) => s.id)).toEqual(['2']);
      expectBytes(qemuRaw(dir, path, ['-l', 'second']), states[1]);
      expectBytes(qemuRaw(dir, path), afterWrite);

      // A new snapshot takes id 3 (highest + 1), then apply 2 and delete everything.
      const fourth = await openRw(path);
      expect((await fourth.createSnapshot('third')).id).toBe('3');
      await fourth.applySnapshot('2');
      await fourth.deleteSnapshot('second');
      await fourth.deleteSnapshot('third');
      expect(fourth.snapshots).toEqual([]);
      await fourth.close();
      expectClean(path);
      expect(qemuInfo(path)['snapshots']).toBeUndefined();
      expectBytes(qemuRaw(dir, path), states[1]);
    });
  }
});

