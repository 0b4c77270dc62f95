import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeWithQemu, makeTempDir, qemuCheck, qemuImg, qemuInfo } from '@qcow2/test-utils';
import { pakoModule, runDenoScript } from './deno-harness.js';

// Internal snapshots end to end in the real Deno binary, over a Deno file: create an image, write,
// snapshot "base", write over it, snapshot "middle", write again, close; reopen writable, read the
// active disk and both snapshots (openSnapshot by name and by id), apply "base" and read, write
// over the applied content, delete "middle", close; reopen read-only and read again. Deno reports
// the snapshot list after each step and saves what it read; the expected disks are computed here,
// and qemu-img judges the file Deno left (and a copy Deno took while both snapshots existed).

const tmp = makeTempDir('qcow2-deno-snapshots-');
afterAll(() => tmp.cleanup());

const KiB = 1024;
const MiB = 1024 * KiB;
const CLUSTER = 64 * KiB;
const VIRTUAL_SIZE = 4 * MiB;
const BASE_DATE = 1_700_000_000;

type Op =
  | { kind: 'write'; offset: number; length: number; fill: number }
  | { kind: 'write'; offset: number; length: number; from: number }
  | { kind: 'compressed'; offset: number; length: number; fill: number }
  | { kind: 'zero'; offset: number; length: number };

/** Before "base": plain clusters, unaligned random bytes across clusters, compressed clusters. */
const phaseA: Op[] = [
  { kind: 'write', offset: 0, length: 3 * CLUSTER, fill: 0xa1 },
  { kind: 'write', offset: MiB + 1000, length: 100_000, from: 0 },
  { kind: 'compressed', offset: 2 * MiB, length: 2 * CLUSTER, fill: 0xc3 },
];
/** Before "middle", over clusters "base" shares: a partial overwrite (copy-on-write), zeroes over a compressed cluster, a fresh cluster. */
const phaseB: Op[] = [
  { kind: 'write', offset: CLUSTER + 4096, length: 8192, fill: 0xb2 },
  { kind: 'zero', offset: 2 * MiB, length: CLUSTER },
  { kind: 'write', offset: 3 * MiB, length: CLUSTER, fill: 0xb3 },
];
/** After "middle", over clusters both snapshots share. */
const phaseC: Op[] = [
  { kind: 'write', offset: 0, length: 2 * CLUSTER, fill: 0xd4 },
  { kind: 'write', offset: MiB + 50_000, length: 30_000, from: 100_000 },
];
/** After applying "base": a partial write into a cluster the active disk shares with "base" again. */
const phaseD: Op[] = [{ kind: 'write', offset: CLUSTER / 2, length: 1000, fill: 0xe5 }];

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

const payload = pseudoRandom(200_000, 0x6d2b79f5);

/** The guest disk after `phases`, computed here independently of the engine. */
function disk(...phases: Op[][]): Uint8Array {
  const out = new Uint8Array(VIRTUAL_SIZE);
  for (const op of phases.flat()) {
    if (op.kind === 'zero') out.fill(0, op.offset, op.offset + op.length);
    else if ('from' in op) out.set(payload.subarray(op.from, op.from + op.length), op.offset);
    else out.fill(op.fill, op.offset, op.offset + op.length);
  }
  return out;
}

