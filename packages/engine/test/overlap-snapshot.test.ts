import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { corrupt, isQcow2Error, type Qcow2Error } from '@qcow2/format';
import { RefcountArray, rebuildRefcountStructure } from '@qcow2/refcount';
import { createMemoryStorage } from '@qcow2/storage';
import { createNodeStorage } from '@qcow2/storage-node';
import { describeWithQemu, makeTempDir, qemuCheck, qemuImg, qemuIo } from '@qcow2/test-utils';
import { openImage, type CorruptionEvent, type OpenOptions } from '../src/index.js';

// Snapshot operations pass qemu's overlap check (qcow2-snapshot.c: the new L1 copy and the new
// snapshot table with nothing ignored, the applied active L1 with the active L1 ignored), and a
// refcount rebuild checks each refblock and the reftable (rebuild_refcounts_write_refblocks).

const tmp = makeTempDir('qcow2-overlap-snapshot-');
afterAll(() => tmp.cleanup());

const view = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);
const u64 = (b: Uint8Array, at: number): number => Number(view(b).getBigUint64(at));
const corruptBit = (b: Uint8Array): bigint => view(b).getBigUint64(72) & 2n;
const qemuLine = (name: string): string =>
  `qcow2: Marking image as corrupt: Preventing invalid write on metadata (overlaps with ${name}); further corruption events will be suppressed`;

async function withImage<T>(file: string, fn: (image: Awaited<ReturnType<typeof openImage>>) => Promise<T>, options: OpenOptions = {}): Promise<T> {
  const storage = await createNodeStorage(file);
  try {
    const image = await openImage(storage, { readOnly: false, name: file, ...options });
    try {
      return await fn(image);
    } finally {
      await image.close().catch(() => undefined);
    }
  } finally {
    await storage.close();
  }
}

async function rejection(promise: Promise<unknown>): Promise<Qcow2Error> {
  try {
    await promise;
  } catch (error) {
    if (!isQcow2Error(error)) throw error;
    return error;
  }
  throw new Error('expected a rejection');
}

function firstDifference(a: Uint8Array, b: Uint8Array): string {
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return `byte 0x${i.toString(16)}: ${a[i]} vs ${b[i]}`;
  return 'equal';
}

/** qemu-img check's verdict without the file name. */
function verdict(file: string): unknown {
  const r = qemuCheck(file);
  const { filename: _f, ...rest } = r.json as Record<string, unknown>;
  return { exit: r.exitCode, ...rest };
}

/**
 * An image with snapshots s1 and s2 (s2 after a copy-on-write), then s1's L1 table offset poked
 * to `target` (a cluster holding other metadata): deleting s1 frees that cluster, and the next
 * snapshot's L1 copy is allocated there.
 */
function pokedImage(name: string, target: (b: Uint8Array) => number): string {
  const file = join(tmp.dir, `${name}.qcow2`);
  qemuImg(['create', '-q', '-f', 'qcow2', file, '64M']);
  qemuIo(['-c', 'write -P 0x11 0 64k', file]);
  qemuImg(['snapshot', '-c', 's1', file]);
  qemuIo(['-c', 'write -P 0x22 0 512', file]);
  qemuImg(['snapshot', '-c', 's2', file]);
  const bytes = new Uint8Array(readFileSync(file));
  const table = u64(bytes, 64);
  view(bytes).setBigUint64(table, BigInt(target(bytes)));
  writeFileSync(file, bytes);
  return file;
}

/** s2's entry follows s1's (8-aligned) in the table qemu wrote. */
function secondSnapshotL1(bytes: Uint8Array): number {
  const table = u64(bytes, 64);
  const v = view(bytes);
  const first = 40 + v.getUint32(table + 36) + v.getUint16(table + 12) + v.getUint16(table + 14);
  return u64(bytes, table + Math.ceil(first / 8) * 8);
}

