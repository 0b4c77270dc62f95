import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isQcow2Error } from '@qcow2/format';
import { describeWithQemu, makeTempDir, qemuImg, qemuIo } from '@qcow2/test-utils';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { firstDifference, openFile } from './helpers.js';
import { prng } from './random-ops.js';

const K = 1024;

/**
 * Random damage to a small qemu-written image (bytes of the header, the header extensions, the
 * L1 and L2 tables, the snapshot table, compressed data), each image read whole by qemu-io and by
 * us: the same decision (reads or refuses), and when both read, the same bytes.
 */
describeWithQemu('randomly damaged images: the decision and the bytes qemu-io gives', () => {
  const tmp = makeTempDir('qcow2-engine-mutation-');
  let base: Buffer;
  let regions: [number, number][];
  const size = 256 * K;
  beforeAll(() => {
    const file = join(tmp.dir, 'base.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', file, String(size)]);
    qemuIo(['-c', 'write -P 0x11 0 20k', '-c', 'write -c -P 0x22 64k 4k', '-c', 'write -c -P 0x23 68k 4k', '-c', 'write -z 100k 8k', file]);
    qemuImg(['snapshot', '-c', 'snap', file]);
    qemuIo(['-c', 'write -P 0x33 8k 8k', file]);
    base = readFileSync(file);
    const view = new DataView(base.buffer, base.byteOffset, base.byteLength);
    const l1 = Number(view.getBigUint64(40));
    const snapshots = Number(view.getBigUint64(64));
    const l2 = Number(view.getBigUint64(l1) & 0xffffffffffe00n);
    // Where damage is interesting: header + extensions, L1, L2 (first entries), snapshot table, and the data area.
    regions = [
      [0, 512],
      [l1, 16],
      [l2, 30 * 8],
      [snapshots, 64],
      [l2 + 4096, base.length - (l2 + 4096)],
    ];
  });
  afterAll(() => tmp.cleanup());

  it('takes the same decision as qemu-io on 120 damaged images, and reads the same bytes when both read', async () => {
    const rand = prng(20240611);
    const mismatches: string[] = [];
    let accepted = 0;
    for (let i = 0; i < 120; i++) {
      const bytes = Buffer.from(base);
      const edits = 1 + Math.floor(rand() * 3);
      const described: string[] = [];
      for (let e = 0; e < edits; e++) {
        const [start, length] = regions[Math.floor(rand() * regions.length)]!;
        const at = start + Math.floor(rand() * length);
        const value = rand() < 0.5 ? 1 << Math.floor(rand() * 8) : Math.floor(rand() * 256);
        bytes[at] = rand() < 0.5 ? bytes[at]! ^ value : value;
        described.push(`0x${at.toString(16)}=0x${bytes[at]!.toString(16)}`);
      }
      const file = join(tmp.dir, `m${i}.qcow2`);
      writeFileSync(file, bytes);
      const out = join(tmp.dir, `m${i}.raw`);
      const qemu = spawnSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', file, out], { encoding: 'utf8', timeout: 20_000 });
      const qemuAccepts = qemu.status === 0;
      let ours: Uint8Array | undefined;
      let error: unknown;
      try {
        const image = await openFile(file, { format: 'qcow2', backing: false });
        try {
          ours = new Uint8Array(image.virtualSize);
          await image.read(ours, 0);
        } finally {
          await image.close();
        }
      } catch (e) {
        error = e;
      }
      if (error !== undefined && !isQcow2Error(error)) throw error;
      const weAccept = error === undefined;
      if (weAccept !== qemuAccepts) {
        mismatches.push(
          `${described.join(' ')}: qemu ${qemuAccepts ? 'reads' : `refuses (${qemu.stderr.trim().split('\n')[0]})`}, we ${weAccept ? 'read' : `refuse (${(error as Error).message})`}`,
        );
      } else if (weAccept) {
        accepted++;
        const expected = new Uint8Array(readFileSync(out));
        if (firstDifference(ours!, expected) !== -1) mismatches.push(`${described.join(' ')}: both read, bytes differ at ${firstDifference(ours!, expected)}`);
      }
    }
    expect(mismatches).toEqual([]);
    // The damage must not make every image unreadable (then the test would prove little).
    expect(accepted).toBeGreaterThan(30);
  });
});