// Deno writes each read-back to DIR/<label>.raw and reports the snapshot list after each step.
const script = `
import { createImage, openImage } from '@qcow2/engine';
import { createDenoStorage } from '@qcow2/storage-deno';

const [dir, phasesJson, virtualSize, baseDate] = Deno.args;
const phases = JSON.parse(phasesJson);
const size = Number(virtualSize);
const path = dir + '/snapshots.qcow2';
const payload = Deno.readFileSync(dir + '/payload.bin');

async function apply(image, ops) {
  for (const op of ops) {
    if (op.kind === 'zero') { await image.writeZeroes(op.offset, op.length); continue; }
    const bytes = 'from' in op ? payload.slice(op.from, op.from + op.length) : new Uint8Array(op.length).fill(op.fill);
    if (op.kind === 'compressed') await image.writeCompressed(bytes, op.offset);
    else await image.write(bytes, op.offset);
  }
}
const lists = {};
const list = (step, image) => { lists[step] = image.snapshots.map((s) => ({ id: s.id, name: s.name, diskSize: s.diskSize, vmStateSize: s.vmStateSize, dateSec: s.dateSec })); };
async function save(label, image) {
  Deno.writeFileSync(dir + '/' + label + '.raw', await image.readBytes(0, image.virtualSize));
}
async function saveSnapshot(label, image, idOrName) {
  const view = await image.openSnapshot(idOrName);
  await save(label, view);
  await view.close();
}

const storage = await createDenoStorage(path, { create: true, truncate: true });
await createImage(storage, { size });
let image = await openImage(storage, { readOnly: false, name: path });
await apply(image, phases.A);
const created = await image.createSnapshot('base', { dateSec: Number(baseDate), dateNsec: 0 });
list('createBase', image);
await apply(image, phases.B);
await image.createSnapshot('middle');
list('createMiddle', image);
await apply(image, phases.C);
await image.close();
await storage.close();
// A copy while both snapshots exist, for qemu-img on the host.
Deno.copyFileSync(path, dir + '/two-snapshots.qcow2');

const rw = await createDenoStorage(path);
image = await openImage(rw, { readOnly: false, name: path });
list('reopened', image);
await save('active-abc', image);
await saveSnapshot('base-by-name', image, 'base');
await saveSnapshot('middle-by-id', image, '2');
await image.applySnapshot('base');
list('applied', image);
await save('active-applied', image);
await apply(image, phases.D);
await save('active-ad', image);
await saveSnapshot('base-after-write', image, 'base');
await image.deleteSnapshot('middle');
list('deleted', image);
await image.close();
await rw.close();

const ro = await createDenoStorage(path, { readOnly: true });
image = await openImage(ro, { name: path });
list('final', image);
await save('final-active', image);
await saveSnapshot('final-base', image, 'base');
const missing = await image.openSnapshot('middle').then(() => 'opened', (e) => e.code);
const finalInfo = { readOnly: image.readOnly, dirty: image.dirty, virtualSize: image.virtualSize };
await image.close();
await ro.close();

console.log(JSON.stringify({ deno: Deno.version.deno, created, lists, finalInfo, missing }));
`;

interface ListedSnapshot {
  id: string;
  name: string;
  diskSize: number;
  vmStateSize: number;
  dateSec: number;
}

interface DenoSnapshots {
  deno: string;
  created: { id: string; name: string; diskSize: number; vmStateSize: number; dateSec: number; dateNsec: number; vmClockNsec: number; icount?: number };
  lists: Record<'createBase' | 'createMiddle' | 'reopened' | 'applied' | 'deleted' | 'final', ListedSnapshot[]>;
  finalInfo: { readOnly: boolean; dirty: boolean; virtualSize: number };
  missing: string;
}

/** The rows of `qemu-img snapshot -l` as [id, tag] (tags here have no spaces). */
function qemuSnapshotList(file: string): [string, string][] {
  const out = qemuImg(['snapshot', '-l', file]);
  return out
    .split('\n')
    .filter((line) => /^\d+\s/.test(line))
    .map((line) => line.split(/\s+/).slice(0, 2) as [string, string]);
}

function qemuSnapshotRaw(file: string, name: string): Buffer {
  const raw = join(tmp.dir, `qemu-${name}-${file.endsWith('two-snapshots.qcow2') ? 'copy' : 'final'}.raw`);
  qemuImg(['convert', '-f', 'qcow2', '-l', name, '-O', 'raw', file, raw]);
  return readFileSync(raw);
}

const readBack = (label: string): Buffer => readFileSync(join(tmp.dir, `${label}.raw`));

function expectClean(file: string): void {
  const { exitCode, json } = qemuCheck(file);
  expect(exitCode, JSON.stringify(json)).toBe(0);
  expect(json['check-errors']).toBe(0);
  expect(json['leaks'] ?? 0).toBe(0);
  expect(json['corruptions'] ?? 0).toBe(0);
}

