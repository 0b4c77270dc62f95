import { describe, expect, it } from 'vitest';
import { createMemoryStorage, isQcow2Error, type Qcow2Error } from '@qcow2/storage';

async function rejection(promise: Promise<unknown>): Promise<Qcow2Error> {
  try {
    await promise;
  } catch (error) {
    expect(isQcow2Error(error)).toBe(true);
    return error as Qcow2Error;
  }
  throw new Error('expected a rejection');
}

describe('createMemoryStorage', () => {
  it('copies its initial bytes and hands out copies in snapshot()', async () => {
    const initial = Uint8Array.of(1, 2, 3, 4);
    const s = createMemoryStorage({ initial });
    initial[0] = 9;
    const snap = s.snapshot();
    expect([...snap]).toEqual([1, 2, 3, 4]);
    snap[1] = 9;
    expect([...s.snapshot()]).toEqual([1, 2, 3, 4]);
  });

  it('snapshot() still works after close', async () => {
    const s = createMemoryStorage();
    await s.write(Uint8Array.of(7, 8), 3);
    await s.close();
    expect([...s.snapshot()]).toEqual([0, 0, 0, 7, 8]);
  });

  it("refuses to grow past maxSize with 'IO', naming the offset, and keeps the data", async () => {
    const s = createMemoryStorage({ maxSize: 4096 });
    await s.write(new Uint8Array(4096).fill(1), 0);
    const e = await rejection(s.write(Uint8Array.of(1), 4096));
    expect(e.code).toBe('IO');
    expect(e.message).toMatch(/write at 0x1000 .*maxSize 4096/);
    expect((await rejection(s.truncate(4097))).code).toBe('IO');
    expect(await s.size()).toBe(4096);
    await s.truncate(100);
    expect(await s.size()).toBe(100);
  });

  it('validates its options synchronously', () => {
    expect(() => createMemoryStorage({ maxSize: -1 })).toThrow(/maxSize/);
    expect(() => createMemoryStorage({ initial: new Uint8Array(10), maxSize: 5 })).toThrow(/exceed maxSize/);
    expect(() => createMemoryStorage({ initial: [1, 2] as unknown as Uint8Array })).toThrow(/Uint8Array/);
  });

  it('releases and re-zeros memory when truncated far down from a large size', async () => {
    const s = createMemoryStorage();
    await s.write(new Uint8Array(4 << 20).fill(0xff), 0);
    await s.truncate(100);
    await s.truncate(4 << 20);
    const back = new Uint8Array(4 << 20);
    expect(await s.read(back, 0)).toBe(4 << 20);
    expect(back.subarray(0, 100).every((b) => b === 0xff)).toBe(true);
    expect(back.subarray(100).every((b) => b === 0)).toBe(true);
  });

  it('grows geometrically: 2^17 appends of 16 bytes finish quickly', async () => {
    const s = createMemoryStorage();
    const chunk = new Uint8Array(16).fill(3);
    const start = performance.now();
    for (let i = 0; i < 1 << 17; i++) await s.write(chunk, i * 16);
    expect(await s.size()).toBe(2 << 20);
    // Copying the whole buffer on each append would move ~137 GB here.
    expect(performance.now() - start).toBeLessThan(5000);
  });

  it('error messages name the storage, the operation and the offset', async () => {
    const s = createMemoryStorage();
    expect((await rejection(s.read(new Uint8Array(1), -5))).message).toBe(
      'memory storage: read: offset -5 is not an integer in [0, 2^53)',
    );
    expect((await rejection(s.write(new Uint8Array(16), Number.MAX_SAFE_INTEGER - 1))).message).toMatch(
      /^memory storage: write at offset 0x1ffffffffffffe: range of 16 bytes ends beyond 2\^53 - 1$/,
    );
    await s.close();
    expect((await rejection(s.size())).message).toBe('memory storage: size: the storage is closed');
    const ro = createMemoryStorage({ readOnly: true });
    expect((await rejection(ro.truncate(1))).message).toBe('memory storage: truncate: the storage is read-only');
  });
});
