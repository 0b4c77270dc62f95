/**
 * `qcow2 snapshot -c/-a/-d` against qemu-img 7.2: the same operations, by qemu-img on one copy
 * of a qemu-made image and by us on another, leave images whose `qemu-img snapshot -l` agree
 * (but for the dates), whose active contents and snapshot contents are equal (qemu-img compare
 * and convert -l), which `qemu-img check` finds clean, and print the same messages with the
 * same exit statuses on the way (duplicate names qemu-img made, missing snapshots, ids against
 * names, truncated long names, a resize between snapshots, a dirty image). One difference: -c of
 * a name already in use, which qemu-img 7.2 allows and @qcow2/engine refuses.
 */
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeWithQemu, makeTempDir } from '@qcow2/test-utils';
import { asOurs, fileBytes, ok, ours, sh, withoutDates } from './snapshot-oracle.js';

type Step =
  /** qemu-img snapshot ARGS on qemu's copy, qcow2 snapshot ARGS on ours: the same output. */
  | { snapshot: string[] }
  /** The same qemu-io commands on both copies. */
  | { io: string[] }
  /** qemu-img resize on both copies. */
  | { resize: string };

interface Scenario {
  name: string;
  create: string[];
  size: string;
  /** Made by qemu before the copies are taken. */
  setup?: (dir: string, file: string) => void;
  steps: Step[];
  /** qemu-img leaks a cluster when it fails here: our copy may leak too (but no corruption). */
  leaksAllowed?: boolean;
}

const LONG = 'n'.repeat(300);