describeWithQemu('internal snapshots end to end in Deno over createDenoStorage', () => {
  const image = join(tmp.dir, 'snapshots.qcow2');
  const copy = join(tmp.dir, 'two-snapshots.qcow2');
  const diskA = disk(phaseA);
  const diskAB = disk(phaseA, phaseB);
  const diskABC = disk(phaseA, phaseB, phaseC);
  const diskAD = disk(phaseA, phaseD);
  let result: DenoSnapshots;

  beforeAll(async () => {
    writeFileSync(join(tmp.dir, 'payload.bin'), payload);
    const run = await runDenoScript<DenoSnapshots>({
      script,
      packages: ['@qcow2/engine', '@qcow2/storage-deno'],
      imports: { pako: pakoModule() },
      allow: [tmp.dir],
      args: [tmp.dir, JSON.stringify({ A: phaseA, B: phaseB, C: phaseC, D: phaseD }), String(VIRTUAL_SIZE), String(BASE_DATE)],
      timeoutMs: 60_000,
    });
    result = run.result;
  }, 600_000); // the first run may build the workspace packages Deno imports

  it('the expected disks differ from one another where the phases wrote (the comparisons below can fail)', () => {
    for (const [a, b] of [[diskA, diskAB], [diskAB, diskABC], [diskA, diskAD], [diskAD, diskABC]] as const) {
      expect(Buffer.compare(a, b)).not.toBe(0);
    }
  });

  describe('in Deno', () => {
    it('runs in the pinned Deno; createSnapshot returns the new entry as qemu-img would make it', () => {
      expect(result.deno).toBe('2.9.6');
      expect(result.created).toEqual({ id: '1', name: 'base', diskSize: VIRTUAL_SIZE, vmStateSize: 0, dateSec: BASE_DATE, dateNsec: 0, vmClockNsec: 0, icount: 0 });
    });

    it('the snapshot list after each step: create, create, reopen, apply, delete, reopen read-only', () => {
      const base = { id: '1', name: 'base', diskSize: VIRTUAL_SIZE, vmStateSize: 0, dateSec: BASE_DATE };
      const middle = { id: '2', name: 'middle', diskSize: VIRTUAL_SIZE, vmStateSize: 0 };
      expect(result.lists.createBase).toEqual([base]);
      expect(result.lists.createMiddle).toMatchObject([base, middle]);
      expect(result.lists.reopened).toMatchObject([base, middle]);
      expect(result.lists.applied).toMatchObject([base, middle]);
      expect(result.lists.deleted).toEqual([base]);
      expect(result.lists.final).toEqual([base]);
    });

    it('after reopening: the active disk holds every write, "base" (by name) the first phase, snapshot id 2 the first two', () => {
      expect(Buffer.compare(readBack('active-abc'), diskABC)).toBe(0);
      expect(Buffer.compare(readBack('base-by-name'), diskA)).toBe(0);
      expect(Buffer.compare(readBack('middle-by-id'), diskAB)).toBe(0);
    });

    it('applySnapshot("base") makes the active disk the snapshot; a write after it leaves the snapshot unchanged', () => {
      expect(Buffer.compare(readBack('active-applied'), diskA)).toBe(0);
      expect(Buffer.compare(readBack('active-ad'), diskAD)).toBe(0);
      expect(Buffer.compare(readBack('base-after-write'), diskA)).toBe(0);
    });

    it('reopened read-only after the delete: clean, the same disks, and "middle" is gone (NOT_FOUND)', () => {
      expect(result.finalInfo).toEqual({ readOnly: true, dirty: false, virtualSize: VIRTUAL_SIZE });
      expect(Buffer.compare(readBack('final-active'), diskAD)).toBe(0);
      expect(Buffer.compare(readBack('final-base'), diskA)).toBe(0);
      expect(result.missing).toBe('NOT_FOUND');
    });
  });

  describe('qemu-img on the host', () => {
    it('the file Deno left: check clean; snapshot -l lists exactly "base" with id 1 and its date', () => {
      expectClean(image);
      expect(qemuSnapshotList(image)).toEqual([['1', 'base']]);
      const info = qemuInfo(image) as { snapshots?: Record<string, unknown>[] };
      expect(info.snapshots).toHaveLength(1);
      expect(info.snapshots?.[0]).toMatchObject({ id: '1', name: 'base', 'vm-state-size': 0, 'date-sec': BASE_DATE, 'vm-clock-nsec': 0 });
    });

    it('convert -l base equals what Deno read from the snapshot; convert of the active disk equals its read-back', () => {
      const base = qemuSnapshotRaw(image, 'base');
      expect(Buffer.compare(base, readBack('final-base'))).toBe(0);
      expect(Buffer.compare(base, diskA)).toBe(0);
      const active = join(tmp.dir, 'qemu-active.raw');
      qemuImg(['convert', '-f', 'qcow2', '-O', 'raw', image, active]);
      expect(Buffer.compare(readFileSync(active), readBack('final-active'))).toBe(0);
    });

    it('the copy taken with both snapshots: check clean, both listed, each converts to what Deno read from it', () => {
      expectClean(copy);
      expect(qemuSnapshotList(copy)).toEqual([
        ['1', 'base'],
        ['2', 'middle'],
      ]);
      expect(Buffer.compare(qemuSnapshotRaw(copy, 'base'), readBack('base-by-name'))).toBe(0);
      expect(Buffer.compare(qemuSnapshotRaw(copy, 'middle'), readBack('middle-by-id'))).toBe(0);
      const active = join(tmp.dir, 'qemu-copy-active.raw');
      qemuImg(['convert', '-f', 'qcow2', '-O', 'raw', copy, active]);
      expect(Buffer.compare(readFileSync(active), readBack('active-abc'))).toBe(0);
    });
  });
});
