import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeWithQemu, makeTempDir, qemuCheck, qemuImg, qemuInfo, qemuIo } from '@qcow2/test-utils';
import { describeWithChromium } from './browser/describe-with-chromium.js';
import { runInChromium } from './browser/run-in-chromium.js';
import type { E2eOp, E2ePageReport, E2eParams, ImageView, SnapshotParams } from './browser/e2e-report.js';

// The engine end to end in headless Chromium: in a dedicated worker over OPFS (createOpfsStorage),
// an image created, written, reopened and read back; and an overlay in OPFS whose backing file is
// a qcow2 made here by qemu and served over HTTP by the harness (opened with createHttpStorage by
// the resolver), written to and read as the merged view. The page also reads the created image
// with the engine on the main thread over createOpfsWorkerStorage. Internal snapshots in the
// worker too: create, write over, reopen, read the active disk and the snapshots, apply, write,
// delete, reopen read-only. The browser reports digests of what it read (and the snapshot list
// after each step) and the image files themselves; the expected bytes are computed here, and
// qemu checks the files.

const tmp = makeTempDir('qcow2-opfs-e2e-');
afterAll(() => tmp.cleanup());

const entry = (name: string): string => fileURLToPath(new URL(`./browser/${name}`, import.meta.url));

const KiB = 1024;
const MiB = 1024 * KiB;
const CLUSTER = 64 * KiB;
const DIGEST_CHUNK = MiB;
const CREATED_SIZE = 4 * MiB;
const BASE_SIZE = 8 * MiB;

const createdOps: E2eOp[] = [
  { kind: 'write', offset: 0, length: 3 * CLUSTER, fill: 0xa1 },
  { kind: 'zero', offset: CLUSTER, length: CLUSTER },
  { kind: 'write', offset: MiB + 512, length: 8192, fill: 0xb2 },
  { kind: 'compressed', offset: 2 * MiB, length: 2 * CLUSTER, fill: 0xc3 },
  { kind: 'write', offset: 3 * MiB - 777, length: 100_000, from: 0 },
  { kind: 'write', offset: 3 * MiB + 5000, length: 1000, fill: 0xe5 },
];

// Over the base: partial clusters of its random data (copy-on-write over HTTP), a zeroed
// allocated cluster, its pattern area, space it leaves unallocated, and a compressed cluster.
const overlayOps: E2eOp[] = [
  { kind: 'write', offset: 100_000, length: 50_000, from: 100_000 },
  { kind: 'zero', offset: 512 * KiB, length: CLUSTER },
  { kind: 'write', offset: 3 * MiB + 1000, length: 3000, fill: 0x22 },
  { kind: 'write', offset: 5 * MiB, length: CLUSTER, fill: 0x33 },
  { kind: 'write', offset: 6 * MiB + 4096, length: 4096, fill: 0x44 },
];

// The snapshot sequence (see SnapshotParams): A before "base", B before "middle" (copy-on-write of
// a cluster "base" shares, zeroes over its compressed cluster, a fresh cluster), C over clusters
// both share, D over the applied "base".
const SNAPSHOT_SIZE = 4 * MiB;
const BASE_DATE = 1_700_000_000;
const snapshotParams: SnapshotParams = {
  virtualSize: SNAPSHOT_SIZE,
  baseDate: BASE_DATE,
  phases: {
    A: [
      { kind: 'write', offset: 0, length: 3 * CLUSTER, fill: 0xa1 },
      { kind: 'write', offset: MiB + 1000, length: 100_000, from: 0 },
      { kind: 'compressed', offset: 2 * MiB, length: 2 * CLUSTER, fill: 0xc3 },
    ],
    B: [
      { kind: 'write', offset: CLUSTER + 4096, length: 8192, fill: 0xb2 },
      { kind: 'zero', offset: 2 * MiB, length: CLUSTER },
      { kind: 'write', offset: 3 * MiB, length: CLUSTER, fill: 0xb3 },
    ],
    C: [
      { kind: 'write', offset: 0, length: 2 * CLUSTER, fill: 0xd4 },
      { kind: 'write', offset: MiB + 50_000, length: 30_000, from: 100_000 },
    ],
    D: [{ kind: 'write', offset: CLUSTER / 2, length: 1000, fill: 0xe5 }],
  },
};

