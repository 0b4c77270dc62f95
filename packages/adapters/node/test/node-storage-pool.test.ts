import * as fs from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { isQcow2Error } from '@qcow2/storage';
import { createNodeStorage } from '@qcow2/storage-node';
import { makeTempDir } from '@qcow2/test-utils';

vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  return { ...real, readv: vi.fn(real.readv), readvSync: vi.fn(real.readvSync), readSync: vi.fn(real.readSync) };
});

const tmp = makeTempDir('qcow2-node-storage-pool-');
afterAll(() => tmp.cleanup());
let counter = 0;

/** A file of `size` bytes, each a function of its offset (so misplaced bytes show). */
function makeFile(size: number): { path: string; bytes: Uint8Array } {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 13 + (i >>> 16) * 7 + (i >>> 10)) & 0xff;
  const path = join(tmp.dir, `p-${counter++}.bin`);
  fs.writeFileSync(path, bytes);
  return { path, bytes };
}

const poolReadv = vi.mocked(fs.readv);
const syncReadv = vi.mocked(fs.readvSync);
beforeEach(() => {
  poolReadv.mockClear();
  syncReadv.mockClear();
});

const KiB64 = 65536;

/** The index of the first differing byte, or -1 (toEqual walks large arrays far too slowly). */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  return Buffer.compare(a, b) === 0 ? -1 : a.findIndex((x, k) => x !== b[k]);
}