const scenarios: Scenario[] = [
  {
    name: 'the life of an image (64 KiB clusters, v3)',
    create: [],
    size: '4M',
    setup: (dir, file) => {
      // qemu-img allows a name twice: two "dup" snapshots (ids 2 and 3) for -a and -d to choose from.
      ok(dir, 'qemu-io', '-c', 'write -P 0x10 0 192k', '-c', 'write -c -P 0x11 1M 64k', '-c', 'write -z 2M 64k', file);
      ok(dir, 'qemu-img', 'snapshot', '-c', 'pre', file);
      ok(dir, 'qemu-io', '-c', 'write -P 0x12 64k 4k', file);
      ok(dir, 'qemu-img', 'snapshot', '-c', 'dup', file);
      ok(dir, 'qemu-io', '-c', 'write -P 0x13 128k 4k', file);
      ok(dir, 'qemu-img', 'snapshot', '-c', 'dup', file);
      ok(dir, 'qemu-io', '-c', 'write -P 0x14 192k 4k', file);
    },
    steps: [
      { snapshot: ['-c', 's1'] },
      { io: ['write -P 0x20 0 4k', 'write -P 0x21 3M 64k', 'write -z 1M 64k'] },
      { snapshot: ['-c', 's2'] },
      { io: ['write -P 0x30 100k 200k', 'write -c -P 0x31 2M 64k'] },
      { snapshot: ['-a', 'dup'] }, // by name: the first dup (id 2)
      { io: ['write -P 0x40 8k 8k'] },
      { snapshot: ['-a', '4'] }, // by id: s1
      { snapshot: ['-d', 'dup'] }, // by name: the first dup
      { snapshot: ['-a', 'dup'] }, // the second
      { snapshot: ['-d', 'dup'] },
      { snapshot: ['-d', 'dup'] }, // none left
      { snapshot: ['-a', 'dup'] },
      { snapshot: ['-a', '9'] },
      { snapshot: ['-d', '1'] }, // -d looks up names only
      { snapshot: ['-c', ''] },
      { snapshot: ['-c', LONG] }, // qemu-img keeps 255 bytes of it
      { snapshot: ['-c', '5'] }, // a name that is another snapshot's id (s2)
      { io: ['write -P 0x50 0 64k'] },
      { snapshot: ['-a', '5'] }, // the id 5 (s2), not the snapshot called "5"
      { snapshot: ['-d', '5'] }, // the snapshot called "5"
      { snapshot: [] }, // no action: opened for writing and closed
      { snapshot: ['-q', '-c', 'quiet'] },
      { snapshot: ['-d', 'pre'] }, // the snapshot qemu-img made before the copies
      { snapshot: ['-d', ''] },
      { snapshot: ['-a', 's2'] },
    ],
  },
  {
    name: 'a resize between snapshots',
    create: [],
    size: '1M',
    setup: (dir, file) => ok(dir, 'qemu-io', '-c', 'write -P 3 0 64k', file),
    steps: [
      { snapshot: ['-c', 'small'] },
      { resize: '3M' },
      { io: ['write -P 4 2M 64k'] },
      { snapshot: ['-c', 'large'] },
      { snapshot: ['-a', 'small'] }, // back to 1 MiB
      { io: ['write -P 5 512k 64k'] },
      { snapshot: ['-a', 'large'] }, // and to 3 MiB
      { snapshot: ['-d', 'small'] },
    ],
  },
  {
    name: 'compat=0.10, 4 KiB clusters',
    create: ['-o', 'compat=0.10,cluster_size=4k'],
    size: '2M',
    setup: (dir, file) => ok(dir, 'qemu-io', '-c', 'write -P 1 0 40k', '-c', 'write -z 100k 8k', file),
    steps: [
      { snapshot: ['-c', 'a'] },
      { io: ['write -P 2 4k 4k', 'write -z 0 4k'] },
      { snapshot: ['-c', 'b'] },
      { snapshot: ['-a', 'a'] },
      { io: ['write -P 3 1M 12k'] },
      { snapshot: ['-d', 'a'] },
      { snapshot: ['-a', 'b'] },
    ],
  },
  {
    name: 'refcount_bits=1 (a shared cluster cannot be counted: qemu-img refuses)',
    create: ['-o', 'refcount_bits=1'],
    size: '1M',
    setup: (dir, file) => ok(dir, 'qemu-io', '-c', 'write -P 1 0 64k', file),
    steps: [{ snapshot: ['-c', 'a'] }, { snapshot: ['-l'] }],
    leaksAllowed: true,
  },
  {
    name: 'extended L2 entries, lazy refcounts, 8-bit refcounts, zstd',
    create: ['-o', 'extended_l2=on,lazy_refcounts=on,refcount_bits=8,compression_type=zstd,cluster_size=128k'],
    size: '4M',
    setup: (dir, file) => ok(dir, 'qemu-io', '-c', 'write -P 1 4k 8k', '-c', 'write -c -P 2 1M 128k', '-c', 'write -z 64k 32k', file),
    steps: [
      { snapshot: ['-c', 'a'] },
      { io: ['write -P 3 8k 4k', 'write -z -u 1M 128k'] },
      { snapshot: ['-c', 'b'] },
      { snapshot: ['-a', 'a'] },
      { snapshot: ['-d', 'b'] },
    ],
  },
  {
    name: 'a dirty image (lazy refcounts, qemu-io aborted): repaired as qemu repairs it when opened for writing',
    create: ['-o', 'lazy_refcounts=on'],
    size: '1M',
    setup: (dir, file) => {
      sh(dir, 'qemu-io', ['-c', 'write -P 2 0 64k', '-c', 'abort', file]);
    },
    steps: [{ snapshot: ['-c', 'a'] }, { io: ['write -P 3 0 4k'] }, { snapshot: ['-a', 'a'] }],
  },
  {
    name: 'an overlay over a backing file',
    create: ['-b', 'base.qcow2', '-F', 'qcow2'],
    size: '2M',
    setup: (dir, file) => ok(dir, 'qemu-io', '-c', 'write -P 9 64k 64k', file),
    steps: [
      { snapshot: ['-c', 'a'] },
      { io: ['write -P 8 0 64k', 'write -z 1M 64k'] },
      { snapshot: ['-c', 'b'] },
      { snapshot: ['-a', 'a'] },
      { snapshot: ['-d', 'a'] },
    ],
  },
];

