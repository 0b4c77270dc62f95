import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { isQcow2Error, type Qcow2Error } from '@qcow2/format';
import { createNodeStorage } from '@qcow2/storage-node';
import { describeWithQemu, makeTempDir, qemuImg, qemuInfo, qemuIo } from '@qcow2/test-utils';
import { checkImage, openImage, type OpenOptions } from '../src/index.js';
import { exitOf } from './check-fixtures.js';

// Images poked as qemu's iotests 060 pokes them, so that a guest write lands on metadata; each
// is written by us and by qemu-io (qemu 7.2) side by side and the files compared.

const tmp = makeTempDir('qcow2-overlap-');
afterAll(() => tmp.cleanup());

const u64 = (b: Uint8Array, at: number): number => Number(new DataView(b.buffer, b.byteOffset).getBigUint64(at));
const setU64 = (b: Uint8Array, at: number, v: bigint): void => new DataView(b.buffer, b.byteOffset).setBigUint64(at, v);
const COPIED = 1n << 63n;
const corruptBit = (b: Uint8Array): bigint => new DataView(b.buffer, b.byteOffset).getBigUint64(72) & 2n;

interface Layout {
  bytes: Uint8Array;
  l1: number;
  l2: number;
  refcountTable: number;
  refcountBlock: number;
  snapshotTable: number;
  snapshotL1: number;
  snapshotL2: number;
}

function layoutOf(bytes: Uint8Array): Layout {
  const l1 = u64(bytes, 40);
  const refcountTable = u64(bytes, 48);
  const snapshotTable = u64(bytes, 64);
  const nbSnapshots = new DataView(bytes.buffer, bytes.byteOffset).getUint32(60);
  const snapshotL1 = nbSnapshots > 0 ? u64(bytes, snapshotTable) : 0;
  return {
    bytes,
    l1,
    l2: u64(bytes, l1) & 0xff_ffff_ffff_fe00,
    refcountTable,
    refcountBlock: u64(bytes, refcountTable),
    snapshotTable: nbSnapshots > 0 ? snapshotTable : 0,
    snapshotL1,
    snapshotL2: snapshotL1 > 0 ? u64(bytes, snapshotL1) & 0xff_ffff_ffff_fe00 : 0,
  };
}

function make(name: string, snapshot: boolean, compat = '1.1'): Layout {
  const file = join(tmp.dir, `${name}.qcow2`);
  qemuImg(['create', '-q', '-f', 'qcow2', '-o', `compat=${compat}`, file, '64M']);
  qemuIo(['-c', 'write -P 0x11 0 64k', file]);
  if (snapshot) {
    qemuImg(['snapshot', '-c', 'snap', file]);
    qemuIo(['-c', 'write -P 0x22 0 512', file]); // the active L2 table and cluster 0 are copied
  }
  return layoutOf(new Uint8Array(readFileSync(file)));
}

/** A copy of the image whose active L2 entry 0 points (COPIED) at `target`. */
function pokedL2(layout: Layout, target: number): Uint8Array {
  const bytes = layout.bytes.slice();
  setU64(bytes, layout.l2, COPIED | BigInt(target));
  return bytes;
}

function save(name: string, bytes: Uint8Array): string {
  const file = join(tmp.dir, name);
  writeFileSync(file, bytes);
  return file;
}

