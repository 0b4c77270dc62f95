import * as fs from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { isQcow2Error } from '@qcow2/storage';
import { createNodeStorage } from '@qcow2/storage-node';
import { makeTempDir } from '@qcow2/test-utils';

vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  return { ...real, write: vi.fn(real.write), writeSync: vi.fn(real.writeSync) };
});

const tmp = makeTempDir('qcow2-node-storage-pool-writes-');
afterAll(() => tmp.cleanup());
let counter = 0;
const newPath = (): string => join(tmp.dir, `w-${counter++}.bin`);

const poolWrite = vi.mocked(fs.write);
const syncWrite = vi.mocked(fs.writeSync);
beforeEach(() => {
  poolWrite.mockClear();
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
});