describeWithQemu('qcow2 snapshot -c/-a/-d leave what qemu-img snapshot leaves', () => {
  const tmp = makeTempDir('qcow2-cli-snapshot-write-');
  const root = tmp.dir;
  afterAll(() => tmp.cleanup());

  describe.each(scenarios.map((s, i) => [s.name, s, i] as const))('%s', (_name, scenario, index) => {
    const qdir = join(root, `s${index}`, 'qemu');
    const odir = join(root, `s${index}`, 'ours');
    const file = 'img.qcow2';

    beforeAll(() => {
      mkdirSync(qdir, { recursive: true });
      mkdirSync(odir, { recursive: true });
      if (scenario.create.includes('base.qcow2')) {
        for (const dir of [qdir, odir]) {
          ok(dir, 'qemu-img', 'create', '-q', '-f', 'qcow2', 'base.qcow2', scenario.size);
          ok(dir, 'qemu-io', '-c', 'write -P 7 0 1M', 'base.qcow2');
        }
      }
      ok(qdir, 'qemu-img', 'create', '-q', '-f', 'qcow2', ...scenario.create, file, scenario.size);
      scenario.setup?.(qdir, file);
      copyFileSync(join(qdir, file), join(odir, file));
    });

    /** The active contents (and so the virtual size) of both copies are equal. */
    const activeContents = (label: string): void => {
      ok(qdir, 'qemu-img', 'convert', '-O', 'raw', file, 'active.raw');
      ok(odir, 'qemu-img', 'convert', '-O', 'raw', file, 'active.raw');
      expect(fileBytes(odir, 'active.raw').equals(fileBytes(qdir, 'active.raw')), `${label}: active contents`).toBe(true);
    };

    /** Both copies agree, and ours is clean. */
    const verify = async (label: string, step: Step): Promise<void> => {
      const action = 'snapshot' in step ? step.snapshot : undefined;
      if (action === undefined) {
        // qemu's own write or resize on both copies: only the active contents can differ.
        activeContents(label);
        return;
      }
      const qList = sh(qdir, 'qemu-img', ['snapshot', '-l', file]);
      const oList = sh(odir, 'qemu-img', ['snapshot', '-l', file]);
      expect(oList.code, `${label}: qemu-img snapshot -l of ours`).toBe(0);
      expect(withoutDates(oList.stdout), `${label}: qemu-img snapshot -l`).toBe(withoutDates(qList.stdout));
      // Our own listing of our image is qemu-img's, dates and all.
      expect(await ours(odir, ['snapshot', '-l', file]), `${label}: our -l of ours`).toEqual({ code: 0, stdout: oList.stdout, stderr: '' });

      const check = sh(odir, 'qemu-img', ['check', file]);
      expect(check.stderr, `${label}: qemu-img check of ours`).toBe('');
      if (scenario.leaksAllowed === true) {
        expect(check.stdout, `${label}: qemu-img check of ours`).not.toMatch(/\d+ errors were found/);
        expect([0, 3], `${label}: qemu-img check of ours`).toContain(check.code);
      } else {
        expect(check.stdout, `${label}: qemu-img check of ours`).toMatch(/^No errors were found on the image\.\n/);
        expect(check.code, `${label}: qemu-img check of ours`).toBe(0);
      }

      activeContents(label);
      if (action.includes('-a') || action.includes('-l')) return;
      // Every snapshot's contents after a step that creates or deletes one.
      const ids = oList.stdout
        .split('\n')
        .slice(2)
        .filter((line) => line !== '')
        .map((line) => line.split(' ')[0] as string);
      for (const id of ids) {
        ok(qdir, 'qemu-img', 'convert', '-O', 'raw', '-l', `snapshot.id=${id}`, file, 'snap.raw');
        ok(odir, 'qemu-img', 'convert', '-O', 'raw', '-l', `snapshot.id=${id}`, file, 'snap.raw');
        expect(fileBytes(odir, 'snap.raw').equals(fileBytes(qdir, 'snap.raw')), `${label}: contents of snapshot ${id}`).toBe(true);
      }
    };

    const label = (step: Step): string =>
      'snapshot' in step
        ? `snapshot ${step.snapshot.map((a) => (a.length > 20 ? `${a.slice(0, 8)}…(${a.length})` : a || "''")).join(' ')}`
        : 'io' in step
          ? `io ${step.io.join('; ')}`
          : `resize ${step.resize}`;

    it.each(scenario.steps.map((step, n) => [`${n + 1}. ${label(step)}`, step] as const))('%s', async (text, step) => {
      if ('snapshot' in step) {
        const q = sh(qdir, 'qemu-img', ['snapshot', ...step.snapshot, file]);
        const r = await ours(odir, ['snapshot', ...step.snapshot, file]);
        expect(r, text).toEqual({ code: q.code, stdout: q.stdout, stderr: asOurs(q.stderr) });
      } else if ('io' in step) {
        const args = step.io.flatMap((c) => ['-c', c]);
        ok(qdir, 'qemu-io', ...args, file);
        ok(odir, 'qemu-io', ...args, file);
      } else {
        ok(qdir, 'qemu-img', 'resize', '-q', file, step.resize);
        ok(odir, 'qemu-img', 'resize', '-q', file, step.resize);
      }
      await verify(text, step);
    });
  });

  describe('what -c writes', () => {
    const dir = join(root, 'fields');
    beforeAll(() => {
      mkdirSync(dir, { recursive: true });
      ok(dir, 'qemu-img', 'create', '-q', '-f', 'qcow2', 'f.qcow2', '3M');
      ok(dir, 'qemu-io', '-c', 'write -P 1 0 64k', 'f.qcow2');
    });

    it('the date now, no VM state, a zero clock and icount: as qemu-img fills them', async () => {
      const before = Date.now() / 1000;
      expect(await ours(dir, ['snapshot', '-c', 'now', 'f.qcow2'])).toEqual({ code: 0, stdout: '', stderr: '' });
      const after = Date.now() / 1000;
      const info = JSON.parse(ok(dir, 'qemu-img', 'info', '--output=json', 'f.qcow2')) as { snapshots: Record<string, number | string>[] };
      const s = info.snapshots[0] as Record<string, number | string>;
      expect(s).toMatchObject({ id: '1', name: 'now', 'vm-state-size': 0, 'vm-clock-sec': 0, 'vm-clock-nsec': 0, icount: 0 });
      const date = (s['date-sec'] as number) + (s['date-nsec'] as number) / 1e9;
      expect(date).toBeGreaterThanOrEqual(Math.floor(before));
      expect(date).toBeLessThanOrEqual(after + 1);
      expect((s['date-nsec'] as number) % 1000).toBe(0); // microseconds, as g_get_real_time()
    });

    it('our info and convert -l read our snapshot as qemu-img reads it', async () => {
      ok(dir, 'qemu-io', '-c', 'write -P 2 0 4k', 'f.qcow2');
      for (const args of [['info', 'f.qcow2'], ['info', '--output=json', 'f.qcow2']]) {
        const q = sh(dir, 'qemu-img', args);
        expect(await ours(dir, args)).toEqual({ code: 0, stdout: q.stdout, stderr: '' });
      }
      ok(dir, 'qemu-img', 'convert', '-O', 'raw', '-l', 'now', 'f.qcow2', 'q.raw');
      expect(await ours(dir, ['convert', '-O', 'raw', '-l', 'now', 'f.qcow2', 'o.raw'])).toEqual({ code: 0, stdout: '', stderr: '' });
      expect(fileBytes(dir, 'o.raw').equals(fileBytes(dir, 'q.raw'))).toBe(true);
      ok(dir, 'qemu-img', 'convert', '-O', 'raw', 'f.qcow2', 'active.raw');
      expect(fileBytes(dir, 'o.raw').equals(fileBytes(dir, 'active.raw'))).toBe(false);
    });

    it('-c of a name in use: refused (qemu-img 7.2 makes a second snapshot; @qcow2/engine refuses duplicates)', async () => {
      ok(dir, 'qemu-img', 'snapshot', '-c', 'taken', 'f.qcow2');
      const before = fileBytes(dir, 'f.qcow2');
      expect(await ours(dir, ['snapshot', '-c', 'taken', 'f.qcow2'])).toEqual({
        code: 1,
        stdout: '',
        stderr: "qcow2: Could not create snapshot 'taken': -22 (Invalid argument)\n",
      });
      expect(fileBytes(dir, 'f.qcow2').equals(before)).toBe(true);
      ok(dir, 'qemu-img', 'snapshot', '-d', 'taken', 'f.qcow2');
    });

    it('qemu-img applies and deletes a snapshot we made, and finds the image clean', async () => {
      ok(dir, 'qemu-img', 'convert', '-O', 'raw', 'f.qcow2', 'before.raw');
      expect((await ours(dir, ['snapshot', '-c', 'for-qemu', 'f.qcow2'])).code).toBe(0);
      ok(dir, 'qemu-io', '-c', 'write -P 9 0 128k', 'f.qcow2');
      ok(dir, 'qemu-img', 'snapshot', '-a', 'for-qemu', 'f.qcow2');
      ok(dir, 'qemu-img', 'convert', '-O', 'raw', 'f.qcow2', 'after.raw');
      expect(fileBytes(dir, 'after.raw').equals(fileBytes(dir, 'before.raw'))).toBe(true);
      ok(dir, 'qemu-img', 'snapshot', '-d', 'for-qemu', 'f.qcow2');
      expect(sh(dir, 'qemu-img', ['check', 'f.qcow2'])).toMatchObject({ code: 0, stderr: '' });
    });

    it('a name of 300 bytes is cut to 255, as qemu-img cuts it', async () => {
      expect((await ours(dir, ['snapshot', '-c', 'é'.repeat(150), 'f.qcow2'])).code).toBe(0);
      const info = JSON.parse(ok(dir, 'qemu-img', 'info', '--output=json', 'f.qcow2')) as { snapshots: { name: string }[] };
      // qemu's pstrcpy would split the 128th character; we stop before it.
      expect(info.snapshots[1]?.name).toBe('é'.repeat(127));
    });
  });
});