async function openWritable(file: string, options: OpenOptions = {}) {
  const storage = await createNodeStorage(file);
  try {
    const image = await openImage(storage, { readOnly: false, name: file, ...options });
    return {
      image,
      close: async () => {
        try {
          await image.close();
        } finally {
          await storage.close();
        }
      },
    };
  } catch (error) {
    await storage.close();
    throw error;
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

/** qemu-io's run on a file: stderr + stdout, and its exit status. */
function qemuIoRun(args: string[]): { out: string; status: number | null } {
  const r = spawnSync('qemu-io', args, { encoding: 'utf8' });
  return { out: `${r.stderr}${r.stdout}`, status: r.status };
}

/**
 * Where two files differ first, bytes past the end of the shorter one reading as zeros (as they
 * read in qcow2), or 'equal'. (vitest's deep equality of large arrays is slow.)
 */
function firstDifference(a: Uint8Array, b: Uint8Array): string {
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return `byte 0x${i.toString(16)}: ${a[i]} vs ${b[i]}`;
  return 'equal';
}

const sameFiles = (a: string, b: string): string => firstDifference(new Uint8Array(readFileSync(a)), new Uint8Array(readFileSync(b)));

const pattern = new Uint8Array(512).fill(0x33);
const qemuLine = (name: string): string =>
  `qcow2: Marking image as corrupt: Preventing invalid write on metadata (overlaps with ${name}); further corruption events will be suppressed`;

describeWithQemu('metadata overlap checks (qemu iotests 060 style)', () => {
  let plain: Layout;
  let snap: Layout;
  beforeAll(() => {
    plain = make('plain', false);
    snap = make('snap', true);
  });

  const scenarios: { name: string; qemuName: string; poke: () => Uint8Array; target: () => number }[] = [
    { name: 'data onto the active L1 table', qemuName: 'active L1 table', poke: () => pokedL2(plain, plain.l1), target: () => plain.l1 },
    { name: 'data onto the refcount table', qemuName: 'refcount table', poke: () => pokedL2(plain, plain.refcountTable), target: () => plain.refcountTable },
    { name: 'data onto a refcount block', qemuName: 'refcount block', poke: () => pokedL2(plain, plain.refcountBlock), target: () => plain.refcountBlock },
    { name: 'data onto its own L2 table', qemuName: 'active L2 table', poke: () => pokedL2(plain, plain.l2), target: () => plain.l2 },
    { name: 'data onto the snapshot table', qemuName: 'snapshot table', poke: () => pokedL2(snap, snap.snapshotTable), target: () => snap.snapshotTable },
    { name: "data onto a snapshot's L1 table", qemuName: 'inactive L1 table', poke: () => pokedL2(snap, snap.snapshotL1), target: () => snap.snapshotL1 },
  ];

  for (const sc of scenarios) {
    it(`${sc.name}: refused with qemu's words, marked corrupt (as qemu-io), then repaired by check -r all`, async () => {
      const poked = sc.poke();
      const slug = sc.qemuName.replace(/ /g, '-');
      const ours = save(`${slug}.ours.qcow2`, poked);
      const theirs = save(`${slug}.qemu.qcow2`, poked);

      const { image, close } = await openWritable(ours);
      const first = await rejection(image.write(pattern, 0));
      expect(first.code).toBe('CORRUPT');
      expect(first.message).toContain(`Preventing invalid write on metadata (overlaps with ${sc.qemuName}); image marked as corrupt`);
      expect(first.message).toContain(`host offset 0x${sc.target().toString(16)}`);
      // Every further write is refused; reads go on.
      const second = await rejection(image.write(pattern, 1 << 20));
      expect(second.code).toBe('CORRUPT');
      expect(second.message).toContain('marked corrupt');
      expect((await rejection(image.writeZeroes(0, 512))).code).toBe('CORRUPT');
      expect((await rejection(image.flush())).code).toBe('CORRUPT');
      await expect(image.readBytes(0, 512)).resolves.toHaveLength(512);
      expect(await image.readBytes(2 << 20, 512)).toEqual(new Uint8Array(512));
      await close();

      const q = qemuIoRun(['-c', 'write -P 0x33 0 512', theirs]);
      expect(q.out).toContain(qemuLine(sc.qemuName));
      expect(q.out).toContain('write failed: Input/output error');
      // Nothing was written but the corrupt bit: the two files are equal.
      const after = new Uint8Array(readFileSync(ours));
      expect(corruptBit(after)).toBe(2n);
      expect(sameFiles(ours, theirs)).toBe('equal');
      expect((qemuInfo(ours)['format-specific'] as { data: { corrupt: boolean } }).data.corrupt).toBe(true);

      // A writable open is refused by both; a read-only one works.
      const reopen = await rejection(openWritable(ours));
      expect(reopen.code).toBe('CORRUPT');
      expect(reopen.message).toContain('Image is corrupt; cannot be opened read/write');
      expect(qemuIoRun(['-c', 'write 0 512', ours]).out).toContain('Image is corrupt; cannot be opened read/write');
      const ro = await createNodeStorage(ours, { readOnly: true });
      const view = await openImage(ro);
      await expect(view.readBytes(0, 512)).resolves.toHaveLength(512);
      await view.close();
      await ro.close();

      // check -r all: ours on our file, qemu-img on qemu's: same repairs, both clean, bit cleared.
      const storage = await createNodeStorage(ours);
      const result = await checkImage(storage, { repair: 'all' });
      await storage.close();
      const qemuRepair = spawnSync('qemu-img', ['check', '-r', 'all', '--output=json', theirs], { encoding: 'utf8' });
      expect(qemuRepair.status).toBe(0);
      const qj = JSON.parse(qemuRepair.stdout) as Record<string, number>;
      expect({ corruptions: result.corruptions, leaks: result.leaks, fixedC: result.corruptionsFixed, fixedL: result.leaksFixed }).toEqual({
        corruptions: qj['corruptions'] ?? 0,
        leaks: qj['leaks'] ?? 0,
        fixedC: qj['corruptions-fixed'] ?? 0,
        fixedL: qj['leaks-fixed'] ?? 0,
      });
      const repaired = new Uint8Array(readFileSync(ours));
      expect(corruptBit(repaired)).toBe(0n);
      expect(spawnSync('qemu-img', ['check', ours]).status).toBe(0);
      // The same guest content (freed clusters may differ: qemu discards them).
      expect(spawnSync('qemu-img', ['compare', '-q', ours, theirs]).status).toBe(0);
      // And it takes writes again.
      const again = await openWritable(ours);
      await again.image.write(pattern, 0);
      await again.close();
      expect(spawnSync('qemu-img', ['check', ours]).status).toBe(0);
    });
  }

  it("overlapCheck 'none' lets the write through, as qemu's overlap-check=none", async () => {
    const poked = pokedL2(plain, plain.refcountTable);
    const ours = save('none.ours.qcow2', poked);
    const theirs = save('none.qemu.qcow2', poked);
    const { image, close } = await openWritable(ours, { overlapCheck: 'none' });
    await image.write(pattern, 0);
    await close();
    const q = qemuIoRun(['-c', `open -o overlap-check=none ${theirs}`, '-c', 'write -P 0x33 0 512']);
    expect(q.out).not.toContain('Preventing');
    const after = new Uint8Array(readFileSync(ours));
    expect(corruptBit(after)).toBe(0n);
    expect(firstDifference(after.subarray(plain.refcountTable, plain.refcountTable + 512), pattern)).toBe('equal');
    expect(sameFiles(ours, theirs)).toBe('equal');
  });

  it('the per-structure switches override the mode, as qemu-io -o overlap-check.<structure>=…', async () => {
    // refcount-table off: the write goes through.
    const off = save('switch-off.qcow2', pokedL2(plain, plain.refcountTable));
    const a = await openWritable(off, { overlapChecks: { 'refcount-table': false } });
    await a.image.write(pattern, 0);
    await a.close();
    expect(corruptBit(new Uint8Array(readFileSync(off)))).toBe(0n);
    // 'constant' does not look at refcount blocks, qemu's neither…
    const constant = save('constant.ours.qcow2', pokedL2(plain, plain.refcountBlock));
    const constantQ = save('constant.qemu.qcow2', pokedL2(plain, plain.refcountBlock));
    const b = await openWritable(constant, { overlapCheck: 'constant' });
    await b.image.write(pattern, 0);
    await b.close();
    expect(qemuIoRun(['-c', `open -o overlap-check=constant ${constantQ}`, '-c', 'write -P 0x33 0 512']).out).not.toContain('Preventing');
    expect(sameFiles(constant, constantQ)).toBe('equal');
    // …unless the switch turns it on.
    const on = save('switch-on.ours.qcow2', pokedL2(plain, plain.refcountBlock));
    const onQ = save('switch-on.qemu.qcow2', pokedL2(plain, plain.refcountBlock));
    const c = await openWritable(on, { overlapCheck: 'constant', overlapChecks: { 'refcount-block': true } });
    expect((await rejection(c.image.write(pattern, 0))).message).toContain('(overlaps with refcount block)');
    await c.close();
    const q = qemuIoRun(['-c', `open -o overlap-check=constant,overlap-check.refcount-block=on ${onQ}`, '-c', 'write -P 0x33 0 512']);
    expect(q.out).toContain(qemuLine('refcount block'));
    expect(sameFiles(on, onQ)).toBe('equal');
  });

  it("a snapshot's L2 table is checked with 'all' only (qemu reads the snapshot L1 tables for it)", async () => {
    for (const mode of ['cached', 'all'] as const) {
      const ours = save(`inactive-l2-${mode}.ours.qcow2`, pokedL2(snap, snap.snapshotL2));
      const theirs = save(`inactive-l2-${mode}.qemu.qcow2`, pokedL2(snap, snap.snapshotL2));
      const { image, close } = await openWritable(ours, { overlapCheck: mode });
      const q = qemuIoRun(['-c', `open -o overlap-check=${mode} ${theirs}`, '-c', 'write -P 0x33 0 512']);
      if (mode === 'all') {
        expect((await rejection(image.write(pattern, 0))).message).toContain('(overlaps with inactive L2 table)');
        expect(q.out).toContain(qemuLine('inactive L2 table'));
      } else {
        await image.write(pattern, 0);
        expect(q.out).not.toContain('Preventing');
      }
      await close();
      expect(sameFiles(ours, theirs)).toBe('equal');
    }
  });

  it('an L2 table written back onto the refcount table (L1 entry pointing at it) fails the flush, as in qemu', async () => {
    const poked = plain.bytes.slice();
    setU64(poked, plain.l1, COPIED | BigInt(plain.refcountTable));
    const ours = save('writeback.ours.qcow2', poked);
    const theirs = save('writeback.qemu.qcow2', poked);
    const { image, close } = await openWritable(ours);
    // Entry 5 of the "L2 table" (the refcount table's entry 5) is 0: the cluster is allocated.
    await image.write(pattern, 5 << 16);
    const error = await rejection(image.flush());
    expect(error.message).toContain('Preventing invalid write on metadata (overlaps with refcount table); image marked as corrupt');
    await close();
    const q = qemuIoRun(['-c', 'write -P 0x33 320k 512', '-c', 'flush', theirs]);
    expect(q.out).toContain(qemuLine('refcount table'));
    const after = new Uint8Array(readFileSync(ours));
    expect(corruptBit(after)).toBe(2n);
    expect(sameFiles(ours, theirs)).toBe('equal');
  });

  it('iotests 060: an L1 entry pointing at the L1 table itself; neither check -r all can repair it', async () => {
    const poked = plain.bytes.slice();
    setU64(poked, plain.l1, COPIED | BigInt(plain.l1));
    const ours = save('l1-self.ours.qcow2', poked);
    const theirs = save('l1-self.qemu.qcow2', poked);
    const { image, close } = await openWritable(ours);
    expect((await rejection(image.write(pattern, 0))).message).toContain('(overlaps with active L1 table)');
    await close();
    expect(qemuIoRun(['-c', 'write -P 0x2a 0 512', theirs]).out).toContain(qemuLine('active L1 table'));
    expect(sameFiles(ours, theirs)).toBe('equal');
    const storage = await createNodeStorage(ours);
    const result = await checkImage(storage, { repair: 'all' });
    await storage.close();
    const qemuRepair = spawnSync('qemu-img', ['check', '-r', 'all', theirs]);
    expect(qemuRepair.status).not.toBe(0);
    expect(exitOf(result)).toBe(qemuRepair.status);
    expect(corruptBit(new Uint8Array(readFileSync(ours)))).toBe(2n);
    expect(corruptBit(new Uint8Array(readFileSync(theirs)))).toBe(2n);
  });

  it('a version 2 image has no corrupt bit: the write is refused, the file keeps its header (as qemu)', async () => {
    const v2 = make('v2', false, '0.10');
    const ours = save('v2.ours.qcow2', pokedL2(v2, v2.refcountTable));
    const theirs = save('v2.qemu.qcow2', pokedL2(v2, v2.refcountTable));
    const { image, close } = await openWritable(ours);
    expect((await rejection(image.write(pattern, 0))).message).toContain('(overlaps with refcount table)');
    expect((await rejection(image.write(pattern, 1 << 20))).code).toBe('CORRUPT');
    await close();
    expect(qemuIoRun(['-c', 'write -P 0x33 0 512', theirs]).out).toContain(qemuLine('refcount table'));
    expect(sameFiles(ours, theirs)).toBe('equal');
  });
});
