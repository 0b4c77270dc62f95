import * as fs from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { isQcow2Error } from '@qcow2/storage';
import { createNodeStorage } from '@qcow2/storage-node';
import { makeTempDir } from '@qcow2/test-utils';

vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  return { ...real, write: vi.fn(real.write), writev: vi.fn(real.writev), writeSync: vi.fn(real.writeSync) };
});

const tmp = makeTempDir('qcow2-node-storage-pool-writes-');
afterAll(() => tmp.cleanup());
let counter = 0;
const newPath = (): string => join(tmp.dir, `w-${counter++}.bin`);

const poolWrite = vi.mocked(fs.write);
const poolWritev = vi.mocked(fs.writev);
const syncWrite = vi.mocked(fs.writeSync);
beforeEach(() => {
  poolWrite.mockClear();
  poolWritev.mockClear();
  syncWrite.mockClear();
});

const KiB64 = 65536;

function pattern(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 31 + seed * 17 + (i >>> 9)) & 0xff;
  return bytes;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

describe('createNodeStorage writes on the thread pool', () => {
  it('sends large writes to the pool and small ones through writeSync', async () => {
    const s = await createNodeStorage(newPath(), { create: true });
    await s.write(pattern(KiB64, 1), 0);
    await s.write(pattern(512, 2), KiB64);
    expect(poolWrite).toHaveBeenCalledTimes(1);
    expect(syncWrite).toHaveBeenCalledTimes(1);
    await s.close();
  });

  it('writes a 1 MiB write with nothing else in flight on the calling thread, one issued while another is in flight on the pool', async () => {
    const path = newPath();
    const s = await createNodeStorage(path, { create: true });
    const MiB = 1024 * 1024;
    const alone = pattern(MiB, 11);
    await s.write(alone, 0);
    expect(poolWrite).not.toHaveBeenCalled();
    expect(syncWrite).toHaveBeenCalledTimes(1);
    // A 64 KiB write waits for the tick's batch; the 1 MiB write issued meanwhile goes to the pool.
    const small = s.write(pattern(KiB64, 12), MiB);
    const big = s.write(pattern(MiB, 13), 2 * MiB);
    await Promise.all([small, big]);
    expect(poolWrite).toHaveBeenCalledTimes(2);
    expect(syncWrite).toHaveBeenCalledTimes(1);
    await s.close();
    const bytes = new Uint8Array(fs.readFileSync(path));
    expect(same(bytes.subarray(0, MiB), alone)).toBe(true);
    expect(same(bytes.subarray(MiB, MiB + KiB64), pattern(KiB64, 12))).toBe(true);
    expect(same(bytes.subarray(2 * MiB), pattern(MiB, 13))).toBe(true);
  });

  it('keeps program order: overlapping writes land in call order, reads see the writes issued before them', async () => {
    const path = newPath();
    const s = await createNodeStorage(path, { create: true });
    const first = pattern(4 * KiB64, 3);
    const second = pattern(KiB64, 4);
    const small = pattern(100, 5);
    // None awaited before the next call: the later writes overlap the first one in flight.
    const w1 = s.write(first, 0);
    const w2 = s.write(second, KiB64);
    const w3 = s.write(small, KiB64 + 10);
    const got = new Uint8Array(4 * KiB64);
    const r = s.read(got, 0);
    await Promise.all([w1, w2, w3]);
    expect(await r).toBe(4 * KiB64);
    const expected = first.slice();
    expected.set(second, KiB64);
    expected.set(small, KiB64 + 10);
    expect(same(got, expected)).toBe(true);
    await s.close();
    expect(same(new Uint8Array(fs.readFileSync(path)), expected)).toBe(true);
  });

  it('size, truncate, flush and close wait for the writes in flight', async () => {
    const path = newPath();
    const s = await createNodeStorage(path, { create: true });
    const data = pattern(8 * KiB64, 6);
    const write = s.write(data, KiB64);
    expect(await s.size()).toBe(9 * KiB64);
    await write;
    const more = s.write(pattern(2 * KiB64, 7), 20 * KiB64);
    await s.truncate(10 * KiB64);
    await more;
    expect(await s.size()).toBe(10 * KiB64);
    const last = s.write(pattern(KiB64, 8), 0);
    await s.flush();
    const closing = s.close();
    await last;
    await closing;
    const bytes = new Uint8Array(fs.readFileSync(path));
    expect(bytes.length).toBe(10 * KiB64);
    expect(same(bytes.subarray(0, KiB64), pattern(KiB64, 8))).toBe(true);
    expect(same(bytes.subarray(KiB64, 9 * KiB64), data)).toBe(true);
  });

  it('a failed pool write rejects with a Qcow2Error naming the offset and the path', async () => {
    const path = newPath();
    const s = await createNodeStorage(path, { create: true });
    poolWrite.mockImplementationOnce(((...args: unknown[]) => {
      const callback = args[args.length - 1] as (error: NodeJS.ErrnoException | null, written: number) => void;
      const error: NodeJS.ErrnoException = Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO', errno: -5 });
      process.nextTick(() => callback(error, 0));
    }) as unknown as typeof fs.write);
    const failure = await s.write(pattern(KiB64, 9), 0x30000).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(isQcow2Error(failure)).toBe(true);
    expect((failure as Error).message).toContain('0x30000');
    expect((failure as Error).message).toContain(path);
    // The storage stays usable.
    await s.write(pattern(KiB64, 10), 0);
    await s.close();
  });

  it('sends the file-contiguous writes of one tick as writevs of at most 2 MiB, one writev in the pool at a time', async () => {
    const path = newPath();
    const s = await createNodeStorage(path, { create: true });
    const real = await vi.importActual<typeof import('node:fs')>('node:fs');
    let inPool = 0;
    let most = 0;
    poolWritev.mockImplementation(((fd: number, buffers: Uint8Array[], position: number, callback: (e: unknown, n: number) => void) => {
      inPool++;
      most = Math.max(most, inPool);
      real.writev(fd, buffers, position, (error, written) => {
        // Completes a few turns later: the runs sent meanwhile must wait for it.
        setImmediate(() => {
          inPool--;
          callback(error, written);
        });
      });
    }) as unknown as typeof fs.writev);
    try {
      const pieces = Array.from({ length: 80 }, (_, i) => pattern(KiB64, 20 + i));
      // 80 contiguous writes, then one elsewhere: writevs of 32, 32 and 16, and a single write.
      const writes = pieces.map((p, i) => s.write(p, i * KiB64));
      const apart = pattern(KiB64, 50);
      writes.push(s.write(apart, 100 * KiB64));
      await Promise.all(writes);
      expect(poolWritev.mock.calls.map((c) => (c[1] as Uint8Array[]).length)).toEqual([32, 32, 16]);
      expect(poolWritev.mock.calls.map((c) => c[2])).toEqual([0, 32 * KiB64, 64 * KiB64]);
      expect(most).toBe(1);
      expect(poolWrite).toHaveBeenCalledTimes(1);
      await s.close();
      const bytes = new Uint8Array(fs.readFileSync(path));
      for (const [i, p] of pieces.entries()) expect(same(bytes.subarray(i * KiB64, (i + 1) * KiB64), p)).toBe(true);
      expect(same(bytes.subarray(100 * KiB64), apart)).toBe(true);
    } finally {
      poolWritev.mockReset();
      poolWritev.mockImplementation(real.writev);
    }
  });

  it('a writev refused before it reaches the pool does not hold back the runs behind it', async () => {
    const path = newPath();
    const s = await createNodeStorage(path, { create: true });
    poolWritev.mockImplementationOnce((() => {
      throw Object.assign(new Error('EINVAL: refused'), { code: 'EINVAL' });
    }) as unknown as typeof fs.writev);
    const pieces = Array.from({ length: 64 }, (_, i) => pattern(KiB64, 70 + i));
    // Two runs: the first writev is refused (its writes are then made one by one), the second
    // still goes out; nothing is left waiting.
    await Promise.all(pieces.map((p, i) => s.write(p, i * KiB64)));
    expect(poolWritev).toHaveBeenCalledTimes(2);
    expect(poolWrite).toHaveBeenCalledTimes(32);
    await s.close();
    const bytes = new Uint8Array(fs.readFileSync(path));
    for (const [i, p] of pieces.entries()) expect(same(bytes.subarray(i * KiB64, (i + 1) * KiB64), p)).toBe(true);
  });

  it('close waits for the runs queued behind the one in the pool', async () => {
    const path = newPath();
    const s = await createNodeStorage(path, { create: true });
    const pieces = Array.from({ length: 96 }, (_, i) => pattern(KiB64, 3 + i));
    const writes = pieces.map((p, i) => s.write(p, i * KiB64));
    const closing = s.close();
    await Promise.all(writes);
    await closing;
    expect(poolWritev).toHaveBeenCalledTimes(3);
    const bytes = new Uint8Array(fs.readFileSync(path));
    expect(bytes.length).toBe(96 * KiB64);
    for (const [i, p] of pieces.entries()) expect(same(bytes.subarray(i * KiB64, (i + 1) * KiB64), p)).toBe(true);
  });

  it('a failed writev is retried write by write, each failure named by its own offset', async () => {
    const path = newPath();
    const s = await createNodeStorage(path, { create: true });
    poolWritev.mockImplementationOnce(((...args: unknown[]) => {
      const callback = args[args.length - 1] as (error: NodeJS.ErrnoException | null, written: number) => void;
      process.nextTick(() => callback(Object.assign(new Error('EIO: i/o error, writev'), { code: 'EIO' }), 0));
    }) as unknown as typeof fs.writev);
    let calls = 0;
    poolWrite.mockImplementation(((...args: unknown[]) => {
      const callback = args[args.length - 1] as (error: NodeJS.ErrnoException | null, written: number) => void;
      const position = args[4] as number;
      calls++;
      if (position === KiB64) {
        process.nextTick(() => callback(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }), 0));
        return;
      }
      (fs.writeSync as unknown as (...a: unknown[]) => number)(args[0], args[1], args[2], args[3], position);
      const written = args[3] as number;
      process.nextTick(() => callback(null, written));
    }) as unknown as typeof fs.write);
    try {
      const results = await Promise.allSettled([s.write(pattern(KiB64, 60), 0), s.write(pattern(KiB64, 61), KiB64)]);
      expect(results[0]!.status).toBe('fulfilled');
      expect(results[1]!.status).toBe('rejected');
      const error = (results[1] as PromiseRejectedResult).reason as Error;
      expect(isQcow2Error(error)).toBe(true);
      expect(error.message).toContain('0x10000');
      expect(calls).toBe(2);
    } finally {
      poolWrite.mockReset();
      const real = await vi.importActual<typeof import('node:fs')>('node:fs');
      poolWrite.mockImplementation(real.write);
    }
    await s.close();
    const bytes = new Uint8Array(fs.readFileSync(path));
    expect(same(bytes.subarray(0, KiB64), pattern(KiB64, 60))).toBe(true);
  });
});
