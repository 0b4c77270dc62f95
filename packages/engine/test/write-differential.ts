import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createNodeResolver, createNodeStorage } from '@qcow2/storage-node';
import { makeTempDir, qemuCheck, qemuImg, qemuIo } from '@qcow2/test-utils';
import { expect, it } from 'vitest';
import { checkRefcounts, openImage, type OpenOptions } from '../src/index.js';
import { applyScript, qemuIoArgs, randomScript, sourceBytes, type IoOp } from './io-script.js';

export type { IoOp };

export interface Case {
  name: string;
  /** qemu-img create -o options. */
  options: string;
  size: number;
  seed: number;
  count?: number;
  compressed?: boolean;
  /** A backing chain under the image: a raw file, a qcow2 file, or raw under qcow2. */
  backing?: 'raw' | 'qcow2' | 'chain';
  /** Data written by qemu-io before the copy (normal, compressed and zero clusters). */
  prefill?: boolean;
  /** Internal snapshots taken by qemu-img around the prefill. */
  snapshots?: boolean;
  /** External data file (data_file=…), raw or not. */
  dataFile?: 'plain' | 'raw';
  /** A first qemu-io command run by both before the script (e.g. a large write). */
  first?: IoOp[];
  /** Open options for our side. */
  open?: OpenOptions;
  /** cache=unsafe on both sides (no flushes: what a large write costs is then the write). */
  unsafe?: boolean;
  /** The refcount table must have grown beyond its first cluster. */
  tableGrows?: boolean;
  maxClusters?: number;
}

export const MiB = 1024 * 1024;

function clusterSizeOf(options: string): number {
  const m = /cluster_size=(\d+)([kKmM]?)/.exec(options);
  if (m === null) return 65536;
  const unit = m[2] === '' ? 1 : /k/i.test(m[2]!) ? 1024 : MiB;
  return Number(m[1]) * unit;
}

/**
 * One differential case: the same random qemu-io script applied by qemu-io to a qemu-made image
 * and by the engine to a copy of it; the images must compare equal, ours must pass qemu-img check
 * and our own check, and internal snapshots keep their content.
 */
