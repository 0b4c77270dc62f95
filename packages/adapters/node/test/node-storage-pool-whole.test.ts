import * as fs from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { createNodeStorage } from '@qcow2/storage-node';
import { makeTempDir } from '@qcow2/test-utils';

vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  return { ...real, readv: vi.fn(real.readv) };
});

const tmp = makeTempDir('qcow2-node-storage-whole-');
afterAll(() => tmp.cleanup());
const poolReadv = vi.mocked(fs.readv);
beforeEach(() => {
  poolReadv.mockClear();
});

const MiB = 1 << 20;

function makeFile(size: number): { path: string; bytes: Uint8Array } {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 13 + (i >>> 16) * 7 + (i >>> 10)) & 0xff;
  const path = join(tmp.dir, `w-${size}.bin`);
  fs.writeFileSync(path, bytes);
  return { path, bytes };
}

/** Reads `sizes` back to back from `start`, all in one tick; checks every byte; returns the pool readv sizes. */
async function readRun(sizes: number[], start: number): Promise<number[]> {
  const { path, bytes } = makeFile(16 * MiB);
  const s = await createNodeStorage(path, { readOnly: true });
  const dsts = sizes.map((n) => new Uint8Array(n));
  let at = start;
  const offsets = sizes.map((n) => ((at += n), at - n));
  const counts = await Promise.all(dsts.map((d, i) => s.read(d, offsets[i]!)));
  expect(counts).toEqual(sizes);
  for (const [i, d] of dsts.entries()) {
    expect(Buffer.compare(d, bytes.subarray(offsets[i]!, offsets[i]! + d.length))).toBe(0);
  }
  await s.close();
  return poolReadv.mock.calls.map(([, buffers]) => (buffers as Uint8Array[]).reduce((sum, b) => sum + b.length, 0));
}

describe('createNodeStorage: a read of at most 2 MiB that starts a pool piece is not cut', () => {
  it('four contiguous 2 MiB reads (a convert read-ahead): one readv each', async () => {
    expect(await readRun([2 * MiB, 2 * MiB, 2 * MiB, 2 * MiB], 4096)).toEqual([2 * MiB, 2 * MiB, 2 * MiB, 2 * MiB]);
  });

  it('a read starting inside a piece, and one larger than 2 MiB, are still cut into 1 MiB pieces', async () => {
    const sizes = [MiB / 2, 2 * MiB, (3 * MiB) / 2, 2 * MiB + 1];
    expect(await readRun(sizes, 512)).toEqual([MiB, MiB, MiB, MiB, MiB, MiB, 1]);
  });
});