function pseudoRandom(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

const payload = pseudoRandom(200_000, 0x2545f491);

function apply(disk: Uint8Array, ops: readonly E2eOp[]): Uint8Array {
  for (const op of ops) {
    if (op.kind === 'zero') disk.fill(0, op.offset, op.offset + op.length);
    else if ('from' in op) disk.set(payload.subarray(op.from, op.from + op.length), op.offset);
    else disk.fill(op.fill, op.offset, op.offset + op.length);
  }
  return disk;
}

/** The base's guest content: random data in its first 2 MiB, a 0x11 area, a compressed 0x5a area (added by qemu-io), zeros elsewhere. */
function baseContent(): Uint8Array {
  const disk = new Uint8Array(BASE_SIZE);
  disk.set(pseudoRandom(2 * MiB, 0x1234567), 0);
  disk.fill(0x11, 3 * MiB, 3 * MiB + 512 * KiB);
  return disk;
}

const digests = (disk: Uint8Array): string[] => {
  const out: string[] = [];
  for (let at = 0; at < disk.length; at += DIGEST_CHUNK) out.push(createHash('sha256').update(disk.subarray(at, at + DIGEST_CHUNK)).digest('hex'));
  return out;
};

describeWithQemu('engine end to end in headless Chromium', () => {
  describeWithChromium('OPFS in a dedicated worker, and an overlay over an HTTP backing file', () => {
    const basePath = join(tmp.dir, 'base.qcow2');
    const expectedCreated = apply(new Uint8Array(CREATED_SIZE), createdOps);
    let expectedBase: Uint8Array;
    let expectedMerged: Uint8Array;
    let report: E2ePageReport;

    beforeAll(async () => {
      const raw = join(tmp.dir, 'base.raw');
      writeFileSync(raw, baseContent());
      qemuImg(['convert', '-f', 'raw', '-O', 'qcow2', raw, basePath]);
      qemuIo(['-f', 'qcow2', '-c', `write -c -P 0x5a ${6 * MiB} ${2 * CLUSTER}`, basePath]);
      expectedBase = baseContent().fill(0x5a, 6 * MiB, 6 * MiB + 2 * CLUSTER);
      expectedMerged = apply(expectedBase.slice(), overlayOps);
      const params: E2eParams = {
        virtualSize: CREATED_SIZE,
        ops: createdOps,
        baseUrl: '/images/base.qcow2',
        overlayOps,
        digestChunk: DIGEST_CHUNK,
        snapshots: snapshotParams,
      };
      const run = await runInChromium<E2ePageReport>({
        entries: { page: entry('e2e-page.ts'), worker: entry('e2e-worker.ts') },
        files: {
          '/images/base.qcow2': new Uint8Array(readFileSync(basePath)),
          '/e2e/payload.bin': payload,
          '/e2e/params.json': JSON.stringify(params),
        },
        timeoutMs: 90_000,
      });
      report = run.report;
      if (report.fatal !== undefined) throw new Error(`the page failed: ${report.fatal.name}: ${report.fatal.message}\n${run.logs.join('\n')}`);
    }, 120_000);

    const expectView = (view: ImageView, expected: Uint8Array, state: Partial<ImageView>): void => {
      expect(view).toMatchObject({ format: 'qcow2', virtualSize: expected.length, ...state });
      const want = digests(expected);
      const wrong = view.digests.flatMap((d, i) => (d === want[i] ? [] : [`MiB ${i}`]));
      expect(wrong, 'chunks whose bytes differ from the expected disk').toEqual([]);
      expect(view.digests).toHaveLength(want.length);
    };

    describe('an image created in OPFS by the worker', () => {
      it('the engine ran in a dedicated worker', () => {
        expect(report.worker.inWorker).toBe(true);
      });
      it('reads back what was written while open writable', () => {
        expectView(report.worker.created.writable, expectedCreated, { readOnly: false, hasBacking: false });
      });
      it('reads it back after close, reopened read-only (clean)', () => {
        expectView(report.worker.created.reopened, expectedCreated, { readOnly: true, dirty: false, hasBacking: false });
      });
      it('the page reads the same bytes with the engine over createOpfsWorkerStorage', () => {
        expectView(report.pageView, expectedCreated, { readOnly: true, dirty: false });
      });
      it('the file passes qemu-img check (0 errors, 0 leaks, 2 compressed clusters) and converts to the expected disk', () => {
        const file = join(tmp.dir, 'created.qcow2');
        writeFileSync(file, Buffer.from(report.worker.created.file, 'base64'));
        const { exitCode, json } = qemuCheck(file);
        expect(exitCode, JSON.stringify(json)).toBe(0);
        expect(json['check-errors']).toBe(0);
        expect(json['leaks'] ?? 0).toBe(0);
        expect(json['compressed-clusters']).toBe(2);
        const raw = join(tmp.dir, 'created.raw');
        qemuImg(['convert', '-f', 'qcow2', '-O', 'raw', file, raw]);
        expect(Buffer.compare(readFileSync(raw), expectedCreated)).toBe(0);
      });
    });

    describe('an overlay in OPFS over a qcow2 backing file served over HTTP', () => {
      it('takes its size from the backing file and names it relative, with its format', () => {
        expect(report.worker.overlay.writable).toMatchObject({
          virtualSize: BASE_SIZE,
          backingFile: 'base.qcow2',
          backingFormat: 'qcow2',
          hasBacking: true,
        });
      });
      it('the merged view after the writes (copy-on-write from HTTP, zeroes, compressed base clusters) is the expected disk', () => {
        expectView(report.worker.overlay.writable, expectedMerged, { readOnly: false });
      });
      it('the same after close, reopened read-only over a fresh HTTP storage', () => {
        expectView(report.worker.overlay.reopened, expectedMerged, { readOnly: true, dirty: false, hasBacking: true });
      });
      it('the backing file was read with range requests, each byte fetched at most once', () => {
        const size = readFileSync(basePath).length;
        expect(report.worker.overlay.http.requests).toBeGreaterThan(1);
        expect(report.worker.overlay.http.bytesFetched).toBeGreaterThan(0);
        expect(report.worker.overlay.http.bytesFetched).toBeLessThanOrEqual(size);
      });
      it('the HTTP storage refuses writes with READ_ONLY, and closing the overlay closed it (CLOSED)', () => {
        expect(report.worker.overlay.httpWrite).toMatchObject({ isQcow2Error: true, code: 'READ_ONLY' });
        expect(report.worker.overlay.httpAfterClose).toMatchObject({ isQcow2Error: true, code: 'CLOSED' });
      });
      it('the overlay file, beside the base on disk, passes qemu-img check, and qemu reads the same merged disk', () => {
        const file = join(tmp.dir, 'overlay.qcow2');
        writeFileSync(file, Buffer.from(report.worker.overlay.file, 'base64'));
        const { exitCode, json } = qemuCheck(file);
        expect(exitCode, JSON.stringify(json)).toBe(0);
        expect(json['check-errors']).toBe(0);
        expect(json['leaks'] ?? 0).toBe(0);
        expect(qemuInfo(file)).toMatchObject({ 'backing-filename': 'base.qcow2', 'backing-filename-format': 'qcow2', 'virtual-size': BASE_SIZE });
        const raw = join(tmp.dir, 'merged.raw');
        qemuImg(['convert', '-f', 'qcow2', '-O', 'raw', file, raw]);
        expect(Buffer.compare(readFileSync(raw), expectedMerged)).toBe(0);
      });
    });

    describe('internal snapshots of an image in OPFS, in the worker', () => {
      const { A, B, C, D } = snapshotParams.phases;
      const diskA = apply(new Uint8Array(SNAPSHOT_SIZE), A);
      const diskAB = apply(diskA.slice(), B);
      const diskABC = apply(diskAB.slice(), C);
      const diskAD = apply(diskA.slice(), D);
      const snapshotsFile = (name: string, base64: string): string => {
        const file = join(tmp.dir, name);
        writeFileSync(file, Buffer.from(base64, 'base64'));
        return file;
      };
      const expectClean = (file: string): void => {
        const { exitCode, json } = qemuCheck(file);
        expect(exitCode, JSON.stringify(json)).toBe(0);
        expect(json['check-errors']).toBe(0);
        expect(json['leaks'] ?? 0).toBe(0);
        expect(json['corruptions'] ?? 0).toBe(0);
      };
      /** `qemu-img snapshot -l` rows as [id, tag] (the tags here have no spaces). */
      const qemuSnapshotList = (file: string): string[][] =>
        qemuImg(['snapshot', '-l', file])
          .split('\n')
          .filter((line) => /^\d+\s/.test(line))
          .map((line) => line.split(/\s+/).slice(0, 2));
      const qemuRaw = (file: string, snapshot?: string): Buffer => {
        const raw = `${file}.${snapshot ?? 'active'}.raw`;
        qemuImg(['convert', '-f', 'qcow2', ...(snapshot === undefined ? [] : ['-l', snapshot]), '-O', 'raw', file, raw]);
        return readFileSync(raw);
      };

      it('the expected disks differ chunk by chunk where the phases wrote (the digest comparisons can fail)', () => {
        for (const [a, b] of [[diskA, diskAB], [diskAB, diskABC], [diskA, diskAD], [diskAD, diskABC]] as const) {
          expect(digests(a)).not.toEqual(digests(b));
        }
      });

      it('the snapshot list after each step: create, create, reopen, apply, delete, reopen read-only', () => {
        const { lists } = report.worker.snapshots;
        const base = { id: '1', name: 'base', diskSize: SNAPSHOT_SIZE, vmStateSize: 0, dateSec: BASE_DATE };
        const middle = { id: '2', name: 'middle', diskSize: SNAPSHOT_SIZE, vmStateSize: 0 };
        expect(lists.createBase).toEqual([base]);
        expect(lists.createMiddle).toMatchObject([base, middle]);
        expect(lists.reopened).toMatchObject([base, middle]);
        expect(lists.applied).toMatchObject([base, middle]);
        expect(lists.deleted).toEqual([base]);
        expect(lists.final).toEqual([base]);
      });

      it('after reopening: the active disk holds every write, "base" (by name) the first phase, snapshot id 2 the first two', () => {
        const { views } = report.worker.snapshots;
        expectView(views.activeAbc, diskABC, { readOnly: false });
        expectView(views.baseByName, diskA, { readOnly: true });
        expectView(views.middleById, diskAB, { readOnly: true });
      });

      it('applySnapshot("base") makes the active disk the snapshot; a write after it leaves the snapshot unchanged', () => {
        const { views } = report.worker.snapshots;
        expectView(views.activeApplied, diskA, { readOnly: false });
        expectView(views.activeAd, diskAD, { readOnly: false });
        expectView(views.baseAfterWrite, diskA, { readOnly: true });
      });

      it('reopened read-only after the delete: clean, the same disks, and "middle" is gone (NOT_FOUND)', () => {
        const { views, missing } = report.worker.snapshots;
        expectView(views.finalActive, diskAD, { readOnly: true, dirty: false });
        expectView(views.finalBase, diskA, { readOnly: true });
        expect(missing).toMatchObject({ isQcow2Error: true, code: 'NOT_FOUND' });
      });

      it('the final file: qemu-img check clean, snapshot -l lists exactly "base" (id 1, its date), convert -l base and the active disk as the worker read them', () => {
        const file = snapshotsFile('snapshots.qcow2', report.worker.snapshots.file);
        expectClean(file);
        expect(qemuSnapshotList(file)).toEqual([['1', 'base']]);
        expect((qemuInfo(file) as { snapshots?: unknown[] }).snapshots).toEqual([
          expect.objectContaining({ id: '1', name: 'base', 'vm-state-size': 0, 'date-sec': BASE_DATE }),
        ]);
        const base = qemuRaw(file, 'base');
        expect(digests(base)).toEqual(report.worker.snapshots.views.finalBase.digests);
        expect(Buffer.compare(base, diskA)).toBe(0);
        expect(Buffer.compare(qemuRaw(file), diskAD)).toBe(0);
      });

      it('the file while both snapshots existed: check clean, both listed, each converts to what the worker read from it', () => {
        const file = snapshotsFile('two-snapshots.qcow2', report.worker.snapshots.twoSnapshotsFile);
        expectClean(file);
        expect(qemuSnapshotList(file)).toEqual([
          ['1', 'base'],
          ['2', 'middle'],
        ]);
        const { views } = report.worker.snapshots;
        expect(digests(qemuRaw(file, 'base'))).toEqual(views.baseByName.digests);
        expect(digests(qemuRaw(file, 'middle'))).toEqual(views.middleById.digests);
        expect(digests(qemuRaw(file))).toEqual(views.activeAbc.digests);
      });
    });
  });
});