export function runCase(c: Case): void {
  it(c.name, async () => {
    const { dir, cleanup } = makeTempDir('qcow2-write-');
    try {
      const a = join(dir, 'a.qcow2');
      const b = join(dir, 'b.qcow2');
      const cs = clusterSizeOf(c.options);
      const extended = /extended_l2=on/.test(c.options);
      const maxClusters = c.maxClusters ?? 3;
      const source = join(dir, 'source.bin');
      const sourceData = sourceBytes(maxClusters * cs);
      writeFileSync(source, sourceData);

      // The backing chain, filled by qemu-io.
      const backingArgs: string[] = [];
      if (c.backing !== undefined) {
        const base = join(dir, 'base.raw');
        qemuImg(['create', '-q', '-f', 'raw', base, String(c.size - 3 * 512)]);
        qemuIo(['-f', 'raw', '-c', `write -s ${source} 0 ${Math.min(sourceData.length, c.size - 3 * 512)}`, '-c', `write -P 7 ${c.size / 2} ${c.size / 4}`, base]);
        if (c.backing === 'raw') {
          backingArgs.push('-b', base, '-F', 'raw');
        } else {
          const mid = join(dir, 'mid.qcow2');
          qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', ...(c.backing === 'chain' ? ['-b', base, '-F', 'raw'] : []), mid, String(c.size)]);
          qemuIo(['-c', `write -P 9 ${cs / 2} ${3 * cs}`, '-c', `write -c -P 11 ${Math.floor(c.size / 3 / 4096) * 4096} 4096`, '-c', `write -z ${c.size / 4} ${cs}`, mid]);
          backingArgs.push('-b', mid, '-F', 'qcow2');
        }
      }

      const create = (file: string, dataFile?: string): void => {
        const options = dataFile === undefined ? c.options : `${c.options},data_file=${dataFile}${c.dataFile === 'raw' ? ',data_file_raw=on' : ''}`;
        qemuImg(['create', '-q', '-f', 'qcow2', '-o', options, ...backingArgs, file, String(c.size)]);
      };
      if (c.dataFile !== undefined) {
        create(a, join(dir, 'a.data'));
        create(b, join(dir, 'b.data'));
      } else {
        create(a);
      }
      if (c.prefill === true) {
        const prefill = randomScript({ size: c.size, clusterSize: cs, subclusterSize: extended ? cs / 32 : cs, count: 12, seed: c.seed + 1000, compressed: c.dataFile === undefined, maxClusters });
        if (c.snapshots === true) qemuImg(['snapshot', '-c', 's0', a]);
        qemuIo([...qemuIoArgs(prefill.slice(0, 6), source), a], { allowExit: [1] });
        if (c.snapshots === true) qemuImg(['snapshot', '-c', 's1', a]);
        qemuIo([...qemuIoArgs(prefill.slice(6), source), a], { allowExit: [1] });
      }
      if (c.dataFile === undefined) copyFileSync(a, b);
      const snapshotsBefore = c.snapshots === true ? ['s0', 's1'].map((s) => convert(dir, a, s)) : [];

      const script = [
        ...(c.first ?? []),
        ...randomScript({
          size: c.size,
          clusterSize: cs,
          subclusterSize: extended ? cs / 32 : cs,
          count: c.count ?? 40,
          seed: c.seed,
          compressed: c.compressed === true && c.dataFile === undefined,
          maxClusters,
        }),
      ];
      const qemuOut = qemuIo([...(c.unsafe === true ? ['-t', 'unsafe'] : []), ...qemuIoArgs(script, source), a], { allowExit: [1] });
      const qemuFailures = qemuOut.split('\n').filter((l) => /failed/.test(l)).length;
      // The oracle must be sound: qemu 7.2 can corrupt its own image (see the test below).
      expect(qemuCheck(a).exitCode, 'qemu-img check of the image qemu-io wrote').toBe(0);

      const storage = await createNodeStorage(b);
      const resolver = createNodeResolver({ allowAbsolute: true });
      const image = await openImage(storage, {
        readOnly: false,
        discard: 'unmap',
        name: b,
        resolver,
        dataFileResolver: createNodeResolver({ allowAbsolute: true, readOnly: false }),
        ...(c.unsafe === true ? { cacheMode: 'unsafe' as const } : {}),
        ...c.open,
      });
      let failures: number;
      try {
        failures = await applyScript(image, script, sourceData);
      } finally {
        await image.close();
        await storage.close();
      }
      expect(failures, 'compressed writes refused over allocated clusters, as by qemu-io').toBe(qemuFailures);

      if (c.tableGrows === true) {
        const header = readFileSync(b).subarray(0, 64);
        expect(new DataView(header.buffer, header.byteOffset).getUint32(56), 'refcount_table_clusters').toBeGreaterThan(1);
      }
      qemuImg(['compare', a, b]);
      const check = qemuCheck(b);
      expect(check.json['leaks'] ?? 0, JSON.stringify(check.json)).toBe(0);
      expect(check.json['corruptions'] ?? 0, JSON.stringify(check.json)).toBe(0);
      expect(check.json['check-errors'] ?? 0, JSON.stringify(check.json)).toBe(0);
      expect(check.exitCode).toBe(0);
      const ours = await createNodeStorage(b, { readOnly: true });
      try {
        const result = await checkRefcounts(ours);
        expect([result.leaks, result.corruptions, result.copiedFlags, result.problems]).toEqual([[], [], [], []]);
      } finally {
        await ours.close();
      }
      // Internal snapshots keep their content.
      for (const [i, s] of ['s0', 's1'].entries()) {
        if (c.snapshots !== true) break;
        expect(Buffer.from(convert(dir, b, s)).equals(Buffer.from(snapshotsBefore[i]!)), `snapshot ${s}`).toBe(true);
      }
    } finally {
      cleanup();
    }
  });
}

export function convert(dir: string, file: string, snapshot: string): Uint8Array {
  const out = join(dir, `${snapshot}-${Math.random().toString(36).slice(2)}.raw`);
  qemuImg(['convert', '-O', 'raw', '-l', snapshot, file, out]);
  return new Uint8Array(readFileSync(out));
}