describeWithQemu('snapshot operations under the metadata overlap checks (as qemu-img snapshot)', () => {
  const scenarios = [
    { name: 'active L1 table', target: (b: Uint8Array) => u64(b, 40) },
    { name: 'inactive L1 table', target: secondSnapshotL1 },
  ];
  for (const sc of scenarios) {
    it(`s1's L1 offset poked onto the ${sc.name}: delete frees it, the next create's L1 copy is refused with qemu's words`, async () => {
      const poked = pokedImage(sc.name.replace(/ /g, '-'), sc.target);
      const original = readFileSync(poked);
      const target = sc.target(new Uint8Array(original));
      const ours = join(tmp.dir, `${sc.name.replace(/ /g, '-')}.ours.qcow2`);
      const theirs = join(tmp.dir, `${sc.name.replace(/ /g, '-')}.qemu.qcow2`);
      writeFileSync(ours, original);
      writeFileSync(theirs, original);

      // One open per qemu-img run: the allocator starts from the beginning of the file each time.
      await withImage(ours, (image) => image.deleteSnapshot('s1'));
      const events: CorruptionEvent[] = [];
      const refused = await withImage(
        ours,
        async (image) => {
          const error = await rejection(image.createSnapshot('s3', { dateSec: 1, dateNsec: 0 }));
          // The image is unusable for writes now, as qemu's is.
          expect((await rejection(image.write(new Uint8Array(512), 0))).code).toBe('CORRUPT');
          return error;
        },
        { onCorruption: (e) => events.push(e) },
      );
      expect(refused.code).toBe('CORRUPT');
      expect(refused.message).toContain(`Preventing invalid write on metadata (overlaps with ${sc.name})`);
      expect(refused.message).toContain(`0x${target.toString(16)}`);
      expect(events.map((e) => e.message)).toEqual([`Preventing invalid write on metadata (overlaps with ${sc.name})`]);

      // qemu-img with pass-discard-snapshot=off: our node storage cannot punch holes, so the
      // clusters qemu would discard keep their bytes here too.
      const opts = `driver=qcow2,file.filename=${theirs},pass-discard-snapshot=off`;
      qemuImg(['snapshot', '--image-opts', '-d', 's1', opts]);
      const q = spawnSync('qemu-img', ['snapshot', '--image-opts', '-c', 's3', opts], { encoding: 'utf8' });
      expect(q.status).toBe(1);
      expect(q.stderr).toContain(qemuLine(sc.name));
      expect(q.stderr).toContain("Could not create snapshot 's3'");

      const a = new Uint8Array(readFileSync(ours));
      const b = new Uint8Array(readFileSync(theirs));
      expect(corruptBit(a)).toBe(2n);
      expect(corruptBit(b)).toBe(2n);
      if (sc.name === 'active L1 table') {
        // qemu's delete walks the "snapshot" L1 table at the active table's offset in the active
        // table's memory (qcow2_update_snapshot_refcount uses s->l1_table for that offset), so
        // its COPIED pass finds nothing to change and leaves the active L1 entry's COPIED flag
        // clear on disk; ours reads the snapshot table from the file and writes the flag back.
        // Everything else is the same.
        const l1 = u64(b, 40);
        expect(b[l1]).toBe(0);
        expect(a[l1]).toBe(0x80);
        b[l1] = 0x80;
        expect(firstDifference(a, b)).toBe('equal');
      } else {
        expect(firstDifference(a, b)).toBe('equal');
        expect(verdict(ours)).toEqual(verdict(theirs));
      }
    });
  }

  it('without the checks (overlapCheck none) the same create overwrites the metadata: the check is what stops it', async () => {
    const poked = pokedImage('unchecked', (b) => u64(b, 40));
    await withImage(poked, (image) => image.deleteSnapshot('s1'), { overlapCheck: 'none' });
    await withImage(poked, async (image) => {
      await image.createSnapshot('s3', { dateSec: 1, dateNsec: 0 });
    }, { overlapCheck: 'none' });
    const bytes = new Uint8Array(readFileSync(poked));
    expect(corruptBit(bytes)).toBe(0n);
    // The snapshot's L1 copy now lies where the active L1 table is.
    const table = u64(bytes, 64);
    const count = view(bytes).getUint32(60);
    const l1s: number[] = [];
    let at = table;
    for (let i = 0; i < count; i++) {
      const v = view(bytes);
      l1s.push(u64(bytes, at));
      at += Math.ceil((40 + v.getUint32(at + 36) + v.getUint16(at + 12) + v.getUint16(at + 14)) / 8) * 8;
    }
    expect(l1s).toContain(u64(bytes, 40));
  });

  it("overlapCheck 'all': a delete's COPIED updates in tables no snapshot left shares pass (the view follows the new table before they are written), as in qemu", async () => {
    const ours = join(tmp.dir, 'all.ours.qcow2');
    const theirs = join(tmp.dir, 'all.qemu.qcow2');
    for (const f of [ours, theirs]) {
      qemuImg(['create', '-q', '-f', 'qcow2', f, '64M']);
      qemuIo(['-c', 'write -P 1 0 64k', f]);
      // Known to the checks from the open on: its L2 table is an inactive one.
      qemuImg(['snapshot', '-c', 'a', f]);
    }
    const allOpts = `driver=qcow2,file.filename=${theirs},overlap-check=all`;
    const qemuSteps = [
      // a's tables are shared with the active ones only: once a is gone they get COPIED back.
      ['snapshot', '--image-opts', '-d', 'a', allOpts],
      ['snapshot', '--image-opts', '-c', 'b', allOpts],
      ['snapshot', '--image-opts', '-a', 'b', allOpts],
      ['snapshot', '--image-opts', '-d', 'b', allOpts],
    ];
    for (const step of qemuSteps) qemuImg(step);
    await withImage(
      ours,
      async (image) => {
        await image.deleteSnapshot('a');
        await image.createSnapshot('b', { dateSec: 1, dateNsec: 0 });
        await image.applySnapshot('b');
        await image.deleteSnapshot('b');
        await image.write(new Uint8Array(512).fill(5), 1 << 20);
      },
      { overlapCheck: 'all' },
    );
    expect(corruptBit(new Uint8Array(readFileSync(ours)))).toBe(0n);
    expect(corruptBit(new Uint8Array(readFileSync(theirs)))).toBe(0n);
    expect(qemuCheck(ours).exitCode).toBe(0);
  });

  it("overlapCheck 'all': deleting a snapshot whose L2 table another snapshot still holds is refused as qemu refuses it", async () => {
    const ours = join(tmp.dir, 'all-refused.ours.qcow2');
    const theirs = join(tmp.dir, 'all-refused.qemu.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', ours, '64M']);
    qemuIo(['-c', 'write -P 1 0 64k', ours]);
    qemuImg(['snapshot', '-c', 'a', ours]);
    qemuImg(['snapshot', '-c', 'b', ours]);
    qemuIo(['-c', 'write -P 2 0 512', ours]);
    writeFileSync(theirs, readFileSync(ours));
    const q = spawnSync('qemu-img', ['snapshot', '--image-opts', '-d', 'a', `driver=qcow2,file.filename=${theirs},overlap-check=all`], {
      encoding: 'utf8',
    });
    expect(q.status).toBe(1);
    expect(q.stderr).toContain(qemuLine('inactive L2 table'));
    const error = await withImage(ours, (image) => rejection(image.deleteSnapshot('a')), { overlapCheck: 'all' });
    expect(error.code).toBe('CORRUPT');
    expect(error.message).toContain('Preventing invalid write on metadata (overlaps with inactive L2 table)');
    expect(corruptBit(new Uint8Array(readFileSync(ours)))).toBe(2n);
    expect(corruptBit(new Uint8Array(readFileSync(theirs)))).toBe(2n);
  });
});