describe('createNodeStorage: large runs of reads on read-only storage go to the thread pool', () => {
  it('64 contiguous 64 KiB reads in one tick: readv pieces of 1 MiB in the pool, every read its own bytes', async () => {
    const { path, bytes } = makeFile(64 * KiB64);
    const s = await createNodeStorage(path, { readOnly: true });
    const dsts = Array.from({ length: 64 }, () => new Uint8Array(KiB64));
    const counts = await Promise.all(dsts.map((d, i) => s.read(d, i * KiB64)));
    expect(counts).toEqual(Array(64).fill(KiB64));
    for (let i = 0; i < 64; i++) expect(firstDifference(dsts[i]!, bytes.subarray(i * KiB64, (i + 1) * KiB64))).toBe(-1);
    expect(poolReadv).toHaveBeenCalledTimes(4); // 4 MiB in 1 MiB pieces
    expect(syncReadv).not.toHaveBeenCalled();
    await s.close();
  });

  it('a run ending past EOF: the short piece is read again synchronously (short count, rest of dst untouched, 0 past EOF)', async () => {
    const size = 20 * KiB64 + 1000;
    const { path, bytes } = makeFile(size);
    const s = await createNodeStorage(path, { readOnly: true });
    const dsts = Array.from({ length: 24 }, () => new Uint8Array(KiB64).fill(0xee));
    const counts = await Promise.all(dsts.map((d, i) => s.read(d, i * KiB64)));
    expect(counts).toEqual([...Array(20).fill(KiB64), 1000, 0, 0, 0]);
    for (let i = 0; i < 20; i++) expect(firstDifference(dsts[i]!, bytes.subarray(i * KiB64, (i + 1) * KiB64))).toBe(-1);
    expect(firstDifference(dsts[20]!.subarray(0, 1000), bytes.subarray(20 * KiB64))).toBe(-1);
    expect(dsts[20]!.subarray(1000).every((b) => b === 0xee)).toBe(true);
    for (let i = 21; i < 24; i++) expect(dsts[i]!.every((b) => b === 0xee)).toBe(true);
    expect(poolReadv).toHaveBeenCalledTimes(2); // 1 MiB + 512 KiB
    await s.close();
  });

  it('one read larger than a piece is cut inside its buffer; non-contiguous runs are served separately', async () => {
    const { path, bytes } = makeFile(8 << 20);
    const s = await createNodeStorage(path, { readOnly: true });
    const big = new Uint8Array((3 << 20) + 4096);
    const a = new Uint8Array(300 * 1024);
    const b = new Uint8Array(KiB64); // small, alone: read synchronously
    const [nBig, nA, nB] = await Promise.all([s.read(big, 12345), s.read(a, 5 << 20), s.read(b, 7 << 20)]);
    expect([nBig, nA, nB]).toEqual([big.length, a.length, b.length]);
    expect(firstDifference(big, bytes.subarray(12345, 12345 + big.length))).toBe(-1);
    expect(firstDifference(a, bytes.subarray(5 << 20, (5 << 20) + a.length))).toBe(-1);
    expect(firstDifference(b, bytes.subarray(7 << 20, (7 << 20) + KiB64))).toBe(-1);
    expect(poolReadv).toHaveBeenCalledTimes(5); // 4 pieces of the big read, 1 of `a`
    await s.close();
  });

  it('a failed pool piece is read again synchronously: the bytes arrive, or the error names the read', async () => {
    const { path, bytes } = makeFile(16 * KiB64);
    const s = await createNodeStorage(path, { readOnly: true });
    const eio = (): void => {
      poolReadv.mockImplementationOnce(((_fd: number, _b: unknown, _p: unknown, cb: (e: Error | null, n: number) => void) => {
        setImmediate(() => cb(Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' }), 0));
      }) as unknown as typeof fs.readv);
    };
    eio();
    const dsts = Array.from({ length: 16 }, () => new Uint8Array(KiB64));
    await Promise.all(dsts.map((d, i) => s.read(d, i * KiB64)));
    for (let i = 0; i < 16; i++) expect(firstDifference(dsts[i]!, bytes.subarray(i * KiB64, (i + 1) * KiB64))).toBe(-1);
    // The piece and then the synchronous read of the first request fail: only that read rejects.
    eio();
    vi.mocked(fs.readSync).mockImplementationOnce(() => {
      throw Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' });
    });
    const settledReads = await Promise.allSettled(dsts.map((d, i) => s.read(d.fill(0), i * KiB64)));
    expect(settledReads.map((r) => r.status)).toEqual(['rejected', ...Array(15).fill('fulfilled')]);
    const reason = (settledReads[0] as PromiseRejectedResult).reason as unknown;
    expect(isQcow2Error(reason) && reason.code).toBe('IO');
    expect(String((reason as Error).message)).toContain(`read of ${KiB64} bytes at 0x0 from ${path}`);
    for (let i = 1; i < 16; i++) expect(firstDifference(dsts[i]!, bytes.subarray(i * KiB64, (i + 1) * KiB64))).toBe(-1);
    await s.close();
  });

  it('a readv the pool refuses synchronously: its reads are served synchronously instead', async () => {
    const { path, bytes } = makeFile(16 * KiB64);
    const s = await createNodeStorage(path, { readOnly: true });
    poolReadv.mockImplementationOnce(() => {
      throw Object.assign(new Error('EAGAIN: resource temporarily unavailable'), { code: 'EAGAIN' });
    });
    const dsts = Array.from({ length: 16 }, () => new Uint8Array(KiB64));
    expect(await Promise.all(dsts.map((d, i) => s.read(d, i * KiB64)))).toEqual(Array(16).fill(KiB64));
    for (let i = 0; i < 16; i++) expect(firstDifference(dsts[i]!, bytes.subarray(i * KiB64, (i + 1) * KiB64))).toBe(-1);
    await s.close(); // nothing counted in flight: close does not wait forever
  });

  it('close waits for pool reads in flight (they complete); reads after close reject CLOSED', async () => {
    const { path, bytes } = makeFile(32 * KiB64);
    const s = await createNodeStorage(path, { readOnly: true });
    const dsts = Array.from({ length: 32 }, () => new Uint8Array(KiB64));
    const reading = Promise.all(dsts.map((d, i) => s.read(d, i * KiB64)));
    await Promise.resolve(); // the batch is submitted to the pool
    await Promise.resolve();
    expect(poolReadv).toHaveBeenCalledTimes(2);
    const closing = s.close();
    expect(await reading).toEqual(Array(32).fill(KiB64));
    await closing;
    for (let i = 0; i < 32; i++) expect(firstDifference(dsts[i]!, bytes.subarray(i * KiB64, (i + 1) * KiB64))).toBe(-1);
    const error = await s.read(new Uint8Array(10), 0).catch((e: unknown) => e);
    expect(isQcow2Error(error) && error.code).toBe('CLOSED');
  });

  it('writable storage reads synchronously (one readvSync), never in the pool', async () => {
    const { path, bytes } = makeFile(64 * KiB64);
    const s = await createNodeStorage(path);
    const dsts = Array.from({ length: 64 }, () => new Uint8Array(KiB64));
    await Promise.all(dsts.map((d, i) => s.read(d, i * KiB64)));
    for (let i = 0; i < 64; i++) expect(firstDifference(dsts[i]!, bytes.subarray(i * KiB64, (i + 1) * KiB64))).toBe(-1);
    expect(poolReadv).not.toHaveBeenCalled();
    expect(syncReadv).toHaveBeenCalledTimes(1);
    await s.close();
  });
});