it('a refcount rebuild checks each refblock and the reftable before writing it (refused: nothing more written, header unchanged)', async () => {
  const cs = 65536;
  for (const refuseAt of ['refblock', 'reftable'] as const) {
    const counts = new RefcountArray(16, 4, 8);
    for (let c = 0; c < 4; c++) counts.set(c, 1);
    const storage = createMemoryStorage();
    const original = new Uint8Array(8 * cs).fill(0xee);
    await storage.write(original, 0);
    const seen: string[] = [];
    const error = await rejection(
      rebuildRefcountStructure({
        storage,
        counts,
        writeGuard: (offset, length, what) => {
          seen.push(`${what} ${offset} ${length}`);
          return what === refuseAt ? Promise.reject(corrupt(`refused ${what}`)) : undefined;
        },
      }),
    );
    expect(error.message).toBe(`refused ${refuseAt}`);
    // The refblock goes to cluster 4 (first free), the table to cluster 5.
    // (The block is written again once the table's place is counted in it.)
    expect(seen).toEqual(
      refuseAt === 'refblock' ? [`refblock ${4 * cs} ${cs}`] : [`refblock ${4 * cs} ${cs}`, `refblock ${4 * cs} ${cs}`, `reftable ${5 * cs} ${cs}`],
    );
    const after = new Uint8Array(8 * cs);
    await storage.read(after, 0);
    // The header is untouched, and so is every cluster but an allowed refblock.
    expect(firstDifference(after.subarray(0, 4 * cs), original.subarray(0, 4 * cs))).toBe('equal');
    if (refuseAt === 'refblock') expect(firstDifference(after.subarray(4 * cs), original.subarray(4 * cs))).toBe('equal');
    else expect(firstDifference(after.subarray(5 * cs), original.subarray(5 * cs))).toBe('equal');
  }
});
